"""Guarantees of the token path that each needed a test that fails when they break."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

import tradevest_django
from tests.helpers import CountingCache, FakeClock, ServerFactory, process
from tradevest_django.exceptions import (
    InvalidClient,
    TokenEndpointError,
    TokenEndpointUnavailable,
)
from tradevest_django.manager import TokenManager
from tradevest_django.shared import Lock
from tradevest_django.testing import FakeTradevestServer, Fault
from tradevest_django.validation import validate_alias

SECRET = "guarantees-secret-Hn4"
PERSON = "6f1c2b4e-8a4d-4c1e-9a55-0d2b8f3e7a10"


@pytest.fixture
def server(make_server: ServerFactory, clock: FakeClock) -> FakeTradevestServer:
    return make_server(SECRET, clock=clock)


def test_the_token_request_never_follows_a_redirect(
    server: FakeTradevestServer, make_server: ServerFactory, clock: FakeClock
) -> None:
    elsewhere = make_server("guarantees-elsewhere-Q1")
    server.inject(Fault.status(307, headers={"Location": elsewhere.token_url}))
    with pytest.raises(TokenEndpointError) as err:
        process(server, CountingCache(), clock).get_token()
    assert err.value.status_code == 307
    assert elsewhere.token_request_count == 0  # the secret never went to the other host
    assert server.token_request_count == 1


def test_a_lock_is_released_only_by_its_owner(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    shared = process(server, CountingCache(), clock).shared
    mine = shared.acquire_lock(30)
    assert mine is not None and shared.acquire_lock(30) is None
    shared.release_lock(mine)  # within its TTL: ours for sure, deleted without a read
    theirs = shared.acquire_lock(30)
    assert theirs is not None
    expired = Lock(mine.owner, expires=time.monotonic() - 1)  # ours ran out long ago
    shared.release_lock(expired)
    assert shared.acquire_lock(30) is None  # the new holder's lock stayed
    shared.release_lock(theirs)
    assert shared.acquire_lock(30) is not None


def test_the_loser_of_a_race_for_a_dead_holders_lock_waits_for_the_winner(
    make_server: ServerFactory,
) -> None:
    server = make_server(SECRET)  # real time: the dead holder's lock really expires
    server.token_delay = 0.3
    cache = CountingCache()
    winner = TokenManager.from_options("default", server.settings(LOCK_TIMEOUT=1), cache=cache)
    loser = TokenManager.from_options("default", server.settings(LOCK_TIMEOUT=1), cache=cache)
    cache.inner.add(loser.shared.lock_key, "a-dead-holder", 1)  # expires in a second
    acquire = loser.shared.acquire_lock
    tries: list[object] = []
    racing = threading.Thread(target=winner.get_token)

    def race(ttl: int) -> Any:
        if tries:  # the dead holder's lock expired: the winner takes it first
            racing.start()
            deadline = time.monotonic() + 10
            while cache.inner.get(loser.shared.lock_key) in (None, "a-dead-holder"):
                assert time.monotonic() < deadline
                time.sleep(0.005)  # waiting for the winner's add(), bounded
        tries.append(ttl)
        return acquire(ttl)

    loser.shared.acquire_lock = race  # type: ignore[method-assign]
    token = loser.get_token()
    racing.join(timeout=10)
    assert len(tries) == 2  # lost twice: to the dead holder, then to the winner
    assert server.token_request_count == 1  # the winner's, which the loser adopted
    assert token.access_token == server.issued_tokens[0] and token.source == "cache"


def test_a_token_stored_while_taking_the_lock_is_adopted(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    cache = CountingCache()
    other = process(server, cache, clock)
    late = process(server, cache, clock)
    acquire = late.shared.acquire_lock

    def stored_meanwhile(ttl: int) -> Any:
        other.get_token()  # another worker stores a token between our read and our lock
        return acquire(ttl)

    late.shared.acquire_lock = stored_meanwhile  # type: ignore[method-assign]
    assert late.get_token() == other.get_token()
    assert server.token_request_count == 1


def test_the_refresh_ahead_still_fetches_while_the_cache_is_down(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    cache = CountingCache()
    cache.fail = True
    manager = process(server, cache, clock)
    token = manager.get_token()
    clock.advance(3600 - 30 - 200)  # inside the refresh window, well before usable-until
    assert manager.get_token() is token  # served at once...
    thread = manager._refresh_thread
    assert thread is not None
    thread.join(timeout=10)
    assert server.token_request_count == 2  # ...and replaced ahead, with no cache at all
    assert manager.get_token() != token


def test_refresh_clears_the_fleets_failure_memory(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    cache = CountingCache()
    server.inject(Fault.error("invalid_client"))
    with pytest.raises(InvalidClient):
        process(server, cache, clock).get_token()
    with pytest.raises(InvalidClient, match="remembered"):
        process(server, cache, clock).get_token()
    process(server, cache, clock).refresh()  # an explicit, successful request
    assert process(server, cache, clock).get_token().source == "cache"
    assert server.token_request_count == 2


@pytest.mark.parametrize("retry_after", [5, 10, 25])
def test_the_fleets_back_off_honours_retry_after(
    server: FakeTradevestServer, clock: FakeClock, retry_after: int
) -> None:
    cache = CountingCache()
    server.inject(*[Fault.status(503, retry_after=str(retry_after))] * 4)
    with pytest.raises(TokenEndpointUnavailable):
        process(server, cache, clock, TOKEN_RETRIES=0, FAILURE_COOLDOWN=30).get_token()
    clock.advance(retry_after - 0.5)
    with pytest.raises(TokenEndpointUnavailable) as err:
        process(server, cache, clock).get_token()  # still backing off: no request
    assert err.value.remembered and err.value.retry_after == pytest.approx(0.5, abs=0.01)
    clock.advance(1)
    server.clear_faults()
    assert process(server, cache, clock).get_token()  # the wait is over: asked again
    assert server.token_request_count == 2


def test_a_403_is_never_replayed_even_on_a_sessions_first_response(
    tradevest_settings: FakeTradevestServer,
) -> None:
    with tradevest_django.get_session() as session:
        assert session.get("/status/403").status_code == 403
    assert [r.path for r in tradevest_settings.api_requests] == ["/status/403"]
    assert tradevest_settings.token_request_count == 1


def test_requestor_id_is_stripped_from_a_redirect_off_the_api_after_a_replay(
    tradevest_settings: FakeTradevestServer, make_server: ServerFactory
) -> None:
    server = tradevest_settings
    elsewhere = make_server("guarantees-elsewhere-R2")
    with tradevest_django.get_session(requestor_id=PERSON) as session:
        session.get("/warm-up")
        server.revoke(server.issued_tokens[0])  # the next request is answered 401...
        response = session.get(
            "/redirect", params={"to": elsewhere.url + "/landing", "authenticated": "1"}
        )  # ...then replayed with a new token, and redirected to another host
    assert response.status_code == 401  # the other host has no token for it, as it should be
    assert [r.status for r in server.api_requests if r.path == "/redirect"] == [401, 302]
    (landing,) = elsewhere.api_requests
    assert "Requestor-ID" not in landing.headers and "Authorization" not in landing.headers


@pytest.mark.parametrize(
    "key", ["ENVIRONMENT", "TOKEN_PATH", "CACHE", "SCOPE", "AUTH_URL", "API_URL", "LOCK_TIMEOUT"]
)
@pytest.mark.parametrize("where", ["CLIENT_SECRET", "CLIENT_SECRET_FALLBACKS"])
def test_a_secret_pasted_into_another_option_never_shows(key: str, where: str) -> None:
    pasted = "guarantees-pasted-SECRET-7c"
    options: dict[str, Any] = {"CLIENT_ID": "id", "CLIENT_SECRET": "primary-Zx9"}
    if where == "CLIENT_SECRET":
        options["CLIENT_SECRET"] = pasted
    else:
        options["CLIENT_SECRET_FALLBACKS"] = [pasted]
    options[key] = pasted if key != "AUTH_URL" else f"http://{pasted}/"  # http: refused
    problems = validate_alias("default", options, check_cache=False)
    assert problems, "the pasted value is reported"
    for problem in problems:
        assert pasted not in problem.msg + problem.hint


def test_a_token_is_not_served_at_its_usable_until_instant(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    manager = process(server, CountingCache(), clock)
    token = manager.get_token()
    state = manager._state
    assert state is not None and state.usable_until_wall == token.server_expiry - 30
    clock.now = state.usable_until_wall - 0.001
    assert manager.peek() is token  # a moment before: still served
    clock.now = state.usable_until_wall
    assert manager.peek() is None  # at the instant itself: not any more


# -- what people read: log lines, signals and status, exactly ---------------------------------


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_a_failed_refresh_says_what_failed_and_how_long_the_token_lasts(
    server: FakeTradevestServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = process(server, CountingCache(), clock, TOKEN_RETRIES=0)
    token = manager.get_token()
    clock.advance(3600 - 30 - 200)  # 200 s of use left
    server.inject(Fault.status(503))
    assert manager.get_token() is token
    thread = manager._refresh_thread
    assert thread is not None
    thread.join(timeout=10)
    assert manager.get_token() is token
    (warning,) = [m for m in messages(caplog, logging.WARNING) if "Refreshing" in m]
    assert warning == (
        "Refreshing the token of alias 'default' failed (TokenEndpointUnavailable); still "
        "using the current token, valid for 200 s more."
    )
    assert manager._refresh_thread is thread  # postponed: no new thread per call meanwhile


def test_an_unexpected_error_in_the_refresh_is_logged_and_postponed(
    server: FakeTradevestServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = process(server, CountingCache(), clock)
    token = manager.get_token()
    clock.advance(3600 - 30 - 200)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    manager._obtain = broken  # type: ignore[method-assign]
    assert manager.get_token() is token
    assert manager._refresh_thread is not None
    manager._refresh_thread.join(timeout=10)
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "Unexpected error while refreshing the token of alias 'default'."
    assert record.exc_info is not None
    state = manager._state
    assert state is not None and state.refresh_at > clock()  # looks again later, not per call


def test_invalidation_logs_and_signals_the_token_and_the_reason(
    server: FakeTradevestServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    from tradevest_django import signals

    caplog.set_level(logging.INFO, logger="tradevest_django")
    seen: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(kwargs)

    signals.token_invalidated.connect(receiver, weak=False)
    try:
        manager = process(server, CountingCache(), clock)
        token = manager.get_token()
        assert manager.invalidate(token)
        asyncio.run(manager.ainvalidate(manager.get_token(), server_date=None))
    finally:
        signals.token_invalidated.disconnect(receiver)
    infos = [m for m in messages(caplog, logging.INFO) if m.startswith("Invalidated")]
    assert infos[0] == (
        f"Invalidated token {token.fingerprint} of alias 'default': rejected by the API (401)."
    )
    assert [s["reason"] for s in seen] == ["rejected by the API (401)"] * len(seen)
    assert seen[0]["fingerprint"] == token.fingerprint and seen[0]["alias"] == "default"
    assert seen[0]["sender"] is manager


def test_status_reports_every_field(server: FakeTradevestServer, clock: FakeClock) -> None:
    manager = process(server, CountingCache(), clock, ENVIRONMENT=None)
    assert manager.status()["token_cached"] is False
    token = manager.get_token()
    clock.advance(600)
    status = manager.status()
    assert status.pop("expires_in") in (2999, 3000)  # whole seconds, rounded down
    assert status == {
        "alias": "default",
        "environment": None,
        "auth_host": server.url.removeprefix("http://"),
        "api_url": server.url,
        "client_id": "test…nt",
        "cache": "default",
        "cache_reachable": True,
        "secret": "CLIENT_SECRET",
        "token_cached": True,
        "fingerprint": token.fingerprint,
        "expires_at": token.expires_at.isoformat(timespec="seconds"),
        "last_refresh": status["last_refresh"],
        "last_error": None,
    }
    assert status["last_refresh"] is not None
    assert manager.cached_token() == token
    assert manager.seconds_left() == pytest.approx(3000, abs=1)
    clock.advance(3000)
    assert manager.cached_token() is None and manager.status()["token_cached"] is False


def test_the_secret_in_use_is_announced_once_each_way(
    server: FakeTradevestServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tradevest_django")
    options = {"CLIENT_SECRET": "guarantees-NEW", "CLIENT_SECRET_FALLBACKS": [SECRET]}
    manager = process(server, CountingCache(), clock, **options)
    manager.get_token()
    server.clients[server.client_id] = "guarantees-NEW"  # activated, the old one retired
    manager.refresh()
    warnings = [m for m in messages(caplog, logging.WARNING) if "now uses" in m]
    assert warnings == [
        "Alias 'default' now uses CLIENT_SECRET_FALLBACKS[0]: Tradevest refused CLIENT_SECRET "
        "(invalid_client). Finish the rotation: once Tradevest accepts CLIENT_SECRET, drop the "
        "fallback."
    ]
    infos = [m for m in messages(caplog, logging.INFO) if "again" in m]
    assert (
        "Alias 'default' uses CLIENT_SECRET again (it was using CLIENT_SECRET_FALLBACKS[0])."
        in infos
    )
