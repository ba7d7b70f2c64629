"""A 401 that no new token fixes costs a bounded number of token requests."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest
from django.core.cache.backends.locmem import LocMemCache

from tradevest_django import get_session
from tradevest_django.manager import TokenManager
from tradevest_django.rejections import REJECTION_WINDOW, Rejection, Verdict, judge, record
from tradevest_django.sessions import TradevestAuth, TradevestSession
from tradevest_django.testing import FakeTradevestServer
from tradevest_django.tokens import Token

NOW = 1_800_000_000.0


def token(name: str, issued_at: float, lifetime: int = 3600) -> Token:
    expires = datetime.fromtimestamp(issued_at + lifetime, tz=timezone.utc)
    return Token(name, "Bearer", expires, lifetime)


# -- the rule, as data in and a verdict out ----------------------------------------------------


def test_a_first_rejection_invalidates() -> None:
    assert judge(token("t1", NOW - 600), NOW, None) is Verdict.INVALIDATE


def test_a_fresh_token_rejected_moments_after_the_last_one_cools_down() -> None:
    last = record(token("t1", NOW - 600), NOW, Verdict.INVALIDATE, cooldown=30)
    fresh = token("t2", NOW + 0.2)
    assert judge(fresh, NOW + 0.5, last) is Verdict.COOL_DOWN


def test_the_same_token_rejected_again_is_invalidated_again() -> None:
    t1 = token("t1", NOW - 600)
    last = record(t1, NOW, Verdict.INVALIDATE, cooldown=30)
    assert judge(t1, NOW + 0.5, last) is Verdict.INVALIDATE


def test_a_token_older_than_the_last_rejection_is_invalidated() -> None:
    # issued before the last rejection: not its replacement (e.g. a late 401 for an old token)
    last = record(token("t1", NOW - 600), NOW, Verdict.INVALIDATE, cooldown=30)
    assert judge(token("t0", NOW - 1200), NOW + 0.5, last) is Verdict.INVALIDATE


def test_a_token_issued_a_moment_before_the_last_rejection_is_invalidated() -> None:
    # a background refresh obtained it just before another worker's 401: not its replacement
    last = record(token("t1", NOW - 600), NOW, Verdict.INVALIDATE, cooldown=30)
    assert judge(token("t2", NOW - 0.3), NOW + 0.5, last) is Verdict.INVALIDATE


def test_a_short_token_rejected_near_its_end_is_expiring_not_refused() -> None:
    # 2 s tokens under load: a replacement sent late is rejected for its age, not for its use
    last = record(token("t1", NOW - 2, lifetime=2), NOW, Verdict.INVALIDATE, cooldown=30)
    assert judge(token("t2", NOW + 0.1, lifetime=2), NOW + 1.5, last) is Verdict.INVALIDATE
    assert judge(token("t2", NOW + 0.1, lifetime=2), NOW + 0.9, last) is Verdict.COOL_DOWN


def test_a_young_token_long_after_the_last_rejection_is_invalidated() -> None:
    last = record(token("t1", NOW - 600), NOW, Verdict.INVALIDATE, cooldown=30)
    later = NOW + 3600
    assert judge(token("t9", later - 1), later, last) is Verdict.INVALIDATE


def test_a_rejection_long_after_the_last_one_invalidates() -> None:
    last = record(token("t1", NOW - 600), NOW, Verdict.INVALIDATE, cooldown=30)
    late = NOW + REJECTION_WINDOW + 0.01
    assert judge(token("t2", NOW + 0.2), late, last) is Verdict.INVALIDATE
    assert judge(token("t2", NOW + 0.2), NOW + REJECTION_WINDOW, last) is Verdict.COOL_DOWN


def test_during_a_cooldown_rejections_are_ignored_and_after_it_they_count_again() -> None:
    cooling = record(token("t2", NOW), NOW, Verdict.COOL_DOWN, cooldown=30)
    assert cooling.cooling_until == NOW + 30
    assert judge(token("t2", NOW), NOW + 29.9, cooling) is Verdict.IGNORE
    assert judge(token("t3", NOW + 5), NOW + 29.9, cooling) is Verdict.IGNORE
    assert judge(token("t2", NOW), NOW + 30, cooling) is Verdict.INVALIDATE


def test_the_record_survives_the_cache_and_ignores_garbage() -> None:
    rejection = Rejection("abc", NOW, NOW + 30)
    assert Rejection.from_cache(rejection.to_cache()) == rejection
    for garbage in (None, "x", {}, {"fingerprint": "a", "at": "soon", "until": 0}):
        assert Rejection.from_cache(garbage) is None


# -- the drivers: sessions and managers against the fake server --------------------------------


def test_thirty_calls_to_an_api_that_answers_401_cost_at_most_3_token_requests(
    tradevest_settings: FakeTradevestServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = tradevest_settings
    caplog.set_level(logging.INFO, logger="tradevest_django")
    with get_session() as session:
        statuses = [session.get("/status/401").status_code for _ in range(30)]
    assert statuses == [401] * 30
    assert server.token_request_count <= 3, server.token_request_count
    calls = [r for r in server.api_requests if r.path == "/status/401"]
    assert len(calls) <= 30 + 3  # at most one replay per token requested
    cooling = [r for r in caplog.records if "not replaced for" in r.getMessage()]
    assert len(cooling) == 1 and cooling[0].levelno == logging.WARNING
    assert "'default'" in cooling[0].getMessage() and "30 s" in cooling[0].getMessage()


def test_a_replay_refused_too_is_reported_and_starts_the_cooldown_at_once(
    tradevest_settings: FakeTradevestServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = tradevest_settings
    caplog.set_level(logging.WARNING, logger="tradevest_django")
    with get_session() as session:
        response = session.get("/status/401")
        # one call: the token, its 401, a fresh token, and the replay's 401 told to the manager
        assert response.status_code == 401 and len(response.history) == 1
        assert server.token_request_count == 2
        assert [r.getMessage() for r in caplog.records if "not replaced for" in r.getMessage()]
        assert session.get("/status/401").status_code == 401  # cooling down: no replay
    assert server.token_request_count == 2
    assert len([r for r in server.api_requests if r.path == "/status/401"]) == 3


def test_the_cooldown_is_fleet_wide(tradevest_settings: FakeTradevestServer) -> None:
    server = tradevest_settings
    cache = LocMemCache("rejections-fleet", {})

    def process() -> TokenManager:
        return TokenManager.from_options("default", server.settings(), cache=cache)

    first = process()
    with TradevestSession(first.config, TradevestAuth(manager=first)) as session:
        assert session.get("/status/401").status_code == 401
    assert server.token_request_count == 2  # the token, and one replacement
    other = process()
    with TradevestSession(other.config, TradevestAuth(manager=other)) as session:
        for _ in range(5):
            assert session.get("/status/401").status_code == 401
    assert server.token_request_count == 2  # it took the shared token and kept it


def test_a_revoked_token_is_still_replaced_and_the_call_succeeds(
    tradevest_settings: FakeTradevestServer,
) -> None:
    server = tradevest_settings
    with get_session() as session:
        assert session.get("/prices").status_code == 200
        server.revoke(server.issued_tokens[-1])
        assert session.get("/prices").status_code == 200  # replayed with a new token
        server.revoke(server.issued_tokens[-1])
        # moments later the new one is revoked too: that looks like a 401 no token fixes
        assert session.get("/prices").status_code == 401
    assert server.token_request_count == 2


def test_invalidate_token_says_whether_it_dropped_the_token(
    tradevest_settings: FakeTradevestServer,
) -> None:
    import tradevest_django

    first = tradevest_django.get_token()
    assert tradevest_django.invalidate_token(first) is True
    fresh = tradevest_django.get_token()
    assert tradevest_django.invalidate_token(fresh) is False  # a fresh one rejected too
    assert tradevest_django.get_token() is fresh  # kept during the cooldown
    assert tradevest_settings.token_request_count == 2
