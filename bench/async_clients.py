"""Async adapters: one per client under test on an ``httpx.AsyncClient``, used as documented.

The same three steps as ``bench/clients.py``, on the worker's event loop: ``load()`` imports,
configures and builds the client (before the start line), ``start()`` does what the
documentation does before the first call, and ``caller()`` returns a coroutine function making
one API call and returning the HTTP status. Every coroutine of a process shares the process's
one ``httpx.AsyncClient``, as httpx recommends; its pool holds ``connections`` connections
(``httpx.Limits``), and the worker lets no more calls than that be in flight at once.

Every client gets the same timeouts (``timeout()``) and the same pool limits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import httpx

from bench.clients import API_PATH, TIMEOUT, Target, configure_django
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

    def __init__(self, target: Target, *, connections: int) -> None:
        self.target = target
        self.connections = connections
        self._clients: list[httpx.AsyncClient] = []
        #: As in ``bench/clients.py``: each wait for a token, where it can be timed apart.
        self.token_waits_ns: list[int] | None = None

    def load(self) -> None:
        """Import, configure and build the client (no network I/O)."""

    async def start(self) -> None:
        """Do what the documentation does before the first API call."""

    def caller(self) -> AsyncCall:
        raise NotImplementedError

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

    def load(self) -> None:
        configure_django(self.target)
        from tradevest_django import get_async_client, get_manager

        # Its own defaults (base URL, timeouts, transport retries); the pool size as an
        # application would give it to any httpx client.
        self.client = self._client(get_async_client(limits=self.limits()))
        self.probe = TradevestProbe(get_manager())

    def measure_token_waits(self) -> None:
        self.token_waits_ns = self.probe.time_async_token_waits()

    def diagnostics(self) -> dict[str, Any]:
        return self.probe.report()

    def caller(self) -> AsyncCall:
        return _get(self.client, API_PATH)


class Authlib(AsyncClient):
    """authlib's ``AsyncOAuth2Client`` with a client-credentials token endpoint, one per process.

    As its docs show: ``fetch_token()`` once, after which ``ensure_active_token()`` (run by
    every request, under an ``anyio.Lock``) fetches a new token when the current one expired.
    """

    name = "authlib"

    def load(self) -> None:
        from authlib.integrations.httpx_client import (  # type: ignore[import-untyped,unused-ignore]
            AsyncOAuth2Client,
        )

        self.client: Any = self._client(
            AsyncOAuth2Client(
                self.target.client_id,
                self.target.client_secret,
                token_endpoint=self.target.token_url,
                grant_type="client_credentials",
                token_endpoint_auth_method="client_secret_post",
                leeway=self.target.expiry_margin,
                timeout=timeout(),
                limits=self.limits(),
            )
        )

    async def start(self) -> None:
        await self.client.fetch_token()

    def caller(self) -> AsyncCall:
        return _get(self.client, self.target.api_endpoint)


class HttpxAuth(AsyncClient):
    """httpx-auth's ``OAuth2ClientCredentials`` as the ``auth`` of an ``httpx.AsyncClient``.

    Its ``auth_flow`` is synchronous: the token request runs on a blocking ``httpx.Client``
    inside the event loop (the async boundary's loop lag shows it).
    """

    name = "httpx-auth"

    def load(self) -> None:
        from httpx_auth import OAuth2ClientCredentials

        auth = OAuth2ClientCredentials(
            self.target.token_url,
            self.target.client_id,
            self.target.client_secret,
            early_expiry=self.target.expiry_margin,
            timeout=int(TIMEOUT[1]),
        )
        # Like requests-auth, it sends the credentials only as HTTP Basic; the fake endpoint
        # reads the form, so they go there too (after construction: its cache key is unchanged).
        auth.data.update(client_id=self.target.client_id, client_secret=self.target.client_secret)
        self.client = self._client(
            httpx.AsyncClient(auth=auth, timeout=timeout(), limits=self.limits())
        )

    def caller(self) -> AsyncCall:
        return _get(self.client, self.target.api_endpoint)


class Baseline(AsyncClient):
    """A bare ``httpx.AsyncClient`` with a fixed bearer header fetched by hand once.

    Only meaningful while that one token lives: the floor for the async overhead scenario.
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
        authorization = f"Bearer {response.json()['access_token']}"
        self.client = self._client(
            httpx.AsyncClient(
                headers={"Authorization": authorization}, timeout=timeout(), limits=self.limits()
            )
        )

    def caller(self) -> AsyncCall:
        return _get(self.client, self.target.api_endpoint)


ASYNC_CLIENTS: dict[str, type[AsyncClient]] = {
    cls.name: cls for cls in (TradevestDjango, Authlib, HttpxAuth, Baseline)
}
#: The async clients that manage tokens themselves.
ASYNC_TOKEN_CLIENTS = ("tradevest-django", "authlib", "httpx-auth")
