"""Start several worker processes (tests/fleet_worker.py) and collect what they report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
    start_delay: float = 3.0,
) -> list[dict[str, Any]]:
    """Run ``processes`` separate Python processes together; return each one's results."""
    spec = {
        "server": server,
        "caches": caches,
        "threads": threads,
        "duration": duration,
        "mode": mode,
        "start_at": time.time() + start_delay,
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.fleet_worker", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            text=True,
        )
        for _ in range(processes)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=start_delay + duration + 60)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results
