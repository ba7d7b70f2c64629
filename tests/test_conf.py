from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from tradevest_django.conf import ENVIRONMENTS, AliasConfig, get_config
from tradevest_django.exceptions import TradevestConfigurationError, TradevestError
from tradevest_django.validation import validate_setting

SECRET = "s3cr3t-value-never-shown"
BASE = {"CLIENT_ID": "client-1234567", "CLIENT_SECRET": SECRET, "ENVIRONMENT": "test"}


def build(**options: object) -> AliasConfig:
    return AliasConfig.from_dict("default", {**BASE, **options})


@pytest.mark.parametrize(
    ("environment", "auth", "api"),
    [
        (
            "test",
            "https://b2b.auth.platform-test.tradevest.ai",
            "https://tvda-api.platform-test.tradevest.ai",
        ),
        (
            "pretest",
            "https://b2b.auth.platform-pretest.tradevest.ai",
            "https://tvda-api.platform-pretest.tradevest.ai",
        ),
        (
            "production",
            "https://b2b.auth.platform-prod.tradevest.ai",
            "https://tvda-api.platform-prod.tradevest.ai",
        ),
    ],
)
def test_environment_maps_to_hosts(environment: str, auth: str, api: str) -> None:
    config = build(ENVIRONMENT=environment)
    assert (config.auth_url, config.api_url) == (auth, api) == ENVIRONMENTS[environment]
    assert config.token_url == auth + "/oauth2/token"


def test_defaults() -> None:
    config = build()
    assert config.token_path == "/oauth2/token"
    assert config.scope is None
    assert config.cache_alias == "default"
    assert config.token_timeout == (3.05, 10.0)
    assert config.token_deadline < 30


def test_urls_override_environment_and_trailing_slash_is_dropped() -> None:
    config = build(AUTH_URL="https://auth.example.com/", API_URL="https://api.example.com/v1/")
    assert config.auth_url == "https://auth.example.com"
    assert config.api_url == "https://api.example.com/v1"
    assert config.environment == "test"


def test_scope_list_is_joined_and_timeout_number_is_expanded() -> None:
    config = build(SCOPE=["a", "b"], TOKEN_TIMEOUT=4, TOKEN_PATH="/connect/token")
    assert config.scope == "a b"
    assert config.token_timeout == (4.0, 4.0)
    assert config.token_path == "/connect/token"


@pytest.mark.parametrize(
    ("options", "key", "fragment"),
    [
        ({"ENVIRONMENT": None}, "ENVIRONMENT", "'test', 'pretest' or 'production'"),
        ({"ENVIRONMENT": "prod"}, "ENVIRONMENT", "Use one of 'test', 'pretest' or 'production'"),
        ({"CLIENT_ID": ""}, "CLIENT_ID", "TRADEVEST_CLIENT_ID environment variable"),
        ({"CLIENT_SECRET": None}, "CLIENT_SECRET", "TRADEVEST_CLIENT_SECRET"),
        ({"AUTH_URL": "http://auth.example.com"}, "AUTH_URL", "Use https://"),
        ({"API_URL": "https://user:pw@api.example.com"}, "API_URL", "must not contain credentials"),
        ({"AUTH_URL": "ftp://x"}, "AUTH_URL", "absolute http(s) URL"),
        ({"CLIENT_SECRETS": "x"}, "CLIENT_SECRETS", "Did you mean 'CLIENT_SECRET'?"),
        ({"TOKEN_RETRIES": -1}, "TOKEN_RETRIES", "a whole number from 0 to 20"),
        ({"TOKEN_RETRIES": True}, "TOKEN_RETRIES", "a whole number from 0 to 20"),
        ({"TOKEN_DEADLINE": float("inf")}, "TOKEN_DEADLINE", "seconds (0.1 to 600)"),
        ({"API_TIMEOUT": 10**400}, "API_TIMEOUT", "(up to 3600)"),
        ({"ENVIRONMENT": ["test"]}, "ENVIRONMENT", "Use one of"),
        ({"AUTH_URL": "http://[::1"}, "AUTH_URL", "absolute http(s) URL"),
        ({"TOKEN_TIMEOUT": (1, 2, 3)}, "TOKEN_TIMEOUT", "(connect, read) pair"),
        ({"TOKEN_PATH": "oauth2/token"}, "TOKEN_PATH", "a path such as"),
        ({"REFRESH_WINDOW": 0.9}, "REFRESH_WINDOW", "between 0 and 0.5"),
        ({"CACHE": "tokens"}, "CACHE", "not in CACHES"),
    ],
)
def test_bad_configuration_names_alias_key_and_fix(
    options: dict[str, object], key: str, fragment: str
) -> None:
    with pytest.raises(TradevestConfigurationError) as info:
        build(**options)
    err = info.value
    assert isinstance(err, ImproperlyConfigured)
    assert not isinstance(err, TradevestError)  # never auto-retried by Celery
    assert (err.alias, err.key) == ("default", key)
    assert "TRADEVEST['default']" in str(err)
    assert fragment in str(err)
    assert SECRET not in str(err) and SECRET not in repr(err)


def test_loopback_http_is_allowed() -> None:
    for url in ("http://127.0.0.1:8000", "http://localhost:1", "http://[::1]:80"):
        assert build(AUTH_URL=url).auth_url == url


def test_secret_is_not_in_repr() -> None:
    config = build()
    assert SECRET not in repr(config)
    assert "client-1234567" in repr(config)
    assert config.masked_client_id == "clie…67"


def test_missing_setting_and_unknown_alias() -> None:
    with (
        override_settings(TRADEVEST=None),
        pytest.raises(ImproperlyConfigured, match="TRADEVEST setting is missing"),
    ):
        get_config()
    with (
        override_settings(TRADEVEST={"default": BASE}),
        pytest.raises(ImproperlyConfigured, match=r"no alias 'other'.*default"),
    ):
        get_config("other")


def test_setting_is_read_lazily_and_reread_on_override() -> None:
    with override_settings(TRADEVEST={"default": BASE}):
        assert get_config().environment == "test"
        with override_settings(TRADEVEST={"default": {**BASE, "ENVIRONMENT": "pretest"}}):
            assert get_config().environment == "pretest"
        assert get_config().environment == "test"


def test_validate_setting_reports_every_problem() -> None:
    problems = validate_setting({"default": {"CLIENT_ID": "x"}, "other": "nope"})
    assert {p.check_id for p in problems} == {
        "tradevest_django.E002",
        "tradevest_django.E003",
        "tradevest_django.E004",
    }
    assert validate_setting({})[0].check_id == "tradevest_django.E001"
