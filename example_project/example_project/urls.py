"""URLs of the example project."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("prices/", views.prices, name="prices"),
    path("prices/async/", views.async_prices, name="async-prices"),
    path("tradevest/", include("tradevest_django.urls")),
]
