"""The token request itself: one HTTP exchange with Tradevest's token endpoint, and its retries.

Retries are a small loop here rather than urllib3's ``Retry``: the loop must stop at a total
deadline (urllib3 sleeps as long as any ``Retry-After`` says), use an injectable clock and sleep
so tests never really wait, and hand ``Retry-After`` to the token manager, which shares the
back-off with the whole fleet. The deadline also bounds each answer, however slowly it arrives
(:mod:`tradevest_django.deadline`).

No frame here that raises ever holds the client secret or an answer's body in a local variable:
error reports show those (Django's debug page and error e-mails, error trackers).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from django.views.decorators.debug import sensitive_variables
from requests.adapters import HTTPAdapter

from . import telemetry
from ._version import __version__
from .conf import AliasConfig
from .deadline import Deadline, DeadlineAdapter
from .exceptions import (
    BadTokenResponse,
    InvalidClient,
    TokenEndpointError,
    TokenEndpointUnavailable,
    TradevestError,
    error_class_for,
)
from .secrets import Secret, Secrets
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
    #: The server's clock minus ours, in seconds (0 when within :data:`SKEW_TOLERANCE`), or
    #: ``None`` when the answer had no usable ``Date`` header (nothing learned).
    skew: float | None


@dataclass(frozen=True)
class _Answer:
    """What one exchange with the endpoint came to; the body itself is never kept."""

    status: int | None = None
    date: str | None = None
    retry_after: str | None = None
    outcome: Token | TradevestError | None = None
    failure: str | None = None


class TokenEndpoint:
    """Requests tokens for one configuration (see :class:`~tradevest_django.conf.AliasConfig`).

    ``clock``, ``sleep`` and ``rng`` exist for tests; ``adapter`` builds the ``requests``
    transport adapter of each token request (a test may hand in one that never touches the
    network).
    """

    def __init__(
        self,
        config: AliasConfig,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        rng: random.Random | None = None,
        adapter: Callable[[], HTTPAdapter] | None = None,
    ):
        self.config = config
        self._clock = clock or (lambda: time.time())
        self._sleep = sleep or (lambda seconds: time.sleep(seconds))
        self._rng = rng or random.Random()
        self._adapter = adapter or (lambda: DeadlineAdapter(max_retries=0))

    def __repr__(self) -> str:
        return f"<TokenEndpoint alias={self.config.alias!r} url={self.config.token_url!r}>"

    def fetch(self, secret: Secret | None = None) -> FetchResult:
        """Request a new token, retrying transient failures within the configured bounds.

        ``secret`` is the client secret to send (by default ``CLIENT_SECRET``, which must then
        be a string).

        ``TOKEN_DEADLINE`` bounds the whole call: every attempt, every wait between attempts,
        and each answer however slowly the server sends it.

        Raises:
            TokenEndpointError: the server refused the request (never retried).
            BadTokenResponse: the server answered 200 with an unusable body.
            TokenEndpointUnavailable: network errors, timeouts, 429 or 5xx outlasted the retries.
        """
        # Errors are raised here and only here, never in a frame that held the request form or
        # the answer's body: error reports (Django's debug page, error trackers) show the local
        # variables of every frame of a traceback.
        config = self.config
        if secret is None:
            secret = Secrets(config).read(0)
        started = self._clock()
        deadline = started + config.token_deadline
        attempt = 0
        skew: float | None = None
        with (
            Deadline(config.token_deadline) as watchdog,
            telemetry.Fetch(config.alias, config.auth_host).span() as report,
        ):
            while True:
                attempt += 1
                sent = self._clock()
                answer = self._exchange(secret, sent, max(deadline - sent, 0.001))
                received = self._clock()
                report.attempt(answer.status, _error_type(answer))
                if answer.date is not None:
                    skew = clock_skew(answer.date, received, sent=sent)
                if isinstance(answer.outcome, TradevestError):
                    raise answer.outcome
                if isinstance(answer.outcome, Token):
                    token = replace(answer.outcome, skew=skew or 0.0)
                    return FetchResult(token, attempt, received - started, skew)
                retry_after = _retry_after(answer.retry_after, received)
                reason = answer.failure or f"HTTP {answer.status}"
                cause = answer.failure
                if watchdog.expired:
                    # Whatever the cut connection raised (a half-read status line...) is noise.
                    reason = cause = (
                        f"no complete answer within TOKEN_DEADLINE ({config.token_deadline:g} s)"
                    )
                delay = self._rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))
                if retry_after is not None:
                    delay = max(delay, retry_after)
                out_of_time = watchdog.expired or self._clock() + delay >= deadline
                if attempt > config.token_retries or out_of_time:
                    raise TokenEndpointUnavailable(
                        f"Tradevest's token endpoint at {config.auth_host} is unavailable for "
                        f"alias {config.alias!r}: {reason} after {attempt} attempt(s)"
                        + (f"; it asked to retry after {retry_after:.0f} s" if retry_after else "")
                        + ". Callers get a token again once it recovers.",
                        alias=config.alias,
                        status_code=answer.status,
                        retry_after=retry_after,
                        attempts=attempt,
                        cause=cause,
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

    def _exchange(self, secret: Secret, sent: float, remaining: float) -> _Answer:
        """One token request and its answer, interpreted; raises nothing for a failed exchange."""
        connect, read = self.config.token_timeout
        try:
            status, headers, body = self._post(
                secret, (min(connect, remaining), min(read, remaining))
            )
        except requests.RequestException as err:
            # Only a description: the exception's frames and its request hold the form.
            return _Answer(failure=describe_cause(err, secret.value))
        date = headers.get("Date")
        if status == 429 or status >= 500:
            return _Answer(status, date, headers.get("Retry-After"))
        outcome = self._interpret(status, body, issued_at=sent, secret=secret)
        return _Answer(status, date, outcome=outcome)

    def _post(
        self, secret: Secret, timeout: tuple[float, float]
    ) -> tuple[int, requests.structures.CaseInsensitiveDict[str], bytes | None]:
        """POST the form; the status, headers and body (``None`` when over :data:`MAX_BODY`)."""
        config = self.config
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        # A fresh session per token request: tokens are fetched once per lifetime, and a
        # pool that is never kept can never be inherited across fork().
        with requests.Session() as session:
            for prefix in ("https://", "http://"):
                session.mount(prefix, self._adapter())
            response = session.post(
                config.token_url,
                data=_form(config, secret),  # no local variable here holds the secret's value
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
                    if len(body) > MAX_BODY:
                        # An error page's status says all we need; a token answer this large is
                        # not a token. Either way the body is never used.
                        return response.status_code, response.headers, None
                return response.status_code, response.headers, body

    def _interpret(
        self, status: int, body: bytes | None, *, issued_at: float, secret: Secret
    ) -> Token | TradevestError:
        """The token, or the error to raise, from a final (non-retried) answer.

        ``issued_at`` is when the request was sent, by this host's clock.
        """
        config = self.config
        if status == 200:
            if body is None:
                return BadTokenResponse(
                    f"The token endpoint at {config.auth_host} sent more than {MAX_BODY} bytes "
                    f"for alias {config.alias!r}; refusing to read it.",
                    alias=config.alias,
                )
            data = _json(body)
            if data is _NOT_JSON:
                return BadTokenResponse(
                    f"Tradevest's token endpoint at {config.auth_host} answered 200 with a body "
                    f"that is not JSON ({len(body)} bytes) for alias {config.alias!r}.",
                    alias=config.alias,
                )
            return _parse(data, issued_at=issued_at, alias=config.alias)
        data = _json(body or b"")
        error = data.get("error") if isinstance(data, dict) else None
        description = data.get("error_description") if isinstance(data, dict) else None
        if status in (400, 401) and isinstance(error, str) and error:
            cls = error_class_for(error)
        elif status == 401:
            cls, error = InvalidClient, "invalid_client"
        else:
            cls, error = TokenEndpointError, (error if isinstance(error, str) else f"http_{status}")
        return cls(
            alias=config.alias,
            error=error[:64],
            error_description=_clean(description, secret.value),
            status_code=status,
            auth_host=config.auth_host,
        )


def _error_type(answer: _Answer) -> str | None:
    """``error.type`` of one exchange: ``None`` for a token."""
    if isinstance(answer.outcome, Token):
        return None
    if isinstance(answer.outcome, TradevestError):
        return telemetry.error_type(answer.outcome)
    return TokenEndpointUnavailable.__name__  # retried, or the fetch's final outage


@sensitive_variables("form")
def _form(config: AliasConfig, secret: Secret) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_id": config.client_id,
        "client_secret": secret.value,
    }
    if config.scope:
        form["scope"] = config.scope
    return form


def parse_token_response(
    data: Any, *, issued_at: float, alias: str | None = None, skew: float = 0.0
) -> Token:
    """Turn a 200 answer's JSON into a :class:`Token`, or raise :class:`BadTokenResponse`.

    ``issued_at`` is when the request was sent, by this host's clock; expiry counts from it.
    ``skew`` is Tradevest's clock minus this host's, when known.
    """
    token = _parse(data, issued_at=issued_at, alias=alias)
    if isinstance(token, BadTokenResponse):
        raise token
    return replace(token, skew=skew)


@sensitive_variables("data", "access_token")
def _parse(data: Any, *, issued_at: float, alias: str | None) -> Token | BadTokenResponse:
    """The token, or the error to raise (returned, so this frame is never in its traceback)."""

    def bad(why: str) -> BadTokenResponse:
        return BadTokenResponse(
            f"Tradevest's token endpoint sent an unusable token for alias {alias!r}: {why}.",
            alias=alias,
        )

    if not isinstance(data, dict):
        return bad("the body is not a JSON object")
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        return bad("'access_token' is missing or not a non-empty string")
    if not _TOKEN_CHARS.fullmatch(access_token):
        return bad("'access_token' contains characters a bearer token cannot contain")
    token_type = data.get("token_type", "Bearer")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        return bad("'token_type' is not 'Bearer'")
    lifetime = _lifetime(data.get("expires_in", DEFAULT_LIFETIME))
    if lifetime is None:
        return bad("'expires_in' is not a positive number of seconds")
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


def clock_skew(date_header: str | None, received: float, sent: float | None = None) -> float | None:
    """The server's clock minus ours, from a ``Date`` header; 0 when they may agree.

    The server wrote ``Date`` (whole seconds, rounded down) somewhere between ``sent`` and
    ``received``, so the skew lies between ``Date - received`` and ``Date + 1 - sent``. Zero is
    returned when that range (widened by :data:`SKEW_TOLERANCE`) contains it, else its end
    nearest to zero: a slow round trip never reads as a skew. ``None`` when there is no usable
    ``Date``: that is no news, and whatever was learned before still holds.
    """
    if not date_header:
        return None
    try:
        server_time = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    low = server_time - received
    high = server_time + 1.0 - (received if sent is None else sent)
    if low - SKEW_TOLERANCE <= 0.0 <= high + SKEW_TOLERANCE:
        return 0.0
    return low if low > 0 else high


# urllib3 names the connection object before the reason: "<...HTTPConnection object at 0x...>: "
# or "HTTPSConnection(host='...', port=443): ".
_CONNECTION = re.compile(r"(<[^<>]*\bobject at 0x[0-9a-f]+>|\w+\(host=[^()]*\)):?\s*")


def describe_cause(err: BaseException, secret: str = "") -> str:
    """A short, safe description of a ``requests`` error: its class and innermost message.

    ``"ConnectionError: Failed to establish a new connection: [Errno 111] Connection refused"``.
    The error itself is never chained to the package's own: its frames and its request hold the
    token request's form, client secret included.
    """
    inner: BaseException = err
    for _ in range(8):  # requests wraps urllib3's MaxRetryError, which wraps the real reason
        nested = getattr(inner, "reason", None)
        if not isinstance(nested, BaseException):
            nested = next((arg for arg in inner.args if isinstance(arg, BaseException)), None)
        if nested is None:
            break
        inner = nested
    message = _CONNECTION.sub("", str(inner)).strip(" '\"") or type(inner).__name__
    if secret:
        message = message.replace(secret, "***")
    message = "".join(ch if ch.isprintable() else " " for ch in message)[:200]
    return f"{type(err).__name__}: {message}"
