"""Shared fixtures: Redis (real, fails under CI=true when absent), log capture for leak scans."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import pytest

REDIS_URL = os.environ.get("TRADEVEST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis URL; skips (or fails under CI=true) when Redis does not answer."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as err:
        message = (
            f"needs Redis at {REDIS_URL} ({type(err).__name__}); start redis-server or set "
            "TRADEVEST_TEST_REDIS_URL"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis is required under CI=true: {message}")
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture
def redis_caches(settings: object, redis_url: str) -> dict[str, dict[str, object]]:
    """CACHES with Django's RedisCache as default, under a key prefix unique to this test."""
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"tvtest-{uuid.uuid4().hex[:12]}",
        }
    }
    settings.CACHES = caches  # type: ignore[attr-defined]
    return caches


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def debug_log_records() -> Iterator[list[logging.LogRecord]]:
    """Every log record of every test, at DEBUG, from every logger (scanned for secrets)."""
    collector = _Collector()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    try:
        yield collector.records
    finally:
        root.removeHandler(collector)
        root.setLevel(old_level)
