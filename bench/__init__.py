"""Benchmarks of tradevest-django against the general OAuth2 clients (not tests).

Run ``make bench`` (or ``python bench/run.py``); see ``docs/benchmarks.md``.
"""
