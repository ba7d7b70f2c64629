"""Django settings of the Celery worker started by tests/test_celery.py (from the environment)."""

from __future__ import annotations

import environ

from tests.settings import *  # noqa: F403
from tradevest_django.env import tradevest_env

env = environ.Env()
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env.str("TEST_REDIS_URL"),
        "KEY_PREFIX": env.str("TEST_KEY_PREFIX"),
    }
}
TRADEVEST = {"default": tradevest_env(env)}
CELERY_BROKER_URL = env.str("TEST_REDIS_URL")
CELERY_RESULT_BACKEND = env.str("TEST_REDIS_URL")
