"""get_session() and TradevestAuth against the real loopback fake server."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

import tradevest_django
from tradevest_django import TradevestAuth, get_session
from tradevest_django.exceptions import TradevestConfigurationError
from tradevest_django.manager import TokenManager
from tradevest_django.sessions import MAX_RETRY_AFTER
from tradevest_django.testing import FakeTradevestServer

PERSON = "6f1c2b4e-8a4d-4c1e-9a55-0d2b8f3e7a10"


@pytest.fixture
def server(tradevest_settings: FakeTradevestServer) -> FakeTradevestServer:
    return tradevest_settings


@pytest.fixture
def other_host() -> Iterator[FakeTradevestServer]:
    with FakeTradevestServer(client_secret="other-host-secret") as other:
        yield other


def test_requests_carry_the_current_token(server: FakeTradevestServer) -> None:
    with get_session() as session:
        assert session.get("/prices").json()["ok"] is True
        first = server.api_requests[-1].token
        assert first == server.issued_tokens[0]
        tradevest_django.invalidate_token(tradevest_django.get_token())
        session.get("/prices")  # same session, token read again at send time
    assert server.api_requests[-1].token == server.issued_tokens[1] != first
    assert server.api_unauthorized_count == 0


def test_relative_urls_join_api_url_with_its_path(
    settings: object, server: FakeTradevestServer
) -> None:
    settings.TRADEVEST = {"default": server.settings(API_URL=server.url + "/v1/")}  # type: ignore[attr-defined]
    with get_session() as session:
        assert session.get("prices").json()["path"] == "/v1/prices"
        assert session.get("/accounts/1").json()["path"] == "/v1/accounts/1"


def test_relative_url_without_api_url_is_a_clear_error(
    settings: object, server: FakeTradevestServer
) -> None:
    options = server.settings()
    del options["API_URL"]
    settings.TRADEVEST = {"default": options}  # type: ignore[attr-defined]
    with (
        get_session() as session,
        pytest.raises(TradevestConfigurationError, match="has no API_URL"),
    ):
        session.get("/prices")


def test_other_hosts_never_get_the_token(
    server: FakeTradevestServer, other_host: FakeTradevestServer
) -> None:
    foreign = f"http://localhost:{other_host.url.rsplit(':', 1)[1]}/collect"
    with get_session(requestor_id=PERSON) as session:
        session.get(foreign)
        session.get("/redirect", params={"to": foreign})
        session.get(other_host.url + "/same-hostname-other-port")
    assert len(other_host.api_requests) == 3
    for request in other_host.api_requests:
        assert "Authorization" not in request.headers
        assert "Requestor-ID" not in request.headers
    assert server.token_request_count <= 1


def test_redirect_within_the_api_keeps_the_token(server: FakeTradevestServer) -> None:
    with get_session(requestor_id=PERSON) as session:
        response = session.get("/redirect", params={"to": server.url + "/landing"})
    assert response.status_code == 200
    landing = server.api_requests[-1]
    assert landing.path == "/landing"
    assert landing.token == server.issued_tokens[0]
    assert landing.headers["Requestor-ID"] == PERSON  # the person's id stays on the API host


@pytest.mark.parametrize("location", ["http://api.example.com:port/", "http://host:99999/"])
def test_a_redirect_to_an_unparsable_location_is_returned_as_it_came(
    server: FakeTradevestServer, location: str
) -> None:
    # A plain requests session returns these; the check for the API host must not raise.
    with get_session(requestor_id=PERSON) as session:
        response = session.get("/redirect", params={"to": location}, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"] == location
    # Not the API host: a copy of the request made to follow it would not carry the person.
    assert "Requestor-ID" not in response.request.headers


def test_requestor_id_is_sent_validated_and_not_part_of_the_token(
    server: FakeTradevestServer,
) -> None:
    with (
        get_session(requestor_id=uuid.UUID(PERSON)) as one,
        get_session(requestor_id=str(uuid.uuid4())) as two,
    ):
        assert one.get("/x").json()["requestor_id"] == PERSON
        assert two.get("/x").json()["requestor_id"] != PERSON
        override = one.get("/x", headers={"Requestor-ID": str(uuid.UUID(int=1))}).json()
        assert override["requestor_id"] == str(uuid.UUID(int=1))
    assert server.token_request_count == 1
    with pytest.raises(ValueError, match="Requestor-ID"):
        get_session(requestor_id="not-a-uuid")


def test_every_request_has_a_timeout(settings: object, server: FakeTradevestServer) -> None:
    settings.TRADEVEST = {"default": server.settings(API_TIMEOUT=(1, 0.3), API_RETRIES=0)}  # type: ignore[attr-defined]
    server.api_delay = 3
    with get_session() as session:
        with pytest.raises(requests.ReadTimeout):
            session.get("/slow")
        prepared = session.prepare_request(requests.Request("GET", server.url + "/slow"))
        with pytest.raises(requests.ReadTimeout):
            session.send(prepared)  # even a hand-prepared request gets the default
        server.api_delay = 0.5
        assert session.get("/slow", timeout=5).status_code == 200  # the caller's timeout wins


def test_keep_alive_connections_are_reused(server: FakeTradevestServer) -> None:
    tradevest_django.get_token()
    before = server.connections_opened
    with get_session() as session:
        for _ in range(50):
            session.get("/prices")
    assert server.connections_opened - before == 1


def test_idempotent_requests_are_retried_and_post_is_not(
    settings: object, server: FakeTradevestServer
) -> None:
    settings.TRADEVEST = {"default": server.settings(API_RETRIES=2)}  # type: ignore[attr-defined]
    with get_session() as session:
        assert session.get("/status/503").status_code == 503
        assert sum(r.path == "/status/503" for r in server.api_requests) == 3
        assert session.post("/status/502", json={}).status_code == 502
        assert sum(r.path == "/status/502" for r in server.api_requests) == 1


def test_a_retry_after_longer_than_the_session_waits_is_returned_at_once(
    settings: object, server: FakeTradevestServer
) -> None:
    settings.TRADEVEST = {"default": server.settings(API_RETRIES=3)}  # type: ignore[attr-defined]
    with get_session() as session:
        started = time.monotonic()
        response = session.get("/status/503", params={"retry_after": "3600"})
        assert time.monotonic() - started < MAX_RETRY_AFTER  # it never slept the capped wait
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "3600"
        assert sum(r.path == "/status/503" for r in server.api_requests) == 1
        # a wait the session is willing to make is still honoured and retried
        assert session.get("/status/504", params={"retry_after": "0"}).status_code == 504
        assert sum(r.path == "/status/504" for r in server.api_requests) == 4


def test_401_invalidates_and_replays_once(server: FakeTradevestServer) -> None:
    with get_session() as session:
        session.get("/warm-up")
        server.revoke(server.issued_tokens[0])
        response = session.post("/orders", json={"qty": 1})
    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert server.token_request_count == 2
    assert server.api_requests[-1].token == server.issued_tokens[1]
    assert server.api_requests[-1].body == server.api_requests[-2].body


def test_second_401_is_returned_untouched_and_403_is_never_retried(
    server: FakeTradevestServer,
) -> None:
    with get_session() as session:
        assert session.get("/status/401").status_code == 401
        assert sum(r.path == "/status/401" for r in server.api_requests) == 2
        assert server.token_request_count == 2  # one invalidation, one fresh token
        assert session.get("/status/403").status_code == 403
        assert sum(r.path == "/status/403" for r in server.api_requests) == 1
        assert server.token_request_count == 2


def test_streamed_body_is_not_replayed(server: FakeTradevestServer) -> None:
    with get_session() as session:
        session.get("/warm-up")
        server.revoke(server.issued_tokens[0])
        response = session.post("/upload", data=iter([b"chunk-1", b"chunk-2"]))
    assert response.status_code == 401
    assert server.token_request_count == 1  # invalidated; the next request gets a new token


def test_auth_works_alone_with_plain_requests(server: FakeTradevestServer) -> None:
    response = requests.get(server.url + "/alone", auth=TradevestAuth(), timeout=5)
    assert response.json()["client_id"] == "test-client"


def test_forked_child_opens_its_own_connections(server: FakeTradevestServer) -> None:
    session = get_session()
    session.get("/parent")
    opened = server.connections_opened
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = session.get("/child").status_code == 200
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert server.connections_opened == opened + 1
    assert session.get("/parent-again").status_code == 200
    session.close()


def test_a_host_with_a_wrong_clock_learns_it_from_api_responses(
    tradevest_settings: FakeTradevestServer,
) -> None:
    import time

    from tradevest_django.sessions import TradevestSession

    server = tradevest_settings
    tradevest_django.get_token()  # another process, with a right clock, shares a token
    shared = tradevest_django.get_manager()
    slow_host = TokenManager(shared.config, clock=lambda: time.time() - 600)
    assert slow_host.get_token().source == "cache"  # adopted; it never saw a token response
    assert slow_host._skew == 0
    with TradevestSession(slow_host.config, TradevestAuth(manager=slow_host)) as session:
        assert session.get("/x").status_code == 200
    assert 595 < slow_host._skew < 605
    assert server.token_request_count == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.example.com/prices", True),
        ("https://api.example.com:443/prices", True),
        ("https://API.example.com/prices", True),
        ("https://api.example.com", True),
        ("https://api.example.com.evil.test/prices", False),
        ("https://api.example.com:8443/prices", False),
        ("http://api.example.com/prices", False),
        ("https://evil.test/?https://api.example.com/", False),
        ("https://user@api.example.com/x", True),
    ],
)
def test_is_api_url_compares_origins(settings: object, url: str, expected: bool) -> None:
    settings.TRADEVEST = {  # type: ignore[attr-defined]
        "default": {
            "CLIENT_ID": "a",
            "CLIENT_SECRET": "b",
            "ENVIRONMENT": "test",
            "API_URL": "https://api.example.com/v1",
        }
    }
    assert TradevestAuth().is_api_url(url) is expected
