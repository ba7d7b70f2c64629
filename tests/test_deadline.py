"""TOKEN_DEADLINE bounds the whole token request, however slowly the answer arrives."""

from __future__ import annotations

import time

import pytest
from django.core.cache.backends.locmem import LocMemCache

from tests.helpers import ServerFactory
from tradevest_django.deadline import Deadline
from tradevest_django.exceptions import TokenEndpointUnavailable
from tradevest_django.manager import TokenManager
from tradevest_django.testing import FakeTradevestServer, Fault


@pytest.fixture
def server(make_server: ServerFactory) -> FakeTradevestServer:
    return make_server("deadline-secret-P0o")


def test_a_trickled_answer_ends_at_the_deadline_and_frees_the_lock(
    server: FakeTradevestServer,
) -> None:
    server.inject(*[Fault.trickle(0.3)] * 5)  # one byte every 300 ms, status line included
    manager = TokenManager.from_options(
        "default",
        server.settings(TOKEN_DEADLINE=2, LOCK_TIMEOUT=3, TOKEN_TIMEOUT=(1, 1)),
        cache=LocMemCache("deadline", {}),
    )
    started = time.monotonic()
    with pytest.raises(TokenEndpointUnavailable, match="within TOKEN_DEADLINE") as err:
        manager.get_token()
    took = time.monotonic() - started
    assert took < 2 + 1, f"get_token() took {took:.1f} s"
    assert err.value.retryable
    assert err.value.cause == "no complete answer within TOKEN_DEADLINE (2 s)"
    owner = manager.shared.acquire_lock(3)
    assert owner is not None  # the fleet lock was released
    manager.shared.release_lock(owner)


def test_a_normal_answer_is_untouched_by_the_deadline(server: FakeTradevestServer) -> None:
    manager = TokenManager.from_options(
        "default", server.settings(TOKEN_DEADLINE=1), cache=LocMemCache("deadline-ok", {})
    )
    assert manager.get_token().access_token == server.issued_tokens[0]


def test_connections_opened_after_the_deadline_are_cut_at_once() -> None:
    class Connection:
        def __init__(self) -> None:
            self.sock = Socket()

    class Socket:
        shut = False

        def shutdown(self, how: int) -> None:
            self.shut = True

    with Deadline(0) as deadline:
        assert deadline._timer is not None
        deadline._timer.join(timeout=5)
        assert deadline.expired
        late = Connection()
        deadline.connected(late)  # type: ignore[arg-type]
    assert late.sock.shut
