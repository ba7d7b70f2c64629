"""Exceptions raised by tradevest-django.

Two families, on purpose:

* :class:`TradevestError` and its subclasses: something went wrong talking to Tradevest. Celery
  users may retry on :class:`TokenEndpointUnavailable` (``retryable = True``); the OAuth errors
  mean the request or the credentials are wrong and retrying cannot help.
* :class:`TradevestConfigurationError`: the ``TRADEVEST`` setting is wrong. It subclasses Django's
  ``ImproperlyConfigured`` and *not* :class:`TradevestError`, so that
  ``autoretry_for=(TradevestError,)`` never retries a misconfiguration.

No message built here ever contains the client secret, an access token or a raw response body.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "BadTokenResponse",
    "InvalidClient",
    "InvalidGrant",
    "InvalidRequest",
    "InvalidScope",
    "SecretUnavailable",
    "TokenEndpointError",
    "TokenEndpointUnavailable",
    "TradevestConfigurationError",
    "TradevestError",
    "UnauthorizedClient",
    "UnsupportedGrantType",
    "error_class_for",
]


class TradevestConfigurationError(ImproperlyConfigured):
    """The ``TRADEVEST`` setting (or explicit ``TokenManager`` options) cannot be used.

    ``alias`` and ``key`` name what is wrong; the message says how to fix it.
    """

    def __init__(self, message: str, *, alias: str | None = None, key: str | None = None):
        super().__init__(message)
        self.alias = alias
        self.key = key


class TradevestError(Exception):
    """Base class of every runtime error of tradevest-django."""

    #: Whether trying the same thing again later may succeed.
    retryable: bool = False

    def __init__(self, message: str, *, alias: str | None = None):
        super().__init__(message)
        self.alias = alias


class TokenEndpointError(TradevestError):
    """The token endpoint answered with an OAuth 2.0 error (RFC 6749 section 5.2).

    One subclass exists per error code; an unknown code raises this class itself.

    Attributes:
        error: the ``error`` code the server sent, e.g. ``"invalid_client"``.
        error_description: the server's ``error_description``, when it sent one.
        status_code: the HTTP status of the answer (400, or 401 for ``invalid_client``).
        remembered: ``True`` when this error was not received just now but remembered from a
            recent identical answer, shared by the whole fleet through the cache, to avoid
            hammering the token endpoint with credentials it has just rejected.
    """

    error_code: str = ""
    #: What to do about it, appended to the message.
    hint: str = "Check the request tradevest-django sends against your Tradevest onboarding data."

    def __init__(
        self,
        message: str | None = None,
        *,
        alias: str | None = None,
        error: str | None = None,
        error_description: str | None = None,
        status_code: int | None = None,
        auth_host: str | None = None,
        remembered: bool = False,
    ):
        self.error = error or self.error_code or "unknown_error"
        self.error_description = error_description
        self.status_code = status_code
        self.auth_host = auth_host
        self.remembered = remembered
        if message is None:
            message = self._default_message(alias)
        super().__init__(message, alias=alias)

    def _default_message(self, alias: str | None) -> str:
        where = f" at {self.auth_host}" if self.auth_host else ""
        status = f"HTTP {self.status_code}, " if self.status_code else ""
        text = (
            f"Tradevest's token endpoint{where} refused the token request of alias "
            f"{alias!r} ({status}error {self.error!r})"
        )
        if self.error_description:
            text += f": {self.error_description}"
        if self.remembered:
            text += " [remembered from a recent identical answer; not asked again yet]"
        return f"{text}. {self.hint}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(alias={self.alias!r}, error={self.error!r}, "
            f"status_code={self.status_code!r})"
        )


class InvalidRequest(TokenEndpointError):
    """``invalid_request``: the token request is malformed."""

    error_code = "invalid_request"
    hint = (
        "The token request was malformed: check TOKEN_PATH and AUTH_URL, and that no proxy "
        "rewrites the request body."
    )


class InvalidClient(TokenEndpointError):
    """``invalid_client``: unknown client id or wrong secret for this environment."""

    error_code = "invalid_client"
    hint = (
        "Check CLIENT_ID and CLIENT_SECRET (e.g. the TRADEVEST_CLIENT_ID / "
        "TRADEVEST_CLIENT_SECRET environment variables, or your prefix's) and that they belong "
        "to the configured ENVIRONMENT."
    )


class InvalidGrant(TokenEndpointError):
    """``invalid_grant``: the grant was refused."""

    error_code = "invalid_grant"
    hint = "Ask Tradevest whether the client credentials grant is enabled for this client."


class UnauthorizedClient(TokenEndpointError):
    """``unauthorized_client``: this client may not use the client credentials grant."""

    error_code = "unauthorized_client"
    hint = "Ask Tradevest to enable the client credentials grant for this CLIENT_ID."


class UnsupportedGrantType(TokenEndpointError):
    """``unsupported_grant_type``: the server does not support this grant type."""

    error_code = "unsupported_grant_type"
    hint = "Check AUTH_URL and TOKEN_PATH: this server does not issue client credentials tokens."


class InvalidScope(TokenEndpointError):
    """``invalid_scope`` (RFC 6749; not in Tradevest's list): the requested scope is unknown."""

    error_code = "invalid_scope"
    hint = "Check SCOPE: leave it unset unless Tradevest gave you a scope to request."


_ERROR_CLASSES: dict[str, type[TokenEndpointError]] = {
    cls.error_code: cls
    for cls in (
        InvalidRequest,
        InvalidClient,
        InvalidGrant,
        UnauthorizedClient,
        UnsupportedGrantType,
        InvalidScope,
    )
}


def error_class_for(error: str) -> type[TokenEndpointError]:
    """Return the exception class for an OAuth ``error`` code (the base class if unknown)."""
    return _ERROR_CLASSES.get(error, TokenEndpointError)


class TokenEndpointUnavailable(TradevestError):
    """The token endpoint could not be reached or kept failing (network, timeout, 429, 5xx).

    Raised after the configured retries, or at once while the fleet is backing off after such
    failures. Retrying later is the right reaction (``retryable = True``).

    Attributes:
        status_code: the HTTP status of the last answer, if there was one.
        retry_after: seconds the server asked us to wait (``Retry-After``), if it did.
        attempts: how many requests this call made (0 when backing off).
        remembered: ``True`` when no request was made because the fleet is backing off after
            a failure moments ago.
        cause: what went wrong on the network, when that is what failed: the ``requests``
            error's class and innermost message, e.g. ``"ConnectionError: [Errno 111]
            Connection refused"`` (the error itself is not chained: it holds the secret).
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        alias: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        attempts: int = 0,
        remembered: bool = False,
        cause: str | None = None,
    ):
        super().__init__(message, alias=alias)
        self.status_code = status_code
        self.retry_after = retry_after
        self.attempts = attempts
        self.remembered = remembered
        self.cause = cause


class BadTokenResponse(TradevestError):
    """The token endpoint answered 200 with something that is not a usable token.

    The message says what was wrong with the answer but never repeats the body.
    """


class SecretUnavailable(TradevestError):
    """A ``CLIENT_SECRET`` (or fallback) given as a callable raised, hung or returned no string.

    The message names the alias and the setting, never the value. Retrying later may help (a
    secret manager that was briefly unreachable), so ``retryable = True``.
    """

    retryable = True
