"""Conformance to Tradevest's published OpenAPI document, checked with openapi-core.

* Every request the client sends to the token endpoint, as the fake server recorded it, is a
  valid request of the document's ``get-token`` operation, for several client configurations
  and along every path that makes a token request (first token, retry, refresh, after a 401).
* The package's fake server answers that operation only in shapes the document allows: its 200
  and every 400 error it can produce validate as responses of the operation.

The document is the one the package ships (``tradevest_django.testing.openapi_path()``), so the
suite needs nothing outside the repository and never skips. Its ``servers`` name only
Tradevest's hosts, so the checks use a copy whose only server is the fake's URL.
"""

from __future__ import annotations

import copy
import http.client
import json
import uuid
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from django.core.cache.backends.locmem import LocMemCache
from openapi_core import OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import OpenAPIV30SpecValidator, validate

import tradevest_django
from tests.helpers import FakeClock, ServerFactory
from tests.reliability import figures
from tradevest_django.conf import DEFAULTS, ENVIRONMENTS
from tradevest_django.exceptions import TokenEndpointError, error_class_for
from tradevest_django.manager import TokenManager
from tradevest_django.testing import FakeTradevestServer, Fault, TokenRequestRecord, openapi_path

FORM = "application/x-www-form-urlencoded"
TIMEOUT = (2.0, 5.0)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """The document the package ships (a missing one is an error, never a skip)."""
    document: dict[str, Any] = json.loads(openapi_path().read_text(encoding="utf-8"))
    return document


