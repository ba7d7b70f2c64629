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


async def async_prices(request: HttpRequest) -> JsonResponse:
    """The same call from an async view, through get_async_client(): the event loop never
    waits for a token, so the server keeps answering other requests meanwhile."""
    # Imported here because httpx is an optional extra: pip install "tradevest-django[httpx]".
    from tradevest_django import get_async_client

    try:
        async with get_async_client() as client:
            response = await client.get(
                "/prices", params={"isin": request.GET.get("isin", "DE0005140008")}
            )
    except TradevestError as err:
        return JsonResponse({"error": type(err).__name__, "message": str(err)}, status=502)
    return JsonResponse({"status": response.status_code, "tradevest": response.json()})
