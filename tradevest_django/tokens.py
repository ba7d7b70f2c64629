"""The :class:`Token` value object."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal

TokenSource = Literal["endpoint", "cache"]


@dataclass(frozen=True)
class Token:
    """An access token and when it stops being valid.

    ``repr`` and ``str`` show a short :attr:`fingerprint`, never the token itself. Two tokens
    are equal when they carry the same access token.

    Every public time is on this host's clock: :attr:`expires_at` is when the token expires as
    this host's clock will read then, and :attr:`seconds_left` is the time it really has left,
    even on a host whose clock is off from Tradevest's (the difference is learned from the
    ``Date`` header of Tradevest's responses).

    Attributes:
        access_token: the bearer token. Treat it like a password.
        token_type: as the server sent it (``"Bearer"`` when it sent none).
        expires_at: when the token expires, by this host's clock, as an aware UTC datetime.
        lifetime: ``expires_in`` as the server sent it, in seconds.
        source: where this process got it: ``"endpoint"`` (a token request made by this
            process) or ``"cache"`` (shared by another process through Django's cache).
        skew: Tradevest's clock minus this host's, in seconds, as known when this copy was made.
    """

    access_token: str = field(repr=False)
    token_type: str = field(compare=False)
    expires_at: datetime = field(compare=False)
    lifetime: int = field(compare=False)
    source: TokenSource = field(default="endpoint", compare=False)
    skew: float = field(default=0.0, compare=False, repr=False)

    @property
    def authorization(self) -> str:
        """The value of the ``Authorization`` header: ``"Bearer <token>"``."""
        return f"Bearer {self.access_token}"

    @property
    def fingerprint(self) -> str:
        """A short, stable, non-reversible identifier for logs: 12 hex digits of SHA-256."""
        return fingerprint(self.access_token)

    @property
    def expires_at_timestamp(self) -> float:
        """:attr:`expires_at` as a POSIX timestamp (this host's clock)."""
        return self.expires_at.timestamp()

    @property
    def server_expiry(self) -> float:
        """When the token expires on Tradevest's clock (what the cache stores)."""
        return self.expires_at.timestamp() + self.skew

    @property
    def issued_at(self) -> float:
        """When the token was issued, on Tradevest's clock (its expiry minus its lifetime)."""
        return self.server_expiry - self.lifetime

    @property
    def seconds_left(self) -> float:
        """Seconds the token has left (negative once expired), by this host's clock."""
        return self.expires_at_timestamp - time.time()

    def __repr__(self) -> str:
        return (
            f"<Token {self.token_type} fingerprint={self.fingerprint} "
            f"expires_at={self.expires_at.isoformat()} source={self.source}>"
        )

    __str__ = __repr__

    def with_skew(self, skew: float) -> Token:
        """This token with its times mapped to a host whose clock is ``skew`` behind Tradevest."""
        if skew == self.skew:
            return self
        return replace(self, expires_at=_utc(self.server_expiry - skew), skew=skew)

    def to_cache(self) -> dict[str, Any]:
        """Plain data for the shared cache (works with pickle and JSON serializers).

        The expiry is stored on Tradevest's clock, so hosts with different clocks agree on it.
        """
        return {
            "v": 1,
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": self.server_expiry,
            "lifetime": self.lifetime,
        }

    @classmethod
    def from_cache(cls, data: object, skew: float = 0.0) -> Token | None:
        """Rebuild a token stored by :meth:`to_cache`; ``None`` for anything unexpected.

        ``skew`` is this host's learned clock difference (Tradevest's clock minus ours).
        """
        if not isinstance(data, dict) or data.get("v") != 1:
            return None
        try:
            return cls(
                access_token=str(data["access_token"]),
                token_type=str(data["token_type"]),
                expires_at=_utc(float(data["expires_at"]) - skew),
                lifetime=int(data["lifetime"]),
                source="cache",
                skew=skew,
            )
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            return None


def fingerprint(access_token: str) -> str:
    """Return the fingerprint used in logs and signals for ``access_token``."""
    return hashlib.sha256(access_token.encode()).hexdigest()[:12]


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc)
