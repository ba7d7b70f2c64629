"""Celery tasks that call the Tradevest API."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from tradevest_django import TokenEndpointUnavailable, get_session


@shared_task(
    autoretry_for=(TokenEndpointUnavailable,),
    retry_backoff=True,
    max_retries=5,
)
def fetch_prices(isin: str = "DE0005140008") -> dict[str, Any]:
    """Fetch prices; retried later if Tradevest's token endpoint is unavailable."""
    with get_session() as session:
        response = session.get("/prices", params={"isin": isin})
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result
