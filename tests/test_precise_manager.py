"""Exact behaviours of the token manager: how it shares, times, refreshes and waits for tokens,
which secret it uses, and what it logs, records and signals, down to the message and the second.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import formatdate
from typing import Any

import pytest

from tests.helpers import CountingCache, FakeClock, ServerFactory, process
from tradevest_django import manager as manager_module
from tradevest_django import signals
from tradevest_django.exceptions import InvalidClient, TokenEndpointUnavailable
from tradevest_django.manager import TokenManager
from tradevest_django.testing import FakeTradevestServer
from tradevest_django.testing.faults import Fault
from tradevest_django.tokens import Token

SECRET = "precise-manager-secret-Zk7"
#: Seconds from a token's issue to a moment inside its refresh window (3600 s token, 30 s margin,
#: a window of 300 to 375 s): 100 s before it stops being handed out.
INTO_REFRESH_WINDOW = 3600 - 30 - 100


def build(
    server: FakeTradevestServer,
    cache: CountingCache,
    clock: FakeClock,
    options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> TokenManager:
    """A process of the fleet like ``process``, with other clocks, sleeps or generators."""
    backend: Any = cache
    settings = server.settings(**(options or {}))
    return TokenManager.from_options("default", settings, cache=backend, clock=clock, **kwargs)


def finished_refresh(manager: TokenManager) -> threading.Thread:
    """The background refresh the last call started, once it has ended (5 s at most)."""
    thread = manager._refresh_thread
    assert thread is not None, "no background refresh was started"
    thread.join(timeout=5)
    assert not thread.is_alive()
    return thread


@pytest.fixture
def server(make_server: ServerFactory, clock: FakeClock) -> FakeTradevestServer:
    return make_server(SECRET, clock=clock)


@pytest.fixture
def cache() -> CountingCache:
    """A cache of this test's own (local-memory caches of the same name share their entries)."""
    return CountingCache(f"precise-manager-{uuid.uuid4().hex}")


# -- the coroutines' token request -------------------------------------------------------------


def test_coroutines_waiting_together_share_one_token_request_and_its_outcome(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    # Nothing remembers the refusal (FAILURE_COOLDOWN=0): only sharing the request can keep the
    # second coroutine from asking again.
    manager = process(server, cache, clock, FAILURE_COOLDOWN=0)
    server.inject(Fault.error("invalid_client"))
    both_waiting = threading.Event()

    def hold_the_answer(**kwargs: Any) -> None:
        both_waiting.wait(5)

    async def two_callers() -> tuple[Any, Any]:
        first = asyncio.ensure_future(manager.aget_token())
        second = asyncio.ensure_future(manager.aget_token())
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # both are awaiting the request now
        both_waiting.set()
        return await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 5)

    signals.token_request_failed.connect(hold_the_answer, weak=False)
    try:
        first, second = asyncio.run(two_callers())
    finally:
        signals.token_request_failed.disconnect(hold_the_answer)
    assert isinstance(first, InvalidClient)
    assert second is first
    assert server.token_request_count == 1


