"""One process of a benchmark run: one client, a shared start line, calls to the fake API.

Run as ``python -m bench.worker`` by ``bench/runner.py``. The protocol on stdin/stdout:

1. the parent writes the job as one JSON line (on stdin, so the client secret never shows in a
   process list);
2. the worker loads the client (and, when the job asks for a warm-up, fetches its first token
   and makes the warm-up calls), then prints ``ready``;
3. the parent writes the start time (wall clock), the same for every process of the run;
4. at that time the worker starts its threads, calls until the job's end, and prints one JSON
   line of counts and latencies. No token or secret ever leaves this process.

Job keys: ``client``, ``target`` (see :class:`bench.clients.Target`), ``threads``, ``duration``
(seconds, loop mode) or ``calls`` (count, timed mode: one thread, every latency returned),
``warmup`` (calls per thread before the start line) and ``slow_ms``. A job whose ``mode`` is
``async`` runs one event loop of coroutines instead of threads (``bench/async_worker.py``).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.clients import CLIENTS, Call, Client, Target


@dataclass
class ThreadStats:
    """What one thread saw; merged by the worker, then by the parent."""

    slow_ns: int = 150_000_000
    calls: int = 0
    ok: int = 0
    unauthorized: int = 0
    other_status: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies_ns: list[int] = field(default_factory=list)
    #: (wall-clock start, seconds) of each slow call, so the parent can tell a caller blocked
    #: by a token request from a stall of the machine.
    slow_calls: list[tuple[float, float]] = field(default_factory=list)

    def call(self, caller: Call) -> None:
        began_wall = time.time()
        began = time.perf_counter_ns()
        try:
            outcome: int | Exception = caller()
        except Exception as err:
            outcome = err
        self.record(outcome, began_wall, time.perf_counter_ns() - began)
        if isinstance(outcome, Exception):
            time.sleep(0.001)  # a persistent error must not turn into a busy loop

    def record(self, outcome: int | Exception, began_wall: float, elapsed: int) -> None:
        """Count one call: the status its caller saw, or the exception it raised."""
        self.latencies_ns.append(elapsed)
        self.calls += 1
        if elapsed > self.slow_ns and len(self.slow_calls) < 1000:
            self.slow_calls.append((began_wall, elapsed / 1e9))
        if isinstance(outcome, Exception):
            # A caller that raised saw no answer: counted by type, never with its message.
            self.errors[type(outcome).__name__] += 1
        elif 200 <= outcome < 300:
            self.ok += 1
        elif outcome == 401:
            self.unauthorized += 1
        else:
            self.other_status += 1


def percentile(sorted_values: list[int], fraction: float) -> int:
    """Nearest-rank percentile of an already sorted list (0 when empty)."""
    if not sorted_values:
        return 0
    return sorted_values[max(0, math.ceil(fraction * len(sorted_values)) - 1)]


def summarize(stats: list[ThreadStats], slow_ms: float, keep_samples: bool) -> dict[str, Any]:
    latencies = sorted(ns for s in stats for ns in s.latencies_ns)
    errors: collections.Counter[str] = collections.Counter()
    for s in stats:
        errors.update(s.errors)
    result: dict[str, Any] = {
        "calls": sum(s.calls for s in stats),
        "ok": sum(s.ok for s in stats),
        "unauthorized": sum(s.unauthorized for s in stats),
        "other_status": sum(s.other_status for s in stats),
        "errors": dict(errors),
        "p50_ns": percentile(latencies, 0.50),
        "p99_ns": percentile(latencies, 0.99),
        "max_ns": latencies[-1] if latencies else 0,
        "slow": sum(1 for ns in latencies if ns > slow_ms * 1e6),
        "slow_calls": [call for s in stats for call in s.slow_calls],
    }
    if keep_samples:
        result["samples_ns"] = stats[0].latencies_ns  # in call order
    return result


def run(job: dict[str, Any]) -> dict[str, Any]:
    client: Client = CLIENTS[job["client"]](Target(**job["target"]))
    client.load()
    if job.get("measure_token_waits"):
        client.measure_token_waits()
    threads: int = job.get("threads", 1)
    warmup: int = job.get("warmup", 0)
    slow_ns = int(job.get("slow_ms", 150.0) * 1e6)
    callers: list[Call] = []
    if warmup:
        # The first token and the connections are not what this job measures.
        client.start()
        callers = [client.caller() for _ in range(threads)]
        scratch = ThreadStats()
        for caller in callers:
            for _ in range(warmup):
                scratch.call(caller)
    # Start-up garbage (imports, Django's set-up) is collected now: its first full collection,
    # 50 to 70 ms in a Django process, would otherwise fall at a random moment of the run.
    gc.collect()
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())
    time.sleep(max(0.0, start_at - time.time()))  # the shared start line of all processes

    if "calls" in job:  # timed mode: a fixed number of calls, every latency kept
        stats = [ThreadStats(slow_ns)]
        cpu_began = time.process_time_ns()
        for _ in range(job["calls"]):
            stats[0].call(callers[0])
        cpu_ns = time.process_time_ns() - cpu_began
        client.close()
        result = summarize(stats, job.get("slow_ms", 150.0), keep_samples=True)
        result["cpu_ns_per_call"] = cpu_ns / max(1, job["calls"])
        return result

    end = start_at + job["duration"]
    if not warmup:
        client.start()  # part of the measured run: it may fetch a token
        callers = [client.caller() for _ in range(threads)]
    stats = [ThreadStats(slow_ns) for _ in callers]

    def loop(caller: Call, mine: ThreadStats) -> None:
        while time.time() < end:
            mine.call(caller)

    workers = [
        threading.Thread(target=loop, args=(caller, mine), daemon=True)
        for caller, mine in zip(callers, stats, strict=True)
    ]
    for thread in workers:
        thread.start()
    for thread in workers:
        # Daemon threads and a bounded join: a call stuck past its timeout cannot hang the run.
        thread.join(timeout=max(0.0, end - time.time()) + TIMEOUT_GRACE)
    result = summarize(stats, job.get("slow_ms", 150.0), keep_samples=False)
    if client.token_waits_ns is not None:
        measured = client.token_waits_ns[warmup * threads :]  # the warm-up's first fetch excluded
        result["token_wait_max_ns"] = max(measured, default=0)
    result["diagnostics"] = client.diagnostics()
    result["start_at"] = start_at  # the run's window, for the parent's server-side counts
    result["end"] = end
    result["stuck_threads"] = sum(1 for thread in workers if thread.is_alive())
    client.close()
    return result


#: How long after its end a run waits for calls still in flight (the clients' read timeout).
TIMEOUT_GRACE = 35.0


def main() -> None:
    job = json.loads(sys.stdin.readline())
    if job.get("mode") == "async":
        from bench import async_worker

        result = asyncio.run(async_worker.run(job))
    else:
        result = run(job)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
