"""Async adapters: one per client under test on an ``httpx.AsyncClient``, used as documented.

The same three steps as ``bench/clients.py``, on the worker's event loop: ``load()`` imports,
configures and builds the client (before the start line), ``start()`` does what the
documentation does before the first call, and ``caller()`` returns a coroutine function making
one API call and returning the HTTP status. Every coroutine of a process shares the process's
one ``httpx.AsyncClient``, as httpx recommends; its pool holds ``connections`` connections
(``httpx.Limits``), and the worker lets no more calls than that be in flight at once.

With ``per_caller``, each coroutine gets its own client instead (as an application that opens a
client per task does). The async boundary uses that: on a shared pool, httpcore (1.0.9) lets a
request that was handed an idle connection lose it to a request that arrives just after; the
loser retries, may lose again, and a bare ``httpx.AsyncClient`` with a fixed header then has a
few calls a run that wait 150 to 500 ms for a connection before sending anything. Those waits
belong to the pool, not to any token, and would hide what the scenario measures.

Every client gets the same timeouts (``timeout()``) and the same pool limits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import httpx

from bench.clients import API_PATH, TIMEOUT, Target, authlib_options, configure_django
from bench.probe import TradevestProbe

#: Makes one API call; returns the HTTP status seen by the caller.
AsyncCall = Callable[[], Awaitable[int]]


def timeout() -> httpx.Timeout:
    """tradevest-django's default ``API_TIMEOUT`` as its httpx clients apply it, for everyone."""
    connect, read = TIMEOUT
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


class AsyncClient:
    """The interface of an async adapter; subclasses override ``load``, ``start``, ``caller``."""

    name: ClassVar[str]

    def __init__(self, target: Target, *, connections: int, per_caller: bool = False) -> None:
        self.target = target
        self.connections = connections
        self.per_caller = per_caller
        self._clients: list[httpx.AsyncClient] = []
        #: As in ``bench/clients.py``: each wait for a token, where it can be timed apart.
        self.token_waits_ns: list[int] | None = None

    def load(self) -> None:
        """Import, configure and build the process's shared client (no network I/O)."""
        self.configure()
        if not self.per_caller:
            self._client(self.build())

    def configure(self) -> None:
        """Import and configure what ``build()`` needs."""

    def build(self) -> httpx.AsyncClient:
        """One client, as the documentation builds it."""
        raise NotImplementedError

    def endpoint(self) -> str:
        """The URL each call requests."""
        return self.target.api_endpoint

    async def start(self) -> None:
        """Do what the documentation does before the first API call (every caller exists)."""

    def caller(self) -> AsyncCall:
        client = self._client(self.build()) if self.per_caller else self._clients[0]
        return _get(client, self.endpoint())

    def measure_token_waits(self) -> None:
        """Time every wait for a token separately, if this client allows it."""

    def diagnostics(self) -> dict[str, Any]:
        return {}

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    def limits(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.connections, max_keepalive_connections=self.connections
        )

    def _client(self, client: httpx.AsyncClient) -> httpx.AsyncClient:
        self._clients.append(client)
        return client


def _get(client: httpx.AsyncClient, url: str) -> AsyncCall:
    async def call() -> int:
        return (await client.get(url)).status_code

    return call


class TradevestDjango(AsyncClient):
    """``get_async_client(limits=...)``: one per process; the token is shared through Redis."""

    name = "tradevest-django"

    def configure(self) -> None:
        configure_django(self.target)
        from tradevest_django import get_manager

        self.probe = TradevestProbe(get_manager())

    def build(self) -> httpx.AsyncClient:
        from tradevest_django import get_async_client

        # Its own defaults (base URL, timeouts, transport retries); the pool size as an
        # application would give it to any httpx client.
        return get_async_client(limits=self.limits())

    def endpoint(self) -> str:
        return API_PATH

    def measure_token_waits(self) -> None:
        self.token_waits_ns = self.probe.time_async_token_waits()

    def diagnostics(self) -> dict[str, Any]:
        return self.probe.report()


class Authlib(AsyncClient):
    """authlib's ``AsyncOAuth2Client`` with a client-credentials token endpoint, one per process.

    As its docs show: ``fetch_token()`` once, after which ``ensure_active_token()`` (run by
    every request, under an ``anyio.Lock``) fetches a new token when the current one expired.
    """

    name = "authlib"

    def build(self) -> httpx.AsyncClient:
        from authlib.integrations.httpx_client import (  # type: ignore[import-untyped,unused-ignore]
            AsyncOAuth2Client,
        )

        client: httpx.AsyncClient = AsyncOAuth2Client(
            **authlib_options(self.target), timeout=timeout(), limits=self.limits()
        )
        return client

    async def start(self) -> None:
        for client in self._clients:
            await client.fetch_token()  # type: ignore[attr-defined]


class HttpxAuth(AsyncClient):
    """httpx-auth's ``OAuth2ClientCredentials`` as the ``auth`` of an ``httpx.AsyncClient``.

    Its ``auth_flow`` is synchronous: the token request runs on a blocking ``httpx.Client``
    inside the event loop (the async boundary's loop lag shows it).
    """

    name = "httpx-auth"

    def configure(self) -> None:
        from httpx_auth import OAuth2ClientCredentials

        self.auth = OAuth2ClientCredentials(
            self.target.token_url,
            self.target.client_id,
            self.target.client_secret,
            early_expiry=self.target.expiry_margin,
            timeout=int(TIMEOUT[1]),
        )
        # Like requests-auth, it sends the credentials only as HTTP Basic; the fake endpoint
        # reads the form, so they go there too (after construction: its cache key is unchanged).
        self.auth.data.update(
            client_id=self.target.client_id, client_secret=self.target.client_secret
        )

    def build(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(auth=self.auth, timeout=timeout(), limits=self.limits())


class Baseline(AsyncClient):
    """A bare ``httpx.AsyncClient`` with a fixed bearer header fetched by hand once.

    Only meaningful while that one token lives: the floor for the async overhead scenario. It is
    configured for the API as ``get_async_client()`` is, a ``base_url`` and relative paths:
    httpx's merging of a relative URL into ``base_url`` costs about 7 % of a loopback call by
    itself, so a baseline with absolute URLs would charge httpx's URL handling to the token.
    """

    name = "baseline"

    async def start(self) -> None:
        async with httpx.AsyncClient(timeout=timeout()) as fetcher:
            response = await fetcher.post(
                self.target.token_url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.target.client_id,
                    "client_secret": self.target.client_secret,
                },
            )
        response.raise_for_status()
        for client in self._clients:
            client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def build(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.target.api_url + "/", timeout=timeout(), limits=self.limits()
        )

    def endpoint(self) -> str:
        return API_PATH


ASYNC_CLIENTS: dict[str, type[AsyncClient]] = {
    cls.name: cls for cls in (TradevestDjango, Authlib, HttpxAuth, Baseline)
}
#: The async clients that manage tokens themselves.
ASYNC_TOKEN_CLIENTS = ("tradevest-django", "authlib", "httpx-auth")
