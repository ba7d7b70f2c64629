"""The Markdown report: one table per scenario, then the targets of tradevest-django.

Only tradevest-django has targets (the issue's); the peers' rows show what they do under the
same load, with "—" in the target columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bench.results import LoopResult, OverheadResult, Params

OURS = "tradevest-django"
#: The issue's targets for tradevest-django.
MAX_TOKEN_RATIO = 1.25
MAX_OVERHEAD_RATIO = 1.05


@dataclass(frozen=True)
class Check:
    """One target of tradevest-django and whether this run met it."""

    scenario: str
    target: str
    met: bool
    detail: str


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [_row(columns), _row(["---"] * len(columns))]
    lines.extend(_row(row) for row in rows)
    return "\n".join(lines)


def met_cell(ok: bool) -> str:
    return "yes" if ok else "**NO**"


def errors_cell(errors: dict[str, int]) -> str:
    return ", ".join(f"{name} x{count}" for name, count in sorted(errors.items())) or "0"


def fleet_ok(result: LoopResult) -> bool:
    return result.ratio <= MAX_TOKEN_RATIO and result.unauthorized == 0


def fleet_table(
    results: Sequence[LoopResult],
    checks: list[Check],
    *,
    title: str = "Fleet",
    scenario: str = "fleet",
) -> str:
    target = f"<= {MAX_TOKEN_RATIO} x ideal, 0 x 401"
    rows = []
    for r in results:
        ours = r.client == OURS
        if ours:
            checks.append(
                Check(
                    f"{scenario} (P={r.processes})",
                    target,
                    fleet_ok(r),
                    f"{r.token_requests} token requests = {r.ratio:.2f} x ideal {r.ideal}, "
                    f"{r.unauthorized} x 401",
                )
            )
        rows.append(
            [
                r.client,
                r.token_requests,
                r.token_requests_after,
                r.ideal,
                f"{r.ratio:.2f}",
                r.unauthorized,
                r.server_401,
                r.no_token,
                r.ok,
                f"{r.max_ms:.0f}",
                errors_cell(r.errors),
                target if ours else "—",
                met_cell(fleet_ok(r)) if ours else "—",
            ]
        )
    columns = [
        "client",
        "token requests in D",
        "after D",
        "ideal ceil(D/L)",
        "ratio",
        "401s seen by callers",
        "401s sent by server",
        "sent without token",
        "successful calls",
        "max latency ms",
        "errors",
        "target",
        "met?",
    ]
    return f"### {title}\n\n" + markdown_table(columns, rows)


def scale_table(results: Sequence[LoopResult], checks: list[Check]) -> str:
    target = f"<= {MAX_TOKEN_RATIO} x ideal, 0 x 401"
    rows = []
    for r in results:
        checks.append(
            Check(
                f"scale (P={r.processes})",
                target,
                fleet_ok(r),
                f"{r.token_requests} token requests = {r.ratio:.2f} x ideal {r.ideal}, "
                f"{r.unauthorized} x 401",
            )
        )
        rows.append(
            [
                f"{r.processes}" + (" (the fleet run)" if r.reused else ""),
                r.processes * r.threads,
                r.token_requests,
                r.token_requests_after,
                r.ideal,
                f"{r.ratio:.2f}",
                r.unauthorized,
                r.server_401,
                r.ok,
                errors_cell(r.errors),
                target,
                met_cell(fleet_ok(r)),
            ]
        )
    columns = [
        "processes",
        "threads in all",
        "token requests in D",
        "after D",
        "ideal",
        "ratio",
        "401s seen by callers",
        "401s sent by server",
        "successful calls",
        "errors",
        "target",
        "met?",
    ]
    return f"### Scale (fleet sweep, {OURS})\n\n" + markdown_table(columns, rows)


def overhead_table(results: Sequence[OverheadResult], checks: list[Check]) -> str:
    target = f"median <= {MAX_OVERHEAD_RATIO} x baseline"
    baseline = next((r for r in results if r.client == "baseline"), None)
    rows = []
    for r in results:
        ratio = paired = cpu_ratio = "—"
        ok = True
        if baseline is not None:
            value = r.median_ns / baseline.median_ns
            ok = value <= MAX_OVERHEAD_RATIO
            ratio = f"{value:.3f}"
            # Same-round ratios: how much of the spread is the machine drifting between rounds.
            per_round = [
                mine / base
                for mine, base in zip(r.round_medians_ns, baseline.round_medians_ns, strict=True)
            ]
            paired = f"{min(per_round):.3f} / {max(per_round):.3f}"
            cpu_ratio = f"{r.cpu_ns / baseline.cpu_ns:.2f}"
            if r.client == OURS:
                checks.append(
                    Check(
                        "overhead",
                        target,
                        ok,
                        f"median {r.median_ns / 1e3:.0f} us vs baseline "
                        f"{baseline.median_ns / 1e3:.0f} us = {value:.3f} x "
                        f"(per round {paired})",
                    )
                )
        ours = r.client == OURS
        rows.append(
            [
                r.client,
                f"{r.median_ns / 1e3:.0f}",
                f"{r.p99_ns / 1e3:.0f}",
                ratio,
                paired,
                f"{r.cpu_ns / 1e3:.0f}",
                cpu_ratio,
                r.not_ok,
                max(r.round_connections, default=0),
                target if ours else "—",
                met_cell(ok) if ours and baseline is not None else "—",
            ]
        )
    columns = [
        "client",
        "median µs",
        "p99 µs",
        "median / baseline",
        "per-round ratio min / max",
        "client CPU µs per call",
        "CPU / baseline",
        "non-2xx",
        "connections (most in a round)",
        "target",
        "met?",
    ]
    return "### Overhead (one thread, per-call latency)\n\n" + markdown_table(columns, rows)


def boundary_table(results: Sequence[LoopResult], params: Params, checks: list[Check]) -> str:
    target = f"0 calls > {params.slow_ms:g} ms"
    rows = []
    for r in results:
        ours = r.client == OURS
        if ours:
            checks.append(
                Check(
                    "boundary",
                    target,
                    r.slow == 0,
                    f"{r.slow} of {r.calls} calls over {params.slow_ms:g} ms, "
                    f"{r.slow_in_token_request} of them during a token request, max "
                    f"{r.max_ms:.1f} ms; longest wait in get_token() "
                    + ("—" if r.token_wait_max_ms is None else f"{r.token_wait_max_ms:.1f} ms"),
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
                "—" if r.token_wait_max_ms is None else f"{r.token_wait_max_ms:.1f}",
                r.unauthorized,
                errors_cell(r.errors),
                target if ours else "—",
                met_cell(r.slow == 0) if ours else "—",
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
        "longest wait in get_token() ms",
        "401s seen by callers",
        "errors",
        "target",
        "met?",
    ]
    title = "### Boundary (token expiry under a slow token endpoint)"
    return f"{title}\n\n" + markdown_table(columns, rows)


def summary(checks: Sequence[Check]) -> str:
    missed = [c for c in checks if not c.met]
    lines = [
        f"### Targets of {OURS}: "
        + (f"{len(missed)} of {len(checks)} MISSED" if missed else f"all {len(checks)} met"),
        "",
    ]
    for check in checks:
        state = "met" if check.met else "**MISSED**"
        lines.append(f"- {check.scenario}: {check.target} — {state} ({check.detail})")
    return "\n".join(lines)
