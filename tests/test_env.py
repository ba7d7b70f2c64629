from __future__ import annotations

import environ
import pytest

from tradevest_django.conf import AliasConfig
from tradevest_django.env import tradevest_env


def test_reads_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEVEST_CLIENT_ID", "cid")
    monkeypatch.setenv("TRADEVEST_CLIENT_SECRET", "csecret")
    monkeypatch.setenv("TRADEVEST_ENVIRONMENT", "pretest")
    monkeypatch.setenv("TRADEVEST_TOKEN_TIMEOUT", "2.5,9")
    monkeypatch.setenv("TRADEVEST_TOKEN_RETRIES", "1")
    monkeypatch.setenv("TRADEVEST_SCOPE", "")
    options = tradevest_env(environ.Env())
    assert options == {
        "CLIENT_ID": "cid",
        "CLIENT_SECRET": "csecret",
        "ENVIRONMENT": "pretest",
        "TOKEN_TIMEOUT": (2.5, 9.0),
        "TOKEN_RETRIES": 1,
    }
    config = AliasConfig.from_dict("default", options)
    assert config.auth_url == "https://b2b.auth.platform-pretest.tradevest.ai"


def test_prefix_selects_another_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEVEST_REPORTING_CLIENT_ID", "r-id")
    monkeypatch.setenv("TRADEVEST_REPORTING_AUTH_URL", "https://auth.example.com")
    monkeypatch.delenv("TRADEVEST_CLIENT_ID", raising=False)
    assert tradevest_env(prefix="TRADEVEST_REPORTING_") == {
        "CLIENT_ID": "r-id",
        "AUTH_URL": "https://auth.example.com",
    }


def test_reads_fallback_secrets_as_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADEVEST_CLIENT_ID", "cid")
    monkeypatch.setenv("TRADEVEST_CLIENT_SECRET", "env-secret-NEW")
    monkeypatch.setenv("TRADEVEST_CLIENT_SECRET_FALLBACKS", "env-secret-OLD,env-secret-OLDER")
    monkeypatch.setenv("TRADEVEST_PRIMARY_SECRET_RETRY", "300")
    monkeypatch.setenv("TRADEVEST_ENVIRONMENT", "test")
    options = tradevest_env(environ.Env())
    assert options["CLIENT_SECRET_FALLBACKS"] == ["env-secret-OLD", "env-secret-OLDER"]
    config = AliasConfig.from_dict("default", options, check_cache=False)
    assert config.client_secret_fallbacks == ("env-secret-OLD", "env-secret-OLDER")
    assert config.primary_secret_retry == 300
