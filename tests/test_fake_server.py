"""Tests of the fake Tradevest server itself, through real HTTP on loopback."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from email.utils import formatdate

import pytest
import requests
from freezegun import freeze_time

from tests.helpers import FakeClock, ServerFactory
from tradevest_django.testing import FakeTradevestServer, Fault

TIMEOUT = (2.0, 5.0)
FORM = "application/x-www-form-urlencoded"
NOW = 1_800_000_000.0


@pytest.fixture
def clock() -> FakeClock:
    """Fixed at :data:`NOW`, so expected Date headers can be written down."""
    return FakeClock(NOW)


@pytest.fixture
def fake(make_server: ServerFactory, clock: FakeClock) -> FakeTradevestServer:
    return make_server(clock=clock)


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as executor:
        yield executor


def credentials(**overrides: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": "test-client",
        "client_secret": "test-secret",
        **overrides,
    }


def post_token(
    fake: FakeTradevestServer, http: requests.Session, **kwargs: object
) -> requests.Response:
    kwargs.setdefault("data", credentials())
    kwargs.setdefault("timeout", TIMEOUT)
    return http.post(fake.token_url, **kwargs)  # type: ignore[arg-type]


def fetch_token(fake: FakeTradevestServer, http: requests.Session) -> str:
    response = post_token(fake, http)
    assert response.status_code == 200
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def call_api(
    fake: FakeTradevestServer, http: requests.Session, token: str | None, path: str = "/v1/things"
) -> requests.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return http.get(fake.url + path, headers=headers, timeout=TIMEOUT, allow_redirects=False)


def assert_oauth_error(response: requests.Response, error: str, status: int = 400) -> None:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"error": error}


# The token endpoint


def test_valid_token_request_is_answered_and_the_token_works_on_the_api(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    response = post_token(fake, http)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert int(response.headers["Content-Length"]) == len(response.content)
    body = response.json()
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert body["access_token"].startswith("tvfake_")
    assert body["expires_in"] == 3600
    assert body["token_type"] == "Bearer"
    assert fake.issued_tokens == [body["access_token"]]

    api = http.get(
        fake.url + "/v1/persons",
        headers={"Authorization": f"Bearer {body['access_token']}", "Requestor-ID": "p-1"},
        timeout=TIMEOUT,
    )
    assert api.status_code == 200
    assert api.json() == {
        "ok": True,
        "method": "GET",
        "path": "/v1/persons",
        "requestor_id": "p-1",
        "client_id": "test-client",
    }


def test_token_request_is_recorded(
    fake: FakeTradevestServer, http: requests.Session, clock: FakeClock
) -> None:
    post_token(fake, http, data=credentials(scope="tradevest.api"))

    [record] = fake.token_requests
    assert fake.token_request_count == 1
    assert (record.method, record.path, record.query) == ("POST", "/oauth2/token", "")
    assert record.headers["content-type"] == FORM
    assert record.headers["CONTENT-TYPE"] == FORM
    assert "client_secret=test-secret" in record.body.decode()
    assert record.form == {
        "grant_type": ["client_credentials"],
        "client_id": ["test-client"],
        "client_secret": ["test-secret"],
        "scope": ["tradevest.api"],
    }
    assert record.received_at == clock.now


def test_scope_is_accepted_and_echoed(fake: FakeTradevestServer, http: requests.Session) -> None:
    response = post_token(fake, http, data=credentials(scope="tradevest.api other"))

    assert response.status_code == 200
    assert response.json()["scope"] == "tradevest.api other"


def test_token_lifetime_knob_applies_to_later_tokens(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    fake.token_lifetime = 300

    assert post_token(fake, http).json()["expires_in"] == 300


def test_charset_parameter_is_accepted(fake: FakeTradevestServer, http: requests.Session) -> None:
    response = post_token(
        fake, http, headers={"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}
    )

    assert response.status_code == 200


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded; charset=latin-1",
        "application/x-www-form-urlencoded; boundary=x",
    ],
)
def test_wrong_content_type_is_invalid_request(
    fake: FakeTradevestServer, http: requests.Session, content_type: str | None
) -> None:
    body = "grant_type=client_credentials&client_id=test-client&client_secret=test-secret"
    headers = {} if content_type is None else {"Content-Type": content_type}

    response = post_token(fake, http, data=body.encode(), headers=headers)

    assert_oauth_error(response, "invalid_request")
    assert response.headers["Cache-Control"] == "no-store"


def test_query_string_is_invalid_request(fake: FakeTradevestServer, http: requests.Session) -> None:
    response = http.post(
        fake.token_url + "?client_id=test-client", data=credentials(), timeout=TIMEOUT
    )

    assert_oauth_error(response, "invalid_request")
    assert fake.token_requests[0].query == "client_id=test-client"
    assert fake.issued_tokens == []


@pytest.mark.parametrize("field", ["grant_type", "client_id", "client_secret"])
def test_missing_field_is_invalid_request(
    fake: FakeTradevestServer, http: requests.Session, field: str
) -> None:
    data = credentials()
    del data[field]

    assert_oauth_error(post_token(fake, http, data=data), "invalid_request")


@pytest.mark.parametrize("field", ["grant_type", "client_id", "client_secret"])
def test_empty_field_counts_as_missing(
    fake: FakeTradevestServer, http: requests.Session, field: str
) -> None:
    assert_oauth_error(post_token(fake, http, data=credentials(**{field: ""})), "invalid_request")


@pytest.mark.parametrize("field", ["grant_type", "client_id", "client_secret", "scope"])
def test_repeated_field_is_invalid_request(
    fake: FakeTradevestServer, http: requests.Session, field: str
) -> None:
    data = [*credentials(scope="a").items(), (field, credentials(scope="b")[field])]

    assert_oauth_error(post_token(fake, http, data=data), "invalid_request")


@pytest.mark.parametrize("body", [b"", b"grant_type", b"client_id=%ff", b"\xff=1"])
def test_malformed_form_is_invalid_request(
    fake: FakeTradevestServer, http: requests.Session, body: bytes
) -> None:
    response = post_token(fake, http, data=body, headers={"Content-Type": FORM})

    assert_oauth_error(response, "invalid_request")
    assert fake.token_requests[0].form == {}
    assert fake.token_requests[0].body == body


@pytest.mark.parametrize("grant_type", ["password", "authorization_code", "CLIENT_CREDENTIALS"])
def test_other_grant_type_is_unsupported(
    fake: FakeTradevestServer, http: requests.Session, grant_type: str
) -> None:
    response = post_token(fake, http, data=credentials(grant_type=grant_type))

    assert_oauth_error(response, "unsupported_grant_type")


@pytest.mark.parametrize(
    "overrides",
    [{"client_secret": "wrong"}, {"client_id": "nobody"}, {"client_secret": "test-secret "}],
)
def test_bad_credentials_are_invalid_client(
    fake: FakeTradevestServer, http: requests.Session, overrides: dict[str, str]
) -> None:
    response = post_token(fake, http, data=credentials(**overrides))

    assert_oauth_error(response, "invalid_client")
    assert "WWW-Authenticate" not in response.headers


def test_invalid_client_status_can_be_401_with_a_basic_challenge(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    fake.invalid_client_status = 401

    response = post_token(fake, http, data=credentials(client_secret="wrong"))

    assert_oauth_error(response, "invalid_client", status=401)
    assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_are_405_and_recorded(
    fake: FakeTradevestServer, http: requests.Session, method: str
) -> None:
    response = http.request(method, fake.token_url, timeout=TIMEOUT)

    assert_oauth_error(response, "invalid_request", status=405)
    assert response.headers["Allow"] == "POST"
    assert [r.method for r in fake.token_requests] == [method]


def test_chunked_request_body_is_read(fake: FakeTradevestServer, http: requests.Session) -> None:
    body = "grant_type=client_credentials&client_id=test-client&client_secret=test-secret"
    chunks = iter([body[:20].encode(), body[20:].encode()])

    response = post_token(fake, http, data=chunks, headers={"Content-Type": FORM})

    assert response.status_code == 200
    assert fake.token_requests[0].body == body.encode()
    assert post_token(fake, http).status_code == 200
    assert fake.connections_opened == 1


@pytest.mark.parametrize(
    "framing", [{"Content-Length": "-1"}, {"Content-Length": "x"}, {"Transfer-Encoding": "gzip"}]
)
def test_broken_body_framing_is_400_and_closes(
    fake: FakeTradevestServer, http: requests.Session, framing: dict[str, str]
) -> None:
    request = requests.Request("POST", fake.token_url, headers=framing).prepare()

    response = http.send(request, timeout=TIMEOUT)

    assert response.status_code == 400
    assert response.headers["Connection"] == "close"


def test_a_second_client_gets_its_own_tokens(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    fake.clients["other-client"] = "other-secret"
    response = post_token(
        fake, http, data=credentials(client_id="other-client", client_secret="other-secret")
    )

    token = response.json()["access_token"]
    assert call_api(fake, http, token).json()["client_id"] == "other-client"
    assert call_api(fake, http, fetch_token(fake, http)).json()["client_id"] == "test-client"


# The protected API


def test_api_without_a_token_is_401_without_an_error_code(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    response = call_api(fake, http, None)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    body = response.json()
    assert body["responseType"] == "UNAUTHORIZED"
    assert body["message"]
    uuid.UUID(body["requestId"])


@pytest.mark.parametrize("authorization", ["Bearer nope", "Basic dGVzdDp0ZXN0", "Bearer "])
def test_api_with_a_bad_token_is_401(
    fake: FakeTradevestServer, http: requests.Session, authorization: str
) -> None:
    response = http.get(
        fake.url + "/v1/x", headers={"Authorization": authorization}, timeout=TIMEOUT
    )

    assert response.status_code == 401
    assert response.json()["responseType"] == "UNAUTHORIZED"
    if authorization == "Bearer nope":
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_bearer_scheme_is_case_insensitive(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    token = fetch_token(fake, http)

    response = http.get(
        fake.url + "/x", headers={"Authorization": f"bEaReR {token}"}, timeout=TIMEOUT
    )

    assert response.status_code == 200


def test_api_requests_are_recorded(fake: FakeTradevestServer, http: requests.Session) -> None:
    token = fetch_token(fake, http)
    http.post(
        fake.url + "/v1/orders?x=1",
        json={"a": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=TIMEOUT,
    )
    call_api(fake, http, "bogus")

    ok, rejected = fake.api_requests
    assert (ok.method, ok.path, ok.query, ok.status, ok.token) == (
        "POST",
        "/v1/orders",
        "x=1",
        200,
        token,
    )
    assert ok.body == b'{"a": 1}'
    assert ok.headers["authorization"] == f"Bearer {token}"
    assert (rejected.status, rejected.token) == (401, "bogus")
    assert fake.api_unauthorized_count == 1


def test_status_path_answers_that_status_after_auth(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    token = fetch_token(fake, http)

    assert call_api(fake, http, None, "/status/503").status_code == 401
    response = call_api(fake, http, token, "/status/503")
    assert response.status_code == 503
    assert response.json()["responseType"] == "SERVICE_UNAVAILABLE"
    assert call_api(fake, http, token, "/status/204").content == b""
    unauthorized = call_api(fake, http, token, "/status/401")
    assert unauthorized.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert fake.api_unauthorized_count == 2


def test_redirect_needs_no_token(fake: FakeTradevestServer, http: requests.Session) -> None:
    response = call_api(fake, http, None, "/redirect?to=https%3A%2F%2Fexample.invalid%2Fx")

    assert response.status_code == 302
    assert response.headers["Location"] == "https://example.invalid/x"


def test_head_gets_headers_only(fake: FakeTradevestServer, http: requests.Session) -> None:
    token = fetch_token(fake, http)

    response = http.head(
        fake.url + "/x", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT
    )

    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["Content-Length"]) > 0


def test_token_expires_by_the_server_clock(
    clock: FakeClock, fake: FakeTradevestServer, http: requests.Session
) -> None:
    fake.token_lifetime = 60
    token = fetch_token(fake, http)

    clock.advance(59.9)
    assert call_api(fake, http, token).status_code == 200
    clock.advance(0.1)
    assert call_api(fake, http, token).status_code == 401


def test_revoked_token_is_401(fake: FakeTradevestServer, http: requests.Session) -> None:
    token, other = fetch_token(fake, http), fetch_token(fake, http)

    fake.revoke(token)

    assert call_api(fake, http, token).status_code == 401
    assert call_api(fake, http, other).status_code == 200


# Faults


def test_error_fault(fake: FakeTradevestServer, http: requests.Session) -> None:
    fake.inject(Fault.error("invalid_client", status=401, description="secret rotated"))

    response = post_token(fake, http)

    assert response.status_code == 401
    assert response.json() == {"error": "invalid_client", "error_description": "secret rotated"}


def test_status_fault_with_retry_after(fake: FakeTradevestServer, http: requests.Session) -> None:
    fake.inject(
        Fault.status(503, body=b"<h1>down</h1>", content_type="text/html", retry_after="3"),
        Fault.status(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
    )

    first, second = post_token(fake, http), post_token(fake, http)

    assert (first.status_code, first.content) == (503, b"<h1>down</h1>")
    assert first.headers["Content-Type"] == "text/html"
    assert first.headers["Retry-After"] == "3"
    assert second.status_code == 429
    assert second.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"


@pytest.mark.parametrize(
    ("fault", "content_type"),
    [
        (Fault.body(b'{"access_token": "x"'), "application/json"),
        (Fault.body(b"<html>maintenance</html>", content_type="text/html"), "text/html"),
    ],
)
def test_malformed_200_faults(
    fake: FakeTradevestServer, http: requests.Session, fault: Fault, content_type: str
) -> None:
    fake.inject(fault)

    response = post_token(fake, http)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.content == fault.content
    with pytest.raises(requests.JSONDecodeError):
        response.json()


def test_json_fault(fake: FakeTradevestServer, http: requests.Session) -> None:
    fake.inject(Fault.json({"access_token": "abc", "expires_in": "soon"}))

    response = post_token(fake, http)

    assert response.status_code == 200
    assert response.json() == {"access_token": "abc", "expires_in": "soon"}
    assert fake.issued_tokens == []


def test_body_fault_without_content_type(fake: FakeTradevestServer, http: requests.Session) -> None:
    fake.inject(Fault.body(b"{}", content_type=None))

    assert "Content-Type" not in post_token(fake, http).headers


def test_reset_fault_breaks_the_connection_mid_body(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    fake.inject(Fault.reset())

    with pytest.raises((requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        post_token(fake, http)
    assert fake.token_request_count == 1
    assert post_token(fake, http).status_code == 200


def test_hang_fault_triggers_the_client_read_timeout(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    fake.inject(Fault.hang(30))

    with pytest.raises(requests.ReadTimeout):
        post_token(fake, http, timeout=(2.0, 0.2))
    assert post_token(fake, http).status_code == 200


def test_fault_delay_postpones_the_answer(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    fake.inject(Fault.error("invalid_request", delay=0.3), Fault.error("invalid_request", delay=30))

    started = time.monotonic()
    response = post_token(fake, http)
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 400
    with pytest.raises(requests.ReadTimeout):
        post_token(fake, http, timeout=(2.0, 0.2))


def test_token_delay_postpones_normal_answers(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    fake.token_delay = 0.2

    started = time.monotonic()
    assert post_token(fake, http).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_api_delay_postpones_api_answers(fake: FakeTradevestServer, http: requests.Session) -> None:
    fake.api_delay = 30

    with pytest.raises(requests.ReadTimeout):
        http.get(fake.url + "/x", timeout=(2.0, 0.2))
    assert fake.api_unauthorized_count == 1


def test_faults_are_consumed_in_order_then_service_resumes(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    fake.inject(Fault.status(500), Fault.error("invalid_grant"))
    fake.inject(Fault.status(502))

    statuses = [post_token(fake, http).status_code for _ in range(4)]

    assert statuses == [500, 400, 502, 200]
    assert fake.token_request_count == 4
    assert len(fake.issued_tokens) == 1


def test_clear_faults(fake: FakeTradevestServer, http: requests.Session) -> None:
    fake.inject(Fault.status(500), Fault.status(500))

    fake.clear_faults()

    assert post_token(fake, http).status_code == 200


def test_fault_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="delay"):
        Fault.hang(-1)
    with pytest.raises(ValueError, match="status"):
        Fault.status(42)


# Clocks and the Date header


def test_date_header_honours_date_offset(clock: FakeClock, http: requests.Session) -> None:
    with FakeTradevestServer(clock=clock, date_offset=-120) as fake:
        token_response = post_token(fake, http)
        api_response = call_api(fake, http, None)

    expected = formatdate(NOW - 120, usegmt=True)
    assert token_response.headers["Date"] == expected
    assert api_response.headers["Date"] == expected


def test_default_clock_follows_freezegun(http: requests.Session) -> None:
    with FakeTradevestServer() as fake, freeze_time("2031-05-06 07:08:09"):
        response = post_token(fake, http)

    assert response.headers["Date"] == "Tue, 06 May 2031 07:08:09 GMT"


# Connections and lifecycle


def test_keep_alive_reuses_one_connection(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    token = fetch_token(fake, http)
    post_token(fake, http, data=credentials(client_secret="wrong"))
    call_api(fake, http, token)
    call_api(fake, http, None)
    http.post(
        fake.url + "/x", data=b"body", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT
    )

    assert fake.connections_opened == 1


def test_each_new_session_opens_a_connection(fake: FakeTradevestServer) -> None:
    for _ in range(3):
        with requests.Session() as session:
            fetch_token(fake, session)

    assert fake.connections_opened == 3


def test_stop_cuts_a_hang_short(fake: FakeTradevestServer, pool: ThreadPoolExecutor) -> None:
    fake.inject(Fault.hang(60))
    pending = pool.submit(requests.post, fake.token_url, data=credentials(), timeout=(2.0, 30.0))
    assert fake.wait_until(lambda: fake.token_request_count == 1, timeout=5)

    assert_stops_promptly(fake, pending)


def test_stop_cuts_a_token_delay_short(fake: FakeTradevestServer, pool: ThreadPoolExecutor) -> None:
    fake.token_delay = 60
    pending = pool.submit(requests.post, fake.token_url, data=credentials(), timeout=(2.0, 30.0))
    assert fake.wait_until(lambda: fake.token_request_count == 1, timeout=5)

    assert_stops_promptly(fake, pending)


def test_stop_cuts_an_api_delay_short(fake: FakeTradevestServer, pool: ThreadPoolExecutor) -> None:
    fake.api_delay = 60
    pending = pool.submit(requests.get, fake.url + "/x", timeout=(2.0, 30.0))
    assert fake.wait_until(lambda: len(fake.api_requests) == 1, timeout=5)

    assert_stops_promptly(fake, pending)


def assert_stops_promptly(fake: FakeTradevestServer, pending: Future[requests.Response]) -> None:
    started = time.monotonic()
    fake.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(requests.ConnectionError):
        pending.result(timeout=5)


def test_stop_does_not_wait_for_idle_keep_alive_connections(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    fetch_token(fake, http)

    started = time.monotonic()
    fake.stop()

    assert time.monotonic() - started < 2
    with pytest.raises(requests.ConnectionError):
        post_token(fake, http)


def test_restart_serves_the_same_url(fake: FakeTradevestServer, http: requests.Session) -> None:
    token, url = fetch_token(fake, http), fake.url
    fake.stop()
    fake.stop()

    fake.start()

    assert fake.url == url
    assert call_api(fake, http, token).status_code == 200


def test_start_twice_is_an_error(fake: FakeTradevestServer) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        fake.start()


def test_urls_and_settings() -> None:
    fake = FakeTradevestServer(client_id="cid", client_secret="sec", token_path="/connect/token")
    with pytest.raises(RuntimeError, match="start"):
        fake.url  # noqa: B018

    with fake:
        assert fake.url == f"http://127.0.0.1:{fake.port}"
        assert fake.auth_url == fake.api_url == fake.url
        assert fake.token_url == fake.url + "/connect/token"
        assert fake.settings(TIMEOUT=5) == {
            "CLIENT_ID": "cid",
            "CLIENT_SECRET": "sec",
            "AUTH_URL": fake.url,
            "API_URL": fake.url,
            "TOKEN_PATH": "/connect/token",
            "TIMEOUT": 5,
        }


def test_token_path_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="token_path"):
        FakeTradevestServer(token_path="oauth2/token")


def test_reset_forgets_records_faults_and_revocations_but_not_tokens(
    fake: FakeTradevestServer, http: requests.Session
) -> None:
    token = fetch_token(fake, http)
    fake.revoke(token)
    call_api(fake, http, token)
    fake.inject(Fault.status(500))

    fake.reset()

    assert fake.token_requests == []
    assert fake.api_requests == []
    assert fake.issued_tokens == []
    assert (fake.token_request_count, fake.api_unauthorized_count, fake.connections_opened) == (
        0,
        0,
        0,
    )
    assert call_api(fake, http, token).status_code == 200
    assert post_token(fake, http).status_code == 200


def test_wait_until_gives_up_after_its_timeout(fake: FakeTradevestServer) -> None:
    assert fake.wait_until(lambda: fake.token_request_count > 0, timeout=0.05) is False
