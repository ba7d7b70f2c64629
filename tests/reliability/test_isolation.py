"""Isolation: a token reaches only the credentials, the cache namespace and the host it is for.

* Two credential sets sharing one Redis (same key prefix) never get each other's token, even
  under the same alias name.
* Two sites sharing one Redis under different ``KEY_PREFIX``es with the same credentials each
  fetch and keep their own token, and never read the other's token, revocation marker, failure
  memory or lock.
* The token is never sent to a host other than ``API_URL``'s: not across redirect chains, not
  to another port of the same host, not over plain http when ``API_URL`` is https, and not by
  ``TradevestAuth`` used with plain ``requests``. (Absolute URLs to other hosts and a single
  redirect to another host name are covered in ``tests/test_sessions.py``.)
"""

from __future__ import annotations

import ipaddress
import random
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
import redis
import requests
from django.core.cache.backends.redis import RedisCache

from tests.helpers import FakeClock, ServerFactory
from tests.reliability import figures
from tradevest_django import TradevestAuth, get_session
from tradevest_django.exceptions import InvalidClient
from tradevest_django.manager import TokenManager
from tradevest_django.rejections import REJECTION_WINDOW
from tradevest_django.testing import FakeTradevestServer, Fault, delete_redis_prefix
from tradevest_django.tokens import Token

PERSON = "0b9e2a44-6d1c-4f7e-8a35-5c2f1e9d7b60"
TIMEOUT = (2.0, 5.0)

# -- caches ------------------------------------------------------------------------------------


@pytest.fixture
def server(make_server: ServerFactory, clock: FakeClock) -> FakeTradevestServer:
    fake = make_server("isolation-secret-H4w", clock=clock)
    fake.clients["other-client"] = "other-secret-Jq2"
    return fake


@pytest.fixture
def key_prefixes(redis_url: str) -> Iterator[list[str]]:
    """Unique key prefixes for this test; every key under them is deleted afterwards."""
    prefixes = [f"tviso-{uuid.uuid4().hex[:12]}-{n}" for n in range(2)]
    yield prefixes
    for prefix in prefixes:
        delete_redis_prefix(redis_url, prefix)


