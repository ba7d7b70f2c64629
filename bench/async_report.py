"""The async scenarios' tables, in the style (and with the checks) of ``bench/report.py``."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from bench.report import (
    MAX_OVERHEAD_RATIO,
    OURS,
    Check,
    errors_cell,
    fleet_table,
    markdown_table,
    met_cell,
)
from bench.results import LoopResult, OverheadResult, Params

#: The event loop may wake a ticker this late during a refresh (p99), in milliseconds.
MAX_LOOP_LAG_MS = 5.0


def async_fleet_table(results: Sequence[LoopResult], checks: list[Check]) -> str:
    shape = ""
    if results:
        r = results[0]
        shape = (
            f" ({r.processes} processes x one event loop x {r.threads} coroutines, "
            f"at most {r.connections} calls in flight per process)"
        )
    return fleet_table(results, checks, title="Async fleet" + shape, scenario="async fleet")


def async_overhead_table(results: Sequence[OverheadResult], checks: list[Check]) -> str:
    """CPU per call against the bare ``httpx.AsyncClient``, paired round by round."""
    target = f"CPU per call, median of the per-round ratios <= {MAX_OVERHEAD_RATIO} x baseline"
    baseline = next((r for r in results if r.client == "baseline"), None)
    rows = []
    for r in results:
        ratio = spread = "—"
        ok = True
        if baseline is not None:
            # Each round measures both clients back to back: a ratio per round cancels most of
            # the machine's drift between rounds.
            pairs = zip(r.round_cpu_ns, baseline.round_cpu_ns, strict=True)
            per_round = [mine / base for mine, base in pairs]
            value = statistics.median(per_round)
            ok = value <= MAX_OVERHEAD_RATIO
            ratio = f"{value:.3f}"
            spread = f"{min(per_round):.3f} / {max(per_round):.3f}"
            if r.client == OURS:
                checks.append(
                    Check(
                        "async overhead",
                        target,
                        ok,
                        f"CPU {r.cpu_ns / 1e3:.0f} us vs baseline {baseline.cpu_ns / 1e3:.0f} us "
                        f"per call, median ratio {value:.3f} x (per round {spread})",
                    )
                )
        ours = r.client == OURS
        rows.append(
            [
                r.client,
                f"{r.cpu_ns / 1e3:.0f}",
                ratio,
                spread,
                f"{r.median_ns / 1e3:.0f}",
                f"{r.p99_ns / 1e3:.0f}",
                r.not_ok,
                max(r.round_connections, default=0),
                target if ours else "—",
                met_cell(ok) if ours and baseline is not None else "—",
            ]
        )
    columns = [
        "client",
        "client CPU µs per call",
        "CPU / baseline (median of rounds)",
        "per-round CPU ratio min / max",
        "median µs",
        "p99 µs",
        "non-2xx",
        "connections (most in a round)",
        "target",
        "met?",
    ]
    return "### Async overhead (one coroutine, CPU per call)\n\n" + markdown_table(columns, rows)


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def async_boundary_table(results: Sequence[LoopResult], params: Params, checks: list[Check]) -> str:
    slow_target = f"0 calls > {params.slow_ms:g} ms"
    lag_target = f"loop lag p99 < {MAX_LOOP_LAG_MS:g} ms during a refresh"
    rows = []
    for r in results:
        ours = r.client == OURS
        lag = r.loop_lag
        lag_p99 = lag.p99_refresh_ms if lag is not None else None
        lag_ok = lag_p99 is not None and lag_p99 < MAX_LOOP_LAG_MS
        if ours:
            waited = _ms(r.token_wait_max_ms)
            checks.append(
                Check(
                    "async boundary",
                    slow_target,
                    r.slow == 0,
                    f"{r.slow} of {r.calls} calls over {params.slow_ms:g} ms, "
                    f"{r.slow_in_token_request} of them during a token request, max "
                    f"{r.max_ms:.1f} ms; longest wait in aget_token() {waited} ms",
                )
            )
            checks.append(
                Check(
                    "async loop lag",
                    lag_target,
                    lag_ok,
                    "no tick fell in a token request"
                    if lag is None or lag_p99 is None
                    else f"p99 {lag_p99:.1f} ms, max {_ms(lag.max_refresh_ms)} ms over "
                    f"{lag.ticks_refresh} ticks during token requests; p99 "
                    f"{_ms(lag.p99_other_ms)} ms otherwise",
                )
            )
        rows.append(
            [
                r.client,
                r.calls,
                r.token_requests,
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                f"{r.max_ms:.1f}",
                r.slow,
                r.slow_in_token_request,
                _ms(r.token_wait_max_ms),
                _ms(lag_p99),
                _ms(lag.max_refresh_ms if lag is not None else None),
                _ms(lag.p99_other_ms if lag is not None else None),
                r.unauthorized,
                errors_cell(r.errors),
                f"{slow_target}; {lag_target}" if ours else "—",
                met_cell(r.slow == 0 and lag_ok) if ours else "—",
            ]
        )
    columns = [
        "client",
        "calls",
        "token requests",
        "p50 ms",
        "p99 ms",
        "max ms",
        f"calls > {params.slow_ms:g} ms",
        "of which during a token request",
        "longest wait in aget_token() ms",
        "loop lag p99 during a refresh ms",
        "loop lag max during a refresh ms",
        "loop lag p99 otherwise ms",
        "401s seen by callers",
        "errors",
        "target",
        "met?",
    ]
    return (
        "### Async boundary (token expiry under a slow token endpoint, one event loop)\n\n"
        + markdown_table(columns, rows)
    )
