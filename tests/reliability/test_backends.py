"""The fleet test on every production cache backend a user may pick.

Several processes x threads call the API for several token lifetimes through each backend:
Django's ``RedisCache``, django-redis, Memcached through ``PyMemcacheCache`` (a memcached of the
test's own) and the database cache on PostgreSQL. Each must share one token per lifetime
(token requests <= lifetimes + 1: the first token, then one refresh ahead per lifetime) and no
call may fail: callers use ``get_session()``, so no 401 may reach them. A request the API
rejected because its token expired on the way (a host stalled for longer than the expiry
margin, 0.1 s of a 2 s token) is replayed by the session; those are counted, not failed.

Tokens live 2 s on Redis. Memcached and the database cache keep expiry times in whole seconds
(an entry stored for 1 s may vanish a few milliseconds later), and the manager stores a token
for the whole seconds of its usable life: 1 s of a 2 s token, so that a token could be gone
from those caches before the other processes looked. Their tokens live 4 s (stored for 3 s),
and their runs last three lifetimes too.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import collect, fleet_spec, start_gated
from tests.helpers import ServerFactory
from tests.reliability import figures, services
from tradevest_django.testing import FakeTradevestServer, delete_redis_prefix

pytestmark = pytest.mark.slow

PROCESSES = 4
THREADS = 8
LIFETIMES = 3

#: backend id -> (Django BACKEND, whether add() is atomic across processes, token lifetime).
BACKENDS: dict[str, tuple[str, bool, int]] = {
    "redis": ("django.core.cache.backends.redis.RedisCache", True, 2),
    "django-redis": ("django_redis.cache.RedisCache", True, 2),
    "memcached": ("django.core.cache.backends.memcached.PyMemcacheCache", True, 4),
    "database": ("django.core.cache.backends.db.DatabaseCache", False, 4),
}


@pytest.fixture
def server(make_server: ServerFactory) -> FakeTradevestServer:
    return make_server("backends-secret-ZXC")


def fleet_cache(
    backend: str, request: pytest.FixtureRequest
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(CACHES, DATABASES) for ``backend``, using the fixture that provides its service."""
    prefix = f"tvbackends-{uuid.uuid4().hex[:12]}"
    cache: dict[str, Any] = {"BACKEND": BACKENDS[backend][0], "KEY_PREFIX": prefix}
    databases: dict[str, Any] = {}
    if backend in ("redis", "django-redis"):
        url = request.getfixturevalue("redis_url")
        cache["LOCATION"] = url
        request.addfinalizer(lambda: delete_redis_prefix(url, prefix))
    elif backend == "memcached":
        memcached: services.ServiceProcess = request.getfixturevalue("private_memcached")
        cache["LOCATION"] = f"127.0.0.1:{memcached.port}"
    else:
        databases, table = request.getfixturevalue("postgres_cache_table")
        cache["LOCATION"] = table
    return {"default": cache}, databases


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("django-redis", marks=pytest.mark.redis),
        "memcached",
        "database",
    ],
)
def test_fleet_shares_one_token_per_lifetime(
    backend: str, request: pytest.FixtureRequest, server: FakeTradevestServer, tmp_path: Path
) -> None:
    caches, databases = fleet_cache(backend, request)
    server.token_lifetime = lifetime = BACKENDS[backend][2]
    spec = fleet_spec(
        server=server.settings(),
        caches=caches,
        databases=databases,
        threads=THREADS,
        duration=LIFETIMES * lifetime,
        mode="session",
        start_at=0,
    )
    procs, _ = start_gated(spec, PROCESSES, tmp_path / "go")
    results = collect(procs, timeout=LIFETIMES * lifetime + 120)
    calls = sum(r["calls"] for r in results)
    failures = [e for r in results for e in r["errors"]]
    unauthorized = sum(r["unauthorized"] for r in results)
    tokens_used = {s[2] for r in results for s in r["samples"]}
    arrivals = [r.received_at for r in server.token_requests]
    gaps = [round(later - earlier, 2) for earlier, later in itertools.pairwise(arrivals)]
    replayed = sum(s[4] for r in results for s in r["samples"])
    figures.record(
        "backends",
        backend=backend,
        atomic_add="yes" if BACKENDS[backend][1] else "no",
        processes=PROCESSES,
        threads=THREADS,
        lifetime_s=lifetime,
        lifetimes=LIFETIMES,
        calls=calls,
        token_requests=server.token_request_count,
        tokens_used=len(tokens_used),
        unauthorized=unauthorized,
        replayed_401s=replayed,
        failed_calls=len(failures),
        note=f"seconds between token requests: {gaps}",
    )
    assert calls > 100
    assert len(tokens_used) >= LIFETIMES  # the run spanned the lifetimes (no late start)
    assert not failures, failures[:10]
    assert unauthorized == 0
    assert replayed == server.api_unauthorized_count  # every 401 the API sent was replayed
    assert server.token_request_count <= LIFETIMES + 1, gaps
