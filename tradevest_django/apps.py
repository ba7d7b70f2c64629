"""Django app configuration."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

from .checks import check_caches, check_placeholders, check_rotation, check_settings


class TradevestConfig(AppConfig):
    name = "tradevest_django"
    verbose_name = "Tradevest"

    def ready(self) -> None:
        checks.register(check_settings, "tradevest")
        checks.register(check_caches, "tradevest", checks.Tags.caches)
        checks.register(check_rotation, "tradevest")
        checks.register(check_placeholders, "tradevest")
