"""The async scenarios: async fleet, async overhead and async boundary.

The same machinery as the thread scenarios (``bench/scenarios.py``): a fresh fake server per
client run, fresh worker processes, one start line; each process runs one event loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.explain import log
from bench.results import LoopResult, OverheadResult, Params
from bench.scenarios import paired_overhead, run_loop


def async_fleet(params: Params, clients: Sequence[str]) -> list[LoopResult]:
    """P processes x one event loop x C coroutines, at most N calls in flight per process."""
    log(
        f"async fleet: P={params.processes} C={params.coroutines} N={params.connections} "
        f"D={params.duration} L={params.lifetime}"
    )
    return [
        run_loop(
            client,
            params,
            processes=params.processes,
            threads=params.coroutines,
            duration=params.duration,
            lifetime=params.lifetime,
            connections=params.connections,
        )
        for client in clients
    ]


def async_overhead(params: Params, clients: Sequence[str]) -> list[OverheadResult]:
    """One coroutine, calls one after another; each round one process, the clients in turns."""
    return paired_overhead(params, clients)


def async_boundary(params: Params, clients: Sequence[str]) -> list[LoopResult]:
    """A few coroutines and a lag ticker on one loop, across expiries, slow token endpoint.

    As in the thread boundary scenario, the first token is fetched before the start line. Each
    coroutine has its own client: a shared httpx pool makes a few calls wait for a connection
    whatever the auth (``bench/async_clients.py``), and this scenario measures the token.
    """
    log(
        f"async boundary: {params.boundary_seconds} s, C={params.boundary_coroutines}, "
        f"L={params.boundary_lifetime}, token endpoint delay {params.boundary_token_delay} s, "
        f"ticker every {params.tick_ms:g} ms"
    )
    return [
        run_loop(
            client,
            params,
            processes=1,
            threads=params.boundary_coroutines,
            duration=params.boundary_seconds,
            lifetime=params.boundary_lifetime,
            token_delay=params.boundary_token_delay,
            warmup=1,
            measure_token_waits=True,
            connections=params.boundary_coroutines,
            tick=params.tick_ms / 1000,
            per_caller=True,
        )
        for client in clients
    ]
