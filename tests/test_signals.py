"""Signals and log lines: what operations sees, and nothing it must not see."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import tradevest_django
from tradevest_django import signals
from tradevest_django.exceptions import InvalidClient
from tradevest_django.testing import FakeTradevestServer, Fault


@pytest.fixture
def received() -> Iterator[dict[str, list[dict[str, Any]]]]:
    seen: dict[str, list[dict[str, Any]]] = {"obtained": [], "failed": [], "invalidated": []}
    receivers = {
        "obtained": lambda **kw: seen["obtained"].append(kw),
        "failed": lambda **kw: seen["failed"].append(kw),
        "invalidated": lambda **kw: seen["invalidated"].append(kw),
    }
    signals.token_obtained.connect(receivers["obtained"], weak=False)
    signals.token_request_failed.connect(receivers["failed"], weak=False)
    signals.token_invalidated.connect(receivers["invalidated"], weak=False)
    yield seen
    signals.token_obtained.disconnect(receivers["obtained"])
    signals.token_request_failed.disconnect(receivers["failed"])
    signals.token_invalidated.disconnect(receivers["invalidated"])


def test_token_obtained_and_invalidated(
    tradevest_settings: FakeTradevestServer, received: dict[str, list[dict[str, Any]]]
) -> None:
    tradevest_settings.inject(Fault.status(503))
    token = tradevest_django.get_token()
    (obtained,) = received["obtained"]
    assert obtained["alias"] == "default"
    assert obtained["fingerprint"] == token.fingerprint
    assert obtained["expires_at"] == token.expires_at
    assert obtained["attempt"] == 2
    assert obtained["duration"] >= 0
    tradevest_django.invalidate_token(token)
    (invalidated,) = received["invalidated"]
    assert invalidated["fingerprint"] == token.fingerprint
    assert "401" in invalidated["reason"]
    for kwargs in received["obtained"] + received["invalidated"]:
        assert token.access_token not in repr(kwargs)


def test_token_request_failed(
    tradevest_settings: FakeTradevestServer, received: dict[str, list[dict[str, Any]]]
) -> None:
    tradevest_settings.inject(Fault.error("invalid_client"))
    with pytest.raises(InvalidClient):
        tradevest_django.get_token()
    (failed,) = received["failed"]
    assert failed["alias"] == "default"
    assert isinstance(failed["exception"], InvalidClient)


def test_a_failing_receiver_never_breaks_a_caller(
    tradevest_settings: FakeTradevestServer, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**kwargs: object) -> None:
        raise RuntimeError("metrics backend down")

    signals.token_obtained.connect(broken, weak=False)
    try:
        assert tradevest_django.get_token()
    finally:
        signals.token_obtained.disconnect(broken)
    assert "raised RuntimeError; ignored" in caplog.text


def test_log_lines_one_per_event(
    tradevest_settings: FakeTradevestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tradevest_django")
    tradevest_settings.inject(Fault.status(502))
    token = tradevest_django.get_token()
    for _ in range(100):
        tradevest_django.get_token()
    ours = [r for r in caplog.records if r.name.startswith("tradevest_django")]
    assert [(r.levelname, r.name) for r in ours] == [
        ("WARNING", "tradevest_django.endpoint"),  # the retry
        ("INFO", "tradevest_django.manager"),  # the new token
    ]
    assert token.fingerprint in ours[1].getMessage()
