"""Every rule that decides what a token manager does next, as plain functions of data and time.

No I/O here: no clock is read, no cache is asked, nothing sleeps. The drivers
(:class:`~tradevest_django.manager.TokenManager` for threads and coroutines alike) read the
clocks and the cache, ask these functions what to do, and do it. Times come in two kinds: the
*monotonic* clock of this process, and the *wall* clock on Tradevest's reckoning (this host's
clock plus the learned skew). The in-flight allowance (``lead``) is the time a request takes
from taking its token to reaching the API: it brings the refresh forward by as much.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

from . import failures
from .conf import AliasConfig
from .exceptions import TradevestError
from .shared import Snapshot
from .tokens import Token

#: Share of the refresh window added at random, so a fleet's processes look at different times.
JITTER = 0.25


class Phase(enum.Enum):
    """Where the in-process token stands."""

    FRESH = "fresh"  # hand it out
    REFRESH_DUE = "refresh_due"  # hand it out, and refresh ahead in the background
    EXPIRED = "expired"  # do not hand it out: wait for a token


@dataclass(frozen=True)
class Schedule:
    """The in-process token and its two moments, each on both clocks.

    A moment has come when either clock says so: the monotonic clock does not follow a wall
    clock stepped by NTP or by hand, and the wall clock does not stand still while the machine
    sleeps.
    """

    token: Token
    refresh_at: float
    usable_until: float
    refresh_at_wall: float
    usable_until_wall: float


def phase(schedule: Schedule | None, mono: float, wall: float, lead: float = 0.0) -> Phase:
    """The phase of ``schedule`` at ``mono`` (monotonic) and ``wall`` (Tradevest's clock).

    ``lead`` brings the refresh forward, so that the new token is there before requests would
    carry the old one past its end. It never makes a usable token unusable: a sudden slow call
    must start a refresh in the background, not make every caller wait for one.
    """
    if schedule is None:
        return Phase.EXPIRED
    if mono + lead < schedule.refresh_at and wall + lead < schedule.refresh_at_wall:
        return Phase.FRESH
    if mono < schedule.usable_until and wall < schedule.usable_until_wall:
        return Phase.REFRESH_DUE
    return Phase.EXPIRED


def margin(token: Token, config: AliasConfig) -> float:
    """How long before its expiry a token stops being handed out.

    It covers skew and requests in flight; for short tokens it shrinks to 5 % of the lifetime,
    so a 5-minute Cognito token is not "expired on arrival".
    """
    return min(config.expiry_margin, 0.05 * token.lifetime)


def usable_until(token: Token, config: AliasConfig) -> float:
    """When ``token`` stops being handed out, on Tradevest's clock."""
    return token.server_expiry - margin(token, config)


def refresh_window(token: Token, config: AliasConfig, fetch_duration: float) -> float:
    """How long before ``usable_until`` the refresh ahead starts (before jitter)."""
    return min(
        max(config.refresh_window * token.lifetime, 1.5 * fetch_duration),
        config.refresh_window_max,
        0.5 * token.lifetime,
    )


def plan(
    token: Token,
    config: AliasConfig,
    *,
    mono: float,
    wall: float,
    fetch_duration: float,
    jitter: float,
) -> Schedule:
    """The schedule of a token taken at ``mono``/``wall``; ``jitter`` is drawn from [0, 1)."""
    end = usable_until(token, config)
    remaining = end - wall
    window = refresh_window(token, config, fetch_duration) * (1 + JITTER * jitter)
    before_refresh = max(remaining - window, 0.0)
    return Schedule(token, mono + before_refresh, mono + remaining, wall + before_refresh, end)


def postponed(schedule: Schedule, mono: float, wall: float) -> Schedule:
    """Look again a little later after a refresh found nothing to do, never past the end."""
    wait = min(max((schedule.usable_until - mono) / 4, 0.05), 5.0)
    return replace(
        schedule,
        refresh_at=min(mono + wait, schedule.usable_until),
        refresh_at_wall=min(wall + wait, schedule.usable_until_wall),
    )


def newer(token: Token, than: Token | None) -> bool:
    """Whether ``token`` replaces ``than``: another token, expiring no earlier."""
    return than is None or (
        token.access_token != than.access_token and token.server_expiry >= than.server_expiry
    )


def adoptable(
    shared: Token | None, current: Token | None, wall: float, config: AliasConfig
) -> bool:
    """Whether the cache's token is worth taking instead of ``current`` (usable and newer)."""
    return shared is not None and wall < usable_until(shared, config) and newer(shared, current)


@dataclass(frozen=True)
class Adopt:
    """Take this token from the cache."""

    token: Token


@dataclass(frozen=True)
class Fail:
    """Raise this error: the fleet remembers the endpoint failing moments ago."""

    error: TradevestError


class TakeLock(enum.Enum):
    """Try for the fleet's refresh lock (and request a token under it)."""

    TAKE_LOCK = "take_lock"


class NothingYet(enum.Enum):
    """Another worker holds the lock: look again a little later."""

    NOTHING_YET = "nothing_yet"


Step = Adopt | Fail | TakeLock | NothingYet


def next_step(
    snapshot: Snapshot,
    local_failure: dict[str, Any] | None,
    current: Token | None,
    wall: float,
    config: AliasConfig,
    *,
    waiting: bool = False,
) -> Step:
    """What to do after reading the cache, when this process has no usable token of its own.

    ``waiting``: this process is waiting for another's token request, so a held lock means
    "look again"; otherwise the lock is always tried (only ``add()`` can tell who holds it).
    """
    if snapshot.token is not None and adoptable(snapshot.token, current, wall, config):
        return Adopt(snapshot.token)
    for failure in (local_failure, snapshot.failure):
        error = failures.remembered_error(failure, wall, config)
        if error is not None:
            return Fail(error)
    if waiting and snapshot.locked:
        return NothingYet.NOTHING_YET
    return TakeLock.TAKE_LOCK
