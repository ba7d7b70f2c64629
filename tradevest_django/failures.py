"""The fleet's memory of token endpoint failures, kept in the shared cache.

A refusal (``invalid_client`` and the other OAuth errors) is remembered for
``FAILURE_COOLDOWN`` seconds, an outage (429, 5xx, network) for its ``Retry-After`` or
:data:`OUTAGE_COOLDOWN`, an unusable answer for :data:`OUTAGE_COOLDOWN`: meanwhile every worker
raises the remembered error at once instead of asking again, so 100 workers with wrong
credentials send a handful of requests a minute, not thousands.
"""

from __future__ import annotations

from typing import Any

from .conf import AliasConfig
from .exceptions import (
    BadTokenResponse,
    TokenEndpointError,
    TokenEndpointUnavailable,
    TradevestError,
    error_class_for,
)

#: Back-off shared by the fleet after an outage that did not say how long (no Retry-After).
OUTAGE_COOLDOWN = 2.0


def record(err: TradevestError, failure_cooldown: int) -> tuple[dict[str, Any], float] | None:
    """What to remember of ``err`` (plain data for the cache) and how long; ``None``: nothing."""
    if isinstance(err, TokenEndpointError):
        failure: dict[str, Any] = {
            "kind": "refused",
            "error": err.error,
            "status": err.status_code,
            "description": err.error_description,
        }
        cooldown = float(failure_cooldown)
    elif isinstance(err, TokenEndpointUnavailable):
        failure = {"kind": "unavailable", "status": err.status_code}
        cooldown = min(err.retry_after or OUTAGE_COOLDOWN, float(failure_cooldown))
    elif isinstance(err, BadTokenResponse):
        # A server answering garbage would otherwise get a billed request per caller.
        failure = {"kind": "bad_response"}
        cooldown = min(OUTAGE_COOLDOWN, float(failure_cooldown))
    else:
        return None
    return (failure, cooldown) if cooldown > 0 else None


def remembered_error(
    failure: dict[str, Any] | None, now: float, config: AliasConfig
) -> TradevestError | None:
    """The error ``failure`` remembers, unless there is none or its time is over."""
    if not isinstance(failure, dict) or not isinstance(failure.get("until"), int | float):
        return None
    wait = float(failure["until"]) - now
    if wait <= 0:
        return None
    alias, host = config.alias, config.auth_host
    if failure.get("kind") == "refused":
        error = str(failure.get("error") or "")
        return error_class_for(error)(
            alias=alias,
            error=error,
            error_description=failure.get("description"),
            status_code=failure.get("status"),
            auth_host=host,
            remembered=True,
        )
    if failure.get("kind") == "bad_response":
        return BadTokenResponse(
            f"Tradevest's token endpoint at {host} sent an unusable token moments ago for alias "
            f"{alias!r}; the fleet waits {wait:.1f} s before asking again.",
            alias=alias,
        )
    return TokenEndpointUnavailable(
        f"Tradevest's token endpoint at {host} failed moments ago for alias {alias!r}; the "
        f"fleet waits {wait:.1f} s before asking again.",
        alias=alias,
        status_code=failure.get("status"),
        retry_after=wait,
        remembered=True,
    )
