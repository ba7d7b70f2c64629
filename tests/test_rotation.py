"""Rotating the client secret with no failed call: fallbacks, callables, the fleet's memory."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
from django.core.cache.backends.locmem import LocMemCache
from freezegun import freeze_time

import tradevest_django
from tests.fleet import collect, fleet_spec, kill_all, start_workers
from tests.helpers import CountingCache, FakeClock, ServerFactory, process
from tradevest_django.exceptions import InvalidClient, SecretUnavailable
from tradevest_django.manager import TokenManager
from tradevest_django.testing import FakeTradevestServer

OLD = "rotation-secret-OLD-r7Y"
NEW = "rotation-secret-NEW-q2W"


@pytest.fixture
def server(make_server: ServerFactory, clock: FakeClock) -> FakeTradevestServer:
    return make_server(OLD, clock=clock)  # Tradevest knows only the old secret so far


def secrets_sent(server: FakeTradevestServer) -> list[str]:
    return [record.form["client_secret"][0] for record in server.token_requests]


def test_a_new_secret_not_active_yet_is_backed_by_the_old_one(
    server: FakeTradevestServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = LocMemCache("rotation-inactive", {})
    options = {"CLIENT_SECRET": NEW, "CLIENT_SECRET_FALLBACKS": [OLD]}
    tokens = []
    for _ in range(6):  # six consecutive tokens, each in a new process of the fleet
        manager = process(server, cache, clock, **options)
        tokens.append(manager.get_token())
        assert manager.secret_in_use == "CLIENT_SECRET_FALLBACKS[0]"
        clock.advance(3600)  # the token expired: the next one needs a request
    assert len({t.access_token for t in tokens}) == 6
    assert server.token_request_count <= 8
    # the fleet remembers which secret works: only the first process paid a refused request
    assert secrets_sent(server) == [NEW, OLD, OLD, OLD, OLD, OLD, OLD]
    warnings = [r for r in caplog.records if "now uses CLIENT_SECRET_FALLBACKS[0]" in r.message]
    assert warnings and all(r.levelno == logging.WARNING for r in warnings)
    assert len(warnings) == 1  # once per change, not per token


def test_the_primary_takes_over_once_tradevest_activates_it(
    make_server: ServerFactory, freezegun_in_threads: None
) -> None:
    with freeze_time("2026-12-01 09:00:00") as frozen:
        server = make_server(OLD)
        cache = LocMemCache("rotation-takeover", {})  # expiry follows freezegun
        options = {
            "CLIENT_SECRET": NEW,
            "CLIENT_SECRET_FALLBACKS": [OLD],
            "PRIMARY_SECRET_RETRY": 5000,
        }
        manager = TokenManager.from_options("default", server.settings(**options), cache=cache)
        manager.get_token()
        assert secrets_sent(server) == [NEW, OLD]
        server.clients[server.client_id] = (NEW, OLD)  # Tradevest activates the new secret
        frozen.tick(3600)
        manager.get_token()  # within PRIMARY_SECRET_RETRY of the first try: the fallback serves
        assert secrets_sent(server)[-1] == OLD
        frozen.tick(3600)  # past it: one process tries the primary again
        manager.get_token()
        assert secrets_sent(server)[-1] == NEW
        assert manager.secret_in_use == "CLIENT_SECRET"
        other = TokenManager.from_options("default", server.settings(**options), cache=cache)
        assert other.get_token().source == "cache"  # the fleet follows, with no request
        assert other.secret_in_use == "CLIENT_SECRET"


def test_a_refused_primary_retry_costs_one_request_per_interval(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    cache = CountingCache()
    options = {"CLIENT_SECRET": NEW, "CLIENT_SECRET_FALLBACKS": [OLD]}
    process(server, cache, clock, **options).get_token()
    cache.inner.delete(process(server, cache, clock, **options).shared.primary_retry_key)
    clock.advance(3600)
    process(server, cache, clock, **options).get_token()  # the retry: refused, then the old
    assert secrets_sent(server) == [NEW, OLD, NEW, OLD]
    clock.advance(3600)
    process(server, cache, clock, **options).get_token()
    assert secrets_sent(server) == [NEW, OLD, NEW, OLD, OLD]  # no second retry yet


def test_every_secret_refused_raises_the_refusal(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    options = {"CLIENT_SECRET": NEW, "CLIENT_SECRET_FALLBACKS": ["rotation-secret-WRONG"]}
    with pytest.raises(InvalidClient):
        process(server, CountingCache(), clock, **options).get_token()
    assert server.token_request_count == 2


def test_a_callable_secret_is_read_again_after_a_refusal(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    current = {"secret": OLD}
    calls: list[str] = []

    def read_secret() -> str:
        calls.append(current["secret"])
        return current["secret"]

    cache = CountingCache()
    manager = process(server, cache, clock, CLIENT_SECRET=read_secret)
    first = manager.get_token()
    for _ in range(1000):
        assert manager.get_token() is first
    assert len(calls) == 1  # the hot path never calls it
    # the secret is rotated where it lives (a file, a secret manager) and activated at once
    current["secret"] = NEW
    server.clients[server.client_id] = NEW
    server.revoke(first.access_token)
    assert manager.invalidate(first)
    # the key of OLD still holds nothing usable; its request is refused; NEW is read again
    manager.get_token()
    assert secrets_sent(server)[-1] == NEW
    assert manager.secret_in_use == "CLIENT_SECRET"


def test_a_callable_secret_refused_is_read_again_before_the_fallbacks(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    stale = "rotation-secret-STALE-k8P"
    values = [stale, OLD]  # rotated where it lives between the first read and the second

    def read_secret() -> str:
        return values.pop(0) if len(values) > 1 else values[0]

    manager = process(
        server,
        CountingCache(),
        clock,
        CLIENT_SECRET=read_secret,
        CLIENT_SECRET_FALLBACKS=["rotation-secret-WRONG-u1L"],
    )
    assert manager.get_token()
    # refused with the value read first, the callable is read again, and its new value is
    # accepted before any fallback is tried
    assert secrets_sent(server) == [stale, OLD]
    assert manager.secret_in_use == "CLIENT_SECRET"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (lambda: (_ for _ in ()).throw(OSError("vault says no: rotation-secret-LEAK")), "OSError"),
        (lambda: None, "returned NoneType"),
        (lambda: "", "returned str"),
    ],
    ids=["raises", "returns-none", "returns-empty"],
)
def test_a_callable_that_fails_gives_a_clear_error(
    server: FakeTradevestServer, clock: FakeClock, source: Callable[[], str], message: str
) -> None:
    with pytest.raises(SecretUnavailable, match=message) as err:
        process(server, CountingCache(), clock, CLIENT_SECRET=source).get_token()
    assert "'default'" in str(err.value) and "CLIENT_SECRET" in str(err.value)
    assert "LEAK" not in str(err.value)
    assert err.value.retryable and server.token_request_count == 0


def test_a_callable_that_hangs_gives_up_within_the_deadline(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    release = threading.Event()

    def hanging() -> str:
        release.wait(30)
        return NEW

    try:
        manager = TokenManager.from_options(
            "default", server.settings(CLIENT_SECRET=hanging, TOKEN_DEADLINE=0.5), cache=None
        )
        with pytest.raises(SecretUnavailable, match=r"did not return within 0\.5 s"):
            manager.get_token()
        with pytest.raises(SecretUnavailable):  # waited for again, not called a second time
            manager.get_token()
    finally:
        release.set()


def test_settings_take_fallbacks_and_callables(settings: object) -> None:
    settings.TRADEVEST = {  # type: ignore[attr-defined]
        "default": {
            "CLIENT_ID": "id",
            "CLIENT_SECRET": lambda: NEW,
            "CLIENT_SECRET_FALLBACKS": [OLD, lambda: "rotation-secret-OLDER"],
            "AUTH_URL": "http://127.0.0.1:9",
        }
    }
    config = tradevest_django.get_manager().config
    assert len(config.client_secret_fallbacks) == 2
    assert OLD not in repr(config) and NEW not in repr(config)


# -- a whole rotation, calls going on throughout --------------------------------------------


def tokens_issued_so_far(server: FakeTradevestServer) -> list[str]:
    return list(server.issued_tokens)


@pytest.mark.slow
def test_a_whole_rotation_fails_no_call(settings: object, make_server: ServerFactory) -> None:
    server = make_server(OLD, token_lifetime=2)
    statuses: list[int] = []

    def calls(seconds: float) -> None:
        end = time.monotonic() + seconds  # calls go on for a while (a bounded loop)
        with tradevest_django.get_session() as session:
            while time.monotonic() < end:
                statuses.append(session.get("/prices").status_code)

    def deploy(**options: object) -> None:
        settings.TRADEVEST = {"default": server.settings(**options)}  # type: ignore[attr-defined]

    deploy()  # 1. Tradevest knows only the old secret
    calls(2.5)
    deploy(CLIENT_SECRET=NEW, CLIENT_SECRET_FALLBACKS=[OLD])  # the new one, old as fallback
    calls(2.5)
    old_tokens = tokens_issued_so_far(server)
    server.clients[server.client_id] = (NEW, OLD)  # 2. Tradevest accepts both
    calls(2.5)
    server.clients[server.client_id] = NEW  # 3. only the new one, and the old tokens go
    for token in old_tokens:
        server.revoke(token)
    calls(2.5)
    deploy(CLIENT_SECRET=NEW)  # 4. the fallback is dropped
    calls(2.5)
    assert len(statuses) > 100
    assert set(statuses) == {200}, f"{len(statuses) - statuses.count(200)} calls failed"
    # refused: the new secret before its activation, the old one after its retirement
    refused = server.token_request_count - len(server.issued_tokens)
    assert refused <= 2, f"{refused} refused token requests"
    assert secrets_sent(server)[-1] == NEW


@pytest.mark.slow
@pytest.mark.redis
def test_a_rolling_deploy_across_four_processes_fails_no_call(
    make_server: ServerFactory, redis_caches: dict[str, object]
) -> None:
    server = make_server(OLD, token_lifetime=2)
    start = time.time() + 3  # the workers start together on this line
    rotated = server.settings(CLIENT_SECRET=NEW, CLIENT_SECRET_FALLBACKS=[OLD])
    specs = [
        fleet_spec(
            server=server.settings(),
            caches=redis_caches,
            threads=4,
            duration=12,
            mode="session",
            start_at=start,
            deploys=[{"at": 1 + process, "server": rotated}],  # one process after the other
        )
        for process in range(4)
    ]
    procs = [proc for spec in specs for proc in start_workers(spec, 1)]

    def at(seconds: float) -> None:
        time.sleep(max(0.0, start + seconds - time.time()))  # a scheduled moment

    try:
        at(5)  # every process has the new settings: Tradevest activates the new secret
        server.clients[server.client_id] = (NEW, OLD)
        at(8)  # and retires the old one, with its tokens
        issued = tokens_issued_so_far(server)
        server.clients[server.client_id] = NEW
        for token in issued:
            server.revoke(token)
        results = collect(procs, timeout=120)
    except BaseException:
        kill_all(procs)
        raise
    calls = sum(r["calls"] for r in results)
    failures = [e for r in results for e in r["errors"]]
    assert calls > 200
    assert not failures, failures[:10]
    assert sum(r["unauthorized"] for r in results) == 0
    refused = server.token_request_count - len(server.issued_tokens)
    assert refused <= 4, f"{refused} refused token requests for 4 processes"


def test_refresh_tries_the_fallbacks_too(server: FakeTradevestServer, clock: FakeClock) -> None:
    manager = process(
        server, CountingCache(), clock, CLIENT_SECRET=NEW, CLIENT_SECRET_FALLBACKS=[OLD]
    )
    token = manager.refresh()  # the new secret is refused; the old one gets the token
    assert token.access_token == server.issued_tokens[-1]
    assert manager.secret_in_use == "CLIENT_SECRET_FALLBACKS[0]"
    assert secrets_sent(server) == [NEW, OLD]


def test_a_fallback_that_cannot_be_read_is_left_out(
    server: FakeTradevestServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def previous_version() -> str:
        raise LookupError("no AWSPREVIOUS version")

    manager = process(
        server,
        CountingCache(),
        clock,
        CLIENT_SECRET=OLD,
        CLIENT_SECRET_FALLBACKS=[previous_version],
    )
    assert manager.get_token()
    assert secrets_sent(server) == [OLD]
    assert any("CLIENT_SECRET_FALLBACKS[0]" in r.message for r in caplog.records)


def test_a_secret_read_from_a_file_loses_its_newline(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    process(server, CountingCache(), clock, CLIENT_SECRET=OLD + "\n").get_token()
    assert secrets_sent(server) == [OLD]


def test_a_refusal_remembered_before_an_activation_does_not_block_the_new_secret(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    cache = CountingCache()
    rotating = {"CLIENT_SECRET": NEW, "CLIENT_SECRET_FALLBACKS": [OLD]}
    old_token = process(server, cache, clock, **rotating).get_token()  # NEW refused, OLD works
    clock.advance(5)  # within FAILURE_COOLDOWN: NEW's refusal is still remembered
    server.clients[server.client_id] = NEW  # activated, and the old one retired at once
    server.revoke(old_token.access_token)
    not_deployed = process(server, cache, clock)  # still CLIENT_SECRET=OLD only
    assert not_deployed.invalidate(not_deployed.get_token())  # the API rejects the old token
    with pytest.raises(InvalidClient):
        not_deployed.get_token()  # OLD refused just now, and remembered by the fleet
    # a deployed process finds OLD refused (remembered, just now) and NEW refused before the
    # activation (remembered too, but earlier): it asks about NEW again rather than fail
    token = process(server, cache, clock, **rotating).get_token()
    assert token.access_token == server.issued_tokens[-1]
    assert secrets_sent(server) == [NEW, OLD, OLD, NEW]
