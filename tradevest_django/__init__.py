"""tradevest-django: fleet-wide cached Tradevest OAuth2 tokens and ready API sessions.

Public API::

    from tradevest_django import get_token, get_session, TradevestAuth

Everything here is safe to import before settings are configured: nothing reads settings
until it is used.
"""

from __future__ import annotations

from ._version import __version__
from .api import get_manager, get_token, invalidate_token
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
    "TradevestSession",
    "__version__",
    "get_manager",
    "get_session",
    "get_token",
    "invalidate_token",
]
