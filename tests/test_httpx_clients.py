"""get_client(), get_async_client() and TradevestHttpxAuth against the real loopback fake."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import httpx
import pytest

import tradevest_django
from tests.helpers import ServerFactory
from tradevest_django import TradevestHttpxAuth, get_async_client, get_client
from tradevest_django.testing import FakeTradevestServer

PERSON = "6f1c2b4e-8a4d-4c1e-9a55-0d2b8f3e7a10"


@pytest.fixture
def server(tradevest_settings: FakeTradevestServer) -> FakeTradevestServer:
    return tradevest_settings


@pytest.fixture
def other_host(make_server: ServerFactory) -> FakeTradevestServer:
    return make_server("httpx-other-host-secret")


def test_sync_client_sends_the_token_and_the_person(server: FakeTradevestServer) -> None:
    with get_client(requestor_id=PERSON) as client:
        body = client.get("/prices").json()
    assert body["ok"] is True and body["requestor_id"] == PERSON
    (request,) = server.api_requests
    assert request.token == server.issued_tokens[0]
    assert request.headers["User-Agent"].startswith("tradevest-django/")


def test_async_client_sends_the_token_and_the_person(server: FakeTradevestServer) -> None:
    async def call() -> dict[str, object]:
        async with get_async_client(requestor_id=uuid.UUID(PERSON)) as client:
            return (await client.get("/prices")).json()  # type: ignore[no-any-return]

    assert asyncio.run(call())["requestor_id"] == PERSON
    assert server.api_requests[0].token == server.issued_tokens[0]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_401_is_replayed_once_with_a_new_token(server: FakeTradevestServer, kind: str) -> None:
    async def async_calls() -> list[int]:
        async with get_async_client() as client:
            await client.get("/warm-up")
            server.revoke(server.issued_tokens[0])
            first = (await client.get("/prices")).status_code
            server.revoke(server.issued_tokens[-1])  # moments later: a 401 no token fixes
            return [first, (await client.get("/prices")).status_code]

    def sync_calls() -> list[int]:
        with get_client() as client:
            client.get("/warm-up")
            server.revoke(server.issued_tokens[0])
            first = client.get("/prices").status_code
            server.revoke(server.issued_tokens[-1])
            return [first, client.get("/prices").status_code]

    statuses = asyncio.run(async_calls()) if kind == "async" else sync_calls()
    assert statuses == [200, 401]
    assert server.token_request_count == 2  # the replay's token; then the cooldown holds
    prices = [r for r in server.api_requests if r.path == "/prices"]
    assert [r.status for r in prices] == [401, 200, 401]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_other_hosts_never_get_the_token_nor_the_person(
    server: FakeTradevestServer, other_host: FakeTradevestServer, kind: str
) -> None:
    foreign = f"http://localhost:{other_host.port}/collect"
    urls = [
        foreign,
        f"{server.url}/redirect?to={foreign}",
        other_host.url + "/same-hostname-other-port",
    ]

    async def async_calls() -> None:
        async with get_async_client(requestor_id=PERSON, follow_redirects=True) as client:
            for url in urls:
                await client.get(url)

    if kind == "async":
        asyncio.run(async_calls())
    else:
        with get_client(requestor_id=PERSON, follow_redirects=True) as client:
            for url in urls:
                client.get(url)
    assert len(other_host.api_requests) == 3  # the redirect was followed to the other host
    for request in other_host.api_requests:
        assert "Authorization" not in request.headers
        assert "Requestor-ID" not in request.headers
    (redirect,) = [r for r in server.api_requests if r.path == "/redirect"]
    assert redirect.token == server.issued_tokens[0]  # the API host itself got it


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_slow_api_times_out_by_default_and_per_request(
    settings: object, server: FakeTradevestServer, kind: str
) -> None:
    settings.TRADEVEST = {"default": server.settings(API_TIMEOUT=(1, 0.3))}  # type: ignore[attr-defined]
    tradevest_django.get_token()
    server.api_delay = 1.5

    async def async_calls() -> int:
        async with get_async_client() as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/slow")
            return (await client.get("/slow", timeout=5)).status_code

    def sync_calls() -> int:
        with get_client() as client:
            with pytest.raises(httpx.ReadTimeout):
                client.get("/slow")
            return client.get("/slow", timeout=5).status_code

    assert (asyncio.run(async_calls()) if kind == "async" else sync_calls()) == 200


def test_a_client_without_a_timeout_is_refused(server: FakeTradevestServer) -> None:
    with pytest.raises(ValueError, match="timeout"):
        get_client(timeout=None)


def test_the_auth_works_alone_in_a_users_own_client(server: FakeTradevestServer) -> None:
    with httpx.Client(auth=TradevestHttpxAuth(), timeout=5) as client:
        assert client.get(server.url + "/prices").status_code == 200
    assert server.api_requests[0].token == server.issued_tokens[0]
    assert repr(TradevestHttpxAuth()) == "<TradevestHttpxAuth alias='default'>"


def test_a_streamed_body_is_not_replayed(server: FakeTradevestServer) -> None:
    def body() -> object:
        yield b"chunk"

    with get_client() as client:
        client.get("/warm-up")
        server.revoke(server.issued_tokens[0])
        response = client.post("/upload", content=body())
    assert response.status_code == 401
    assert [r.path for r in server.api_requests].count("/upload") == 1


def test_importing_the_package_needs_no_httpx_and_the_error_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None\n"
        "import tradevest_django\n"
        "try:\n"
        "    tradevest_django.get_client()\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert 'pip install "tradevest-django[httpx]"' in result.stdout


@pytest.mark.parametrize("kind", ["requests", "httpx", "httpx-async"])
def test_every_client_reports_how_long_calls_take(server: FakeTradevestServer, kind: str) -> None:
    server.token_lifetime = 4  # a margin of 0.2 s (5 %) for calls in flight, at most 0.4 s more
    server.api_delay = 0.5
    if kind == "requests":
        with tradevest_django.get_session() as session:
            session.get("/slow")
    elif kind == "httpx":
        with get_client() as client:
            client.get("/slow")
    else:

        async def call() -> None:
            async with get_async_client() as client:
                await client.get("/slow")

        asyncio.run(call())
    assert 0.3 - 0.01 <= tradevest_django.get_manager()._lead <= 0.4  # what exceeds the margin


def test_transport_options_reach_the_transport(server: FakeTradevestServer) -> None:
    server.api_delay = 0.05

    async def calls() -> None:
        limits = httpx.Limits(max_connections=3)
        async with get_async_client(limits=limits) as client:
            await asyncio.gather(*(client.get("/prices") for _ in range(12)))

    asyncio.run(calls())
    assert server.connections_opened <= 3 + 1  # the pool's three, and the token request's
    with pytest.raises(ValueError, match="configure a transport"):
        get_client(transport=httpx.HTTPTransport(), limits=httpx.Limits(max_connections=1))


@pytest.mark.parametrize(
    "timeout", [None, httpx.Timeout(None), httpx.Timeout(5, pool=None), (1, None)]
)
def test_an_unbounded_timeout_is_refused(server: FakeTradevestServer, timeout: object) -> None:
    with pytest.raises(ValueError, match="wait for ever"):
        get_client(timeout=timeout)


def test_the_callers_hooks_are_kept_and_not_changed(server: FakeTradevestServer) -> None:
    seen: list[str] = []
    hooks = {"request": [lambda request: seen.append(str(request.url))]}
    for _ in range(2):
        with get_client(event_hooks=hooks, requestor_id=PERSON) as client:
            client.get("/prices")
    assert len(hooks["request"]) == 1  # not piled up with the client's own
    assert len(seen) == 2
    assert [r.headers["Requestor-ID"] for r in server.api_requests] == [PERSON, PERSON]
