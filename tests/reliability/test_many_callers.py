"""1,000 concurrent callers (4 processes x 250 threads) at the moment the shared token expires.

Each process takes the fleet's token once, then all its threads wait on a common line just after
that token expired, and each makes one API call through ``get_session()``. The fleet must make
one token request (two at most), and no call may fail or be answered 401.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet import collect, fleet_spec, kill_all, start_gated
from tests.reliability import figures
from tradevest_django.testing import FakeTradevestServer, delete_redis_prefix
from tradevest_django.testing import _http as fake_server_module

PROCESSES = 4
THREADS = 250
#: The first token's life: long enough for every process to take it before it expires.
FIRST_LIFETIME = 4
#: The next token outlives the burst, so that a refresh ahead cannot add requests.
NEXT_LIFETIME = 300


@pytest.fixture
def server() -> Iterator[FakeTradevestServer]:
    # The fake server's listen backlog (1024) takes a thousand connections at once; with
    # socketserver's default of 5, dropped handshakes left requests waiting ~30 s.
    assert fake_server_module._Server.request_queue_size >= 1000
    with FakeTradevestServer(client_secret="callers-secret-JKL") as fake:
        fake.token_lifetime = FIRST_LIFETIME
        yield fake


@pytest.mark.slow
@pytest.mark.redis
def test_thousand_callers_at_expiry_make_one_token_request(
    server: FakeTradevestServer, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"tvcallers-{uuid.uuid4().hex[:12]}"
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": prefix,
        }
    }
    spec = fleet_spec(
        server=server.settings(),
        caches=caches,
        threads=THREADS,
        duration=60,  # bounds the joins only: each thread makes one call
        mode="burst",
        start_at=0,
        line_after_expiry=0.05,
    )
    procs, _ = start_gated(spec, PROCESSES, tmp_path / "go")
    try:
        deadline = time.monotonic() + 60
        while not server.issued_tokens:  # the first token is issued (its lifetime read)...
            assert time.monotonic() < deadline, "no first token"
            time.sleep(0.01)
        server.token_lifetime = NEXT_LIFETIME  # ...so the next one outlives the burst
        results = collect(procs, timeout=180)
    finally:
        kill_all(procs)
        delete_redis_prefix(redis_url, prefix)

    line = min(r["line"] for r in results)
    before = sum(1 for r in server.token_requests if r.received_at < line)
    at_expiry = server.token_request_count - before
    samples = [s for r in results for s in r["samples"]]
    statuses = [s[3] for s in samples]
    failures = [e for r in results for e in r["errors"]]
    worst = max(s[1] for s in samples)
    figures.maximum("concurrent_callers", len(samples))
    figures.record(
        "infrastructure",
        scenario=f"{len(samples):,} callers at one token expiry, through get_session()",
        processes=PROCESSES,
        threads=THREADS,
        calls=len(samples),
        token_requests=at_expiry,
        unauthorized=statuses.count(401),
        failed_calls=len(failures),
        worst_latency_s=round(worst, 2),
        note=f"{before} token request(s) for the first token; "
        f"{server.api_unauthorized_count} requests answered 401 by the API; largest "
        f"worker RSS {max(r['max_rss_kb'] for r in results) // 1024} MiB; lines hit "
        f"{max(r['late_by'] for r in results):.2f} s late at worst",
    )
    assert len({r["first_fingerprint"] for r in results}) == 1  # one expiry, one line
    assert all(r["threads_alive"] == 0 for r in results)
    assert len(samples) == PROCESSES * THREADS
    assert not failures, failures[:10]
    assert statuses.count(200) == len(samples)
    assert server.api_unauthorized_count == 0  # not even a 401 retried inside the session
    assert 1 <= at_expiry <= 2, at_expiry
