"""The messages a user meets first: a mistyped environment, a quoted number, a dead cache."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.helpers import CountingCache, ServerFactory
from tradevest_django.conf import mask_location
from tradevest_django.manager import TokenManager
from tradevest_django.validation import validate_alias

SECRET = "messages-secret-Jx7-never-shown"
GOOD = {"CLIENT_ID": "client-1234567", "CLIENT_SECRET": SECRET, "ENVIRONMENT": "test"}


def problems(**options: object) -> list[tuple[str, str, str]]:
    return [
        (problem.check_id, problem.msg, problem.hint)
        for problem in validate_alias("default", {**GOOD, **options})
    ]


@pytest.mark.parametrize(
    ("environment", "meant"),
    [
        ("prod", "production"),
        ("Production", "production"),
        ("Test", "test"),
        (" pretest ", "pretest"),
        ("pre", "pretest"),
        ("testing", "test"),
        ("prodcution", "production"),
    ],
)
def test_an_unknown_environment_suggests_the_closest(environment: str, meant: str) -> None:
    ((check_id, msg, hint),) = problems(ENVIRONMENT=environment)
    assert check_id == "tradevest_django.E004"
    assert f"is {environment!r}, which is not a Tradevest environment" in msg
    assert hint == (
        f"Did you mean {meant!r}? Use one of 'test', 'pretest' or 'production' (e.g. in the "
        "TRADEVEST_ENVIRONMENT environment variable)."
    )


@pytest.mark.parametrize("environment", ["staging", "dev", "p", "", 3, ["test"]])
def test_no_suggestion_when_nothing_is_close(environment: object) -> None:
    ((check_id, _, hint),) = problems(ENVIRONMENT=environment)
    assert check_id == "tradevest_django.E004"
    assert hint.startswith("Use one of 'test', 'pretest' or 'production'")
    assert "TRADEVEST_ENVIRONMENT" in hint


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TOKEN_RETRIES", "5"),
        ("API_RETRIES", " 3 "),
        ("TOKEN_DEADLINE", "2.5"),
        ("LOCK_TIMEOUT", "12"),
        ("REFRESH_WINDOW", "0.1"),
        ("TOKEN_TIMEOUT", ("3.05", "10")),
        ("API_TIMEOUT", ["3", 30]),
        ("API_TIMEOUT", "30"),
    ],
)
def test_a_number_written_as_a_string_is_named_as_such(key: str, value: object) -> None:
    ((check_id, msg, hint),) = problems(**{key: value})
    assert check_id == "tradevest_django.E008"
    assert msg == f"TRADEVEST['default'][{key!r}] has an invalid value {value!r}: expected a " + (
        "number, not a string."
    )
    assert "without quotes" in hint and "int() or float()" in hint and "tradevest_env" in hint


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("TOKEN_RETRIES", "five"),
        ("TOKEN_RETRIES", 99),
        ("TOKEN_RETRIES", True),
        ("TOKEN_TIMEOUT", ("3", None)),
        ("TOKEN_TIMEOUT", (True, "3")),
        ("TOKEN_TIMEOUT", []),
        ("TOKEN_PATH", "5"),  # not a number option: the usual message
    ],
)
def test_other_invalid_values_keep_the_usual_message(key: str, value: object) -> None:
    ((check_id, msg, hint),) = problems(**{key: value})
    assert check_id == "tradevest_django.E008"
    assert msg.endswith(f"has an invalid value {value!r}.")
    assert "not a string" not in msg and "without quotes" not in hint


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("redis://:hunter2@cache.internal:6379/0", "redis://:***@cache.internal:6379/0"),
        ("rediss://tokens:hunter2@cache:6380/1", "rediss://tokens:***@cache:6380/1"),
        ("redis://:hun/ter@2@cache/0", "redis://:***@cache/0"),  # unquoted "/" and "@"
        ("redis://cache:6379/0?password=hunter2&db=1", "redis://cache:6379/0?password=***&db=1"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        ("redis://user@cache:6379", "redis://user@cache:6379"),
        (
            ["redis://:hunter2@primary:6379", "redis://:hunter2@replica:6379"],
            "redis://:***@primary:6379, redis://:***@replica:6379",
        ),
        ("redis://:hunter2@p,redis://r", "redis://:***@p,redis://r"),
        ("redis://:hunter2@p;redis://:hunter2@r", "redis://:***@p;redis://:***@r"),
        (("m1:11211", "m2:11211"), "m1:11211, m2:11211"),
        ("/var/tmp/django_cache", "/var/tmp/django_cache"),
        ("my_cache_table", "my_cache_table"),
    ],
)
def test_mask_location_hides_passwords_only(location: object, shown: str) -> None:
    assert mask_location(location) == shown
    assert "hunter2" not in mask_location(location)


def test_a_dead_cache_is_named_with_its_backend_and_masked_location(
    settings: Any, make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    password = "dead-cache-pw-Zq9"
    # Port 9 (discard) refuses connections: a Redis that is down, quickly.
    location = f"redis://:{password}@127.0.0.1:9/0"
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": location}
    }
    server = make_server("dead-cache-secret-4f")
    manager = TokenManager.from_options("default", server.settings(TOKEN_RETRIES=0))
    assert manager.get_token()
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith(
        "Cache 'default' (RedisCache at redis://:***@127.0.0.1:9/0) is unavailable ("
    )
    assert password not in caplog.text


def test_a_cache_given_directly_is_named_by_its_class(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    cache = CountingCache()
    cache.fail = True
    server = make_server("given-cache-secret-8d")
    TokenManager.from_options("default", server.settings(), cache=cache).get_token()
    assert "Cache 'default' (CountingCache, given directly) is unavailable" in caplog.text


@pytest.mark.parametrize(
    ("caches", "described"),
    [
        ({"other": {"BACKEND": "django.core.cache.backends.redis.RedisCache"}}, "not in CACHES"),
        ({"default": {"BACKEND": "tests.test_messages.BrokenCache"}}, "BrokenCache"),
    ],
)
def test_a_cache_that_cannot_be_built_is_described_from_the_settings(
    settings: Any,
    make_server: ServerFactory,
    caplog: pytest.LogCaptureFixture,
    caches: dict[str, object],
    described: str,
) -> None:
    server = make_server("unbuilt-cache-secret-2b")
    manager = TokenManager.from_options("default", server.settings())
    settings.CACHES = caches  # changed under a running manager, after its validation
    assert manager.get_token()
    assert f"Cache 'default' ({described}) is unavailable" in caplog.text


class BrokenCache:
    """A backend whose construction fails, as a misconfigured one does."""

    def __init__(self, *args: object) -> None:
        raise ConnectionError("no server")
