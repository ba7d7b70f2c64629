"""No secret and no token in error reports: Django's debug page and e-mails, error trackers.

Those show the local variables of every frame of a traceback, so it is not enough that the
messages are clean: no frame of the package may hold the secret (or a token) at all.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import pytest
from django.test import override_settings
from django.views.debug import ExceptionReporter

from tests.helpers import CountingCache, FakeClock, ServerFactory, free_port
from tradevest_django.exceptions import (
    BadTokenResponse,
    InvalidClient,
    TokenEndpointUnavailable,
    TradevestError,
)
from tradevest_django.manager import TokenManager
from tradevest_django.testing import FakeTradevestServer, Fault

SECRET = "reports-secret-Zk41Lq"
FOREIGN_TOKEN = "tvfake_in_an_oversized_answer_QmX81"


@pytest.fixture
def server(make_server: ServerFactory) -> FakeTradevestServer:
    return make_server(SECRET)


def manager_for(server: FakeTradevestServer, **options: object) -> TokenManager:
    clock = FakeClock()
    return TokenManager.from_options(
        "default",
        server.settings(**options),
        cache=CountingCache(),
        clock=clock,
        sleep=clock.sleep,
    )


def oversized_200(server: FakeTradevestServer) -> TokenManager:
    body = {"access_token": FOREIGN_TOKEN, "token_type": "Bearer", "pad": "x" * 70_000}
    server.inject(Fault.json(body))
    return manager_for(server)


def invalid_client(server: FakeTradevestServer) -> TokenManager:
    server.inject(Fault.error("invalid_client", description=f"bad secret {SECRET}"))
    return manager_for(server)


def refused_connection(server: FakeTradevestServer) -> TokenManager:
    return manager_for(server, AUTH_URL=f"http://127.0.0.1:{free_port()}")


def endless_503(server: FakeTradevestServer) -> TokenManager:
    server.inject(*[Fault.status(503, body=SECRET.encode())] * 10)
    return manager_for(server)


SCENARIOS: dict[str, tuple[Callable[[FakeTradevestServer], TokenManager], type[Exception]]] = {
    "oversized-200": (oversized_200, BadTokenResponse),
    "invalid-client": (invalid_client, InvalidClient),
    "refused-connection": (refused_connection, TokenEndpointUnavailable),
    "endless-503": (endless_503, TokenEndpointUnavailable),
}


def raised(manager: TokenManager) -> tuple[type[BaseException], BaseException, TracebackType]:
    try:
        manager.get_token()
    except TradevestError:
        exc_type, exc, tb = sys.exc_info()
        assert exc_type is not None and exc is not None and tb is not None
        return exc_type, exc, tb
    raise AssertionError("get_token() did not raise")


def texts_of(value: Any, depth: int = 0) -> Iterator[str]:
    """What an error report may show of a local: its repr, and the items of containers."""
    yield repr(value)
    if depth > 4:
        return
    if isinstance(value, bytes | bytearray):
        yield bytes(value).decode("latin-1")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from texts_of(key, depth + 1)
            yield from texts_of(item, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from texts_of(item, depth + 1)


def package_frames(exc: BaseException) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every frame of the package in the traceback of ``exc`` and of its cause or context."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if str(frame.f_globals.get("__name__", "")).startswith("tradevest_django"):
                yield frame.f_code.co_name, dict(frame.f_locals)
            tb = tb.tb_next
        current = current.__cause__ or current.__context__


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize("debug", [True, False], ids=["DEBUG", "production"])
def test_error_reports_hold_no_secret_and_no_token(
    server: FakeTradevestServer, scenario: str, debug: bool
) -> None:
    build, expected = SCENARIOS[scenario]
    exc_type, exc, tb = raised(build(server))
    assert isinstance(exc, expected)
    secrets = {SECRET, FOREIGN_TOKEN, *server.issued_tokens}
    with override_settings(DEBUG=debug):
        reporter = ExceptionReporter(None, exc_type, exc, tb)
        reports = {"text": reporter.get_traceback_text(), "html": reporter.get_traceback_html()}
    for kind, report in reports.items():
        assert "_fetch_and_share" in report and "self" in report  # the frames and their locals
        for secret in secrets:
            assert secret not in report, f"{scenario}: {kind} report shows a secret"
    frames = list(package_frames(exc))
    assert frames, "the package's frames are in the traceback"
    for function, local_vars in frames:
        for name, value in local_vars.items():
            for text in texts_of(value):
                for secret in secrets:
                    assert secret not in text, f"{scenario}: {function}() holds it in {name!r}"


def test_a_network_error_keeps_its_class_and_message_without_the_requests_error(
    server: FakeTradevestServer,
) -> None:
    _, exc, _ = raised(refused_connection(server))
    assert isinstance(exc, TokenEndpointUnavailable)
    assert exc.cause is not None and exc.cause.startswith("ConnectionError: ")
    assert "Connection refused" in exc.cause and "Connection refused" in str(exc)
    assert exc.__cause__ is None and exc.__context__ is None  # its frames hold the form
    assert "object at 0x" not in str(exc)


def test_the_token_request_still_sends_the_secret(server: FakeTradevestServer) -> None:
    manager_for(server).get_token()
    (request,) = server.token_requests
    assert request.form["client_secret"] == [SECRET]
    assert json.loads(json.dumps(request.form))  # plain form fields, as the contract says
