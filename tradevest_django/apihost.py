"""Which URLs belong to an alias's API host, and the ``Requestor-ID`` header.

Shared by the ``requests`` sessions and the httpx clients: the token and the person's id go to
the API host (same scheme, host and port as ``API_URL``) and nowhere else.
"""

from __future__ import annotations

import uuid

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

REQUESTOR_ID_HEADER = "Requestor-ID"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str | None) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of ``url``, lower-cased, with the default port filled in.

    ``None`` when ``url`` names no host, or none that can be parsed (a redirect's ``Location``
    comes from the server): such a URL is never the API host.
    """
    if not url:
        return None
    try:
        parts = parse_url(url)
    except LocationParseError:
        return None
    if not parts.scheme or not parts.host:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.host.lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


class ApiHost:
    """The origin of one ``API_URL``; :meth:`matches` answers for any URL."""

    def __init__(self, api_url: str | None):
        self.origin = origin(api_url)
        prefix = ""
        if self.origin is not None:
            scheme, host, port = self.origin
            default = port == _DEFAULT_PORTS.get(scheme)
            prefix = f"{scheme}://{host}/" if default else f"{scheme}://{host}:{port}/"
        self._prefix = prefix

    def __repr__(self) -> str:
        return f"<ApiHost {self._prefix or 'none'}>"

    def matches(self, url: str | None) -> bool:
        """Whether ``url`` is on this API host (same scheme, host and port)."""
        if not url or self.origin is None:
            return False
        # Every request pays for this check: the prefix test answers the usual case at once.
        return url.startswith(self._prefix) or origin(url) == self.origin


def validated_requestor_id(value: object) -> str | None:
    """``value`` as a canonical UUID string (``None`` stays ``None``), or a ``ValueError``."""
    if value is None:
        return None
    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(
            "requestor_id must be the UUID of the natural person acting (Tradevest's "
            f"Requestor-ID), not {str(value)[:40]!r}."
        ) from None
