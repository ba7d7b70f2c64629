"""The status page: ``path("tradevest/", include("tradevest_django.urls"))``.

Staff only. HTML for people, JSON for monitors (``?format=json`` or ``Accept:
application/json``). Showing it never fetches a token; a POST (the page's button) asks each alias
for a token and shows the outcome. The POST is CSRF-protected by the view itself, so that no
page a staff member opens can make it request tokens (an ``<img>`` or a cross-site form), with
or without ``CsrfViewMiddleware``.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import user_passes_test
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_http_methods

from .api import get_manager
from .conf import configured_aliases
from .exceptions import TradevestConfigurationError, TradevestError


def _is_staff(user: Any) -> bool:
    return bool(user.is_active and user.is_staff)


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
@user_passes_test(_is_staff)
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
    rows = [{**alias, **_for_people(alias)} for alias in aliases]
    return render(request, "tradevest_django/status.html", {"aliases": rows, "checked": check})


def _for_people(alias: dict[str, Any]) -> dict[str, str]:
    """Times as people read them: UTC without the ISO noise, and durations in minutes."""
    shown: dict[str, str] = {}
    for key in ("expires_at", "last_refresh"):
        if alias.get(key):
            shown[f"{key}_text"] = alias[key].replace("T", " ").replace("+00:00", " UTC")
    seconds = alias.get("expires_in")
    if isinstance(seconds, int):
        minutes, secs = divmod(max(seconds, 0), 60)
        hours, minutes = divmod(minutes, 60)
        shown["expires_in_text"] = (
            f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"
        )
    return shown
