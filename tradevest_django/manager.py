"""The token manager: one token per credential set for a whole fleet, never a blocked caller.

How a token is found, from cheapest to dearest:

1. the in-process copy (no I/O, no lock: the hot path);
2. the shared Django cache, where any worker of the fleet may have stored a newer token;
3. the token endpoint, asked by one caller at a time: a thread lock in the process and a
   short-lived ``cache.add`` lock across processes; everyone else waits for the result.

Inside the refresh window (the last ~10 % of a token's life) one background thread per process
looks in the cache and, only if nobody stored a newer token yet, fetches one, while callers keep
the still-valid token. Callers wait only when no valid token exists at all.

Coroutines (:meth:`TokenManager.aget_token`) take the same path: the hot path is the same
attribute read; a coroutine that must wait awaits one shared "flight", a thread doing what a
waiting thread does, so the event loop never blocks, and nothing belongs to a particular loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from django.core.cache import BaseCache

from . import failures, policy, rejections, signals, telemetry
from .conf import AliasConfig
from .endpoint import FetchResult, TokenEndpoint, clock_skew
from .exceptions import TradevestError
from .policy import Adopt, Fail, NothingYet, Phase, Schedule
from .rejections import Rejection, Verdict
from .rotation import SecretRotation
from .shared import SharedState
from .tokens import Token

logger = logging.getLogger(__name__)
#: The largest in-flight allowance, as a share of the token's lifetime.
LEAD_SHARE = 0.1

_managers: weakref.WeakSet[TokenManager] = weakref.WeakSet()


class TokenManager:
    """Obtains, shares and refreshes the access token of one credential set.

    Most projects never build one: :func:`tradevest_django.get_token` uses one per ``TRADEVEST``
    alias. Build your own for credentials that do not live in settings (one per tenant)::

        manager = TokenManager.from_options(
            "tenant-42",
            {"CLIENT_ID": ..., "CLIENT_SECRET": ..., "ENVIRONMENT": "production"},
            cache=caches["tokens"],
        )
        token = manager.get_token()

    ``clock`` (wall clock), ``monotonic``, ``sleep`` and ``rng`` exist for tests.
    """

    def __init__(
        self,
        config: AliasConfig,
        *,
        cache: BaseCache | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] | None = None,
    ):
        self.config = config
        self.alias = config.alias
        self._clock = clock or (lambda: time.time())
        # A test that injects a wall clock usually wants it to drive everything.
        self._monotonic = monotonic or (clock if clock is not None else lambda: time.monotonic())
        self._sleep = sleep or (lambda seconds: time.sleep(seconds))
        self._rng = rng or random.Random()
        self._rng_injected = rng is not None
        self.endpoint = TokenEndpoint(config, clock=self._clock, sleep=self._sleep, rng=self._rng)
        #: Which secret is in use, its cache keys, and what is remembered of each secret.
        self._rotation = SecretRotation(config, cache)
        self.secrets = self._rotation.secrets
        self._state: Schedule | None = None
        self._skew = 0.0
        self._fetch_duration = 0.0
        #: How long a token handed out may take to reach the API (see observe_in_flight).
        self._lead = 0.0
        self._rejection: Rejection | None = None
        self._init_locks()
        #: When this process last obtained a new token, and the last error it met (status page).
        self.last_refresh: datetime | None = None
        self.last_error: TradevestError | None = None
        _managers.add(self)
        telemetry.track(self)

    def _init_locks(self) -> None:
        self._lock = threading.Lock()  # single flight for callers that must wait
        self._refreshing = threading.Lock()  # at most one background refresh
        self._state_lock = threading.Lock()  # compare-and-set of _state (never on the hot path)
        self._refresh_thread: threading.Thread | None = None
        self._flight_lock = threading.Lock()  # the coroutines' token request (aget_token)
        self._in_flight: concurrent.futures.Future[Token] | None = None

    @classmethod
    def from_options(
        cls,
        alias: str,
        options: Mapping[str, Any],
        *,
        cache: BaseCache | None = None,
        **kwargs: Any,
    ) -> TokenManager:
        """Build a manager from a dict shaped like one ``TRADEVEST`` alias, without settings."""
        return cls(
            AliasConfig.from_dict(alias, options, check_cache=cache is None), cache=cache, **kwargs
        )

    def __repr__(self) -> str:
        return f"<TokenManager alias={self.alias!r} auth_host={self.config.auth_host!r}>"

    @property
    def shared(self) -> SharedState:
        """The cache side of the secret in use (reading a callable secret the first time)."""
        return self._rotation.shared

    @property
    def secret_in_use(self) -> str | None:
        """Which configured secret serves: ``"CLIENT_SECRET"``, ``"CLIENT_SECRET_FALLBACKS[0]"``…

        ``None`` before the first token of a callable secret. Never the secret itself.
        """
        secret = self._rotation.secret
        return secret.setting if secret is not None else None

    # -- public API ----------------------------------------------------------------------------

    def get_token(self) -> Token:
        """Return a valid token, fetching one only when nobody in the fleet has one.

        Raises:
            TokenEndpointError: the token endpoint refused the credentials (now or very recently).
            TokenEndpointUnavailable: no valid token exists and the endpoint cannot be reached.
            BadTokenResponse: the endpoint answered with something that is not a token.
        """
        return self._ready() or self._wait_for_token()

    async def aget_token(self) -> Token:
        """:meth:`get_token` for coroutines: the event loop keeps running while a token is got.

        The in-process token is returned at once, as by :meth:`get_token`. Otherwise the
        coroutine awaits the process's single token "flight" (shared with every other coroutine,
        loop and thread of the process, and through the cache with the fleet), which runs in a
        thread of its own. It raises what :meth:`get_token` raises.
        """
        token = self._ready()
        if token is not None:
            return token
        return await asyncio.wrap_future(self._flight())

    def _ready(self) -> Token | None:
        """The in-process token, if it may be handed out now (no I/O, no lock: the hot path).

        Inside the refresh window it starts the background refresh and still returns it.
        """
        state = self._state
        if state is None:
            return None
        now = policy.phase(state, self._monotonic(), self._clock() + self._skew, self._lead)
        if now is Phase.FRESH:
            return state.token
        if now is Phase.REFRESH_DUE:
            self._start_background_refresh(state)
            return state.token
        return None

    def _flight(self) -> concurrent.futures.Future[Token]:
        """The token request coroutines wait for: the one under way, or a new one."""
        with self._flight_lock:
            flight = self._in_flight
            if flight is None:
                flight = self._in_flight = concurrent.futures.Future()
                # Running: a waiter that is cancelled cannot cancel it for the others.
                flight.set_running_or_notify_cancel()
                threading.Thread(
                    target=self._fly,
                    args=(flight,),
                    name=f"tradevest-token-{self.alias}",
                    daemon=True,
                ).start()
            return flight

    def _fly(self, flight: concurrent.futures.Future[Token]) -> None:
        try:
            token = self._wait_for_token()
        except BaseException as err:
            self._land()
            flight.set_exception(err)
        else:
            self._land()
            flight.set_result(token)

    def _land(self) -> None:
        with self._flight_lock:
            self._in_flight = None

    def seconds_left(self) -> float | None:
        """Seconds until the in-process token expires (``None`` without one); no I/O."""
        state = self._state
        return state.token.server_expiry - self._now() if state is not None else None

    def peek(self) -> Token | None:
        """The token this process would use now, without any I/O (``None`` if it has none)."""
        state = self._state
        return state.token if state is not None and self._serves(state) else None

    def cached_token(self) -> Token | None:
        """The token shared in the cache, if a usable one is there (cache reads, no request)."""
        token = self.shared.snapshot().token
        usable = token is not None and policy.adoptable(
            token, None, self._now() + self._lead, self.config
        )
        return token.with_skew(self._skew) if token is not None and usable else None

    def status(self) -> dict[str, Any]:
        """What the status page and monitors show for this alias; never fetches a token.

        Two cache reads; no secret and no token in it (only the token's fingerprint).
        """
        config = self.config
        token = self.cached_token()
        shared = self.shared.status()
        return {
            "alias": self.alias,
            "environment": config.environment,
            "auth_host": config.auth_host,
            "api_url": config.api_url,
            "client_id": config.masked_client_id,
            "cache": config.cache_alias,
            "cache_reachable": not self.shared.outage,
            "secret": self.secret_in_use,
            "token_cached": token is not None,
            "fingerprint": token.fingerprint if token else None,
            "expires_at": token.expires_at.isoformat(timespec="seconds") if token else None,
            "expires_in": int(token.server_expiry - self._now()) if token else None,
            "last_refresh": shared.get("last_refresh"),
            "last_error": shared.get("last_error"),
        }

    def refresh(self) -> Token:
        """Fetch a new token now, whatever is cached, and share it (an explicit, blocking call).

        The shared token is replaced only when the request succeeds; a remembered failure is
        ignored and cleared.
        """
        with self._lock:
            self._rotation.forget_all_failures()
            return self._rotation.each(self._refresh_with)

    def _refresh_with(self) -> Token:
        token = self._fetch_and_share()
        self.shared.forget_failure()
        return token

    def observe_server_date(self, date_header: str | None, round_trip: float = 0.0) -> None:
        """Learn how far this host's clock is off from a Tradevest response's ``Date`` header.

        A process that only ever takes tokens from the cache never sees a token response, so
        the session feeds it API responses' dates (the first of each session, and every 401).
        """
        received = self._clock()
        skew = clock_skew(date_header, received, sent=received - round_trip)
        if skew is None or skew == self._skew:
            return  # no Date is no news: what was learned before still holds
        self._skew = skew
        state = self._state
        if state is not None:
            self._adopt(state.token, replacing=state)  # re-time it on the corrected clock

    def observe_in_flight(self, seconds: float) -> None:
        """Learn how long requests take from taking their token to the API's answer.

        Sessions and clients report every call. The expiry margin (``EXPIRY_MARGIN``, 5 % of a
        short token's life) covers requests in flight; under load (many coroutines or threads
        queueing for connections) they can take longer, and a token handed out moments before
        its end would reach the API expired. The in-process token is then refreshed earlier by
        what exceeds the margin, so that the new one is there in time. The figure follows the
        slowest recent calls (it decays by 1 % per faster call) and never exceeds a tenth of the
        token's life: beyond that the machine is saturated, and bringing every refresh further
        forward would only cost token requests (a straggler's 401 is replayed).
        """
        state = self._state
        if state is None:
            return  # no token to judge the call against
        token = state.token
        excess = min(seconds - policy.margin(token, self.config), LEAD_SHARE * token.lifetime)
        lead = self._lead
        if excess > lead:
            self._lead = excess
        elif lead:
            self._lead = max(excess, lead * 0.99, 0.0)

    def invalidate(
        self,
        token: Token,
        reason: str = "rejected by the API (401)",
        *,
        server_date: str | None = None,
    ) -> bool:
        """Forget ``token`` (and only it) here and in the shared cache, after the API rejected it.

        A newer token that another worker has already stored stays: the cache is told which
        token was rejected, not to delete whatever it holds. Pass the rejecting response's
        ``Date`` header as ``server_date``: a host whose clock is off learns it from there.

        Returns whether the token was dropped. It is kept when a fresh token is being rejected
        too: a 401 that a new token does not fix is about something else (``Requestor-ID``,
        permissions, a proxy), so the fleet stops replacing tokens for ``FAILURE_COOLDOWN``
        seconds rather than pay a token request per call (:mod:`tradevest_django.rejections`).
        """
        if server_date is not None:
            self.observe_server_date(server_date)
        now = self._now()
        last = Rejection.from_cache(self.shared.rejection()) or self._rejection
        verdict = rejections.judge(token, now, last)
        if verdict is Verdict.IGNORE:
            return False
        cooldown = float(self.config.failure_cooldown)
        self._rejection = rejections.record(token, now, verdict, cooldown)
        self.shared.record_rejection(
            self._rejection.to_cache(), timeout=max(cooldown, rejections.REJECTION_WINDOW)
        )
        if verdict is Verdict.COOL_DOWN:
            logger.warning(
                "Alias %r: the API rejected a token obtained moments ago too (%s), so a new "
                "token does not help: check Requestor-ID, permissions and proxies. Tokens are "
                "not replaced for %.0f s; 401s reach callers as the API sent them.",
                self.alias,
                reason,
                cooldown,
            )
            return False
        with self._state_lock:
            state = self._state
            if state is not None and state.token == token:
                self._state = None
        remaining = token.server_expiry - now
        self.shared.revoke(token, timeout=max(remaining, 1.0))
        logger.info("Invalidated token %s of alias %r: %s.", token.fingerprint, self.alias, reason)
        self._send(signals.token_invalidated, fingerprint=token.fingerprint, reason=reason)
        return True

    async def ainvalidate(
        self,
        token: Token,
        reason: str = "rejected by the API (401)",
        *,
        server_date: str | None = None,
    ) -> bool:
        """:meth:`invalidate` for coroutines: its cache calls run in a thread, not on the loop."""
        return await asyncio.to_thread(self.invalidate, token, reason, server_date=server_date)

    # -- obtaining -----------------------------------------------------------------------------

    def _wait_for_token(self) -> Token:
        with self._lock:
            state = self._state
            if state is not None and self._serves(state):
                return state.token  # another thread got one while we waited for the lock
            # _obtain returns None only in the background; the fallback is for the type checker.
            return self._obtain(background=False) or self._fetch_and_share()

    def _obtain(self, *, background: bool) -> Token | None:
        """Adopt a newer shared token, or fetch one under the fleet lock, secret by secret.

        The secrets are tried in :meth:`SecretRotation.each`'s order, the next one each time
        Tradevest refuses one (``invalid_client``). Returns ``None`` only in the background,
        when there is nothing to do yet.
        """
        return self._rotation.each(lambda: self._obtain_with(background=background))

    def _obtain_with(self, *, background: bool) -> Token | None:
        """:meth:`_obtain` for the secret in use."""
        current = self._state.token if self._state is not None else None
        step = self._next_step(current)
        if isinstance(step, Adopt):
            return self._adopt(step.token)
        if isinstance(step, Fail):
            raise step.error
        owner = self.shared.acquire_lock(self.config.lock_timeout)
        if owner is None and background:
            return None  # another worker is fetching; look again soon
        # A holder has LOCK_TIMEOUT for its request; a dead one's lock expires after as long,
        # and then one waiter wins it and needs as long again.
        deadline = self._monotonic() + 2 * self.config.lock_timeout
        while owner is None:
            token = self._wait_for_other_worker(current, deadline)
            if token is not None:
                return token
            # The lock looked free. Only add() decides: a read may come from a replica that
            # has not seen the lock yet, and the loser of a race for a dead holder's expired
            # lock must wait for the winner's token, not request one too.
            owner = self.shared.acquire_lock(self.config.lock_timeout)
            if owner is None and self._monotonic() >= deadline:
                logger.warning(
                    "Alias %r waited %d s for other workers' token requests; requesting one "
                    "itself.",
                    self.alias,
                    2 * self.config.lock_timeout,
                )
                break
        try:
            step = self._next_step(current)  # stored while we took the lock?
            if isinstance(step, Adopt):
                return self._adopt(step.token)
            return self._fetch_and_share()
        finally:
            if owner is not None:
                self.shared.release_lock(owner)

    def _wait_for_other_worker(self, current: Token | None, deadline: float) -> Token | None:
        """Poll the cache while another worker holds the lock, until it looks free or ``deadline``.

        Returns the token the other worker shared, or ``None`` to try for the lock again.
        """
        interval = 0.02
        while self._monotonic() < deadline:
            self._sleep(interval)
            interval = min(interval * 1.5, 0.25)
            step = self._next_step(current, waiting=True)
            if isinstance(step, Adopt):
                return self._adopt(step.token)
            if isinstance(step, Fail):
                raise step.error
            if not isinstance(step, NothingYet):
                return None  # the lock looks free: the holder gave up or died without a token
        return None

    def _next_step(self, current: Token | None, *, waiting: bool = False) -> policy.Step:
        return policy.next_step(
            self.shared.snapshot(),
            self._rotation.failure,
            current,
            self._now() + self._lead,
            self.config,
            waiting=waiting,
        )

    def _fetch_and_share(self) -> Token:
        try:
            result = self.endpoint.fetch(self._rotation.current)
        except TradevestError as err:
            self._remember(err)
            self.last_error = err
            self.shared.record_status(
                last_error={
                    "type": type(err).__name__,
                    "error": getattr(err, "error", None),
                    "message": str(err),
                    "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
            )
            self._send(signals.token_request_failed, exception=err)
            raise
        return self._share(result)

    def _share(self, result: FetchResult) -> Token:
        if result.skew is not None:  # no Date is no news: keep what was learned
            self._skew = result.skew
        self._fetch_duration = result.duration
        token = replace(result.token, skew=self._skew)
        self._rotation.forget_failure()
        self.last_refresh = datetime.now(timezone.utc)
        self._adopt(token)
        self.shared.store_token(
            token, timeout=policy.usable_until(token, self.config) - self._now()
        )
        self._rotation.mark_working()
        self.shared.record_status(
            last_refresh=self.last_refresh.isoformat(timespec="seconds"),
            last_fingerprint=token.fingerprint,
        )
        logger.info(
            "Obtained a new token for alias %r from %s: fingerprint %s, expires in %d s "
            "(attempt %d, %.3f s).",
            self.alias,
            self.config.auth_host,
            token.fingerprint,
            token.lifetime,
            result.attempts,
            result.duration,
        )
        self._send(
            signals.token_obtained,
            fingerprint=token.fingerprint,
            expires_at=token.expires_at,
            duration=result.duration,
            attempt=result.attempts,
        )
        return token

    # -- refresh ahead -------------------------------------------------------------------------

    def _start_background_refresh(self, due: Schedule) -> None:
        if not self._refreshing.acquire(blocking=False):
            return  # one refresh per process at a time
        try:
            thread = threading.Thread(
                target=self._background_refresh,
                args=(due,),
                name=f"tradevest-refresh-{self.alias}",
                daemon=True,
            )
            thread.start()
        except BaseException:
            self._refreshing.release()
            raise
        self._refresh_thread = thread

    def _background_refresh(self, due: Schedule) -> None:
        try:
            with self._lock:
                state = self._state
                if state is not due:
                    return  # someone refreshed, postponed or invalidated it meanwhile
                if self._obtain(background=True) is None:
                    self._postpone(state)
        except TradevestError as err:
            state = self._state
            if state is not None:
                logger.warning(
                    "Refreshing the token of alias %r failed (%s); still using the current "
                    "token, valid for %.0f s more.",
                    self.alias,
                    type(err).__name__,
                    state.usable_until - self._monotonic(),
                )
                self._postpone(state)
        except Exception:
            logger.exception("Unexpected error while refreshing the token of alias %r.", self.alias)
            state = self._state
            if state is not None:
                self._postpone(state)  # never a refresh per call while the cause persists
        finally:
            self._refreshing.release()

    def _postpone(self, state: Schedule) -> None:
        """Look again a little later, without a thread per call in the meantime."""
        later = policy.postponed(state, self._monotonic(), self._now())
        with self._state_lock:
            if self._state is state:  # not if it was invalidated or replaced meanwhile
                self._state = later

    # -- failures shared by the fleet ----------------------------------------------------------

    def _remember(self, err: TradevestError) -> None:
        record = failures.record(err, self.config.failure_cooldown)
        if record is None:
            return
        failure, cooldown = record
        failure["until"] = self._now() + cooldown
        self._rotation.remember_failure(failure)
        self.shared.remember_failure(failure, timeout=cooldown)

    # -- time ----------------------------------------------------------------------------------

    def _now(self) -> float:
        """Now, on the token server's clock (ours corrected by the skew seen in ``Date``)."""
        return self._clock() + self._skew

    def _serves(self, state: Schedule) -> bool:
        """Whether the in-process token may still be handed out (a slow path's second look)."""
        now = policy.phase(state, self._monotonic(), self._clock() + self._skew)
        return now is not Phase.EXPIRED

    def _adopt(self, token: Token, *, replacing: Schedule | None = None) -> Token:
        """Make ``token`` this process's token (if given, only while ``replacing`` is current)."""
        token = token.with_skew(self._skew)  # its public times on this host's clock
        state = policy.plan(
            token,
            self.config,
            mono=self._monotonic(),
            wall=self._now(),
            fetch_duration=self._fetch_duration,
            jitter=self._rng.random(),
        )
        with self._state_lock:
            if replacing is None or self._state is replacing:
                self._state = state
        return token

    def _send(self, signal: Any, **kwargs: Any) -> None:
        for receiver, result in signal.send_robust(sender=self, alias=self.alias, **kwargs):
            if isinstance(result, Exception):
                logger.error(
                    "Signal receiver %r raised %s; ignored.", receiver, type(result).__name__
                )

    def _after_fork(self) -> None:
        self._init_locks()
        if not self._rng_injected:
            # The child inherited the parent's generator state: without a new seed every
            # prefork child would pick the same refresh moment and the same retry delays.
            self._rng.seed()


def _reset_after_fork() -> None:
    # A lock held by another thread at fork() stays held forever in the child, and the
    # refresh thread does not exist there: give every manager fresh ones.
    for manager in list(_managers):
        manager._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
