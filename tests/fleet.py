"""Start several worker processes (tests/fleet_worker.py) and collect what they report."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_fleet(
    *,
    server: dict[str, Any],
    caches: dict[str, Any],
    processes: int,
    threads: int,
    duration: float,
    mode: str = "calls",
    **extra: Any,
) -> list[dict[str, Any]]:
    """Run ``processes`` separate Python processes together; return each one's results.

    They start together once all are ready (:func:`start_gated`), so a slow machine shortens
    no run. ``extra`` goes into the worker's JSON spec as it is (see tests/fleet_worker.py),
    e.g. ``databases=`` for the database cache.
    """
    spec = fleet_spec(
        server=server,
        caches=caches,
        threads=threads,
        duration=duration,
        mode=mode,
        start_at=time.time(),
        **extra,
    )
    with tempfile.TemporaryDirectory(prefix="tvfleet-") as folder:
        procs, _ = start_gated(spec, processes, Path(folder) / "start")
        return collect(procs, timeout=duration + 60)


def fleet_spec(
    *,
    server: dict[str, Any],
    caches: dict[str, Any],
    threads: int,
    duration: float,
    mode: str,
    start_at: float,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON spec one worker reads (the keys are described in tests/fleet_worker.py)."""
    return {
        "server": server,
        "caches": caches,
        "threads": threads,
        "duration": duration,
        "mode": mode,
        "start_at": start_at,
        **extra,
    }


def start_workers(spec: dict[str, Any], processes: int) -> list[subprocess.Popen[str]]:
    """Start ``processes`` workers with the same spec; the caller must :func:`collect` or kill
    them (:func:`kill_all` in a ``finally``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    procs: list[subprocess.Popen[str]] = []
    try:
        for _ in range(processes):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.fleet_worker", json.dumps(spec)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                    cwd=ROOT,
                    text=True,
                )
            )
    except BaseException:
        kill_all(procs)
        raise
    return procs


def start_gated(
    spec: dict[str, Any], processes: int, gate: Path, *, ready_timeout: float = 120.0
) -> tuple[list[subprocess.Popen[str]], float]:
    """Start workers that begin together once all of them are ready, however slow the machine.

    Each worker reports ready (Django set up, threads started) with a file next to ``gate``;
    when all have, ``gate`` is created and they start. Returns the workers and the start time;
    the caller must :func:`collect` or kill them. ``duration`` counts from the start.
    """
    procs = start_workers({**spec, "start_file": str(gate)}, processes)
    try:
        deadline = time.monotonic() + ready_timeout
        while len(list(gate.parent.glob(f"{gate.name}.ready-*"))) < processes:
            failed = [proc.returncode for proc in procs if proc.poll() is not None]
            assert not failed, f"a worker exited before the start: {failed}"
            assert time.monotonic() < deadline, "the workers were not ready in time"
            time.sleep(0.02)
        gate.touch()
        return procs, time.time()
    except BaseException:
        kill_all(procs)
        raise


def collect(procs: Sequence[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    """Wait for every worker (``timeout`` seconds in all) and return their results in order.

    Kills every worker still running when anything goes wrong, so none outlives the test.
    """
    deadline = time.monotonic() + timeout
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            assert proc.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        kill_all(procs)
    return results


def kill_all(procs: Sequence[subprocess.Popen[str]]) -> None:
    """SIGKILL every worker of ``procs`` that still runs, reap them all and close their pipes."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):  # unkillable (D state): give up
            proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
