"""Benchmark tradevest-django against general OAuth2 clients, side by side, on loopback.

    python bench/run.py                 # the full run (5 to 6 minutes on 2 cores)
    python bench/run.py --smoke         # tiny parameters, to check that the benchmark works
    python bench/run.py --scenario fleet --processes 4 --output /tmp/bench.md
    python bench/run.py --scenario async-fleet --coroutines 20 --connections 2

Prints one Markdown table per scenario to stdout (progress goes to stderr). A missed target of
tradevest-django is reported, not an error: the exit status is non-zero only when something
crashed. Needs Redis (``--redis-url``, default ``redis://127.0.0.1:6379/0``); every run uses
its own key prefix and deletes only its own keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script (``python bench/run.py``): make ``bench`` importable as a package.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench import async_report, async_scenarios, explain, machine, report, results, scenarios
from bench import server as server_module
from bench.async_clients import ASYNC_CLIENTS, ASYNC_TOKEN_CLIENTS
from bench.clients import CLIENTS, TOKEN_CLIENTS

SCENARIOS = (
    "fleet",
    "scale",
    "overhead",
    "boundary",
    "async-fleet",
    "async-overhead",
    "async-boundary",
)
#: Every client name, thread and async (one name per project: tradevest-django, authlib and
#: the baseline have both kinds).
ALL_CLIENTS = tuple(dict.fromkeys([*CLIENTS, *ASYNC_CLIENTS]))
#: The async overhead compares get_async_client() with the bare httpx client only (the thread
#: overhead scenario has the peers); it keeps the full run within about six minutes.
ASYNC_OVERHEAD_CLIENTS = ("tradevest-django", "baseline")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Tiny parameters for CI: proves every code path runs, measures nothing.
SMOKE: dict[str, Any] = {
    "processes": 2,
    "threads": 2,
    "duration": 1.5,
    "lifetime": 1,
    "scale": (1, 2),
    "overhead_calls": 200,
    "overhead_warmup": 20,
    "rounds": 1,
    "boundary_seconds": 2.0,
    "coroutines": 4,
    "connections": 2,
    "boundary_coroutines": 2,
}
#: Import names of the clients' libraries (the peers are bench-only dependencies).
MODULES = {
    "tradevest-django": "tradevest_django",
    "authlib": "authlib",
    "requests-oauthlib": "requests_oauthlib",
    "requests-auth": "requests_auth",
    "httpx-auth": "httpx_auth",
    "baseline": "requests",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny parameters (CI)")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument("--processes", type=int, help="fleet processes P (default 8)")
    parser.add_argument("--threads", type=int, help="threads per process T (default 8)")
    parser.add_argument("--duration", type=float, help="fleet seconds D (default 8)")
    parser.add_argument("--lifetime", type=int, help="fleet token lifetime L, seconds (default 2)")
    parser.add_argument("--coroutines", type=int, help="async fleet coroutines per process C (50)")
    parser.add_argument(
        "--connections", type=int, help="async fleet pool size = calls in flight N (default 4)"
    )
    parser.add_argument("--rounds", type=int, help="overhead rounds (default 6)")
    parser.add_argument("--calls", type=int, help="overhead calls per round (default 3000)")
    parser.add_argument(
        "--scale-processes", help="comma-separated fleet sizes (default 1,2,4,8,16)"
    )
    parser.add_argument(
        "--clients",
        help=f"comma-separated subset of: {', '.join(ALL_CLIENTS)} (default: all)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("TRADEVEST_BENCH_REDIS_URL", DEFAULT_REDIS_URL),
        help=f"Redis for tradevest-django's cache (default {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--with-fallback",
        action="store_true",
        help="configure tradevest-django with a CLIENT_SECRET_FALLBACKS entry (a rotation in "
        "progress), to show it costs nothing",
    )
    parser.add_argument("--output", type=Path, help="also write the Markdown report here")
    return parser.parse_args(argv)


def build_params(args: argparse.Namespace) -> results.Params:
    params = results.Params(redis_url=args.redis_url)
    if args.smoke:
        params = dataclasses.replace(params, **SMOKE)
    given: dict[str, Any] = {
        "processes": args.processes,
        "threads": args.threads,
        "duration": args.duration,
        "lifetime": args.lifetime,
        "coroutines": args.coroutines,
        "connections": args.connections,
        "rounds": args.rounds,
        "overhead_calls": args.calls,
    }
    if args.scale_processes:
        given["scale"] = tuple(int(p) for p in args.scale_processes.split(","))
    return dataclasses.replace(params, **{k: v for k, v in given.items() if v is not None})


def check_environment(redis_url: str, modules: dict[str, str]) -> str:
    """Fail early and clearly: Redis reachable, every client's library installed."""
    missing = [name for name, module in modules.items() if importlib.util.find_spec(module) is None]
    if missing:
        sys.exit(
            f"Not installed: {', '.join(missing)}. Run `make bench` (it installs the peers into "
            "the bench environment) or pip install authlib requests-oauthlib requests-auth "
            "httpx httpx-auth."
        )
    connection = redis.Redis.from_url(redis_url, socket_connect_timeout=3)
    try:
        return str(connection.info("server").get("redis_version", "unknown"))
    except redis.RedisError as err:
        sys.exit(
            f"Redis is not reachable at {redis_url} ({type(err).__name__}). Start one, or "
            "pass --redis-url."
        )
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.with_fallback:
        os.environ[server_module.FALLBACK_VARIABLE] = "1"
    params = build_params(args)
    chosen = args.scenario or list(SCENARIOS)
    clients = args.clients.split(",") if args.clients else list(ALL_CLIENTS)
    unknown = [c for c in clients if c not in ALL_CLIENTS]
    if unknown:
        sys.exit(f"Unknown client(s): {', '.join(unknown)}. Choose from {', '.join(ALL_CLIENTS)}.")
    modules = {c: MODULES[c] for c in clients}
    if any(name.startswith("async-") for name in chosen):
        modules["httpx"] = "httpx"  # tradevest-django[httpx] and the async baseline
    redis_version = check_environment(params.redis_url, modules)
    command = shlex.join(["python", *(argv if argv is not None else sys.argv)])
    load_at_start = os.getloadavg()
    began = time.monotonic()
    token_clients = [c for c in TOKEN_CLIENTS if c in clients]

    checks: list[report.Check] = []
    sections: list[str] = []
    fleet_results: list[results.LoopResult] = []
    if "fleet" in chosen:
        fleet_results = scenarios.fleet(params, token_clients)
        sections.append(report.fleet_table(fleet_results, checks))
    if "scale" in chosen and "tradevest-django" in clients:
        sections.append(report.scale_table(scenarios.scale(params, fleet_results), checks))
    if "overhead" in chosen:
        overhead_results = scenarios.overhead(params, [c for c in CLIENTS if c in clients])
        sections.append(report.overhead_table(overhead_results, checks))
    if "boundary" in chosen:
        boundary_results = scenarios.boundary(params, token_clients)
        sections.append(report.boundary_table(boundary_results, params, checks))
    async_token_clients = [c for c in ASYNC_TOKEN_CLIENTS if c in clients]
    if "async-fleet" in chosen:
        async_fleet = async_scenarios.async_fleet(params, async_token_clients)
        sections.append(async_report.async_fleet_table(async_fleet, checks))
    if "async-overhead" in chosen:
        async_overhead = async_scenarios.async_overhead(
            params, [c for c in ASYNC_OVERHEAD_CLIENTS if c in clients]
        )
        sections.append(async_report.async_overhead_table(async_overhead, checks))
    if "async-boundary" in chosen:
        async_boundary = async_scenarios.async_boundary(params, async_token_clients)
        sections.append(async_report.async_boundary_table(async_boundary, params, checks))

    elapsed = time.monotonic() - began
    head = machine.header(
        params,
        command=command,
        redis_version=redis_version,
        load=(load_at_start, os.getloadavg()),
        smoke=args.smoke,
    )
    text = "\n\n".join(
        [
            head + f"\n- Wall time: {elapsed:.0f} s",
            *sections,
            report.summary(checks),
        ]
    )
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    missed = [c for c in checks if not c.met]
    if missed and not args.smoke:
        explain.log(
            f"{len(missed)} target(s) of tradevest-django MISSED: "
            + "; ".join(f"{c.scenario} ({c.detail})" for c in missed)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
