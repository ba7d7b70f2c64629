"""The token manager in one process: caching, hot path, refresh ahead, single flight, failures."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from django.core.cache.backends.locmem import LocMemCache
from freezegun import freeze_time

from tests.helpers import CountingCache, FakeClock, ServerFactory
from tradevest_django.exceptions import BadTokenResponse, InvalidClient, TokenEndpointUnavailable
from tradevest_django.manager import TokenManager
from tradevest_django.rejections import REJECTION_WINDOW
from tradevest_django.shared import cache_key_base
from tradevest_django.testing import FakeTradevestServer, Fault


@pytest.fixture
def server(make_server: ServerFactory, clock: FakeClock) -> FakeTradevestServer:
    # The server shares the test's clock, as a real server shares real time with its clients.
    return make_server("manager-secret-QWE", clock=clock)


def make(
    server: FakeTradevestServer, cache: object, clock: FakeClock | None = None, **options: object
) -> TokenManager:
    """A manager for one "process"; ``clock`` defaults to the server's fake clock."""
    clock = clock or server._clock  # type: ignore[assignment]
    return TokenManager.from_options(
        "default",
        server.settings(**options),
        cache=cache,
        clock=clock,
        sleep=clock.sleep,  # type: ignore[union-attr,arg-type]
    )


def join_refresh(manager: TokenManager) -> None:
    thread = manager._refresh_thread
    if thread is not None:
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_token_is_cached_under_a_hashed_key_without_the_secret(server: FakeTradevestServer) -> None:
    cache = CountingCache()
    token = make(server, cache).get_token()
    assert server.token_request_count == 1
    key = cache_key_base(make(server, cache).config) + ":token"
    entry = cache.inner.get(key)
    assert entry["access_token"] == token.access_token
    assert "manager-secret-QWE" not in key and "test-client" not in key
    # a second process (another manager on the same cache) adopts it without a request
    other = make(server, cache).get_token()
    assert other == token and other.source == "cache"
    assert server.token_request_count == 1


def test_key_changes_with_credentials_secret_and_environment(server: FakeTradevestServer) -> None:
    keys = {
        cache_key_base(make(server, None, **options).config)
        for options in (
            {},
            {"CLIENT_ID": "other"},
            {"SCOPE": "x"},
            {"TOKEN_PATH": "/connect/token"},
            {"AUTH_URL": "http://localhost:1"},
            {"CLIENT_SECRET": "changed"},
        )
    }
    assert len(keys) == 6


def test_cache_timeout_is_remaining_lifetime_minus_margin_in_whole_seconds(
    server: FakeTradevestServer,
) -> None:
    cache = CountingCache()
    make(server, cache).get_token()
    assert cache.timeouts["token"][-1] == 3600 - 30
    server.token_lifetime = 300
    make(server, cache, SCOPE="s").get_token()
    assert cache.timeouts["token"][-1] == 300 - 15  # margin clamped to 5 % of a short lifetime
    everything = [t for timeouts in cache.timeouts.values() for t in timeouts]
    assert all(isinstance(t, int) and t >= 1 for t in everything)


def test_hot_path_makes_no_cache_calls(server: FakeTradevestServer) -> None:
    cache = CountingCache()
    manager = make(server, cache)
    first = manager.get_token()
    calls = cache.total_calls
    for _ in range(1000):
        assert manager.get_token() is first
    assert cache.total_calls == calls


