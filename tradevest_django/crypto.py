"""Optional encryption of the token in the shared cache (``ENCRYPTION_KEYS``).

Fernet (AES-128-CBC + HMAC-SHA256) from ``cryptography``, installed with the ``encryption``
extra: ``pip install "tradevest-django[encryption]"``. The first key encrypts; every key
decrypts, so keys can be rotated without a flag day: add the new key first, deploy, drop the old
one after a token lifetime. A process without a matching key cannot read the cached token and
fetches its own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def cryptography_missing() -> bool:
    try:
        import cryptography.fernet  # noqa: F401
    except ImportError:
        return True
    return False


def valid_key(key: object) -> bool:
    """Whether ``key`` is a usable Fernet key (32 url-safe base64-encoded bytes)."""
    if not isinstance(key, str | bytes):
        return False
    from cryptography.fernet import Fernet

    try:
        Fernet(key)
    except (ValueError, TypeError):
        return False
    return True


class TokenCipher:
    """Encrypts and decrypts cache entries with a list of Fernet keys."""

    def __init__(self, keys: Sequence[str | bytes]):
        from cryptography.fernet import Fernet, MultiFernet

        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def __repr__(self) -> str:
        return "<TokenCipher>"

    def encrypt(self, entry: dict[str, Any]) -> dict[str, Any]:
        sealed = self._fernet.encrypt(json.dumps(entry).encode())
        return {"v": 1, "encrypted": sealed.decode("ascii")}

    def decrypt(self, entry: object) -> object:
        """The plain entry, or ``None`` when it is not ours to read."""
        from cryptography.fernet import InvalidToken

        if not isinstance(entry, dict) or not isinstance(entry.get("encrypted"), str):
            return None  # plaintext (or foreign) entries are ignored when encryption is on
        try:
            return json.loads(self._fernet.decrypt(entry["encrypted"].encode("ascii")))
        except (InvalidToken, ValueError):
            return None
