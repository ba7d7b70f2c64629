"""Exact messages, bounds and values of the token path's parts: the secrets, the deadline, the
API host, the endpoint client, the sessions and the fleet's shared memory.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import logging
import random
import re
import socket
import ssl
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, formatdate
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import requests.adapters

from tests.helpers import CountingCache, FakeClock, ServerFactory, free_port, process
from tradevest_django import TradevestAuth, failures, get_session, policy, signals
from tradevest_django.api import get_manager
from tradevest_django.apihost import ApiHost, origin, validated_requestor_id
from tradevest_django.conf import AliasConfig
from tradevest_django.deadline import Deadline, DeadlineAdapter
from tradevest_django.endpoint import (
    TokenEndpoint,
    clock_skew,
    describe_cause,
    parse_token_response,
)
from tradevest_django.exceptions import (
    BadTokenResponse,
    InvalidClient,
    InvalidGrant,
    SecretUnavailable,
    TokenEndpointError,
    TokenEndpointUnavailable,
    TradevestConfigurationError,
    TradevestError,
)
from tradevest_django.secrets import Secrets, SecretSource, secret_fingerprint
from tradevest_django.sessions import MAX_RETRY_AFTER, TradevestSession
from tradevest_django.shared import cache_key_base, client_key_base, whole_seconds
from tradevest_django.testing import FakeTradevestServer, Fault
from tradevest_django.tokens import Token

SECRET = "parts-secret-Zk8"


def secrets_with(source: SecretSource, deadline: float = 5.0, alias: str = "tenant") -> Secrets:
    """The secrets of ``alias``: a string primary, and ``source`` as its only fallback."""
    return Secrets(
        AliasConfig.from_dict(
            alias,
            {
                "CLIENT_ID": "id",
                "CLIENT_SECRET": SECRET,
                "CLIENT_SECRET_FALLBACKS": [source],
                "AUTH_URL": "http://127.0.0.1:9",
                "TOKEN_DEADLINE": deadline,
            },
            check_cache=False,
        )
    )


# --- secrets -------------------------------------------------------------------------------


def test_a_secret_provider_runs_in_a_named_daemon_thread() -> None:
    seen: list[tuple[str, bool]] = []

    def provider() -> str:
        thread = threading.current_thread()
        seen.append((thread.name, thread.daemon))
        return "parts-fallback"

    assert secrets_with(provider).read(1).value == "parts-fallback"
    # a daemon thread: a provider that never returns cannot keep the process from exiting
    assert seen == [("tradevest-secret", True)]


def test_a_hung_provider_is_waited_for_again_and_its_late_answer_used() -> None:
    release = threading.Event()
    calls: list[int] = []

    def hanging() -> str:
        calls.append(1)
        release.wait(10)
        return f"parts-late-{len(calls)}"

    secrets = secrets_with(hanging, deadline=0.1)
    try:
        for _ in range(2):
            with pytest.raises(SecretUnavailable, match=r"did not return within 0\.1 s"):
                secrets.read(1)
    finally:
        release.set()
    for thread in threading.enumerate():
        if thread.name == "tradevest-secret":
            thread.join(timeout=5)
    # the first call's answer, now arrived: the provider was never called a second time
    assert secrets.read(1).value == "parts-late-1"
    assert calls == [1]


def test_every_provider_failure_names_its_alias() -> None:
    release = threading.Event()
    try:
        with pytest.raises(SecretUnavailable) as hung:
            secrets_with(lambda: release.wait(10) and "x", deadline=0.1).read(1)
    finally:
        release.set()
    with pytest.raises(SecretUnavailable) as empty:
        secrets_with(lambda: "").read(1)
    assert (hung.value.alias, empty.value.alias) == ("tenant", "tenant")
    assert str(empty.value) == (
        "CLIENT_SECRET_FALLBACKS[0] of alias 'tenant' (a callable) returned str, not a non-empty "
        "string."
    )
    assert SECRET not in str(hung.value) + str(empty.value)


# --- deadline ------------------------------------------------------------------------------


def test_a_deadline_shows_its_seconds_and_whether_it_expired_in_its_repr() -> None:
    deadline = Deadline(1.5)
    assert repr(deadline) == "<Deadline 1.500 s>"
    with Deadline(0) as expiring:
        assert expiring._timer is not None
        expiring._timer.join(timeout=5)
    assert repr(expiring) == "<Deadline 0.000 s expired>"


def test_a_deadline_watches_from_a_named_daemon_thread() -> None:
    before = set(threading.enumerate())
    with Deadline(30):
        (watcher,) = [t for t in set(threading.enumerate()) - before if t.name != "MainThread"]
        assert watcher.name == "tradevest-deadline"
        # a daemon: a process may exit while a deadline is pending
        assert watcher.daemon
    watcher.join(timeout=5)
    assert not watcher.is_alive()  # and it ends with the block


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def silent_https(tls_files: tuple[Path, Path]) -> Iterator[tuple[str, Path]]:
    """An HTTPS server that completes the handshake, then never answers: its URL and its CA.

    Under ``/trickle`` it answers instead, one byte every 50 ms, for at most three seconds.
    """
    cert_file, key_file = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    stop = threading.Event()
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + b" " * 60

    class Silent(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if not self.path.startswith("/trickle"):
                stop.wait(10)
                return
            for byte in answer:
                if stop.wait(0.05):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()

        do_POST = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Silent)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/token", cert_file
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_deadline_cuts_an_https_exchange_that_never_answers(
    silent_https: tuple[str, Path],
) -> None:
    url, ca = silent_https
    with requests.Session() as session:
        session.mount("https://", DeadlineAdapter())
        started = time.monotonic()
        with Deadline(0.2) as deadline, pytest.raises(requests.ConnectionError):
            session.get(url, timeout=(3, 3), verify=str(ca))
        took = time.monotonic() - started
    assert deadline.expired
    assert took < 2, f"the silent HTTPS server held the request {took:.1f} s"


# --- API host ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api_url", "shown"),
    [
        ("https://API.example.com/v1/", "<ApiHost https://api.example.com/>"),
        ("http://127.0.0.1:8001/v1", "<ApiHost http://127.0.0.1:8001/>"),
        (None, "<ApiHost none>"),
        ("/v1/relative", "<ApiHost none>"),
    ],
)
def test_an_api_host_shows_its_origin_in_its_repr(api_url: str | None, shown: str) -> None:
    assert repr(ApiHost(api_url)) == shown


# --- endpoint ------------------------------------------------------------------------------


def test_a_cause_described_without_a_secret_keeps_its_whole_message() -> None:
    assert describe_cause(requests.ConnectionError("XXXX marks XXXX")) == (
        "ConnectionError: XXXX marks XXXX"
    )


def test_a_cause_keeps_the_letters_at_the_ends_of_its_message() -> None:
    assert describe_cause(OSError("X-ray failed: XX")) == "OSError: X-ray failed: XX"
    assert describe_cause(OSError("'quoted' \"too\"")) == "OSError: quoted' \"too"


class Wrapped(Exception):
    """An error that wraps another as its ``reason``, as urllib3's errors do."""

    def __init__(self, message: str, reason: BaseException) -> None:
        super().__init__(message)
        self.reason = reason


