"""One adapter per client under test, each used the way its own documentation shows.

An adapter lives in the worker process that uses it, in three steps:

* ``load()``: imports and configuration, done before the start line so that start-up cost is
  never measured;
* ``start()``: what the client's documentation does before the first call (authlib and
  requests-oauthlib fetch a token explicitly; the others fetch on first use);
* ``caller()``: called once per thread, returns a function that makes one call to the protected
  API and returns the HTTP status. Whether threads share one client object or get their own
  follows each library's documentation (see ``docs/benchmarks.md``).

Every client sends its API calls with the same ``requests`` timeout to the same URL.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import requests

from bench.probe import TradevestProbe

#: The protected API path every client calls.
API_PATH = "/prices"
#: tradevest-django's default API_TIMEOUT, given to every client so none waits differently.
TIMEOUT = (3.05, 30.0)

#: Makes one API call for the calling thread; returns the HTTP status seen by the caller.
Call = Callable[[], int]


@dataclass(frozen=True)
class Target:
    """Where the fake Tradevest server is and how to log in to it.

    Sent to workers on stdin (never in argv, where ``ps`` shows it), and never printed.
    """

    token_url: str
    api_url: str
    client_id: str
    client_secret: str = field(repr=False)
    lifetime: float
    #: ``FakeTradevestServer.settings()``: the ``TRADEVEST['default']`` alias.
    tradevest: dict[str, Any] = field(repr=False)
    redis_url: str
    key_prefix: str

    @property
    def expiry_margin(self) -> float:
        """The early-expiry margin given to the peers.

        It is the margin tradevest-django applies itself (``min(EXPIRY_MARGIN, 5 % of the
        lifetime)``). The peers' defaults (authlib 60 s, requests-auth 30 s) are longer than a
        2 s token, which would make them fetch a token before every single call.
        """
        return min(30.0, 0.05 * self.lifetime)

    @property
    def api_endpoint(self) -> str:
        return self.api_url + API_PATH


def configure_django(target: Target) -> None:
    """Settings for tradevest-django in a worker: the fake server's alias, a Redis cache."""
    import django
    from django.conf import settings

    settings.configure(
        SECRET_KEY="bench-only-not-secret",  # the same in every process: they share keys
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": target.redis_url,
                "KEY_PREFIX": target.key_prefix,  # one per run: runs never share a token
            }
        },
        TRADEVEST={"default": target.tradevest},
        INSTALLED_APPS=["tradevest_django"],
        USE_TZ=True,
    )
    django.setup()
    # Django's RedisCache imports redis-py on first use: import it now, so that start-up
    # cost stays before the start line, as it does for the other clients.
    import redis  # noqa: F401


def authlib_options(target: Target) -> dict[str, Any]:
    """authlib's client-credentials options, the same for its requests and httpx clients."""
    return {
        "client_id": target.client_id,
        "client_secret": target.client_secret,
        "token_endpoint": target.token_url,
        "grant_type": "client_credentials",
        "token_endpoint_auth_method": "client_secret_post",
        "leeway": target.expiry_margin,
    }


class Client:
    """The interface of an adapter; subclasses override ``load``, ``start`` and ``caller``."""

    name: ClassVar[str]

    def __init__(self, target: Target) -> None:
        self.target = target
        self._sessions: list[requests.Session] = []
        #: Durations of each wait for a token, when the client lets them be timed apart from
        #: the HTTP call (``None``: not measurable from outside the library).
        self.token_waits_ns: list[int] | None = None

    def load(self) -> None:
        """Import and configure the library (no network I/O)."""

    def start(self) -> None:
        """Do what the documentation does before the first API call."""

    def caller(self) -> Call:
        raise NotImplementedError

    def measure_token_waits(self) -> None:
        """Time every wait for a token separately, if this client allows it."""

    def diagnostics(self) -> dict[str, Any]:
        """What the client reports about itself (token fetches, warnings), if it can."""
        return {}

    def close(self) -> None:
        for session in self._sessions:
            session.close()

    def _session(self, session: requests.Session) -> requests.Session:
        self._sessions.append(session)
        return session


class TradevestDjango(Client):
    """``get_session()``, one session per thread; the token is shared through Redis."""

    name = "tradevest-django"

    def load(self) -> None:
        configure_django(self.target)
        from tradevest_django import get_manager, get_session

        self._get_session = get_session
        # Watches the library through its signals, logs and lock calls, for the diagnosis of
        # a run (bench/probe.py); nothing of it is on the hot path.
        self.probe = TradevestProbe(get_manager())

    def measure_token_waits(self) -> None:
        self.token_waits_ns = self.probe.time_token_waits()

    def diagnostics(self) -> dict[str, Any]:
        return self.probe.report()

    def caller(self) -> Call:
        # A TradevestSession is for one thread (its docs); the token manager behind it is shared.
        session = self._session(self._get_session())
        return lambda: session.get(API_PATH).status_code


