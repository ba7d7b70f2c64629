"""Minimal settings for the test suite."""

from __future__ import annotations

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "tradevest_django",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Points at a closed loopback port: a test that forgets the fake server fails fast and offline.
TRADEVEST = {
    "default": {
        "CLIENT_ID": "settings-client-id",
        "CLIENT_SECRET": "settings-client-secret",
        "AUTH_URL": "http://127.0.0.1:9",
        "API_URL": "http://127.0.0.1:9",
    }
}
LOGGING_CONFIG = None
