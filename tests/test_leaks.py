"""Neither the client secret nor an access token appears in any message or repr we produce."""

from __future__ import annotations

import pytest
from django.core.cache.backends.locmem import LocMemCache

import tradevest_django
from tests.conftest import leaks_in
from tests.helpers import ServerFactory
from tradevest_django.conf import AliasConfig
from tradevest_django.endpoint import TokenEndpoint
from tradevest_django.exceptions import TradevestConfigurationError, TradevestError
from tradevest_django.manager import TokenManager
from tradevest_django.testing import FakeTradevestServer, Fault
from tradevest_django.validation import validate_setting

SECRET = "leak-canary-secret-7Hq2"


@pytest.fixture
def server(make_server: ServerFactory) -> FakeTradevestServer:
    return make_server(SECRET)


def texts_of(err: BaseException) -> list[str]:
    texts: list[str] = []
    seen: BaseException | None = err
    while seen is not None:
        texts += [str(seen), repr(seen), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return texts


FAULTS = [
    Fault.error("invalid_client", description=f"client secret {SECRET} is wrong"),
    Fault.error("invalid_client", status=401),
    Fault.error("invalid_request"),
    Fault.error("invalid_grant"),
    Fault.error("unauthorized_client"),
    Fault.error("unsupported_grant_type"),
    Fault.error("made_up_code"),
    Fault.json({"access_token": "leak-canary-token", "token_type": "mac"}),
    Fault.json({"access_token": "leak-canary-token", "expires_in": "never"}),
    Fault.body(b'{"access_token": "leak-canary-token", "exp'),
    Fault.body(f"<html>{SECRET} leak-canary-token</html>".encode(), content_type="text/html"),
    Fault.status(503, body=f"{SECRET} leak-canary-token".encode()),
]


@pytest.mark.parametrize("fault", FAULTS)
def test_exceptions_never_show_secret_or_token(server: FakeTradevestServer, fault: Fault) -> None:
    server.inject(fault, fault, fault, fault)
    manager = TokenManager.from_options(
        "default", server.settings(TOKEN_RETRIES=0), cache=LocMemCache("leaks", {})
    )
    texts: list[str] = [repr(manager), repr(manager.config)]
    for _ in range(2):  # the second call raises the remembered failure
        with pytest.raises(TradevestError) as info:
            manager.get_token()
        texts += texts_of(info.value)
    assert not leaks_in(texts, {SECRET, "leak-canary-token"})


def test_reprs_of_everything_that_holds_a_token(tradevest_settings: FakeTradevestServer) -> None:
    token = tradevest_django.get_token()
    manager = tradevest_django.get_manager()
    fetched = TokenEndpoint(manager.config).fetch()
    with tradevest_django.get_session() as session:
        session.get("/x")
        objects = [token, manager, manager.config, manager.shared, fetched, session, session.auth]
        texts = [repr(o) for o in objects] + [str(o) for o in objects]
    secrets = {tradevest_settings.client_secret, *tradevest_settings.issued_tokens}
    assert not leaks_in(texts, secrets)
    assert token.fingerprint in repr(token)


def test_configuration_errors_never_show_the_secret() -> None:
    base = {"CLIENT_ID": "id", "CLIENT_SECRET": SECRET, "ENVIRONMENT": "test"}
    broken = [
        {**base, "CLIENT_SECRETT": SECRET},
        {**base, "AUTH_URL": f"https://id:{SECRET}@auth.example.com"},
        {**base, "SCOPE": ["", SECRET]},
        {**base, "TOKEN_PATH": SECRET},
        {**base, "ENVIRONMENT": "prod"},
        {**base, "CACHE": "missing"},
    ]
    texts = []
    for options in broken:
        with pytest.raises(TradevestConfigurationError) as info:
            AliasConfig.from_dict("default", options)
        texts += texts_of(info.value)
        texts += [p.msg + p.hint for p in validate_setting({"default": options})]
    assert not leaks_in(texts, {SECRET})
