"""Small test doubles: a clock that moves only when told, a cache that counts its calls, and
a few process and port helpers."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from django.core.cache.backends.locmem import LocMemCache

from tradevest_django.testing import FakeTradevestServer

#: The ``make_server`` fixture: ``make_server(secret, **FakeTradevestServer options)``.
ServerFactory = Callable[..., FakeTradevestServer]


class FakeClock:
    """``clock()`` returns a time that moves only through ``advance`` or the paired ``sleep``."""

    def __init__(self, start: float | None = None) -> None:
        # Starts at the real time: the fake server's Date header must agree with it.
        self.now = time.time() if start is None else start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)


def process(server: Any, cache: Any, clock: FakeClock, **options: Any) -> Any:
    """A token manager as one process of the fleet would have it: ``server``'s alias (with
    ``options``), the shared ``cache``, and ``clock`` for both time and sleep."""
    from tradevest_django.manager import TokenManager

    return TokenManager.from_options(
        "default", server.settings(**options), cache=cache, clock=clock, sleep=clock.sleep
    )


class CountingCache:
    """A local-memory cache that records every call made to it."""

    def __init__(self, name: str | None = None) -> None:
        # Local-memory caches of one name share their entries: each test gets its own unless
        # it asks for a name.
        self.inner = LocMemCache(name or f"counting-{uuid.uuid4().hex}", {})
        self.calls: Counter[str] = Counter()
        self.timeouts: dict[str, list[Any]] = {}
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if self.fail:
                raise ConnectionError("cache is down")
            if name in ("set", "add"):
                timeout = args[2] if len(args) > 2 else kwargs.get("timeout")
                self.timeouts.setdefault(args[0].rsplit(":", 1)[-1], []).append(timeout)
            return attr(*args, **kwargs)

        return call

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


def stop_process(process: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """Terminate ``process``, kill it if it outlives ``grace`` seconds, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
