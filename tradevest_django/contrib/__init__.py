"""Integrations with other Django packages, each an optional extra of tradevest-django."""
