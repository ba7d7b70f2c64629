"""A fake Tradevest auth server and protected API, served for real on loopback.

Standard library only, so it can run in any test suite, a demo, or a subprocess.
"""

from __future__ import annotations

import collections
import contextlib
import json
import secrets
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

from tradevest_django.testing.faults import Fault

_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))
_REQUIRED = ("grant_type", "client_id", "client_secret")


class Headers(Mapping[str, str]):
    """Request headers as received: lookups ignore case, repeated headers are joined by ", "."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in items:
            if (seen := self._items.get(name.lower())) is not None:
                name, value = seen[0], f"{seen[1]}, {value}"
            self._items[name.lower()] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self)!r})"


@dataclass(frozen=True)
class TokenRequestRecord:
    """A request to the token path, recorded before it was answered.

    ``form`` is the parsed body (empty when it is not a valid form); ``received_at`` is the
    server's ``clock()`` when the request arrived.
    """

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes
    form: dict[str, list[str]]
    received_at: float


@dataclass(frozen=True)
class ApiRequestRecord:
    """A request to the protected API, the status it was answered with and the token it bore."""

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes
    status: int
    token: str | None
    received_at: float


class FakeTradevestServer:
    """Tradevest's token endpoint and a tiny protected API on a real loopback HTTP/1.1 server.

    The token endpoint (``token_path``) follows the published contract strictly; every other
    path is the protected API, which wants ``Authorization: Bearer <token>``. Special API paths:
    ``/redirect?to=<url>`` answers 302 without checking the token and ``/status/<code>`` answers
    that status. Everything the server sees is recorded for assertions.

    The knobs ``token_lifetime``, ``token_delay``, ``api_delay``, ``clients``, ``date_offset`` and
    ``invalid_client_status`` are plain attributes that may be changed at any time; they apply to
    requests that arrive afterwards. ``clock`` is the server's idea of now (token expiry, record
    times, the Date header); by default ``time.time()``, looked up at each call so freezegun moves
    it.

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
        self.clients: dict[str, str] = {client_id: client_secret}
        self.token_lifetime = token_lifetime
        self.token_path = token_path
        self.host = host
        self.port = port
        self.date_offset = date_offset
        self.invalid_client_status = invalid_client_status
        self.token_delay = 0.0
        self.api_delay = 0.0
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
        secret = self.clients.get(fields["client_id"])
        if secret is None or not secrets.compare_digest(
            secret.encode(), fields["client_secret"].encode()
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # stop() shuts idle keep-alive connections down and joins their threads with a deadline;
    # the default join in server_close() would wait for clients to hang up.
    block_on_close = False
    # socketserver's default backlog (5) drops handshakes when a test fleet connects at once.
    request_queue_size = 1024

    def __init__(self, fake: FakeTradevestServer, host: str, port: int) -> None:
        self.fake = fake
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.connections: set[socket.socket] = set()
        self.threads: list[threading.Thread] = []
        super().__init__((host, port), _Handler)

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self.fake._lock:
            self.fake._connections_opened += 1
            if isinstance(request, socket.socket):
                self.connections.add(request)
            self.threads = [t for t in self.threads if t.is_alive()] + [thread]
            self.fake._lock.notify_all()
        thread.start()

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        with self.fake._lock:
            if isinstance(request, socket.socket):
                self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out or hang up mid-answer are what the tests do, not server bugs.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def drop_connections(self) -> list[threading.Thread]:
        """Shut every open connection down so that blocked handler threads return."""
        with self.fake._lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):  # already closed by its handler
                    conn.shutdown(socket.SHUT_RDWR)
            return list(self.threads)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "FakeTradevest/1.0"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read the records; an access log on stderr is only noise

    def version_string(self) -> str:
        return self.server_version

    def date_time_string(self, timestamp: float | None = None) -> str:
        fake = self.server.fake
        return formatdate(fake._now() + fake.date_offset, usegmt=True)

    def _dispatch(self) -> None:
        body = self._read_body()
        if body is not None:
            url = urlsplit(self.path)
            if url.path == self.server.fake.token_path:
                self._token(url, body)
            else:
                self._api(url, body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 400 to a body whose framing is broken."""
        try:
            encoding = self.headers.get("Transfer-Encoding")
            if encoding is not None:
                if encoding.strip().lower() != "chunked":
                    raise ValueError(encoding)
                return self._read_chunks()
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError(length)
            return self.rfile.read(length)
        except ValueError:
            # The connection cannot be reused: where the next request starts is unknown.
            self._send(400, b'{"error": "invalid_request"}', headers=[("Connection", "close")])
            self.close_connection = True
            return None

    def _read_chunks(self) -> bytes:
        chunks = []
        while size := int(self.rfile.readline(1024).split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)
        while self.rfile.readline(8192).strip():  # trailer fields, ignored
            pass
        return b"".join(chunks)

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str | None = _JSON,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status in (204, 304):
            body = b""  # these statuses never carry a body (RFC 9110 §15.3.5, §15.4.5)
        else:
            if content_type is not None:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _token(self, url: SplitResult, body: bytes) -> None:
        fake = self.server.fake
        form = _parse_form(body)
        record = TokenRequestRecord(
            self.command, url.path, url.query, Headers(self.headers.items()), body, form or {},
            fake._now(),
        )  # fmt: skip
        fault = fake._record_token_request(record)
        if fake._pause(fake.token_delay + (fault.delay if fault else 0.0)):
            self.close_connection = True
        elif fault is None:
            status, payload, headers = fake._answer_token_request(
                self.command, url.query, self.headers.get("Content-Type"), form
            )
            self._send(status, json.dumps(payload).encode(), headers=[*_NO_STORE, *headers])
        elif fault.kind == "respond":
            self._send(fault.status_code, fault.content, fault.content_type, fault.headers)
        elif fault.kind == "reset":
            self.send_response(200)
            self.send_header("Content-Type", _JSON)
            self.send_header("Content-Length", "4096")
            self.end_headers()
            self.wfile.write(b'{"access_token": "tvfake_')
            # Linger 0 makes close() send RST instead of FIN: the client sees a reset mid-body.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        else:  # a hang: the pause above was the silence
            self.close_connection = True

    def _api(self, url: SplitResult, body: bytes) -> None:
        fake = self.server.fake
        headers: list[tuple[str, str]] = []
        token = _bearer_token(self.headers.get("Authorization"))
        owner = fake._token_owner(token)
        request_id = str(uuid.uuid4())
        if url.path == "/redirect":
            target = parse_qs(url.query).get("to", [""])[0]
            status = 302 if target else 400
            payload: dict[str, object] = {"location": target}
            headers.append(("Location", target))
        elif owner is None:
            status = 401
            # RFC 6750 §3.1: no error code when the request carried no token at all.
            challenge = 'Bearer error="invalid_token"' if token is not None else "Bearer"
            headers.append(("WWW-Authenticate", challenge))
            message = "Access token missing, invalid, expired or revoked."
            payload = {"message": message, "responseType": "UNAUTHORIZED", "requestId": request_id}
        elif url.path.startswith("/status/"):
            status = _status_from(url.path.removeprefix("/status/"))
            name = HTTPStatus(status).name if status in HTTPStatus._value2member_map_ else "ERROR"
            payload = {"message": f"status {status}", "responseType": name, "requestId": request_id}
            if status == 401:
                headers.append(("WWW-Authenticate", 'Bearer error="invalid_token"'))
        else:
            status = 200
            payload = {
                "ok": True,
                "method": self.command,
                "path": url.path,
                "requestor_id": self.headers.get("Requestor-ID"),
                "client_id": owner,
            }
        fake._record_api_request(
            ApiRequestRecord(
                self.command, url.path, url.query, Headers(self.headers.items()), body, status,
                token, fake._now(),
            )
        )  # fmt: skip
        if fake._pause(fake.api_delay):
            self.close_connection = True
        else:
            self._send(status, json.dumps(payload).encode(), headers=headers)


def _parse_form(body: bytes) -> dict[str, list[str]] | None:
    """The body as a form, or None when it is not valid UTF-8 form encoding."""
    try:
        text = body.decode()
        return parse_qs(text, keep_blank_values=True, strict_parsing=True, errors="strict")
    except ValueError:
        return None


def _is_form(content_type: str | None) -> bool:
    media_type, _, params = (content_type or "").partition(";")
    if media_type.strip().lower() != _FORM:
        return False
    for param in filter(str.strip, params.split(";")):
        name, _, value = param.partition("=")
        if name.strip().lower() != "charset" or value.strip(' "').lower() not in ("utf-8", "utf8"):
            return False
    return True


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").strip().partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def _status_from(text: str) -> int:
    return int(text) if text.isdigit() and 200 <= int(text) <= 599 else 400
