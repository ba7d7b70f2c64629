"""A deadline for a whole HTTP exchange, not just for each socket read.

``requests`` timeouts bound every single socket operation: a server that trickles its answer
one byte at a time never trips them, and a token request could hold the fleet lock for ever.
:class:`Deadline` cuts the exchange's connections when its time is up, wherever the exchange is
(the TLS handshake, the wait for the headers, the body): the blocked read returns at once and
``requests`` raises, which the caller reports as the deadline.

Connections are watched through the adapter from :func:`deadline_adapter`, whose connection
classes announce themselves when they connect. A request sent through a proxy uses urllib3's own
classes and keeps only the per-read timeouts.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
from types import TracebackType
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "tradevest_deadline", default=None
)


class Deadline:
    """``with Deadline(seconds):`` cuts every connection the block opens after ``seconds``."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._connections: list[HTTPConnection] = []
        self._timer: threading.Timer | None = None
        self._reset: contextvars.Token[Deadline | None] | None = None

    def __repr__(self) -> str:
        return f"<Deadline {self.seconds:.3f} s{' expired' if self.expired else ''}>"

    def __enter__(self) -> Deadline:
        self._reset = _current.set(self)
        self._timer = threading.Timer(max(self.seconds, 0.0), self._expire)
        self._timer.daemon = True
        self._timer.name = "tradevest-deadline"
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._reset is not None:
            _current.reset(self._reset)
        with self._lock:
            self._connections.clear()

    def connected(self, connection: HTTPConnection) -> None:
        """Watch ``connection`` (cut it at once if the time is already up)."""
        with self._lock:
            self._connections.append(connection)
            if self.expired:
                _cut(connection)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for connection in self._connections:
                _cut(connection)


def _cut(connection: HTTPConnection) -> None:
    sock = connection.sock
    if sock is not None:
        # shutdown() wakes a thread blocked in recv(); close() alone would not.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _announce(connection: HTTPConnection) -> None:
    deadline = _current.get()
    if deadline is not None:
        deadline.connected(connection)


class _HTTPConnection(HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _announce(self)


class _HTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _announce(self)


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` whose connections obey the :class:`Deadline` they are opened under."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _HTTPConnectionPool,
            "https": _HTTPSConnectionPool,
        }