def test_short_lived_token_is_not_expired_on_arrival(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    server.token_lifetime = 300
    manager = make(server, CountingCache(), clock)
    token = manager.get_token()
    clock.advance(240)  # before the refresh window (247.5 s at the earliest)
    assert manager.get_token() is token
    assert server.token_request_count == 1
    clock.advance(44)  # 284 s: the margin is 5 % (15 s), so it is still served at once
    assert manager.get_token() is token
    join_refresh(manager)


@pytest.mark.usefixtures("freezegun_in_threads")
def test_expiry_and_refresh_window_with_freezegun() -> None:
    start = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    with freeze_time(start) as frozen, FakeTradevestServer() as server:
        manager = TokenManager.from_options(
            "default", server.settings(), cache=LocMemCache("freeze", {})
        )
        token = manager.get_token()
        assert token.expires_at == start + timedelta(seconds=3600)
        frozen.tick(3600 - 30 - 300 - 100)  # before the window (last 300 s, jittered up to 375 s)
        assert manager.get_token() is token and manager._refresh_thread is None
        frozen.tick(100 + 5)  # inside the refresh window: the old token is served at once
        assert manager.get_token() is token
        join_refresh(manager)
        fresh = manager.get_token()
        assert fresh != token and server.token_request_count == 2
        frozen.tick(3600)  # past the new token's expiry: callers wait for a new one
        assert manager.get_token() not in (token, fresh)
        assert server.token_request_count == 3


def test_refresh_ahead_adopts_a_token_another_worker_stored(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    cache = CountingCache()
    worker_a, worker_b = make(server, cache, clock), make(server, cache, clock)
    old = worker_a.get_token()
    assert worker_b.get_token() == old
    clock.advance(3600 - 30 - 290)
    assert worker_a.get_token() == old
    join_refresh(worker_a)
    new = worker_a.get_token()
    assert new != old
    assert worker_b.get_token() == old  # still valid: served at once...
    join_refresh(worker_b)
    assert worker_b.get_token() == new  # ...and the refresh adopted A's token, no request
    assert server.token_request_count == 2


def test_failed_refresh_keeps_serving_the_valid_token(
    server: FakeTradevestServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    manager = make(server, CountingCache(), clock, TOKEN_RETRIES=1)
    token = manager.get_token()
    clock.advance(3600 - 30 - 200)
    server.inject(Fault.status(503), Fault.status(503))
    assert manager.get_token() is token
    join_refresh(manager)
    assert manager.get_token() is token  # no exception, still the valid token
    assert isinstance(manager.last_error, TokenEndpointUnavailable)
    assert "still using the current token" in caplog.text
    clock.advance(100)  # the shared back-off is over; the next look fetches
    manager.get_token()
    join_refresh(manager)
    assert manager.get_token() != token


def test_64_threads_cause_exactly_one_token_request(server: FakeTradevestServer) -> None:
    server.token_delay = 0.3  # every thread arrives while the first request is in flight
    manager = make(server, CountingCache())
    barrier = threading.Barrier(64)
    results: list[str] = []

    def call() -> None:
        barrier.wait(timeout=10)
        results.append(manager.get_token().access_token)

    threads = [threading.Thread(target=call) for _ in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert len(results) == 64 and len(set(results)) == 1
    assert server.token_request_count == 1


def test_invalidate_drops_only_that_token(server: FakeTradevestServer) -> None:
    cache = CountingCache()
    worker_a, worker_b = make(server, cache), make(server, cache)
    stale = worker_a.get_token()
    assert worker_b.get_token() == stale
    worker_b.invalidate(stale)
    fresh = worker_b.get_token()
    assert fresh != stale
    worker_a.invalidate(stale)  # A's 401 arrives late: the fresher token must survive
    assert worker_a.get_token() == fresh
    assert server.token_request_count == 2


def test_many_invalidations_of_one_token_cause_one_request(server: FakeTradevestServer) -> None:
    cache = CountingCache()
    workers = [make(server, cache) for _ in range(10)]
    rejected = workers[0].get_token()
    for worker in workers:
        worker.invalidate(rejected)
    tokens = {worker.get_token().access_token for worker in workers}
    assert len(tokens) == 1 and rejected.access_token not in tokens
    assert server.token_request_count == 2


def test_invalid_client_is_remembered_by_the_fleet(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    cache = CountingCache()
    manager = make(server, cache, clock, CLIENT_SECRET="wrong-secret", FAILURE_COOLDOWN=30)
    with pytest.raises(InvalidClient) as first:
        manager.get_token()
    assert not first.value.remembered
    others = [make(server, cache, clock, CLIENT_SECRET="wrong-secret") for _ in range(20)]
    for other in others:
        with pytest.raises(InvalidClient) as info:
            other.get_token()
        assert info.value.remembered
    assert server.token_request_count == 1
    clock.advance(31)
    with pytest.raises(InvalidClient):
        others[0].get_token()
    assert server.token_request_count == 2
    # fixed credentials are a new key: the remembered failure does not apply
    assert make(server, cache, clock).get_token()
    assert server.token_request_count == 3


def test_outage_backoff_is_shared_with_retry_after(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    cache = CountingCache()
    server.inject(Fault.status(429, retry_after="10"))
    with pytest.raises(TokenEndpointUnavailable):
        make(server, cache, clock, TOKEN_DEADLINE=5).get_token()
    with pytest.raises(TokenEndpointUnavailable, match="waits"):
        make(server, cache, clock).get_token()
    assert server.token_request_count == 1
    clock.advance(11)
    assert make(server, cache, clock).get_token()


def test_cache_outage_serves_and_warns_once(
    server: FakeTradevestServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = CountingCache()
    cache.fail = True
    manager = make(server, cache)
    token = manager.get_token()
    manager.invalidate(token)
    assert manager.get_token() != token
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "unavailable" in r.message
    ]
    assert len(warnings) == 1
    cache.fail = False
    manager.invalidate(manager.get_token())
    manager.get_token()
    assert "reachable again" in caplog.text


def test_clock_skew_from_date_header(server: FakeTradevestServer, clock: FakeClock) -> None:
    host_clock = lambda: clock() - 600  # noqa: E731 - this host's clock is 10 minutes slow
    manager = TokenManager.from_options(
        "default", server.settings(), cache=CountingCache(), clock=host_clock, sleep=clock.sleep
    )
    token = manager.get_token()
    clock.advance(3600 - 30 - 400)  # local clock alone would say 400 s are left...
    assert manager.get_token() is token
    clock.advance(450)  # ...but the server's clock says it expired: never send it
    assert manager.get_token() != token
    assert server.token_request_count == 2


def test_fork_child_gets_fresh_locks(server: FakeTradevestServer) -> None:
    manager = make(server, CountingCache())
    manager.get_token()
    with manager._lock:  # held by this thread at fork time
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            ok = manager._lock.acquire(timeout=2) and manager._refreshing.acquire(timeout=2)
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_an_unusable_answer_is_remembered_briefly(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    cache = CountingCache()
    server.inject(Fault.body(b"<html>maintenance</html>", content_type="text/html"))
    with pytest.raises(BadTokenResponse):
        make(server, cache).get_token()
    with pytest.raises(BadTokenResponse, match="waits"):
        make(server, cache).get_token()  # another worker: no second billed request
    assert server.token_request_count == 1
    clock.advance(3)
    assert make(server, cache).get_token()
    assert server.token_request_count == 2


# -- 0.2 hardening ------------------------------------------------------------------------------


def test_each_rejected_token_keeps_its_own_marker(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    cache = CountingCache()
    old = make(server, cache).get_token()  # T1, held by a slow process
    holder = make(server, cache)
    assert holder.get_token() == old
    fresh_process = make(server, cache)
    fresh_process.invalidate(old)  # T1 rejected: T2 is fetched and shared
    revoked = fresh_process.get_token()
    assert revoked != old
    clock.advance(REJECTION_WINDOW + 1)
    assert fresh_process.invalidate(revoked)  # T2 rejected too (much later)
    holder.invalidate(old)  # a late 401 for T1 arrives in the slow process
    # T2 stays revoked for everyone: nobody adopts it from the cache
    assert fresh_process.shared.snapshot().token is None
    assert make(server, cache).get_token() not in (old, revoked)


def test_forked_children_draw_different_refresh_moments(server: FakeTradevestServer) -> None:
    def draws(manager: TokenManager) -> list[float]:
        readers = []
        for _ in range(2):
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                os.write(write, repr(manager._rng.random()).encode())
                os._exit(0)
            os.close(write)
            readers.append((pid, read))
        values = []
        for pid, read in readers:
            values.append(float(os.read(read, 64)))
            os.close(read)
            os.waitpid(pid, 0)
        return values

    first, second = draws(make(server, CountingCache()))
    assert first != second  # reseeded in each child: a prefork pool spreads its refreshes
    seeded = TokenManager.from_options(
        "default", server.settings(), cache=CountingCache(), rng=random.Random(7)
    )
    first, second = draws(seeded)
    assert first == second  # an injected generator is the test's to control


def test_an_answer_without_date_keeps_the_learned_skew(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    host_clock = lambda: clock() - 600  # noqa: E731 - this host's clock is 10 minutes slow
    manager = TokenManager.from_options(
        "default", server.settings(), cache=CountingCache(), clock=host_clock, sleep=clock.sleep
    )
    manager.invalidate(manager.get_token())  # learned the skew from the first answer's Date
    server.date_header = False
    token = manager.get_token()
    assert server.token_request_count == 2
    assert abs(token.server_expiry - (clock() + 3600)) < 2  # still on the server's clock
    manager.observe_server_date(None)  # no Date is no news
    clock.advance(3600 - 30 + 5)  # past the server's usable-until, 10 min early by ours
    assert manager.get_token() != token
    assert server.token_request_count == 3


def test_after_a_suspend_the_wall_clock_expires_the_in_process_token(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    stood_still = clock()  # the monotonic clock does not count a machine's sleep
    manager = TokenManager.from_options(
        "default",
        server.settings(),
        cache=CountingCache(),
        clock=clock,
        sleep=clock.sleep,
        monotonic=lambda: stood_still,
    )
    token = manager.get_token()
    clock.advance(2 * 3600)  # suspended for two hours
    assert manager.peek() is None
    assert manager.get_token() != token
    assert server.token_request_count == 2


def test_a_resume_inside_the_refresh_window_refreshes_ahead(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    stood_still = clock()
    manager = TokenManager.from_options(
        "default",
        server.settings(),
        cache=CountingCache(),
        clock=clock,
        sleep=clock.sleep,
        monotonic=lambda: stood_still,
    )
    token = manager.get_token()
    clock.advance(3600 - 100)  # inside the refresh window by the wall clock only
    assert manager.get_token() is token  # still valid: served at once...
    join_refresh(manager)
    assert server.token_request_count == 2  # ...and replaced in the background


@pytest.mark.parametrize("offset", [600, -600], ids=["server-ahead", "server-behind"])
def test_public_times_are_on_this_hosts_clock(offset: float) -> None:
    with FakeTradevestServer(date_offset=offset, token_lifetime=300) as server:
        manager = TokenManager.from_options("default", server.settings(), cache=CountingCache())
        token = manager.get_token()
        status = manager.status()
    assert abs(token.seconds_left - 300) < 3
    assert abs(token.expires_at.timestamp() - (time.time() + 300)) < 3
    assert abs(token.server_expiry - (time.time() + offset + 300)) < 3
    assert abs(status["expires_in"] - 300) < 3
    expires = datetime.fromisoformat(status["expires_at"]).timestamp()
    assert abs(expires - (time.time() + 300)) < 3


def test_slow_calls_bring_the_refresh_forward_but_never_take_a_token_away(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    server.token_lifetime = 300  # usable until 285 s (a 5 % margin), refresh from 255 s
    manager = make(server, CountingCache(), clock)
    token = manager.get_token()
    clock.advance(200)
    manager.observe_in_flight(20)  # calls now take 20 s from token to answer
    assert manager.peek() is token  # still usable: a slow call takes no token away
    assert manager._refresh_thread is None
    for _ in range(400):
        manager.observe_in_flight(0.01)  # the load is gone: the allowance decays
    assert manager._lead < 1
    manager.observe_in_flight(10_000)
    assert manager._lead == 30  # never more than a tenth of the token's life
    clock.advance(30)
    assert manager.get_token() is token  # 230 s + 30 s is past 255 s: refresh ahead now
    join_refresh(manager)
    assert server.token_request_count == 2


def test_the_allowance_brings_the_refresh_forward(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    server.token_lifetime = 300
    manager = make(server, CountingCache(), clock)
    token = manager.get_token()
    clock.advance(230)  # before the refresh window (255 s at the earliest)
    assert manager.get_token() is token
    assert server.token_request_count == 1
    manager.observe_in_flight(60)
    assert manager.get_token() is token  # still served at once...
    join_refresh(manager)
    assert server.token_request_count == 2  # ...and replaced in the background