def wrapped(depth: int) -> BaseException:
    """``level 0`` wrapped ``depth`` times, the outermost being ``level <depth>``."""
    err: BaseException = OSError("level 0")
    for level in range(1, depth + 1):
        err = Wrapped(f"level {level}", err)
    return err


def test_a_cause_is_unwrapped_at_most_eight_levels_deep() -> None:
    assert describe_cause(wrapped(8)) == "Wrapped: level 0"
    assert describe_cause(wrapped(9)) == "Wrapped: level 1"
    looped = Wrapped("level 1", OSError("level 0"))
    looped.reason = looped  # a cycle ends too
    assert describe_cause(looped) == "Wrapped: level 1"


def test_retry_after_values_are_read_exactly(make_server: ServerFactory, settings: Any) -> None:
    server = make_server(SECRET)
    now = float(int(time.time()))

    def asked(retry_after: str) -> TokenEndpointUnavailable:
        clock = FakeClock(now)
        server.inject(Fault.status(503, retry_after=retry_after))
        config = AliasConfig.from_dict(
            "default", server.settings(TOKEN_RETRIES=0), check_cache=False
        )
        with pytest.raises(TokenEndpointUnavailable) as err:
            TokenEndpoint(config, clock=clock, sleep=clock.sleep).fetch()
        return err.value

    def date(seconds: float, zone: str) -> str:
        if zone == "+0200":
            local = timezone(timedelta(hours=2))
            return format_datetime(datetime.fromtimestamp(now + seconds, tz=local))
        return formatdate(now + seconds, usegmt=zone == "GMT")  # else "-0000"

    twelve = asked("999999999999")
    assert twelve.retry_after == 999_999_999_999.0
    assert "; it asked to retry after 999999999999 s." in str(twelve)
    assert asked("9999999999999").retry_after is None  # thirteen digits: not a wait
    assert asked("soon").retry_after is None
    assert asked(date(60, "+0200")).retry_after == 60.0
    assert asked(date(60, "GMT")).retry_after == 60.0
    assert asked(date(-60, "GMT")).retry_after == 0.0  # a date gone by: no wait
    # "-0000" means UTC of unknown origin, never the local time of the host reading it
    settings.TIME_ZONE = "America/New_York"
    assert asked(date(90, "-0000")).retry_after == 90.0
    assert SECRET not in str(twelve)


def test_what_the_fleet_remembers_of_an_outage_is_its_kind_and_status() -> None:
    outage = TokenEndpointUnavailable("down", alias="default", status_code=503, retry_after=3)
    assert failures.record(outage, 30) == ({"kind": "unavailable", "status": 503}, 3.0)
    network = TokenEndpointUnavailable("refused", alias="default")
    assert failures.record(network, 30) == (
        {"kind": "unavailable", "status": None},
        failures.OUTAGE_COOLDOWN,
    )


# --- sessions ------------------------------------------------------------------------------


@pytest.fixture
def api(settings: Any, make_server: ServerFactory) -> FakeTradevestServer:
    """A fake Tradevest server as the ``default`` alias."""
    server = make_server(SECRET)
    settings.TRADEVEST = {"default": server.settings()}
    get_manager().shared.clear()
    return server


def configure(settings: Any, server: FakeTradevestServer, **options: object) -> None:
    settings.TRADEVEST = {"default": server.settings(**options)}
    get_manager().shared.clear()


