"""System checks: errors from the settings validation, warnings about caches, ids as public API."""

from __future__ import annotations

import ast
import io
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.core.cache.backends.locmem import LocMemCache
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from tests.cmd_project import manage
from tradevest_django import checks as tradevest_checks
from tradevest_django.checks import (
    CHECK_IDS,
    check_caches,
    check_placeholders,
    check_rotation,
    check_settings,
)
from tradevest_django.validation import validate_setting

PACKAGE = Path(tradevest_checks.__file__).resolve().parent
SECRET = "checks-secret-Vb72-never-shown"
GOOD = {"CLIENT_ID": "client-1234567", "CLIENT_SECRET": SECRET, "ENVIRONMENT": "test"}
#: Ids already released; never renumbered, removed or reused.
RELEASED = [f"tradevest_django.E00{n}" for n in range(1, 10)] + [
    f"tradevest_django.W00{n}" for n in range(1, 5)
]
REDIS = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache"}}


class TenantCache(LocMemCache):
    """A local-memory cache under another name: only its base class gives it away."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("a system check instantiated a cache")


def ids(messages: list[checks.CheckMessage]) -> list[str | None]:
    return [message.id for message in messages]


def test_valid_settings_with_a_shared_cache_pass(settings: Any) -> None:
    settings.TRADEVEST = {"default": GOOD, "reporting": {**GOOD, "ENVIRONMENT": "production"}}
    settings.CACHES = REDIS
    assert check_settings(None) == []
    assert check_caches(None) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "E001"),
        ({}, "E001"),
        ([GOOD], "E001"),
        ({"default": "client-1234567"}, "E002"),
        ({"default": {**GOOD, "CLIENT_SECRET": ""}}, "E003"),
        ({"default": {**GOOD, "ENVIRONMENT": "prod"}}, "E004"),
        ({"default": {**GOOD, "AUTH_URL": "http://auth.example.com"}}, "E005"),
        ({"default": {**GOOD, "CACHE": "tokens"}}, "E006"),
        ({"default": {**GOOD, "CLIENT_SECRETS": SECRET}}, "E007"),
        ({"default": {**GOOD, "TOKEN_RETRIES": -1}}, "E008"),
    ],
)
def test_each_problem_of_the_setting_is_an_error(
    settings: Any, value: object, expected: str
) -> None:
    if value is None:
        del settings.TRADEVEST
    else:
        settings.TRADEVEST = value
    messages = check_settings(None)
    assert ids(messages) == [f"tradevest_django.{expected}"]
    assert all(m.level == checks.ERROR and m.obj == "TRADEVEST" for m in messages)
    # The same words as the runtime's TradevestConfigurationError: one validation, two reports.
    assert [(m.id, m.msg, m.hint) for m in messages] == [
        (p.check_id, p.msg, p.hint) for p in validate_setting(value)
    ]


def test_every_problem_is_reported_not_only_the_first(settings: Any) -> None:
    settings.TRADEVEST = {
        "default": {"CLIENT_ID": "", "ENVIRONMENT": "prod", "TOKEN_TIMEOUT": 0},
        "other": 42,
    }
    assert sorted(ids(check_settings(None))) == [
        "tradevest_django.E002",
        "tradevest_django.E003",
        "tradevest_django.E003",
        "tradevest_django.E004",
        "tradevest_django.E008",
    ]


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("django.core.cache.backends.locmem.LocMemCache", "W001"),
        ("tests.test_checks.TenantCache", "W001"),
        ("django.core.cache.backends.dummy.DummyCache", "W002"),
        ("django.core.cache.backends.filebased.FileBasedCache", "W003"),
        ("not_installed.cache.SharedFileBasedCache", "W003"),
        ("django.core.cache.backends.db.DatabaseCache", "W004"),
        ("django.core.cache.backends.redis.RedisCache", None),
        ("django_redis.cache.RedisCache", None),
        ("django.core.cache.backends.memcached.PyMemcacheCache", None),
        ("django.core.cache.backends.memcached.PyLibMCCache", None),
    ],
)
def test_cache_backend_warnings(settings: Any, backend: str, expected: str | None) -> None:
    settings.TRADEVEST = {"default": GOOD}
    settings.CACHES = {"default": {"BACKEND": backend}}
    messages = check_caches(None)
    assert ids(messages) == ([f"tradevest_django.{expected}"] if expected else [])
    for message in messages:
        assert message.level == checks.WARNING
        assert "TRADEVEST['default']" in message.msg and "CACHES['default']" in message.msg
        assert "Redis" in message.hint


@pytest.mark.parametrize(
    ("backend", "location", "expected"),
    [
        ("django.core.cache.backends.redis.RedisCache", "redis://p:6379", None),
        ("django.core.cache.backends.redis.RedisCache", ["redis://p:6379"], None),
        ("django.core.cache.backends.redis.RedisCache", ["redis://p", "redis://r"], "W005"),
        ("django.core.cache.backends.redis.RedisCache", "redis://p,redis://r", "W005"),
        ("django.core.cache.backends.redis.RedisCache", "redis://p;redis://r", "W005"),
        ("django_redis.cache.RedisCache", ["redis://p", "redis://r", "redis://s"], "W005"),
        ("django.core.cache.backends.memcached.PyMemcacheCache", ["m1:11211", "m2:11211"], None),
    ],
)
def test_a_redis_cache_with_replicas_is_warned_about(
    settings: Any, backend: str, location: object, expected: str | None
) -> None:
    settings.TRADEVEST = {"default": GOOD}
    settings.CACHES = {"default": {"BACKEND": backend, "LOCATION": location}}
    messages = check_caches(None)
    assert ids(messages) == ([f"tradevest_django.{expected}"] if expected else [])
    for message in messages:
        assert "replicas" in message.msg
        assert "TRADEVEST['default']['CACHE'] = 'tradevest'" in message.hint


def test_only_the_caches_the_aliases_use_are_judged(settings: Any) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "tokens": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
        "shared": REDIS["default"],
    }
    settings.TRADEVEST = {
        "default": {**GOOD, "CACHE": "shared"},
        "reporting": {**GOOD, "CACHE": "tokens"},
        "missing": {**GOOD, "CACHE": "nowhere"},  # E006, no warning
        "broken": "not a dict",
    }
    messages = check_caches(None)
    assert ids(messages) == ["tradevest_django.W002"]
    assert "TRADEVEST['reporting']" in messages[0].msg
    assert "TRADEVEST['reporting']['CACHE']" in messages[0].hint


def test_cache_checks_skip_what_other_checks_report(settings: Any) -> None:
    settings.TRADEVEST = {"default": GOOD}
    settings.CACHES = {"default": {"LOCATION": "no backend"}}
    assert check_caches(None) == []
    settings.TRADEVEST = None
    assert check_caches(None) == []


def test_checks_touch_no_cache_and_no_network(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(*args: object) -> None:
        raise AssertionError("a system check opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    settings.TRADEVEST = {"default": GOOD}
    settings.CACHES = {"default": {"BACKEND": "tests.test_checks.TenantCache"}}
    messages = checks.run_checks(tags=["tradevest"])
    assert ids(messages) == ["tradevest_django.W001"]


def test_registered_with_a_tag_and_run_by_default(settings: Any) -> None:
    settings.TRADEVEST = {"default": {**GOOD, "CLIENT_SECRET": ""}}
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    expected = ["tradevest_django.E003", "tradevest_django.W002"]
    assert sorted(ids(checks.run_checks(tags=["tradevest"]))) == expected
    everything = ids(checks.run_checks())
    assert all(check_id in everything for check_id in expected)
    assert ids(checks.run_checks(tags=["caches"])).count("tradevest_django.W002") == 1


def test_check_command_output_names_the_fix_and_never_the_secret(settings: Any) -> None:
    settings.TRADEVEST = {
        "default": {
            "CLIENT_ID": "client-1234567",
            "CLIENT_SECRET": SECRET,
            "AUTH_URL": f"https://client-1234567:{SECRET}@auth.example.com",
            "CLIENT_SECRETS": SECRET,
            "ENVIRONMENT": "prod",
        },
        "reporting": {"CLIENT_ID": "client-89", "CLIENT_SECRET": 987650, "ENVIRONMENT": "test"},
    }
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.raises(SystemCheckError) as excinfo:
        call_command("check", "--tag", "tradevest", stdout=stdout, stderr=stderr)
    output = "\n".join([str(excinfo.value), stdout.getvalue(), stderr.getvalue()])
    for check_id in ("E003", "E004", "E005", "E007", "W001"):
        assert f"(tradevest_django.{check_id})" in output
    assert "Did you mean 'CLIENT_SECRET'?" in output
    assert "TRADEVEST_CLIENT_SECRET environment variable" in output
    assert SECRET not in output and "987650" not in output


def test_ids_can_be_silenced(settings: Any) -> None:
    settings.TRADEVEST = {"default": GOOD}
    settings.SILENCED_SYSTEM_CHECKS = ["tradevest_django.W001"]
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("check", "--tag", "tradevest", stdout=stdout, stderr=stderr)
    assert "W001" not in stdout.getvalue() + stderr.getvalue()
    assert "no issues (1 silenced)" in stdout.getvalue()


def test_check_ids_are_unique_listed_and_never_renumbered() -> None:
    source = (PACKAGE / "checks.py").read_text()
    literal = next(
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id == "CHECK_IDS"
    )
    assert isinstance(literal, ast.Dict)
    keys = [ast.literal_eval(key) for key in literal.keys if key is not None]
    assert len(keys) == len(set(keys)), "a check id is listed twice in CHECK_IDS"
    # Public API: ids are only ever added, never renumbered, removed or reused.
    assert set(RELEASED) <= set(keys)
    assert keys == sorted(keys, key=lambda check_id: (check_id[-4], int(check_id[-3:])))
    assert all(meaning.endswith(".") and len(meaning) < 120 for meaning in CHECK_IDS.values())
    # Every id the package can produce (anywhere but the table itself) is in the table.
    texts = [p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "checks.py"]
    texts.append(source.replace(ast.get_source_segment(source, literal) or "", ""))
    produced = {
        found for text in texts for found in re.findall(r"tradevest_django\.[EW]\d{3}", text)
    }
    assert produced == set(CHECK_IDS), "every id produced is listed in CHECK_IDS, and vice versa"
    warnings = [check_id for check_id, _, _ in tradevest_checks._CACHE_WARNINGS.values()]
    assert len(warnings) == len(set(warnings))


def test_check_as_a_real_manage_py_subprocess(tmp_path: Path) -> None:
    env = {
        "CMD_PROJECT_CACHE_DIR": str(tmp_path),
        "TRADEVEST_CLIENT_ID": "client-1234567",
        "TRADEVEST_CLIENT_SECRET": SECRET,
        "TRADEVEST_ENVIRONMENT": "test",
    }
    result = manage("check", env=env)
    assert result.returncode == 0, result.stderr
    assert "(tradevest_django.W003)" in result.stdout + result.stderr
    result = manage("check", env={**env, "TRADEVEST_CLIENT_SECRET": ""})
    assert result.returncode == 1
    assert "(tradevest_django.E003)" in result.stderr
    assert "TRADEVEST_CLIENT_SECRET" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_docs_list_every_check_id() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "checks.md").read_text()
    listed = set(re.findall(r"`(tradevest_django\.[EW]\d{3})`", docs))
    assert listed == set(CHECK_IDS)


def test_fallback_secrets_are_warned_about_until_the_rotation_ends(settings: Any) -> None:
    settings.TRADEVEST = {
        "default": {**GOOD, "CLIENT_SECRET_FALLBACKS": ["checks-secret-OLD-9a"]},
        "reporting": {**GOOD, "CLIENT_SECRET_FALLBACKS": []},
        "broken": "not a dict",
    }
    messages = check_rotation(None)
    assert ids(messages) == ["tradevest_django.W006"]
    assert "TRADEVEST['default']" in messages[0].msg
    assert "CLIENT_SECRET_FALLBACKS" in messages[0].hint
    assert "checks-secret-OLD-9a" not in messages[0].msg + messages[0].hint
    settings.TRADEVEST = {"default": GOOD}
    assert check_rotation(None) == []


PLACEHOLDERS = [
    "<your client id>",
    "<your client secret>",
    "your-client-secret",
    "YOUR_CLIENT_ID",
    "YourClientSecret",
    "changeme",
    "CHANGE_ME",
    "Change me later",
    "xxx",
    "XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX",
    "TODO",
    "TODO: ask ops",
    "tbd",
    "...",
    "***",
    "None",
    "null",
    "${TRADEVEST_CLIENT_SECRET}",
    "{{ client_secret }}",
    "client_secret_here",
    "paste your secret here",
    " PLACEHOLDER ",
]
REAL_LOOKING = [
    SECRET,
    "client-1234567",
    "test-client",
    "test-secret",
    "a3f9c2e1-5b7d-4e0a-9c1f-2d3e4f5a6b7c",
    "Zk3_v9Qx-LmN0pR7sT2uW5yA8bC1dE4f",
    "yourbank-reporting",
    "todos-service",
    "xx",
]


@pytest.mark.parametrize("key", ["CLIENT_ID", "CLIENT_SECRET"])
@pytest.mark.parametrize("value", PLACEHOLDERS)
def test_a_placeholder_credential_is_warned_about_without_showing_it(
    settings: Any, key: str, value: str
) -> None:
    settings.TRADEVEST = {"default": GOOD, "reporting": {**GOOD, key: value}}
    messages = check_placeholders(None)
    assert ids(messages) == ["tradevest_django.W007"]
    (message,) = messages
    assert message.level == checks.WARNING and message.obj == "TRADEVEST"
    assert message.msg.startswith(f"TRADEVEST['reporting'][{key!r}] looks like a placeholder")
    assert f"TRADEVEST_{key}" in message.hint
    assert "python -m tradevest_django.testing" in message.hint
    assert value.strip() not in message.msg + message.hint
    assert check_settings(None) == []  # a warning: the setting itself is well-formed


@pytest.mark.parametrize("value", REAL_LOOKING)
def test_real_looking_credentials_pass(settings: Any, value: str) -> None:
    settings.TRADEVEST = {"default": {**GOOD, "CLIENT_ID": value, "CLIENT_SECRET": value}}
    assert check_placeholders(None) == []


def test_the_placeholder_check_reads_only_strings(settings: Any) -> None:
    def secret() -> str:
        raise AssertionError("a system check called the secret")

    settings.TRADEVEST = {
        "default": {**GOOD, "CLIENT_SECRET": secret},
        "empty": {**GOOD, "CLIENT_ID": "", "CLIENT_SECRET": None},  # E003's, not W007's
        "broken": "not a dict",
    }
    assert check_placeholders(None) == []
    settings.TRADEVEST = ["not", "a", "dict"]
    assert check_placeholders(None) == []


def test_the_placeholder_check_runs_with_the_others(settings: Any) -> None:
    settings.TRADEVEST = {"default": {**GOOD, "CLIENT_SECRET": "<your client secret>"}}
    settings.CACHES = REDIS
    assert ids(checks.run_checks(tags=["tradevest"])) == ["tradevest_django.W007"]
