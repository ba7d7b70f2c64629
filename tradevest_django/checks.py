"""System checks (``manage.py check``) for the ``TRADEVEST`` setting and the caches it uses.

Errors come from :func:`tradevest_django.validation.validate_setting`, so ``check`` and the runtime
report the same problems in the same words. Warnings name cache backends that cannot share a
token across a fleet safely; they read the ``BACKEND`` path in ``CACHES`` and nothing else. No
check here touches a cache or the network.

Check ids are public API (``SILENCED_SYSTEM_CHECKS`` depends on them): never renumber or reuse one.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from .conf import DEFAULTS, SETTING
from .validation import looks_like_placeholder, validate_setting

#: Every check id, with its one-line meaning (documented in docs/checks.md).
CHECK_IDS: dict[str, str] = {
    "tradevest_django.E001": "The TRADEVEST setting is missing, empty or not a dict.",
    "tradevest_django.E002": "An alias of TRADEVEST is not a dict.",
    "tradevest_django.E003": "An alias has no CLIENT_ID or no CLIENT_SECRET (missing or empty).",
    "tradevest_django.E004": "An alias names an unknown ENVIRONMENT, or none and no AUTH_URL.",
    "tradevest_django.E005": "AUTH_URL or API_URL is not an https URL (http only for loopback).",
    "tradevest_django.E006": "An alias's CACHE names a cache that is not in CACHES.",
    "tradevest_django.E007": "An alias has an unknown key (a typo).",
    "tradevest_django.E008": "An alias has an option with an invalid value.",
    "tradevest_django.E009": "ENCRYPTION_KEYS is set but the cryptography package is missing.",
    "tradevest_django.W001": "An alias's cache is local-memory: processes do not share the token.",
    "tradevest_django.W002": "An alias's cache is the dummy cache: nothing is shared, every "
    "process requests its own token.",
    "tradevest_django.W003": "An alias's cache is file-based: the refresh lock is not atomic.",
    "tradevest_django.W004": "An alias's cache is the database cache: the refresh lock is not "
    "atomic and tokens wait for the request's commit.",
    "tradevest_django.W005": "An alias's cache is Redis with several servers: reads go to "
    "replicas, which may lag behind the primary.",
    "tradevest_django.W006": "An alias has CLIENT_SECRET_FALLBACKS: a secret rotation is under "
    "way.",
    "tradevest_django.W007": "An alias's CLIENT_ID or CLIENT_SECRET still holds a placeholder.",
}

_SHARED = (
    "Point {where}['CACHE'] at a cache that all processes share with an atomic add(): Redis "
    "(django.core.cache.backends.redis.RedisCache or django_redis) or Memcached."
)

#: Django's class name -> (check id, what is wrong with it, hint). Subclasses match too.
_CACHE_WARNINGS: dict[str, tuple[str, str, str]] = {
    "LocMemCache": (
        "tradevest_django.W001",
        "a local-memory cache: worker processes do not share its token",
        "Every process requests its own token. "
        + _SHARED
        + " With a single process (development), silence this check: "
        "SILENCED_SYSTEM_CHECKS = ['tradevest_django.W001'].",
    ),
    "DummyCache": (
        "tradevest_django.W002",
        "the dummy cache, which holds nothing: every process requests its own token, and "
        "again after every restart",
        "A fleet of N processes then requests N tokens per lifetime. " + _SHARED,
    ),
    "FileBasedCache": (
        "tradevest_django.W003",
        "a file-based cache, whose add() is not atomic across processes",
        "Two processes may both win the refresh lock and both request a token. " + _SHARED,
    ),
    "DatabaseCache": (
        "tradevest_django.W004",
        "the database cache, whose add() is not atomic across processes",
        "Two processes may both win the refresh lock; and with ATOMIC_REQUESTS a token stored "
        "during a request stays invisible to other processes until that request commits. "
        + _SHARED,
    ),
}


def check_settings(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Report every problem of the ``TRADEVEST`` setting as an error (``E0xx``)."""
    return [
        checks.Error(problem.msg, hint=problem.hint, obj=SETTING, id=problem.check_id)
        for problem in validate_setting(getattr(settings, SETTING, None))
    ]


