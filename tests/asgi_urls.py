"""The URLconf that tests/test_asgi.py serves with uvicorn: async views only."""

from __future__ import annotations

import asyncio
import threading

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

import tradevest_django


class Gate:
    """Holds the callers of ``/token/`` and ``/prices/`` until the test opens it; counts them.

    The views run on uvicorn's event loop, the test in another thread: the count is kept under
    a condition the test can wait on, and the gate is opened on the views' loop.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._waiting = 0
        self._opened = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def wait(self) -> None:
        with self._condition:
            self._loop = asyncio.get_running_loop()
            self._waiting += 1
            self._condition.notify_all()
        await self._opened.wait()

    def wait_for_callers(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` callers wait at the gate; return whether they do."""
        with self._condition:
            return self._condition.wait_for(lambda: self._waiting >= count, timeout)

    def open(self) -> None:
        with self._condition:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._opened.set)


#: Replaced by the test's fixture for each server (an asyncio.Event belongs to one loop).
gate = Gate()


async def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


async def token(request: HttpRequest) -> JsonResponse:
    if "gated" in request.GET:
        await gate.wait()
    taken = await tradevest_django.aget_token()
    return JsonResponse({"fingerprint": taken.fingerprint})


async def prices(request: HttpRequest) -> JsonResponse:
    if "gated" in request.GET:
        await gate.wait()
    async with tradevest_django.get_async_client() as client:
        response = await client.get("/prices")
    return JsonResponse({"status": response.status_code})


urlpatterns = [
    path("health/", health),
    path("token/", token),
    path("prices/", prices),
]
