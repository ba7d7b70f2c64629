"""Validation of the ``TRADEVEST`` setting: every problem, with its system check id and fix.

:func:`validate_setting` and :func:`validate_alias` return :class:`Problem`s; the system checks
report them all, and :meth:`AliasConfig.from_dict <tradevest_django.conf.AliasConfig.from_dict>`
raises the first as :class:`~tradevest_django.exceptions.TradevestConfigurationError`. No message
ever shows a secret value.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from .conf import DEFAULTS, ENVIRONMENTS, KNOWN_KEYS, REQUIRED, SECRET_KEYS, SETTING, is_loopback
from .exceptions import TradevestConfigurationError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the configuration; ``check_id`` is its system check id."""

    check_id: str
    alias: str | None
    key: str | None
    msg: str
    hint: str

    def error(self) -> TradevestConfigurationError:
        return TradevestConfigurationError(
            f"{self.msg} {self.hint}", alias=self.alias, key=self.key
        )


def _are_keys(value: object) -> bool:
    from .crypto import valid_key

    if value is None:
        return True
    keys = [value] if isinstance(value, str | bytes) else value
    return isinstance(keys, list | tuple) and bool(keys) and all(valid_key(k) for k in keys)


def _is_number(
    value: object, *, minimum: float = 0.0, maximum: float = 86400.0, integer: bool = False
) -> bool:
    """A finite number in [minimum, maximum] (no bool; an int when ``integer``)."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        return False
    try:
        number = float(value)
    except OverflowError:
        return False
    return math.isfinite(number) and minimum <= number <= maximum


def _is_secret(value: object) -> bool:
    """A non-empty string, or a callable that returns one when a token is requested."""
    return callable(value) or (isinstance(value, str) and bool(value.strip()))


def _is_timeout(value: object) -> bool:
    if isinstance(value, list | tuple):
        return len(value) == 2 and all(_is_number(v, minimum=0.001, maximum=3600) for v in value)
    return _is_number(value, minimum=0.001, maximum=3600)


_VALUE_RULES: dict[str, tuple[Callable[[object], bool], str]] = {
    "TOKEN_PATH": (
        lambda v: isinstance(v, str) and v.startswith("/"),
        "a path such as '/oauth2/token'",
    ),
    "SCOPE": (
        lambda v: (
            v is None
            or (isinstance(v, str) and bool(v.strip()))
            or (
                isinstance(v, list | tuple) and bool(v) and all(isinstance(s, str) and s for s in v)
            )
        ),
        "None (no scope is sent), a string or a list of strings",
    ),
    "CACHE": (lambda v: isinstance(v, str) and bool(v), "the name of an alias in CACHES"),
    "TOKEN_TIMEOUT": (_is_timeout, "seconds, or a (connect, read) pair of seconds (up to 3600)"),
    "API_TIMEOUT": (_is_timeout, "seconds, or a (connect, read) pair of seconds (up to 3600)"),
    "TOKEN_RETRIES": (
        lambda v: _is_number(v, maximum=20, integer=True),
        "a whole number from 0 to 20",
    ),
    "API_RETRIES": (
        lambda v: _is_number(v, maximum=20, integer=True),
        "a whole number from 0 to 20",
    ),
    "TOKEN_DEADLINE": (lambda v: _is_number(v, minimum=0.1, maximum=600), "seconds (0.1 to 600)"),
    "EXPIRY_MARGIN": (_is_number, "seconds (0 to 86400)"),
    "REFRESH_WINDOW": (
        lambda v: _is_number(v, maximum=0.5),
        "a fraction of the token lifetime between 0 and 0.5",
    ),
    "REFRESH_WINDOW_MAX": (_is_number, "seconds (0 to 86400)"),
    "LOCK_TIMEOUT": (
        lambda v: _is_number(v, minimum=1, maximum=600, integer=True),
        "whole seconds from 1 to 600",
    ),
    "FAILURE_COOLDOWN": (
        lambda v: _is_number(v, maximum=3600, integer=True),
        "whole seconds from 0 to 3600",
    ),
    "CLIENT_SECRET_FALLBACKS": (
        lambda v: isinstance(v, list | tuple) and all(_is_secret(s) for s in v),
        "a list of older (or not yet active) secrets, each a non-empty string or a callable "
        "returning one",
    ),
    "PRIMARY_SECRET_RETRY": (
        lambda v: _is_number(v, minimum=10, maximum=86400, integer=True),
        "whole seconds from 10 to 86400",
    ),
    "ENCRYPTION_KEYS": (
        _are_keys,
        "None or a list of Fernet keys (cryptography.fernet.Fernet.generate_key()); the first "
        "encrypts, all decrypt",
    ),
}


#: Options whose value is a number (or a pair of numbers).
_NUMBER_KEYS = frozenset(
    {
        "TOKEN_TIMEOUT",
        "API_TIMEOUT",
        "TOKEN_RETRIES",
        "API_RETRIES",
        "TOKEN_DEADLINE",
        "EXPIRY_MARGIN",
        "REFRESH_WINDOW",
        "REFRESH_WINDOW_MAX",
        "LOCK_TIMEOUT",
        "FAILURE_COOLDOWN",
        "PRIMARY_SECRET_RETRY",
    }
)


def _is_quoted_number(value: object) -> bool:
    """A number written as a string (``"5"``), or a pair holding one (``("3.05", "10")``)."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not any(isinstance(item, str) for item in items):
        return False
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            return False
        try:
            float(item)
        except ValueError:
            return False
    return True


