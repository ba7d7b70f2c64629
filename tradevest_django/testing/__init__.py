"""Test helpers: a fake Tradevest auth server and API on loopback.

Standard library only; importing this package reads no Django settings.
"""

from __future__ import annotations

from tradevest_django.testing.faults import Fault
from tradevest_django.testing.records import ApiRequestRecord, Headers, TokenRequestRecord
from tradevest_django.testing.server import FakeTradevestServer

__all__ = ["ApiRequestRecord", "FakeTradevestServer", "Fault", "Headers", "TokenRequestRecord"]
