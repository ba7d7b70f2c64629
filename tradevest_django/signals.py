"""Signals sent by the token manager, for metrics and alerting.

Every signal is sent with ``sender`` = the :class:`~tradevest_django.manager.TokenManager` and
``alias`` = its alias name. None of them carries the access token or the client secret; use
``fingerprint`` to correlate log lines.

* :data:`token_obtained`: a new token was fetched from the token endpoint by this process.
  Arguments: ``alias``, ``fingerprint``, ``expires_at`` (aware datetime), ``duration`` (seconds
  the request took, retries included), ``attempt`` (which attempt succeeded, from 1).
* :data:`token_request_failed`: a token request failed for good (after its retries).
  Arguments: ``alias``, ``exception`` (a :class:`~tradevest_django.exceptions.TradevestError`).
* :data:`token_invalidated`: a token was dropped before its expiry.
  Arguments: ``alias``, ``fingerprint``, ``reason`` (e.g. ``"rejected by the API (401)"``).

Receivers run in the calling thread (or in the background refresh thread); keep them fast and
never let them raise: exceptions from receivers are logged and swallowed.
"""

from __future__ import annotations

from django.dispatch import Signal

token_obtained = Signal()
token_request_failed = Signal()
token_invalidated = Signal()