def _closest_environment(value: object) -> str | None:
    """What a wrong ``ENVIRONMENT`` most likely meant: ``"prod"`` -> ``"production"``."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().lower()
    if text in ENVIRONMENTS:  # another case or surrounding spaces: "Test", "production "
        return text
    # An abbreviation, as in the hosts' names (platform-prod): a prefix of exactly one name.
    prefixed = [name for name in ENVIRONMENTS if name.startswith(text)]
    if len(text) >= 3 and len(prefixed) == 1:
        return prefixed[0]
    close = difflib.get_close_matches(text, ENVIRONMENTS, n=1)
    return close[0] if close else None


def validate_alias(alias: str, options: object, *, check_cache: bool = True) -> list[Problem]:
    """Return every problem of one alias's options (empty when it is usable)."""
    where = f"{SETTING}[{alias!r}]"
    if not isinstance(options, Mapping):
        return [
            Problem(
                "tradevest_django.E002",
                alias,
                None,
                f"{where} must be a dict.",
                f"Give it the alias's options, e.g. {where} = {{'CLIENT_ID': ..., "
                "'CLIENT_SECRET': ..., 'ENVIRONMENT': 'test'}.",
            )
        ]
    problems: list[Problem] = []
    for key in options:
        if key not in KNOWN_KEYS:
            close = difflib.get_close_matches(str(key), KNOWN_KEYS, n=1)
            suggestion = f"Did you mean {close[0]!r}? " if close else ""
            problems.append(
                Problem(
                    "tradevest_django.E007",
                    alias,
                    str(key),
                    f"{where} has an unknown key {key!r}.",
                    f"{suggestion}Known keys: {', '.join(sorted(KNOWN_KEYS))}.",
                )
            )
    for key in REQUIRED:
        value = options.get(key)
        if key == "CLIENT_SECRET" and callable(value):
            continue  # called when a token is requested
        if not isinstance(value, str) or not value.strip():
            problems.append(
                Problem(
                    "tradevest_django.E003",
                    alias,
                    key,
                    f"{where}[{key!r}] is missing or empty.",
                    f"Set {where}[{key!r}] (e.g. from the TRADEVEST_{key} environment variable).",
                )
            )
    env = options.get("ENVIRONMENT")
    if env is not None and not (isinstance(env, str) and env in ENVIRONMENTS):
        meant = _closest_environment(env)
        problems.append(
            Problem(
                "tradevest_django.E004",
                alias,
                "ENVIRONMENT",
                f"{where}['ENVIRONMENT'] is {_shown('ENVIRONMENT', env, options)}, which is not "
                "a Tradevest environment.",
                (f"Did you mean {meant!r}? " if meant else "")
                + "Use one of 'test', 'pretest' or 'production' (e.g. in the "
                "TRADEVEST_ENVIRONMENT environment variable).",
            )
        )
    if env is None and not options.get("AUTH_URL"):
        problems.append(
            Problem(
                "tradevest_django.E004",
                alias,
                "ENVIRONMENT",
                f"{where} names no ENVIRONMENT.",
                f"Set {where}['ENVIRONMENT'] to 'test', 'pretest' or 'production' "
                "(TRADEVEST_ENVIRONMENT), or give an explicit AUTH_URL. There is no default, "
                "so that nothing talks to production by accident.",
            )
        )
    for key in ("AUTH_URL", "API_URL"):
        if options.get(key) is not None:
            problems.extend(_url_problems(alias, key, options[key]))
    if options.get("ENCRYPTION_KEYS") is not None and _cryptography_missing():
        return [
            *problems,
            Problem(
                "tradevest_django.E009",
                alias,
                "ENCRYPTION_KEYS",
                f"{where}['ENCRYPTION_KEYS'] is set but the cryptography package is missing.",
                'Install it with pip install "tradevest-django[encryption]".',
            ),
        ]
    for key, (is_valid, expected) in _VALUE_RULES.items():
        if key in options and not is_valid(options[key]):
            msg = f"{where}[{key!r}] has an invalid value {_shown(key, options[key], options)}"
            hint = f"Use {expected}; or leave it out for the default ({DEFAULTS[key]!r})."
            if key in _NUMBER_KEYS and _is_quoted_number(options[key]):
                msg += ": expected a number, not a string"
                hint = (
                    f"Use {expected}, without quotes. Environment variables are strings: convert "
                    "them with int() or float(), or build the alias with tradevest_env(env), "
                    f"which does. Or leave it out for the default ({DEFAULTS[key]!r})."
                )
            problems.append(Problem("tradevest_django.E008", alias, key, f"{msg}.", hint))
    cache = options.get("CACHE", DEFAULTS["CACHE"])
    if check_cache and isinstance(cache, str) and cache not in getattr(settings, "CACHES", {}):
        problems.append(
            Problem(
                "tradevest_django.E006",
                alias,
                "CACHE",
                f"{where}['CACHE'] names the cache {_shown('CACHE', cache, options)}, which is "
                "not in CACHES.",
                f"Add that cache to CACHES or set {where}['CACHE'] to one of: "
                f"{', '.join(getattr(settings, 'CACHES', {})) or '(none configured)'}.",
            )
        )
    return problems


