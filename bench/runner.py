"""Start worker processes (``bench/worker.py``), give them one start line, collect results.

Every process is a fresh ``python -m bench.worker`` (what a new gunicorn or Celery worker is:
nothing inherited from this process). Whatever happens, no process outlives ``run_workers``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
#: How long processes get to import and set up (16 of them share 2 cores).
READY_TIMEOUT = 120.0
#: Lead time between "everyone is ready" and the start line.
START_DELAY = 0.3


class WorkerError(RuntimeError):
    """A worker process failed; the message has its (redacted) stderr."""


class _Worker:
    """One child process and a thread reading its stdout lines (so reads can time out)."""

    def __init__(self, job: dict[str, Any], env: dict[str, str]) -> None:
        # stderr goes to a file, not a pipe nobody reads until the end (it could fill up);
        # stop() closes it, which a with-block cannot do across this object's life.
        self.stderr: IO[str] = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            cwd=ROOT,
            env=env,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.send(json.dumps(job))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def next_line(self, deadline: float, redact: Callable[[str], str]) -> str:
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise WorkerError(f"worker {self.proc.pid} timed out{self._stderr(redact)}") from None
        if line is None:
            self.proc.wait()
            raise WorkerError(
                f"worker {self.proc.pid} exited with {self.proc.returncode}{self._stderr(redact)}"
            )
        return line

    def _stderr(self, redact: Callable[[str], str]) -> str:
        self.stderr.seek(0)
        text = redact(self.stderr.read()[-3000:]).strip()
        return f":\n{text}" if text else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):  # a dead child's pipe
                    stream.close()
        self.reader.join(timeout=5)
        self.stderr.close()


def run_workers(
    jobs: list[dict[str, Any]], *, run_seconds: float, redact: Callable[[str], str]
) -> list[dict[str, Any]]:
    """Run one process per job from a common start line; return each one's result dict.

    ``run_seconds`` bounds the measured part; processes get that plus a generous grace.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), _pythonpath()]))}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the tradevest worker configures settings itself
    workers: list[_Worker] = []
    try:
        for job in jobs:
            workers.append(_Worker(job, env))
        deadline = time.monotonic() + READY_TIMEOUT
        for worker in workers:
            line = worker.next_line(deadline, redact)
            if line != "ready":
                raise WorkerError(f"worker {worker.proc.pid} said {redact(line)[:200]!r}")
        start_at = time.time() + START_DELAY
        for worker in workers:
            worker.send(repr(start_at))
        deadline = time.monotonic() + START_DELAY + run_seconds + 60.0
        return [json.loads(worker.next_line(deadline, redact)) for worker in workers]
    finally:
        for worker in workers:
            worker.stop()


def _pythonpath() -> str:
    return os.environ.get("PYTHONPATH", "")
