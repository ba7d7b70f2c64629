"""ENCRYPTION_KEYS: the shared cache holds only ciphertext, and keys can be rotated."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.cache.backends.locmem import LocMemCache

from tests.helpers import ServerFactory
from tradevest_django.conf import AliasConfig
from tradevest_django.exceptions import TradevestConfigurationError
from tradevest_django.manager import TokenManager
from tradevest_django.testing import FakeTradevestServer

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


@pytest.fixture
def server(make_server: ServerFactory) -> FakeTradevestServer:
    return make_server("crypto-secret-Lm3")


def manager(
    server: FakeTradevestServer, cache: LocMemCache, keys: list[str] | None
) -> TokenManager:
    return TokenManager.from_options("default", server.settings(ENCRYPTION_KEYS=keys), cache=cache)


def test_cache_holds_only_ciphertext(server: FakeTradevestServer) -> None:
    cache = LocMemCache("crypto", {})
    token = manager(server, cache, [OLD]).get_token()
    entry = cache.get(manager(server, cache, [OLD]).shared.token_key)
    assert token.access_token not in repr(entry)
    assert set(entry) == {"v", "encrypted"}
    assert manager(server, cache, [OLD]).get_token() == token
    assert server.token_request_count == 1


def test_a_process_without_the_key_cannot_read_it(server: FakeTradevestServer) -> None:
    cache = LocMemCache("crypto", {})
    token = manager(server, cache, [OLD]).get_token()
    assert manager(server, cache, None).cached_token() is None
    assert manager(server, cache, [NEW]).cached_token() is None
    assert manager(server, cache, [NEW]).get_token() != token  # fetches its own
    assert server.token_request_count == 2


def test_rotation_new_key_first_still_reads_old_entries(server: FakeTradevestServer) -> None:
    cache = LocMemCache("crypto", {})
    token = manager(server, cache, [OLD]).get_token()
    rotated = manager(server, cache, [NEW, OLD])
    assert rotated.get_token() == token
    assert server.token_request_count == 1


def test_bad_key_is_a_configuration_error_that_hides_the_value(server: FakeTradevestServer) -> None:
    with pytest.raises(TradevestConfigurationError, match="Fernet") as info:
        AliasConfig.from_dict(
            "default", server.settings(ENCRYPTION_KEYS=[OLD[:-4] + "oops"]), check_cache=False
        )
    assert OLD[:20] not in str(info.value)
    config = AliasConfig.from_dict(
        "default", server.settings(ENCRYPTION_KEYS=[OLD]), check_cache=False
    )
    assert OLD not in repr(config)


def test_a_single_key_string_is_accepted(server: FakeTradevestServer) -> None:
    cache = LocMemCache("crypto", {})
    token = TokenManager.from_options(
        "default", server.settings(ENCRYPTION_KEYS=OLD), cache=cache
    ).get_token()
    assert manager(server, cache, [OLD]).get_token() == token
