"""tradevest-django: fleet-wide cached Tradevest OAuth2 tokens and ready API sessions.

Public API::

    from tradevest_django import get_token, get_session, TradevestAuth

Everything here is safe to import before settings are configured: nothing reads settings
until it is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .api import aget_token, ainvalidate_token, get_manager, get_token, invalidate_token
from .exceptions import (
    BadTokenResponse,
    TokenEndpointError,
    TokenEndpointUnavailable,
    TradevestConfigurationError,
    TradevestError,
)
from .manager import TokenManager
from .sessions import TradevestAuth, TradevestSession, get_session
from .tokens import Token

__all__ = [
    "BadTokenResponse",
    "Token",
    "TokenEndpointError",
    "TokenEndpointUnavailable",
    "TokenManager",
    "TradevestAuth",
    "TradevestConfigurationError",
    "TradevestError",
    "TradevestHttpxAuth",
    "TradevestSession",
    "__version__",
    "aget_token",
    "ainvalidate_token",
    "get_async_client",
    "get_client",
    "get_manager",
    "get_session",
    "get_token",
    "invalidate_token",
]

#: Names that need the ``httpx`` extra, imported on first use.
_HTTPX_NAMES = frozenset({"TradevestHttpxAuth", "get_async_client", "get_client"})

if TYPE_CHECKING:
    from .clients import TradevestHttpxAuth, get_async_client, get_client


def __getattr__(name: str) -> Any:
    # httpx is optional: importing the package never needs it, using the clients does.
    if name in _HTTPX_NAMES:
        from . import clients

        return getattr(clients, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
