"""The Celery app of the integration test: ``celery -A tests.celery_app worker``."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.celery_settings")

app = Celery("tvtests")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.task(name="tvtests.call_api")
def call_api(number: int) -> dict[str, Any]:
    """Call the fake Tradevest API as a user's task would."""
    from tradevest_django import get_session

    with get_session() as session:
        response = session.get("/prices", params={"n": number})
    return {"status": response.status_code, "pid": os.getpid()}