@pytest.fixture
def retry_sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every wait between two attempts of an API call, recorded instead of slept."""
    import urllib3.util.retry

    slept: list[float] = []
    monkeypatch.setattr(
        urllib3.util.retry, "time", SimpleNamespace(time=time.time, sleep=slept.append)
    )
    return slept


def calls_to(server: FakeTradevestServer, path: str) -> int:
    return sum(request.path == path for request in server.api_requests)


def test_api_retries_back_off_from_half_a_second_to_at_most_four(
    settings: Any, api: FakeTradevestServer, retry_sleeps: list[float]
) -> None:
    configure(settings, api, API_RETRIES=6)
    with get_session() as session:
        assert session.get("/status/502").status_code == 502
    assert calls_to(api, "/status/502") == 7
    assert retry_sleeps == [0.5, 1.0, 2.0, 4.0, 4.0]  # the first retry goes at once


def test_a_short_retry_after_is_waited_for_and_retried(
    settings: Any, api: FakeTradevestServer, retry_sleeps: list[float]
) -> None:
    configure(settings, api, API_RETRIES=2)
    with get_session() as session:
        assert session.get("/status/429", params={"retry_after": "3"}).status_code == 429
        assert calls_to(api, "/status/429") == 3
        assert retry_sleeps == [3.0, 3.0]
        retry_sleeps.clear()
        # exactly MAX_RETRY_AFTER is still waited for; a second more is returned at once
        assert session.get("/status/503", params={"retry_after": "10"}).status_code == 503
        assert calls_to(api, "/status/503") == 3
        assert retry_sleeps == [MAX_RETRY_AFTER, MAX_RETRY_AFTER]
        assert session.get("/status/504", params={"retry_after": "11"}).status_code == 504
        assert calls_to(api, "/status/504") == 1


def test_a_retried_response_records_each_attempt(
    settings: Any, api: FakeTradevestServer, retry_sleeps: list[float]
) -> None:
    configure(settings, api, API_RETRIES=2)
    with get_session() as session:
        response = session.get("/status/503")
    history = response.raw.retries.history
    assert [(h.method, h.url, h.status) for h in history] == [("GET", "/status/503", 503)] * 2


def test_an_unreachable_api_names_its_host_and_path_after_the_retries(
    settings: Any, api: FakeTradevestServer, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    configure(settings, api, API_URL=f"http://127.0.0.1:{port}/v1", API_RETRIES=1)
    with get_session() as session, pytest.raises(requests.ConnectionError) as err:
        session.get("/prices")
    assert str(err.value).startswith(
        f"HTTPConnectionPool(host='127.0.0.1', port={port}): Max retries exceeded with url: "
        "/v1/prices (Caused by NewConnectionError("
    )
    # the retry warning shows the budgets left: one status retry, no connection retry
    (retrying,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert retrying.startswith(
        "Retrying (_Retry(total=0, connect=0, read=False, redirect=None, status=1)) after "
        "connection broken by 'NewConnectionError("
    )
    assert SECRET not in str(err.value) + retrying


@pytest.fixture
def untrusted_https(tls_files: tuple[Path, Path]) -> Iterator[tuple[str, list[int]]]:
    """An HTTPS listener whose certificate no client trusts: its URL, and one entry per TLS
    handshake tried with it. It closes after five handshakes (so a client that retries without
    end meets a closed port)."""
    cert_file, key_file = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    handshakes: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        with listener:
            while not stop.is_set() and len(handshakes) < 5:
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                handshakes.append(1)
                with client, contextlib.suppress(OSError):
                    client.settimeout(2)
                    context.wrap_socket(client, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{listener.getsockname()[1]}", handshakes
    finally:
        stop.set()
        thread.join(timeout=5)


def test_a_tls_failure_with_the_api_is_tried_api_retries_plus_one_times(
    settings: Any,
    api: FakeTradevestServer,
    untrusted_https: tuple[str, list[int]],
    retry_sleeps: list[float],
) -> None:
    url, handshakes = untrusted_https
    configure(settings, api, API_URL=url, API_RETRIES=1)
    with get_session() as session, pytest.raises(requests.exceptions.SSLError):
        session.get("/prices")
    assert len(handshakes) == 2


def test_a_read_timeout_keeps_the_traceback_of_the_read(
    settings: Any, api: FakeTradevestServer
) -> None:
    configure(settings, api, API_TIMEOUT=(1, 0.1), API_RETRIES=2)
    api.api_delay = 2
    with get_session() as session, pytest.raises(requests.ReadTimeout) as err:
        session.get("/slow")
    (cause,) = err.value.args
    frames = [frame.name for frame in traceback.extract_tb(cause.__traceback__)]
    assert "_make_request" in frames  # where the read timed out, not only where it was re-raised
    assert calls_to(api, "/slow") == 1  # a read timeout is never retried


def test_https_api_calls_get_the_timeout_too(
    settings: Any, api: FakeTradevestServer, silent_https: tuple[str, Path]
) -> None:
    url, ca = silent_https
    configure(settings, api, API_URL=url.removesuffix("/token"), API_TIMEOUT=(1, 0.2))
    with get_session() as session, pytest.raises(requests.ReadTimeout):
        session.get("/prices", verify=str(ca))


def test_absolute_urls_are_used_as_they_are(api: FakeTradevestServer) -> None:
    with get_session() as session:
        assert session.api_url("https://elsewhere.example/x") == "https://elsewhere.example/x"
        assert session.api_url("HTTPS://Elsewhere.example/x") == "HTTPS://Elsewhere.example/x"
        assert session.api_url("http://elsewhere.example/x") == "http://elsewhere.example/x"
        assert session.api_url("/x") == f"{api.url}/x"


def test_a_session_names_its_alias(settings: Any, api: FakeTradevestServer) -> None:
    settings.TRADEVEST = {"reports": api.settings()}
    with get_session("reports") as session:
        assert repr(session.auth) == "<TradevestAuth alias='reports'>"


def test_a_session_keeps_the_configuration_it_was_made_with(
    settings: Any, api: FakeTradevestServer, make_server: ServerFactory
) -> None:
    with get_session() as session:
        configure(settings, make_server("parts-other-secret-Jq2"))
        response = session.get("/prices")
    assert response.status_code == 200
    assert response.json()["client_id"] == api.client_id
    (request,) = api.api_requests
    assert request.headers["Authorization"] == f"Bearer {api.issued_tokens[0]}"


# --- the token endpoint's answers -------------------------------------------------------------


def refusal(server: FakeTradevestServer, fault: Fault) -> TokenEndpointError:
    server.inject(fault)
    config = AliasConfig.from_dict("default", server.settings(), check_cache=False)
    with pytest.raises(TokenEndpointError) as err:
        TokenEndpoint(config).fetch()
    return err.value


def test_oauth_error_codes_count_only_on_400_and_401(make_server: ServerFactory) -> None:
    server = make_server(SECRET)
    host = f"127.0.0.1:{server.port}"
    grant = refusal(server, Fault.error("invalid_grant", status=401))
    assert type(grant) is InvalidGrant and grant.error == "invalid_grant"
    # an error code on another status is reported, but is not that error
    forbidden = refusal(server, Fault.error("invalid_client", status=403))
    assert type(forbidden) is TokenEndpointError
    assert (forbidden.error, forbidden.status_code) == ("invalid_client", 403)
    bare = refusal(server, Fault.status(401))
    assert type(bare) is InvalidClient
    assert (bare.error, bare.auth_host) == ("invalid_client", host)
    assert str(bare).startswith(
        f"Tradevest's token endpoint at {host} refused the token request of alias 'default' "
        "(HTTP 401, error 'invalid_client')."
    )
    other = refusal(server, Fault.status(404))
    assert type(other) is TokenEndpointError and other.error == "http_404"
    long = refusal(server, Fault.error("e" * 70))
    assert long.error == "e" * 64
    assert SECRET not in str(bare) + str(other) + str(long)


def test_unusable_answers_name_their_alias(make_server: ServerFactory) -> None:
    server = make_server(SECRET)
    config = AliasConfig.from_dict("reports", server.settings(), check_cache=False)
    host = f"127.0.0.1:{server.port}"

    def unusable(fault: Fault) -> BadTokenResponse:
        server.inject(fault)
        with pytest.raises(BadTokenResponse) as err:
            TokenEndpoint(config).fetch()
        assert err.value.alias == "reports"
        return err.value

    assert str(unusable(Fault.body(b"x" * 200_000))) == (
        f"The token endpoint at {host} sent more than 65536 bytes for alias 'reports'; "
        "refusing to read it."
    )
    assert str(unusable(Fault.body(b"<html>", content_type="text/html"))) == (
        f"Tradevest's token endpoint at {host} answered 200 with a body that is not JSON "
        "(6 bytes) for alias 'reports'."
    )
    assert str(unusable(Fault.json({"expires_in": 5}))) == (
        "Tradevest's token endpoint sent an unusable token for alias 'reports': 'access_token' "
        "is missing or not a non-empty string."
    )


def test_expires_in_is_read_from_one_second_to_twelve_digits() -> None:
    def lifetime(expires_in: object) -> int:
        answer = {"access_token": "parts-token", "expires_in": expires_in}
        return parse_token_response(answer, issued_at=1_800_000_000.0).lifetime

    assert lifetime(1) == 1
    assert lifetime("999999999999") == 86400  # twelve digits: read, then capped at a day
    with pytest.raises(BadTokenResponse, match="'expires_in' is not a positive number"):
        lifetime("9999999999999")
    with pytest.raises(BadTokenResponse, match="'expires_in' is not a positive number"):
        lifetime(0)


def test_a_date_within_two_seconds_of_the_round_trip_is_no_skew() -> None:
    date = formatdate(1_800_000_000, usegmt=True)
    at = 1_800_000_000.0
    assert clock_skew(date, received=at + 0.5, sent=at) == 0.0
    # the server is 2 s ahead at the least: still within the tolerance
    assert clock_skew(date, received=at - 2, sent=at - 2) == 0.0
    assert clock_skew(date, received=at - 2.5, sent=at - 2.5) == 2.5
    # Date is rounded down: written up to a second before it says, so 3 s behind is 2 s
    assert clock_skew(date, received=at + 3, sent=at + 3) == 0.0
    assert clock_skew(date, received=at + 3.5, sent=at + 3.5) == -2.5
    assert clock_skew(date, received=at + 3.5, sent=at + 1) == 0.0  # a slow round trip


# --- the API host and the person's id ---------------------------------------------------------


def test_an_unknown_scheme_without_a_port_gets_port_zero() -> None:
    assert origin("ftp://Files.example/x") == ("ftp", "files.example", 0)
    assert origin("https://api.example.com/x") == ("https", "api.example.com", 443)


@pytest.mark.parametrize("url", ["not a url", "http://host:port/", "http://[unclosed/"])
def test_a_url_that_cannot_be_parsed_has_no_origin_and_is_never_the_api_host(url: str) -> None:
    assert origin(url) is None
    assert ApiHost("https://api.example.com").matches(url) is False
    assert repr(ApiHost(url)) == "<ApiHost none>"


def test_without_an_api_url_no_url_is_the_api_host() -> None:
    assert ApiHost(None).matches("https://api.example.com/prices") is False
    host = ApiHost("https://api.example.com")
    assert host.matches(None) is False and host.matches("") is False
    assert host.matches("https://api.example.com/prices") is True


def test_a_bad_requestor_id_is_quoted_to_forty_characters() -> None:
    value = "person-" + "0123456789" * 5
    with pytest.raises(ValueError, match="requestor_id") as err:
        validated_requestor_id(value)
    assert str(err.value) == (
        "requestor_id must be the UUID of the natural person acting (Tradevest's Requestor-ID), "
        f"not {value[:40]!r}."
    )
    person = uuid.UUID("6f1c2b4e-8a4d-4c1e-9a55-0d2b8f3e7a10")
    assert validated_requestor_id(person) == str(person)
    assert validated_requestor_id(str(person).upper()) == str(person)


# --- the session's auth -----------------------------------------------------------------------

PERSON = "6f1c2b4e-8a4d-4c1e-9a55-0d2b8f3e7a10"


@pytest.fixture
def other_host(make_server: ServerFactory) -> FakeTradevestServer:
    return make_server("parts-other-host-secret-Vb5")


def test_the_token_goes_out_as_an_authorization_header(api: FakeTradevestServer) -> None:
    with get_session() as session:
        session.get("/prices")
    (request,) = api.api_requests
    assert "Authorization" in list(request.headers)  # the header's name exactly as sent
    assert request.headers["Authorization"] == f"Bearer {api.issued_tokens[0]}"


def test_a_redirect_away_from_the_api_drops_the_persons_id_with_auth_alone(
    api: FakeTradevestServer, other_host: FakeTradevestServer
) -> None:
    away = {"to": other_host.url + "/collect"}
    with requests.Session() as session:
        session.auth = TradevestAuth(requestor_id=PERSON)
        session.get(api.url + "/redirect", params=away, timeout=5)  # the session's first answer
        session.get(api.url + "/warm-up", timeout=5)
        session.get(api.url + "/redirect", params=away, timeout=5)  # and a later one
    assert len(other_host.api_requests) == 2
    for request in other_host.api_requests:
        assert "Requestor-ID" not in request.headers
        assert "Authorization" not in request.headers
    with requests.Session() as anonymous:  # no person's id to drop
        anonymous.auth = TradevestAuth()
        anonymous.get(api.url + "/redirect", params=away, timeout=5)
    assert len(other_host.api_requests) == 3


def test_a_redirect_within_the_api_keeps_the_callers_person_id_with_auth_alone(
    api: FakeTradevestServer,
) -> None:
    other_person = str(uuid.UUID(int=7))
    with requests.Session() as session:
        session.auth = TradevestAuth()
        response = session.get(
            api.url + "/redirect",
            params={"to": api.url + "/landing"},
            headers={"Requestor-ID": other_person},
            timeout=5,
        )
    assert response.status_code == 200
    landing = api.api_requests[-1]
    assert landing.path == "/landing" and landing.headers["Requestor-ID"] == other_person


def test_the_api_host_follows_the_settings(
    settings: Any, api: FakeTradevestServer, other_host: FakeTradevestServer
) -> None:
    auth = TradevestAuth()
    assert auth.is_api_url(api.url + "/prices")
    configure(settings, other_host)
    assert auth.is_api_url(other_host.url + "/prices")
    assert not auth.is_api_url(api.url + "/prices")


def test_a_fast_api_call_does_not_bring_the_refresh_forward(
    make_server: ServerFactory, clock: FakeClock
) -> None:
    server = make_server(SECRET, clock=clock)
    manager = process(server, CountingCache(), clock)
    token = manager.get_token()
    with TradevestSession(manager.config, TradevestAuth(manager=manager)) as session:
        assert session.get("/prices").status_code == 200
    clock.advance(token.lifetime - policy.margin(token, manager.config) - 100)
    assert manager.cached_token() == token  # 100 s of usable life left: still handed out


def test_a_session_reads_the_servers_clock_once_then_from_each_401(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(1_800_000_000.1)
    server = make_server(SECRET, clock=clock)
    cache = CountingCache()
    manager = process(server, cache, clock)
    token = manager.get_token()
    # another process has already replaced the token: the replay below takes the new one from
    # the cache, so only the 401 itself can teach this process the server's clock
    elsewhere = process(server, cache, clock)
    assert elsewhere.invalidate(elsewhere.get_token())
    newer = elsewhere.get_token()
    with TradevestSession(manager.config, TradevestAuth(manager=manager)) as session:
        session.get("/warm-up")
        server.date_offset = 600
        session.get("/prices")
        assert manager._skew == 0.0  # only the session's first answer is read for the clock
        server.revoke(token.access_token)
        response = session.get("/prices")
    assert [r.status_code for r in response.history] == [401]
    assert server.token_request_count == 2
    assert server.api_requests[-1].token == newer.access_token
    assert manager._skew == pytest.approx(599.9)  # learned from the 401's Date
    invalidated = (
        f"Invalidated token {token.fingerprint} of alias 'default': rejected by the API (401 for "
        "GET)."
    )
    assert invalidated in caplog.messages


def test_a_slow_round_trip_does_not_read_as_a_skew(make_server: ServerFactory) -> None:
    clock = FakeClock(1_800_000_000.1)
    server = make_server(SECRET, clock=clock)
    manager = process(server, CountingCache(), clock)
    manager.get_token()
    # the answer says 3.1 s before now, but it took over 0.2 s: within the tolerance
    server.date_offset = -3
    server.api_delay = 0.2
    with TradevestSession(manager.config, TradevestAuth(manager=manager)) as session:
        assert session.get("/prices").status_code == 200
    assert manager._skew == 0.0


def test_a_replayed_request_keeps_the_callers_timeout(
    settings: Any, api: FakeTradevestServer
) -> None:
    configure(settings, api, API_TIMEOUT=(5, 5))

    def slow_down(**kwargs: object) -> None:
        api.api_delay = 1  # the replay, not the 401, is slow

    signals.token_invalidated.connect(slow_down)
    try:
        with get_session() as session:
            session.get("/warm-up")
            api.revoke(api.issued_tokens[0])
            with pytest.raises(requests.ReadTimeout):
                session.get("/prices", timeout=(5, 0.3))
    finally:
        signals.token_invalidated.disconnect(slow_down)


def test_a_relative_url_without_api_url_names_the_alias_and_setting(
    settings: Any, api: FakeTradevestServer
) -> None:
    configure(settings, api, API_URL=None)
    with get_session() as session, pytest.raises(TradevestConfigurationError) as err:
        session.api_url("/prices")
    assert (err.value.alias, err.value.key) == ("default", "API_URL")
    assert str(err.value) == (
        "Cannot request the relative URL '/prices': TRADEVEST['default'] has no API_URL. Set "
        "ENVIRONMENT (or API_URL), or pass an absolute URL."
    )


def test_relative_urls_lose_only_their_leading_slashes(api: FakeTradevestServer) -> None:
    with get_session() as session:
        assert session.api_url("/Xetra/quotes") == f"{api.url}/Xetra/quotes"
        assert session.api_url("//XX/") == f"{api.url}/XX/"


def test_a_session_request_takes_its_arguments_by_position(api: FakeTradevestServer) -> None:
    with get_session() as session:
        session.request("GET", "/prices", {"isin": "DE0005140008"})
    assert api.api_requests[-1].query == "isin=DE0005140008"


# --- what the fleet shares through the cache --------------------------------------------------


def test_a_remembered_refusal_keeps_its_code_host_and_alias(make_server: ServerFactory) -> None:
    server = make_server(SECRET)
    config = AliasConfig.from_dict("reports", server.settings(), check_cache=False)
    host = f"127.0.0.1:{server.port}"
    now = 1_800_000_000.0

    def remembered(**failure: object) -> TradevestError:
        error = failures.remembered_error({**failure, "until": now + 5}, now, config)
        assert error is not None and error.alias == "reports"
        return error

    new_code = remembered(kind="refused", error="something_new", status=400)
    assert isinstance(new_code, TokenEndpointError) and new_code.error == "something_new"
    assert new_code.auth_host == host
    assert str(new_code).startswith(
        f"Tradevest's token endpoint at {host} refused the token request of alias 'reports' "
        "(HTTP 400, error 'something_new')"
    )
    no_code = remembered(kind="refused", status=400)
    assert isinstance(no_code, TokenEndpointError) and no_code.error == "unknown_error"
    assert str(remembered(kind="bad_response")) == (
        f"Tradevest's token endpoint at {host} sent an unusable token moments ago for alias "
        "'reports'; the fleet waits 5.0 s before asking again."
    )
    outage = remembered(kind="unavailable", status=503)
    assert isinstance(outage, TokenEndpointUnavailable) and outage.status_code == 503


def test_cache_timeouts_are_whole_seconds_of_at_least_one() -> None:
    assert whole_seconds(0.2) == 1
    assert whole_seconds(1.0) == 1
    assert whole_seconds(1.9995) == 2  # a datetime's microsecond rounding is allowed for
    assert whole_seconds(2.9) == 2


class LaggingReplica(CountingCache):
    """A cache whose reads come from a replica that has not seen any write yet."""

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        self.calls["get"] += 1
        return default


def test_the_refresh_lock_is_released_without_reading_it_first(
    make_server: ServerFactory, clock: FakeClock
) -> None:
    server = make_server(SECRET, clock=clock)
    cache = LaggingReplica()
    shared = process(server, cache, clock).shared
    lock = shared.acquire_lock(30)
    assert lock is not None
    assert 29 < lock.expires - time.monotonic() <= 30
    shared.release_lock(lock)  # the replica does not show the lock yet: it goes all the same
    assert cache.calls["get"] == 0
    assert shared.acquire_lock(30) is not None


def test_a_cached_token_comes_back_as_it_was_stored() -> None:
    expires = datetime(2027, 1, 1, 12, 0, tzinfo=timezone.utc)
    stored = Token("parts-cached-token", "Bearer", expires, 3600)
    back = Token.from_cache(stored.to_cache())
    assert back is not None and back == stored
    assert (back.token_type, back.expires_at, back.skew, back.source) == (
        "Bearer",
        expires,
        0.0,
        "cache",
    )
    # on a host whose clock is 5 s behind Tradevest's, it expires 5 s earlier by that clock
    behind = Token.from_cache(stored.to_cache(), skew=5.0)
    assert behind is not None and behind.skew == 5.0
    assert behind.expires_at == expires - timedelta(seconds=5)
    assert behind.server_expiry == stored.server_expiry


def test_cache_keys_stay_the_same_from_release_to_release(settings: Any) -> None:
    # Every process of the fleet, whatever release it runs, must find the same keys: a change
    # here needs a new KEY_VERSION.
    settings.SECRET_KEY = "tests-only-not-secret"

    def config(**options: object) -> AliasConfig:
        values = {"CLIENT_ID": "parts-client", "CLIENT_SECRET": SECRET}
        values.update(AUTH_URL="https://auth.example.com", **options)
        return AliasConfig.from_dict("default", values, check_cache=False)

    plain, scoped = config(), config(SCOPE="tradevest.api")
    assert cache_key_base(plain) == "tradevest_django:v2:447c5e99c4484084863560094fc98b60"
    assert client_key_base(plain) == "tradevest_django:v2:8a03da15790f1f62def73d4c64a686f0"
    assert cache_key_base(scoped) == "tradevest_django:v2:137bdd1955901e4103fe7c894575fe88"
    assert client_key_base(scoped) == "tradevest_django:v2:a499f11e613d5e470c5a0f63ca8dc6a1"
    # the name under which the fleet remembers which secret works
    assert secret_fingerprint(SECRET) == "86461c4f0a8863a8935ef941"


def test_a_deadline_adapter_takes_the_pool_options_of_any_adapter() -> None:
    adapter = DeadlineAdapter(pool_connections=3, pool_maxsize=2, pool_block=True)
    try:
        assert adapter.poolmanager.connection_pool_kw == {"maxsize": 2, "block": True}
    finally:
        adapter.close()


# --- the token request's retries --------------------------------------------------------------


class WorstJitter(random.Random):
    """Jitter that always draws the longest wait it is allowed."""

    def uniform(self, a: float, b: float) -> float:
        return b


class TickingClock(FakeClock):
    """A clock that moves ``step`` seconds every time it is read."""

    def __init__(self, start: float, step: float) -> None:
        super().__init__(start)
        self.step = step

    def __call__(self) -> float:
        now = self.now
        self.advance(self.step)
        return now


def endpoint_for(server: FakeTradevestServer, clock: FakeClock, **options: object) -> TokenEndpoint:
    config = AliasConfig.from_dict("default", server.settings(**options), check_cache=False)
    return TokenEndpoint(config, clock=clock, sleep=clock.sleep, rng=WorstJitter())


def test_token_retries_back_off_from_half_a_second_to_at_most_four(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = make_server(SECRET)
    host = f"127.0.0.1:{server.port}"
    clock = FakeClock(1_800_000_000.0)
    server.inject(*[Fault.status(503)] * 6)
    with pytest.raises(TokenEndpointUnavailable) as err:
        endpoint_for(server, clock, TOKEN_RETRIES=5, TOKEN_DEADLINE=60).fetch()
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert err.value.alias == "default" and err.value.attempts == 6
    assert str(err.value) == (
        f"Tradevest's token endpoint at {host} is unavailable for alias 'default': HTTP 503 "
        "after 6 attempt(s). Callers get a token again once it recovers."
    )
    retrying = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert retrying[0] == (
        f"Token request for alias 'default' to {host} failed (HTTP 503, attempt 1 of 6); "
        "retrying in 0.50 s."
    )
    assert retrying[4].endswith("(HTTP 503, attempt 5 of 6); retrying in 4.00 s.")


def test_no_retry_is_made_whose_wait_reaches_the_deadline(make_server: ServerFactory) -> None:
    server = make_server(SECRET)
    clock = FakeClock(1_800_000_000.0)
    server.inject(*[Fault.status(503)] * 5)
    # waits of 0.5, 1, 2 and then 4 s: the fourth would end exactly at the 7.5 s deadline
    with pytest.raises(TokenEndpointUnavailable) as err:
        endpoint_for(server, clock, TOKEN_RETRIES=5, TOKEN_DEADLINE=7.5).fetch()
    assert err.value.attempts == 4 and server.token_request_count == 4
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_each_attempt_waits_no_longer_than_the_time_left(make_server: ServerFactory) -> None:
    server = make_server(SECRET)
    clock = FakeClock(1_800_000_000.0)
    # a 5 s Retry-After leaves 0.2 s of the 5.2 s deadline for an answer that takes 0.6 s
    server.inject(Fault.status(503, retry_after="5"), Fault.hang(0.6))
    fetch = endpoint_for(server, clock, TOKEN_RETRIES=1, TOKEN_DEADLINE=5.2, TOKEN_TIMEOUT=5)
    with pytest.raises(TokenEndpointUnavailable) as err:
        fetch.fetch()
    assert clock.sleeps == [5.0]
    cause = re.fullmatch(
        r"ReadTimeout: Read timed out\. \(read timeout=([0-9.]+)\)", err.value.cause or ""
    )
    assert cause is not None and float(cause[1]) == pytest.approx(0.2)


def test_a_fetch_reports_its_duration_and_the_skew_across_its_round_trip(
    make_server: ServerFactory,
) -> None:
    server = make_server(SECRET, clock=FakeClock(1_800_000_000.0))
    # sent 3 s after the server's Date, received 3.5 s after it: Date, rounded down, was
    # written within the round trip, so the clocks may agree
    clock = TickingClock(1_800_000_002.5, step=0.5)
    result = endpoint_for(server, clock).fetch()
    assert (result.skew, result.token.skew, result.duration) == (0.0, 0.0, 1.0)


class EchoingProxy(requests.adapters.HTTPAdapter):
    """A proxy that refuses the request and quotes it back, form and all."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        raise requests.ConnectionError(f"proxy refused {request.body!s}")


