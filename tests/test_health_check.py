"""``tradevest_django.contrib.health_check`` through django-health-check's own view."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

try:
    import health_check  # noqa: F401
except ImportError:  # pragma: no cover - the "health" extra is part of "test"
    if os.environ.get("CI", "").lower() == "true":
        raise
    pytest.skip(
        "needs django-health-check: pip install 'tradevest-django[health]'",
        allow_module_level=True,
    )
from django.test import Client
from health_check.exceptions import ServiceUnavailable

from tests.helpers import ServerFactory
from tradevest_django import api
from tradevest_django.contrib.health_check import State, TradevestToken, Verdict, judge
from tradevest_django.exceptions import InvalidClient, TokenEndpointUnavailable
from tradevest_django.testing import FakeTradevestServer, Fault, delete_redis_prefix
from tradevest_django.tokens import Token

SECRET = "health-secret-Wq58"
CHECK = "TradevestToken(alias='default')"

pytestmark = pytest.mark.urls("tests.health_urls")


@pytest.fixture
def server(make_server: ServerFactory) -> FakeTradevestServer:
    return make_server(SECRET)


@pytest.fixture
def configured(settings: Any, server: FakeTradevestServer) -> FakeTradevestServer:
    """``TRADEVEST = {"default": <the server>}`` (no retries) with an empty cache."""
    settings.TRADEVEST = {"default": server.settings(TOKEN_RETRIES=0)}
    api.get_manager().shared.clear()
    return server


def poll(client: Client, path: str = "/health/") -> tuple[int, dict[str, str]]:
    """One monitor poll: the status code and django-health-check's JSON report."""
    response = client.get(path, {"format": "json"})
    report = json.loads(response.content)
    # django-health-check 3.x writes "unavailable: ...", 4.x "Unavailable: ...".
    return response.status_code, {
        check: text[:1].upper() + text[1:] for check, text in report.items()
    }


def assert_no_secrets(server: FakeTradevestServer, *reports: dict[str, str]) -> None:
    text = json.dumps(reports)
    assert SECRET not in text
    assert not any(token in text for token in server.issued_tokens)


def test_a_valid_token_is_healthy(client: Client, configured: FakeTradevestServer) -> None:
    assert poll(client) == (200, {CHECK: "OK"})
    assert configured.token_request_count == 1  # nobody had one: the probe obtained it
    api.reset()  # another process: it finds the fleet's token in the cache
    assert poll(client) == (200, {CHECK: "OK"})
    assert configured.token_request_count == 1


@pytest.fixture(params=["local-memory", "redis"])
def fleet_cache(request: pytest.FixtureRequest) -> Iterator[str]:
    """The cache the "processes" of a test share: local memory, or a real Redis."""
    if request.param == "redis":
        cache = request.getfixturevalue("redis_caches")["default"]  # under CI=true: fails
        yield request.param
        delete_redis_prefix(str(cache["LOCATION"]), str(cache["KEY_PREFIX"]))
    else:
        yield request.param


def test_fifty_polls_make_at_most_one_token_request(
    client: Client, fleet_cache: str, configured: FakeTradevestServer
) -> None:
    reports = []
    for _ in range(50):
        api.reset()  # every poll in a new process of the fleet
        status, report = poll(client)
        assert (status, report) == (200, {CHECK: "OK"})
        reports.append(report)
    assert configured.token_request_count == 1
    assert_no_secrets(configured, *reports)


def test_fifty_polls_of_a_refused_client_make_one_token_request(
    client: Client, fleet_cache: str, configured: FakeTradevestServer
) -> None:
    configured.inject(Fault.error("invalid_client", status=401))
    status, report = poll(client)
    assert (status, report) == (
        500,
        {CHECK: "Unavailable: no valid token: InvalidClient (invalid_client)"},
    )
    for _ in range(49):
        api.reset()
        status, report = poll(client)
        assert status == 500
        assert report[CHECK] == (
            "Unavailable: no valid token: InvalidClient (invalid_client), remembered by the fleet"
        )
    assert configured.token_request_count == 1
    assert_no_secrets(configured, report)


def test_a_failed_refresh_of_a_valid_token_is_a_warning(
    client: Client, configured: FakeTradevestServer
) -> None:
    assert poll(client) == (200, {CHECK: "OK"})
    # The fleet's record says when: the token was obtained a while before the refresh failed.
    a_minute_ago = datetime.now(timezone.utc) - timedelta(minutes=1)
    api.get_manager().shared.record_status(last_refresh=a_minute_ago.isoformat(timespec="seconds"))
    configured.inject(Fault.status(503))
    with pytest.raises(TokenEndpointUnavailable):
        api.get_manager().refresh()  # what a failing refresh ahead records for the fleet
    for _ in range(2):  # this process, and another one that reads the fleet's record
        status, report = poll(client)
        assert status == 500  # django-health-check answers 500 for a warning too
        assert report[CHECK].startswith(
            "Warning: the last token request failed (TokenEndpointUnavailable, "
        )
        assert report[CHECK].endswith(" s more")
        api.reset()
    assert configured.token_request_count == 2  # the polls requested nothing
    api.get_manager().refresh()
    assert poll(client) == (200, {CHECK: "OK"})
    assert_no_secrets(configured, report)


