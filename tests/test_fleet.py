"""Several processes sharing one token through a real Redis."""

from __future__ import annotations

import math
import uuid

import pytest

from tests.fleet import run_fleet
from tests.helpers import ServerFactory, free_port
from tradevest_django.testing import FakeTradevestServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def server(make_server: ServerFactory) -> FakeTradevestServer:
    return make_server("fleet-secret-ASDF")


def redis_cache(redis_url: str) -> dict[str, object]:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"tvfleet-{uuid.uuid4().hex[:12]}",
        }
    }


def test_fleet_fetches_one_token_per_lifetime(server: FakeTradevestServer, redis_url: str) -> None:
    server.token_lifetime = 2
    duration = 6.0
    results = run_fleet(
        server=server.settings(),
        caches=redis_cache(redis_url),
        processes=4,
        threads=8,
        duration=duration,
        mode="session",  # callers use get_session(), as applications do
    )
    lifetimes = math.ceil(duration / server.token_lifetime)
    calls = sum(r["calls"] for r in results)
    assert all(not r["errors"] for r in results), [r["errors"][:3] for r in results]
    assert calls > 100
    assert sum(r["unauthorized"] for r in results) == 0  # no 401 reaches a caller
    assert server.token_request_count <= lifetimes + 1, server.token_request_count


def test_async_fleet_fetches_one_token_per_lifetime(
    server: FakeTradevestServer, redis_url: str
) -> None:
    """4 processes x 200 coroutines through get_async_client(), over 3 token lifetimes."""
    server.token_lifetime = 2
    duration = 6.0
    results = run_fleet(
        server=server.settings(),
        caches=redis_cache(redis_url),
        processes=4,
        threads=1,
        coroutines=200,
        concurrency=4,  # calls at once per process, as many as its client's connections
        duration=duration,
        mode="async",
    )
    lifetimes = math.ceil(duration / server.token_lifetime)
    calls = sum(r["calls"] for r in results)
    assert all(not r["errors"] for r in results), [r["errors"][:3] for r in results]
    assert calls > 100
    assert sum(r["unauthorized"] for r in results) == 0  # no 401 reaches a caller
    assert server.api_unauthorized_count == 0  # and no expired token was ever sent
    first = min(s[0] for r in results for s in r["samples"])
    arrivals = [round(r.received_at - first, 2) for r in server.token_requests]
    assert server.token_request_count <= lifetimes + 1, arrivals


def test_stale_401_across_processes_keeps_the_fresher_token(
    tradevest_settings: FakeTradevestServer, redis_caches: dict[str, object]
) -> None:
    server = tradevest_settings
    import tradevest_django

    stale = tradevest_django.get_token()  # this process, "A", holds T1 in memory
    server.revoke(stale.access_token)
    # process "B" takes T1 from Redis, gets a 401, invalidates it and stores a fresh T2
    (other,) = run_fleet(
        server=server.settings(),
        caches=redis_caches,
        processes=1,
        threads=1,
        duration=1,
    )
    assert other["unauthorized"] == 1 and other["calls"] > 1
    assert server.token_request_count == 2
    fresh = server.issued_tokens[-1]
    # A's own 401 for T1 arrives late: it must not throw away B's fresher token
    tradevest_django.invalidate_token(stale)
    assert tradevest_django.get_token().access_token == fresh
    assert server.token_request_count == 2


def test_invalid_client_in_many_processes_is_bounded(
    server: FakeTradevestServer, redis_url: str
) -> None:
    results = run_fleet(
        server=server.settings(CLIENT_SECRET="wrong-secret", FAILURE_COOLDOWN=30),
        caches=redis_cache(redis_url),
        processes=6,
        threads=4,
        duration=3,
    )
    errors = [e for r in results for e in r["errors"]]
    assert errors and set(errors) == {"InvalidClient"}
    # one request, plus at most one per process that raced before the failure was stored
    assert server.token_request_count <= 6, server.token_request_count


def test_unreachable_redis_still_gives_tokens(
    settings: object, tradevest_settings: FakeTradevestServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings.CACHES = {  # type: ignore[attr-defined]
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{port}",
            "OPTIONS": {"socket_connect_timeout": 0.5},
        }
    }
    import tradevest_django

    token = tradevest_django.get_token()
    assert tradevest_django.get_token() is token
    assert token.access_token in tradevest_settings.issued_tokens
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
