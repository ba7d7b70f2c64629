"""Metrics and traces through the OpenTelemetry API: ``pip install "tradevest-django[otel]"``.

Under the meter and tracer ``tradevest_django``:

* ``tradevest.token.requests`` (counter): one per token request sent, with ``tradevest.alias``,
  ``outcome`` (``success`` or ``error``) and, for errors, ``error.type`` (the OAuth error code,
  or the exception class);
* ``tradevest.token.request.duration`` (histogram, seconds): each token fetch, retries included,
  with the same attributes;
* ``tradevest.token.time_to_expiry`` (observable gauge, seconds): per alias, read from the
  in-process token when the metrics are collected;
* a span ``tradevest token request`` around each fetch, with ``server.address``,
  ``http.response.status_code`` and ``error.type``; it is a child of whatever span is current,
  so a slow API call shows the token request it waited for.

Only token requests are instrumented: the hot path (a token from memory) records nothing.
Without the ``opentelemetry-api`` package nothing is imported and every call here does nothing.
Export is the application's business (an SDK ``MeterProvider`` with, e.g., the Prometheus
reader), as for any instrumented library.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .exceptions import TradevestError

NAME = "tradevest_django"
_lock = threading.Lock()
_instruments: _Instruments | None = None
_unavailable = False


class Expiring(Protocol):
    """What the gauge reads: a token manager."""

    alias: str

    def seconds_left(self) -> float | None: ...


_tracked: weakref.WeakSet[Any] = weakref.WeakSet()


def track(manager: Expiring) -> None:
    """Report ``manager``'s token in ``tradevest.token.time_to_expiry`` while it lives."""
    _tracked.add(manager)


def _expiries() -> list[tuple[str, float]]:
    found = []
    for manager in list(_tracked):
        seconds = manager.seconds_left()
        if seconds is not None:
            found.append((manager.alias, seconds))
    return found


class _Instruments:
    def __init__(self) -> None:
        from opentelemetry import metrics, trace

        from ._version import __version__

        meter = metrics.get_meter(NAME, __version__)
        self.requests = meter.create_counter(
            "tradevest.token.requests", unit="{request}", description="Token requests sent."
        )
        self.duration = meter.create_histogram(
            "tradevest.token.request.duration",
            unit="s",
            description="Duration of each token fetch, retries included.",
        )

        def observe(options: Any) -> Iterable[Any]:
            return [
                metrics.Observation(seconds, {"tradevest.alias": alias})
                for alias, seconds in _expiries()
            ]

        meter.create_observable_gauge(
            "tradevest.token.time_to_expiry",
            callbacks=[observe],
            unit="s",
            description="Seconds until the in-process token expires.",
        )
        self.tracer = trace.get_tracer(NAME, __version__)
        self.status_code = trace.StatusCode


def instruments() -> _Instruments | None:
    """The instruments, created on first use; ``None`` when OpenTelemetry is not installed."""
    global _instruments, _unavailable
    if _instruments is not None or _unavailable:
        return _instruments
    with _lock:
        if _instruments is None and not _unavailable:
            try:
                _instruments = _Instruments()
            except ImportError:
                _unavailable = True
    return _instruments


def error_type(err: BaseException) -> str:
    """``error.type``: the OAuth error code of a refusal, else the exception's class."""
    code = getattr(err, "error", None)
    return code if isinstance(code, str) and code else type(err).__name__


def attributes(alias: str, err: TradevestError | None) -> dict[str, str]:
    if err is None:
        return {"tradevest.alias": alias, "outcome": "success"}
    return {"tradevest.alias": alias, "outcome": "error", "error.type": error_type(err)}


class Fetch:
    """What one token fetch reports: its span, its attempts and its duration."""

    def __init__(self, alias: str, host: str):
        self._tools = instruments()
        self._alias = alias
        self._host = host
        self._span: Any = None

    @contextlib.contextmanager
    def span(self) -> Iterator[Fetch]:
        """Time the fetch and wrap it in a span (both only when OpenTelemetry is installed)."""
        if self._tools is None:
            yield self
            return
        started = time.perf_counter()
        error: TradevestError | None = None
        with self._tools.tracer.start_as_current_span(
            "tradevest token request",
            attributes={"server.address": self._host, "tradevest.alias": self._alias},
            record_exception=False,  # its message is ours, but we add no more than error.type
            set_status_on_exception=False,
        ) as span:
            self._span = span
            try:
                yield self
            except Exception as err:
                from .exceptions import TradevestError

                error = err if isinstance(err, TradevestError) else None
                span.set_attribute("error.type", error_type(err))
                span.set_status(self._tools.status_code.ERROR)
                raise
            finally:
                self._tools.duration.record(
                    time.perf_counter() - started, attributes(self._alias, error)
                )

    def attempt(self, status: int | None, error: str | None) -> None:
        """Count one token request sent; ``error`` is its ``error.type`` if it failed."""
        if self._tools is None:
            return
        outcome = {"outcome": "error", "error.type": error} if error else {"outcome": "success"}
        self._tools.requests.add(1, {"tradevest.alias": self._alias, **outcome})
        if self._span is not None and status is not None:
            self._span.set_attribute("http.response.status_code", status)
