"""Test helpers: a fake Tradevest auth server and API on loopback, and Tradevest's contract.

Standard library only (``delete_redis_prefix`` imports ``redis`` when called); importing this
package reads no Django settings.
"""

from __future__ import annotations

from tradevest_django.testing.contract import openapi_path
from tradevest_django.testing.faults import Fault
from tradevest_django.testing.records import ApiRequestRecord, Headers, TokenRequestRecord
from tradevest_django.testing.redis import delete_redis_prefix
from tradevest_django.testing.server import FakeTradevestServer

__all__ = [
    "ApiRequestRecord",
    "FakeTradevestServer",
    "Fault",
    "Headers",
    "TokenRequestRecord",
    "delete_redis_prefix",
    "openapi_path",
]
