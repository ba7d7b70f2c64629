"""Explanations of a run on stderr: when tokens were fetched, by whom, and why calls failed.

The report's tables hold the numbers; these lines say where they came from (e.g. a duplicate
token request, a 401 for a token that expired in flight, a slow call that was the machine).
"""

from __future__ import annotations

import sys
from typing import Any

from bench.results import LoopLag
from tradevest_django.testing import FakeTradevestServer


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the Markdown report."""
    print(message, file=sys.stderr, flush=True)


def run(
    results: list[dict[str, Any]],
    token_windows: list[tuple[float, float]],
    rejected: str,
    *,
    start_at: float,
    end: float,
) -> None:
    """Everything worth knowing about one loop run, times relative to its start line."""
    if token_windows:
        # The spacing of the token requests shows the refresh-ahead at work; a single caller's
        # slow calls, next to them, show whether it was blocked by a refresh or stalled.
        log(
            "    token requests at "
            + ", ".join(f"{start - start_at:+.2f}" for start, _ in token_windows[:12])
            + (" ..." if len(token_windows) > 12 else "")
            + f" s after the start line (D ends at {end - start_at:+.2f} s)"
        )
        if len(results) == 1:
            for call_start, seconds in results[0]["slow_calls"][:10]:
                log(f"    slow call at {call_start - start_at:+.2f} s took {seconds * 1000:.0f} ms")
    if rejected:
        log(f"    401s sent by the server: {rejected}")
    _diagnostics(results, start_at)


def loop_lag(lag: LoopLag, *, start_at: float) -> None:
    """The event loop's lag: during token requests, otherwise, and the worst ticks."""

    def ms(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f} ms"

    log(
        f"    event-loop lag: p99 {ms(lag.p99_refresh_ms)} over {lag.ticks_refresh} ticks during "
        f"token requests, p99 {ms(lag.p99_other_ms)} over the other "
        f"{lag.ticks - lag.ticks_refresh}; worst "
        + ", ".join(f"{lag_ms:.1f} ms at {at - start_at:+.2f} s" for at, lag_ms in lag.worst)
    )


def _diagnostics(results: list[dict[str, Any]], start_at: float) -> None:
    """Each token a process fetched (when, in which thread, how long), and its warnings."""
    events = sorted(
        (
            event["at"] - start_at,
            index,
            event["thread"],
            event.get("seconds", 0.0),
            event["event"],
            event.get("lead") or 0.0,
        )
        for index, r in enumerate(results)
        for event in r["diagnostics"].get("events", [])
    )
    shown = [e for e in events if e[4] in ("fetch", "lock taken")]
    if shown:
        log(
            "    fetches and fleet-lock acquisitions (s after start, process, thread; the "
            "in-flight allowance when it moved the refresh): "
            + ", ".join(
                f"{at:+.2f} p{index} {thread} {event}"
                + (f" {seconds * 1000:.0f} ms" if event == "fetch" else "")
                + (f" (lead {lead * 1000:.0f} ms)" if event == "fetch" and lead else "")
                for at, index, thread, seconds, event, lead in shown[:40]
            )
        )
    invalidations = [e[0] for e in events if e[4] == "invalidate"]
    busy = sum(1 for e in events if e[4] == "lock busy")
    if invalidations or busy:
        log(
            f"    {len(invalidations)} invalidations after a 401"
            + (
                f" ({min(invalidations):+.2f} to {max(invalidations):+.2f} s)"
                if invalidations
                else ""
            )
            + f"; the fleet lock was found busy {busy} times"
        )
    skews = [r["diagnostics"].get("skew") for r in results]
    if any(skews):
        log("    clock skew believed at the end, per process (s): " + ", ".join(map(str, skews)))
    warnings: dict[str, int] = {}
    for r in results:
        for message, count in r["diagnostics"].get("warnings", {}).items():
            warnings[message] = warnings.get(message, 0) + count
    for message, count in warnings.items():
        log(f"    warning x{count}: {message}")


def rejections(server: FakeTradevestServer) -> str:
    """Why the server answered 401: an expired token (and how late it arrived), or none at all."""
    late_ms: list[float] = []
    other = missing = 0
    for record in server.api_requests:
        if record.status != 401:
            continue
        if record.token is None:
            missing += 1
            continue
        # The fake's own bookkeeping (token -> (client id, expiry)); read after the run ended.
        expiry = server._expiry.get(record.token)
        if expiry is None or record.received_at < expiry[1]:
            other += 1
        else:
            late_ms.append((record.received_at - expiry[1]) * 1000)
    parts = []
    if late_ms:
        parts.append(
            f"{len(late_ms)} with a token that had expired {min(late_ms):.0f} to "
            f"{max(late_ms):.0f} ms before the request arrived"
        )
    if missing:
        parts.append(f"{missing} without a token")
    if other:
        parts.append(f"{other} with a token rejected for another reason")
    return "; ".join(parts)