class Authlib(Client):
    """authlib's ``OAuth2Session`` with a client-credentials token endpoint, one per process."""

    name = "authlib"

    def load(self) -> None:
        from authlib.integrations.requests_client import (  # type: ignore[import-untyped,unused-ignore]
            OAuth2Session,
        )

        self.session: Any = self._session(
            OAuth2Session(**authlib_options(self.target), default_timeout=TIMEOUT)
        )

    def start(self) -> None:
        # The docs fetch the first token explicitly; later ones come from ensure_active_token().
        self.session.fetch_token()

    def caller(self) -> Call:
        session, url = self.session, self.target.api_endpoint
        return lambda: session.get(url).status_code


class RequestsOAuthlib(Client):
    """requests-oauthlib's ``OAuth2Session`` + ``BackendApplicationClient``, one per process.

    It has no automatic re-fetch for the client-credentials grant: as its docs show, the caller
    catches ``TokenExpiredError``, fetches a new token and retries the call.
    """

    name = "requests-oauthlib"

    def load(self) -> None:
        # oauthlib refuses plain http unless told otherwise; the fake server is loopback http.
        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
        from oauthlib.oauth2 import (  # type: ignore[import-untyped,unused-ignore]
            BackendApplicationClient,
            TokenExpiredError,
        )
        from requests_oauthlib import OAuth2Session  # type: ignore[import-untyped,unused-ignore]

        self._expired: type[Exception] = TokenExpiredError
        self.session: Any = self._session(
            OAuth2Session(client=BackendApplicationClient(client_id=self.target.client_id))
        )

    def _fetch(self) -> None:
        # include_client_id=True sends the credentials in the form body (client_secret_post),
        # which the fake endpoint reads; the default would be HTTP Basic.
        self.session.fetch_token(
            token_url=self.target.token_url,
            client_id=self.target.client_id,
            client_secret=self.target.client_secret,
            include_client_id=True,
            timeout=TIMEOUT,
        )

    def start(self) -> None:
        self._fetch()

    def caller(self) -> Call:
        session: requests.Session = self.session  # an OAuth2Session is a requests.Session
        url, expired = self.target.api_endpoint, self._expired

        def call() -> int:
            try:
                return session.get(url, timeout=TIMEOUT).status_code
            except expired:
                self._fetch()
                return session.get(url, timeout=TIMEOUT).status_code

        return call


class RequestsAuth(Client):
    """requests-auth's ``OAuth2ClientCredentials``: one auth object shared by every thread."""

    name = "requests-auth"

    def load(self) -> None:
        from requests_auth import OAuth2ClientCredentials

        self.auth = OAuth2ClientCredentials(
            self.target.token_url,
            self.target.client_id,
            self.target.client_secret,
            early_expiry=self.target.expiry_margin,
            timeout=int(TIMEOUT[1]),
        )
        # requests-auth sends the credentials only as HTTP Basic; the fake endpoint reads them
        # from the form (client_secret_post), so they are added to the form it posts too.
        self.auth.data.update(
            client_id=self.target.client_id, client_secret=self.target.client_secret
        )

    def caller(self) -> Call:
        session = self._session(requests.Session())
        session.auth = self.auth
        url = self.target.api_endpoint
        return lambda: session.get(url, timeout=TIMEOUT).status_code


class Baseline(Client):
    """A plain ``requests.Session`` sending a fixed bearer header fetched by hand once.

    Only meaningful while that one token lives: it is the floor for the overhead scenario.
    """

    name = "baseline"

    def start(self) -> None:
        response = requests.post(
            self.target.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": self.target.client_id,
                "client_secret": self.target.client_secret,
            },
            timeout=TIMEOUT,
        )
        response.raise_for_status()
        self._authorization = f"Bearer {response.json()['access_token']}"

    def caller(self) -> Call:
        session = self._session(requests.Session())
        session.headers["Authorization"] = self._authorization
        url = self.target.api_endpoint
        return lambda: session.get(url, timeout=TIMEOUT).status_code


CLIENTS: dict[str, type[Client]] = {
    cls.name: cls for cls in (TradevestDjango, Authlib, RequestsOAuthlib, RequestsAuth, Baseline)
}
#: The clients that manage tokens themselves (the baseline cannot survive an expiry).
PEERS = ("authlib", "requests-oauthlib", "requests-auth")
TOKEN_CLIENTS = ("tradevest-django", *PEERS)
