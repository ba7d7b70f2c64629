"""A Redis primary and a replica of the test's own, for Django's ``RedisCache`` with two LOCATIONs.

Django's ``RedisCache`` given a list of LOCATIONs writes (``set``, ``add``, ``delete``, ``touch``,
``incr``) to the first server and reads (``get``, ``get_many``, ``has_key``) from one of the
others, picked at random per call: with ``[primary, replica]`` every read goes to the replica.

* :func:`primary_server` / :func:`replica_server`: ``redis-server`` processes on free loopback
  ports, without persistence, the replica with ``--replicaof`` (a missing binary skips the test
  locally and fails it under ``CI=true``, as for every private service);
* :func:`wait_for_link`: a bounded wait until the replica reports ``master_link_status:up``
  and a write on the primary reaches it;
* :func:`replication_lag`: measures how long a write on the primary takes to be readable on the
  replica;
* :class:`DelayLink`: a loopback TCP relay that holds the primary -> replica stream back for a
  fixed delay, so a replica can lag on purpose (the replica replicates *through* it);
* :class:`LockWatch`: samples the fleet's refresh lock on the primary, to see how long it was
  held (a lock a process failed to release lingers until its TTL).
"""

from __future__ import annotations

import collections
import contextlib
import select
import socket
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from tests.reliability import services

#: The longest the replica may take to report its link up after it started.
LINK_TIMEOUT = 30.0


def primary_server(directory: Path) -> services.ServiceProcess:
    """A fresh primary (not started yet). Its replica's first full sync starts at once: Redis 7
    syncs diskless and by default waits 5 s for more replicas before it does."""
    service = services.redis_server(directory)
    service.argv += ["--repl-diskless-sync-delay", "0"]
    service.name = "redis-server (primary)"
    return service


def replica_server(directory: Path, primary_port: int) -> services.ServiceProcess:
    """A fresh replica of ``127.0.0.1:primary_port`` (not started yet; it answers PING before
    its link is up: see :func:`wait_for_link`)."""
    service = services.redis_server(directory)
    service.argv += ["--replicaof", "127.0.0.1", str(primary_port)]
    # The full sync into an empty replica needs no temporary RDB file.
    service.argv += ["--repl-diskless-load", "on-empty-db"]
    service.name = "redis-server (replica)"
    return service


def client(port: int) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=2, socket_timeout=2)


def wait_for_link(
    primary_port: int, replica_port: int, timeout: float = LINK_TIMEOUT
) -> dict[str, Any]:
    """Wait (at most ``timeout`` s in all) until the replica reports ``master_link_status:up``
    with no sync in progress, then until a write on the primary is readable on the replica;
    return the replica's INFO replication. Raises :class:`services.ServiceError`.

    "up" is not enough: after a diskless full sync (Redis 7's default) the primary holds the
    command stream back until the replica's first ``REPLCONF ACK``, which the replica sends
    once a second, so for up to a second after "up" no write reaches the replica (the
    primary's INFO already says ``state=online`` meanwhile).
    """
    deadline = time.monotonic() + timeout
    info: dict[str, Any] = {}
    probe = f"tvprobe-{uuid.uuid4().hex[:12]}"
    with (
        contextlib.closing(client(primary_port)) as primary,
        contextlib.closing(client(replica_port)) as replica,
    ):
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # not up yet: look again
                info = replica.info("replication")
                if info.get("master_link_status") == "up" and not info.get(
                    "master_sync_in_progress"
                ):
                    break
            time.sleep(0.02)
        else:
            raise services.ServiceError(
                f"the replica's link did not come up in {timeout} s: {info}"
            )
        primary.set(probe, 1, ex=60)
        while replica.get(probe) is None:
            if time.monotonic() > deadline:
                raise services.ServiceError(f"a write did not reach the replica in {timeout} s")
            time.sleep(0.005)
        primary.delete(probe)
        return info