def test_a_network_error_quoting_the_form_never_shows_the_secret() -> None:
    config = AliasConfig.from_dict(
        "default",
        {"CLIENT_ID": "parts-client", "CLIENT_SECRET": SECRET, "AUTH_URL": "http://127.0.0.1:9"},
        check_cache=False,
    )
    clock = FakeClock()
    fetch = TokenEndpoint(config, clock=clock, sleep=clock.sleep, adapter=EchoingProxy)
    with pytest.raises(TokenEndpointUnavailable) as err:
        fetch.fetch()
    assert err.value.cause == (
        "ConnectionError: proxy refused grant_type=client_credentials&client_id=parts-client"
        "&client_secret=***"
    )
    assert SECRET not in str(err.value)


# --- the token request on the wire -------------------------------------------------------------


def test_the_token_request_sends_exactly_these_headers(make_server: ServerFactory) -> None:
    server = make_server(SECRET)
    config = AliasConfig.from_dict("default", server.settings(), check_cache=False)
    TokenEndpoint(config).fetch()
    (request,) = server.token_requests
    assert sorted(request.headers) == [
        "Accept",
        "Accept-Encoding",
        "Connection",
        "Content-Length",
        "Content-Type",
        "Host",
        "User-Agent",
    ]


def test_a_silent_token_endpoint_is_given_up_at_the_read_timeout(
    make_server: ServerFactory,
) -> None:
    server = make_server(SECRET)
    server.inject(Fault.hang(3))
    config = AliasConfig.from_dict(
        "default",
        server.settings(TOKEN_TIMEOUT=(1, 0.2), TOKEN_DEADLINE=3, TOKEN_RETRIES=0),
        check_cache=False,
    )
    started = time.monotonic()
    with pytest.raises(TokenEndpointUnavailable) as err:
        TokenEndpoint(config).fetch()
    assert time.monotonic() - started < 2  # not the 3 s deadline
    assert err.value.cause == "ReadTimeout: Read timed out. (read timeout=0.2)"


