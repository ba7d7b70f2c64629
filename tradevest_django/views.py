"""The status page: ``path("tradevest/", include("tradevest_django.urls"))``.

Staff only, or whoever has the permission named by the ``TRADEVEST_STATUS_PERMISSION`` setting
(e.g. ``"tradevest_django.view_status"``). HTML for people, JSON (``?format=json`` or ``Accept:
application/json``) for people's scripts; monitors use the health check instead. Showing it never
fetches a token; a POST (the page's button) asks each alias for a token and shows the outcome.
The POST is CSRF-protected by the view itself, so that no page a staff member opens can make it
request tokens (an ``<img>`` or a cross-site form), with or without ``CsrfViewMiddleware``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import user_passes_test
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods

from .api import get_manager
from .conf import configured_aliases
from .exceptions import TradevestConfigurationError, TradevestError

#: Django setting: the permission that opens the page (``"app_label.codename"``); unset, staff.
PERMISSION_SETTING = "TRADEVEST_STATUS_PERMISSION"


def _may_see(user: Any) -> bool:
    """Active staff, or whoever has ``TRADEVEST_STATUS_PERMISSION`` when it is set."""
    if not user.is_active:
        return False
    permission = getattr(settings, PERMISSION_SETTING, None)
    return bool(user.has_perm(permission)) if permission else bool(user.is_staff)


def _check(alias: str) -> dict[str, Any]:
    try:
        token = get_manager(alias).get_token()
    except (TradevestError, TradevestConfigurationError) as err:
        return {"ok": False, "error": type(err).__name__, "message": str(err)}
    return {"ok": True, "source": token.source, "fingerprint": token.fingerprint}


def _alias_status(alias: str, check: bool) -> dict[str, Any]:
    try:
        manager = get_manager(alias)
    except TradevestConfigurationError as err:
        return {"alias": alias, "configuration_error": str(err)}
    result = _check(alias) if check else None
    status = manager.status()  # after the check, so it shows the token the check obtained
    status["check"] = result
    return status


@never_cache
@user_passes_test(_may_see)
@csrf_protect
@require_http_methods(["GET", "HEAD", "POST"])
def status(request: HttpRequest) -> HttpResponse:
    """Show, per ``TRADEVEST`` alias, the token the fleet shares and the last refresh and error.

    Only a POST checks (requests a token where none is cached): a GET never has side effects.
    """
    check = request.method == "POST"
    aliases = [_alias_status(alias, check) for alias in configured_aliases()]
    wants_json = request.GET.get("format") == "json" or (
        "application/json" in request.headers.get("Accept", "")
    )
    if wants_json:
        return JsonResponse({"aliases": aliases, "checked": check})
    now = datetime.now(timezone.utc)
    rows = [{**alias, **_for_people(alias, now)} for alias in aliases]
    return render(request, "tradevest_django/status.html", {"aliases": rows, "checked": check})


def _for_people(alias: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Times as people read them: UTC and how long ago (or until), and whether the last error
    was resolved by a later refresh."""
    shown: dict[str, Any] = {}
    for key in ("expires_at", "last_refresh"):
        moment = _parse(alias.get(key))
        if moment is not None:
            shown[f"{key}_text"] = _utc(moment)
            shown[f"{key}_relative"] = _relative(moment, now)
    error = alias.get("last_error")
    if isinstance(error, dict):
        at, refreshed = _parse(error.get("at")), _parse(alias.get("last_refresh"))
        shown["last_error_text"] = _utc(at) if at else ""
        shown["last_error_relative"] = _relative(at, now) if at else ""
        shown["last_error_resolved"] = bool(at and refreshed and refreshed >= at)
    return shown


def _parse(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _relative(moment: datetime, now: datetime) -> str:
    """``"3 min ago"`` or ``"in 58 min"``."""
    seconds = int((moment - now).total_seconds())
    amount = abs(seconds)
    if amount < 60:
        text = f"{amount} s"
    elif amount < 3600:
        text = f"{amount // 60} min"
    elif amount < 48 * 3600:
        hours, minutes = divmod(amount // 60, 60)
        text = f"{hours} h {minutes:02d} min"
    else:
        text = f"{amount // 86400} days"
    return f"in {text}" if seconds > 0 else f"{text} ago"
