"""URLs of the status page: ``path("tradevest/", include("tradevest_django.urls"))``."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "tradevest_django"
urlpatterns = [path("", views.status, name="status")]