@pytest.fixture
def endless_answer() -> Iterator[str]:
    """A token endpoint that answers 200 with a body that never ends (8 KiB every 5 ms, for
    at most ten seconds): its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        with listener:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                with client, contextlib.suppress(OSError):
                    client.recv(65536)
                    client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
                    ends = time.monotonic() + 10
                    while time.monotonic() < ends and not stop.wait(0.005):
                        client.sendall(b" " * 8192)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)


def test_an_endless_token_answer_is_given_up_after_64_kib(endless_answer: str) -> None:
    config = AliasConfig.from_dict(
        "default",
        {
            "CLIENT_ID": "id",
            "CLIENT_SECRET": SECRET,
            "AUTH_URL": endless_answer,
            "TOKEN_DEADLINE": 5,
            "TOKEN_RETRIES": 0,
        },
        check_cache=False,
    )
    started = time.monotonic()
    with pytest.raises(BadTokenResponse, match="sent more than 65536 bytes"):
        TokenEndpoint(config).fetch()
    assert time.monotonic() - started < 2.5  # long before the deadline would cut it


def test_a_trickling_https_token_endpoint_is_cut_at_the_deadline(
    silent_https: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = silent_https
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    config = AliasConfig.from_dict(
        "default",
        {
            "CLIENT_ID": "id",
            "CLIENT_SECRET": SECRET,
            "AUTH_URL": url.removesuffix("/token"),
            "TOKEN_PATH": "/trickle",
            "TOKEN_DEADLINE": 0.3,
            "TOKEN_RETRIES": 0,
        },
        check_cache=False,
    )
    started = time.monotonic()
    with pytest.raises(TokenEndpointUnavailable) as err:
        TokenEndpoint(config).fetch()
    assert time.monotonic() - started < 2  # the answer would have trickled on for 5 s
    assert err.value.cause == "no complete answer within TOKEN_DEADLINE (0.3 s)"


def test_a_token_answer_of_exactly_64_kib_is_read(make_server: ServerFactory) -> None:
    server = make_server(SECRET)
    answer = b'{"access_token": "parts-token-64k", "expires_in": 300}'
    server.inject(Fault.body(answer + b" " * (65536 - len(answer))))
    config = AliasConfig.from_dict("default", server.settings(), check_cache=False)
    assert TokenEndpoint(config).fetch().token.access_token == "parts-token-64k"


def test_a_failed_attempts_date_still_tells_the_skew(make_server: ServerFactory) -> None:
    server = make_server(SECRET, clock=FakeClock(1_800_000_000.0))
    clock = FakeClock(1_800_000_000.0)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        server.date_header = False  # the answer after the wait has no Date

    server.date_offset = 600
    server.inject(Fault.status(503))
    config = AliasConfig.from_dict("default", server.settings(), check_cache=False)
    result = TokenEndpoint(config, clock=clock, sleep=sleep, rng=WorstJitter()).fetch()
    assert result.attempts == 2
    assert result.skew == 600.0 and result.token.skew == 600.0


def test_only_line_endings_are_trimmed_from_a_secret() -> None:
    secret = secrets_with(lambda: "X parts-secret X\t\r\n").read(1)
    assert secret.value == "X parts-secret X\t"  # spaces, tabs and letters are the secret's own
    assert repr(secret) == "<Secret CLIENT_SECRET_FALLBACKS[0]>"
