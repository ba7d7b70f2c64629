"""The HTTP side of the fake server: the threaded server and the request handler."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import struct
import sys
import threading
import uuid
from collections.abc import Iterable
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, parse_qs, urlsplit

from tradevest_django.testing import access_log
from tradevest_django.testing.records import ApiRequestRecord, Headers, TokenRequestRecord

if TYPE_CHECKING:
    from tradevest_django.testing.server import FakeTradevestServer

_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_NO_STORE = (("Cache-Control", "no-store"), ("Pragma", "no-cache"))


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

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() != "date" or self.server.fake.date_header:
            super().send_header(keyword, value)

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

    def _trickle(
        self, interval: float, status: int, body: bytes, headers: Iterable[tuple[str, str]]
    ) -> None:
        """Send an answer one byte every ``interval`` seconds (until the server stops)."""
        real, self.wfile = self.wfile, io.BytesIO()
        try:
            self._send(status, body, headers=headers)
            answer = self.wfile.getvalue()
        finally:
            self.wfile = real
        self.close_connection = True
        for index in range(len(answer)):
            if self.server.fake._pause(interval):
                return
            real.write(answer[index : index + 1])
            real.flush()

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
        elif fault is None or fault.kind == "trickle":
            status, payload, headers = fake._answer_token_request(
                self.command, url.query, self.headers.get("Content-Type"), form
            )
            answer = (status, json.dumps(payload).encode())
            # Logged before the answer leaves, so a client that has it finds the line there.
            fake._log(lambda: access_log.token_line(record, status, payload, fake.clients))
            if fault is None:
                self._send(*answer, headers=[*_NO_STORE, *headers])
            else:
                self._trickle(fault.interval, *answer, headers=[*_NO_STORE, *headers])
        elif fault.kind == "respond":
            fake._log(lambda: access_log.fault_line(record, fault.kind, fault.status_code))
            self._send(fault.status_code, fault.content, fault.content_type, fault.headers)
        elif fault.kind == "reset":
            fake._log(lambda: access_log.fault_line(record, fault.kind))
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
            fake._log(lambda: access_log.fault_line(record, fault.kind))
            self.close_connection = True

    def _api(self, url: SplitResult, body: bytes) -> None:
        fake = self.server.fake
        headers: list[tuple[str, str]] = []
        token = _bearer_token(self.headers.get("Authorization"))
        owner = fake._token_owner(token)
        request_id = str(uuid.uuid4())
        query = parse_qs(url.query)
        if url.path == "/redirect" and not (owner is None and "authenticated" in query):
            target = query.get("to", [""])[0]
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
            retry_after = parse_qs(url.query).get("retry_after", [""])[0]
            if retry_after:
                headers.append(("Retry-After", retry_after))
        else:
            status = 200
            payload = {
                "ok": True,
                "method": self.command,
                "path": url.path,
                "requestor_id": self.headers.get("Requestor-ID"),
                "client_id": owner,
            }
        record = ApiRequestRecord(
            self.command, url.path, url.query, Headers(self.headers.items()), body, status,
            token, fake._now(),
        )  # fmt: skip
        fake._record_api_request(record)
        if fake._pause(fake.api_delay):
            self.close_connection = True
        else:
            fake._log(lambda: access_log.api_line(record, owner))
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
