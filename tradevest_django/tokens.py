"""The :class:`Token` value object."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

TokenSource = Literal["endpoint", "cache"]


@dataclass(frozen=True)
class Token:
    """An access token and when it stops being valid.

    ``repr`` and ``str`` show a short :attr:`fingerprint`, never the token itself.

    Attributes:
        access_token: the bearer token. Treat it like a password.
        token_type: as the server sent it (``"Bearer"`` when it sent none).
        expires_at: when the server says the token expires, as an aware UTC datetime.
        lifetime: ``expires_in`` as the server sent it, in seconds.
        source: where this process got it: ``"endpoint"`` (a token request made by this
            process) or ``"cache"`` (shared by another process through Django's cache).
    """

    access_token: str = field(repr=False)
    token_type: str
    expires_at: datetime
    lifetime: int
    source: TokenSource = field(default="endpoint", compare=False)

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
        return self.expires_at.timestamp()

    @property
    def seconds_left(self) -> float:
        """Seconds until :attr:`expires_at` by this host's clock (negative once expired)."""
        return self.expires_at_timestamp - time.time()

    def __repr__(self) -> str:
        return (
            f"<Token {self.token_type} fingerprint={self.fingerprint} "
            f"expires_at={self.expires_at.isoformat()} source={self.source}>"
        )

    __str__ = __repr__

    def to_cache(self) -> dict[str, Any]:
        """Plain data for the shared cache (works with pickle and JSON serializers)."""
        return {
            "v": 1,
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at_timestamp,
            "lifetime": self.lifetime,
        }

    @classmethod
    def from_cache(cls, data: object) -> Token | None:
        """Rebuild a token stored by :meth:`to_cache`; ``None`` for anything unexpected."""
        if not isinstance(data, dict) or data.get("v") != 1:
            return None
        try:
            return cls(
                access_token=str(data["access_token"]),
                token_type=str(data["token_type"]),
                expires_at=datetime.fromtimestamp(float(data["expires_at"]), tz=timezone.utc),
                lifetime=int(data["lifetime"]),
                source="cache",
            )
        except (KeyError, TypeError, ValueError, OverflowError, OSError):
            return None


def fingerprint(access_token: str) -> str:
    """Return the fingerprint used in logs and signals for ``access_token``."""
    return hashlib.sha256(access_token.encode()).hexdigest()[:12]
