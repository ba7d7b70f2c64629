"""A fake Tradevest auth server and protected API, served for real on loopback.

Standard library only, so it can run in any test suite, a demo, or a subprocess.
"""

from __future__ import annotations

import collections
import secrets
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

from tradevest_django.testing._http import _is_form, _Server
from tradevest_django.testing.faults import Fault
from tradevest_django.testing.records import ApiRequestRecord, TokenRequestRecord

_REQUIRED = ("grant_type", "client_id", "client_secret")


class FakeTradevestServer:
    """Tradevest's token endpoint and a tiny protected API on a real loopback HTTP/1.1 server.

    The token endpoint (``token_path``) follows the published contract strictly; every other
    path is the protected API, which wants ``Authorization: Bearer <token>``. Special API paths:
    ``/redirect?to=<url>`` answers 302 without checking the token (with ``&authenticated=1``,
    only to a valid token, 401 otherwise) and ``/status/<code>`` answers
    that status (``?retry_after=N`` adds a ``Retry-After``). Everything the server sees is
    recorded for assertions.

    ``clients`` maps each known client id to its secret, or to a tuple of secrets that are all
    accepted (a secret rotation in progress); change it at any time.

    The knobs ``token_lifetime``, ``token_delay``, ``api_delay``, ``clients``, ``date_offset``,
    ``date_header`` (``False`` sends answers without ``Date``) and ``invalid_client_status`` are
    plain attributes that may be changed at any time; they apply to requests that arrive
    afterwards. ``clock`` is the server's idea of now (token expiry, record
    times, the Date header); by default ``time.time()``, looked up at each call so freezegun moves
    it.

    ``access_log``, when set to a callable such as ``logging.getLogger(...).info``, receives one
    line per answered request: method, path, status and what decided it, with tokens as
    fingerprints and no secret (``python -m tradevest_django.testing`` prints them).

    Use it as a context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(
        self,
        *,
        client_id: str = "test-client",
        client_secret: str = "test-secret",  # noqa: S107 (a fake's well-known test credential)
        token_lifetime: int = 3600,
        token_path: str = "/oauth2/token",  # noqa: S107
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] | None = None,
        date_offset: float = 0.0,
        invalid_client_status: int = 400,
    ) -> None:
        if not token_path.startswith("/"):
            raise ValueError(f"token_path must start with '/', not {token_path!r}")
        self.client_id = client_id
        self.client_secret = client_secret
        self.clients: dict[str, str | tuple[str, ...]] = {client_id: client_secret}
        self.token_lifetime = token_lifetime
        self.token_path = token_path
        self.host = host
        self.port = port
        self.date_offset = date_offset
        self.date_header = True
        self.invalid_client_status = invalid_client_status
        self.token_delay = 0.0
        self.api_delay = 0.0
        self.access_log: Callable[[str], object] | None = None
        self._clock = clock
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._faults: collections.deque[Fault] = collections.deque()
        self._expiry: dict[str, tuple[str, float]] = {}  # token -> (client id, expires at)
        self._revoked: set[str] = set()
        self._issued: list[str] = []
        self._token_requests: list[TokenRequestRecord] = []
        self._api_requests: list[ApiRequestRecord] = []
        self._connections_opened = 0

    def __repr__(self) -> str:
        state = "running" if self._httpd is not None else "stopped"
        return f"<FakeTradevestServer {self.host}:{self.port} {state}>"

    def start(self) -> FakeTradevestServer:
        """Bind and serve in a daemon thread. ``port`` becomes the bound one, so a restart after
        ``stop()`` serves the same URL."""
        if self._httpd is not None:
            raise RuntimeError("FakeTradevestServer is already running")
        self._stopping.clear()
        self._httpd = _Server(self, self.host, self.port)
        self.port = self._httpd.server_address[1]
        # stop() waits up to one poll interval, and test suites stop a server after every test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: cut delays and hangs short, close every connection, join the threads
        (waiting at most ``timeout`` seconds in all). Does nothing when not running."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        deadline = time.monotonic() + timeout
        for t in [thread, *httpd.drop_connections()]:
            t.join(max(0.0, deadline - time.monotonic()))
        self._httpd = self._thread = None

    def __enter__(self) -> FakeTradevestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://host:port``, without a trailing slash."""
        if self.port == 0:
            raise RuntimeError("FakeTradevestServer has no port yet: call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def auth_url(self) -> str:
        """The auth server's base URL (the same as ``url``)."""
        return self.url

    @property
    def api_url(self) -> str:
        """The API's base URL (the same as ``url``)."""
        return self.url

    @property
    def token_url(self) -> str:
        """The token endpoint's full URL."""
        return self.url + self.token_path

    def settings(self, **overrides: object) -> dict[str, object]:
        """One alias's entry for the ``TRADEVEST`` setting, pointing at this server."""
        return {
            "CLIENT_ID": self.client_id,
            "CLIENT_SECRET": self.client_secret,
            "AUTH_URL": self.url,
            "API_URL": self.url,
            "TOKEN_PATH": self.token_path,
            **overrides,
        }

    def inject(self, *faults: Fault) -> None:
        """Queue scripted answers; each later request to the token path consumes the oldest."""
        with self._lock:
            self._faults.extend(faults)

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def revoke(self, access_token: str) -> None:
        """Make the API answer 401 to this token from now on."""
        with self._lock:
            self._revoked.add(access_token)

    def reset(self) -> None:
        """Forget records, counters, ``issued_tokens``, queued faults and revocations.

        Tokens issued before stay valid until they expire, as on a real server, so a client's
        cached token keeps working; a revoked one becomes valid again. The knobs are unchanged.
        """
        with self._lock:
            self._faults.clear()
            self._revoked.clear()
            self._issued.clear()
            self._token_requests.clear()
            self._api_requests.clear()
            self._connections_opened = 0

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` is true, re-checking whenever a request or connection
        arrives; return its last value. E.g. ``wait_until(lambda: s.token_request_count >= 3)``."""
        with self._lock:
            return self._lock.wait_for(predicate, timeout)

    @property
    def token_requests(self) -> list[TokenRequestRecord]:
        """Every request to the token path, oldest first."""
        with self._lock:
            return list(self._token_requests)

    @property
    def token_request_count(self) -> int:
        """How many requests reached the token path."""
        with self._lock:
            return len(self._token_requests)

    @property
    def api_requests(self) -> list[ApiRequestRecord]:
        """Every request to the API, oldest first."""
        with self._lock:
            return list(self._api_requests)

    @property
    def api_unauthorized_count(self) -> int:
        """How many API requests were answered 401."""
        with self._lock:
            return sum(1 for r in self._api_requests if r.status == 401)

    @property
    def connections_opened(self) -> int:
        """How many TCP connections were accepted (fewer than requests means keep-alive)."""
        with self._lock:
            return self._connections_opened

    @property
    def issued_tokens(self) -> list[str]:
        """Every access token issued, oldest first."""
        with self._lock:
            return list(self._issued)

    def accepted_secrets(self, client_id: str) -> tuple[str, ...]:
        """The secrets the token endpoint accepts for ``client_id`` (none if it is unknown)."""
        secret = self.clients.get(client_id, ())
        return (secret,) if isinstance(secret, str) else tuple(secret)

    def _now(self) -> float:
        return self._clock() if self._clock is not None else time.time()

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; True when stop() cut the wait short."""
        return seconds > 0 and self._stopping.wait(seconds)

    def _record_token_request(self, record: TokenRequestRecord) -> Fault | None:
        with self._lock:
            self._token_requests.append(record)
            self._lock.notify_all()
            return self._faults.popleft() if self._faults else None

    def _log(self, line: Callable[[], str]) -> None:
        """Pass the line to ``access_log``; built only when someone reads it."""
        if self.access_log is not None:
            self.access_log(line())

    def _record_api_request(self, record: ApiRequestRecord) -> None:
        with self._lock:
            self._api_requests.append(record)
            self._lock.notify_all()

    def _token_owner(self, token: str | None) -> str | None:
        with self._lock:
            client_id, expires_at = self._expiry.get(token or "", ("", 0.0))
            valid = client_id and token not in self._revoked and self._now() < expires_at
        return client_id if valid else None

    def _answer_token_request(
        self, method: str, query: str, content_type: str | None, form: dict[str, list[str]] | None
    ) -> tuple[int, dict[str, object], list[tuple[str, str]]]:
        """Status, JSON payload and extra headers of the endpoint's normal answer."""
        if method != "POST":
            return 405, {"error": "invalid_request"}, [("Allow", "POST")]
        if not _is_form(content_type) or query or form is None:
            return 400, {"error": "invalid_request"}, []
        if any(len(values) > 1 for values in form.values()):
            return 400, {"error": "invalid_request"}, []
        # RFC 6749 §3.1: a parameter sent without a value is treated as omitted.
        fields = {name: values[0] for name, values in form.items() if values[0]}
        if any(name not in fields for name in _REQUIRED):
            return 400, {"error": "invalid_request"}, []
        if fields["grant_type"] != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}, []
        given = fields["client_secret"].encode()
        if not any(
            secrets.compare_digest(accepted.encode(), given)
            for accepted in self.accepted_secrets(fields["client_id"])
        ):
            status = self.invalid_client_status
            challenge = [("WWW-Authenticate", 'Basic realm="tradevest"')] if status == 401 else []
            return status, {"error": "invalid_client"}, challenge
        token = "tvfake_" + secrets.token_urlsafe(32)
        lifetime = self.token_lifetime
        with self._lock:
            self._expiry[token] = (fields["client_id"], self._now() + lifetime)
            self._issued.append(token)
        payload: dict[str, object] = {
            "access_token": token,
            "expires_in": lifetime,
            "token_type": "Bearer",
        }
        if "scope" in form:
            payload["scope"] = form["scope"][0]
        return 200, payload, []


if __name__ == "__main__":  # python -m tradevest_django.testing.server: the same as the package
    from tradevest_django.testing.__main__ import main

    sys.exit(main())
