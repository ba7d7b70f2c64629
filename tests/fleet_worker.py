"""One "worker process" of a fleet test: threads that take tokens and call the fake API.

Run as ``python -m tests.fleet_worker '<json>'``; prints one JSON line of results. The JSON gives
``server`` (the alias dict), ``caches`` (Django CACHES), ``threads``, ``start_at`` (wall time all
workers start together), ``duration`` and ``mode``:

* ``"calls"`` / ``"invalidate"``: each thread takes a token and calls the API until the end,
  invalidating a token the API answers 401 to;
* ``"token"``: each thread takes one token and stops;
* ``"session"``: each thread calls the API through one ``get_session()`` (which replays a
  request once after a 401, with a fresh token) until the end; every call is recorded in
  ``samples`` as ``[start, latency, fingerprint, status, 401s replayed]``, and any exception
  counts as a failed call in ``errors`` instead of ending the thread;
* ``"async"``: one event loop runs ``coroutines`` callers that call the API through one
  ``get_async_client()`` until the end, at most ``concurrency`` (default 10) at a time, as many
  as the client has connections (recorded as in ``"session"``);
* ``"burst"``: the main thread takes a token at ``start_at``; all threads wait on a line
  ``line_after_expiry`` seconds after that token expires, then each makes one API call through
  ``get_session()`` (recorded as in ``"session"``).

Optional keys: ``deploys`` (in ``"session"`` mode: a list of ``{"at": seconds after the start,
"server": alias dict}``; at each, the process takes the new settings as a restart would and its
threads open new sessions), ``secret_key`` (Django's SECRET_KEY, which keys the cache keys; by
default the test settings' own), ``databases`` (Django DATABASES, e.g. for the database cache) and
``start_file``: instead of waiting for ``start_at``, the worker creates
``<start_file>.ready-<pid>`` once its threads are ready, then starts when ``start_file`` exists
(at most ``gate_timeout`` seconds later, default 120), and ``duration`` counts from there.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any


def main(raw: str) -> dict[str, Any]:
    spec = json.loads(raw)
    import django
    from django.conf import settings

    settings.configure(
        # The cache keys are keyed with SECRET_KEY: the fleet shares the test process's.
        SECRET_KEY=spec.get("secret_key", "tests-only-not-secret"),
        CACHES=spec["caches"],
        DATABASES=spec.get("databases", {}),
        TRADEVEST={"default": spec["server"]},
        INSTALLED_APPS=["tradevest_django"],
        USE_TZ=True,
    )
    django.setup()
    import requests

    import tradevest_django
    from tradevest_django.exceptions import TradevestError
    from tradevest_django.tokens import fingerprint as token_fingerprint

    api_url = spec["server"]["API_URL"]
    mode = spec["mode"]
    results: dict[str, Any] = {
        "pid": os.getpid(),
        "calls": 0,
        "unauthorized": 0,
        "errors": [],
        "tokens": [],
        "obtained_at": [],
        "samples": [],
    }
    lock = threading.Lock()
    go = threading.Event()
    deployed = {"generation": 0}
    times = {"end": spec["start_at"] + spec["duration"]}

    def record(
        started: float, fingerprint: str | None, status: int | None, error: str, extra: float = 0
    ) -> None:
        with lock:
            results["calls"] += 1
            results["unauthorized"] += int(status == 401)
            if error:
                results["errors"].append(error)
            sample = [started, time.time() - started, fingerprint, status, extra]
            results["samples"].append(sample)

    if mode == "async":
        return run_async(spec, results, record)

    def run() -> None:
        go.wait()
        if mode == "burst":
            with tradevest_django.get_session() as api:
                return call_session(api)
        if mode == "session":
            while time.time() < times["end"]:
                generation = deployed["generation"]
                with tradevest_django.get_session() as api:  # a new one after each deploy
                    while time.time() < times["end"] and deployed["generation"] == generation:
                        call_session(api)
            return
        with requests.Session() as session:
            while time.time() < times["end"]:
                try:
                    token = tradevest_django.get_token()
                except TradevestError as err:
                    with lock:
                        results["errors"].append(type(err).__name__)
                    if mode == "token":
                        return
                    continue
                if mode == "token":
                    with lock:
                        results["tokens"].append(token.access_token)
                        results["obtained_at"].append(time.time())
                    return
                response = session.get(
                    f"{api_url}/prices", headers={"Authorization": token.authorization}, timeout=5
                )
                with lock:
                    results["calls"] += 1
                    if response.status_code == 401:
                        results["unauthorized"] += 1
                if response.status_code == 401:
                    tradevest_django.invalidate_token(token)

    def call_session(session: requests.Session) -> None:
        started = time.time()
        fingerprint = status = None
        try:
            response = session.get("/prices")
            status = response.status_code
            sent = str(response.request.headers.get("Authorization", ""))
            fingerprint = token_fingerprint(sent.removeprefix("Bearer "))
            replayed = sum(1 for earlier in response.history if earlier.status_code == 401)
        except Exception as err:  # every failure a caller would see, whatever its type
            record(started, fingerprint, status, type(err).__name__)
            return
        record(started, fingerprint, status, "" if status == 200 else f"HTTP {status}", replayed)

    workers = [threading.Thread(target=run) for _ in range(spec["threads"])]
    for thread in workers:
        thread.start()
    try:
        start = wait_for_start(spec)
        times["end"] = start + spec["duration"]
        for deploy in spec.get("deploys", []):
            go.set()
            time.sleep(max(0.0, start + deploy["at"] - time.time()))  # a scheduled moment
            deploy_settings(deploy["server"])
            deployed["generation"] += 1
        if mode == "burst":
            first = tradevest_django.get_token()  # the token whose expiry is the start line
            results["first_fingerprint"] = first.fingerprint
            results["line"] = first.expires_at_timestamp + spec.get("line_after_expiry", 0.05)
            time.sleep(max(0.0, results["line"] - time.time()))
            results["late_by"] = time.time() - results["line"]
    finally:
        go.set()  # never leave a thread waiting, whatever happened above
    for thread in workers:
        thread.join(timeout=spec["duration"] + 60)
    results["threads_alive"] = sum(thread.is_alive() for thread in workers)
    results["max_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return results


def run_async(spec: dict[str, Any], results: dict[str, Any], record: Any) -> dict[str, Any]:
    """``"async"`` mode: one event loop, ``coroutines`` callers on one ``get_async_client()``."""
    import asyncio

    import httpx

    import tradevest_django
    from tradevest_django.tokens import fingerprint as token_fingerprint

    concurrency = spec.get("concurrency", 10)
    in_flight = asyncio.Semaphore(concurrency)  # as many calls at once as connections

    async def caller(client: httpx.AsyncClient, end: float) -> None:
        while time.time() < end:
            started = time.time()
            fingerprint = status = None
            try:
                async with in_flight:
                    if time.time() >= end:
                        return  # queued past the end of the run: no call
                    response = await client.get("/prices")
                status = response.status_code
                sent = response.request.headers.get("Authorization", "")
                fingerprint = token_fingerprint(sent.removeprefix("Bearer "))
                replayed = sum(1 for earlier in response.history if earlier.status_code == 401)
            except Exception as err:  # every failure a caller would see, whatever its type
                record(started, fingerprint, status, type(err).__name__)
                continue
            error = "" if status == 200 else f"HTTP {status}"
            record(started, fingerprint, status, error, replayed)

    async def fleet() -> None:
        limits = httpx.Limits(max_connections=concurrency)  # not a server thread per caller
        async with tradevest_django.get_async_client(limits=limits, timeout=30) as client:
            end = wait_for_start(spec) + spec["duration"]
            await asyncio.gather(*(caller(client, end) for _ in range(spec["coroutines"])))

    asyncio.run(fleet())
    results["threads_alive"] = 0
    results["max_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return results


def deploy_settings(alias: dict[str, Any]) -> None:
    """New settings for the ``default`` alias, as a deploy would bring (the in-process token is
    gone; the cache is not)."""
    from django.conf import settings
    from django.core.signals import setting_changed

    settings.TRADEVEST = {"default": alias}
    setting_changed.send(sender=None, setting="TRADEVEST", value=alias, enter=True)


def wait_for_start(spec: dict[str, Any]) -> float:
    """Wait for the common start line (a wall-clock time or a file); return when it was."""
    start_file = spec.get("start_file")
    if start_file is None:
        time.sleep(max(0.0, spec["start_at"] - time.time()))  # a shared line, not a timing hope
        return float(spec["start_at"])
    Path(f"{start_file}.ready-{os.getpid()}").touch()
    deadline = time.monotonic() + spec.get("gate_timeout", 120)
    while not os.path.exists(start_file):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{start_file} did not appear")
        time.sleep(0.005)
    return time.time()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
