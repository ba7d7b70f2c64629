"""The thread scenarios: fleet, scale (a fleet sweep), overhead and boundary.

Their async counterparts (``bench/async_scenarios.py``) reuse :func:`run_loop` and :func:`overhead`.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Sequence

from bench import explain
from bench.explain import log
from bench.results import LoopLag, LoopResult, OverheadResult, Params
from bench.runner import run_workers
from bench.server import fake_server, target
from tradevest_django.testing import delete_redis_prefix


def run_loop(
    client: str,
    params: Params,
    *,
    processes: int,
    threads: int,
    duration: float,
    lifetime: int,
    token_delay: float = 0.0,
    warmup: int = 0,
    measure_token_waits: bool = False,
    connections: int | None = None,
    tick: float = 0.0,
    per_caller: bool = False,
) -> LoopResult:
    """``processes`` x ``threads`` callers of one client, ``duration`` seconds, one start line.

    With ``connections``, each process is one event loop of ``threads`` coroutines making at
    most ``connections`` calls at once (``bench/async_worker.py``); ``tick`` adds its loop-lag
    ticker; ``per_caller`` gives each coroutine its own client.
    """
    key_prefix = f"tvbench-{uuid.uuid4().hex[:12]}"
    began = time.monotonic()
    with fake_server(lifetime, token_delay=token_delay) as (server, redact):
        job = {
            "client": client,
            "target": target(server, params.redis_url, key_prefix),
            "threads": threads,
            "duration": duration,
            "warmup": warmup,
            "slow_ms": params.slow_ms,
            "measure_token_waits": measure_token_waits,
        }
        if connections is not None:
            job.update(mode="async", connections=connections, tick=tick, per_caller=per_caller)
        results = run_workers([job] * processes, run_seconds=duration, redact=redact)
        # The ideal counts D seconds: token requests are counted in the run's window.
        # Warm-up fetches come before it; after it, only calls that were still in flight when
        # D ended (a starved machine finishes them late), shown apart.
        start_at, end = results[0]["start_at"], results[0]["end"]
        received = [r.received_at for r in server.token_requests]
        token_requests = sum(1 for at in received if start_at <= at <= end)
        token_requests_after = sum(1 for at in received if at > end)
        no_token = sum(1 for record in server.api_requests if record.token is None)
        server_401 = server.api_unauthorized_count
        rejected = explain.rejections(server)
        token_windows = [
            (r.received_at, r.received_at + token_delay) for r in server.token_requests
        ]
    delete_redis_prefix(params.redis_url, key_prefix)
    stuck = sum(r["stuck_threads"] for r in results)
    if stuck:
        log(f"  warning: {stuck} thread(s) of {client} were still in a call at the end")
    errors: dict[str, int] = {}
    for r in results:
        for name, count in r["errors"].items():
            errors[name] = errors.get(name, 0) + count
    waits = [r["token_wait_max_ns"] for r in results if "token_wait_max_ns" in r]
    ticks = [(at, lag) for r in results for at, lag in r.get("ticks", [])]
    result = LoopResult(
        client=client,
        processes=processes,
        threads=threads,
        duration=duration,
        lifetime=lifetime,
        token_requests=token_requests,
        token_requests_after=token_requests_after,
        no_token=no_token,
        server_401=server_401,
        calls=sum(r["calls"] for r in results),
        ok=sum(r["ok"] for r in results),
        unauthorized=sum(r["unauthorized"] for r in results),
        other_status=sum(r["other_status"] for r in results),
        errors=errors,
        # Per-process percentiles: exact for one process (boundary), indicative for a fleet.
        p50_ms=max(r["p50_ns"] for r in results) / 1e6,
        p99_ms=max(r["p99_ns"] for r in results) / 1e6,
        max_ms=max(r["max_ns"] for r in results) / 1e6,
        slow=sum(r["slow"] for r in results),
        slow_in_token_request=sum(
            1
            for r in results
            for call_start, seconds in r["slow_calls"]
            if any(
                call_start < end and call_start + seconds > start for start, end in token_windows
            )
        ),
        token_wait_max_ms=max(waits) / 1e6 if waits else None,
        connections=connections,
        loop_lag=LoopLag.from_ticks(ticks, token_windows, tick) if tick else None,
    )
    explain.run(results, token_windows, rejected, start_at=start_at, end=end)
    if result.loop_lag is not None:
        explain.loop_lag(result.loop_lag, start_at=start_at)
    callers = "T" if connections is None else "C"
    log(
        f"  {client} P={processes} {callers}={threads}: {result.token_requests} token requests, "
        f"{result.ok} ok calls, {result.unauthorized} x 401, max {result.max_ms:.0f} ms "
        f"({time.monotonic() - began:.1f} s)"
    )
    return result


def fleet(params: Params, clients: Sequence[str]) -> list[LoopResult]:
    log(f"fleet: P={params.processes} T={params.threads} D={params.duration} L={params.lifetime}")
    return [
        run_loop(
            client,
            params,
            processes=params.processes,
            threads=params.threads,
            duration=params.duration,
            lifetime=params.lifetime,
        )
        for client in clients
    ]


def scale(params: Params, reuse: Sequence[LoopResult] = ()) -> list[LoopResult]:
    """tradevest-django at each fleet size; the fleet scenario's own run is reused for its P."""
    log(f"scale: P in {params.scale}, tradevest-django")
    results = []
    for processes in params.scale:
        same = [
            r
            for r in reuse
            if r.client == "tradevest-django"
            and (r.processes, r.threads, r.duration, r.lifetime)
            == (processes, params.threads, params.duration, params.lifetime)
        ]
        if same:
            results.append(LoopResult(**{**same[0].__dict__, "reused": True}))
            continue
        results.append(
            run_loop(
                "tradevest-django",
                params,
                processes=processes,
                threads=params.threads,
                duration=params.duration,
                lifetime=params.lifetime,
            )
        )
    return results


