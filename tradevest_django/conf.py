"""The ``TRADEVEST`` setting: its options and defaults, and lazy, per-alias access.

``TRADEVEST`` is shaped like ``DATABASES``/``CACHES``::

    TRADEVEST = {
        "default": {
            "CLIENT_ID": "...",
            "CLIENT_SECRET": "...",
            "ENVIRONMENT": "test",  # or "pretest" or "production"
        },
    }

Nothing is read at import time. Parsed aliases are cached and dropped on Django's
``setting_changed``, so ``override_settings`` works. Validation lives in
:mod:`tradevest_django.validation`; a bad alias raises
:class:`~tradevest_django.exceptions.TradevestConfigurationError`.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed

from .exceptions import TradevestConfigurationError

SETTING = "TRADEVEST"

#: ENVIRONMENT -> (auth server, API server).
ENVIRONMENTS: dict[str, tuple[str, str]] = {
    name: (
        f"https://b2b.auth.platform-{host}.tradevest.ai",
        f"https://tvda-api.platform-{host}.tradevest.ai",
    )
    for name, host in (("test", "test"), ("pretest", "pretest"), ("production", "prod"))
}

Timeout = tuple[float, float]

#: Optional keys and their defaults; documented in docs/configuration.md.
DEFAULTS: dict[str, Any] = {
    "ENVIRONMENT": None,
    "AUTH_URL": None,
    "API_URL": None,
    "TOKEN_PATH": "/oauth2/token",
    "SCOPE": None,
    "CACHE": "default",
    "TOKEN_TIMEOUT": (3.05, 10.0),
    "TOKEN_RETRIES": 3,
    "TOKEN_DEADLINE": 10.0,
    "API_TIMEOUT": (3.05, 30.0),
    "API_RETRIES": 3,
    "EXPIRY_MARGIN": 30.0,
    "REFRESH_WINDOW": 0.1,
    "REFRESH_WINDOW_MAX": 300.0,
    "LOCK_TIMEOUT": 12,
    "FAILURE_COOLDOWN": 30,
    "ENCRYPTION_KEYS": None,
    "CLIENT_SECRET_FALLBACKS": (),
    "PRIMARY_SECRET_RETRY": 600,
}
#: Keys whose values are secrets: never echoed in any message.
SECRET_KEYS = frozenset({"CLIENT_SECRET", "CLIENT_SECRET_FALLBACKS", "ENCRYPTION_KEYS"})
REQUIRED = ("CLIENT_ID", "CLIENT_SECRET")
KNOWN_KEYS = frozenset(REQUIRED) | frozenset(DEFAULTS)


@dataclass(frozen=True)
class AliasConfig:
    """The validated configuration of one alias. The secret is left out of ``repr``."""

    alias: str
    client_id: str
    #: A string, or a callable returning the current secret (see :mod:`tradevest_django.secrets`).
    client_secret: str | Callable[[], str] = field(repr=False)
    auth_url: str
    api_url: str | None = None
    environment: str | None = None
    token_path: str = "/oauth2/token"  # noqa: S105 - a URL path, not a password
    scope: str | None = None
    cache_alias: str = "default"
    token_timeout: Timeout = (3.05, 10.0)
    token_retries: int = 3
    token_deadline: float = 10.0
    api_timeout: Timeout = (3.05, 30.0)
    api_retries: int = 3
    expiry_margin: float = 30.0
    refresh_window: float = 0.1
    refresh_window_max: float = 300.0
    lock_timeout: int = 12
    failure_cooldown: int = 30
    encryption_keys: tuple[str, ...] = field(default=(), repr=False)
    client_secret_fallbacks: tuple[str | Callable[[], str], ...] = field(default=(), repr=False)
    primary_secret_retry: int = 600

    @property
    def token_url(self) -> str:
        return self.auth_url + self.token_path

    @property
    def auth_host(self) -> str:
        return urlsplit(self.auth_url).netloc

    @property
    def masked_client_id(self) -> str:
        return mask(self.client_id)

    @classmethod
    def from_dict(
        cls, alias: str, options: Mapping[str, Any], *, check_cache: bool = True
    ) -> AliasConfig:
        """Validate one alias's options and build its config, raising the first problem.

        ``check_cache=False`` skips checking ``CACHE`` against ``CACHES`` (for a manager given
        a cache object directly).
        """
        from .validation import validate_alias  # it needs this module's constants

        problems = validate_alias(alias, options, check_cache=check_cache)
        if problems:
            raise problems[0].error()
        values = {**DEFAULTS, **options}
        env = values["ENVIRONMENT"]
        auth_default, api_default = ENVIRONMENTS.get(env, (None, None))
        scope = values["SCOPE"]
        return cls(
            alias=alias,
            client_id=values["CLIENT_ID"],
            client_secret=values["CLIENT_SECRET"],
            environment=env,
            auth_url=str(values["AUTH_URL"] or auth_default).rstrip("/"),
            api_url=(values["API_URL"] or api_default or "").rstrip("/") or None,
            token_path=values["TOKEN_PATH"],
            scope=" ".join(scope) if isinstance(scope, list | tuple) else scope,
            cache_alias=values["CACHE"],
            token_timeout=_timeout(values["TOKEN_TIMEOUT"]),
            token_retries=values["TOKEN_RETRIES"],
            token_deadline=float(values["TOKEN_DEADLINE"]),
            api_timeout=_timeout(values["API_TIMEOUT"]),
            api_retries=values["API_RETRIES"],
            expiry_margin=float(values["EXPIRY_MARGIN"]),
            refresh_window=float(values["REFRESH_WINDOW"]),
            refresh_window_max=float(values["REFRESH_WINDOW_MAX"]),
            lock_timeout=values["LOCK_TIMEOUT"],
            failure_cooldown=values["FAILURE_COOLDOWN"],
            encryption_keys=_keys(values["ENCRYPTION_KEYS"]),
            client_secret_fallbacks=tuple(values["CLIENT_SECRET_FALLBACKS"]),
            primary_secret_retry=values["PRIMARY_SECRET_RETRY"],
        )


def mask(value: str) -> str:
    """Show enough of an identifier to recognise it, not to copy it: ``"7f3a…c9"``."""
    if len(value) <= 6:
        return value[:1] + "…"
    return f"{value[:4]}…{value[-2:]}"


def mask_location(location: object) -> str:
    """A cache's ``LOCATION`` for a message, with the passwords in its URLs replaced by ``***``.

    ``redis://:pw@host:6379/0`` becomes ``redis://:***@host:6379/0`` and
    ``redis://user:pw@host`` becomes ``redis://user:***@host``; so do ``password=`` query
    parameters. A list, or several URLs separated by ``,`` or ``;``, are masked one by one.
    """
    parts = location if isinstance(location, list | tuple) else [location]
    return ", ".join(
        "".join(_mask_url(piece) for piece in re.split(r"([,;])", str(part))) for part in parts
    )


def _mask_url(text: str) -> str:
    scheme, separator, rest = text.partition("://")
    if separator:
        # The last "@" ends the credentials, even when an unquoted password holds "/" or "@".
        userinfo, at, host = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if at and colon:
            text = f"{scheme}://{user}:***@{host}"
    return re.sub(r"(?i)([?&][^=&#]*(?:pass|secret|token)[^=&#]*=)[^&#]*", r"\1***", text)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _keys(
    value: str | bytes | list[str | bytes] | tuple[str | bytes, ...] | None,
) -> tuple[str, ...]:
    if value is None:
        return ()
    keys = [value] if isinstance(value, str | bytes) else value
    return tuple(key.decode("ascii") if isinstance(key, bytes) else key for key in keys)


def _timeout(value: float | tuple[float, float] | list[float]) -> Timeout:
    if isinstance(value, int | float):
        return (float(value), float(value))
    return (float(value[0]), float(value[1]))


_lock = threading.Lock()
_configs: dict[str, AliasConfig] = {}


def get_config(alias: str = "default") -> AliasConfig:
    """Return the validated configuration of ``alias``, parsing the setting on first use."""
    config = _configs.get(alias)
    if config is not None:
        return config
    raw = getattr(settings, SETTING, None)
    if not isinstance(raw, Mapping) or not raw:
        from .validation import validate_setting

        raise validate_setting(raw)[0].error()
    if alias not in raw:
        raise TradevestConfigurationError(
            f"{SETTING} has no alias {alias!r}. Configured aliases: {', '.join(map(str, raw))}.",
            alias=alias,
        )
    config = AliasConfig.from_dict(alias, raw[alias])
    with _lock:
        _configs[alias] = config
    return config


def configured_aliases() -> list[str]:
    """Return the aliases of the ``TRADEVEST`` setting, in order (empty if unset)."""
    raw = getattr(settings, SETTING, None)
    return [str(alias) for alias in raw] if isinstance(raw, Mapping) else []


def reset() -> None:
    """Forget the parsed configuration (done automatically when settings change in tests)."""
    with _lock:
        _configs.clear()


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in (SETTING, "CACHES"):
        reset()


setting_changed.connect(_on_setting_changed, dispatch_uid="tradevest_django.conf")
