"""What one alias keeps in Django's cache, and the policy for cache failures.

Four keys per credential set, all derived from a hash of (auth URL, token path, client id,
scope), never from the secret and never from the alias alone, so that changed credentials or
environments can never read another's token:

* ``…:token``: the shared token (access token, type, expiry, lifetime);
* ``…:revoked``: fingerprint of the last token the API rejected, so a stale copy is ignored;
* ``…:lock``: the short-lived refresh lock (``cache.add``), saving requests, never needed for
  correctness;
* ``…:status``: when the fleet last obtained a token and the last error (for the status page);
* ``…:failure:<h>``: a recent refusal or outage of the token endpoint, so a whole fleet backs
  off; ``<h>`` is a short one-way hash of the secret, so that a corrected secret starts afresh.

Every cache call is wrapped: a cache that raises (Redis down, a bad backend) is logged once per
outage and treated as empty, so callers fall back to the in-process copy and the endpoint.
"""

from __future__ import annotations

import hashlib
import logging
import math
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from django.core.cache import BaseCache, caches

from .conf import AliasConfig
from .tokens import Token

if TYPE_CHECKING:
    from .crypto import TokenCipher

logger = logging.getLogger(__name__)

T = TypeVar("T")
KEY_VERSION = "v1"
STATUS_TIMEOUT = 7 * 24 * 3600


def cache_key_base(config: AliasConfig) -> str:
    """The prefix of every key of this credential set (no secret in it, by design)."""
    material = "\0".join((config.auth_url, config.token_path, config.client_id, config.scope or ""))
    digest = hashlib.sha256(material.encode()).hexdigest()[:32]
    return f"tradevest_django:{KEY_VERSION}:{digest}"


def whole_seconds(seconds: float) -> int:
    """A cache timeout every backend treats alike: a whole number of seconds, at least 1.

    Rounded down (so a cached entry never outlives its token), after allowing for the
    microsecond rounding of datetimes.
    """
    return max(1, math.floor(seconds + 0.001))


class SharedState:
    """The cache side of one :class:`~tradevest_django.manager.TokenManager`."""

    def __init__(self, config: AliasConfig, cache: BaseCache | None = None):
        self._config = config
        self._cache = cache
        base = cache_key_base(config)
        self.token_key = f"{base}:token"
        self.revoked_key = f"{base}:revoked"
        self.lock_key = f"{base}:lock"
        # The failure memory is per secret too: a fixed secret must not inherit "invalid_client".
        secret_hash = hashlib.sha256(b"tradevest-failure\0" + config.client_secret.encode())
        self.failure_key = f"{base}:failure:{secret_hash.hexdigest()[:12]}"
        self.status_key = f"{base}:status"
        self._cipher: TokenCipher | None = None
        if config.encryption_keys:
            from .crypto import TokenCipher

            self._cipher = TokenCipher(config.encryption_keys)
        self.outage = False

    @property
    def cache(self) -> BaseCache:
        # Resolved at call time: Django's handler gives each thread its own connection.
        return self._cache if self._cache is not None else caches[self._config.cache_alias]

    def snapshot(self) -> tuple[Token | None, dict[str, Any] | None, bool]:
        """One round trip: (usable shared token or None, remembered failure, lock held)."""
        keys = [self.token_key, self.revoked_key, self.failure_key, self.lock_key]
        values: dict[str, Any] = self._call("read", lambda: self.cache.get_many(keys), {})
        entry = values.get(self.token_key)
        token = Token.from_cache(self._cipher.decrypt(entry) if self._cipher else entry)
        if token is not None and token.fingerprint == values.get(self.revoked_key):
            token = None
        failure = values.get(self.failure_key)
        return token, failure if isinstance(failure, dict) else None, self.lock_key in values

    def store_token(self, token: Token, timeout: float) -> None:
        entry = token.to_cache()
        if self._cipher is not None:
            entry = self._cipher.encrypt(entry)
        self._call(
            "write", lambda: self.cache.set(self.token_key, entry, whole_seconds(timeout)), None
        )

    def revoke(self, token: Token, timeout: float) -> None:
        # A marker instead of a delete: there is no compare-and-delete in Django's cache API, and
        # a plain delete could remove a newer token another worker stored in the meantime.
        self._call(
            "write",
            lambda: self.cache.set(self.revoked_key, token.fingerprint, whole_seconds(timeout)),
            None,
        )

    def remember_failure(self, failure: dict[str, Any], timeout: float) -> None:
        self._call(
            "write", lambda: self.cache.set(self.failure_key, failure, whole_seconds(timeout)), None
        )

    def clear(self) -> None:
        """Delete every key of this credential set (tests; a cache shared by test servers)."""
        keys = [self.token_key, self.revoked_key, self.lock_key, self.failure_key, self.status_key]
        self._call("write", lambda: self.cache.delete_many(keys), None)

    def forget_failure(self) -> None:
        """Drop the remembered failure (after an explicit, successful refresh)."""
        self._call("write", lambda: self.cache.delete(self.failure_key), None)

    def record_status(self, **fields: Any) -> None:
        """Merge ``fields`` into the fleet's status record (best effort, for the status page)."""

        def update() -> None:
            status = self.cache.get(self.status_key)
            status = {**status, **fields} if isinstance(status, dict) else fields
            self.cache.set(self.status_key, status, STATUS_TIMEOUT)

        self._call("write", update, None)

    def status(self) -> dict[str, Any]:
        """The fleet's status record (empty when none or the cache is down)."""
        status = self._call("read", lambda: self.cache.get(self.status_key), None)
        return status if isinstance(status, dict) else {}

    def acquire_lock(self, ttl: int) -> str | None:
        """Try to take the refresh lock: an owner id on success, ``None`` when someone holds it.

        When the cache is down, an owner id is returned too: nobody can coordinate, so the
        caller goes on alone rather than waiting for a lock that cannot exist.
        """
        owner = uuid.uuid4().hex
        added = self._call(
            "lock", lambda: self.cache.add(self.lock_key, owner, whole_seconds(ttl)), True
        )
        return owner if added else None

    def release_lock(self, owner: str) -> None:
        # get-then-delete is not atomic: at worst another holder's lock goes early and one
        # extra token request happens. The lock only saves requests; it guards no invariant.
        def release() -> None:
            if self.cache.get(self.lock_key) == owner:
                self.cache.delete(self.lock_key)

        self._call("lock", release, None)

    def _call(self, what: str, operation: Callable[[], T], default: T) -> T:
        try:
            result = operation()
        except Exception as err:  # any backend error means "no shared state", not a failure
            if not self.outage:
                self.outage = True
                logger.warning(
                    "Cache %r is unavailable (%s on %s); alias %r keeps working from its "
                    "in-process token and the token endpoint until the cache is back.",
                    self._config.cache_alias,
                    type(err).__name__,
                    what,
                    self._config.alias,
                )
            return default
        if self.outage:
            self.outage = False
            logger.info(
                "Cache %r is reachable again; alias %r shares its token through it again.",
                self._config.cache_alias,
                self._config.alias,
            )
        return result
