"""``requests`` sessions for the Tradevest API: bearer auth, base URL, timeouts, retries.

::

    from tradevest_django import get_session

    with get_session(requestor_id=person_id) as session:
        response = session.get("/prices", params={"isin": "DE0005140008"})

A session is for one thread: make one per view call or per task (the ``with`` block closes its
connections), or keep one per thread. It notices when it is used in a forked child and opens
new connections there, so one made before Celery forks its workers is still safe to use.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util import Retry

from .api import get_manager
from .apihost import REQUESTOR_ID_HEADER, ApiHost, validated_requestor_id
from .conf import AliasConfig
from .exceptions import TradevestConfigurationError
from .manager import TokenManager
from .tokens import Token

__all__ = ["TradevestAuth", "TradevestSession", "get_session"]

#: The longest ``Retry-After`` a retried API call sleeps for; a longer one is returned at once.
MAX_RETRY_AFTER = 10.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class TradevestAuth(AuthBase):
    """Adds ``Authorization: Bearer <token>`` to requests for the alias's API host.

    The token is taken from the token manager when each request is sent, so a long-lived
    session never sends an expired one. Requests to any other host (or redirected to one) never
    get the token. After a 401 from the API the rejected token is invalidated and the request
    is sent once more with a fresh token, when its body can be replayed; a second 401 is
    returned as it is. Usable alone: ``requests.get(url, auth=TradevestAuth(), timeout=10)``.
    """

    def __init__(
        self,
        alias: str = "default",
        *,
        requestor_id: uuid.UUID | str | None = None,
        manager: TokenManager | None = None,
    ):
        self.alias = alias
        self.requestor_id = validated_requestor_id(requestor_id)
        self._manager = manager
        self._clock_checked = False
        self._api: tuple[AliasConfig, ApiHost] | None = None

    @property
    def manager(self) -> TokenManager:
        return self._manager if self._manager is not None else get_manager(self.alias)

    def __repr__(self) -> str:
        return f"<TradevestAuth alias={self.alias!r}>"

    def is_api_url(self, url: str | None) -> bool:
        """Whether ``url`` is on the alias's API host (same scheme, host and port)."""
        config = self.manager.config
        if self._api is None or self._api[0] is not config:
            self._api = (config, ApiHost(config.api_url))
        return self._api[1].matches(url)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if not self.is_api_url(request.url):
            return request
        self._authorize(request, self.manager.get_token())
        if self.requestor_id and REQUESTOR_ID_HEADER not in request.headers:
            request.headers[REQUESTOR_ID_HEADER] = self.requestor_id
        if self._on_response not in request.hooks["response"]:  # redirects share the hooks
            request.register_hook("response", self._on_response)  # type: ignore[no-untyped-call]
        return request

    @staticmethod
    def _authorize(request: requests.PreparedRequest, token: Token) -> None:
        request.headers["Authorization"] = token.authorization
        request._tradevest_token = token  # type: ignore[attr-defined]
        request._tradevest_taken = time.monotonic()  # type: ignore[attr-defined]

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        taken = getattr(response.request, "_tradevest_taken", None)
        if taken is not None:
            self.manager.observe_in_flight(time.monotonic() - taken)
        status = response.status_code
        if status != 401 and status not in _REDIRECTS and self._clock_checked:
            return response  # the common case, on every call: nothing to do
        request = response.request
        if response.is_redirect and not self.is_api_url(
            urljoin(response.url, response.headers["Location"])
        ):
            # requests strips only Authorization when a redirect leaves the host; the next hop
            # is copied from this request, so the person's id goes too.
            request.headers.pop(REQUESTOR_ID_HEADER, None)
        # Only requests this auth sent to the API host carry a token (redirect copies do not).
        token: Token | None = getattr(request, "_tradevest_token", None)
        if token is None:
            return response
        if not self._clock_checked:
            # Once per session (401s go through invalidate below): a host whose clock is off
            # judges expiry by Tradevest's clock without a token request of its own.
            self._clock_checked = True
            self.manager.observe_server_date(
                response.headers.get("Date"), round_trip=response.elapsed.total_seconds()
            )
        if status != 401:
            return response
        if not self._reject(token, response):
            return response  # the fleet is cooling down after fresh tokens were rejected
        if not isinstance(request.body, bytes | str | type(None)):
            return response  # a stream cannot be sent twice
        response.content  # noqa: B018 - read the body so the connection returns to the pool
        response.close()
        retry = request.copy()
        fresh = self.manager.get_token()
        self._authorize(retry, fresh)
        # The adapter's send() runs no hooks: this method does not see the replay's answer.
        new_response: requests.Response = response.connection.send(retry, **kwargs)
        new_response.history.append(response)
        new_response.request = retry
        if new_response.status_code == 401:
            # The fresh token was refused too: the caller sees this 401, and the manager is
            # told, so that a 401 no token fixes stops costing token requests.
            self._reject(fresh, new_response)
        return new_response

    def _reject(self, token: Token, response: requests.Response) -> bool:
        """Tell the manager the API refused ``token``; whether it was dropped (replay)."""
        return self.manager.invalidate(
            token,
            reason=f"rejected by the API (401 for {response.request.method})",
            server_date=response.headers.get("Date"),
        )


