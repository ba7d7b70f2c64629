"""``manage.py tradevest_token``: obtain each alias's token and say where it came from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tradevest_django.api import get_manager
from tradevest_django.conf import AliasConfig, configured_aliases
from tradevest_django.exceptions import (
    BadTokenResponse,
    TokenEndpointError,
    TokenEndpointUnavailable,
    TradevestConfigurationError,
    TradevestError,
)
from tradevest_django.manager import TokenManager
from tradevest_django.tokens import Token

EPILOG = (
    "Exit status: 0 when every alias got a token; 1 when any alias failed (the others are "
    "still reported; each failure is explained on stderr); 2 for a usage or configuration "
    "error (unknown alias, invalid TRADEVEST setting, --print-token with several aliases)."
)
#: The keys of each ``--json`` object, in order; every object has all of them.
JSON_KEYS = (
    "ok",
    "alias",
    "environment",
    "auth_host",
    "client_id",
    "source",
    "expires_at",
    "expires_in",
    "fingerprint",
    "secret",
    "error",
    "error_code",
    "message",
    "hint",
)


@dataclass(frozen=True)
class Outcome:
    """What happened for one alias: a token (and whether this run requested it) or an error."""

    config: AliasConfig
    token: Token | None = None
    requested: bool = False
    error: TradevestError | None = None
    #: Which configured secret serves (``"CLIENT_SECRET"``, ``"CLIENT_SECRET_FALLBACKS[0]"``).
    secret: str | None = None

    @property
    def hint(self) -> str | None:
        """The likely fix of :attr:`error` (``None`` when there is no error)."""
        return " ".join(self._hints()) or None

    def _hints(self) -> list[str]:
        err = self.error
        # A remembered failure was not asked again (the fleet backs off); --refresh asks now.
        if isinstance(err, TokenEndpointError):
            hints, remembered = [err.hint], err.remembered
        elif isinstance(err, TokenEndpointUnavailable):
            hints = [
                f"Check that this machine can reach {self.config.auth_host} (DNS, proxy, "
                "firewall) and try again later."
            ]
            remembered = err.remembered
        elif isinstance(err, BadTokenResponse):
            hints = [
                "Check AUTH_URL and TOKEN_PATH: what answered is not a Tradevest token endpoint "
                "(a proxy or a captive portal?)."
            ]
            remembered = False
        else:
            return []
        return [*hints, "Run with --refresh to ask again now."] if remembered else hints

    def as_json(self) -> dict[str, Any]:
        """The object printed by ``--json``, with every key of :data:`JSON_KEYS`."""
        token, err = self.token, self.error
        return {
            "ok": err is None,
            "alias": self.config.alias,
            "environment": self.config.environment,
            "auth_host": self.config.auth_host,
            "client_id": self.config.masked_client_id,
            "source": ("endpoint" if self.requested else "cache") if token else None,
            "expires_at": _iso(token.expires_at) if token else None,
            "expires_in": max(int(token.seconds_left), 0) if token else None,
            "fingerprint": token.fingerprint if token else None,
            "secret": self.secret if token else None,
            "error": type(err).__name__ if err else None,
            "error_code": err.error if isinstance(err, TokenEndpointError) else None,
            "message": str(err) if err else None,
            "hint": self.hint,
        }

    def diagnostic(self) -> str:
        """The stderr line of a failure: alias, host, error (code) and the likely fix."""
        err = self.error
        code = f" ({err.error})" if isinstance(err, TokenEndpointError) else ""
        where = _where(self.config)
        text = f"{self.config.alias}: {type(err).__name__}{code} from {where}: {err}"
        return " ".join([text, *(hint for hint in self._hints() if hint not in text)])


class Command(BaseCommand):
    help = (
        "Obtain an access token for each TRADEVEST alias and report where it came from and "
        "when it expires (never the token or the secret)."
    )
    requires_system_checks = ()  # it must diagnose a broken set-up, not refuse it

    def add_arguments(self, parser: CommandParser) -> None:
        parser.epilog = EPILOG
        parser.add_argument(
            "--alias",
            action="append",
            dest="aliases",
            metavar="NAME",
            help="Only this TRADEVEST alias (repeatable). Default: every configured alias.",
        )
        parser.add_argument(
            "--refresh",
            action="store_true",
            help=(
                "Request a new token even if one is cached, and share it with the fleet (the "
                "cached one is replaced only if this succeeds). This is what proves that the "
                "credentials work: a cached token is reported as it is."
            ),
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help=(
                "Print one JSON array with one object per alias, with the keys "
                f"{', '.join(JSON_KEYS)} (null when not applicable)."
            ),
        )
        parser.add_argument(
            "--print-token",
            action="store_true",
            help=(
                "SENSITIVE: print only the raw access token of one alias (the 'default' alias or "
                'the single --alias), for curl -H "Authorization: Bearer $(python manage.py '
                'tradevest_token --print-token)". Anyone who sees it can call the API as you '
                "until it expires. Not with --json."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        names = list(dict.fromkeys(options["aliases"] or ()))
        if options["print_token"]:
            if options["json"]:
                raise CommandError("--print-token and --json cannot be combined.", returncode=2)
            if len(names) > 1:
                raise CommandError(
                    "--print-token prints the token of exactly one alias; give --alias once.",
                    returncode=2,
                )
            [manager] = self._managers(names or ["default"])
            self._print_token(manager, refresh=options["refresh"])
            return
        self._report(
            self._managers(names or configured_aliases() or ["default"]),
            as_json=options["json"],
            refresh=options["refresh"],
        )

    def _report(self, managers: list[TokenManager], *, as_json: bool, refresh: bool) -> None:
        rows = [(m.alias, _where(m.config), m.config.masked_client_id) for m in managers]
        widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
        outcomes = []
        for manager in managers:
            outcome = _obtain(manager, refresh=refresh)
            outcomes.append(outcome)
            if outcome.error is not None:
                self.stderr.write(outcome.diagnostic())
            if not as_json:
                self.stdout.write(self._line(outcome, widths))
        if as_json:
            self.stdout.write(json.dumps([outcome.as_json() for outcome in outcomes], indent=2))
        failed = [outcome.config.alias for outcome in outcomes if outcome.error is not None]
        if failed:
            raise CommandError(
                f"{len(failed)} of {len(outcomes)} alias(es) got no token: {', '.join(failed)}.",
                returncode=1,
            )

    def _managers(self, aliases: list[str]) -> list[TokenManager]:
        try:
            return [get_manager(alias) for alias in aliases]
        except TradevestConfigurationError as err:
            raise CommandError(str(err), returncode=2) from err

    def _print_token(self, manager: TokenManager, *, refresh: bool) -> None:
        outcome = _obtain(manager, refresh=refresh)
        if outcome.token is None:
            self.stderr.write(outcome.diagnostic())
            raise CommandError(f"Alias {manager.alias!r} got no token.", returncode=1)
        self.stdout.write(outcome.token.access_token)

    def _line(self, outcome: Outcome, widths: list[int]) -> str:
        config, token = outcome.config, outcome.token
        columns = [
            config.alias.ljust(widths[0]),
            _where(config).ljust(widths[1]),
            f"client {config.masked_client_id.ljust(widths[2])}",
        ]
        if token is None:
            err = outcome.error
            reason = err.error if isinstance(err, TokenEndpointError) else type(err).__name__
            return "  ".join([*columns, self.style.ERROR(f"FAILED ({reason})")])
        status = "new request" if outcome.requested else "cached"
        expires = token.expires_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        fallback = (
            []
            if outcome.secret in (None, "CLIENT_SECRET")
            else [self.style.WARNING(f"with {outcome.secret}")]
        )
        return "  ".join(
            [
                *columns,
                self.style.SUCCESS(status.ljust(11)),
                f"expires {expires} (in {_duration(token.seconds_left)})",
                f"fingerprint {token.fingerprint}",
                *fallback,
            ]
        )


def _obtain(manager: TokenManager, *, refresh: bool) -> Outcome:
    """Get (or with ``refresh``, request) the alias's token, noting whether this call fetched it."""
    try:
        if refresh:
            token = manager.refresh()
            return Outcome(manager.config, token, requested=True, secret=manager.secret_in_use)
        # In a long-lived process (call_command) the manager may already hold a token it once
        # requested itself; reusing it is not a new request.
        held = manager.peek()
        token = manager.get_token()
    except TradevestError as err:
        return Outcome(manager.config, error=err)
    requested = token.source == "endpoint" and (
        held is None or held.access_token != token.access_token
    )
    return Outcome(manager.config, token, requested=requested, secret=manager.secret_in_use)


def _where(config: AliasConfig) -> str:
    host = config.auth_host
    return f"{config.environment} ({host})" if config.environment else host


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    hours, rest = divmod(max(int(seconds), 0), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
