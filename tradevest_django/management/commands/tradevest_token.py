"""``manage.py tradevest_token``: obtain each alias's token and say where it came from."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    DjangoHelpFormatter,
)

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
from tradevest_django.sharing import Sharing, cache_sharing
from tradevest_django.tokens import Token

EPILOG = (
    "Exit status: 0 when every alias got a token; 1 when any alias failed, or with --strict "
    "when any alias's cache is not shared or did not answer (the others are still reported; "
    "each problem is explained on stderr); 2 for a usage or configuration error: an unknown "
    "alias, an invalid TRADEVEST setting, --print-token with several aliases, --print-token "
    "with --json, --print-token with --strict. With --json, each of these errors is JSON on "
    "stdout too."
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
    "cache",
    "error",
    "error_code",
    "message",
    "hint",
)


@dataclass(frozen=True)
class Outcome:
    """What happened for one alias: a token (and whether this run requested it) or an error."""

    config: AliasConfig
    #: How the alias's cache shares the token (asked after the token attempt).
    sharing: Sharing
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
            "cache": self.sharing.as_json(),
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


class _HelpFormatter(DjangoHelpFormatter):
    """Django's help layout, without breaking a line inside an option name (``--print-``)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(
            " ".join(text.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
        )

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class Command(BaseCommand):
    help = (
        "Obtain an access token for each TRADEVEST alias and report where it came from, when "
        "it expires and how the fleet shares it (never the token or the secret)."
    )
    requires_system_checks = ()  # it must diagnose a broken set-up, not refuse it

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        return super().create_parser(prog_name, subcommand, **kwargs)

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
            "--strict",
            action="store_true",
            help=(
                "Exit with 1 also when an alias's cache is not shared (local-memory, dummy) or "
                "did not answer: the deploy check that the fleet shares one token."
            ),
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help=(
                "Print one JSON array with one object per alias, with the keys "
                f"{', '.join(JSON_KEYS)} (null when not applicable); cache is an object with "
                "the keys alias, backend, shared and reachable. A usage or configuration error "
                "prints one object with ok false and error, message and hint."
            ),
        )
        parser.add_argument(
            "--print-token",
            action="store_true",
            help=(
                "SENSITIVE: print only the raw access token of one alias (the 'default' alias or "
                'the single --alias), for curl -H "Authorization: Bearer $(python manage.py '
                'tradevest_token --print-token)". Anyone who sees it can call the API as you '
                "until it expires. Not with --json or --strict."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self._handle(options)
        except CommandError as err:
            # A monitor parses stdout: it gets JSON for a usage or configuration error too.
            if options["json"] and err.returncode == 2:
                self.stdout.write(json.dumps([_error_json(err)], indent=2))
            raise

    def _handle(self, options: dict[str, Any]) -> None:
        names = list(dict.fromkeys(options["aliases"] or ()))
        if options["print_token"]:
            if options["json"] or options["strict"]:
                raise CommandError(
                    "--print-token cannot be combined with --json or --strict.", returncode=2
                )
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
            strict=options["strict"],
        )

    def _report(
        self, managers: list[TokenManager], *, as_json: bool, refresh: bool, strict: bool
    ) -> None:
        rows = [(m.alias, _where(m.config), m.config.masked_client_id) for m in managers]
        widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
        outcomes = []
        for manager in managers:
            outcome = _obtain(manager, refresh=refresh)
            outcomes.append(outcome)
            if outcome.error is not None:
                self.stderr.write(outcome.diagnostic())
            if strict and not outcome.sharing.ok:
                self.stderr.write(outcome.sharing.diagnostic(manager.alias))
            if not as_json:
                self.stdout.write(self._line(outcome, widths))
        if as_json:
            self.stdout.write(json.dumps([outcome.as_json() for outcome in outcomes], indent=2))
        failed = [outcome.config.alias for outcome in outcomes if outcome.error is not None]
        unshared = [
            f"{outcome.config.alias} ({outcome.sharing})"
            for outcome in outcomes
            if strict and not outcome.sharing.ok
        ]
        problems = []
        if failed:
            problems.append(
                f"{len(failed)} of {len(outcomes)} alias(es) got no token: {', '.join(failed)}."
            )
        if unshared:
            problems.append(
                f"{len(unshared)} of {len(outcomes)} alias(es) do not share their token: "
                f"{', '.join(unshared)}."
            )
        if problems:
            raise CommandError(" ".join(problems), returncode=1)

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
        config, token, sharing = outcome.config, outcome.token, outcome.sharing
        columns = [
            config.alias.ljust(widths[0]),
            _where(config).ljust(widths[1]),
            f"client {config.masked_client_id.ljust(widths[2])}",
        ]
        cache = str(sharing) if sharing.ok else self.style.WARNING(str(sharing))
        if token is None:
            err = outcome.error
            reason = err.error if isinstance(err, TokenEndpointError) else type(err).__name__
            return "  ".join([*columns, self.style.ERROR(f"FAILED ({reason})"), cache])
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
                cache,
            ]
        )


def _obtain(manager: TokenManager, *, refresh: bool) -> Outcome:
    """Get (or with ``refresh``, request) the alias's token, noting whether this call fetched it;
    then ask the alias's cache whether it answers."""
    try:
        if refresh:
            token = manager.refresh()
            requested = True
        else:
            # In a long-lived process (call_command) the manager may already hold a token it
            # once requested itself; reusing it is not a new request.
            held = manager.peek()
            token = manager.get_token()
            requested = token.source == "endpoint" and (
                held is None or held.access_token != token.access_token
            )
    except TradevestError as err:
        return Outcome(manager.config, cache_sharing(manager.config), error=err)
    return Outcome(
        manager.config,
        cache_sharing(manager.config),
        token,
        requested=requested,
        secret=manager.secret_in_use,
    )


def _error_json(err: CommandError) -> dict[str, Any]:
    """The ``--json`` object of a usage or configuration error: every key, ``ok`` false."""
    cause = err.__cause__
    result: dict[str, Any] = dict.fromkeys(JSON_KEYS)
    if isinstance(cause, TradevestConfigurationError):
        alias, error = cause.alias, type(cause).__name__
        hint = "Run `python manage.py check` to see every problem of the TRADEVEST setting."
    else:
        alias, error = None, type(err).__name__
        hint = "Run `python manage.py tradevest_token --help` for the options."
    result.update(ok=False, alias=alias, error=error, message=str(err), hint=hint)
    return result


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
