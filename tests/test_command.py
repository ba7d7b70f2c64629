"""``manage.py tradevest_token`` against the real loopback fake server."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.cmd_project import manage
from tests.helpers import ServerFactory, free_port
from tradevest_django import api
from tradevest_django.management.commands.tradevest_token import JSON_KEYS, Command
from tradevest_django.testing import FakeTradevestServer, Fault, delete_redis_prefix
from tradevest_django.tokens import fingerprint

SECRET = "command-secret-Pq93"
WRONG_SECRET = "wrong-secret-Lk27"
#: In the dead Redis's LOCATION: it must never be shown.
REDIS_PASSWORD = "redis-password-Hx41"
CLIENT_ID = "command-client-4711"


@pytest.fixture
def server(make_server: ServerFactory) -> FakeTradevestServer:
    return make_server(SECRET, client_id=CLIENT_ID)


@pytest.fixture
def configured(settings: Any, server: FakeTradevestServer) -> FakeTradevestServer:
    """``TRADEVEST = {"default": <the server>}`` with an empty local-memory cache."""
    settings.TRADEVEST = {"default": server.settings()}
    caches["default"].clear()
    return server


def run(*args: str, **options: Any) -> tuple[str, str, int]:
    """Run the command; return (stdout, stderr, exit status) as ``manage.py`` would end."""
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        call_command("tradevest_token", *args, stdout=stdout, stderr=stderr, **options)
    except CommandError as err:
        stderr.write(f"CommandError: {err}\n")  # what manage.py prints before exiting
        return stdout.getvalue(), stderr.getvalue(), err.returncode
    return stdout.getvalue(), stderr.getvalue(), 0


def assert_no_secrets(server: FakeTradevestServer, *outputs: str) -> None:
    for output in outputs:
        assert SECRET not in output and WRONG_SECRET not in output
        for token in server.issued_tokens:
            assert token not in output


def test_first_run_requests_a_token_then_the_cache_serves_it(
    configured: FakeTradevestServer,
) -> None:
    stdout, stderr, code = run()
    assert (code, stderr) == (0, "")
    [line] = stdout.splitlines()
    token = configured.issued_tokens[0]
    assert line.startswith(f"default  {configured.auth_url.removeprefix('http://')}  ")
    assert "client comm…11" in line and CLIENT_ID not in line
    assert "new request" in line
    assert f"fingerprint {fingerprint(token)}" in line
    expires = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%d %H:")
    assert f"expires {expires}" in line and "UTC (in 59m" in line

    stdout_again, _, code = run()  # same process, same manager
    assert code == 0 and "cached" in stdout_again and "new request" not in stdout_again
    api.reset()  # a new process: nothing in memory, the token is in the shared cache
    stdout_cache, _, code = run()
    assert code == 0 and "cached" in stdout_cache
    assert f"fingerprint {fingerprint(token)}" in stdout_cache
    assert configured.token_request_count == 1
    assert_no_secrets(configured, stdout, stderr, stdout_again, stdout_cache)


def test_refresh_requests_a_new_token_although_one_is_cached(
    configured: FakeTradevestServer,
) -> None:
    run()
    stdout, stderr, code = run("--refresh")
    assert (code, stderr) == (0, "")
    assert "new request" in stdout
    assert configured.token_request_count == 2
    assert f"fingerprint {fingerprint(configured.issued_tokens[1])}" in stdout
    api.reset()
    stdout, _, _ = run()
    assert f"fingerprint {fingerprint(configured.issued_tokens[1])}" in stdout  # shared it


def test_json_has_stable_keys(configured: FakeTradevestServer) -> None:
    stdout, stderr, code = run("--json")
    assert (code, stderr) == (0, "")
    [result] = json.loads(stdout)
    assert tuple(result) == JSON_KEYS
    token = configured.issued_tokens[0]
    expires_at = datetime.fromisoformat(result.pop("expires_at"))
    assert expires_at.utcoffset() == timedelta(0)
    assert abs(expires_at - datetime.now(timezone.utc) - timedelta(hours=1)) < timedelta(seconds=5)
    assert 3590 <= result.pop("expires_in") <= 3600
    assert result == {
        "ok": True,
        "alias": "default",
        "environment": None,
        "auth_host": configured.auth_url.removeprefix("http://"),
        "client_id": "comm…11",
        "source": "endpoint",
        "fingerprint": fingerprint(token),
        "secret": "CLIENT_SECRET",
        "cache": {"alias": "default", "backend": "LocMemCache", "shared": False, "reachable": True},
        "error": None,
        "error_code": None,
        "message": None,
        "hint": None,
    }
    api.reset()
    stdout, _, _ = run("--json")
    assert json.loads(stdout)[0]["source"] == "cache"
    assert_no_secrets(configured, stdout)


def test_print_token_prints_the_token_and_nothing_else(
    settings: Any, configured: FakeTradevestServer
) -> None:
    settings.TRADEVEST = {
        "partner": configured.settings(SCOPE="partner"),
        "default": configured.settings(),
        "broken": {"CLIENT_ID": "not used by --print-token"},
    }
    stdout, stderr, code = run("--print-token")  # the alias named "default", not the first
    assert (stdout, stderr, code) == (configured.issued_tokens[0] + "\n", "", 0)
    assert "scope" not in configured.token_requests[0].form
    stdout, stderr, code = run("--print-token", "--alias", "default", "--refresh")
    assert (stdout, stderr, code) == (configured.issued_tokens[1] + "\n", "", 0)
    stdout, stderr, code = run("--print-token", "--alias", "partner")
    assert (stdout, stderr, code) == (configured.issued_tokens[2] + "\n", "", 0)
    assert configured.token_requests[2].form["scope"] == ["partner"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--print-token", "--alias", "default", "--alias", "other"], "exactly one alias"),
        (["--print-token", "--strict"], "cannot be combined with --json or --strict"),
    ],
)
def test_print_token_usage_errors(
    configured: FakeTradevestServer, args: list[str], fragment: str
) -> None:
    stdout, stderr, code = run(*args)
    assert (stdout, code) == ("", 2)
    assert fragment in stderr
    assert configured.token_request_count == 0


def test_print_token_with_json_answers_in_json(configured: FakeTradevestServer) -> None:
    stdout, stderr, code = run("--print-token", "--json")
    assert code == 2 and "cannot be combined with --json or --strict" in stderr
    [result] = json.loads(stdout)
    assert tuple(result) == JSON_KEYS
    assert (result["ok"], result["alias"], result["error"]) == (False, None, "CommandError")
    assert result["message"] == "--print-token cannot be combined with --json or --strict."
    assert "--help" in result["hint"]
    assert configured.token_request_count == 0


def test_print_token_failure_prints_nothing_on_stdout(configured: FakeTradevestServer) -> None:
    configured.inject(Fault.error("invalid_client", status=401))
    stdout, stderr, code = run("--print-token")
    assert (stdout, code) == ("", 1)
    assert "invalid_client" in stderr and "TRADEVEST_CLIENT_SECRET" in stderr


@pytest.mark.parametrize("json_output", [False, True])
def test_invalid_client_exits_1_with_the_fix(
    configured: FakeTradevestServer, json_output: bool
) -> None:
    configured.inject(Fault.error("invalid_client", status=401))
    stdout, stderr, code = run(*(["--json"] if json_output else []))
    assert code == 1
    host = configured.auth_url.removeprefix("http://")
    [diagnostic, summary] = stderr.splitlines()
    assert diagnostic.startswith(f"default: InvalidClient (invalid_client) from {host}: ")
    assert (
        "Check CLIENT_ID and CLIENT_SECRET (e.g. the TRADEVEST_CLIENT_ID / TRADEVEST_CLIENT_SECRET"
        in diagnostic
    )
    assert summary == "CommandError: 1 of 1 alias(es) got no token: default."
    if json_output:
        [result] = json.loads(stdout)
        assert tuple(result) == JSON_KEYS
        assert result["ok"] is False
        assert (result["error"], result["error_code"]) == ("InvalidClient", "invalid_client")
        assert "refused the token request" in result["message"]
        assert "TRADEVEST_CLIENT_SECRET" in result["hint"]
        assert result["source"] is result["expires_at"] is result["fingerprint"] is None
        assert result["secret"] is None
    else:
        assert "FAILED (invalid_client)  NOT shared: local-memory cache" in stdout
    assert_no_secrets(configured, stdout, stderr)


def test_a_remembered_refusal_points_to_refresh(configured: FakeTradevestServer) -> None:
    configured.inject(Fault.error("invalid_client", status=401))
    run()
    _, stderr, code = run()
    assert code == 1 and configured.token_request_count == 1
    assert "remembered" in stderr and "Run with --refresh to ask again now." in stderr
    stdout, _, code = run("--refresh")
    assert code == 0 and "new request" in stdout


@pytest.mark.parametrize(
    ("fault", "error", "fragment"),
    [
        (Fault.status(503), "TokenEndpointUnavailable", "Check that this machine can reach"),
        (Fault.json({"access_token": ""}), "BadTokenResponse", "Check AUTH_URL and TOKEN_PATH"),
        (Fault.error("invalid_scope"), "InvalidScope", "Check SCOPE"),
    ],
)
def test_other_failures_name_the_host_and_a_fix(
    settings: Any, configured: FakeTradevestServer, fault: Fault, error: str, fragment: str
) -> None:
    settings.TRADEVEST = {"default": configured.settings(TOKEN_RETRIES=0)}
    configured.inject(fault)
    stdout, stderr, code = run("--json")
    assert code == 1
    host = configured.auth_url.removeprefix("http://")
    assert stderr.startswith(f"default: {error}")
    assert f"from {host}: " in stderr
    assert fragment in stderr
    [result] = json.loads(stdout)
    assert result["error"] == error and fragment in result["hint"]


def test_wrong_secret_fails_and_is_never_shown(
    settings: Any, configured: FakeTradevestServer
) -> None:
    settings.TRADEVEST = {"default": configured.settings(CLIENT_SECRET=WRONG_SECRET)}
    outputs = []
    for args in ([], ["--json"], ["--print-token"], ["--refresh"]):
        stdout, stderr, code = run(*args)
        assert code == 1 and "invalid_client" in stderr
        outputs += [stdout, stderr]
    assert_no_secrets(configured, *outputs)


def test_one_failing_alias_does_not_hide_the_others(
    settings: Any, configured: FakeTradevestServer
) -> None:
    settings.TRADEVEST = {
        "default": configured.settings(),
        "partner": configured.settings(CLIENT_ID="unknown-partner", ENVIRONMENT="production"),
    }
    stdout, stderr, code = run()
    assert code == 1
    good, bad = stdout.splitlines()
    assert good.startswith("default  ") and "new request" in good
    host = configured.auth_url.removeprefix("http://")
    assert bad.startswith(f"partner  production ({host})  client unkn…er  FAILED (invalid_client)")
    assert stderr.startswith(f"partner: InvalidClient (invalid_client) from production ({host}): ")
    assert len(stderr.splitlines()) == 2  # one diagnostic (partner), one summary
    assert stderr.splitlines()[-1] == "CommandError: 1 of 2 alias(es) got no token: partner."

    stdout, _, code = run("--json")
    assert code == 1
    assert [(r["alias"], r["ok"], r["source"]) for r in json.loads(stdout)] == [
        ("default", True, "cache"),
        ("partner", False, None),
    ]
    stdout, stderr, code = run("--alias", "partner", "--alias", "default", "--alias", "partner")
    assert code == 1
    assert [line.split()[0] for line in stdout.splitlines()] == ["partner", "default"]
    stdout, stderr, code = run("--alias", "default")
    assert (code, stderr) == (0, "")
    assert_no_secrets(configured, stdout, stderr)


@pytest.mark.parametrize(
    ("tradevest", "fragment"),
    [
        ("unknown alias", "TRADEVEST has no alias 'nope'. Configured aliases: default."),
        ({"default": {"CLIENT_ID": CLIENT_ID, "AUTH_URL": "https://a.example"}}, "CLIENT_SECRET"),
        ({}, "The TRADEVEST setting is missing, empty or not a dict."),
        (None, "The TRADEVEST setting is missing, empty or not a dict."),
    ],
)
def test_configuration_errors_exit_2(
    settings: Any, configured: FakeTradevestServer, tradevest: object, fragment: str
) -> None:
    args = ["--alias", "nope"] if tradevest == "unknown alias" else []
    if tradevest is None:
        del settings.TRADEVEST
    elif tradevest != "unknown alias":
        settings.TRADEVEST = tradevest
    stdout, stderr, code = run(*args)
    assert (stdout, code) == ("", 2)
    assert fragment in stderr
    # With --json, the same error is JSON on stdout, so that a monitor's parser never breaks.
    stdout, stderr, code = run(*args, "--json")
    assert code == 2 and fragment in stderr
    [result] = json.loads(stdout)
    assert tuple(result) == JSON_KEYS
    assert result["ok"] is False and result["error"] == "TradevestConfigurationError"
    assert fragment in result["message"]
    assert result["hint"] == (
        "Run `python manage.py check` to see every problem of the TRADEVEST setting."
    )
    # The alias at fault; none when the whole setting is missing or empty.
    if tradevest == "unknown alias":
        assert result["alias"] == "nope"
    else:
        assert result["alias"] == ("default" if tradevest else None)
    assert result["cache"] is result["source"] is result["fingerprint"] is None
    assert configured.token_request_count == 0


def test_help_documents_the_modes_and_exit_codes() -> None:
    parser = Command().create_parser("manage.py", "tradevest_token")
    text = " ".join(parser.format_help().split())
    assert "SENSITIVE" in text and "JSON array" in text and "Exit status: 0" in text
    assert "1 when any alias failed, or with --strict" in text
    assert "2 for a usage or configuration error" in text
    for case in (
        "an unknown alias",
        "an invalid TRADEVEST setting",
        "--print-token with several aliases",
        "--print-token with --json",
        "--print-token with --strict",
    ):
        assert case in text
    assert "With --json, each of these errors is JSON on stdout too." in text


def test_as_a_real_manage_py_subprocess(server: FakeTradevestServer, tmp_path: Path) -> None:
    env = {
        "CMD_PROJECT_CACHE_DIR": str(tmp_path),
        "TRADEVEST_CLIENT_ID": CLIENT_ID,
        "TRADEVEST_CLIENT_SECRET": SECRET,
        "TRADEVEST_AUTH_URL": server.auth_url,
    }
    first = manage("tradevest_token", env=env)
    assert (first.returncode, first.stderr) == (0, "")
    assert "new request" in first.stdout
    # A second process finds the token in the (file-based) cache the first one filled.
    second = manage("tradevest_token", "--json", env=env)
    assert second.returncode == 0
    assert json.loads(second.stdout)[0]["source"] == "cache"
    printed = manage("tradevest_token", "--print-token", env=env)
    assert (printed.stdout, printed.stderr) == (server.issued_tokens[0] + "\n", "")
    assert server.token_request_count == 1

    failed = manage("tradevest_token", "--refresh", env={**env, "TRADEVEST_CLIENT_SECRET": "x"})
    assert failed.returncode == 1
    assert "FAILED (invalid_client)  shared via 'default' (FileBasedCache)" in failed.stdout
    assert "TRADEVEST_CLIENT_SECRET" in failed.stderr
    assert "CommandError: 1 of 1 alias(es) got no token: default." in failed.stderr
    usage = manage("tradevest_token", "--alias", "nope", env=env)
    assert usage.returncode == 2 and "no alias 'nope'" in usage.stderr
    assert_no_secrets(
        server,
        first.stdout,
        first.stderr,
        second.stdout,
        second.stderr,
        printed.stderr,
        failed.stdout,
        failed.stderr,
        usage.stdout,
        usage.stderr,
    )


def test_a_fallback_secret_in_use_is_shown_but_never_the_secret(
    settings: Any, configured: FakeTradevestServer
) -> None:
    settings.TRADEVEST = {
        "default": configured.settings(
            CLIENT_SECRET="command-secret-NEXT-Zz8", CLIENT_SECRET_FALLBACKS=[SECRET]
        )
    }
    stdout, _, code = run("--json")
    assert code == 0 and json.loads(stdout)[0]["secret"] == "CLIENT_SECRET_FALLBACKS[0]"
    api.reset()
    stdout, _, code = run()
    assert code == 0 and "with CLIENT_SECRET_FALLBACKS[0]" in stdout
    assert "command-secret-NEXT-Zz8" not in stdout
    assert_no_secrets(configured, stdout)


# -- the deploy check: how each alias's token is shared (--strict) ------------------------------


def dead_redis_location() -> str:
    return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"


REDIS = "django.core.cache.backends.redis.RedisCache"

#: Cache kind -> (text of the line, JSON "cache" object without the alias).
SHARING = {
    "local-memory": (
        "NOT shared: local-memory cache",
        {"backend": "LocMemCache", "shared": False, "reachable": True},
    ),
    "dummy": (
        "NOT shared: dummy cache",
        {"backend": "DummyCache", "shared": False, "reachable": True},
    ),
    "dead redis": (
        "cache unreachable: RedisCache at redis://:***@127.0.0.1:{port}/0 (ConnectionError)",
        {"backend": "RedisCache", "shared": True, "reachable": False},
    ),
    "live redis": (
        "shared via 'default' (RedisCache)",
        {"backend": "RedisCache", "shared": True, "reachable": True},
    ),
}


@pytest.fixture(params=list(SHARING))
def cache_kind(
    request: pytest.FixtureRequest, settings: Any, configured: FakeTradevestServer
) -> Iterator[str]:
    """The ``default`` cache of each kind, behind the configured fake server."""
    kind: str = request.param
    if kind == "dummy":
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    elif kind == "dead redis":
        settings.CACHES = {"default": {"BACKEND": REDIS, "LOCATION": dead_redis_location()}}
    elif kind == "live redis":
        live = request.getfixturevalue("redis_caches")["default"]  # under CI=true: fails
        yield kind
        delete_redis_prefix(str(live["LOCATION"]), str(live["KEY_PREFIX"]))
        return
    yield kind


def expected_sharing(kind: str) -> tuple[str, dict[str, object]]:
    text, cache = SHARING[kind]
    if kind == "dead redis":
        location = str(django_settings.CACHES["default"]["LOCATION"])
        text = text.format(port=location.rsplit(":", 1)[1].split("/")[0])
    return text, {"alias": "default", **cache}


def test_each_alias_says_how_its_token_is_shared(
    cache_kind: str, configured: FakeTradevestServer
) -> None:
    text, cache = expected_sharing(cache_kind)
    stdout, stderr, code = run()
    # Without --strict, a cache that shares nothing is reported, not failed: the token works.
    assert (code, stderr) == (0, "")
    [line] = stdout.splitlines()
    assert line.endswith(f"fingerprint {fingerprint(configured.issued_tokens[0])}  {text}")
    stdout, stderr, code = run("--json")
    assert (code, stderr) == (0, "")
    [result] = json.loads(stdout)
    assert tuple(result) == JSON_KEYS
    assert result["ok"] is True and result["cache"] == cache
    assert REDIS_PASSWORD not in stdout
    assert_no_secrets(configured, stdout, stderr)


def test_strict_fails_unless_the_token_is_shared(
    cache_kind: str, configured: FakeTradevestServer
) -> None:
    text, cache = expected_sharing(cache_kind)
    outputs = []
    for args in ([], ["--json"]):
        stdout, stderr, code = run("--strict", *args)
        outputs += [stdout, stderr]
        if cache_kind == "live redis":
            assert (code, stderr) == (0, "")
            continue
        assert code == 1
        diagnostic, summary = stderr.splitlines()
        assert diagnostic.startswith(f"default: {text}. Every process requests its own token")
        fix = (
            "Check that this machine can reach CACHES['default']['LOCATION']"
            if cache_kind == "dead redis"
            else "Point TRADEVEST['default']['CACHE'] at a cache that all processes share"
        )
        assert fix in diagnostic
        assert summary == (
            f"CommandError: 1 of 1 alias(es) do not share their token: default ({text})."
        )
        if args:  # the JSON is complete all the same
            [result] = json.loads(stdout)
            assert result["ok"] is True and result["cache"] == cache
        else:
            assert stdout.rstrip().endswith(text)
    assert not any(REDIS_PASSWORD in output for output in outputs)
    assert configured.token_request_count == 1  # the second run used the token it held
    assert_no_secrets(configured, *outputs)


def test_strict_reports_a_failed_token_and_an_unshared_cache_together(
    configured: FakeTradevestServer,
) -> None:
    configured.inject(Fault.error("invalid_client", status=401))
    stdout, stderr, code = run("--strict")
    assert code == 1
    failure, unshared, summary = stderr.splitlines()
    assert failure.startswith("default: InvalidClient (invalid_client) from ")
    assert unshared.startswith("default: NOT shared: local-memory cache. ")
    assert summary == (
        "CommandError: 1 of 1 alias(es) got no token: default. 1 of 1 alias(es) do not share "
        "their token: default (NOT shared: local-memory cache)."
    )
    assert stdout.rstrip().endswith("FAILED (invalid_client)  NOT shared: local-memory cache")


def test_the_location_of_an_unreachable_cache_never_shows_a_password(
    settings: Any, configured: FakeTradevestServer
) -> None:
    port = free_port()
    settings.CACHES = {
        "default": {
            "BACKEND": REDIS,
            "LOCATION": [
                f"redis://user:{REDIS_PASSWORD}@127.0.0.1:{port}/0",
                f"redis://127.0.0.1:{port}/1?password={REDIS_PASSWORD}&db=1",
            ],
        }
    }
    stdout, stderr, code = run("--strict")
    assert code == 1
    masked = f"redis://user:***@127.0.0.1:{port}/0, redis://127.0.0.1:{port}/1?password=***&db=1"
    assert f"cache unreachable: RedisCache at {masked} (ConnectionError)" in stdout
    assert REDIS_PASSWORD not in stdout + stderr


@pytest.mark.parametrize("kind", ["local-memory", "dead redis", "live redis"])
def test_strict_json_as_a_deploy_pipeline_step(
    request: pytest.FixtureRequest, server: FakeTradevestServer, tmp_path: Path, kind: str
) -> None:
    """``manage.py tradevest_token --strict --json`` as a real process, as a pipeline runs it."""
    prefix = f"tvcmd-{uuid.uuid4().hex[:12]}"
    if kind == "local-memory":
        cache: dict[str, object] = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    elif kind == "dead redis":
        cache = {"BACKEND": REDIS, "LOCATION": dead_redis_location()}
    else:
        cache = {"BACKEND": REDIS, "LOCATION": request.getfixturevalue("redis_url")}
    cache["KEY_PREFIX"] = prefix
    env = {
        "CMD_PROJECT_CACHE_DIR": str(tmp_path),
        "CMD_PROJECT_CACHES": json.dumps({"default": cache}),
        "TRADEVEST_CLIENT_ID": CLIENT_ID,
        "TRADEVEST_CLIENT_SECRET": SECRET,
        "TRADEVEST_AUTH_URL": server.auth_url,
    }
    settings_option = ["--settings", "tests.cmd_project.cache_settings"]
    try:
        done = manage("tradevest_token", "--strict", "--json", *settings_option, env=env)
    finally:
        if kind == "live redis":
            delete_redis_prefix(str(cache["LOCATION"]), prefix)
    [result] = json.loads(done.stdout)
    assert result["ok"] is True and result["source"] == "endpoint"
    _, expected = SHARING[kind]
    assert result["cache"] == {"alias": "default", **expected}
    if kind == "live redis":
        assert (done.returncode, done.stderr) == (0, "")
    else:
        assert done.returncode == 1
        assert "alias(es) do not share their token: default (" in done.stderr
    usage = manage("tradevest_token", "--json", "--alias", "nope", *settings_option, env=env)
    assert usage.returncode == 2
    [error] = json.loads(usage.stdout)
    assert (error["ok"], error["alias"], error["error"]) == (
        False,
        "nope",
        "TradevestConfigurationError",
    )
    assert REDIS_PASSWORD not in done.stdout + done.stderr
    assert_no_secrets(server, done.stdout, done.stderr, usage.stdout, usage.stderr)
