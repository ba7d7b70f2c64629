"""Views of the example project."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from tradevest_django import TradevestError, get_session


def prices(request: HttpRequest) -> JsonResponse:
    """Call the Tradevest API through get_session() and show what it answered."""
    try:
        with get_session() as session:
            response = session.get(
                "/prices", params={"isin": request.GET.get("isin", "DE0005140008")}
            )
    except TradevestError as err:
        return JsonResponse({"error": type(err).__name__, "message": str(err)}, status=502)
    return JsonResponse({"status": response.status_code, "tradevest": response.json()})
