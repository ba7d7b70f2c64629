"""Token endpoint faults, over real HTTP to the loopback fake server, through the token manager.

One table of faults drives two tests:

* ``test_fault_matrix``: with no token yet, a caller of ``TokenManager.get_token()`` gets the
  documented exception, or a token after retries when the fault is transient; within the
  documented number of token requests (``TOKEN_RETRIES + 1``, or 1 when the answer is not
  retryable) and within ``TOKEN_DEADLINE``; nothing unusable is ever cached.
* ``test_refresh_survives_the_fault``: the same fault during the background refresh of a still
  valid token: callers keep that token without an error and without a request storm, and a new
  token is adopted once the endpoint recovers.

Every row of the matrix is recorded in the ``endpoint_faults`` figures for the docs.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from django.core.cache.backends.locmem import LocMemCache

from tests.helpers import FakeClock, ServerFactory
from tests.reliability import figures
from tradevest_django.conf import DEFAULTS
from tradevest_django.endpoint import MAX_BODY, MAX_LIFETIME
from tradevest_django.exceptions import (
    BadTokenResponse,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    TokenEndpointError,
    TokenEndpointUnavailable,
    TradevestError,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from tradevest_django.manager import TokenManager
from tradevest_django.testing import FakeTradevestServer, Fault
from tradevest_django.tokens import Token

#: The package defaults these tests rely on.
TOKEN_RETRIES: int = DEFAULTS["TOKEN_RETRIES"]
TOKEN_DEADLINE: float = DEFAULTS["TOKEN_DEADLINE"]
FAILURE_COOLDOWN: int = DEFAULTS["FAILURE_COOLDOWN"]
#: The documented bound on token requests per call when every attempt fails transiently.
RETRY_BOUND = TOKEN_RETRIES + 1
#: Real socket timeouts are the only real waiting: keep them small.
TOKEN_TIMEOUT = (1.0, 0.3)
#: Real seconds allowed on top of TOKEN_DEADLINE: up to four 0.3 s read timeouts plus loopback
#: round trips on a busy two-core machine.
WALL_ALLOWANCE = 3.0
#: More faults than any retry budget consumes: "the endpoint fails on every attempt".
ALWAYS = 10
#: Every injected access token contains this, so a message echoing a body is easy to spot.
MARK = "tvfault"


def _token_json(name: str, **fields: object) -> Fault:
    """A 200 answer that is a good token except for ``fields``."""
    payload = {"access_token": f"{MARK}_{name}", "expires_in": 3600, "token_type": "Bearer"}
    payload.update(fields)
    return Fault.json(payload)


#: A valid token answer padded to 10 MB: only its size makes it unacceptable.
_HUGE_BODY = (
    b'{"access_token": "' + MARK.encode() + b'_huge", "expires_in": 3600, '
    b'"token_type": "Bearer", "padding": "' + b"x" * (10 * 1024 * 1024) + b'"}'
)
#: An error page far over the 64 KiB body limit.
_BIG_PAGE = b"<html><body>" + b"Service unavailable. " * 50_000 + b"</body></html>"
#: Deep nesting that still fits well under the 64 KiB body limit.
_NESTED_BODY = b"[" * 30_000 + b"]" * 30_000


@dataclass(frozen=True)
class Case:
    """One row of the fault table."""

    fault: str
    inject: tuple[Fault, ...] = ()
    #: ``None``: the caller gets a token; else the exact exception class it gets.
    outcome: type[TradevestError] | None = None
    #: Exact token requests expected (for a success: the attempt that succeeds).
    requests: int = 1
    #: The documented upper bound of token requests for this kind of fault.
    max_requests: int = 1
    #: How many attempts in a row find the port closed (connection refused).
    refused: int = 0
    #: For an injected successful answer: its access token and the lifetime to be believed.
    token: str | None = None
    lifetime: int = 3600
    #: Fake seconds the client must have waited (a Retry-After it must honour).
    waits_at_least: float = 0.0

    def __str__(self) -> str:
        return self.fault


def _transient(name: str, fault: Fault | None) -> list[Case]:
    """The fault once (a retry recovers) and on every attempt (the retries run out).

    ``fault=None`` is the connection being refused.
    """
    faults = (fault,) if fault is not None else ()
    refused_once, refused_always = (1, ALWAYS) if fault is None else (0, 0)
    return [
        Case(f"{name}, once", faults, None, 2, RETRY_BOUND, refused=refused_once),
        Case(
            f"{name}, every attempt",
            faults * ALWAYS,
            TokenEndpointUnavailable,
            RETRY_BOUND,
            RETRY_BOUND,
            refused=refused_always,
        ),
    ]


CASES: list[Case] = [
    *[
        case
        for status in (500, 502, 503, 504)
        for case in _transient(f"HTTP {status}", Fault.status(status))
    ],
    *_transient("HTTP 429 without Retry-After", Fault.status(429)),
    Case(
        "HTTP 429 Retry-After: 3, once",
        (Fault.status(429, retry_after="3"),),
        None,
        2,
        RETRY_BOUND,
        waits_at_least=3.0,
    ),
    Case(
        "HTTP 429 Retry-After: 120 (past the deadline)",
        (Fault.status(429, retry_after="120"),) * ALWAYS,
        TokenEndpointUnavailable,
        1,
        RETRY_BOUND,
    ),
    Case(
        "HTTP 503 Retry-After: an HTTP-date in the past, once",
        (Fault.status(503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),),
        None,
        2,
        RETRY_BOUND,
    ),
    Case(
        "HTTP 503 Retry-After: an HTTP-date in 2100",
        (Fault.status(503, retry_after="Fri, 01 Jan 2100 00:00:00 GMT"),) * ALWAYS,
        TokenEndpointUnavailable,
        1,
        RETRY_BOUND,
    ),
    Case(
        "HTTP 503 Retry-After: U+00B2 (a digit that is no number), once",
        (Fault.status(503, retry_after="\u00b2"),),
        None,
        2,
        RETRY_BOUND,
    ),
    *_transient(
        "HTTP 503 with a 1 MB HTML page",
        Fault.body(_BIG_PAGE, status=503, content_type="text/html"),
    ),
    *_transient("connection refused", None),
    *_transient("read timeout", Fault.hang(5)),
    *_transient("connection reset mid-body", Fault.reset()),
    Case(
        "200 with truncated JSON",
        (Fault.body(b'{"access_token": "' + MARK.encode() + b'_cut", "expires_in'),),
        BadTokenResponse,
    ),
    Case(
        "200 with an HTML error page",
        (
            Fault.body(
                b"<html><body>Service " + MARK.encode() + b" down</body></html>",
                content_type="text/html",
            ),
        ),
        BadTokenResponse,
    ),
    Case("200 with a 10 MB body", (Fault.body(_HUGE_BODY),), BadTokenResponse),
    Case("200 with JSON nested 30,000 deep (59 KB)", (Fault.body(_NESTED_BODY),), BadTokenResponse),
    Case(
        "400 with JSON nested 30,000 deep (59 KB)",
        (Fault.body(_NESTED_BODY, status=400),),
        TokenEndpointError,
    ),
    Case("expires_in 0", (_token_json("zero", expires_in=0),), BadTokenResponse),
    Case("expires_in -60", (_token_json("negative", expires_in=-60),), BadTokenResponse),
    Case(
        "expires_in -Infinity",
        (_token_json("minus_inf", expires_in=float("-inf")),),
        BadTokenResponse,
    ),
    Case("expires_in NaN", (_token_json("nan", expires_in=float("nan")),), BadTokenResponse),
    Case("expires_in true", (_token_json("bool", expires_in=True),), BadTokenResponse),
    Case(
        "expires_in 'soon' (a string)", (_token_json("soon", expires_in="soon"),), BadTokenResponse
    ),
    Case(
        "expires_in U+00B2 (a digit that is no number)",
        (_token_json("sup2", expires_in="\u00b2"),),
        BadTokenResponse,
    ),
    Case(
        "expires_in a string of 5,000 digits",
        (_token_json("digits", expires_in="9" * 5000),),
        BadTokenResponse,
    ),
    Case(
        "expires_in '600' (a numeric string)",
        (_token_json("numeric", expires_in="600"),),
        token=f"{MARK}_numeric",
        lifetime=600,
    ),
    Case(
        "expires_in 3599.9 (a float)",
        (_token_json("float", expires_in=3599.9),),
        token=f"{MARK}_float",
        lifetime=3599,
    ),
    Case(
        "expires_in 10**12 (huge)",
        (_token_json("huge", expires_in=10**12),),
        token=f"{MARK}_huge",
        lifetime=MAX_LIFETIME,
    ),
    Case(
        "missing access_token",
        (Fault.json({"expires_in": 3600, "token_type": "Bearer"}),),
        BadTokenResponse,
    ),
    Case("token_type 'mac'", (_token_json("mac", token_type="mac"),), BadTokenResponse),
    Case("400 invalid_request", (Fault.error("invalid_request"),), InvalidRequest),
    Case("400 invalid_client", (Fault.error("invalid_client"),), InvalidClient),
    Case("400 invalid_grant", (Fault.error("invalid_grant"),), InvalidGrant),
    Case("400 unauthorized_client", (Fault.error("unauthorized_client"),), UnauthorizedClient),
    Case(
        "400 unsupported_grant_type", (Fault.error("unsupported_grant_type"),), UnsupportedGrantType
    ),
    Case("400 an unknown error code", (Fault.error("slow_down"),), TokenEndpointError),
    Case("401 invalid_client", (Fault.error("invalid_client", status=401),), InvalidClient),
    Case("401 with an empty body", (Fault.status(401),), InvalidClient),
    Case(
        "403 with a 1 MB HTML page",
        (Fault.body(_BIG_PAGE, status=403, content_type="text/html"),),
        TokenEndpointError,
    ),
    Case(
        "403 with an HTML page",
        (Fault.body(b"<html>Forbidden</html>", status=403, content_type="text/html"),),
        TokenEndpointError,
    ),
]


class Outage:
    """Takes the fake server off its port, so that connecting is refused, and puts it back.

    While it is off, a bound but never listening socket holds the port: the kernel refuses
    connections to it, and no other process can take the port meanwhile.
    """

    def __init__(self, server: FakeTradevestServer) -> None:
        self.server = server
        self._holder: socket.socket | None = None

    def begin(self) -> None:
        self.server.stop()
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((self.server.host, self.server.port))
        self._holder = holder

    def end(self) -> None:
        if self._holder is not None:
            self._holder.close()
            self._holder = None
            self.server.start()


class Wire:
    """What the client really did on the wire: HTTP sends, and body bytes it read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sends = 0
        self.most_body_bytes = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        send, iter_content = requests.Session.send, requests.Response.iter_content

        def counting_send(session: requests.Session, request: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.sends += 1
            return send(session, request, **kwargs)

        def counting_iter(response: requests.Response, *args: Any, **kwargs: Any) -> Iterator[Any]:
            read = 0
            for chunk in iter_content(response, *args, **kwargs):
                read += len(chunk)
                with self._lock:
                    self.most_body_bytes = max(self.most_body_bytes, read)
                yield chunk

        monkeypatch.setattr(requests.Session, "send", counting_send)
        monkeypatch.setattr(requests.Response, "iter_content", counting_iter)


@pytest.fixture
def server(make_server: ServerFactory, clock: FakeClock) -> FakeTradevestServer:
    return make_server("faults-secret-Vb71", clock=clock)


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Wire:
    observed = Wire()
    observed.install(monkeypatch)
    return observed


@pytest.fixture
def outage(server: FakeTradevestServer) -> Iterator[Outage]:
    down = Outage(server)
    try:
        yield down
    finally:
        down.end()


def _manager(
    server: FakeTradevestServer, clock: FakeClock, sleep: Callable[[float], None]
) -> tuple[TokenManager, LocMemCache]:
    cache = LocMemCache(f"faults-{uuid.uuid4().hex}", {})
    manager = TokenManager.from_options(
        "default",
        server.settings(TOKEN_TIMEOUT=TOKEN_TIMEOUT),
        cache=cache,
        clock=clock,
        sleep=sleep,
    )
    return manager, cache


def _sleep_ending_outage(clock: FakeClock, outage: Outage, case: Case) -> Callable[[float], None]:
    """The manager's sleep: fake time, and the port reopens after ``case.refused`` failures."""
    slept = 0

    def sleep(seconds: float) -> None:
        nonlocal slept
        clock.sleep(seconds)
        slept += 1
        if case.refused and slept == case.refused:
            outage.end()

    return sleep


def _cached(manager: TokenManager, cache: LocMemCache) -> Token | None:
    return Token.from_cache(cache.get(manager.shared.token_key))


def _join_refresh(manager: TokenManager) -> None:
    thread = manager._refresh_thread
    if thread is not None:
        thread.join(timeout=15)
        assert not thread.is_alive(), "the background refresh did not finish within 15 s"


def _expected_token(case: Case, server: FakeTradevestServer) -> str:
    if case.token is not None:
        return case.token
    issued = server.issued_tokens
    assert len(issued) == 1, "one request, one token"
    return issued[0]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fault_matrix(
    case: Case,
    server: FakeTradevestServer,
    clock: FakeClock,
    wire: Wire,
    outage: Outage,
) -> None:
    manager, cache = _manager(server, clock, _sleep_ending_outage(clock, outage, case))
    server.inject(*case.inject)
    if case.refused:
        outage.begin()
    fake_start, wall_start = clock(), time.monotonic()
    token: Token | None = None
    error: Exception | None = None
    try:
        token = manager.get_token()
    except Exception as err:  # anything at all: the table says which exception is documented
        error = err
    outage.end()
    seconds = (clock() - fake_start) + (time.monotonic() - wall_start)
    outcome = f"success after {wire.sends} attempts" if error is None else type(error).__name__
    figures.record(
        "endpoint_faults",
        fault=case.fault,
        outcome=outcome,
        token_requests=wire.sends,
        seconds=round(seconds, 2),
    )
    as_documented = error is None if case.outcome is None else type(error) is case.outcome
    figures.count("fault_kinds")
    figures.count("fault_kinds_survived", int(as_documented))

    if case.outcome is None:
        assert error is None, f"expected a token, got {error!r}"
    else:
        assert type(error) is case.outcome, f"expected {case.outcome.__name__}, got {error!r}"
    assert wire.sends <= case.max_requests, (
        f"{wire.sends} token requests; documented: at most {case.max_requests}"
    )
    assert wire.sends == case.requests
    assert server.token_request_count == wire.sends - min(case.refused, wire.sends)
    assert seconds <= TOKEN_DEADLINE + WALL_ALLOWANCE
    assert sum(clock.sleeps) >= case.waits_at_least
    assert wire.most_body_bytes <= MAX_BODY + 8192, "read past the body limit"

    if token is not None:
        assert token.access_token == _expected_token(case, server)
        assert token.lifetime == case.lifetime
        assert _cached(manager, cache) == token  # the shared copy is this token, still valid
        assert token.expires_at_timestamp - clock() > 0.9 * case.lifetime
    else:
        assert cache.get(manager.shared.token_key) is None, "something was cached after a failure"
        assert manager.peek() is None
        assert isinstance(error, TradevestError)
        assert error.retryable is (case.outcome is TokenEndpointUnavailable)
        assert MARK not in str(error) and MARK not in repr(error), "the message echoes the body"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_refresh_survives_the_fault(
    case: Case,
    server: FakeTradevestServer,
    clock: FakeClock,
    wire: Wire,
    outage: Outage,
) -> None:
    manager, cache = _manager(server, clock, _sleep_ending_outage(clock, outage, case))
    old = manager.get_token()
    clock.advance(3600 - 30 - 200)  # 200 s of validity left: inside the refresh window
    requests_before = wire.sends
    # A failing endpoint keeps failing until it recovers; a transient fault happens once.
    failing = case.outcome is not None and len(case.inject) < ALWAYS
    server.inject(*(case.inject * ALWAYS if failing else case.inject))
    if case.refused:
        outage.begin()

    served = []
    for _ in range(6):  # the first call starts the refresh; the others must not start a storm
        served.append(manager.get_token())
        _join_refresh(manager)
    during = wire.sends - requests_before
    figures.record(
        "refresh_faults",
        fault=case.fault,
        token_requests=during,
        callers_served_the_old_token=sum(token is old for token in served),
    )
    assert during <= case.max_requests, (
        f"{during} token requests for one failing refresh; documented: {case.max_requests}"
    )
    assert served[0] is old, "the caller waited for the refresh"

    if case.outcome is None:  # the refresh itself recovered: the new token is in use
        new = manager.get_token()
        assert new.access_token == case.token or new.access_token == server.issued_tokens[-1]
        assert new != old and _cached(manager, cache) == new
        return

    assert all(token is old for token in served)
    assert manager.get_token() is old
    assert _cached(manager, cache) == old, "the failed refresh changed the shared token"
    server.clear_faults()
    outage.end()
    clock.advance(FAILURE_COOLDOWN + 1)  # past the longest back-off the fleet shares
    assert manager.get_token() is old  # still valid: served at once, and refreshed behind
    _join_refresh(manager)
    new = manager.get_token()
    assert new != old
    assert new.access_token == server.issued_tokens[-1]
    assert _cached(manager, cache) == new
