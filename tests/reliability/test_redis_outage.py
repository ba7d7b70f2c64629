"""Redis stops in the middle of a multi-process run and comes back empty.

A redis-server of the test's own (never the shared one) is stopped two seconds into the run and
started again, fresh and on the same port, two seconds later. Tokens live two seconds, so every
process must renew its token during the outage, alone. No call may fail and no 401 may reach a
caller (callers use ``get_session()``); per-call latency must stay bounded (small
``socket_connect_timeout``/``socket_timeout``); and within a bounded time after Redis returns,
the processes share one token again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet import collect, fleet_spec, kill_all, start_gated
from tests.reliability import figures
from tests.reliability.services import ServiceProcess
from tradevest_django.testing import FakeTradevestServer

PROCESSES = 4
THREADS = 4
LIFETIME = 2
DURATION = 12.0
STOP_AT = 2.0
RESTART_AT = 4.0
#: Each process adopts the fleet's token at its next refresh: within a lifetime of the first
#: token stored after the restart, itself within a lifetime of the restart.
CONVERGE_WITHIN = 2 * LIFETIME + 1.0
#: Bound on a call during the outage and the reconnection (a lifetime after it): a cache call
#: that hung on the dead server, or retried with back-off, would take seconds per call.
LATENCY_BOUND = 5.0


@pytest.fixture
def server() -> Iterator[FakeTradevestServer]:
    with FakeTradevestServer(client_secret="outage-secret-VBN") as fake:
        fake.token_lifetime = LIFETIME
        yield fake


def pause_until(moment: float) -> None:
    """Pace the scenario's phases (the assertions use the measured times, not these)."""
    time.sleep(max(0.0, moment - time.time()))


@pytest.mark.slow
@pytest.mark.redis
def test_fleet_rides_out_a_redis_restart(
    server: FakeTradevestServer, private_redis_server: ServiceProcess, tmp_path: Path
) -> None:
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{private_redis_server.port}/0",
            "KEY_PREFIX": f"tvoutage-{uuid.uuid4().hex[:12]}",
            "OPTIONS": {"socket_connect_timeout": 0.25, "socket_timeout": 0.5},
        }
    }
    spec = fleet_spec(
        server=server.settings(),
        caches=caches,
        threads=THREADS,
        duration=DURATION,
        mode="session",
        start_at=0,
    )
    procs, start_at = start_gated(spec, PROCESSES, tmp_path / "go")
    try:
        pause_until(start_at + STOP_AT)
        private_redis_server.stop()
        stopped = time.time()
        assert not private_redis_server.answers()
        pause_until(start_at + RESTART_AT)
        private_redis_server.start()  # same port, empty, no persistence
        restarted = time.time()
        results = collect(procs, timeout=DURATION + 120)
    finally:
        kill_all(procs)

    end = start_at + DURATION
    samples = [[*s, p] for p, r in enumerate(results) for s in r["samples"]]
    outcome = analyse(samples, stopped, restarted, end)
    failures = [e for r in results for e in r["errors"]]
    unauthorized = sum(r["unauthorized"] for r in results)
    figures.record(
        "infrastructure",
        scenario=f"Redis stopped {restarted - stopped:.1f} s mid-run, restarted empty",
        processes=PROCESSES,
        threads=THREADS,
        calls=len(samples),
        token_requests=server.token_request_count,
        unauthorized=unauthorized,
        failed_calls=len(failures),
        worst_latency_s=round(outcome["worst_latency"], 2),
        note=f"converged {outcome['converge']:.1f} s after the restart; "
        f"{server.api_unauthorized_count} requests replayed after a 401; "
        f"{outcome['calls_in_outage']} calls during the outage and reconnection "
        f"(worst {outcome['worst_latency_in_outage']:.2f} s)",
    )
    assert not failures, failures[:10]
    assert unauthorized == 0
    for phase, calls in outcome["calls_per_phase"].items():
        assert all(calls), f"a process made no call {phase}: {calls}"
    # the outage really kept the processes apart: each renewed its token alone
    assert outcome["tokens_of_the_outage"] >= 2, outcome
    assert outcome["worst_latency_in_outage"] < LATENCY_BOUND, outcome
    assert outcome["converge"] <= CONVERGE_WITHIN, outcome
    assert outcome["last_private_use"] < end - LIFETIME, "no shared tail to look at"


def analyse(
    samples: list[list[Any]], stopped: float, restarted: float, end: float
) -> dict[str, Any]:
    """Figures of one run. A sample is ``[start, latency, fingerprint, status, replays, process]``.

    A token is *private* when some process never used it: only possible while processes cannot
    share. Tokens first used in the last lifetime are left out (not everyone has had its turn
    to adopt them yet).
    """
    processes = {s[5] for s in samples}
    users: dict[str, set[int]] = {}
    first_use: dict[str, float] = {}
    for start, _, fingerprint, _, _, process in samples:
        users.setdefault(fingerprint, set()).add(process)
        first_use[fingerprint] = min(first_use.get(fingerprint, start), start)
    private = {
        fp for fp, who in users.items() if who != processes and first_use[fp] < end - LIFETIME
    }
    last_private_use = max((s[0] for s in samples if s[2] in private), default=0.0)
    in_outage = [s for s in samples if stopped <= s[0] < restarted + LIFETIME]
    phases = {
        "before the outage": lambda s: s[0] < stopped,
        "during the outage": lambda s: stopped <= s[0] < restarted,
        "after the outage": lambda s: s[0] >= restarted,
    }
    return {
        "calls_per_phase": {
            phase: [sum(1 for s in samples if s[5] == p and when(s)) for p in sorted(processes)]
            for phase, when in phases.items()
        },
        "calls_in_outage": len(in_outage),
        "tokens_of_the_outage": sum(1 for fp in private if stopped <= first_use[fp] < restarted),
        "last_private_use": last_private_use,
        "converge": max(0.0, last_private_use - restarted),
        "worst_latency": max(s[1] for s in samples),
        "worst_latency_in_outage": max((s[1] for s in in_outage), default=0.0),
    }