class _Retry(Retry):
    """urllib3's ``Retry``, but a ``Retry-After`` longer than the session waits ends the retries.

    The response that asked for the long wait is returned to the caller at once: sleeping part
    of the wait and asking again would only be refused again.
    """

    def increment(  # type: ignore[override]
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        if response is not None:
            wait = self.get_retry_after(response)
            if wait is not None and wait > MAX_RETRY_AFTER:
                raise MaxRetryError(_pool, url or "", ResponseError("Retry-After too long"))
        return super().increment(method, url, response, error, _pool, _stacktrace)


class _TimeoutAdapter(HTTPAdapter):
    """An adapter that never sends without a timeout (also for redirects and ``send()``)."""

    def __init__(self, timeout: tuple[float, float], **kwargs: Any):
        self.default_timeout = timeout
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().send(request, **kwargs)


class TradevestSession(requests.Session):
    """A ``requests.Session`` for one alias's API; build it with :func:`get_session`.

    * relative URLs (``"/prices"``) are appended to the alias's ``API_URL``;
    * every request has a timeout (``API_TIMEOUT`` unless the call passes one);
    * idempotent requests are retried (``API_RETRIES``) on connection errors and 502/503/504,
      with exponential back-off and ``Retry-After``; POST is never retried, and neither is a
      read timeout (the server may be working on the request);
    * keep-alive connections are reused; after ``fork()`` the child opens its own.
    """

    def __init__(self, config: AliasConfig, auth: TradevestAuth):
        super().__init__()
        self.config = config
        self.auth = auth
        self.headers["Accept"] = "application/json"
        self._mount_adapters()

    def _mount_adapters(self) -> None:
        for adapter in self.adapters.values():
            adapter.close()
        retry = _Retry(
            total=self.config.api_retries,
            connect=self.config.api_retries,
            # A read timeout means the server has the request: sending it again doubles the
            # wait and risks doing it twice. False re-raises it as requests.ReadTimeout.
            read=False,
            status=self.config.api_retries,
            status_forcelist=(502, 503, 504),
            allowed_methods=Retry.DEFAULT_ALLOWED_METHODS,
            backoff_factor=0.25,
            backoff_max=4.0,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        for prefix in ("https://", "http://"):
            self.mount(prefix, _TimeoutAdapter(self.config.api_timeout, max_retries=retry))
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<TradevestSession alias={self.config.alias!r} api_url={self.config.api_url!r}>"

    def api_url(self, url: str) -> str:
        """``url`` itself when absolute, else joined to the alias's ``API_URL``."""
        if url[:8].lower().startswith(("https://", "http://")):  # requests speaks nothing else
            return url
        if not self.config.api_url:
            raise TradevestConfigurationError(
                f"Cannot request the relative URL {url!r}: TRADEVEST[{self.config.alias!r}] has "
                "no API_URL. Set ENVIRONMENT (or API_URL), or pass an absolute URL.",
                alias=self.config.alias,
                key="API_URL",
            )
        return f"{self.config.api_url}/{url.lstrip('/')}"

    def request(
        self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any
    ) -> requests.Response:
        if isinstance(url, bytes):
            url = url.decode()
        return super().request(method, self.api_url(url), *args, **kwargs)

    def rebuild_auth(
        self, prepared_request: requests.PreparedRequest, response: requests.Response
    ) -> None:
        """On a redirect: the token and ``Requestor-ID`` go only to the API host.

        requests strips ``Authorization`` when a redirect changes host; a redirect chain that
        comes back to the API host gets them again (with the current token).
        """
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]
        auth = self.auth
        if not isinstance(auth, TradevestAuth):
            return
        if auth.is_api_url(prepared_request.url):
            auth(prepared_request)
        else:
            prepared_request.headers.pop(REQUESTOR_ID_HEADER, None)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if self._pid != os.getpid():
            # Forked: the parent's sockets are shared with it. Drop them (closing only our
            # copies) and open new ones in this process.
            self._mount_adapters()
        return super().send(request, **kwargs)


def get_session(
    alias: str = "default",
    *,
    requestor_id: uuid.UUID | str | None = None,
    headers: Mapping[str, str] | None = None,
) -> TradevestSession:
    """Return a new :class:`TradevestSession` for ``alias``, ready for the Tradevest API.

    ``requestor_id`` (the UUID of the natural person acting) is sent as ``Requestor-ID`` on
    every API request of the session; it has nothing to do with the token.

    Raises:
        TradevestConfigurationError: the alias is not configured correctly.
        ValueError: ``requestor_id`` is not a UUID.
    """
    manager = get_manager(alias)
    session = TradevestSession(
        manager.config, TradevestAuth(alias, requestor_id=requestor_id, manager=manager)
    )
    if headers:
        session.headers.update(headers)
    return session
