"""Where the client secret comes from, and the secrets a rotation keeps at hand.

``CLIENT_SECRET`` is a string, or a callable that returns the current secret (a mounted file,
a secret manager); ``CLIENT_SECRET_FALLBACKS`` lists older or not-yet-active secrets, each a
string or a callable too. Callables are called when a token is needed (never on the hot path)
and again after Tradevest refused a secret, each call bounded in time.

A :class:`Secret` carries one value through the token request; its ``repr`` never shows it, so
error reports that show local variables show ``<Secret CLIENT_SECRET>`` instead.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.utils.crypto import salted_hmac

from .conf import AliasConfig
from .exceptions import SecretUnavailable

logger = logging.getLogger(__name__)

SecretSource = str | Callable[[], str]


@dataclass(frozen=True)
class Secret:
    """One client secret, with where it came from: ``position`` 0 is ``CLIENT_SECRET``, ``n``
    is ``CLIENT_SECRET_FALLBACKS[n - 1]``."""

    value: str = field(repr=False, compare=False)
    position: int
    #: A keyed hash (HMAC under SECRET_KEY): names the secret in the cache, never reveals it.
    fingerprint: str

    def __repr__(self) -> str:
        return f"<Secret {self.setting}>"

    @property
    def setting(self) -> str:
        """Where it is configured: ``"CLIENT_SECRET"`` or ``"CLIENT_SECRET_FALLBACKS[0]"``."""
        return _setting(self.position)


def secret_fingerprint(value: str) -> str:
    """The keyed hash that names a secret in the cache (useless without ``SECRET_KEY``)."""
    return salted_hmac("tradevest_django.secrets", value, algorithm="sha256").hexdigest()[:24]


class Secrets:
    """The configured secrets of one alias, read when needed."""

    def __init__(self, config: AliasConfig):
        self._config = config
        self._sources: tuple[SecretSource, ...] = (
            config.client_secret,
            *config.client_secret_fallbacks,
        )
        self._lock = threading.Lock()
        self._pending: dict[int, concurrent.futures.Future[str]] = {}

    def __repr__(self) -> str:
        return f"<Secrets alias={self._config.alias!r} count={len(self._sources)}>"

    @property
    def rotating(self) -> bool:
        """Whether there is more than one secret, or one that may change (a callable)."""
        return len(self._sources) > 1 or callable(self._sources[0])

    def candidates(self) -> list[Secret]:
        """Every configured secret that can be read, ``CLIENT_SECRET`` first.

        Callables are called now. One that fails is left out with a warning, as long as another
        secret can be read: a secret manager's missing previous version must not stop tokens.

        Raises:
            SecretUnavailable: no secret could be read (the first failure).
        """
        seen: set[str] = set()
        found = []
        failures: list[SecretUnavailable] = []
        for position in range(len(self._sources)):
            try:
                secret = self.read(position)
            except SecretUnavailable as err:
                failures.append(err)
                continue
            if secret.fingerprint not in seen:  # the same secret twice is tried once
                seen.add(secret.fingerprint)
                found.append(secret)
        if not found:
            raise failures[0]
        for failure in failures:
            logger.warning("%s Trying the other secrets.", failure)
        return found

    def is_callable(self, position: int) -> bool:
        return callable(self._sources[position])

    def read(self, position: int) -> Secret:
        """The secret at ``position``, calling it if it is a callable."""
        source = self._sources[position]
        value = source if isinstance(source, str) else self._call(position, source)
        # A secret read from a file (FileAwareEnv, a mounted secret) often ends in a newline
        # that is no part of it.
        value = value.strip("\r\n")
        return Secret(value, position, secret_fingerprint(value))

    def values(self) -> Sequence[str]:
        """The string secrets (not the callables'), to keep out of messages."""
        return [source for source in self._sources if isinstance(source, str)]

    def _call(self, position: int, source: Callable[[], str]) -> str:
        where = _setting(position)
        timeout = self._config.token_deadline
        with self._lock:
            # One call at a time per secret: a provider that hangs is waited for again, not
            # called again, so hung threads never pile up.
            pending = self._pending.get(position)
            if pending is None:
                pending = self._pending[position] = concurrent.futures.Future()
                threading.Thread(
                    target=_run, args=(source, pending), name="tradevest-secret", daemon=True
                ).start()
        try:
            value = pending.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise SecretUnavailable(
                f"{where} of alias {self._config.alias!r} (a callable) did not return within "
                f"{timeout:g} s (TOKEN_DEADLINE).",
                alias=self._config.alias,
            ) from None
        except Exception as err:
            self._forget(position, pending)
            # Only the class: the provider's message may quote what it read.
            raise SecretUnavailable(
                f"{where} of alias {self._config.alias!r} (a callable) raised "
                f"{type(err).__name__}; no token can be requested with it.",
                alias=self._config.alias,
            ) from None
        self._forget(position, pending)
        if not isinstance(value, str) or not value:
            raise SecretUnavailable(
                f"{where} of alias {self._config.alias!r} (a callable) returned "
                f"{type(value).__name__}, not a non-empty string.",
                alias=self._config.alias,
            )
        return value

    def _forget(self, position: int, pending: concurrent.futures.Future[str]) -> None:
        with self._lock:
            if self._pending.get(position) is pending:
                del self._pending[position]


def _run(source: Callable[[], str], result: concurrent.futures.Future[str]) -> None:
    try:
        result.set_result(source())
    except BaseException as err:  # handed to the caller, who reports it
        result.set_exception(err)


def _setting(position: int) -> str:
    return "CLIENT_SECRET" if position == 0 else f"CLIENT_SECRET_FALLBACKS[{position - 1}]"
