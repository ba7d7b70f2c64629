"""Diagnostics of tradevest-django during a run: who fetched each token, and why.

The numbers in the report come from the fake server and the callers; these probes only explain
them on stderr (e.g. a duplicate token request, or a slow call that was not a caller waiting
for a token). They use the library's signals and logs and wrap two of its methods on the
process's manager; no probe runs on the hot path, and none keeps a token or a fingerprint.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tradevest_django import Token, TokenManager


class TradevestProbe:
    """Events of one process's token manager: fetches, fleet-lock attempts, invalidations."""

    def __init__(self, manager: TokenManager) -> None:
        from tradevest_django import signals

        self.manager = manager
        self.events: list[dict[str, Any]] = []  # list.append is atomic: threads share it
        self.warnings: collections.Counter[str] = collections.Counter()
        signals.token_obtained.connect(self._on_obtained, weak=False)
        signals.token_invalidated.connect(self._on_invalidated, weak=False)
        logging.getLogger("tradevest_django").addHandler(_CountingHandler(self.warnings))
        self._watch_fleet_lock()

    def _event(self, name: str, **extra: Any) -> None:
        self.events.append({"at": time.time(), "event": name, "thread": _thread_kind(), **extra})

    def _on_obtained(self, duration: float, **kwargs: Any) -> None:
        # The in-flight allowance the manager applies (private, read for the diagnosis only):
        # it moves the refresh earlier when calls take long to reach the API.
        self._event("fetch", seconds=duration, lead=getattr(self.manager, "_lead", None))

    def _on_invalidated(self, **kwargs: Any) -> None:
        self._event("invalidate")

    def _watch_fleet_lock(self) -> None:
        # With the fetch events, shows whether a duplicate token request was made under the lock.
        shared = self.manager.shared
        acquire = shared.acquire_lock

        def watched(ttl: int) -> Any:  # whatever the library's lock handle is (None: busy)
            owner = acquire(ttl)
            self._event("lock taken" if owner else "lock busy")
            return owner

        shared.acquire_lock = watched  # type: ignore[method-assign]

    def time_token_waits(self) -> list[int]:
        """Time every ``get_token()`` from now on; returns the list the durations go to.

        Tells a slow call apart: a caller waiting for a token, or the machine stalling the HTTP
        call itself. Only the boundary scenario uses it (it adds two clock reads per call).
        """
        original = self.manager.get_token
        waits: list[int] = []

        def timed() -> Token:
            began = time.perf_counter_ns()
            try:
                return original()
            finally:
                waits.append(time.perf_counter_ns() - began)

        self.manager.get_token = timed  # type: ignore[method-assign]
        return waits

    def time_async_token_waits(self) -> list[int]:
        """:meth:`time_token_waits` for ``aget_token()``: how long each coroutine waited for it."""
        original = self.manager.aget_token
        waits: list[int] = []

        async def timed() -> Token:
            began = time.perf_counter_ns()
            try:
                return await original()
            finally:
                waits.append(time.perf_counter_ns() - began)

        self.manager.aget_token = timed  # type: ignore[method-assign]
        return waits

    def report(self) -> dict[str, Any]:
        # The skew is a private attribute, read for the diagnosis only: it moves every expiry
        # decision of the process (a Date header read late by a starved process skews it).
        skew = getattr(self.manager, "_skew", None)
        return {"events": self.events, "warnings": dict(self.warnings), "skew": skew}


class _CountingHandler(logging.Handler):
    """Counts the library's warnings by message template (never the formatted text)."""

    def __init__(self, counts: collections.Counter[str]) -> None:
        super().__init__(logging.WARNING)
        self.counts = counts

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[str(record.msg)[:100]] += 1


def _thread_kind() -> str:
    name = threading.current_thread().name
    if name.startswith("tradevest-refresh"):
        return "background"
    # The thread aget_token() runs a token request in, for the coroutines waiting on it.
    return "flight" if name.startswith("tradevest-token") else "caller"
