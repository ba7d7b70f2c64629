"""The token request itself: one HTTP exchange with Tradevest's token endpoint, and its retries.

Retries are a small loop here rather than urllib3's ``Retry``: the loop must stop at a total
deadline (urllib3 sleeps as long as any ``Retry-After`` says), use an injectable clock and sleep
so tests never really wait, and hand ``Retry-After`` to the token manager, which shares the
back-off with the whole fleet.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from . import __version__
from .conf import AliasConfig
from .exceptions import (
    BadTokenResponse,
    InvalidClient,
    TokenEndpointError,
    TokenEndpointUnavailable,
    error_class_for,
)
from .tokens import Token

logger = logging.getLogger(__name__)

USER_AGENT = f"tradevest-django/{__version__} python-requests/{requests.__version__}"
#: Lifetime assumed when the answer has no ``expires_in`` (the spec's default).
DEFAULT_LIFETIME = 3600
#: Longest lifetime believed; Cognito issues at most one day.
MAX_LIFETIME = 86400
#: A token answer is a few hundred bytes; refuse to buffer more than this.
MAX_BODY = 64 * 1024
#: Clock differences below this are Date's one-second resolution plus latency, not skew.
SKEW_TOLERANCE = 2.0
BACKOFF_BASE = 0.5
BACKOFF_CAP = 4.0
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
_NOT_JSON = object()


@dataclass(frozen=True)
class FetchResult:
    """A token fetched from the endpoint, with how it went."""

    token: Token
    attempts: int
    duration: float
    #: The server's clock minus ours, in seconds (0 when within :data:`SKEW_TOLERANCE`).
    skew: float


class TokenEndpoint:
    """Requests tokens for one configuration (see :class:`~tradevest_django.conf.AliasConfig`)."""

    def __init__(
        self,
        config: AliasConfig,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
    ):
        self.config = config
        self._clock = clock or (lambda: time.time())
        self._sleep = sleep or (lambda seconds: time.sleep(seconds))
        self._rng = rng or random.Random()

    def fetch(self) -> FetchResult:
        """Request a new token, retrying transient failures within the configured bounds.

        Raises:
            TokenEndpointError: the server refused the request (never retried).
            BadTokenResponse: the server answered 200 with an unusable body.
            TokenEndpointUnavailable: network errors, timeouts, 429 or 5xx outlasted the retries.
        """
        config = self.config
        started = self._clock()
        deadline = started + config.token_deadline
        attempt = 0
        while True:
            attempt += 1
            sent = self._clock()
            remaining = max(deadline - sent, 0.001)
            connect, read = config.token_timeout
            status: int | None = None
            retry_after: float | None = None
            try:
                status, headers, body = self._post((min(connect, remaining), min(read, remaining)))
            except requests.RequestException as err:
                reason = type(err).__name__
            else:
                if status != 429 and status < 500:
                    received = self._clock()
                    skew = clock_skew(headers.get("Date"), received, sent=sent)
                    token = self._interpret(status, body, issued_at=sent + skew)
                    return FetchResult(token, attempt, received - started, skew)
                retry_after = _retry_after(headers.get("Retry-After"), self._clock())
                reason = f"HTTP {status}"
            delay = self._rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))
            if retry_after is not None:
                delay = max(delay, retry_after)
            out_of_time = self._clock() + delay >= deadline
            if attempt > config.token_retries or out_of_time:
                raise TokenEndpointUnavailable(
                    f"Tradevest's token endpoint at {config.auth_host} is unavailable for alias "
                    f"{config.alias!r}: {reason} after {attempt} attempt(s)"
                    + (f"; it asked to retry after {retry_after:.0f} s" if retry_after else "")
                    + ". Callers get a token again once it recovers.",
                    alias=config.alias,
                    status_code=status,
                    retry_after=retry_after,
                    attempts=attempt,
                )
            logger.warning(
                "Token request for alias %r to %s failed (%s, attempt %d of %d); "
                "retrying in %.2f s.",
                config.alias,
                config.auth_host,
                reason,
                attempt,
                config.token_retries + 1,
                delay,
            )
            self._sleep(delay)

    def _post(
        self, timeout: tuple[float, float]
    ) -> tuple[int, requests.structures.CaseInsensitiveDict[str], bytes]:
        config = self.config
        form = {
            "grant_type": "client_credentials",
            "client_id": config.client_id,
            "client_secret": config.client_secret,
        }
        if config.scope:
            form["scope"] = config.scope
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        # A fresh session per token request: tokens are fetched once per lifetime, and a
        # pool that is never kept can never be inherited across fork().
        with requests.Session() as session:
            response = session.post(
                config.token_url,
                data=form,
                headers=headers,
                timeout=timeout,
                verify=True,
                allow_redirects=False,
                stream=True,
            )
            with response:
                body = b""
                for chunk in response.iter_content(8192):
                    body += chunk
                    if len(body) > MAX_BODY and response.status_code != 200:
                        # An error page: its status says all we need; the body is never used.
                        return response.status_code, response.headers, b""
                    if len(body) > MAX_BODY:
                        raise BadTokenResponse(
                            f"The token endpoint at {config.auth_host} sent more than "
                            f"{MAX_BODY} bytes for alias {config.alias!r}; refusing to read it.",
                            alias=config.alias,
                        )
                return response.status_code, response.headers, body

    def _interpret(self, status: int, body: bytes, *, issued_at: float) -> Token:
        config = self.config
        if status == 200:
            data = _json(body)
            if data is _NOT_JSON:
                # Not chained to the JSON error: its ``doc`` attribute holds the whole body.
                raise BadTokenResponse(
                    f"Tradevest's token endpoint at {config.auth_host} answered 200 with a body "
                    f"that is not JSON ({len(body)} bytes) for alias {config.alias!r}.",
                    alias=config.alias,
                )
            return parse_token_response(data, issued_at=issued_at, alias=config.alias)
        data = _json(body)
        error = data.get("error") if isinstance(data, dict) else None
        description = data.get("error_description") if isinstance(data, dict) else None
        if status in (400, 401) and isinstance(error, str) and error:
            cls = error_class_for(error)
        elif status == 401:
            cls, error = InvalidClient, "invalid_client"
        else:
            cls, error = TokenEndpointError, (error if isinstance(error, str) else f"http_{status}")
        raise cls(
            alias=config.alias,
            error=error[:64],
            error_description=_clean(description, config.client_secret),
            status_code=status,
            auth_host=config.auth_host,
        )


def parse_token_response(data: Any, *, issued_at: float, alias: str | None = None) -> Token:
    """Turn a 200 answer's JSON into a :class:`Token`, or raise :class:`BadTokenResponse`.

    ``issued_at`` is the (server-clock) time the request was sent; expiry counts from it.
    """

    def bad(why: str) -> BadTokenResponse:
        return BadTokenResponse(
            f"Tradevest's token endpoint sent an unusable token for alias {alias!r}: {why}.",
            alias=alias,
        )

    if not isinstance(data, dict):
        raise bad("the body is not a JSON object")
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise bad("'access_token' is missing or not a non-empty string")
    if not _TOKEN_CHARS.fullmatch(access_token):
        raise bad("'access_token' contains characters a bearer token cannot contain")
    token_type = data.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise bad("'token_type' is not 'Bearer'")
    lifetime = _lifetime(data.get("expires_in", DEFAULT_LIFETIME))
    if lifetime is None:
        raise bad("'expires_in' is not a positive number of seconds")
    return Token(
        access_token=access_token,
        token_type=token_type,
        expires_at=datetime.fromtimestamp(issued_at + lifetime, tz=timezone.utc),
        lifetime=lifetime,
        source="endpoint",
    )


def _lifetime(value: object) -> int | None:
    """``expires_in`` as whole seconds (floats floored, digit strings accepted), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        # isdigit() alone accepts "²"; the length bound keeps int() away from huge strings.
        if not (text.isascii() and text.isdigit() and len(text) <= 12):
            return None
        value = int(text)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = int(value)
    if not isinstance(value, int) or value <= 0:
        return None
    return min(value, MAX_LIFETIME)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # deep nesting: not a token
        return _NOT_JSON


def _clean(description: object, secret: str) -> str | None:
    if not isinstance(description, str) or not description:
        return None
    text = "".join(ch if ch.isprintable() else " " for ch in description)[:200]
    return text.replace(secret, "***") if secret else text


def _retry_after(value: str | None, now: float) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value) if len(value) <= 12 else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(when.timestamp() - now, 0.0)


def clock_skew(date_header: str | None, received: float, sent: float | None = None) -> float:
    """The server's clock minus ours, from a ``Date`` header; 0 when they may agree.

    The server wrote ``Date`` (whole seconds, rounded down) somewhere between ``sent`` and
    ``received``, so the skew lies between ``Date - received`` and ``Date + 1 - sent``. Zero is
    returned when that range (widened by :data:`SKEW_TOLERANCE`) contains it, else its end
    nearest to zero: a slow round trip never reads as a skew.
    """
    if not date_header:
        return 0.0
    try:
        server_time = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    low = server_time - received
    high = server_time + 1.0 - (received if sent is None else sent)
    if low - SKEW_TOLERANCE <= 0.0 <= high + SKEW_TOLERANCE:
        return 0.0
    return low if low > 0 else high
