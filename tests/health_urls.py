"""URLs of the django-health-check tests: its own view, with a check per ``TRADEVEST`` alias."""

from __future__ import annotations

from django.urls import path
from health_check.views import HealthCheckView

CHECK = "tradevest_django.contrib.health_check.TradevestToken"

urlpatterns = [
    path("health/", HealthCheckView.as_view(checks=[(CHECK, {"alias": "default"})])),
    path(
        "health/all/",
        HealthCheckView.as_view(
            checks=[(CHECK, {"alias": "default"}), (CHECK, {"alias": "partner"})]
        ),
    ),
]