def test_an_unreachable_cache_is_an_error_and_requests_nothing(
    client: Client, settings: Any, configured: FakeTradevestServer
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://:redis-password-Vb20@127.0.0.1:{port}/0",
        }
    }
    status, report = poll(client)
    assert status == 500
    assert report == {
        CHECK: "Unavailable: cache 'default' unreachable: the fleet cannot share its token"
    }
    assert configured.token_request_count == 0


def test_an_invalid_setting_is_an_error(client: Client, settings: Any) -> None:
    settings.TRADEVEST = {"default": {"CLIENT_ID": "health-client"}}
    assert poll(client) == (
        500,
        {CHECK: "Unavailable: TRADEVEST['default'] is invalid: run manage.py check"},
    )


def test_an_unreadable_secret_is_an_error(
    client: Client, settings: Any, configured: FakeTradevestServer
) -> None:
    def secret() -> str:
        raise OSError("the secret store is down")

    settings.TRADEVEST = {"default": configured.settings(CLIENT_SECRET=secret)}
    assert poll(client) == (500, {CHECK: "Unavailable: no valid token: SecretUnavailable"})
    assert configured.token_request_count == 0


def test_one_check_per_alias(
    client: Client, settings: Any, configured: FakeTradevestServer
) -> None:
    settings.TRADEVEST = {
        "default": configured.settings(),
        "partner": configured.settings(CLIENT_ID="unknown-partner"),
    }
    status, report = poll(client, "/health/all/")
    assert status == 500
    assert report == {
        CHECK: "OK",
        "TradevestToken(alias='partner')": (
            "Unavailable: no valid token: InvalidClient (invalid_client)"
        ),
    }


def test_the_budget_is_the_alias_token_deadline(settings: Any) -> None:
    settings.TRADEVEST = {"default": {**settings.TRADEVEST["default"], "TOKEN_DEADLINE": 4}}
    assert TradevestToken().timeout == timedelta(seconds=4)
    settings.TRADEVEST = {"default": {"CLIENT_ID": "no secret"}}
    assert TradevestToken().timeout == timedelta(seconds=10)
    # django-health-check 3.x calls check_status(); it reports what run() reports.
    with pytest.raises(ServiceUnavailable):
        TradevestToken().check_status()


# -- the decisions, without a server ------------------------------------------------------------


def token(seconds_left: float = 600) -> Token:
    expires_at = datetime.now(timezone.utc) + timedelta(seconds=seconds_left)
    return Token("judge-token", "Bearer", expires_at, lifetime=3600)


UP = {"cache": "default", "cache_reachable": True}
REFRESHED = "2026-11-28T13:00:00+00:00"
EARLIER, LATER = "2026-11-28T12:59:59+00:00", "2026-11-28T13:00:01+00:00"


@pytest.mark.parametrize(
    ("status", "got_token", "error", "state", "reason"),
    [
        (UP, True, None, State.HEALTHY, ""),
        ({**UP, "last_refresh": REFRESHED}, True, None, State.HEALTHY, ""),
        (
            {**UP, "last_refresh": REFRESHED, "last_error": {"type": "X", "at": EARLIER}},
            True,
            None,
            State.HEALTHY,
            "",
        ),
        (
            {**UP, "last_refresh": REFRESHED, "last_error": {"type": "X", "at": REFRESHED}},
            True,
            None,
            State.HEALTHY,
            "",
        ),
        (
            {**UP, "last_refresh": REFRESHED, "last_error": {"type": "X", "at": None}},
            True,
            None,
            State.HEALTHY,
            "",
        ),
        (
            {**UP, "last_error": {"type": "X", "at": "not a time"}},
            True,
            None,
            State.HEALTHY,
            "",
        ),
        (
            {
                **UP,
                "last_refresh": REFRESHED,
                "last_error": {"type": "InvalidClient", "error": "invalid_client", "at": LATER},
            },
            True,
            None,
            State.WARNING,
            f"the last token request failed (InvalidClient (invalid_client), {LATER}); the "
            "token is valid for 59",
        ),
        (
            {**UP, "last_error": {"type": "TokenEndpointUnavailable", "at": LATER}},
            True,
            None,
            State.WARNING,
            f"the last token request failed (TokenEndpointUnavailable, {LATER}); the token",
        ),
        (
            UP,
            False,
            InvalidClient(alias="default", status_code=401),
            State.ERROR,
            "no valid token: InvalidClient (invalid_client)",
        ),
        (
            UP,
            False,
            TokenEndpointUnavailable("down", alias="default"),
            State.ERROR,
            "no valid token: TokenEndpointUnavailable",
        ),
        (
            {"cache": "tokens", "cache_reachable": False},
            True,
            None,
            State.ERROR,
            "cache 'tokens' unreachable: the fleet cannot share its token",
        ),
    ],
)
def test_judge(
    status: dict[str, Any], got_token: bool, error: Exception | None, state: State, reason: str
) -> None:
    verdict = judge(status, token() if got_token else None, error)
    assert verdict.state is state
    assert verdict.reason.startswith(reason)
    assert (verdict.reason == "") is (state is State.HEALTHY)
    assert isinstance(verdict, Verdict)
