"""Scripted answers for the fake token endpoint (see ``FakeTradevestServer.inject``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["respond", "reset", "hang", "trickle"]

_NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


@dataclass(frozen=True)
class Fault:
    """One scripted answer of the fake token endpoint, given instead of the normal one.

    Queue faults with ``FakeTradevestServer.inject()``; each request to the token path consumes
    the oldest one, then normal service resumes. Build them with the classmethods:

    - ``Fault.error("invalid_client", status=401)``: an OAuth error as JSON;
    - ``Fault.status(503, retry_after="3")``: any status, body and content type;
    - ``Fault.body(b'{"access_token": "x"')`` / ``Fault.json({...})``: a malformed answer;
    - ``Fault.reset()``: headers, part of the body, then a TCP reset;
    - ``Fault.hang(30)``: say nothing for 30 seconds, then close the connection;
    - ``Fault.trickle(0.3)``: the normal answer, status line and headers included, one byte
      every 0.3 seconds.

    Every constructor takes ``delay``: seconds to wait before answering.
    """

    kind: FaultKind = "respond"
    status_code: int = 200
    content: bytes = b""
    content_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    #: For ``trickle``: seconds between two bytes of the answer.
    interval: float = 0.0

    def __post_init__(self) -> None:
        if not 100 <= self.status_code <= 599:
            raise ValueError(f"status must be between 100 and 599, not {self.status_code}")
        if self.delay < 0:
            raise ValueError(f"delay must not be negative, not {self.delay}")
        if self.interval < 0:
            raise ValueError(f"interval must not be negative, not {self.interval}")

    @classmethod
    def error(
        cls,
        error: str,
        *,
        status: int = 400,
        description: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """An OAuth error: ``{"error": error}``, plus ``error_description`` when given."""
        payload = {"error": error}
        if description is not None:
            payload["error_description"] = description
        return cls(
            status_code=status,
            content=json.dumps(payload).encode(),
            headers=_NO_STORE + tuple((headers or {}).items()),
            delay=delay,
        )

    @classmethod
    def status(
        cls,
        status: int,
        *,
        body: bytes = b"",
        content_type: str | None = "text/plain; charset=utf-8",
        retry_after: str | int | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Any status with any body; ``retry_after`` (seconds or an HTTP-date) sets Retry-After."""
        extra = tuple((headers or {}).items())
        if retry_after is not None:
            extra += (("Retry-After", str(retry_after)),)
        return cls(
            status_code=status, content=body, content_type=content_type, headers=extra, delay=delay
        )

    @classmethod
    def body(
        cls,
        body: bytes,
        *,
        status: int = 200,
        content_type: str | None = "application/json",
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Exactly these bytes, e.g. truncated JSON or HTML, by default as a 200 claiming JSON."""
        return cls.status(
            status, body=body, content_type=content_type, headers=headers, delay=delay
        )

    @classmethod
    def json(
        cls,
        payload: object,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
    ) -> Fault:
        """Any JSON value, e.g. ``{"access_token": "abc", "expires_in": "soon"}``."""
        return cls.body(json.dumps(payload).encode(), status=status, headers=headers, delay=delay)

    @classmethod
    def reset(cls, *, delay: float = 0.0) -> Fault:
        """Send a 200's headers and part of its body, then reset the connection (TCP RST)."""
        return cls(kind="reset", delay=delay)

    @classmethod
    def trickle(cls, interval: float, *, delay: float = 0.0) -> Fault:
        """Send the normal answer one byte every ``interval`` seconds, from its status line on.

        Every single read gets a byte well within any read timeout, so only a deadline on the
        whole exchange ends it; ``stop()`` cuts it short.
        """
        return cls(kind="trickle", interval=interval, delay=delay)

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Accept the request and say nothing for ``seconds``, then close without answering.

        ``stop()`` cuts the wait short.
        """
        return cls(kind="hang", delay=seconds)