def replication_lag(primary_port: int, replica_port: int, samples: int = 200) -> dict[str, float]:
    """Write a key on the primary and poll the replica until it reads it, ``samples`` times;
    return the median and worst lag in milliseconds (each sample bounded to 5 s)."""
    lags = []
    key = f"tvlag-{uuid.uuid4().hex[:12]}"
    with (
        contextlib.closing(client(primary_port)) as primary,
        contextlib.closing(client(replica_port)) as replica,
    ):
        for value in range(samples):
            started = time.perf_counter()
            primary.set(key, value)
            deadline = time.monotonic() + 5.0
            while replica.get(key) != str(value).encode():
                if time.monotonic() > deadline:
                    raise services.ServiceError("the replica did not see a write within 5 s")
            lags.append((time.perf_counter() - started) * 1000)
        primary.delete(key)
    return {
        "median_ms": round(statistics.median(lags), 3),
        "max_ms": round(max(lags), 3),
    }


class DelayLink:
    """A loopback TCP relay to ``127.0.0.1:upstream_port`` that delivers what the upstream
    sends ``delay`` seconds late (what the client sends goes through at once).

    Point a replica at ``port`` (``--replicaof 127.0.0.1 <port>``) and every write reaches it
    ``delay`` s after the primary applied it: a replica lagging behind by a known amount. The
    delay is the fault being injected, not a hope about timing. ``close()`` stops every thread
    (bounded joins) and closes every socket.
    """

    def __init__(self, upstream_port: int, delay: float):
        self.upstream_port = upstream_port
        self.delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = [self._listener]
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="tv-delay-link")
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._listener], [], [], 0.1)
            if not ready:
                continue
            try:
                downstream, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                continue
            self._sockets += [downstream, upstream]
            queue: collections.deque[tuple[float, bytes]] = collections.deque()
            ready_event = threading.Condition()
            self._spawn(self._pump, downstream, upstream)  # replica -> primary: at once
            self._spawn(self._read_late, upstream, queue, ready_event)
            self._spawn(self._deliver_late, downstream, queue, ready_event)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                ready, _, _ = select.select([source], [], [], 0.1)
                if ready:
                    data = source.recv(65536)
                    if not data:
                        break
                    sink.sendall(data)
        self._shut(sink)

    def _read_late(
        self,
        source: socket.socket,
        queue: collections.deque[tuple[float, bytes]],
        ready: threading.Condition,
    ) -> None:
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                readable, _, _ = select.select([source], [], [], 0.1)
                if readable:
                    data = source.recv(65536)
                    with ready:
                        queue.append((time.monotonic() + self.delay, data))
                        ready.notify()
                    if not data:
                        return

    def _deliver_late(
        self,
        sink: socket.socket,
        queue: collections.deque[tuple[float, bytes]],
        ready: threading.Condition,
    ) -> None:
        with contextlib.suppress(OSError):
            while not self._stop.is_set():
                with ready:
                    if not queue:
                        ready.wait(0.1)
                        continue
                    due, data = queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._stop.wait(min(wait, 0.1))  # the injected delay, interruptible
                    continue
                with ready:
                    queue.popleft()
                if not data:
                    break
                sink.sendall(data)
        self._shut(sink)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> DelayLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LockWatch:
    """Samples, every ``interval`` s, the refresh lock(s) under ``key_prefix`` on the primary.

    ``longest_held`` is the longest time one lock value was seen held (from its first to its
    last sighting): a token request holds it for milliseconds, a lock its owner failed to
    release lingers until its TTL.
    """

    def __init__(self, port: int, key_prefix: str, interval: float = 0.02):
        self._port = port
        self._pattern = f"{key_prefix}:*:lock"
        self._interval = interval
        self._stop = threading.Event()
        self._seen: dict[bytes, list[float]] = {}
        self.errors = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="tv-lock-watch")
        self._thread.start()

    def _run(self) -> None:
        with contextlib.closing(client(self._port)) as primary:
            while not self._stop.wait(self._interval):
                try:
                    for key in primary.scan_iter(match=self._pattern, count=100):
                        value = primary.get(key)
                        if value is not None:
                            now = time.monotonic()
                            span = self._seen.setdefault(value, [now, now])
                            span[1] = now
                except Exception:  # a sample lost is no failure of the system under test
                    self.errors += 1

    @property
    def locks_seen(self) -> int:
        return len(self._seen)

    @property
    def longest_held(self) -> float:
        return max((last - first for first, last in self._seen.values()), default=0.0)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
