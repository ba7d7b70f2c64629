"""httpx clients for the Tradevest API, sync and async: ``pip install "tradevest-django[httpx]"``.

::

    from tradevest_django import get_async_client

    async with get_async_client(requestor_id=person_id) as client:
        response = await client.get("/prices", params={"isin": "DE0005140008"})

:class:`TradevestHttpxAuth` holds the rules once, in :meth:`TradevestHttpxAuth.steps`, a
generator that says what to do next (take a token, send the request, report a 401) without
doing any I/O itself; ``sync_auth_flow`` and ``async_auth_flow`` only carry the steps out, the
first with :meth:`TokenManager.get_token`, the second with :meth:`TokenManager.aget_token`,
which never blocks the event loop.
"""

from __future__ import annotations

import functools
import ssl
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any

try:
    import httpx
except ImportError as err:  # pragma: no cover - exercised in a subprocess without httpx
    raise ImportError(
        'The httpx clients of tradevest-django need httpx: pip install "tradevest-django[httpx]"'
    ) from err

from .api import get_manager
from .apihost import REQUESTOR_ID_HEADER, ApiHost, validated_requestor_id
from .conf import AliasConfig
from .manager import TokenManager
from .tokens import Token

__all__ = ["TradevestHttpxAuth", "get_async_client", "get_client"]


class _TakeToken:
    """Step: give the flow a valid token (``get_token()`` / ``aget_token()``)."""


@dataclass(frozen=True)
class _Rejected:
    """Step: the API rejected ``token``; give the flow ``invalidate()``'s answer."""

    token: Token
    response: httpx.Response


_TAKE_TOKEN = _TakeToken()
_Step = httpx.Request | _TakeToken | _Rejected


class TradevestHttpxAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` for requests to the alias's API host, for httpx.

    The same rules as :class:`~tradevest_django.TradevestAuth` for ``requests``: the token is
    taken when each request is sent, only requests to the API host get it, and after a 401 the
    rejected token is invalidated and the request sent once more with a fresh token (unless the
    fleet is cooling down after fresh tokens were rejected too, or the body cannot be sent
    twice). Works with ``httpx.Client`` and ``httpx.AsyncClient`` alike::

        httpx.AsyncClient(auth=TradevestHttpxAuth(), timeout=10)
    """

    def __init__(self, alias: str = "default", *, manager: TokenManager | None = None):
        self.alias = alias
        self._manager = manager
        self._api: tuple[AliasConfig, ApiHost] | None = None
        self._clock_checked = False

    def __repr__(self) -> str:
        return f"<TradevestHttpxAuth alias={self.alias!r}>"

    @property
    def manager(self) -> TokenManager:
        return self._manager if self._manager is not None else get_manager(self.alias)

    def is_api_url(self, url: str | httpx.URL) -> bool:
        """Whether ``url`` is on the alias's API host (same scheme, host and port)."""
        config = self.manager.config
        if self._api is None or self._api[0] is not config:
            self._api = (config, ApiHost(config.api_url))
        return self._api[1].matches(str(url))

    def steps(self, request: httpx.Request) -> Generator[_Step, Any, None]:
        """The rules, as steps for a driver: no I/O here.

        Yields a request to send (and receives its response), :data:`_TAKE_TOKEN` (receives a
        token) or a :class:`_Rejected` (receives whether the token was dropped).
        """
        if not self.is_api_url(request.url):
            yield request
            return
        token: Token = yield _TAKE_TOKEN
        request.headers["Authorization"] = token.authorization
        taken = time.monotonic()
        response: httpx.Response = yield request
        self.manager.observe_in_flight(time.monotonic() - taken)
        if not self._clock_checked:
            self._clock_checked = True  # once per auth: 401s pass their Date to invalidate()
            self.manager.observe_server_date(
                response.headers.get("Date"), round_trip=_elapsed(response)
            )
        if response.status_code != 401 or not self.is_api_url(response.request.url):
            return  # only the API's own 401 (not one from where a redirect led) rejects the token
        dropped: bool = yield _Rejected(token, response)
        if not dropped or not isinstance(request.stream, httpx.ByteStream):
            return  # cooling down, or a streamed body that cannot be sent twice
        token = yield _TAKE_TOKEN
        request.headers["Authorization"] = token.authorization
        taken = time.monotonic()
        response = yield request
        self.manager.observe_in_flight(time.monotonic() - taken)
        if response.status_code == 401:
            yield _Rejected(token, response)  # a fresh token rejected too: the manager decides

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        steps = self.steps(request)
        answer: Any = None
        while True:
            try:
                step = steps.send(answer)
            except StopIteration:
                return
            if isinstance(step, httpx.Request):
                answer = yield step
            elif isinstance(step, _TakeToken):
                answer = self.manager.get_token()
            else:
                answer = self.manager.invalidate(step.token, **_rejection(step))

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        steps = self.steps(request)
        answer: Any = None
        while True:
            try:
                step = steps.send(answer)
            except StopIteration:
                return
            if isinstance(step, httpx.Request):
                answer = yield step
            elif isinstance(step, _TakeToken):
                answer = await self.manager.aget_token()
            else:
                answer = await self.manager.ainvalidate(step.token, **_rejection(step))


def _rejection(step: _Rejected) -> dict[str, Any]:
    method = step.response.request.method
    return {
        "reason": f"rejected by the API (401 for {method})",
        "server_date": step.response.headers.get("Date"),
    }


def _elapsed(response: httpx.Response) -> float:
    try:
        return response.elapsed.total_seconds()
    except RuntimeError:  # not read yet: no round trip to allow for
        return 0.0


#: httpx.Client arguments that configure the default transport; they go to ours.
_TRANSPORT_OPTIONS = ("verify", "cert", "http1", "http2", "limits", "trust_env")


def _client_options(
    alias: str, requestor_id: uuid.UUID | str | None, options: dict[str, Any], *, is_async: bool
) -> dict[str, Any]:
    """The keyword arguments of the httpx client: ours, overridden by the caller's."""
    manager = get_manager(alias)
    config = manager.config
    auth = TradevestHttpxAuth(alias, manager=manager)
    person = validated_requestor_id(requestor_id)
    options = dict(options)
    _refuse_unbounded(options.get("timeout", 0))
    connect, read = config.api_timeout
    client: dict[str, Any] = {
        "auth": auth,
        # A request that waits for a pooled connection waits as long as for an answer.
        "timeout": httpx.Timeout(connect=connect, read=read, write=read, pool=read),
        "headers": {"Accept": "application/json", "User-Agent": _user_agent()},
    }
    if config.api_url:
        client["base_url"] = config.api_url + "/"
    transport_options = {key: options.pop(key) for key in _TRANSPORT_OPTIONS if key in options}
    if "transport" not in options:
        transport_options.setdefault("verify", _ssl_context())
        transport_cls = httpx.AsyncHTTPTransport if is_async else httpx.HTTPTransport
        client["transport"] = transport_cls(retries=config.api_retries, **transport_options)
    elif transport_options:
        raise ValueError(
            f"{', '.join(transport_options)} configure a transport: pass them to the transport "
            "you give, or give no transport."
        )
    hooks = {name: list(found) for name, found in options.pop("event_hooks", {}).items()}
    if person is not None:  # without a person there is nothing to add or strip on any hop
        hop = _person_hook(auth, person)
        if is_async:

            async def async_hop(request: httpx.Request) -> None:
                hop(request)

            hooks["request"] = [async_hop, *hooks.get("request", [])]
        else:
            hooks["request"] = [hop, *hooks.get("request", [])]
    return {**client, **options, "event_hooks": hooks}


def _refuse_unbounded(timeout: object) -> None:
    parts: tuple[object, ...] = (timeout,)
    if isinstance(timeout, httpx.Timeout):
        parts = (timeout.connect, timeout.read, timeout.write, timeout.pool)
    elif isinstance(timeout, tuple):
        parts = timeout
    if any(part is None for part in parts):
        raise ValueError(
            "A timeout of None would let a request wait for ever: give every part a number "
            "of seconds (or leave timeout out for API_TIMEOUT)."
        )


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # httpx builds one per transport (the CA bundle loaded each time, milliseconds of CPU):
    # one for every client of the process. An SSLContext is thread-safe and tied to no loop.
    return httpx.create_ssl_context()


def _user_agent() -> str:
    from ._version import __version__

    return f"tradevest-django/{__version__} python-httpx/{httpx.__version__}"


def _person_hook(auth: TradevestHttpxAuth, person: str) -> Callable[[httpx.Request], None]:
    def hop(request: httpx.Request) -> None:
        # Every request and every redirect hop: the person's id goes to the API host only.
        if auth.is_api_url(request.url):
            request.headers.setdefault(REQUESTOR_ID_HEADER, person)
        elif request.headers.get(REQUESTOR_ID_HEADER) == person:
            del request.headers[REQUESTOR_ID_HEADER]

    return hop


def get_client(
    alias: str = "default",
    *,
    requestor_id: uuid.UUID | str | None = None,
    **httpx_kwargs: Any,
) -> httpx.Client:
    """An ``httpx.Client`` for the alias's API: base URL, timeouts, token, ``Requestor-ID``.

    ``httpx_kwargs`` go to ``httpx.Client`` and win over the defaults. ``timeout`` may not
    contain ``None``; ``limits``, ``verify``, ``cert``, ``http1``, ``http2`` and ``trust_env``
    configure the transport, which retries connection failures ``API_RETRIES`` times (unless
    you give a ``transport`` of your own). Close the client (``with``) when done.

    Raises:
        TradevestConfigurationError: the alias is not configured correctly.
        ValueError: ``requestor_id`` is not a UUID, or a timeout is ``None``.
    """
    return httpx.Client(**_client_options(alias, requestor_id, httpx_kwargs, is_async=False))


def get_async_client(
    alias: str = "default",
    *,
    requestor_id: uuid.UUID | str | None = None,
    **httpx_kwargs: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for the alias's API, like :func:`get_client`.

    Taking a token never blocks the event loop (see :meth:`TokenManager.aget_token`). A client
    belongs to one event loop: make one per loop (per request, or per task), not one per process.
    """
    return httpx.AsyncClient(**_client_options(alias, requestor_id, httpx_kwargs, is_async=True))
