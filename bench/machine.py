"""Where and with what a benchmark ran: machine, Python, package versions, parameters."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata

from bench.results import Params
from bench.runner import ROOT

VERSIONED = (
    "tradevest-django",
    "Django",
    "requests",
    "urllib3",
    "redis",
    "authlib",
    "requests-oauthlib",
    "oauthlib",
    "requests-auth",
    "httpx",
    "httpx-auth",
)


def version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header(
    params: Params,
    *,
    command: str,
    redis_version: str,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    smoke: bool,
) -> str:
    """The report's header: when, where, with what, and the parameters of every scenario."""
    versions = ", ".join(f"{name} {version(name)}" for name in VERSIONED)
    lines = [
        "## Benchmark run"
        + (" (smoke: tiny parameters, the numbers mean nothing)" if smoke else ""),
        "",
        f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {platform.platform()}, {os.cpu_count()} cores ({cpu_model()}), "
        f"load average {_load(load[0])} at start, {_load(load[1])} at the end "
        "(1/5/15 min; the machine may be shared)",
        f"- Python: {platform.python_implementation()} {platform.python_version()}",
        f"- Code: {git_revision()}",
        f"- Packages: {versions}; Redis server {redis_version}",
        f"- Command: `{command}`",
        f"- Fleet: P={params.processes} processes x T={params.threads} threads, "
        f"D={params.duration:g} s, L={params.lifetime} s tokens; scale: P in "
        f"{', '.join(map(str, params.scale))}",
        f"- Overhead: {params.rounds} round(s) x {params.overhead_calls} calls after "
        f"{params.overhead_warmup} warm-up calls, one fresh process per client per round",
        f"- Boundary: one thread, {params.boundary_seconds:g} s, "
        f"L={params.boundary_lifetime} s, token endpoint answers after "
        f"{params.boundary_token_delay * 1000:.0f} ms; slow = over {params.slow_ms:g} ms",
        f"- Async fleet: P={params.processes} processes x one event loop x "
        f"C={params.coroutines} coroutines, at most N={params.connections} calls in flight "
        f"per process (the pool's size), D={params.duration:g} s, L={params.lifetime} s",
        "- Async overhead: the overhead scenario's rounds and calls, one coroutine",
        f"- Async boundary: {params.boundary_coroutines} coroutines on one loop and a ticker "
        f"every {params.tick_ms:g} ms, the boundary scenario's duration, lifetime and delay",
    ]
    return "\n".join(lines)


def _load(values: tuple[float, ...]) -> str:
    return " / ".join(f"{value:.2f}" for value in values)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def git_revision() -> str:
    """The commit measured, and whether the package's files differ from it."""
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "tradevest_django")
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    state = "with uncommitted changes to tradevest_django/" if dirty else "clean tradevest_django/"
    return f"git {head}, {state}"