def test_the_coroutines_token_request_runs_in_a_daemon_thread_named_for_the_alias(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    seen: list[threading.Thread] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(threading.current_thread())

    manager = process(server, cache, clock)
    signals.token_obtained.connect(receiver, weak=False)
    try:
        token = asyncio.run(manager.aget_token())
    finally:
        signals.token_obtained.disconnect(receiver)
    assert token.access_token == server.issued_tokens[0]
    (thread,) = seen
    assert thread.name == "tradevest-token-default"
    assert thread.daemon is True
    assert thread is not threading.main_thread()


# -- cached_token and peek -----------------------------------------------------------------------


def test_cached_token_is_not_offered_when_slow_requests_would_carry_it_past_its_end(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock)
    token = manager.get_token()
    manager.observe_in_flight(330)  # 300 s beyond the 30 s margin (a tenth of 3600 s: the cap)
    clock.advance(3200)  # 3200 + 300 < 3570, when it stops being handed out
    assert manager.cached_token() == token
    clock.advance(100)  # 3300 + 300 > 3570: a request taking it now would arrive too late
    assert manager.cached_token() is None
    assert server.token_request_count == 1


def test_peek_judges_expiry_on_the_servers_clock_when_this_host_runs_ahead(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock)
    token = manager.get_token()
    manager.observe_server_date(formatdate(clock() - 600, usegmt=True))
    assert -601 < manager._skew < -599
    # On the server's clock the token has 3570 + ~600 s to go before it stops being handed out.
    clock.advance(3800)
    assert manager.peek() == token
    clock.advance(400)
    assert manager.peek() is None
    assert server.token_request_count == 1


def test_each_slower_call_sets_the_lead_and_faster_ones_let_it_decay_by_1_percent(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock)
    token = manager.get_token()
    end = token.server_expiry - 30  # when it stops being handed out; the lead brings that forward

    def offered(before_end: float) -> bool:
        clock.now = end - before_end
        return manager.cached_token() is not None

    assert offered(0.05) and not offered(0)  # no lead before any call was observed
    manager.observe_in_flight(330)  # lead 300 s: 330 s less the 30 s margin
    assert offered(300.05) and not offered(299.95)
    manager.observe_in_flight(329.5)  # a little faster: lead 299.5 s, not 300 x 0.99
    assert offered(299.55) and not offered(299.45)
    manager.observe_in_flight(0)  # much faster: lead 299.5 x 0.99 = 296.505 s
    assert offered(296.55) and not offered(296.45)
    assert server.token_request_count == 1


def test_the_skew_from_a_date_allows_for_the_round_trip_and_only_for_it(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock)
    token = manager.get_token()
    now = clock()
    date = formatdate(now - 600, usegmt=True)  # the server's clock is 10 minutes behind
    whole = math.floor(now - 600)  # Date has whole seconds, rounded down
    # The server wrote Date between sending and receiving: the skew is at most Date + 1 - sent.
    manager.observe_server_date(date)
    assert manager.seconds_left() == pytest.approx(token.server_expiry - (whole + 1), abs=1e-6)
    manager.observe_server_date(date, round_trip=2.0)
    assert manager.seconds_left() == pytest.approx(token.server_expiry - (whole + 3), abs=1e-6)


def test_aget_token_in_the_refresh_window_returns_the_token_and_refreshes_ahead(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock)
    token = manager.get_token()
    clock.advance(INTO_REFRESH_WINDOW)
    assert asyncio.run(manager.aget_token()) is token
    assert finished_refresh(manager).name == "tradevest-refresh-default"
    assert server.token_request_count == 2
    assert manager.peek() != token


def test_a_manager_given_a_cache_object_needs_no_caches_entry(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock, CACHE="precise-not-in-caches")
    assert manager.get_token().access_token == server.issued_tokens[0]
    assert manager.status()["cache"] == "precise-not-in-caches"


def test_a_token_invalidated_while_the_skew_is_learned_stays_invalidated(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    during_retiming: list[Callable[[], object]] = []

    def monotonic() -> float:  # the re-timing reads it before it replaces the schedule
        while during_retiming:
            during_retiming.pop()()
        return clock()

    manager = build(server, cache, clock, monotonic=monotonic)
    token = manager.get_token()
    during_retiming.append(lambda: manager.invalidate(token))  # as another thread would
    manager.observe_server_date(formatdate(clock() - 600, usegmt=True))
    assert during_retiming == []
    assert manager.peek() is None
    assert manager.get_token() != token
    assert server.token_request_count == 2


def test_obtaining_a_token_logs_it_exactly_and_records_its_fingerprint(
    server: FakeTradevestServer,
    clock: FakeClock,
    cache: CountingCache,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tradevest_django")
    server.inject(Fault.status(503, retry_after=2))
    manager = process(server, cache, clock)
    token = manager.get_token()
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [
        f"Obtained a new token for alias 'default' from 127.0.0.1:{server.port}: fingerprint "
        f"{token.fingerprint}, expires in 3600 s (attempt 2, 2.000 s)."
    ]
    assert manager.shared.status()["last_fingerprint"] == token.fingerprint


def test_a_token_obtained_clears_the_refusal_this_process_remembered(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    mono = FakeClock(start=0.0)
    manager = build(server, cache, clock, monotonic=mono, sleep=clock.sleep)
    cache.fail = True  # only the process's own memory counts
    server.inject(Fault.error("invalid_client"))
    with pytest.raises(InvalidClient):
        manager.get_token()
    clock.advance(31)
    mono.advance(31)
    manager.invalidate(manager.get_token())  # the refusal is over: a token, then a 401
    clock.advance(-60)  # the wall clock is stepped back to before the refusal ended
    assert manager.get_token().access_token == server.issued_tokens[-1]
    assert server.token_request_count == 3


def test_a_slow_process_does_not_adopt_a_shared_token_that_would_expire_on_the_way(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    slow = process(server, cache, clock)
    slow.observe_in_flight(330)  # no token yet: nothing to judge the call against
    first = slow.get_token()
    slow.observe_in_flight(330)  # its calls take 300 s more than the margin
    slow.invalidate(first)
    shared = process(server, cache, clock).get_token()  # another process shares a new one
    clock.advance(3570 - 300 - 1)  # 1 s before it is too old for a 300 s trip
    assert slow.cached_token() == shared
    clock.advance(2)  # 1 s too old for a 300 s trip, though still usable by date
    assert slow.cached_token() is None
    taken = slow.get_token()
    assert taken != shared
    assert taken.access_token == server.issued_tokens[-1]
    assert server.token_request_count == 3


def test_a_process_whose_cache_is_down_remembers_a_refusal_itself(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock)
    cache.fail = True
    server.inject(Fault.error("invalid_client"))
    with pytest.raises(InvalidClient) as first:
        manager.get_token()
    assert first.value.remembered is False
    with pytest.raises(InvalidClient) as again:
        manager.get_token()
    assert again.value.remembered is True
    assert server.token_request_count == 1
    clock.advance(30)  # FAILURE_COOLDOWN
    assert manager.get_token().access_token == server.issued_tokens[0]


def test_a_process_that_only_read_the_cache_shows_the_token_on_an_unskewed_clock(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    fetched = process(server, cache, clock).get_token()
    reader = process(server, cache, clock)
    cached = reader.cached_token()
    assert cached == fetched and cached is not None
    assert cached.expires_at == fetched.expires_at
    assert reader.get_token().expires_at == fetched.expires_at
    assert reader.last_refresh is None and reader.last_error is None  # it requested nothing
    assert server.token_request_count == 1


def test_the_last_error_record_says_what_failed_and_when(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock)
    assert manager.last_refresh is None and manager.last_error is None
    server.inject(Fault.error("invalid_client", description="precise description"))
    before = datetime.now(timezone.utc).replace(microsecond=0)
    with pytest.raises(InvalidClient) as err:
        manager.get_token()
    after = datetime.now(timezone.utc)
    assert manager.last_error is err.value
    record = manager.status()["last_error"]
    assert set(record) == {"type", "error", "message", "at"}
    assert record["type"] == "InvalidClient"
    assert record["error"] == "invalid_client"
    assert record["message"] == str(err.value)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", record["at"])
    assert before <= datetime.fromisoformat(record["at"]) <= after


def test_a_failing_signal_receiver_is_logged_and_the_others_still_hear_from_the_manager(
    server: FakeTradevestServer,
    clock: FakeClock,
    cache: CountingCache,
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[dict[str, Any]] = []

    def broken(**kwargs: Any) -> None:
        raise ValueError("precise receiver bug")

    def listening(**kwargs: Any) -> None:
        heard.append(kwargs)

    manager = process(server, cache, clock)
    signals.token_obtained.connect(broken, weak=False)
    signals.token_obtained.connect(listening, weak=False)
    try:
        token = manager.get_token()
    finally:
        signals.token_obtained.disconnect(broken)
        signals.token_obtained.disconnect(listening)
    ours = [r for r in caplog.records if r.name == "tradevest_django.manager"]
    errors = [r.getMessage() for r in ours if r.levelno == logging.ERROR]
    assert errors == [f"Signal receiver {broken!r} raised ValueError; ignored."]
    (kwargs,) = heard
    assert kwargs["sender"] is manager
    assert kwargs["alias"] == "default"
    assert kwargs["fingerprint"] == token.fingerprint


def test_retry_delays_come_from_the_injected_generator_and_sleep(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    server.inject(Fault.status(503))
    manager = build(server, cache, clock, rng=random.Random(7), sleep=clock.sleep)
    manager.get_token()
    assert clock.sleeps == [random.Random(7).uniform(0, 0.5)]  # the first backoff: up to 0.5 s
    assert server.token_request_count == 2


def test_without_an_injected_sleep_retries_wait_with_time_sleep(
    server: FakeTradevestServer,
    clock: FakeClock,
    cache: CountingCache,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    server.inject(Fault.status(503, retry_after=2))
    manager = build(server, cache, clock)
    manager.get_token()
    assert slept == [2.0]
    assert server.token_request_count == 2


def test_secrets_refused_together_are_not_asked_again_during_the_cooldown(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    server.clients = {server.client_id: "precise-nobody"}
    manager = process(server, cache, clock, CLIENT_SECRET_FALLBACKS=["precise-fallback-old"])
    for _ in range(3):
        with pytest.raises(InvalidClient):
            manager.get_token()
    sent = [r.form["client_secret"][0] for r in server.token_requests]
    assert sent == [SECRET, "precise-fallback-old"]
    clock.advance(30)  # FAILURE_COOLDOWN
    with pytest.raises(InvalidClient):
        manager.get_token()
    assert server.token_request_count == 4


def test_an_outage_is_recorded_without_an_oauth_error_and_signalled_with_its_exception(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    heard: list[dict[str, Any]] = []

    def listening(**kwargs: Any) -> None:
        heard.append(kwargs)

    server.inject(*[Fault.status(503)] * 4)  # the first try and TOKEN_RETRIES=3 retries
    manager = process(server, cache, clock)
    signals.token_request_failed.connect(listening, weak=False)
    try:
        with pytest.raises(TokenEndpointUnavailable) as err:
            manager.get_token()
    finally:
        signals.token_request_failed.disconnect(listening)
    (kwargs,) = heard
    assert kwargs["exception"] is err.value
    assert kwargs["sender"] is manager
    record = manager.status()["last_error"]
    assert record["type"] == "TokenEndpointUnavailable"
    assert record["error"] is None
    assert record["message"] == str(err.value)


def test_a_process_that_adopted_a_short_token_refreshes_it_a_tenth_of_its_life_ahead(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    class NoJitter(random.Random):
        def random(self) -> float:
            return 0.0

    server.token_lifetime = 10  # handed out until 0.5 s before its end (5 % of its life)
    process(server, cache, clock).get_token()
    reader = build(server, cache, clock, rng=NoJitter(), sleep=clock.sleep)
    token = reader.get_token()  # from the cache: this process has timed no request yet
    clock.advance(8.4)  # the refresh ahead starts 1 s (a tenth) before 9.5 s
    assert reader.get_token() is token
    assert reader._refresh_thread is None
    clock.advance(0.2)
    assert reader.get_token() is token
    finished_refresh(reader)
    assert server.token_request_count == 2


def test_after_the_primary_secret_is_refused_it_waits_for_primary_secret_retry(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    fallback = "precise-fallback-working"
    server.clients = {server.client_id: fallback}
    manager = process(server, cache, clock, CLIENT_SECRET_FALLBACKS=[fallback])
    manager.invalidate(manager.get_token())
    clock.advance(31)  # the refusal is forgotten (FAILURE_COOLDOWN), PRIMARY_SECRET_RETRY is not
    manager.get_token()
    sent = [r.form["client_secret"][0] for r in server.token_requests]
    assert sent == [SECRET, fallback, fallback]
    assert manager.secret_in_use == "CLIENT_SECRET_FALLBACKS[0]"


def test_slow_calls_bring_the_refresh_ahead_forward_on_the_hot_path(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock)
    token = manager.get_token()
    clock.advance(3000)  # the refresh window opens 3195 s to 3270 s after the issue
    assert manager.get_token() is token
    assert manager._refresh_thread is None
    manager.observe_in_flight(330)  # a 300 s lead: the window now opens before 2970 s
    assert manager.get_token() is token
    finished_refresh(manager)
    assert server.token_request_count == 2


def test_the_refresh_ahead_waits_for_the_servers_clock_when_this_host_runs_ahead(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock)
    token = manager.get_token()
    manager.observe_server_date(formatdate(clock() - 600, usegmt=True))
    # On the server's clock 2300 s have passed: not yet in the refresh window (3195 s to 3270 s).
    clock.advance(2900)
    assert manager.get_token() == token
    assert manager._refresh_thread is None
    assert server.token_request_count == 1


def test_a_token_obtained_by_another_thread_meanwhile_is_taken_not_requested_again(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    meanwhile: list[Callable[[], object]] = []

    def monotonic() -> float:  # read by get_token after it saw its token expired
        while meanwhile:
            meanwhile.pop()()
        return clock()

    manager = build(server, cache, clock, monotonic=monotonic)
    manager.get_token()
    clock.advance(3600)
    refreshed: list[Token] = []
    meanwhile.append(lambda: refreshed.append(manager.refresh()))  # as another thread would
    token = manager.get_token()
    assert refreshed == [token]
    assert server.token_request_count == 2


# -- invalidate ----------------------------------------------------------------------------------


def test_a_fresh_token_rejected_too_logs_the_exact_cooldown_warning(
    server: FakeTradevestServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    cache: CountingCache,
) -> None:
    caplog.set_level(logging.INFO, logger="tradevest_django")
    heard: list[dict[str, Any]] = []

    def listening(**kwargs: Any) -> None:
        heard.append(kwargs)

    manager = process(server, cache, clock)
    first = manager.get_token()
    caplog.clear()
    signals.token_invalidated.connect(listening, weak=False)
    try:
        assert manager.invalidate(first, "first reason") is True
    finally:
        signals.token_invalidated.disconnect(listening)
    assert [r.getMessage() for r in caplog.records] == [
        f"Invalidated token {first.fingerprint} of alias 'default': first reason."
    ]
    (kwargs,) = heard
    assert kwargs["sender"] is manager and kwargs["alias"] == "default"
    assert kwargs["fingerprint"] == first.fingerprint and kwargs["reason"] == "first reason"
    clock.advance(1)
    fresh = manager.get_token()
    caplog.clear()
    assert manager.invalidate(fresh, "Requestor-ID missing") is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "Alias 'default': the API rejected a token obtained moments ago too (Requestor-ID "
        "missing), so a new token does not help: check Requestor-ID, permissions and proxies. "
        "Tokens are not replaced for 30 s; 401s reach callers as the API sent them."
    ]
    assert manager.get_token() is fresh  # kept during the cooldown
    assert server.token_request_count == 2


def test_a_rejection_seen_by_another_process_makes_a_fresh_rejection_here_a_cooldown(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    first = process(server, cache, clock)
    assert first.invalidate(first.get_token()) is True
    clock.advance(1)
    other = process(server, cache, clock)  # has seen no rejection itself
    fresh = other.get_token()
    assert other.invalidate(fresh) is False  # the fleet's record says: a fresh token too
    assert other.get_token() is fresh
    assert server.token_request_count == 2


def test_a_token_invalidated_in_its_last_second_is_marked_revoked_for_one_second(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock)
    token = manager.get_token()
    clock.advance(3599.5)  # half a second before it expires
    assert manager.invalidate(token) is True
    assert cache.timeouts[token.fingerprint] == [1]
    assert manager.peek() is None


# -- waiting for another worker ------------------------------------------------------------------


def test_a_waiter_stops_polling_at_its_deadline_not_one_poll_after(
    server: FakeTradevestServer,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    cache: CountingCache,
) -> None:
    holder = process(server, cache, clock, LOCK_TIMEOUT=2)
    assert holder.shared.acquire_lock(600) is not None  # never released during the test
    sleeps: list[float] = []

    def coarse_sleep(seconds: float) -> None:  # a sleep that always lasts a whole second
        sleeps.append(seconds)
        clock.advance(1.0)

    waiter = build(server, cache, clock, {"LOCK_TIMEOUT": 2}, sleep=coarse_sleep)
    start = clock()
    token = waiter.get_token()
    assert token.access_token == server.issued_tokens[-1]
    # The deadline is 2 x LOCK_TIMEOUT = 4 s: four polls reach it exactly, and none follows.
    assert sleeps == pytest.approx([0.02, 0.03, 0.045, 0.0675])
    assert clock() == start + 4
    assert server.token_request_count == 1
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "Alias 'default' waited 4 s for other workers' token requests; requesting one itself."
    ]


def test_a_waiter_does_not_take_back_the_token_it_dropped_as_expired(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    mono = FakeClock(start=0.0)

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        mono.advance(seconds)

    waiter = build(server, cache, clock, {"LOCK_TIMEOUT": 1}, monotonic=mono, sleep=sleep)
    old = waiter.get_token()
    # An hour passes on the monotonic clock while the wall clock is stepped back by as much:
    # the process no longer serves its token, although the cache's copy looks usable by date.
    mono.advance(3600)
    assert waiter.peek() is None
    holder = process(server, cache, clock)
    assert holder.shared.acquire_lock(600) is not None
    new = waiter.get_token()
    assert new != old
    assert new.access_token == server.issued_tokens[-1]
    assert server.token_request_count == 2


def test_a_waiter_at_its_deadline_takes_the_token_stored_at_that_moment(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    holder = process(server, cache, clock, LOCK_TIMEOUT=2)
    assert holder.shared.acquire_lock(600) is not None  # never released during the test
    deadline = clock() + 4  # 2 x LOCK_TIMEOUT
    stored: list[Token] = []

    def monotonic() -> float:
        if clock() >= deadline and not stored:
            stored.append(holder.refresh())  # the holder shares its token just then
        return clock()

    def coarse_sleep(seconds: float) -> None:
        clock.advance(1.0)

    waiter = build(
        server, cache, clock, {"LOCK_TIMEOUT": 2}, monotonic=monotonic, sleep=coarse_sleep
    )
    token = waiter.get_token()
    assert stored == [token]
    assert server.token_request_count == 1


def test_a_waiter_reading_a_lagging_replica_still_waits_until_its_deadline(
    server: FakeTradevestServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    class LaggingReplica(CountingCache):
        """Reads never show the lock; only add() knows it is taken."""

        def get_many(self, keys: list[str], *args: Any, **kwargs: Any) -> dict[str, Any]:
            values: dict[str, Any] = self.inner.get_many(keys, *args, **kwargs)
            return {key: value for key, value in values.items() if not key.endswith(":lock")}

    cache = LaggingReplica(f"precise-manager-{uuid.uuid4().hex}")
    holder = process(server, cache, clock, LOCK_TIMEOUT=2)
    assert holder.shared.acquire_lock(600) is not None
    waiter = process(server, cache, clock, LOCK_TIMEOUT=2)
    start = clock()
    waiter.get_token()
    assert clock() - start == pytest.approx(4, abs=0.05)  # 2 x LOCK_TIMEOUT, in 20 ms polls
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "Alias 'default' waited 4 s for other workers' token requests; requesting one itself."
    ]
    assert server.token_request_count == 1


# -- the refresh ahead when another worker holds the lock ----------------------------------------


def _refresh_while_another_worker_holds_the_lock(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> tuple[TokenManager, Token, threading.Thread]:
    manager = process(server, cache, clock)
    token = manager.get_token()
    holder = process(server, cache, clock)
    assert holder.shared.acquire_lock(600) is not None  # another worker is fetching
    clock.advance(INTO_REFRESH_WINDOW)
    assert manager.get_token() is token  # starts the refresh ahead, keeps the token
    thread = finished_refresh(manager)
    assert not thread.is_alive()
    return manager, token, thread


def test_a_background_refresh_neither_waits_nor_requests_while_another_worker_fetches(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager, token, _ = _refresh_while_another_worker_holds_the_lock(server, clock, cache)
    assert clock.sleeps == []
    assert server.token_request_count == 1
    assert manager.peek() is token


def test_after_finding_the_lock_taken_the_refresh_looks_again_5_s_later_not_on_every_call(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager, token, thread = _refresh_while_another_worker_holds_the_lock(server, clock, cache)
    assert manager.get_token() is token
    assert manager._refresh_thread is thread  # no new refresh on the next call
    clock.advance(4.9)
    assert manager.get_token() is token
    assert manager._refresh_thread is thread
    clock.advance(0.2)  # a quarter of the 100 s left, capped at 5 s
    assert manager.get_token() is token
    again = manager._refresh_thread
    assert again is not None and again is not thread
    again.join(timeout=5)
    assert server.token_request_count == 1


def test_a_failed_refresh_ahead_is_logged_with_the_time_the_token_has_left(
    server: FakeTradevestServer,
    clock: FakeClock,
    cache: CountingCache,
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = process(server, cache, clock, TOKEN_RETRIES=0)
    token = manager.get_token()
    clock.advance(INTO_REFRESH_WINDOW)
    server.inject(Fault.status(503))
    assert manager.get_token() is token
    thread = finished_refresh(manager)
    ours = [r for r in caplog.records if r.name == "tradevest_django.manager"]
    assert [r.getMessage() for r in ours if r.levelno == logging.WARNING] == [
        "Refreshing the token of alias 'default' failed (TokenEndpointUnavailable); still using "
        "the current token, valid for 100 s more."
    ]
    assert manager.get_token() is token
    assert manager._refresh_thread is thread  # looked at again later, not on every call


def test_an_unexpected_error_in_the_refresh_ahead_is_logged_and_looked_at_later(
    server: FakeTradevestServer,
    clock: FakeClock,
    cache: CountingCache,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Faulty(random.Random):
        broken = False

        def random(self) -> float:
            if self.broken:
                raise RuntimeError("precise generator failure")
            return 0.5

    rng = Faulty()
    manager = build(server, cache, clock, rng=rng, sleep=clock.sleep)
    token = manager.get_token()
    clock.advance(INTO_REFRESH_WINDOW)
    rng.broken = True  # the next token cannot be scheduled
    assert manager.get_token() is token
    thread = finished_refresh(manager)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "Unexpected error while refreshing the token of alias 'default'."
    ]
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is RuntimeError
    assert manager.get_token() is token
    assert manager._refresh_thread is thread  # postponed: no refresh per call meanwhile


def test_a_token_from_an_answer_without_a_date_is_timed_with_the_skew_learned_before(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock)
    manager.observe_server_date(formatdate(clock() - 600, usegmt=True))  # no token yet
    server.date_header = False
    token = manager.get_token()
    assert token.expires_at_timestamp == pytest.approx(clock() + 3600, abs=1e-3)
    assert manager.seconds_left() == pytest.approx(3600, abs=1e-3)


def test_the_status_says_when_the_cache_is_unreachable(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock)
    manager.get_token()
    assert manager.status()["cache_reachable"] is True
    cache.fail = True
    status = manager.status()
    assert status["cache_reachable"] is False
    assert status["token_cached"] is False


# -- secrets -------------------------------------------------------------------------------------


def test_after_the_primary_and_the_working_fallback_are_refused_the_other_fallback_is_tried(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    first, second = "precise-fallback-one", "precise-fallback-two"
    server.clients = {server.client_id: second}
    # Another process of the fleet got a token with the second fallback (and it was rejected).
    other = process(
        server, cache, clock, CLIENT_SECRET=second, CLIENT_SECRET_FALLBACKS=["precise-unused"]
    )
    other.invalidate(other.get_token())
    server.clients = {server.client_id: first}  # now only the first fallback is accepted
    manager = process(server, cache, clock, CLIENT_SECRET_FALLBACKS=[first, second])
    token = manager.get_token()
    assert token.access_token == server.issued_tokens[-1]
    assert manager.secret_in_use == "CLIENT_SECRET_FALLBACKS[0]"
    sent = [r.form["client_secret"][0] for r in server.token_requests]
    assert sent == [second, SECRET, second, first]


def test_a_fallbacks_remembered_refusal_stands_when_the_primarys_refusal_left_no_record(
    make_server: ServerFactory, cache: CountingCache
) -> None:
    # The rule compares when refusals end, so it must hold at any clock reading: here one near
    # the epoch, where the fallback's refusal ends half a second after the epoch.
    clock = FakeClock(start=-0.5)
    server = make_server(SECRET, clock=clock)
    fallback = "precise-fallback-late"
    server.clients = {server.client_id: "precise-nobody"}
    other = process(server, cache, clock, CLIENT_SECRET=fallback, FAILURE_COOLDOWN=1)
    with pytest.raises(InvalidClient):
        other.get_token()
    server.clients = {server.client_id: fallback}  # accepted again, but the fleet remembers
    manager = process(server, cache, clock, CLIENT_SECRET_FALLBACKS=[fallback], FAILURE_COOLDOWN=0)
    with pytest.raises(InvalidClient) as err:
        manager.get_token()
    assert err.value.remembered is True
    sent = [r.form["client_secret"][0] for r in server.token_requests]
    assert sent == [fallback, SECRET]  # the fallback was not asked again


def test_a_rotating_alias_names_no_secret_before_its_first_token(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    calls: list[int] = []

    def primary() -> str:
        calls.append(1)
        return SECRET

    manager = process(
        server, cache, clock, CLIENT_SECRET=primary, CLIENT_SECRET_FALLBACKS=["precise-f"]
    )
    assert manager.secret_in_use is None
    assert calls == []  # the callable is not read before a token is needed
    manager.get_token()
    assert manager.secret_in_use == "CLIENT_SECRET"


def test_a_callable_secret_that_still_returns_the_refused_value_is_not_asked_again(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    fallback = "precise-fallback-accepted"
    server.clients = {server.client_id: fallback}
    reads: list[int] = []

    def primary() -> str:
        reads.append(1)
        if len(reads) > 10:
            raise RuntimeError("read again and again")
        return SECRET

    manager = process(
        server, cache, clock, CLIENT_SECRET=primary, CLIENT_SECRET_FALLBACKS=[fallback]
    )
    manager.get_token()
    assert len(reads) == 2  # for the first try, and once more after the refusal
    sent = [r.form["client_secret"][0] for r in server.token_requests]
    assert sent == [SECRET, fallback]
    assert manager.secret_in_use == "CLIENT_SECRET_FALLBACKS[0]"


def test_a_callable_secret_rotated_after_a_refusal_is_tried_again_before_the_fallbacks(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    fallback, rotated = "precise-fallback-also-accepted", "precise-rotated-primary"
    server.clients = {server.client_id: (rotated, fallback)}
    values = iter([SECRET])

    def primary() -> str:
        return next(values, rotated)  # rotated once the first value was read

    manager = process(
        server, cache, clock, CLIENT_SECRET=primary, CLIENT_SECRET_FALLBACKS=[fallback]
    )
    manager.get_token()
    sent = [r.form["client_secret"][0] for r in server.token_requests]
    assert sent == [SECRET, rotated]
    assert manager.secret_in_use == "CLIENT_SECRET"


def test_a_fallback_refused_before_the_primary_was_is_asked_again(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    fallback = "precise-fallback-activated"
    server.clients = {server.client_id: "precise-nobody"}
    other = process(server, cache, clock, CLIENT_SECRET=fallback)
    with pytest.raises(InvalidClient):
        other.get_token()  # the fleet remembers the fallback refused for 30 s
    clock.advance(10)
    server.clients = {server.client_id: fallback}  # Tradevest activated it meanwhile
    manager = process(server, cache, clock, CLIENT_SECRET_FALLBACKS=[fallback])
    token = manager.get_token()  # the primary, refused now, was accepted until after that
    assert token.access_token == server.issued_tokens[-1]
    sent = [r.form["client_secret"][0] for r in server.token_requests]
    assert sent == [fallback, SECRET, fallback]


def test_a_process_forgets_its_own_stale_refusal_of_a_fallback(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    fallback = "precise-fallback-activated-later"
    server.clients = {server.client_id: "precise-nobody"}
    manager = process(server, cache, clock, CLIENT_SECRET_FALLBACKS=[fallback])
    with pytest.raises(InvalidClient):
        manager.get_token()  # both refused: remembered here and by the fleet for 30 s
    clock.advance(10)
    with pytest.raises(InvalidClient):
        process(server, cache, clock).refresh()  # another process asks with the primary again
    server.clients = {server.client_id: fallback}  # Tradevest activated the fallback
    token = manager.get_token()
    assert token.access_token == server.issued_tokens[-1]
    sent = [r.form["client_secret"][0] for r in server.token_requests]
    assert sent == [SECRET, fallback, SECRET, fallback]


def test_moving_to_a_fallback_and_back_to_client_secret_is_logged(
    server: FakeTradevestServer,
    clock: FakeClock,
    cache: CountingCache,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tradevest_django")
    fallback = "precise-fallback-meanwhile"
    server.clients = {server.client_id: fallback}
    manager = process(server, cache, clock, CLIENT_SECRET_FALLBACKS=[fallback])
    manager.invalidate(manager.get_token())
    server.clients = {server.client_id: (SECRET, fallback)}  # Tradevest accepts both now
    cache.delete(manager.shared.primary_retry_key)  # PRIMARY_SECRET_RETRY has passed
    clock.advance(31)  # and so has FAILURE_COOLDOWN
    manager.get_token()
    assert manager.secret_in_use == "CLIENT_SECRET"
    ours = [r for r in caplog.records if r.name == "tradevest_django.rotation"]
    moves = [r.getMessage() for r in ours if "uses" in r.getMessage()]
    assert moves == [
        "Alias 'default' now uses CLIENT_SECRET_FALLBACKS[0]: Tradevest refused CLIENT_SECRET "
        "(invalid_client). Finish the rotation: once Tradevest accepts CLIENT_SECRET, drop the "
        "fallback.",
        "Alias 'default' uses CLIENT_SECRET again (it was using CLIENT_SECRET_FALLBACKS[0]).",
    ]
    assert [r.levelname for r in ours if "uses" in r.getMessage()] == ["WARNING", "INFO"]


# -- forks ---------------------------------------------------------------------------------------


def test_after_a_fork_a_manager_has_fresh_locks_and_a_reseeded_generator(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    manager = process(server, cache, clock)
    held = manager._lock
    held.acquire()  # as if another thread held it at fork()
    state = manager._rng.getstate()
    manager._after_fork()
    assert manager._lock is not held and not manager._lock.locked()
    assert manager._rng.getstate() != state
    held.release()


def test_after_a_fork_an_injected_generator_is_left_as_the_test_set_it(
    server: FakeTradevestServer, clock: FakeClock, cache: CountingCache
) -> None:
    rng = random.Random(42)
    manager = build(server, cache, clock, rng=rng)
    state = rng.getstate()
    manager._after_fork()
    assert manager._rng is rng
    assert rng.getstate() == state


def test_the_fork_handler_resets_every_live_manager(
    server: FakeTradevestServer,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    cache: CountingCache,
) -> None:
    manager = process(server, cache, clock)
    token = manager.get_token()
    monkeypatch.setattr(manager_module, "_managers", weakref.WeakSet([manager]))
    held = manager._refreshing
    held.acquire()  # a background refresh was under way at fork()
    manager_module._reset_after_fork()
    assert manager._refreshing is not held and not manager._refreshing.locked()
    assert manager._refresh_thread is None
    held.release()
    clock.advance(INTO_REFRESH_WINDOW)
    assert manager.get_token() is token
    finished_refresh(manager)  # the refresh ahead starts again in the child
    assert server.token_request_count == 2
