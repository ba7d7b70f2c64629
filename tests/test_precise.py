"""Exact values the token path promises: messages, bounds, intervals and arguments.

Each assertion pins a number or a sentence that a broad behaviour test would let drift.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime, timezone
from email.utils import formatdate
from typing import Any

import pytest
import requests

from tests.helpers import CountingCache, FakeClock, ServerFactory, process
from tradevest_django import policy, signals
from tradevest_django.endpoint import _clean, describe_cause
from tradevest_django.exceptions import SecretUnavailable
from tradevest_django.rejections import REJECTION_WINDOW, Verdict, judge, record
from tradevest_django.secrets import Secrets
from tradevest_django.shared import whole_seconds
from tradevest_django.testing import FakeTradevestServer
from tradevest_django.tokens import Token

SECRET = "precise-secret-Wq3"
NOW = 1_800_000_000.0


@pytest.fixture
def server(make_server: ServerFactory, clock: FakeClock) -> FakeTradevestServer:
    return make_server(SECRET, clock=clock)


def token(name: str, issued_at: float, lifetime: int = 3600) -> Token:
    return Token(
        name, "Bearer", datetime.fromtimestamp(issued_at + lifetime, tz=timezone.utc), lifetime
    )


def test_the_revocation_marker_lasts_as_long_as_the_token(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    cache = CountingCache()
    manager = process(server, cache, clock)
    first = manager.get_token()
    clock.advance(1000)
    assert manager.invalidate(first)
    assert cache.timeouts[first.fingerprint] == [whole_seconds(first.server_expiry - clock())]
    assert cache.timeouts[first.fingerprint] == [2600]


def test_a_401s_date_teaches_the_skew_through_invalidate(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    manager = process(server, CountingCache(), clock)
    manager.invalidate(manager.get_token(), server_date=formatdate(clock() + 600, usegmt=True))
    assert 595 < manager._skew < 605


def test_ainvalidate_passes_the_reason_and_the_date(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    seen: list[str] = []

    def receiver(reason: str, **kwargs: Any) -> None:
        seen.append(reason)

    signals.token_invalidated.connect(receiver, weak=False)
    try:
        manager = process(server, CountingCache(), clock)
        date = formatdate(clock() + 600, usegmt=True)
        asyncio.run(manager.ainvalidate(manager.get_token(), "why not", server_date=date))
        assert 595 < manager._skew < 605
        clock.advance(REJECTION_WINDOW + 1)
        asyncio.run(manager.ainvalidate(manager.get_token()))
    finally:
        signals.token_invalidated.disconnect(receiver)
    assert seen == ["why not", "rejected by the API (401)"]


def test_postponing_waits_a_quarter_of_what_is_left_between_50_ms_and_5_s() -> None:
    plan = policy.Schedule(token("t", NOW), 0, 100, NOW, NOW + 100)
    assert policy.postponed(plan, 0, NOW).refresh_at == 5.0  # a quarter of 100 s, capped at 5
    assert policy.postponed(plan, 96, NOW + 96).refresh_at == 97.0  # a quarter of 4 s
    assert policy.postponed(plan, 99.9, NOW + 99.9).refresh_at == pytest.approx(99.95)  # 50 ms
    assert policy.postponed(plan, 99.99, NOW + 99.99).refresh_at == 100  # never past the end
    assert policy.postponed(plan, 96, NOW + 10).refresh_at_wall == NOW + 11  # same wait


def test_the_rejection_rules_at_their_boundaries() -> None:
    last = record(token("t1", NOW - 600), NOW, Verdict.INVALIDATE, cooldown=30)
    assert last.cooling_until == 0.0
    assert judge(token("t2", NOW), NOW + 1, last) is Verdict.COOL_DOWN  # issued at the instant
    short = token("t2", NOW, lifetime=10)
    assert judge(short, NOW + 5, last) is Verdict.COOL_DOWN  # exactly half its life: young
    assert judge(short, NOW + 5.01, last) is Verdict.INVALIDATE


def test_waiting_for_another_worker_polls_from_20_ms_up_to_a_quarter_second(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    cache = CountingCache()
    holder = process(server, cache, clock, LOCK_TIMEOUT=2)
    assert holder.shared.acquire_lock(2) is not None  # held for as long as the waiter waits
    waiter = process(server, cache, clock, LOCK_TIMEOUT=2)
    waiter.get_token()  # waits until its deadline, then asks itself
    sleeps = clock.sleeps
    assert sleeps[:4] == pytest.approx([0.02, 0.03, 0.045, 0.0675])
    assert max(sleeps) == 0.25
    assert sum(sleeps) == pytest.approx(4, abs=0.3)  # twice LOCK_TIMEOUT


def test_one_background_refresh_at_a_time_in_a_daemon_thread_named_for_the_alias(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    server.token_delay = 0.2
    manager = process(server, CountingCache(), clock)
    token_now = manager.get_token()
    clock.advance(3600 - 30 - 100)
    assert manager.get_token() is token_now
    thread = manager._refresh_thread
    assert thread is not None and thread.daemon and thread.name == "tradevest-refresh-default"
    assert manager.get_token() is token_now  # no second thread while the first one runs
    assert manager._refresh_thread is thread
    thread.join(timeout=10)


def test_secret_provider_errors_say_which_and_how() -> None:
    from tradevest_django.conf import AliasConfig

    def options(source: object, deadline: float = 5.0) -> Secrets:
        return Secrets(
            AliasConfig.from_dict(
                "tenant",
                {
                    "CLIENT_ID": "id",
                    "CLIENT_SECRET": "precise-primary",
                    "CLIENT_SECRET_FALLBACKS": [source],
                    "AUTH_URL": "http://127.0.0.1:9",
                    "TOKEN_DEADLINE": deadline,
                },
                check_cache=False,
            )
        )

    def raises() -> str:
        raise KeyError("precise-leak")

    with pytest.raises(SecretUnavailable) as err:
        options(raises).read(1)
    assert str(err.value) == (
        "CLIENT_SECRET_FALLBACKS[0] of alias 'tenant' (a callable) raised KeyError; no token can "
        "be requested with it."
    )
    assert err.value.alias == "tenant" and err.value.__cause__ is None
    with pytest.raises(SecretUnavailable) as err:
        options(lambda: 42).read(1)
    assert str(err.value) == (
        "CLIENT_SECRET_FALLBACKS[0] of alias 'tenant' (a callable) returned int, not a non-empty "
        "string."
    )
    release = threading.Event()
    try:
        with pytest.raises(SecretUnavailable) as err:
            options(lambda: release.wait(30) and "late", deadline=0.2).read(1)
        assert str(err.value) == (
            "CLIENT_SECRET_FALLBACKS[0] of alias 'tenant' (a callable) did not return within "
            "0.2 s (TOKEN_DEADLINE)."
        )
    finally:
        release.set()
    assert options(lambda: "x\n").read(1).value == "x"
    assert options("precise-primary").candidates()[0].position == 0
    assert len(options("precise-primary").candidates()) == 1  # the same secret twice: once


def test_a_fallback_that_fails_is_reported_and_the_rest_still_tried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tradevest_django.conf import AliasConfig

    def raises() -> str:
        raise OSError("down")

    secrets = Secrets(
        AliasConfig.from_dict(
            "default",
            {
                "CLIENT_ID": "id",
                "CLIENT_SECRET": raises,
                "CLIENT_SECRET_FALLBACKS": [raises, "precise-third"],
                "AUTH_URL": "http://127.0.0.1:9",
            },
            check_cache=False,
        )
    )
    (found,) = secrets.candidates()
    assert found.position == 2 and found.setting == "CLIENT_SECRET_FALLBACKS[1]"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "CLIENT_SECRET of alias 'default' (a callable) raised OSError; no token can be requested "
        "with it. Trying the other secrets.",
        "CLIENT_SECRET_FALLBACKS[0] of alias 'default' (a callable) raised OSError; no token can "
        "be requested with it. Trying the other secrets.",
    ]


def test_descriptions_are_cleaned_to_200_printable_characters_without_the_secret() -> None:
    assert _clean(None, "s") is None and _clean("", "s") is None and _clean(7, "s") is None
    assert _clean("bad\x00\nsecret-s3\tgone", "secret-s3") == "bad  *** gone"
    assert _clean("a" * 300, "") == "a" * 200
    assert _clean("keep secret-s3", "") == "keep secret-s3"


def test_a_network_error_is_described_cleanly() -> None:
    assert describe_cause(requests.ConnectionError("'quoted'")) == "ConnectionError: quoted"
    assert describe_cause(requests.ConnectionError("a\nb\tc")) == "ConnectionError: a b c"
    assert describe_cause(requests.ConnectionError("x" * 300)) == "ConnectionError: " + "x" * 200
    leak = requests.ConnectionError("sent precise-leak-9 to nobody")
    assert describe_cause(leak, "precise-leak-9") == "ConnectionError: sent *** to nobody"
    nested = requests.ConnectionError(OSError(OSError(OSError("deep"))))
    assert describe_cause(nested) == "ConnectionError: deep"


def test_fingerprints_are_twelve_hex_digits() -> None:
    fingerprint = token("abc", NOW).fingerprint
    assert len(fingerprint) == 12 and int(fingerprint, 16) >= 0


def test_the_lead_brings_either_clocks_refresh_forward() -> None:
    from tradevest_django.policy import Phase

    plan = policy.Schedule(token("t", NOW), 100, 200, NOW + 100, NOW + 200)
    # the wall clock stepped back a day: only the monotonic clock, with the lead, says "due"
    assert policy.phase(plan, 95, NOW - 86400, lead=10) is Phase.REFRESH_DUE
    # the monotonic clock stood still (a suspend): only the wall clock, with the lead
    assert policy.phase(plan, 0, NOW + 95, lead=10) is Phase.REFRESH_DUE
    assert policy.phase(plan, 0, NOW + 85, lead=10) is Phase.FRESH


def test_the_refresh_window_is_at_most_half_the_life() -> None:
    from tradevest_django.conf import AliasConfig

    config = AliasConfig.from_dict(
        "default",
        {
            "CLIENT_ID": "id",
            "CLIENT_SECRET": "s",
            "AUTH_URL": "http://127.0.0.1:9",
            "REFRESH_WINDOW": 0.5,
            "REFRESH_WINDOW_MAX": 86400,
        },
        check_cache=False,
    )
    assert policy.refresh_window(token("t", NOW, lifetime=100), config, fetch_duration=500) == 50


def test_what_the_fleet_remembers_of_a_failure() -> None:
    from tradevest_django import failures
    from tradevest_django.conf import AliasConfig
    from tradevest_django.exceptions import InvalidClient, TokenEndpointUnavailable

    config = AliasConfig.from_dict(
        "default",
        {"CLIENT_ID": "id", "CLIENT_SECRET": "s", "AUTH_URL": "http://127.0.0.1:9"},
        check_cache=False,
    )
    refusal = InvalidClient(alias="default", status_code=401, error_description="why")
    remembered, cooldown = failures.record(refusal, 30) or ({}, 0.0)
    assert cooldown == 30
    error = failures.remembered_error({**remembered, "until": NOW + 1}, NOW, config)
    assert isinstance(error, InvalidClient) and error.remembered
    assert (error.status_code, error.error_description) == (401, "why")
    outage = TokenEndpointUnavailable("down", alias="default", status_code=503, retry_after=0.5)
    remembered, cooldown = failures.record(outage, 30) or ({}, 0.0)
    assert cooldown == 0.5  # a short Retry-After is remembered too
    error = failures.remembered_error({**remembered, "until": NOW + 1}, NOW, config)
    assert isinstance(error, TokenEndpointUnavailable) and error.status_code == 503
    assert failures.record(refusal, 0) is None  # FAILURE_COOLDOWN = 0: nothing to remember


def test_a_cache_outage_and_its_end_are_logged_exactly(
    server: FakeTradevestServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tradevest_django")
    cache = CountingCache()
    manager = process(server, cache, clock)
    cache.fail = True
    manager.get_token()
    cache.fail = False
    manager.invalidate(manager.get_token())
    lines = [r.getMessage() for r in caplog.records if "Cache 'default'" in r.getMessage()]
    assert lines == [
        "Cache 'default' (CountingCache, given directly) is unavailable (ConnectionError on read);"
        " alias 'default' keeps working from its in-process token and the token endpoint until "
        "the cache is back.",
        "Cache 'default' is reachable again; alias 'default' shares its token through it again.",
    ]
    assert manager.shared.outage is False


def test_the_cache_token_shown_allows_for_the_time_calls_take(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    manager = process(server, CountingCache(), clock)
    first = manager.get_token()
    margin = policy.margin(first, manager.config)
    clock.advance(first.lifetime - margin - 100)  # 100 s of its usable life left
    assert manager.cached_token() == first
    manager.observe_in_flight(margin + 150)  # calls take 150 s more than the margin covers
    assert manager.cached_token() is None  # a token handed out now would arrive expired


def test_a_parsed_token_keeps_the_skew_it_is_given() -> None:
    from tradevest_django.endpoint import parse_token_response
    from tradevest_django.exceptions import BadTokenResponse

    answer = {"access_token": "abc", "expires_in": 300}
    assert parse_token_response(answer, issued_at=NOW).skew == 0.0
    assert parse_token_response(answer, issued_at=NOW, skew=7.5).skew == 7.5
    with pytest.raises(BadTokenResponse, match="for alias 'reports'"):
        parse_token_response({"expires_in": 300}, issued_at=NOW, alias="reports")


def test_a_cache_outage_names_the_backend_and_where_it_is(
    server: FakeTradevestServer,
    clock: FakeClock,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tradevest_django.manager import TokenManager

    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "tokens": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://:precise-redis-pw@127.0.0.1:9/0",  # nothing listens there
        },
        "unnamed": {"LOCATION": "nowhere"},
    }
    for alias, described in [
        ("tokens", "RedisCache at redis://:***@127.0.0.1:9/0"),
        ("unnamed", "no BACKEND at nowhere"),
    ]:
        caplog.clear()
        manager = TokenManager.from_options(
            "default", server.settings(CACHE=alias), clock=clock, sleep=clock.sleep
        )
        assert manager.get_token()
        outage = [r.getMessage() for r in caplog.records if "is unavailable" in r.getMessage()]
        assert outage and outage[0].startswith(f"Cache {alias!r} ({described}) is unavailable")
        assert "precise-redis-pw" not in caplog.text
