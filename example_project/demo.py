"""``make demo``: the example project against the embedded fake Tradevest server.

Starts a fake Tradevest auth server and API on loopback, then runs what a project does:
``manage.py check``, ``manage.py tradevest_token`` (twice, as two processes: the second one
finds the token in the shared cache), the example view, the async example view under uvicorn
(another process, which finds the token in the shared cache too) and a Celery task. Needs no
internet and no Redis; with ``REDIS_URL`` set, the cache is Redis and the task runs on a real
Celery worker.

``python demo.py serve`` leaves the example server running on http://127.0.0.1:8000/.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from tradevest_django.testing import FakeTradevestServer  # noqa: E402


def say(text: str) -> None:
    print(f"  {text}", flush=True)


def manage(*args: str, env: dict[str, str], check: bool = True) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        sys.exit(f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    logged = [f"    log: {line}" for line in result.stderr.strip().splitlines()]
    return "\n".join([result.stdout.strip(), *logged]).strip()


def environment(server: FakeTradevestServer, cache_dir: str) -> dict[str, str]:
    redis_url = os.environ.get("REDIS_URL", "")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "TRADEVEST_CLIENT_ID": server.client_id,
        "TRADEVEST_CLIENT_SECRET": server.client_secret,
        "TRADEVEST_AUTH_URL": server.auth_url,
        "TRADEVEST_API_URL": server.api_url,
        # Without Redis, a file cache lets separate processes share the token (one machine only).
        "CACHE_URL": redis_url or f"filecache://{cache_dir}",
        "CELERY_BROKER_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{cache_dir}/demo.sqlite3",
    }
    if not redis_url:
        env["DJANGO_SILENCED_SYSTEM_CHECKS"] = "tradevest_django.W003"
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def uvicorn(env: dict[str, str]) -> Iterator[str]:
    """Serve the example project with uvicorn in a subprocess; yield its URL, then stop it.

    Prints what the server logged (warnings and the app's log lines) after it stopped.
    """
    port = free_port()
    # Django speaks no ASGI lifespan; --lifespan off spares the message saying so.
    command = ["uvicorn", "example_project.asgi:application", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--lifespan", "off", "--log-level", "warning"]
    say(" ".join(command))
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [sys.executable, "-m", *command], cwd=HERE, env=env, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    sys.exit(f"uvicorn did not start:\n{log.read().decode(errors='replace')}")
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()  # SIGTERM: uvicorn finishes the requests under way, then exits
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
        log.seek(0)
        for line in log.read().decode(errors="replace").strip().splitlines():
            say(f"  log: {line}")


async def call_async_view(url: str, times: int) -> list[int]:
    """GET the async view ``times`` times at once; return the statuses."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        responses = await asyncio.gather(*(client.get("/prices/async/") for _ in range(times)))
    return [response.status_code for response in responses]


def run_demo(server: FakeTradevestServer, env: dict[str, str]) -> None:
    print(f"Fake Tradevest auth server and API listening on {server.url}")
    redis_url = env["CELERY_BROKER_URL"]
    print(
        "Cache:", "Redis at " + redis_url if redis_url else "a file cache (set REDIS_URL for Redis)"
    )

    print("\n1. manage.py check")
    say(manage("check", env=env).splitlines()[-1])
    if env.get("DJANGO_SILENCED_SYSTEM_CHECKS"):
        say("(W003, the file cache's warning, is silenced for the demo; use Redis in production)")

    print("\n2. manage.py tradevest_token, in two separate processes (the second as the deploy")
    print("   check: --strict fails when the fleet would not share its token)")
    for args in (("tradevest_token",), ("tradevest_token", "--strict")):
        say(f"$ manage.py {' '.join(args)}")
        for line in manage(*args, env=env).splitlines():
            say(line)
    say(f"token requests received by the auth server: {server.token_request_count}")

    print("\n3. the example view /prices/, calling the API through get_session()")
    os.environ.update(env)
    import django

    django.setup()
    from django.test import Client

    response = Client().get("/prices/", HTTP_HOST="localhost")
    say(f"HTTP {response.status_code}: {response.json()}")

    print("\n4. the async view /prices/async/ under uvicorn (ASGI), through get_async_client()")
    import httpx

    with uvicorn(env) as url:
        response = httpx.get(url + "/prices/async/", timeout=30)
        say(f"HTTP {response.status_code}: {response.json()}")
        statuses = asyncio.run(call_async_view(url, 20))
        answered = ", ".join(f"{n} x HTTP {status}" for status, n in Counter(statuses).items())
        say(f"20 requests at once: {answered}")
    say(f"token requests received by the auth server: {server.token_request_count}")

    print("\n5. a Celery task calling the API through get_session()")
    from example_project.tasks import fetch_prices

    if redis_url:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "example_project",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                "2",
                "--loglevel",
                "WARNING",
            ],
            cwd=HERE,
            env=env,
            stdout=subprocess.DEVNULL,  # the worker's banner; warnings still reach stderr
        )
        try:
            result = fetch_prices.delay().get(timeout=60)
            say(f"real Celery worker (prefork) answered: {result}")
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    else:
        say(f"eager (no broker; set REDIS_URL for a real worker): {fetch_prices.delay().get()}")

    print(
        f"\nDone: {server.token_request_count} token request(s) for "
        f"{len(server.api_requests)} API call(s) across processes; "
        f"{server.api_unauthorized_count} rejected."
    )


def serve(server: FakeTradevestServer, env: dict[str, str]) -> None:
    print(f"Fake Tradevest on {server.url}; example project on http://127.0.0.1:8000/prices/")
    print("(and the async view on http://127.0.0.1:8000/prices/async/)")
    print("Press Ctrl-C to stop.")
    manage("migrate", "--run-syncdb", env=env)
    with contextlib.suppress(KeyboardInterrupt):
        subprocess.run(
            [sys.executable, "manage.py", "runserver", "127.0.0.1:8000"], cwd=HERE, env=env
        )


def main(argv: list[str]) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="tradevest-demo-") as cache_dir,
        FakeTradevestServer(
            client_id="demo-client", client_secret=f"demo-secret-{time.time_ns()}"
        ) as server,
    ):
        env = environment(server, cache_dir)
        if argv[:1] == ["serve"]:
            serve(server, env)
        else:
            run_demo(server, env)


if __name__ == "__main__":
    main(sys.argv[1:])
