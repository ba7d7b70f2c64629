"""The manager's decisions as data in, decision out: no server, no clock, no cache."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tradevest_django import policy
from tradevest_django.conf import AliasConfig
from tradevest_django.exceptions import InvalidClient, TokenEndpointUnavailable
from tradevest_django.policy import Adopt, Fail, NothingYet, Phase, TakeLock
from tradevest_django.shared import Snapshot
from tradevest_django.tokens import Token

NOW = 1_800_000_000.0
CONFIG = AliasConfig.from_dict(
    "default",
    {"CLIENT_ID": "id", "CLIENT_SECRET": "secret", "AUTH_URL": "https://auth.example"},
    check_cache=False,
)


def token(name: str, expires: float, lifetime: int = 3600) -> Token:
    return Token(name, "Bearer", datetime.fromtimestamp(expires, tz=timezone.utc), lifetime)


def schedule_of(tok: Token, *, mono: float = 0.0, jitter: float = 0.0) -> policy.Schedule:
    return policy.plan(tok, CONFIG, mono=mono, wall=NOW, fetch_duration=0.0, jitter=jitter)


# -- timing ------------------------------------------------------------------------------------


def test_a_new_hour_token_is_fresh_until_its_refresh_window() -> None:
    plan = schedule_of(token("t", NOW + 3600))
    # usable until 30 s before expiry; refresh window 10 % of the life (360 s) before that
    assert plan.usable_until_wall == NOW + 3570
    assert plan.refresh_at_wall == NOW + 3570 - 300  # capped by REFRESH_WINDOW_MAX
    assert plan.usable_until == 3570 and plan.refresh_at == 3270
    assert policy.phase(plan, 3269.9, NOW + 3269.9) is Phase.FRESH
    assert policy.phase(plan, 3270, NOW + 3270) is Phase.REFRESH_DUE
    assert policy.phase(plan, 3569.9, NOW + 3569.9) is Phase.REFRESH_DUE
    assert policy.phase(plan, 3570, NOW + 3570) is Phase.EXPIRED  # the boundary itself
    assert policy.phase(None, 0, NOW) is Phase.EXPIRED


def test_either_clock_moves_the_phase() -> None:
    plan = schedule_of(token("t", NOW + 3600))
    # the wall clock alone (a machine that slept: the monotonic clock stood still)
    assert policy.phase(plan, 0, NOW + 3270) is Phase.REFRESH_DUE
    assert policy.phase(plan, 0, NOW + 3570) is Phase.EXPIRED
    # the monotonic clock alone (a wall clock stepped back)
    assert policy.phase(plan, 3270, NOW - 600) is Phase.REFRESH_DUE
    assert policy.phase(plan, 3570, NOW - 600) is Phase.EXPIRED


def test_short_tokens_shrink_the_margin_and_the_window() -> None:
    plan = schedule_of(token("t", NOW + 300, lifetime=300))
    assert plan.usable_until_wall == NOW + 300 - 15  # 5 % of the life, not 30 s
    assert plan.refresh_at_wall == NOW + 285 - 30  # 10 % of the life
    tiny = schedule_of(token("t", NOW + 2, lifetime=2))
    assert tiny.usable_until_wall == pytest.approx(NOW + 1.9)


def test_jitter_spreads_the_refresh_over_a_quarter_of_the_window() -> None:
    tok = token("t", NOW + 3600)
    early = schedule_of(tok, jitter=0.999)
    assert schedule_of(tok).refresh_at - early.refresh_at == pytest.approx(0.25 * 300, rel=1e-3)
    assert early.usable_until == schedule_of(tok).usable_until


def test_a_slow_fetch_widens_the_window() -> None:
    tok = token("t", NOW + 300, lifetime=300)
    plan = policy.plan(tok, CONFIG, mono=0, wall=NOW, fetch_duration=40, jitter=0)
    assert plan.refresh_at == pytest.approx(285 - 60)  # 1.5 x the fetch


def test_a_token_already_past_its_window_is_due_at_once() -> None:
    plan = schedule_of(token("t", NOW + 100))  # usable 70 s more, window 300 s
    assert plan.refresh_at == 0 and policy.phase(plan, 0, NOW) is Phase.REFRESH_DUE


def test_postponing_looks_again_soon_and_never_past_the_end() -> None:
    plan = schedule_of(token("t", NOW + 3600))
    later = policy.postponed(plan, 3500, NOW + 3500)
    assert later.refresh_at == 3505 and later.refresh_at_wall == NOW + 3505  # at most 5 s
    at_the_end = policy.postponed(plan, 3569.99, NOW + 3569.99)
    assert at_the_end.refresh_at <= plan.usable_until
    assert at_the_end.refresh_at_wall <= plan.usable_until_wall
    assert policy.postponed(plan, 3569.99, NOW + 3569.99).refresh_at == pytest.approx(3570)


# -- adoption ----------------------------------------------------------------------------------


def test_newer_means_another_token_expiring_no_earlier() -> None:
    old = token("old", NOW + 100)
    assert policy.newer(old, None)
    assert policy.newer(token("new", NOW + 200), old)
    assert policy.newer(token("new", NOW + 100), old)
    assert not policy.newer(token("stale", NOW + 99), old)
    assert not policy.newer(token("old", NOW + 200), old)  # the same token


def test_adoptable_means_usable_and_newer() -> None:
    current = token("cur", NOW + 100)
    shared = token("new", NOW + 3600)
    assert policy.adoptable(shared, current, NOW, CONFIG)
    assert not policy.adoptable(shared, current, NOW + 3570, CONFIG)  # at its usable-until
    assert policy.adoptable(shared, current, NOW + 3569.9, CONFIG)
    assert not policy.adoptable(current, shared, NOW, CONFIG)
    assert not policy.adoptable(None, current, NOW, CONFIG)


# -- what to do after reading the cache --------------------------------------------------------


def refused(until: float) -> dict[str, object]:
    return {"kind": "refused", "error": "invalid_client", "status": 400, "until": until}


def test_a_usable_shared_token_is_adopted_before_anything_else() -> None:
    shared = token("new", NOW + 3600)
    step = policy.next_step(Snapshot(shared, refused(NOW + 30), True), None, None, NOW, CONFIG)
    assert step == Adopt(shared)


def test_a_remembered_failure_is_raised_until_its_time_is_over() -> None:
    for local, fleet in ((refused(NOW + 30), None), (None, refused(NOW + 30))):
        step = policy.next_step(Snapshot(None, fleet, False), local, None, NOW, CONFIG)
        assert isinstance(step, Fail) and isinstance(step.error, InvalidClient)
        assert step.error.remembered
    over = policy.next_step(Snapshot(None, refused(NOW), False), None, None, NOW, CONFIG)
    assert over is TakeLock.TAKE_LOCK
    outage = {"kind": "unavailable", "status": 503, "until": NOW + 2}
    step = policy.next_step(Snapshot(None, outage, False), None, None, NOW, CONFIG)
    assert isinstance(step, Fail) and isinstance(step.error, TokenEndpointUnavailable)
    assert step.error.retry_after == 2


def test_a_held_lock_means_look_again_only_for_a_waiter() -> None:
    held = Snapshot(None, None, True)
    assert policy.next_step(held, None, None, NOW, CONFIG) is TakeLock.TAKE_LOCK
    waiting = policy.next_step(held, None, None, NOW, CONFIG, waiting=True)
    assert waiting is NothingYet.NOTHING_YET
    free = policy.next_step(Snapshot(None, None, False), None, None, NOW, CONFIG, waiting=True)
    assert free is TakeLock.TAKE_LOCK


def test_the_same_or_an_older_shared_token_is_not_adopted() -> None:
    current = token("cur", NOW + 100)
    same = policy.next_step(Snapshot(current, None, False), None, current, NOW, CONFIG)
    assert same is TakeLock.TAKE_LOCK
    expired = token("new", NOW + 10)  # newer, but past its usable-until (margin 30 s)
    stale = policy.next_step(Snapshot(expired, None, False), None, None, NOW, CONFIG)
    assert stale is TakeLock.TAKE_LOCK