def _raw_values(redis_url: str, prefix: str) -> list[bytes]:
    """Every value stored under ``prefix``, as the bytes Redis holds (pickles, for Django)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=500))
        values = [client.get(key) for key in keys]
    finally:
        client.close()
    return [value for value in values if isinstance(value, bytes)]


def _owner(server: FakeTradevestServer, token: Token) -> str:
    """The client id the server issued ``token`` to, asked through its API."""
    response = requests.get(
        server.url + "/whoami", headers={"Authorization": token.authorization}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.status_code
    owner = response.json()["client_id"]
    assert isinstance(owner, str)
    return owner


@dataclass
class Process:
    """One worker process of one project: a manager with its own cache connection."""

    client_id: str
    manager: TokenManager


@pytest.mark.redis
def test_two_clients_sharing_one_redis_never_get_each_others_token(
    redis_url: str, key_prefixes: list[str], server: FakeTradevestServer, clock: FakeClock
) -> None:
    prefix = key_prefixes[0]
    secrets = {server.client_id: server.client_secret, "other-client": "other-secret-Jq2"}
    # Two aliases of one project, and a second project that calls its alias "default" too.
    identities = [
        ("default", server.client_id),
        ("other", "other-client"),
        ("default", "other-client"),
    ]

    def start(alias: str, client_id: str) -> Process:
        manager = TokenManager.from_options(
            alias,
            server.settings(CLIENT_ID=client_id, CLIENT_SECRET=secrets[client_id]),
            cache=RedisCache(redis_url, {"KEY_PREFIX": prefix}),
            clock=clock,
            sleep=clock.sleep,
        )
        return Process(client_id, manager)

    processes = [start(alias, client_id) for alias, client_id in identities for _ in range(2)]
    seen: dict[str, set[str]] = {server.client_id: set(), "other-client": set()}
    rng = random.Random(20261128)
    operations = 0
    for _ in range(60):
        process = rng.choice(processes)
        action = rng.choice(["get", "get", "get", "invalidate", "restart", "refresh-window"])
        if action == "restart":  # a new process of the same identity: starts from the cache
            processes[processes.index(process)] = start(process.manager.alias, process.client_id)
            continue
        if action == "refresh-window":
            clock.advance(3600 - 30 - 200)  # the refresh window of every current token
        token = process.manager.get_token()
        thread = process.manager._refresh_thread
        if thread is not None:
            thread.join(timeout=10)
            assert not thread.is_alive()
        if action == "invalidate":
            process.manager.invalidate(token)
            token = process.manager.get_token()
        if action == "refresh-window":
            token = process.manager.get_token()  # the refreshed one, if the refresh was ours
        assert _owner(server, token) == process.client_id, "a token of another client"
        seen[process.client_id].add(token.access_token)
        operations += 1
    figures.count("isolation_operations_checked", operations)
    assert seen[server.client_id] and seen["other-client"]
    assert not seen[server.client_id] & seen["other-client"]
    keys = {process.manager.shared.token_key for process in processes}
    assert len(keys) == 2  # one shared token per credential set, whatever the alias is called


@pytest.mark.redis
def test_two_sites_with_the_same_credentials_keep_their_own_tokens(
    redis_url: str, key_prefixes: list[str], server: FakeTradevestServer, clock: FakeClock
) -> None:
    def site_process(prefix: str) -> TokenManager:
        return TokenManager.from_options(
            "default",
            server.settings(),
            cache=RedisCache(redis_url, {"KEY_PREFIX": prefix}),
            clock=clock,
            sleep=clock.sleep,
        )

    one, two = key_prefixes
    first_one, first_two = site_process(one), site_process(two)
    token_one = first_one.get_token()
    token_two = first_two.get_token()
    assert token_one != token_two  # the second site could not see the first's token
    assert server.token_request_count == 2
    assert site_process(one).get_token() == token_one  # each site's next process: its own
    assert site_process(two).get_token() == token_two
    assert server.token_request_count == 2

    def stored_under(prefix: str, token: Token) -> bool:
        return any(token.access_token.encode() in value for value in _raw_values(redis_url, prefix))

    assert stored_under(one, token_one) and not stored_under(one, token_two)
    assert stored_under(two, token_two) and not stored_under(two, token_one)

    # A revocation in one site is not seen by the other.
    first_one.invalidate(token_one)
    token_three = site_process(one).get_token()
    assert token_three not in (token_one, token_two)
    assert site_process(two).get_token() == token_two

    # A remembered refusal in one site does not stop the other.
    clock.advance(REJECTION_WINDOW + 1)  # not "a fresh token rejected too": no cooldown
    assert first_one.invalidate(token_three)
    server.inject(Fault.error("invalid_client"))
    with pytest.raises(InvalidClient):
        first_one.get_token()
    with pytest.raises(InvalidClient) as remembered:
        site_process(one).get_token()
    assert remembered.value.remembered
    first_two.invalidate(token_two)
    requests_before = server.token_request_count
    token_four = site_process(two).get_token()
    assert server.token_request_count == requests_before + 1
    assert token_four not in (token_one, token_two, token_three)

    # A refresh lock held in one site does not make the other wait.
    holder = site_process(one)
    assert holder.shared.acquire_lock(30) is not None
    sleeps_before = len(clock.sleeps)
    third = site_process(two)
    clock.advance(REJECTION_WINDOW + 1)
    assert third.invalidate(token_four)
    assert third.get_token() not in (token_one, token_two, token_three, token_four)
    assert len(clock.sleeps) == sleeps_before


# -- hosts -------------------------------------------------------------------------------------


@pytest.fixture
def api(tradevest_settings: FakeTradevestServer) -> FakeTradevestServer:
    return tradevest_settings


@pytest.fixture
def outsiders() -> Iterator[list[FakeTradevestServer]]:
    with (
        FakeTradevestServer(client_secret="outsider-1") as one,
        FakeTradevestServer(client_secret="outsider-2") as two,
    ):
        yield [one, two]


def _redirect(via: str, to: str) -> str:
    """A URL on ``via`` (a fake server) that answers 302 to ``to``."""
    return f"{via}/redirect?to={quote(to, safe='')}"


def _assert_nothing_reached(
    outsiders: list[FakeTradevestServer], header: str = "Authorization"
) -> int:
    """Assert that no request to an outsider carried ``header``; return how many there were."""
    seen = 0
    for outsider in outsiders:
        for request in outsider.api_requests:
            assert header not in request.headers, (header, outsider.url, request.path)
            seen += 1
    return seen


def _assert_nothing_of_ours_reached(outsiders: list[FakeTradevestServer]) -> int:
    _assert_nothing_reached(outsiders, "Requestor-ID")
    return _assert_nothing_reached(outsiders, "Authorization")


def test_redirect_to_another_port_of_the_api_host(
    api: FakeTradevestServer, outsiders: list[FakeTradevestServer]
) -> None:
    other_port = outsiders[0].url  # http://127.0.0.1:<another port>
    assert urlsplit(other_port).hostname == urlsplit(api.url).hostname
    with get_session(requestor_id=PERSON) as session:
        response = session.get("/redirect", params={"to": other_port + "/landing"})
    assert response.status_code == 401  # the outsider wants a token it never got
    assert _assert_nothing_of_ours_reached(outsiders) == 1
    assert api.api_requests[0].token == api.issued_tokens[0]  # the API itself had it


def test_redirect_chains_never_carry_the_token_off_the_api_host(
    api: FakeTradevestServer, outsiders: list[FakeTradevestServer]
) -> None:
    one, two = outsiders
    two_by_name = two.url.replace("127.0.0.1", "localhost")
    userinfo_trick = f"http://{urlsplit(api.url).netloc}@{urlsplit(two_by_name).netloc}/trick"
    chains = [
        # within the API twice, then out to another port, then to another host name
        _redirect(api.url, _redirect(api.url, _redirect(one.url, two_by_name + "/end"))),
        # out and on, never back
        _redirect(one.url, _redirect(two_by_name, one.url + "/end")),
        # a Location whose user-info is the API's host:port
        _redirect(api.url, userinfo_trick),
    ]
    with get_session(requestor_id=PERSON) as session:
        for chain in chains:
            session.get(chain)
        session.get(userinfo_trick)
    reached = _assert_nothing_of_ours_reached(outsiders)
    assert reached == 2 + 3 + 1 + 1
    assert {request.path for request in two.api_requests} >= {"/trick", "/end"}
    on_api = [request for request in api.api_requests if request.path == "/redirect"]
    assert len(on_api) == 3 and all(r.token == api.issued_tokens[0] for r in on_api)
    figures.maximum("redirect_hops_followed_in_one_chain", 3)


def test_redirect_chain_that_returns_never_leaks_on_the_way(
    api: FakeTradevestServer, outsiders: list[FakeTradevestServer]
) -> None:
    there_and_back = _redirect(api.url, _redirect(outsiders[0].url, api.url + "/landing"))
    with get_session(requestor_id=PERSON) as session:
        session.get(there_and_back)
    assert _assert_nothing_of_ours_reached(outsiders) == 1
    assert [request.path for request in api.api_requests] == ["/redirect", "/landing"]


def test_redirect_chain_that_returns_to_the_api_is_authorized_again(
    api: FakeTradevestServer, outsiders: list[FakeTradevestServer]
) -> None:
    """Back on the API host the request carries the token again (after leaving without it)."""
    there_and_back = _redirect(api.url, _redirect(outsiders[0].url, api.url + "/landing"))
    with get_session(requestor_id=PERSON) as session:
        response = session.get(there_and_back)
    landing = api.api_requests[-1]
    assert landing.path == "/landing"
    assert landing.token == api.issued_tokens[-1], "the API host got the request without a token"
    assert response.status_code == 200


def _plain_requests_through_redirects(
    api: FakeTradevestServer, outsiders: list[FakeTradevestServer]
) -> None:
    one, two = outsiders
    auth = TradevestAuth(requestor_id=PERSON)
    away = requests.get(
        _redirect(api.url, _redirect(one.url, two.url + "/end")), auth=auth, timeout=TIMEOUT
    )
    within = requests.get(_redirect(api.url, api.url + "/inside"), auth=auth, timeout=TIMEOUT)
    assert away.status_code == 401 and within.status_code == 200


def test_tradevest_auth_with_plain_requests_keeps_the_token_on_the_api_host(
    api: FakeTradevestServer, outsiders: list[FakeTradevestServer]
) -> None:
    _plain_requests_through_redirects(api, outsiders)
    assert _assert_nothing_reached(outsiders, "Authorization") == 2
    inside = api.api_requests[-1]
    assert inside.path == "/inside" and inside.token == api.issued_tokens[0]
    assert inside.headers["Requestor-ID"] == PERSON


def test_tradevest_auth_with_plain_requests_keeps_requestor_id_on_the_api_host(
    api: FakeTradevestServer, outsiders: list[FakeTradevestServer]
) -> None:
    """Requestor-ID names a natural person: like the token, it is for the API host only."""
    _plain_requests_through_redirects(api, outsiders)
    assert _assert_nothing_reached(outsiders, "Requestor-ID") == 2


# -- https -> http -----------------------------------------------------------------------------


def _certificates(directory: Path) -> tuple[Path, Path]:
    """A throw-away CA and a certificate for 127.0.0.1 signed by it: (ca.pem, server.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(timezone.utc)

    def builder(subject: str, issuer: str, public_key: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    ca = (
        builder("tradevest-django test CA", "tradevest-django test CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_usage, critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        builder("127.0.0.1", "tradevest-django test CA", key.public_key())
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, server_path = directory / "ca.pem", directory / "server.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_path.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, server_path


@dataclass(frozen=True)
class Seen:
    scheme: str
    path: str
    authorization: str | None


class _DualHandler(BaseHTTPRequestHandler):
    server: DualProtocolServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
        with self.server.lock:
            self.server.seen.append(Seen(scheme, url.path, self.headers.get("Authorization")))
        target = parse_qs(url.query).get("to", [""])[0]
        self.send_response(302 if target else 200)
        if target:
            self.send_header("Location", target)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


class DualProtocolServer(ThreadingHTTPServer):
    """Serves https and plain http on one loopback port (it peeks at each connection's first
    byte), so that a redirect from https://host:port to http://host:port can be observed."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, certificate: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificate)
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _DualHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = self.socket.accept()
        connection.settimeout(5)
        if connection.recv(1, socket.MSG_PEEK) == b"\x16":  # a TLS handshake record
            connection = self.context.wrap_socket(connection, server_side=True)
        return connection, address


@pytest.fixture
def dual(tmp_path: Path) -> Iterator[tuple[DualProtocolServer, Path]]:
    ca, certificate = _certificates(tmp_path)
    server = DualProtocolServer(certificate)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield server, ca
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_https_api_never_sends_the_token_over_plain_http(
    settings: Any, api: FakeTradevestServer, dual: tuple[DualProtocolServer, Path]
) -> None:
    server, ca = dual
    port = server.server_address[1]
    settings.TRADEVEST = {"default": api.settings(API_URL=f"https://127.0.0.1:{port}")}
    plain = f"http://127.0.0.1:{port}"
    with get_session(requestor_id=PERSON) as session:
        # Per request: REQUESTS_CA_BUNDLE, when set, would override a session-wide verify.
        downgraded = session.get("/redirect", params={"to": plain + "/downgraded"}, verify=str(ca))
        direct = session.get(plain + "/direct", verify=str(ca))
    assert downgraded.status_code == 200 and direct.status_code == 200
    assert [(s.scheme, s.path) for s in server.seen] == [
        ("https", "/redirect"),
        ("http", "/downgraded"),
        ("http", "/direct"),
    ]
    assert server.seen[0].authorization == "Bearer " + api.issued_tokens[0]
    assert [s.authorization for s in server.seen[1:]] == [None, None]
