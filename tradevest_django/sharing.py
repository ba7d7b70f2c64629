"""Whether an alias's token reaches the rest of the fleet: its cache, and whether it answers.

``manage.py tradevest_token`` reports it for each alias, and ``--strict`` fails a deploy on it.
The system checks (``W001``, ``W002``) judge the same from the settings alone; this asks the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache

from .conf import AliasConfig, mask_location

#: Read, never written, to see whether the cache answers: one cheap round trip.
PROBE_KEY = "tradevest_django:probe"
#: Backends whose entries other processes never see (checks W001 and W002).
UNSHARED = ((LocMemCache, "local-memory cache"), (DummyCache, "dummy cache"))


@dataclass(frozen=True)
class Sharing:
    """How an alias's token reaches the rest of the fleet: its cache, and whether that answered.

    File-based and database caches count as shared: every process that uses the same directory
    or database sees their entries; their refresh lock is not atomic (checks W003, W004), which
    costs at most an extra token request, never a wrong token.
    """

    alias: str
    backend: str
    #: Why other processes never see this cache's entries (``None``: they do).
    unshared: str | None = None
    #: The exception class of the cache's answer to the probe (``None``: it answered).
    problem: str | None = None
    #: The cache's ``LOCATION`` with any password masked.
    location: str = ""

    @property
    def shared(self) -> bool:
        return self.unshared is None

    @property
    def reachable(self) -> bool:
        return self.problem is None

    @property
    def ok(self) -> bool:
        """Whether the fleet can share the token through this cache now (``--strict``)."""
        return self.shared and self.reachable

    def as_json(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "backend": self.backend,
            "shared": self.shared,
            "reachable": self.reachable,
        }

    def __str__(self) -> str:
        if not self.reachable:
            where = f" at {self.location}" if self.location else ""
            return f"cache unreachable: {self.backend}{where} ({self.problem})"
        if not self.shared:
            return f"NOT shared: {self.unshared}"
        return f"shared via {self.alias!r} ({self.backend})"

    def diagnostic(self, alias: str) -> str:
        """The stderr line of ``--strict`` for a cache that does not share the token."""
        if not self.reachable:
            fix = (
                "Every process requests its own token until it answers. Check that this machine "
                f"can reach CACHES[{self.alias!r}]['LOCATION'] and that the server is up."
            )
        else:
            fix = (
                "Every process requests its own token. Point "
                f"TRADEVEST[{alias!r}]['CACHE'] at a cache that all processes share (Redis or "
                "Memcached)."
            )
        return f"{alias}: {self}. {fix}"


def cache_sharing(config: AliasConfig) -> Sharing:
    """Ask the alias's cache for a key nobody writes: whether it answers, never raising."""
    entry = settings.CACHES.get(config.cache_alias, {})
    location = entry.get("LOCATION")
    location = mask_location(location) if location else ""
    backend = str(entry.get("BACKEND", "")).rpartition(".")[2]
    try:
        cache = caches[config.cache_alias]
        backend = type(cache).__name__
        cache.get(PROBE_KEY)
    except Exception as err:  # every backend raises its own kinds of error
        return Sharing(config.cache_alias, backend, problem=type(err).__name__, location=location)
    unshared = next((kind for cls, kind in UNSHARED if isinstance(cache, cls)), None)
    return Sharing(config.cache_alias, backend, unshared=unshared, location=location)