def _shown(key: str, value: object, options: Mapping[str, Any]) -> str:
    """``repr(value)`` for a message, unless it is (or contains) a secret."""
    text = repr(value)[:200]
    fallbacks = options.get("CLIENT_SECRET_FALLBACKS")
    secrets = [options.get("CLIENT_SECRET")]
    secrets += list(fallbacks) if isinstance(fallbacks, list | tuple) else []
    pasted = any(isinstance(s, str) and s.strip() and s in repr(value) for s in secrets)
    if key in SECRET_KEYS or pasted:
        return "(not shown: it is secret)"
    return text


def _url_problems(alias: str, key: str, value: object) -> list[Problem]:
    where = f"{SETTING}[{alias!r}][{key!r}]"
    try:
        parts = urlsplit(value) if isinstance(value, str) else None
        parts and parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:  # e.g. "http://[::1" or a port out of range
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return [
            Problem(
                "tradevest_django.E005",
                alias,
                key,
                f"{where} is not an absolute http(s) URL.",
                "Use a URL such as 'https://b2b.auth.platform-test.tradevest.ai', or leave it "
                "out to use the ENVIRONMENT's host.",
            )
        ]
    if parts.username or parts.password or parts.query or parts.fragment:
        return [
            Problem(
                "tradevest_django.E005",
                alias,
                key,
                f"{where} must not contain credentials, a query or a fragment.",
                "Give only scheme, host, port and path; credentials go in CLIENT_ID and "
                "CLIENT_SECRET.",
            )
        ]
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        return [
            Problem(
                "tradevest_django.E005",
                alias,
                key,
                f"{where} uses plain http:// for a host that is not loopback.",
                "Use https://: tokens and the client secret must travel over TLS. Plain http is "
                "only allowed for 127.0.0.1, ::1 and localhost (test servers).",
            )
        ]
    return []


def _cryptography_missing() -> bool:
    from .crypto import cryptography_missing

    return cryptography_missing()


#: Words that stand for a credential in templates and examples (compared without case,
#: spaces, dashes or underscores): "CHANGE_ME", "your-client-id", "None" from a .env file.
_PLACEHOLDER_WORDS = frozenset(
    {
        "changeme",
        "changeit",
        "changethis",
        "replaceme",
        "placeholder",
        "example",
        "todo",
        "tbd",
        "fixme",
        "none",
        "null",
        "undefined",
        "secret",
        "password",
        "clientid",
        "clientsecret",
    }
)
_PLACEHOLDER_PATTERNS = (
    re.compile(r"<[^<>]*>"),  # <your client id>
    re.compile(r"\$\{[^{}]*\}|\{\{[^{}]*\}\}"),  # ${TRADEVEST_CLIENT_ID}, {{ client_id }}
    re.compile(r"(your|todo|tbd|fixme|change[ _-]?me)([\W_].*)?", re.IGNORECASE),  # your-id
    re.compile(r".*[ _-]here", re.IGNORECASE),  # client_secret_here, paste it here
)


def looks_like_placeholder(value: str) -> bool:
    """Whether a credential is still a template's placeholder (``"<your client id>"``).

    Precise rather than thorough: real ids and secrets are long random strings, which none of
    these shapes matches.
    """
    text = value.strip()
    bare = re.sub(r"[\W_]", "", text).lower()  # "CHANGE_ME" -> "changeme", "***" -> ""
    if not bare or bare in _PLACEHOLDER_WORDS:
        return True
    if re.fullmatch(r"x{3,}|your(client)?(id|secret)", bare):  # XXXX-XXXX, YourClientId
        return True
    return any(pattern.fullmatch(text) for pattern in _PLACEHOLDER_PATTERNS)


def validate_setting(value: object) -> list[Problem]:
    """Return every problem of the whole ``TRADEVEST`` setting."""
    if not isinstance(value, Mapping) or not value:
        return [
            Problem(
                "tradevest_django.E001",
                None,
                None,
                f"The {SETTING} setting is missing, empty or not a dict.",
                f"Add {SETTING} = {{'default': {{'CLIENT_ID': ..., 'CLIENT_SECRET': ..., "
                "'ENVIRONMENT': 'test'}} to your settings (tradevest_django.env.tradevest_env "
                "builds the inner dict from environment variables).",
            )
        ]
    problems: list[Problem] = []
    for alias, options in value.items():
        problems.extend(validate_alias(str(alias), options))
    return problems
