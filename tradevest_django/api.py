"""Module-level access to one :class:`~tradevest_django.manager.TokenManager` per alias."""

from __future__ import annotations

import threading

from django.core.signals import setting_changed

from .conf import SETTING, get_config
from .manager import TokenManager
from .tokens import Token

_lock = threading.Lock()
_managers: dict[str, TokenManager] = {}


def get_manager(alias: str = "default") -> TokenManager:
    """Return the process-wide token manager of a ``TRADEVEST`` alias.

    Raises:
        TradevestConfigurationError: the alias is missing or its settings are invalid.
    """
    manager = _managers.get(alias)
    if manager is None:
        with _lock:
            manager = _managers.get(alias)
            if manager is None:
                manager = _managers[alias] = TokenManager(get_config(alias))
    return manager


def get_token(alias: str = "default") -> Token:
    """Return a valid access token for ``alias``, shared with the whole fleet through the cache.

    See :meth:`TokenManager.get_token <tradevest_django.manager.TokenManager.get_token>` for
    the exceptions it raises.
    """
    return get_manager(alias).get_token()


async def aget_token(alias: str = "default") -> Token:
    """:func:`get_token` for coroutines: the event loop keeps running while a token is got.

    Shares the token, the single flight and the signals with :func:`get_token`.
    """
    return await get_manager(alias).aget_token()


async def ainvalidate_token(
    token: Token,
    alias: str = "default",
    reason: str = "rejected by the API (401)",
    *,
    server_date: str | None = None,
) -> bool:
    """:func:`invalidate_token` for coroutines (its cache calls run in a thread)."""
    return await get_manager(alias).ainvalidate(token, reason=reason, server_date=server_date)


def invalidate_token(
    token: Token,
    alias: str = "default",
    reason: str = "rejected by the API (401)",
    *,
    server_date: str | None = None,
) -> bool:
    """Drop ``token`` after the API rejected it; the next :func:`get_token` gets a fresh one.

    Pass the 401 response's ``Date`` header as ``server_date`` (``response.headers.get("Date")``)
    so that a host whose clock is off learns by how much. Returns whether the token was dropped:
    ``False`` while the fleet has stopped replacing tokens because fresh ones were rejected too
    (retrying the call with a new token would not help then).
    """
    return get_manager(alias).invalidate(token, reason=reason, server_date=server_date)


def reset() -> None:
    """Forget every manager (and with them the in-process tokens); the cache is untouched."""
    with _lock:
        _managers.clear()


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in (SETTING, "CACHES"):
        reset()


setting_changed.connect(_on_setting_changed, dispatch_uid="tradevest_django.api")
