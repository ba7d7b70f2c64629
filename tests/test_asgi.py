"""Async views under a real ASGI server: uvicorn, in a thread of this process, on loopback.

Django's settings are this process's (``tests.settings``, changed through the ``settings``
fixture), so the server sees the fake Tradevest server and a local-memory cache; the views are
in ``tests.asgi_urls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from django.core.asgi import get_asgi_application
from django.core.cache import caches

from tests import asgi_urls
from tradevest_django.testing import FakeTradevestServer
from tradevest_django.tokens import fingerprint

pytestmark = pytest.mark.slow

BACKLOG = 512


class _Server(uvicorn.Server):
    """A uvicorn server that says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yield its URL, then stop it."""
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every answer on a kept-alive connection waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",  # Django speaks no lifespan
        ws="none",
        log_config=None,  # the suite's handlers see uvicorn's records like any others
        access_log=False,
        backlog=BACKLOG,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        assert server.listening.wait(timeout=10), "uvicorn did not start within 10 s"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop within 10 s"


@pytest.fixture
def server(tradevest_settings: FakeTradevestServer) -> FakeTradevestServer:
    return tradevest_settings


@pytest.fixture
def asgi_url(settings: Any, server: FakeTradevestServer) -> Iterator[str]:
    """The URL of uvicorn serving ``tests.asgi_urls``, with an empty local-memory cache."""
    settings.ROOT_URLCONF = "tests.asgi_urls"
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "tradevest-test-asgi",
        }
    }
    caches["default"].clear()  # local memory outlives a test: a port used again finds its token
    asgi_urls.gate = asgi_urls.Gate()
    with serving(get_asgi_application()) as url:
        yield url


@pytest.mark.parametrize(
    ("path", "callers"),
    [
        ("/token/", 200),  # aget_token()
        ("/prices/", 40),  # a get_async_client() per request, as in the example project
    ],
)
def test_concurrent_requests_on_a_cold_cache_make_one_token_request(
    asgi_url: str, server: FakeTradevestServer, path: str, callers: int
) -> None:
    server.token_delay = 0.2

    async def scenario() -> tuple[bool, list[httpx.Response]]:
        limits = httpx.Limits(max_connections=callers)
        async with httpx.AsyncClient(base_url=asgi_url, limits=limits, timeout=30) as client:
            calls = [
                asyncio.create_task(client.get(path, params={"gated": 1})) for _ in range(callers)
            ]
            # Every request inside the view before any of them asks for a token.
            gate = asgi_urls.gate
            all_in = await asyncio.to_thread(gate.wait_for_callers, callers, 20)
            gate.open()
            return all_in, await asyncio.gather(*calls)

    all_in, responses = asyncio.run(scenario())
    assert all_in, f"not all {callers} requests reached the view within 20 s"
    assert [r.status_code for r in responses] == [200] * callers
    assert server.token_request_count == 1
    if path == "/token/":
        issued = fingerprint(server.issued_tokens[0])
        assert {r.json()["fingerprint"] for r in responses} == {issued}
    else:
        assert {r.json()["status"] for r in responses} == {200}  # the fake API's answers
        api = server.api_requests
        assert len(api) == callers and {r.token for r in api} == {server.issued_tokens[0]}


def test_the_server_answers_while_a_token_request_is_pending(
    asgi_url: str, server: FakeTradevestServer
) -> None:
    server.token_delay = 1.0

    async def scenario() -> tuple[list[float], bool, httpx.Response]:
        async with httpx.AsyncClient(base_url=asgi_url, timeout=30) as client:
            assert (await client.get("/health/")).text == "ok"  # connected and warm
            waiting = asyncio.create_task(client.get("/token/"))
            arrived = await asyncio.to_thread(
                server.wait_until, lambda: server.token_request_count == 1, 10
            )
            assert arrived, "the token request did not reach the fake server within 10 s"
            latencies = []
            for _ in range(5):
                started = time.monotonic()
                response = await client.get("/health/")
                latencies.append(time.monotonic() - started)
                assert response.status_code == 200
            pending = not waiting.done()
            return latencies, pending, await waiting

    latencies, pending, answer = asyncio.run(scenario())
    assert pending, "the token came before the health checks were answered"
    assert max(latencies) < 0.1, f"the server stalled {max(latencies) * 1000:.0f} ms"
    assert answer.status_code == 200
    assert answer.json()["fingerprint"]
    assert server.token_request_count == 1
