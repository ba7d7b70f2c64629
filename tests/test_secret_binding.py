"""A cached token reaches only the secret that obtained it (the cache keys are keyed by it)."""

from __future__ import annotations

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.test import override_settings

import tradevest_django
from tests.fleet import run_fleet
from tests.helpers import CountingCache, ServerFactory
from tradevest_django.exceptions import InvalidClient
from tradevest_django.manager import TokenManager
from tradevest_django.shared import cache_key_base
from tradevest_django.testing import FakeTradevestServer

RIGHT = "binding-secret-RIGHT-7Hq"
WRONG = "binding-secret-WRONG-x2P"
OTHER = "binding-secret-OTHER-k9D"


@pytest.fixture
def server(make_server: ServerFactory) -> FakeTradevestServer:
    return make_server(RIGHT)


def tenant(server: FakeTradevestServer, secret: str, cache: object) -> TokenManager:
    return TokenManager.from_options(
        f"tenant-{secret[-3:]}",
        server.settings(CLIENT_SECRET=secret),
        cache=cache,  # type: ignore[arg-type]
    )


def test_two_aliases_with_one_client_id_and_two_secrets(
    settings: object, server: FakeTradevestServer
) -> None:
    settings.TRADEVEST = {  # type: ignore[attr-defined]
        "default": server.settings(),
        "intruder": server.settings(CLIENT_SECRET=WRONG),
    }
    token = tradevest_django.get_token()
    with pytest.raises(InvalidClient):
        tradevest_django.get_token("intruder")  # its own request, refused as it should be
    assert server.token_request_count == 2
    assert [r.form["client_secret"][0] for r in server.token_requests] == [RIGHT, WRONG]
    assert tradevest_django.get_token() == token  # the refusal did not touch the right one
    assert server.token_request_count == 2


def test_tenants_on_one_cache_never_receive_each_others_token(
    server: FakeTradevestServer,
) -> None:
    server.clients[server.client_id] = (RIGHT, OTHER)  # both secrets are valid
    cache = LocMemCache("binding", {})
    right = tenant(server, RIGHT, cache).get_token()
    other = tenant(server, OTHER, cache).get_token()
    assert right != other
    assert server.token_request_count == 2
    assert [r.form["client_secret"][0] for r in server.token_requests] == [RIGHT, OTHER]
    assert server.issued_tokens == [right.access_token, other.access_token]
    # each tenant's next process finds its own token, and only its own
    assert tenant(server, RIGHT, cache).get_token() == right
    assert tenant(server, OTHER, cache).get_token() == other
    assert server.token_request_count == 2
    # a wrong secret in a third tenant finds neither and is refused
    with pytest.raises(InvalidClient):
        tenant(server, WRONG, cache).get_token()
    assert server.token_request_count == 3


def test_keys_are_keyed_by_the_secret_key_and_name_no_secret(
    server: FakeTradevestServer,
) -> None:
    cache = CountingCache()
    manager = tenant(server, RIGHT, cache)
    manager.get_token()
    keys = list(cache.inner._cache)
    assert keys and all(RIGHT not in key and server.client_id not in key for key in keys)
    base = cache_key_base(manager.config)
    with override_settings(SECRET_KEY="another-deployment"):
        # someone who reads the cache but not SECRET_KEY cannot test guesses of the secret
        assert cache_key_base(manager.config) != base


@pytest.mark.redis
@pytest.mark.slow
def test_another_secret_in_another_process_never_adopts_the_token(
    settings: object, server: FakeTradevestServer, redis_caches: dict[str, object]
) -> None:
    settings.TRADEVEST = {"default": server.settings()}  # type: ignore[attr-defined]
    token = tradevest_django.get_token()  # shared through Redis
    (intruder,) = run_fleet(
        server=server.settings(CLIENT_SECRET=WRONG),
        caches=redis_caches,
        processes=1,
        threads=2,
        duration=1,
        mode="token",
    )
    assert intruder["errors"] and set(intruder["errors"]) == {"InvalidClient"}
    assert not intruder["tokens"]
    server.clients[server.client_id] = (RIGHT, OTHER)
    (other,) = run_fleet(
        server=server.settings(CLIENT_SECRET=OTHER),
        caches=redis_caches,
        processes=1,
        threads=2,
        duration=1,
        mode="token",
    )
    assert not other["errors"]
    assert set(other["tokens"]) == {server.issued_tokens[-1]} != {token.access_token}
    # the intruder's refused request, then one for the other secret (its two threads share it)
    assert [r.form["client_secret"][0] for r in server.token_requests] == [RIGHT, WRONG, OTHER]
    assert tradevest_django.get_token() == token  # the right one's token is untouched
    assert server.token_request_count == 3
