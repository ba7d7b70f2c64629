"""pytest fixtures for projects that use tradevest-django (loaded automatically by pytest).

* ``tradevest_server``: a started :class:`~tradevest_django.testing.FakeTradevestServer` on
  loopback, stopped after the test.
* ``tradevest_settings``: points ``TRADEVEST["default"]`` at that server (through pytest-django's
  ``settings`` fixture) and returns the server, so a test can look at what it received::

      def test_prices(tradevest_settings, client):
          response = client.get("/prices/")
          assert tradevest_settings.token_request_count == 1
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .server import FakeTradevestServer


@pytest.fixture
def tradevest_server() -> Iterator[FakeTradevestServer]:
    """A fake Tradevest auth server and API on 127.0.0.1, with a random port."""
    with FakeTradevestServer() as server:
        yield server


@pytest.fixture
def tradevest_settings(settings: Any, tradevest_server: FakeTradevestServer) -> FakeTradevestServer:
    """``TRADEVEST = {"default": ...}`` aimed at ``tradevest_server``; returns the server."""
    from tradevest_django.api import get_manager

    settings.TRADEVEST = {"default": tradevest_server.settings()}
    # A later test's server may get the same port, hence the same cache key: start clean.
    get_manager().shared.clear()
    return tradevest_server
