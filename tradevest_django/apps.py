"""Django app configuration."""

from __future__ import annotations

from django.apps import AppConfig


class TradevestConfig(AppConfig):
    name = "tradevest_django"
    verbose_name = "Tradevest"
