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

    @property
    def ideal(self) -> int:
        """One token per lifetime for the whole fleet."""
        return math.ceil(self.duration / self.lifetime)

    @property
    def ratio(self) -> float:
        return self.token_requests / self.ideal


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
        ordered = sorted(self.samples_ns)
        return float(ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)])
