"""Private service processes for the reliability tests, always stopped again.

* :class:`ServiceProcess`: a ``redis-server`` or ``memcached`` of the test's own, on a free
  loopback port, that a test may stop and start again on the same port (the shared Redis at
  6379 is never touched);
* PostgreSQL helpers for the database cache: the connection settings, a cache table made by
  Django's own ``createcachetable`` under a unique name, and dropping it again;
* :func:`unavailable`: a missing service skips the test locally and fails it under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.helpers import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_DSN = os.environ.get(
    "TRADEVEST_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
)
#: How long a service may take to answer after it was started, on a loaded machine.
READY_TIMEOUT = 30.0


def unavailable(message: str) -> NoReturn:
    """Skip the test (fail it under ``CI=true``, where every service must be there)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required under CI=true: {message}")
    pytest.skip(message)


class ServiceError(RuntimeError):
    """A service process did not start or did not answer."""


class ServiceProcess:
    """One service subprocess on ``127.0.0.1:port``; ``start()`` waits until it answers."""

    def __init__(self, name: str, argv: list[str], port: int, probe: bytes, answer: bytes):
        self.name = name
        self.argv = argv
        self.port = port
        self._probe = probe
        self._answer = answer
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()

    def __repr__(self) -> str:
        return f"<ServiceProcess {self.name} 127.0.0.1:{self.port}>"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> ServiceProcess:
        if self.running:
            raise ServiceError(f"{self.name} is already running")
        self._process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServiceError(f"{self.name} did not start on port {self.port}: {self.log()}")
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        """Whether the service answers its probe (one short request)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(self._probe)
                return sock.recv(64).startswith(self._answer)
        except OSError:
            return False

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 5 s) and reap it; idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        stop_process(process)

    def close(self) -> None:
        self.stop()
        self._log.close()

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read()[-2000:].decode(errors="replace")


def redis_server(directory: Path) -> ServiceProcess:
    """A fresh ``redis-server`` on a free port, without persistence (not started yet)."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("needs the redis-server binary (apt-get install redis-server)")
    port = free_port()
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly"]
    argv += ["no", "--daemonize", "no", "--dir", str(directory), "--loglevel", "warning"]
    return ServiceProcess("redis-server", argv, port, b"PING\r\n", b"+PONG")


def memcached_server() -> ServiceProcess:
    """A ``memcached`` on a free port (not started yet)."""
    binary = shutil.which("memcached")
    if binary is None:
        unavailable(
            "needs the memcached binary (apt-get install memcached; the tests start their own "
            "on a free port, no daemon needed)"
        )
    port = free_port()
    argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64", "-c", "1024"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]  # memcached refuses to run as root unless told which user
    return ServiceProcess("memcached", argv, port, b"version\r\n", b"VERSION")


@contextlib.contextmanager
def started(make: Callable[[], ServiceProcess]) -> Iterator[ServiceProcess]:
    """Start a service made by ``make`` and always stop it.

    A port taken between choosing and binding it gets a second and a third try on other
    ports; a service that still does not start skips the test (fails it under CI=true).
    """
    errors = []
    for _ in range(3):
        service = make()
        try:
            service.start()
        except ServiceError as err:
            service.close()
            errors.append(str(err))
            continue
        try:
            yield service
        finally:
            service.close()
        return
    unavailable(errors[-1])


# -- PostgreSQL (the database cache) -----------------------------------------------------------


def postgres_databases() -> dict[str, dict[str, Any]]:
    """Django DATABASES for the test PostgreSQL; skips (fails under CI=true) when unreachable."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=5):
            pass
    except psycopg.Error as err:
        unavailable(
            f"needs PostgreSQL at {POSTGRES_DSN} ({type(err).__name__}); start it "
            "(pg_ctlcluster <version> main start) or set TRADEVEST_TEST_POSTGRES_DSN"
        )
    params = conninfo_to_dict(POSTGRES_DSN)
    return {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": params.get("dbname", "postgres"),
            "USER": params.get("user", ""),
            "PASSWORD": params.get("password", ""),
            "HOST": params.get("host", ""),
            "PORT": params.get("port", ""),
        }
    }


_CREATE_TABLE = """
import json, sys
import django
from django.conf import settings
from django.core.management import call_command
spec = json.loads(sys.argv[1])
settings.configure(DATABASES=spec["databases"], CACHES=spec["caches"], INSTALLED_APPS=[])
django.setup()
call_command("createcachetable", verbosity=0)
"""


def create_cache_table(databases: dict[str, Any], table: str) -> None:
    """Create the database cache's table ``table`` with Django's ``createcachetable``.

    Run in a subprocess: this test process is configured for SQLite, and the table must be
    exactly what Django creates for its users.
    """
    caches = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache"}}
    caches["default"]["LOCATION"] = table
    spec = json.dumps({"databases": databases, "caches": caches})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-c", _CREATE_TABLE, spec],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise ServiceError(f"createcachetable failed: {done.stderr[-2000:]}")


def drop_table(table: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_DSN, connect_timeout=5, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
