"""One process of an async benchmark run: one event loop, C coroutines, one client.

``python -m bench.worker`` hands a job whose ``mode`` is ``async`` to :func:`run`; the protocol
with the parent is the thread worker's (job on stdin, ``ready``, the start line, one JSON line
of results), and so are the results, with coroutines where the thread worker has threads.

Extra job keys:

- ``connections``: N, the client's pool size, and an ``asyncio.Semaphore`` of N that every call
  is made under, as an application sizes its concurrency to its pool;
- ``paired`` (timed mode only): the names of several clients measured in one process, in turns
  (see :func:`run_paired`);
- ``per_caller``: each coroutine builds its own client (see ``bench/async_clients.py``);
- ``tick`` (seconds): a ticker coroutine on the same loop records how late it wakes up, the
  event-loop lag that a call blocking the loop (e.g. a synchronous token request) causes.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from typing import Any

from bench.async_clients import ASYNC_CLIENTS, AsyncCall, AsyncClient
from bench.clients import Target
from bench.worker import TIMEOUT_GRACE, ThreadStats, summarize


async def call(stats: ThreadStats, caller: AsyncCall) -> None:
    began_wall = time.time()
    began = time.perf_counter_ns()
    try:
        outcome: int | Exception = await caller()
    except Exception as err:
        outcome = err
    stats.record(outcome, began_wall, time.perf_counter_ns() - began)
    if isinstance(outcome, Exception):
        await asyncio.sleep(0.001)  # a persistent error must not turn into a busy loop


async def tick(end: float, interval: float, ticks: list[tuple[float, int]]) -> None:
    """Sleep ``interval`` again and again until ``end``; record each oversleep (ns)."""
    while time.time() < end:
        began_wall = time.time()
        began = time.perf_counter_ns()
        await asyncio.sleep(interval)
        ticks.append((began_wall, time.perf_counter_ns() - began - int(interval * 1e9)))


async def run_paired(job: dict[str, Any]) -> dict[str, Any]:
    """Several clients in one process and one loop, taking turns in blocks of calls.

    Each client's CPU is the process's CPU time during its own blocks, and the order of the
    turns is reversed every block. Between two processes of the same client the CPU per call
    varies by 10 to 20 % on a shared machine (hash seeds, memory layout, neighbours); within one
    process, block by block, both clients meet the same conditions, so the ratio is what differs.
    """
    target = Target(**job["target"])
    names: list[str] = job["paired"]
    clients = [ASYNC_CLIENTS[name](target, connections=1) for name in names]
    callers: list[AsyncCall] = []
    for client in clients:
        client.load()
        callers.append(client.caller())
        await client.start()
        for _ in range(job.get("warmup", 0)):
            await call(ThreadStats(), callers[-1])
    gc.collect()
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())
    await asyncio.sleep(max(0.0, start_at - time.time()))
    slow_ms = job.get("slow_ms", 150.0)
    stats = [ThreadStats(int(slow_ms * 1e6)) for _ in clients]
    cpu_ns = [0] * len(clients)
    block: int = job.get("block", 100)
    order = list(range(len(clients)))
    for _ in range(max(1, job["calls"] // block)):
        for index in order:
            began = time.process_time_ns()
            for _ in range(block):
                await call(stats[index], callers[index])
            cpu_ns[index] += time.process_time_ns() - began
        order.reverse()
    results = {}
    for index, (name, client) in enumerate(zip(names, clients, strict=True)):
        await client.aclose()
        result = summarize([stats[index]], slow_ms, keep_samples=True)
        result["cpu_ns_per_call"] = cpu_ns[index] / max(1, result["calls"])
        results[name] = result
    return {"paired": results, "stuck_threads": 0}


async def run(job: dict[str, Any]) -> dict[str, Any]:
    if "paired" in job:
        return await run_paired(job)
    connections: int = job.get("connections", 1)
    client: AsyncClient = ASYNC_CLIENTS[job["client"]](
        Target(**job["target"]), connections=connections, per_caller=job.get("per_caller", False)
    )
    client.load()
    if job.get("measure_token_waits"):
        client.measure_token_waits()
    coroutines: int = job.get("threads", 1)
    warmup: int = job.get("warmup", 0)
    slow_ns = int(job.get("slow_ms", 150.0) * 1e6)
    callers = [client.caller() for _ in range(coroutines)]  # no I/O: that is start()'s
    if warmup:
        # The first token and the connections are not what this job measures.
        await client.start()
        scratch = ThreadStats()
        for caller in callers:
            for _ in range(warmup):
                await call(scratch, caller)
    # Start-up garbage (imports, Django's set-up) is collected now: its first full collection,
    # 50 to 70 ms in a Django process, would otherwise fall at a random moment of the run.
    gc.collect()
    print("ready", flush=True)
    start_at = float(sys.stdin.readline())  # blocks the loop, but nothing else runs on it yet
    await asyncio.sleep(max(0.0, start_at - time.time()))  # the shared start line

    if "calls" in job:  # timed mode: a fixed number of calls, every latency kept
        stats = [ThreadStats(slow_ns)]
        cpu_began = time.process_time_ns()
        for _ in range(job["calls"]):
            await call(stats[0], callers[0])
        cpu_ns = time.process_time_ns() - cpu_began
        await client.aclose()
        result = summarize(stats, job.get("slow_ms", 150.0), keep_samples=True)
        result["cpu_ns_per_call"] = cpu_ns / max(1, job["calls"])
        return result

    end = start_at + job["duration"]
    ticks: list[tuple[float, int]] = []
    ticker = asyncio.create_task(tick(end, job["tick"], ticks)) if job.get("tick") else None
    if not warmup:
        await client.start()  # part of the measured run: it may fetch a token
    stats = [ThreadStats(slow_ns) for _ in callers]
    in_flight = asyncio.Semaphore(connections)

    async def loop(caller: AsyncCall, mine: ThreadStats) -> None:
        while time.time() < end:
            async with in_flight:
                if time.time() >= end:
                    break  # D ended while this coroutine queued for a connection
                # Timed from here: the client's own work and the call, not the queue for a slot.
                await call(mine, caller)

    tasks = [
        asyncio.create_task(loop(caller, mine)) for caller, mine in zip(callers, stats, strict=True)
    ]
    # Bounded: a call stuck past its timeout cannot hang the run.
    _, stuck = await asyncio.wait(tasks, timeout=max(0.0, end - time.time()) + TIMEOUT_GRACE)
    for task in stuck:
        task.cancel()
    if ticker is not None:
        await ticker
    result = summarize(stats, job.get("slow_ms", 150.0), keep_samples=False)
    if client.token_waits_ns is not None:
        measured = client.token_waits_ns[warmup * coroutines :]  # the warm-up's excluded
        result["token_wait_max_ns"] = max(measured, default=0)
    if ticker is not None:
        result["ticks"] = ticks
    result["diagnostics"] = client.diagnostics()
    result["start_at"] = start_at
    result["end"] = end
    result["stuck_threads"] = len(stuck)
    await client.aclose()
    return result
