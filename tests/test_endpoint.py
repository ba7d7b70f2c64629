"""The token request against the real loopback fake server: conformance, errors, retries."""

from __future__ import annotations

import time
from urllib.parse import parse_qs

import pytest
import requests

from tests.helpers import FakeClock, ServerFactory, free_port
from tradevest_django import __version__
from tradevest_django.conf import AliasConfig
from tradevest_django.endpoint import TokenEndpoint, describe_cause, parse_token_response
from tradevest_django.exceptions import (
    BadTokenResponse,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    TokenEndpointError,
    TokenEndpointUnavailable,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from tradevest_django.testing import FakeTradevestServer, Fault


@pytest.fixture
def server(make_server: ServerFactory) -> FakeTradevestServer:
    return make_server("endpoint-secret-XYZ")


def endpoint(
    server: FakeTradevestServer, clock: FakeClock | None = None, **options: object
) -> TokenEndpoint:
    clock = clock or FakeClock()
    config = AliasConfig.from_dict("default", server.settings(**options), check_cache=False)
    return TokenEndpoint(config, clock=clock, sleep=clock.sleep)


def test_request_is_exactly_the_spec(server: FakeTradevestServer) -> None:
    result = endpoint(server).fetch()
    assert result.attempts == 1
    (request,) = server.token_requests
    assert request.method == "POST"
    assert request.path == "/oauth2/token"
    assert request.query == ""  # credentials never in the URL
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"].startswith(f"tradevest-django/{__version__} ")
    assert "Authorization" not in request.headers
    assert parse_qs(request.body.decode(), strict_parsing=True) == {
        "client_id": ["test-client"],
        "client_secret": ["endpoint-secret-XYZ"],
        "grant_type": ["client_credentials"],
    }
    assert result.token.access_token == server.issued_tokens[0]
    assert result.token.token_type == "Bearer"


def test_scope_is_sent_only_when_set(server: FakeTradevestServer) -> None:
    endpoint(server, SCOPE="tradevest.api", TOKEN_PATH="/oauth2/token").fetch()
    assert server.token_requests[0].form["scope"] == ["tradevest.api"]


@pytest.mark.parametrize(
    ("error", "status", "cls"),
    [
        ("invalid_request", 400, InvalidRequest),
        ("invalid_client", 400, InvalidClient),
        ("invalid_client", 401, InvalidClient),
        ("invalid_grant", 400, InvalidGrant),
        ("unauthorized_client", 400, UnauthorizedClient),
        ("unsupported_grant_type", 400, UnsupportedGrantType),
        ("something_new", 400, TokenEndpointError),
    ],
)
def test_each_error_code_has_its_class_and_is_not_retried(
    server: FakeTradevestServer, error: str, status: int, cls: type[TokenEndpointError]
) -> None:
    server.inject(Fault.error(error, status=status, description="Details here"))
    with pytest.raises(TokenEndpointError) as info:
        endpoint(server).fetch()
    err = info.value
    assert type(err) is cls
    assert (err.error, err.error_description, err.status_code, err.alias) == (
        error,
        "Details here",
        status,
        "default",
    )
    assert err.retryable is False
    assert server.token_request_count == 1
    assert "default" in str(err) and error in str(err)


def test_real_wrong_secret_is_invalid_client(server: FakeTradevestServer) -> None:
    with pytest.raises(InvalidClient, match="TRADEVEST_CLIENT_SECRET"):
        endpoint(server, CLIENT_SECRET="wrong-secret-ABC").fetch()


def test_description_echoing_the_secret_is_scrubbed(server: FakeTradevestServer) -> None:
    server.inject(Fault.error("invalid_client", description="bad secret endpoint-secret-XYZ"))
    with pytest.raises(InvalidClient) as info:
        endpoint(server).fetch()
    assert "endpoint-secret-XYZ" not in str(info.value)


@pytest.mark.parametrize(
    "fault",
    [
        Fault.body(b'{"access_token": "abc", "expires_in'),
        Fault.body(b"<html><body>Maintenance SECRETBODY</body></html>", content_type="text/html"),
        Fault.json(["SECRETBODY"]),
        Fault.json({"expires_in": 3600, "token_type": "Bearer", "note": "SECRETBODY"}),
        Fault.json({"access_token": "", "expires_in": 3600}),
        Fault.json({"access_token": 42, "expires_in": 3600}),
        Fault.json({"access_token": "has space", "expires_in": 3600}),
        Fault.json({"access_token": "SECRETBODY", "token_type": "mac"}),
        Fault.json({"access_token": "SECRETBODY", "expires_in": -5}),
        Fault.json({"access_token": "SECRETBODY", "expires_in": 0}),
        Fault.json({"access_token": "SECRETBODY", "expires_in": True}),
        Fault.json({"access_token": "SECRETBODY", "expires_in": "soon"}),
        Fault.body(b"x" * 200_000),
    ],
)
def test_malformed_success_is_bad_token_response_without_echo(
    server: FakeTradevestServer, fault: Fault
) -> None:
    server.inject(fault)
    with pytest.raises(BadTokenResponse) as info:
        endpoint(server).fetch()
    assert "SECRETBODY" not in str(info.value)
    assert server.token_request_count == 1


@pytest.mark.parametrize(
    ("payload", "token_type", "lifetime"),
    [
        ({"access_token": "abc"}, "Bearer", 3600),
        ({"access_token": "abc", "token_type": "bearer", "expires_in": 300}, "bearer", 300),
        ({"access_token": "abc", "token_type": "BEARER", "expires_in": 299.9}, "BEARER", 299),
        ({"access_token": "abc", "expires_in": "600", "extra": 1}, "Bearer", 600),
        ({"access_token": "abc", "expires_in": 10**12}, "Bearer", 86400),
    ],
)
def test_lenient_where_rfc_allows(
    payload: dict[str, object], token_type: str, lifetime: int
) -> None:
    token = parse_token_response(payload, issued_at=1_800_000_000.0)
    assert (token.token_type, token.lifetime) == (token_type, lifetime)
    assert token.expires_at.timestamp() == 1_800_000_000.0 + lifetime
    assert token.authorization == "Bearer abc"


def test_transient_errors_are_retried_with_backoff(server: FakeTradevestServer) -> None:
    clock = FakeClock()
    server.inject(Fault.status(503), Fault.status(429, retry_after="3"), Fault.status(502))
    result = endpoint(server, clock).fetch()
    assert result.attempts == 4
    assert server.token_request_count == 4
    assert len(clock.sleeps) == 3
    assert clock.sleeps[1] >= 3  # Retry-After honoured
    assert 0 <= clock.sleeps[0] <= 0.5 and 0 <= clock.sleeps[2] <= 2.0  # full jitter, capped


def test_retries_are_bounded_in_attempts(server: FakeTradevestServer) -> None:
    server.inject(*[Fault.status(500)] * 10)
    with pytest.raises(TokenEndpointUnavailable) as info:
        endpoint(server, TOKEN_RETRIES=2).fetch()
    assert info.value.attempts == 3 and server.token_request_count == 3
    assert info.value.retryable is True and info.value.status_code == 500


def test_retries_are_bounded_in_total_time(server: FakeTradevestServer) -> None:
    clock = FakeClock()
    server.inject(Fault.status(503, retry_after="120"))
    with pytest.raises(TokenEndpointUnavailable) as info:
        endpoint(server, clock).fetch()
    assert server.token_request_count == 1  # waiting 120 s would pass the 15 s deadline
    assert info.value.retry_after == 120
    assert clock.sleeps == []


def test_connection_refused_is_unavailable() -> None:
    port = free_port()
    clock = FakeClock()
    config = AliasConfig.from_dict(
        "default",
        {"CLIENT_ID": "a", "CLIENT_SECRET": "b", "AUTH_URL": f"http://127.0.0.1:{port}"},
        check_cache=False,
    )
    with pytest.raises(TokenEndpointUnavailable, match=r"ConnectionError: .* 4 attempt") as err:
        TokenEndpoint(config, clock=clock, sleep=clock.sleep).fetch()
    assert err.value.cause is not None and "Connection refused" in err.value.cause
    assert err.value.__cause__ is None and err.value.__context__ is None


def test_read_timeout_and_reset_are_retried(server: FakeTradevestServer) -> None:
    server.inject(Fault.hang(5), Fault.reset())
    result = endpoint(server, TOKEN_TIMEOUT=(1, 0.3)).fetch()
    assert result.attempts == 3


def test_date_header_gives_clock_skew() -> None:
    with FakeTradevestServer(date_offset=600) as server:
        result = endpoint(server, FakeClock(time.time())).fetch()
    assert result.skew is not None and 595 < result.skew < 605
    # Public times are on this host's clock; the server's clock is kept for the cache.
    assert abs(result.token.expires_at.timestamp() - (time.time() + 3600)) < 5
    assert abs(result.token.server_expiry - (time.time() + 600 + 3600)) < 5
    assert 3590 < result.token.seconds_left <= 3600


def test_a_large_error_page_is_still_a_retryable_outage(server: FakeTradevestServer) -> None:
    server.inject(Fault.status(503, body=b"<html>" + b"x" * 300_000, content_type="text/html"))
    result = endpoint(server).fetch()
    assert result.attempts == 2


@pytest.mark.parametrize(
    ("date_offset", "sent_ago", "expected"),
    [
        (0.0, 0.0, 0.0),  # clocks agree
        (0.0, 5.0, 0.0),  # a slow round trip (Date written 5 s before we read it) is no skew
        (-600.0, 0.2, -599.0),  # the server is 10 minutes behind: nearest consistent value
        (600.0, 0.2, 600.0),  # the server is 10 minutes ahead
    ],
)
def test_clock_skew_is_bounded_by_the_round_trip(
    date_offset: float, sent_ago: float, expected: float
) -> None:
    from email.utils import formatdate

    from tradevest_django.endpoint import clock_skew

    received = 1_800_000_000.0
    date = formatdate(received - sent_ago + date_offset, usegmt=True)  # written when it was sent
    assert clock_skew(date, received, sent=received - sent_ago) == pytest.approx(expected, abs=1.01)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (requests.ReadTimeout("read timed out"), "ReadTimeout: read timed out"),
        (requests.ConnectionError(), "ConnectionError: ConnectionError"),
    ],
)
def test_describe_cause_keeps_class_and_message(error: Exception, expected: str) -> None:
    assert describe_cause(error) == expected


def test_describe_cause_finds_the_reason_and_redacts_the_secret() -> None:
    try:
        requests.post("http://nonexistent.invalid/t", data={"client_secret": "s3cr3t"}, timeout=2)
    except requests.RequestException as err:
        described = describe_cause(err, secret="s3cr3t")
    assert described.startswith("ConnectionError: Failed to resolve 'nonexistent.invalid'")
    assert described.endswith(")") and "object at 0x" not in described
    assert "s3cr3t" not in describe_cause(requests.ConnectionError("x s3cr3t"), secret="s3cr3t")
