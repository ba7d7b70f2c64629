"""What one credential set keeps in Django's cache, and the policy for cache failures.

Every key starts with a prefix derived from a keyed hash (HMAC-SHA256 under Django's
``SECRET_KEY``) of the auth URL, token path, client id, scope **and client secret**. A token is
thus shared only by processes that hold the secret that obtained it: a process with the right
client id and any other secret never finds it, makes its own token request and is refused as it
should be. Keying the hash with ``SECRET_KEY`` means that someone who can read the cache cannot
test guesses of a weak secret offline against the key. The keys:

* ``…:token``: the shared token (access token, type, expiry on Tradevest's clock, lifetime);
* ``…:revoked:<fingerprint>``: one marker per token the API rejected, so a stale copy is ignored;
* ``…:lock``: the short-lived refresh lock (``cache.add``), saving requests, never needed for
  correctness;
* ``…:status``: when the fleet last obtained a token and the last error (for the status page);
* ``…:failure``: a recent refusal or outage of the token endpoint, so a whole fleet backs off;
* ``…:rejected``: the last token the API rejected and whether the fleet is cooling down after
  a fresh token was rejected too (:mod:`tradevest_django.rejections`).

Two more keys belong to the client id, whatever the secret (a keyed hash of auth URL, token
path, client id and scope), for secret rotation (:mod:`tradevest_django.secrets`):

* ``…:secret``: the keyed hash of the secret that last obtained a token, so processes that hold
  several go straight to the one that works;
* ``…:primary-retry``: taken with ``add()`` by the one process that may try ``CLIENT_SECRET``
  again while a fallback serves (one per ``PRIMARY_SECRET_RETRY``).

Every cache call is wrapped (:func:`best_effort`): a cache that raises (Redis down, a bad
backend) is logged once per outage and treated as empty, so callers fall back to the in-process
copy and the endpoint.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.utils.crypto import salted_hmac

from .conf import AliasConfig, mask_location
from .secrets import Secret, Secrets
from .tokens import Token

if TYPE_CHECKING:
    from .crypto import TokenCipher

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
KEY_VERSION = "v2"
STATUS_TIMEOUT = 7 * 24 * 3600
#: Seconds before a lock's TTL ends when its owner no longer takes it for granted (the cache's
#: clock and whole-second expiry may run a little ahead of ours).
LOCK_SAFETY = 1.0


def cache_key_base(config: AliasConfig, secret: Secret | None = None) -> str:
    """The prefix of every key of a credential set: a keyed hash, so no secret in it.

    ``secret`` defaults to ``CLIENT_SECRET`` (which must then be a string).
    """
    value = (secret or Secrets(config).read(0)).value
    digest = salted_hmac(
        "tradevest_django.shared.cache_key_base",
        f"{_identity(config)}\0{value}",
        algorithm="sha256",
    ).hexdigest()[:32]
    return f"tradevest_django:{KEY_VERSION}:{digest}"


def client_key_base(config: AliasConfig) -> str:
    """The prefix of the keys a client id's secrets share (which one works), without a secret."""
    digest = salted_hmac(
        "tradevest_django.shared.client_key_base", _identity(config), algorithm="sha256"
    ).hexdigest()[:32]
    return f"tradevest_django:{KEY_VERSION}:{digest}"


def _identity(config: AliasConfig) -> str:
    return "\0".join((config.auth_url, config.token_path, config.client_id, config.scope or ""))


def whole_seconds(seconds: float) -> int:
    """A cache timeout every backend treats alike: a whole number of seconds, at least 1.

    Rounded down (so a cached entry never outlives its token), after allowing for the
    microsecond rounding of datetimes.
    """
    return max(1, math.floor(seconds + 0.001))


class Lock(NamedTuple):
    """A refresh lock this process holds."""

    #: The value stored under the lock key.
    owner: str
    #: When the cache drops the key, on this process's monotonic clock.
    expires: float


class Snapshot(NamedTuple):
    """What the cache holds for a credential set, read in one go."""

    #: The shared token, unless there is none or the API rejected it.
    token: Token | None
    #: The fleet's memory of a recent token endpoint failure (see :mod:`.failures`).
    failure: dict[str, Any] | None
    #: Whether some worker holds the refresh lock.
    locked: bool


