"""Secret rotation: which client secret a process uses, and the others to try after a refusal.

With one secret there is nothing to choose. With ``CLIENT_SECRET_FALLBACKS`` or a callable
secret, each secret has its own cache keys (:class:`~tradevest_django.shared.SharedState`), the
fleet remembers which secret last got a token, and a secret Tradevest refuses
(``invalid_client``) hands over to the next one, so that a rotation costs no failed call. The
token manager asks :meth:`SecretRotation.each` to run one attempt at getting a token; everything
about the order of the secrets lives here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.cache import BaseCache

from .conf import AliasConfig
from .exceptions import InvalidClient
from .secrets import Secret, Secrets
from .shared import SharedState

logger = logging.getLogger(__name__)
T = TypeVar("T")


class SecretRotation:
    """The secrets of one alias, the one in use, and what the process remembers of each."""

    def __init__(self, config: AliasConfig, cache: BaseCache | None) -> None:
        self.config = config
        self.secrets = Secrets(config)
        self._cache = cache
        self._shared: dict[str, SharedState] = {}
        #: The secret whose keys this process reads and writes, and that obtained its token.
        self.secret: Secret | None = None if self.secrets.rotating else self.secrets.read(0)
        #: The endpoint's last failure, per secret (fingerprint), for when the cache is down.
        self._failures: dict[str, dict[str, Any]] = {}

    @property
    def current(self) -> Secret:
        """The secret in use (``CLIENT_SECRET``, read now, before a callable's first token)."""
        return self.secret or self.secrets.read(0)

    @property
    def shared(self) -> SharedState:
        """The cache side of the secret in use."""
        return self.shared_for(self.current)

    @property
    def failure(self) -> dict[str, Any] | None:
        """The failure this process remembers for the secret in use."""
        return self._failures.get(self.secret.fingerprint) if self.secret else None

    def remember_failure(self, failure: dict[str, Any]) -> None:
        """Remember the endpoint's failure for the secret in use."""
        if self.secret is not None:
            self._failures[self.secret.fingerprint] = failure

    def forget_failure(self) -> None:
        """Forget the failure remembered for the secret in use (it just got a token)."""
        if self.secret is not None:
            self._failures.pop(self.secret.fingerprint, None)

    def forget_all_failures(self) -> None:
        """Forget what this process remembers of every secret (an explicit refresh)."""
        self._failures.clear()

    def mark_working(self) -> None:
        """Tell the fleet that the secret in use just got a token: it is tried first from now."""
        if self.secrets.rotating and self.secret is not None:
            self.shared.remember_working_secret(self.secret.fingerprint)

    def shared_for(self, secret: Secret) -> SharedState:
        shared = self._shared.get(secret.fingerprint)
        if shared is None:
            shared = self._shared[secret.fingerprint] = SharedState(
                self.config, self._cache, secret
            )
        return shared

    def each(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` with the secret in use; after ``invalid_client``, with the next one.

        The fleet's working secret goes first (or ``CLIENT_SECRET``, once per
        ``PRIMARY_SECRET_RETRY``), then the others in their configured order. A callable is
        read again after a refusal. The last refusal is raised when every secret was refused.
        """
        if not self.secrets.rotating:
            return attempt()
        order = self._order()
        refused: InvalidClient | None = None
        refused_until = 0.0
        tried: set[str] = set()
        while order:
            secret = order.pop(0)
            if secret.fingerprint in tried:
                continue
            tried.add(secret.fingerprint)
            if refused is not None and self._refusal_until(secret) < refused_until:
                # The secret just refused was accepted until more recently than this one was
                # refused: Tradevest's set of secrets has changed since (an activation), and
                # what the fleet remembers of this one is stale. Ask again rather than fail
                # every call until it expires.
                self._failures.pop(secret.fingerprint, None)
                self.shared_for(secret).forget_failure()
            self._use(secret)
            try:
                return attempt()
            except InvalidClient as err:
                refused = err
                refused_until = self._refusal_until(secret)
                if secret.position == 0:
                    # Tried just now: the next try of CLIENT_SECRET is PRIMARY_SECRET_RETRY away.
                    self.shared.claim_primary_retry(self.config.primary_secret_retry)
                if self.secrets.is_callable(secret.position):
                    order.insert(0, self.secrets.read(secret.position))  # rotated meanwhile?
        assert refused is not None  # every secret was tried; the last refusal explains
        raise refused

    def _refusal_until(self, secret: Secret) -> float:
        """When the refusal remembered for ``secret`` expires (0 without one): the later, the
        more recent the refusal (every refusal is remembered for FAILURE_COOLDOWN)."""
        remembered = (
            self._failures.get(secret.fingerprint),
            self.shared_for(secret).snapshot().failure,
        )
        return max(
            (
                float(failure["until"])
                for failure in remembered
                if isinstance(failure, dict)
                and failure.get("kind") == "refused"
                and isinstance(failure.get("until"), int | float)
            ),
            default=0.0,
        )

    def _order(self) -> list[Secret]:
        """The candidates in the order to try them (the fleet's working secret first)."""
        candidates = self.secrets.candidates()
        primary = candidates[0]
        working_fingerprint = self.shared_for(primary).working_secret()
        working = next((s for s in candidates if s.fingerprint == working_fingerprint), primary)
        rest = [s for s in candidates if s is not working]
        if working is not primary and self.shared_for(primary).claim_primary_retry(
            self.config.primary_secret_retry
        ):
            return [primary, working, *[s for s in rest if s is not primary]]
        return [working, *rest]

    def _use(self, secret: Secret) -> None:
        """Read and write the keys of ``secret`` from now on; say so when that changes."""
        before = self.secret
        self.secret = secret
        if before is None or before.position == secret.position:
            return
        if secret.position == 0:
            logger.info(
                "Alias %r uses CLIENT_SECRET again (it was using %s).",
                self.config.alias,
                before.setting,
            )
        else:
            logger.warning(
                "Alias %r now uses %s: Tradevest refused %s (invalid_client). Finish the "
                "rotation: once Tradevest accepts CLIENT_SECRET, drop the fallback.",
                self.config.alias,
                secret.setting,
                before.setting,
            )