def boundary(params: Params, clients: Sequence[str]) -> list[LoopResult]:
    """One thread across several expiries while the token endpoint takes 200 ms to answer.

    The first token is fetched before the start line (a warm-up call): every client must wait
    for its very first token, and that wait is not what this scenario measures.
    """
    log(
        f"boundary: {params.boundary_seconds} s, L={params.boundary_lifetime}, "
        f"token endpoint delay {params.boundary_token_delay} s"
    )
    return [
        run_loop(
            client,
            params,
            processes=1,
            threads=1,
            duration=params.boundary_seconds,
            lifetime=params.boundary_lifetime,
            token_delay=params.boundary_token_delay,
            warmup=1,
            measure_token_waits=True,
        )
        for client in clients
    ]


def overhead(params: Params, clients: Sequence[str]) -> list[OverheadResult]:
    """Rounds of one fresh process per client, the order reversed every other round.

    Alternating the order makes slow drift of a shared machine hit every client alike; the
    token lives an hour, so no call meets a refresh.
    """
    log(f"overhead: {params.rounds} round(s) x {params.overhead_calls} calls")
    results = {client: OverheadResult(client) for client in clients}
    for round_no in range(params.rounds):
        order = list(clients) if round_no % 2 == 0 else list(reversed(clients))
        for client in order:
            key_prefix = f"tvbench-{uuid.uuid4().hex[:12]}"
            with fake_server(3600) as (server, redact):
                job = {
                    "client": client,
                    "target": target(server, params.redis_url, key_prefix),
                    "threads": 1,
                    "calls": params.overhead_calls,
                    "warmup": params.overhead_warmup,
                }
                (result,) = run_workers([job], run_seconds=60.0, redact=redact)
                connections = server.connections_opened
            delete_redis_prefix(params.redis_url, key_prefix)
            samples: list[int] = result["samples_ns"]
            into = results[client]
            into.round_medians_ns.append(statistics.median(samples))
            into.round_cpu_ns.append(result["cpu_ns_per_call"])
            into.samples_ns.extend(samples)
            into.not_ok += result["calls"] - result["ok"]
            into.round_connections.append(connections)
        medians = ", ".join(
            f"{c} {results[c].round_medians_ns[-1] / 1e3:.0f} us "
            f"({results[c].round_cpu_ns[-1] / 1e3:.0f} us CPU)"
            for c in clients
        )
        log(f"  round {round_no + 1}: {medians}")
    return [results[client] for client in clients]


def paired_overhead(params: Params, clients: Sequence[str]) -> list[OverheadResult]:
    """Rounds of one fresh process running every client in turns (``async_worker.run_paired``).

    The async overhead's method: the clients take turns in blocks of calls on one event loop,
    so a slower or faster process moves every client's figure alike.
    """
    log(f"async overhead: {params.rounds} round(s) x {params.overhead_calls} calls per client")
    results = {client: OverheadResult(client) for client in clients}
    for round_no in range(params.rounds):
        order = list(clients) if round_no % 2 == 0 else list(reversed(clients))
        key_prefix = f"tvbench-{uuid.uuid4().hex[:12]}"
        with fake_server(3600) as (server, redact):
            job = {
                "client": order[0],
                "paired": order,
                "target": target(server, params.redis_url, key_prefix),
                "calls": params.overhead_calls,
                "warmup": params.overhead_warmup,
                "mode": "async",
            }
            (result,) = run_workers([job], run_seconds=60.0, redact=redact)
            connections = server.connections_opened
        delete_redis_prefix(params.redis_url, key_prefix)
        for client in clients:
            each = result["paired"][client]
            into = results[client]
            into.round_medians_ns.append(statistics.median(each["samples_ns"]))
            into.round_cpu_ns.append(each["cpu_ns_per_call"])
            into.samples_ns.extend(each["samples_ns"])
            into.not_ok += each["calls"] - each["ok"]
            into.round_connections.append(connections)  # the server's, for all clients
        log(
            f"  round {round_no + 1}: "
            + ", ".join(
                f"{c} {results[c].round_medians_ns[-1] / 1e3:.0f} us "
                f"({results[c].round_cpu_ns[-1] / 1e3:.0f} us CPU)"
                for c in clients
            )
        )
    return [results[client] for client in clients]