def best_effort(what: str, default: object) -> Callable[[F], F]:
    """Run a cache operation; any backend error means "no shared state", never a failure.

    The decorated method returns ``default`` instead of raising. The first error of an outage
    is logged as a warning, the recovery as info.
    """

    def decorate(operation: F) -> F:
        @functools.wraps(operation)
        def wrapper(self: SharedState, *args: Any, **kwargs: Any) -> Any:
            try:
                result = operation(self, *args, **kwargs)
            except Exception as err:  # every backend raises its own kinds of error
                self._went_down(what, err)
                return default
            if self.outage:
                self._came_back()
            return result

        return cast(F, wrapper)

    return decorate


class SharedState:
    """The cache side of one :class:`~tradevest_django.manager.TokenManager`."""

    def __init__(
        self, config: AliasConfig, cache: BaseCache | None = None, secret: Secret | None = None
    ):
        self._config = config
        self._cache = cache
        base = cache_key_base(config, secret)
        self._base = base
        client = client_key_base(config)
        self.working_secret_key = f"{client}:secret"
        self.primary_retry_key = f"{client}:primary-retry"
        self.token_key = f"{base}:token"
        self.lock_key = f"{base}:lock"
        self.failure_key = f"{base}:failure"
        self.status_key = f"{base}:status"
        self.rejected_key = f"{base}:rejected"
        self._cipher: TokenCipher | None = None
        if config.encryption_keys:
            from .crypto import TokenCipher

            self._cipher = TokenCipher(config.encryption_keys)
        self.outage = False

    def __repr__(self) -> str:
        return f"<SharedState alias={self._config.alias!r} cache={self._config.cache_alias!r}>"

    @property
    def cache(self) -> BaseCache:
        # Resolved at call time: Django's handler gives each thread its own connection.
        return self._cache if self._cache is not None else caches[self._config.cache_alias]

    def revoked_key(self, fingerprint: str) -> str:
        """The key of the marker saying the API rejected the token with ``fingerprint``."""
        return f"{self._base}:revoked:{fingerprint}"

    @best_effort("read", Snapshot(None, None, False))
    def snapshot(self) -> Snapshot:
        """The shared token (unless revoked), the remembered failure and the lock, in one go."""
        values = self.cache.get_many([self.token_key, self.failure_key, self.lock_key])
        entry = values.get(self.token_key)
        token = Token.from_cache(self._cipher.decrypt(entry) if self._cipher else entry)
        if token is not None and self.cache.get(self.revoked_key(token.fingerprint)) is not None:
            token = None
        failure = values.get(self.failure_key)
        return Snapshot(
            token, failure if isinstance(failure, dict) else None, self.lock_key in values
        )

    @best_effort("write", None)
    def store_token(self, token: Token, timeout: float) -> None:
        entry = token.to_cache()
        if self._cipher is not None:
            entry = self._cipher.encrypt(entry)
        self.cache.set(self.token_key, entry, whole_seconds(timeout))

    @best_effort("write", None)
    def revoke(self, token: Token, timeout: float) -> None:
        # One marker per token instead of a delete: there is no compare-and-delete in Django's
        # cache API (a plain delete could remove a newer token another worker stored), and a
        # single marker would let a late 401 for an older token make a revoked one usable again.
        self.cache.set(self.revoked_key(token.fingerprint), 1, whole_seconds(timeout))

    @best_effort("write", None)
    def remember_failure(self, failure: dict[str, Any], timeout: float) -> None:
        self.cache.set(self.failure_key, failure, whole_seconds(timeout))

    @best_effort("write", None)
    def forget_failure(self) -> None:
        """Drop the remembered failure (after an explicit, successful refresh)."""
        self.cache.delete(self.failure_key)

    @best_effort("read", None)
    def rejection(self) -> dict[str, Any] | None:
        """The fleet's record of the last token the API rejected (see :mod:`.rejections`)."""
        record = self.cache.get(self.rejected_key)
        return record if isinstance(record, dict) else None

    @best_effort("write", None)
    def record_rejection(self, record: dict[str, Any], timeout: float) -> None:
        self.cache.set(self.rejected_key, record, whole_seconds(timeout))

    @best_effort("read", None)
    def working_secret(self) -> str | None:
        """The fingerprint of the secret that last obtained a token for this client id."""
        value = self.cache.get(self.working_secret_key)
        return value if isinstance(value, str) else None

    @best_effort("write", None)
    def remember_working_secret(self, fingerprint: str) -> None:
        self.cache.set(self.working_secret_key, fingerprint, STATUS_TIMEOUT)

    @best_effort("lock", False)
    def claim_primary_retry(self, interval: int) -> bool:
        """Whether this process may try ``CLIENT_SECRET`` again now (one per ``interval``)."""
        return bool(self.cache.add(self.primary_retry_key, 1, whole_seconds(interval)))

    @best_effort("write", None)
    def clear(self) -> None:
        """Delete this credential set's keys (tests; a cache shared by test servers).

        Revocation markers are left to expire: they name tokens nobody holds any more.
        """
        keys = [self.token_key, self.lock_key, self.failure_key, self.status_key]
        rotation = [self.working_secret_key, self.primary_retry_key]
        self.cache.delete_many([*keys, self.rejected_key, *rotation])

    @best_effort("write", None)
    def record_status(self, **fields: Any) -> None:
        """Merge ``fields`` into the fleet's status record (best effort, for the status page)."""
        status = self.cache.get(self.status_key)
        status = {**status, **fields} if isinstance(status, dict) else fields
        self.cache.set(self.status_key, status, STATUS_TIMEOUT)

    def status(self) -> dict[str, Any]:
        """The fleet's status record (empty when none or the cache is down)."""
        return self._read_status() or {}

    @best_effort("read", None)
    def _read_status(self) -> dict[str, Any] | None:
        status = self.cache.get(self.status_key)
        return status if isinstance(status, dict) else None

    def acquire_lock(self, ttl: int) -> Lock | None:
        """Try to take the refresh lock: a :class:`Lock` on success, ``None`` if someone holds it.

        When the cache is down, a lock is returned too: nobody can coordinate, so the caller
        goes on alone rather than waiting for a lock that cannot exist.
        """
        lock = Lock(uuid.uuid4().hex, time.monotonic() + whole_seconds(ttl))
        return lock if self._add_lock(lock.owner, ttl) else None

    @best_effort("lock", True)
    def _add_lock(self, owner: str, ttl: int) -> bool:
        return bool(self.cache.add(self.lock_key, owner, whole_seconds(ttl)))

    @best_effort("lock", None)
    def release_lock(self, lock: Lock) -> None:
        """Release ``lock`` if it is still ours.

        Until shortly before its TTL ends, nobody else can hold the key, so it is deleted
        without reading it first: a read could come from a replica that has not seen the lock
        yet, and the lock would stay until its TTL, holding up the fleet. Later, the owner is
        checked first; get-then-delete is not atomic, but at worst another holder's lock goes
        early and one extra token request happens (the lock saves requests; it guards no
        invariant).
        """
        if time.monotonic() < lock.expires - LOCK_SAFETY or (
            self.cache.get(self.lock_key) == lock.owner
        ):
            self.cache.delete(self.lock_key)

    def _went_down(self, what: str, err: Exception) -> None:
        if self.outage:
            return
        self.outage = True
        logger.warning(
            "Cache %r (%s) is unavailable (%s on %s); alias %r keeps working from its "
            "in-process token and the token endpoint until the cache is back.",
            self._config.cache_alias,
            self._describe_cache(),
            type(err).__name__,
            what,
            self._config.alias,
        )

    def _describe_cache(self) -> str:
        """The backend's class name and where it is, e.g. ``RedisCache at redis://:***@host``."""
        if self._cache is not None:  # given directly: CACHES does not describe it
            return f"{type(self._cache).__name__}, given directly"
        caches_setting = getattr(settings, "CACHES", None)
        entry = (
            caches_setting.get(self._config.cache_alias)
            if isinstance(caches_setting, Mapping)
            else None
        )
        if not isinstance(entry, Mapping):
            return "not in CACHES"
        backend = str(entry.get("BACKEND", "no BACKEND")).rpartition(".")[2]
        location = entry.get("LOCATION")
        return f"{backend} at {mask_location(location)}" if location else backend

    def _came_back(self) -> None:
        self.outage = False
        logger.info(
            "Cache %r is reachable again; alias %r shares its token through it again.",
            self._config.cache_alias,
            self._config.alias,
        )