def resolved(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node``, or what its local ``$ref`` points to."""
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def token_schema(spec: dict[str, Any], where: str) -> dict[str, Any]:
    """The schema of the token operation's request body (``"request"``) or of a response."""
    operation = spec["paths"][DEFAULTS["TOKEN_PATH"]]["post"]
    if where == "request":
        body = resolved(spec, operation["requestBody"])
        return resolved(spec, body["content"][FORM]["schema"])
    response = resolved(spec, operation["responses"][where])
    return resolved(spec, response["content"]["application/json"]["schema"])


def openapi_for(spec: dict[str, Any], server: FakeTradevestServer) -> OpenAPI:
    """The document with the fake server as its only server."""
    local = copy.deepcopy(spec)
    local["servers"] = [{"url": server.url, "description": "FakeTradevestServer"}]
    return OpenAPI.from_dict(local)


def mock_request(server: FakeTradevestServer, record: TokenRequestRecord) -> MockRequest:
    """openapi-core's view of a request exactly as the fake server received it."""
    headers = dict(record.headers)
    return MockRequest(
        server.url,
        record.method,
        record.path,
        args={name: values[0] for name, values in parse_qs(record.query).items()},
        headers=headers,
        data=record.body,
        # A missing Content-Type must fail the body check, not default to the expected one.
        content_type=record.headers.get("Content-Type", ""),
    )


def token_operation_request(server: FakeTradevestServer) -> MockRequest:
    """A request of the token operation, to look its responses up with."""
    return MockRequest(
        server.url, "POST", server.token_path, headers={"Content-Type": FORM}, content_type=FORM
    )


def mock_response(response: requests.Response | http.client.HTTPResponse, body: bytes) -> Any:
    status = response.status_code if isinstance(response, requests.Response) else response.status
    headers = dict(response.headers.items())
    return MockResponse(
        body, status_code=status, headers=headers, content_type=headers.get("Content-Type", "")
    )


def scope_is_allowed(spec: dict[str, Any]) -> bool:
    """Whether the document lets a token request carry members it does not list (``scope``)."""
    return token_schema(spec, "request").get("additionalProperties", True) is not False


@pytest.fixture
def server(make_server: ServerFactory, clock: FakeClock) -> FakeTradevestServer:
    return make_server("conformance-secret-N3k", clock=clock)


# -- the document ------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_0(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.0.")
    validate(spec, cls=OpenAPIV30SpecValidator)


def test_the_document_names_the_test_and_pretest_auth_servers(spec: dict[str, Any]) -> None:
    """Tradevest's document lists these two; the settings' ENVIRONMENT defaults agree."""
    urls = [server["url"] for server in spec["servers"]]
    assert urls == [ENVIRONMENTS["test"][0], ENVIRONMENTS["pretest"][0]]


def test_the_document_states_the_contract(spec: dict[str, Any]) -> None:
    """The facts of Tradevest's contract, so an edit of the document cannot lose one unnoticed."""
    request, answer, error = (token_schema(spec, where) for where in ("request", "200", "400"))
    assert sorted(request["required"]) == ["client_id", "client_secret", "grant_type"]
    assert request["properties"]["grant_type"]["default"] == "client_credentials"
    assert sorted(answer["required"]) == ["access_token", "expires_in", "token_type"]
    members = {
        name: (schema["type"], schema.get("default"))
        for name, schema in answer["properties"].items()
    }
    assert members == {
        "access_token": ("string", None),
        "expires_in": ("integer", 3600),
        "token_type": ("string", "Bearer"),
    }
    assert error["required"] == ["error"]
    assert error["properties"]["error"]["enum"] == [
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
    ]
    operation = spec["paths"][DEFAULTS["TOKEN_PATH"]]["post"]
    assert operation["operationId"] == "get-token"
    assert sorted(operation["responses"]) == ["200", "400"]
    (content_type,) = (resolved(spec, p) for p in operation["parameters"])
    assert (content_type["in"], content_type["name"], content_type["required"]) == (
        "header",
        "Content-Type",
        True,
    )
    assert list(resolved(spec, operation["requestBody"])["content"]) == [FORM]


def test_every_error_code_of_the_document_has_its_exception(spec: dict[str, Any]) -> None:
    for code in token_schema(spec, "400")["properties"]["error"]["enum"]:
        specific = error_class_for(code)
        assert specific is not TokenEndpointError, code
        assert issubclass(specific, TokenEndpointError)


# -- requests ----------------------------------------------------------------------------------

CONFIGURATIONS: list[tuple[str, dict[str, object], dict[str, str]]] = [
    ("defaults (no scope)", {}, {}),
    ("credentials that need form escaping", {}, {"id": "tenant+42&x=1 ü", "secret": "s/3=%&+ ü"}),
    ("SCOPE a string", {"SCOPE": "tradevest.api"}, {}),
    ("SCOPE a list", {"SCOPE": ["tradevest.api", "orders"]}, {}),
    ("short timeouts, no retries", {"TOKEN_TIMEOUT": (1, 0.5), "TOKEN_RETRIES": 0}, {}),
]


def test_the_document_has_one_operation_at_the_default_token_path(spec: dict[str, Any]) -> None:
    assert list(spec["paths"]) == [DEFAULTS["TOKEN_PATH"]]
    assert list(spec["paths"][DEFAULTS["TOKEN_PATH"]]) == ["post"]


@pytest.mark.parametrize(
    ("name", "options", "credentials"), CONFIGURATIONS, ids=[c[0] for c in CONFIGURATIONS]
)
def test_every_token_request_validates(
    spec: dict[str, Any],
    server: FakeTradevestServer,
    clock: FakeClock,
    name: str,
    options: dict[str, object],
    credentials: dict[str, str],
) -> None:
    client_id = credentials.get("id", server.client_id)
    secret = credentials.get("secret", server.client_secret)
    server.clients[client_id] = secret
    manager = TokenManager.from_options(
        "default",
        server.settings(CLIENT_ID=client_id, CLIENT_SECRET=secret, **options),
        cache=LocMemCache(f"conformance-{uuid.uuid4().hex}", {}),
        clock=clock,
        sleep=clock.sleep,
    )
    retries = options.get("TOKEN_RETRIES", DEFAULTS["TOKEN_RETRIES"])
    if retries:
        server.inject(Fault.status(503))  # the first token after a retry: two requests
    first = manager.get_token()
    manager.invalidate(first)  # as after a 401 from the API: a new token
    manager.get_token()
    manager.refresh()  # an explicit refresh
    clock.advance(3600 - 30 - 200)  # into the refresh window: a background refresh
    manager.get_token()
    thread = manager._refresh_thread
    assert thread is not None
    thread.join(timeout=10)
    assert not thread.is_alive()

    records = server.token_requests
    assert len(records) == (5 if retries else 4)
    api = openapi_for(spec, server)
    must_fail = "SCOPE" in options and not scope_is_allowed(spec)
    for record in records:
        assert ("scope" in record.form) is ("SCOPE" in options)
        result = api.unmarshal_request(mock_request(server, record))
        assert bool(result.errors) is must_fail, result.errors
        if not must_fail:
            assert result.body == {
                "client_id": client_id,
                "client_secret": secret,
                "grant_type": "client_credentials",
            }  # members the document does not list (scope) are not unmarshalled
    figures.count("token_requests_validated_against_openapi", len(records))


def test_default_settings_path_validates(
    spec: dict[str, Any], tradevest_settings: FakeTradevestServer
) -> None:
    """The alias from settings (``get_token()``), not only a hand-built manager."""
    tradevest_django.get_token()
    (record,) = tradevest_settings.token_requests
    assert "scope" not in record.form
    api = openapi_for(spec, tradevest_settings)
    api.validate_request(mock_request(tradevest_settings, record))
    figures.count("token_requests_validated_against_openapi")


def test_a_nonconforming_request_is_caught(
    spec: dict[str, Any], server: FakeTradevestServer
) -> None:
    """The check above is not vacuous: requests off the contract fail it."""
    api = openapi_for(spec, server)
    form = {"grant_type": "client_credentials", "client_id": "test-client"}
    bad = [
        requests.post(server.token_url, data=form, timeout=TIMEOUT),  # no client_secret
        requests.post(server.token_url, json={**form, "client_secret": "x"}, timeout=TIMEOUT),
        requests.get(server.token_url, timeout=TIMEOUT),
    ]
    assert [response.status_code for response in bad] == [400, 400, 405]
    assert len(server.token_requests) == len(bad)
    for record in server.token_requests:
        with pytest.raises(OpenAPIError):
            api.validate_request(mock_request(server, record))


# -- responses ---------------------------------------------------------------------------------


def _post(server: FakeTradevestServer, **kwargs: Any) -> requests.Response:
    return requests.post(server.token_url, timeout=TIMEOUT, **kwargs)


def _form(**overrides: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": "test-client",
        "client_secret": "conformance-secret-N3k",
        **overrides,
    }


def _raw_bad_framing(server: FakeTradevestServer) -> tuple[http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT[1])
    try:
        connection.putrequest("POST", server.token_path)
        connection.putheader("Content-Type", FORM)
        connection.putheader("Content-Length", "-1")
        connection.endheaders()
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


Answer = tuple[requests.Response | http.client.HTTPResponse, bytes]


def _answer(response: requests.Response) -> Answer:
    return response, response.content


def _short_lived(server: FakeTradevestServer) -> Answer:
    server.token_lifetime = 300
    return _answer(_post(server, data=_form()))


_SECRETLESS = {k: v for k, v in _form().items() if k != "client_secret"}

#: Ways to make the fake's token endpoint answer, and the error each must give (None: a 200).
NATURAL_ANSWERS: dict[str, tuple[Any, str | None]] = {
    "valid credentials": (lambda s: _answer(_post(s, data=_form())), None),
    "valid credentials with a scope": (
        lambda s: _answer(_post(s, data=_form(scope="tradevest.api"))),
        None,
    ),
    "a 300-second token": (_short_lived, None),
    "wrong secret": (
        lambda s: _answer(_post(s, data=_form(client_secret="wrong"))),
        "invalid_client",
    ),
    "unknown client": (
        lambda s: _answer(_post(s, data=_form(client_id="nobody"))),
        "invalid_client",
    ),
    "grant_type password": (
        lambda s: _answer(_post(s, data=_form(grant_type="password"))),
        "unsupported_grant_type",
    ),
    "client_secret missing": (lambda s: _answer(_post(s, data=_SECRETLESS)), "invalid_request"),
    "client_id empty": (lambda s: _answer(_post(s, data=_form(client_id=""))), "invalid_request"),
    "a field twice": (
        lambda s: _answer(_post(s, data=[*_form().items(), ("client_id", "test-client")])),
        "invalid_request",
    ),
    "a query string": (
        lambda s: _answer(_post(s, params={"grant_type": "client_credentials"}, data=_form())),
        "invalid_request",
    ),
    "a JSON body": (lambda s: _answer(_post(s, json=_form())), "invalid_request"),
    "a body that is not UTF-8": (
        lambda s: _answer(
            _post(
                s,
                data=b"grant_type=client_credentials&client_id=\xff",
                headers={"Content-Type": FORM},
            )
        ),
        "invalid_request",
    ),
    "a negative Content-Length": (_raw_bad_framing, "invalid_request"),
}


@pytest.mark.parametrize("how", list(NATURAL_ANSWERS))
def test_fake_server_answers_validate(
    spec: dict[str, Any], server: FakeTradevestServer, how: str
) -> None:
    provoke, error = NATURAL_ANSWERS[how]
    response, body = provoke(server)
    api = openapi_for(spec, server)
    api.validate_response(token_operation_request(server), mock_response(response, body))
    payload = json.loads(body)
    if error is None:
        assert mock_response(response, body).status_code == 200
        assert payload["access_token"] in server.issued_tokens
    else:
        assert mock_response(response, body).status_code == 400
        assert payload == {"error": error}
    figures.count("fake_answers_validated_against_openapi")


@pytest.mark.parametrize(
    "error",
    [
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
    ],
)
def test_injected_spec_errors_validate(
    spec: dict[str, Any], server: FakeTradevestServer, error: str
) -> None:
    """``Fault.error`` produces each of the document's errors in the document's shape."""
    assert error in token_schema(spec, "400")["properties"]["error"]["enum"]
    api = openapi_for(spec, server)
    for fault in (Fault.error(error), Fault.error(error, description="More detail.")):
        server.inject(fault)
        response = _post(server, data=_form())
        assert response.status_code == 400
        api.validate_response(
            token_operation_request(server), mock_response(response, response.content)
        )
    figures.count("fake_answers_validated_against_openapi", 2)


def test_answers_off_the_document_are_caught(
    spec: dict[str, Any], server: FakeTradevestServer
) -> None:
    """The response check is not vacuous: shapes the document does not allow fail it."""
    api = openapi_for(spec, server)
    offending = [
        Fault.json({"access_token": "abc", "expires_in": "3600", "token_type": "Bearer"}),
        Fault.json({"access_token": "abc", "token_type": "Bearer"}),
        Fault.error("invalid_scope"),
        Fault.error("invalid_client", status=401),
    ]
    for fault in offending:
        server.inject(fault)
        response = _post(server, data=_form())
        with pytest.raises(OpenAPIError):
            api.validate_response(
                token_operation_request(server), mock_response(response, response.content)
            )