def _aliases() -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(where, options)`` of each alias that is a dict; E001/E002 report the others."""
    aliases = getattr(settings, SETTING, None)
    if isinstance(aliases, Mapping):
        for alias, options in aliases.items():
            if isinstance(options, Mapping):
                yield f"{SETTING}[{str(alias)!r}]", options


def check_rotation(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Warn while an alias keeps fallback secrets (``W006``): a rotation is not finished."""
    messages: list[checks.CheckMessage] = []
    for where, options in _aliases():
        fallbacks = options.get("CLIENT_SECRET_FALLBACKS")
        if isinstance(fallbacks, list | tuple) and fallbacks:
            messages.append(
                checks.Warning(
                    f"{where} has {len(fallbacks)} CLIENT_SECRET_FALLBACKS: a secret rotation "
                    "is under way.",
                    hint="Once Tradevest accepts CLIENT_SECRET and the status page or "
                    "`manage.py tradevest_token` shows it serving, remove "
                    f"{where}['CLIENT_SECRET_FALLBACKS'] (TRADEVEST_CLIENT_SECRET_FALLBACKS); "
                    "see the rotation runbook in the docs.",
                    obj=SETTING,
                    id="tradevest_django.W006",
                )
            )
    return messages


def check_placeholders(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Warn about credentials still holding a template's placeholder (``W007``).

    A callable ``CLIENT_SECRET`` is not called: a check reads settings and nothing else.
    """
    messages: list[checks.CheckMessage] = []
    for where, options in _aliases():
        for key, what in (("CLIENT_ID", "client id"), ("CLIENT_SECRET", "client secret")):
            value = options.get(key)
            # Empty or missing values are E003's; the value itself is never shown.
            if isinstance(value, str) and value.strip() and looks_like_placeholder(value):
                messages.append(
                    checks.Warning(
                        f"{where}[{key!r}] looks like a placeholder, not a real {what}.",
                        hint=f"Set it to the {what} from your Tradevest onboarding (e.g. in "
                        f"the TRADEVEST_{key} environment variable); Tradevest refuses a "
                        "placeholder. To develop without credentials, run `python -m "
                        "tradevest_django.testing` and use the settings it prints.",
                        obj=SETTING,
                        id="tradevest_django.W007",
                    )
                )
    return messages


def check_caches(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Warn about each alias whose cache cannot share a token safely (``W0xx``)."""
    caches = getattr(settings, "CACHES", None)
    if not isinstance(caches, Mapping):
        return []  # Django's own cache checks report it
    messages: list[checks.CheckMessage] = []
    for where, options in _aliases():
        cache_alias = options.get("CACHE", DEFAULTS["CACHE"])
        entry = caches.get(cache_alias) if isinstance(cache_alias, str) else None
        backend = entry.get("BACKEND") if isinstance(entry, Mapping) else None
        warning = _cache_warning(backend) if isinstance(backend, str) else None
        if warning is None and isinstance(backend, str) and isinstance(entry, Mapping):
            warning = _replica_warning(backend, entry.get("LOCATION"))
        if warning is not None:
            check_id, problem, hint = warning
            messages.append(
                checks.Warning(
                    f"{where} keeps its token in CACHES[{cache_alias!r}], {problem}.",
                    hint=hint.format(where=where, cache=cache_alias),
                    obj=SETTING,
                    id=check_id,
                )
            )
    return messages


def _replica_warning(backend: str, location: object) -> tuple[str, str, str] | None:
    """W005: Django's RedisCache and django-redis read from the servers after the first."""
    if not backend.rpartition(".")[2].endswith("RedisCache"):
        return None
    if isinstance(location, str):
        servers = [part for part in re.split("[;,]", location) if part.strip()]
    elif isinstance(location, list | tuple):
        servers = list(location)
    else:
        return None
    if len(servers) < 2:
        return None
    return (
        "tradevest_django.W005",
        f"a Redis cache with {len(servers)} servers, whose reads go to replicas that may not "
        "have the newest token, lock or revocation yet",
        "A lagging replica makes processes miss each other's refresh lock and token and request "
        "tokens of their own. Give the tokens a cache of the primary alone, e.g. "
        "CACHES['tradevest'] = {{'BACKEND': ..., 'LOCATION': <the primary's URL>}} and "
        "{where}['CACHE'] = 'tradevest'.",
    )


def _cache_warning(backend: str) -> tuple[str, str, str] | None:
    names = [backend]
    # Importing the class (no instance, no I/O) also recognises subclasses with other names.
    with contextlib.suppress(ImportError):
        cls = import_string(backend)
        if isinstance(cls, type):
            names += [klass.__qualname__ for klass in cls.__mro__]
    for name in names:
        for suffix, warning in _CACHE_WARNINGS.items():
            if name.rpartition(".")[2].endswith(suffix):
                return warning
    return None
