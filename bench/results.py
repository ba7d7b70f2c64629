"""What a benchmark run is given (:class:`Params`) and what it measured."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Params:
    """Everything a run's numbers depend on; printed with the tables."""

    redis_url: str
    processes: int = 8
    threads: int = 8
    duration: float = 8.0
    lifetime: int = 2
    scale: tuple[int, ...] = (1, 2, 4, 8, 16)
    overhead_calls: int = 3000
    overhead_warmup: int = 300
    rounds: int = 6  # even, so that each client runs first and last equally often
    boundary_seconds: float = 6.0
    boundary_lifetime: int = 2
    boundary_token_delay: float = 0.2
    slow_ms: float = 150.0
    #: Async fleet: C coroutines on one event loop per process, at most N calls in flight
    #: (an asyncio.Semaphore the size of the client's pool, httpx.Limits(max_connections=N)).
    coroutines: int = 50
    connections: int = 4
    #: Async boundary: coroutines on the one loop, and how often the lag ticker wakes up.
    boundary_coroutines: int = 4
    tick_ms: float = 5.0


@dataclass
class LoopResult:
    """A fleet or boundary run of one client: server counters plus what callers saw."""

    client: str
    processes: int
    threads: int
    duration: float
    lifetime: int
    token_requests: int  # received by the server between the start line and the end of D
    token_requests_after: int  # received after D (calls still in flight on a starved machine)
    no_token: int  # API requests the server received without a bearer token
    server_401: int  # 401s the server sent, including those a client replayed internally
    calls: int
    ok: int
    unauthorized: int  # 401s returned to callers (after any internal replay)
    other_status: int
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    slow: int
    slow_in_token_request: int  # slow calls that overlapped a request to the token endpoint
    token_wait_max_ms: float | None  # longest wait inside get_token(), where measurable
    reused: bool = False
    #: Async runs: ``threads`` counts coroutines per process, at most ``connections`` in flight.
    connections: int | None = None
    loop_lag: LoopLag | None = None

    @property
    def ideal(self) -> int:
        """One token per lifetime for the whole fleet."""
        return math.ceil(self.duration / self.lifetime)

    @property
    def ratio(self) -> float:
        return self.token_requests / self.ideal


@dataclass(frozen=True)
class LoopLag:
    """How late a ticker coroutine woke up on the callers' event loop (async boundary).

    A tick is "during a refresh" when its sleep overlapped a token request at the server,
    widened by :data:`REFRESH_SLACK` on each side (the client's lock, cache and connection
    work before the request, its parsing and storing after the answer).
    """

    p99_refresh_ms: float | None  # None: no tick fell in a token request
    max_refresh_ms: float | None
    p99_other_ms: float | None
    max_ms: float
    ticks_refresh: int
    ticks: int
    #: The three longest oversleeps: (wall-clock start of the tick, milliseconds).
    worst: tuple[tuple[float, float], ...] = ()

    @classmethod
    def from_ticks(
        cls, ticks: list[tuple[float, int]], windows: list[tuple[float, float]], tick: float
    ) -> LoopLag:
        refresh: list[int] = []
        other: list[int] = []
        for at, lag_ns in ticks:
            woke = at + tick + lag_ns / 1e9
            during = any(
                at < end + REFRESH_SLACK and woke > start - REFRESH_SLACK for start, end in windows
            )
            (refresh if during else other).append(lag_ns)
        worst = sorted(ticks, key=lambda t: t[1], reverse=True)[:3]
        return cls(
            p99_refresh_ms=_percentile(refresh, 0.99) / 1e6 if refresh else None,
            max_refresh_ms=max(refresh) / 1e6 if refresh else None,
            p99_other_ms=_percentile(other, 0.99) / 1e6 if other else None,
            max_ms=max((lag for _, lag in ticks), default=0) / 1e6,
            ticks_refresh=len(refresh),
            ticks=len(ticks),
            worst=tuple((at, lag / 1e6) for at, lag in worst),
        )


#: Seconds around each token request that count as "during a refresh" for the loop lag.
REFRESH_SLACK = 0.1


def _percentile(values: list[int] | list[float], fraction: float) -> float:
    """Nearest-rank percentile (the values need not be sorted)."""
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(fraction * len(ordered)) - 1)])


@dataclass
class OverheadResult:
    """Per-round medians of one client, and every latency for the pooled p99."""

    client: str
    round_medians_ns: list[float] = field(default_factory=list)
    #: CPU time of the calling process per call, per round: the client's own work, without
    #: the server's time and the waits (the fake server runs in another process).
    round_cpu_ns: list[float] = field(default_factory=list)
    samples_ns: list[int] = field(default_factory=list)
    not_ok: int = 0
    #: TCP connections the fake server accepted per round (keep-alive: about 1, not one per call).
    round_connections: list[int] = field(default_factory=list)

    @property
    def median_ns(self) -> float:
        return statistics.median(self.round_medians_ns)

    @property
    def cpu_ns(self) -> float:
        return statistics.median(self.round_cpu_ns)

    @property
    def p99_ns(self) -> float:
        return _percentile(self.samples_ns, 0.99)
