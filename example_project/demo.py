"""``make demo``: the example project against the embedded fake Tradevest server.

Starts a fake Tradevest auth server and API on loopback, then runs what a project does:
``manage.py check``, ``manage.py tradevest_token`` (twice, as two processes: the second one
finds the token in the shared cache), the example view and a Celery task. Needs no internet and
no Redis; with ``REDIS_URL`` set, the cache is Redis and the task runs on a real Celery worker.

``python demo.py serve`` leaves the example server running on http://127.0.0.1:8000/.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
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

    print("\n2. manage.py tradevest_token, in two separate processes")
    for _ in range(2):
        for line in manage("tradevest_token", env=env).splitlines():
            say(line)
    say(f"token requests received by the auth server: {server.token_request_count}")

    print("\n3. the example view /prices/, calling the API through get_session()")
    os.environ.update(env)
    import django

    django.setup()
    from django.test import Client

    response = Client().get("/prices/", HTTP_HOST="localhost")
    say(f"HTTP {response.status_code}: {response.json()}")

    print("\n4. a Celery task calling the API through get_session()")
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
