"""A `django-health-check`_ check of each ``TRADEVEST`` alias: ``tradevest-django[health]``.

List one :class:`TradevestToken` per alias in the checks of django-health-check's view::

    # urls.py
    from health_check.views import HealthCheckView

    urlpatterns = [
        path(
            "health/",
            HealthCheckView.as_view(
                checks=[
                    "health_check.Cache",
                    ("tradevest_django.contrib.health_check.TradevestToken", {"alias": "default"}),
                ]
            ),
        ),
    ]

A probe shares the fleet's token (``get_token()``): however often monitors poll, it requests a
token only when the whole fleet has none and remembers no recent failure, as any caller would.

Works with django-health-check 3.21 and later (the ``checks`` view API; 4.x needs Django 5.2).

.. _django-health-check: https://codingjoe.dev/django-health-check/
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from health_check import HealthCheck  # type: ignore[import-untyped]
from health_check.exceptions import (  # type: ignore[import-untyped]
    ServiceUnavailable,
    ServiceWarning,
)

from ..api import get_manager
from ..conf import DEFAULTS, get_config
from ..exceptions import TokenEndpointError, TradevestConfigurationError, TradevestError
from ..tokens import Token


class State(enum.Enum):
    #: A valid token is cached (or held in process) and the cache answers.
    HEALTHY = "healthy"
    #: The token is valid, but the fleet's last token request failed: it will expire unless a
    #: refresh succeeds in time.
    WARNING = "warning"
    #: No valid token (the token endpoint refuses or fails), the cache does not answer, or the
    #: setting is invalid.
    ERROR = "error"


class Verdict(NamedTuple):
    state: State
    #: Why, for the health report: never a secret, a token, a host or a cache location.
    reason: str = ""


def judge(status: Mapping[str, Any], token: Token | None, error: Exception | None) -> Verdict:
    """The state of an alias from what its probe saw; no I/O here.

    Args:
        status: :meth:`TokenManager.status() <tradevest_django.manager.TokenManager.status>`,
            read after the token attempt.
        token: the token ``get_token()`` returned, ``None`` if the probe got none.
        error: why the probe got no token (``None`` if it did not ask).
    """
    if not status.get("cache_reachable", False):
        return Verdict(
            State.ERROR,
            f"cache {status.get('cache')!r} unreachable: the fleet cannot share its token",
        )
    if token is None:
        return _no_token(error)
    last_error = status.get("last_error")
    if isinstance(last_error, Mapping) and _after(last_error.get("at"), status.get("last_refresh")):
        code = f" ({last_error['error']})" if last_error.get("error") else ""
        return Verdict(
            State.WARNING,
            f"the last token request failed ({last_error.get('type')}{code}, "
            f"{last_error.get('at')}); the token is valid for {int(token.seconds_left)} s more",
        )
    return Verdict(State.HEALTHY)


def probe(alias: str) -> Verdict:
    """Look at ``alias`` as a caller would: its cache, its token, the fleet's last failure.

    A token is requested only through ``get_token()``: when the whole fleet has none and
    remembers no recent failure. With the cache down, nothing is requested: every poll of every
    process could otherwise request a token of its own.
    """
    try:
        manager = get_manager(alias)
    except TradevestConfigurationError:
        return Verdict(State.ERROR, f"TRADEVEST[{alias!r}] is invalid: run manage.py check")
    token: Token | None = None
    error: Exception | None = None
    try:
        status = manager.status()  # two cache reads: does the cache answer?
        if status["cache_reachable"]:
            try:
                token = manager.get_token()
            except TradevestError as err:
                error = err
            status = manager.status()  # after the token attempt, which may have refreshed
    except TradevestError as err:  # a callable CLIENT_SECRET that cannot be read
        return _no_token(err)
    return judge(status, token, error)


@dataclasses.dataclass
class TradevestToken(HealthCheck):  # type: ignore[misc]
    """Whether the ``TRADEVEST`` alias ``alias`` has a valid token that the fleet shares.

    OK while a valid token is cached; a warning (``ServiceWarning``) while the token is valid
    but the fleet's last token request failed; unavailable (``ServiceUnavailable``) when there
    is no valid token, the cache does not answer, or the alias's setting is invalid.
    """

    alias: str = "default"

    @property
    def timeout(self) -> timedelta:
        """django-health-check's budget for a probe: the alias's ``TOKEN_DEADLINE``."""
        try:
            deadline = get_config(self.alias).token_deadline
        except TradevestConfigurationError:
            deadline = DEFAULTS["TOKEN_DEADLINE"]
        return timedelta(seconds=deadline)

    def run(self) -> None:
        verdict = probe(self.alias)
        if verdict.state is State.ERROR:
            raise ServiceUnavailable(verdict.reason)
        if verdict.state is State.WARNING:
            raise ServiceWarning(verdict.reason)

    def check_status(self) -> None:
        """django-health-check 3.x calls this; 4.x calls :meth:`run`."""
        self.run()


def _no_token(error: Exception | None) -> Verdict:
    code = f" ({error.error})" if isinstance(error, TokenEndpointError) else ""
    remembered = ", remembered by the fleet" if getattr(error, "remembered", False) else ""
    return Verdict(State.ERROR, f"no valid token: {type(error).__name__}{code}{remembered}")


def _after(moment: object, reference: object) -> bool:
    """Whether ISO time ``moment`` is later than ``reference`` (always, if there is none)."""
    if not isinstance(moment, str) or not isinstance(reference, str | None):
        return False
    try:  # the cache holds what other processes (or versions) wrote
        when = datetime.fromisoformat(moment)
        return reference is None or when > datetime.fromisoformat(reference)
    except (TypeError, ValueError):  # TypeError: an aware and a naive time
        return False
