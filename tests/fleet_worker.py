"""One "worker process" of a fleet test: threads that take tokens and call the fake API.

Run as ``python -m tests.fleet_worker '<json>'``; prints one JSON line of results. The JSON gives
``server`` (the alias dict), ``caches`` (Django CACHES), ``threads``, ``start_at`` (wall time all
workers start together), ``duration`` and ``mode`` (``"calls"``, ``"invalidate"`` or ``"token"``).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any


def main(raw: str) -> dict[str, Any]:
    spec = json.loads(raw)
    import django
    from django.conf import settings

    settings.configure(
        CACHES=spec["caches"],
        TRADEVEST={"default": spec["server"]},
        INSTALLED_APPS=["tradevest_django"],
        USE_TZ=True,
    )
    django.setup()
    import requests

    import tradevest_django
    from tradevest_django.exceptions import TradevestError

    api_url = spec["server"]["API_URL"]
    results: dict[str, Any] = {"calls": 0, "unauthorized": 0, "errors": [], "tokens": []}
    lock = threading.Lock()
    end = spec["start_at"] + spec["duration"]

    def run() -> None:
        with requests.Session() as session:
            while time.time() < end:
                try:
                    token = tradevest_django.get_token()
                except TradevestError as err:
                    with lock:
                        results["errors"].append(type(err).__name__)
                    if spec["mode"] == "token":
                        return
                    continue
                if spec["mode"] == "token":
                    with lock:
                        results["tokens"].append(token.access_token)
                    return
                response = session.get(
                    f"{api_url}/prices", headers={"Authorization": token.authorization}, timeout=5
                )
                with lock:
                    results["calls"] += 1
                    if response.status_code == 401:
                        results["unauthorized"] += 1
                if response.status_code == 401:
                    tradevest_django.invalidate_token(token)

    time.sleep(max(0.0, spec["start_at"] - time.time()))  # a shared start line, not a timing hope
    threads = [threading.Thread(target=run) for _ in range(spec["threads"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=spec["duration"] + 30)
    return results


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
