"""Shared fixtures: Redis (real, fails under CI=true when absent), log capture for leak scans."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.checks import CheckMessage
from django.core.management.base import OutputWrapper

from tests.helpers import FakeClock, ServerFactory
from tests.reliability import figures
from tradevest_django.exceptions import TradevestConfigurationError, TradevestError
from tradevest_django.testing import FakeTradevestServer

REDIS_URL = os.environ.get("TRADEVEST_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis URL; skips (or fails under CI=true) when Redis does not answer."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as err:
        message = (
            f"needs Redis at {REDIS_URL} ({type(err).__name__}); start redis-server or set "
            "TRADEVEST_TEST_REDIS_URL"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis is required under CI=true: {message}")
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture
def redis_caches(settings: object, redis_url: str) -> dict[str, dict[str, object]]:
    """CACHES with Django's RedisCache as default, under a key prefix unique to this test."""
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"tvtest-{uuid.uuid4().hex[:12]}",
        }
    }
    settings.CACHES = caches  # type: ignore[attr-defined]
    return caches


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when the test says so (share it with the fake server)."""
    return FakeClock()


@pytest.fixture
def make_server() -> Iterator[ServerFactory]:
    """Start fake Tradevest servers: ``make_server("a-secret", clock=clock, ...)``.

    Each test gives its servers a secret of its own, so the leak scan can look for it. Every
    server started here is stopped after the test.
    """
    started: list[FakeTradevestServer] = []

    def make(secret: str = "test-secret", **options: Any) -> FakeTradevestServer:  # noqa: S107
        server = FakeTradevestServer(client_secret=secret, **options).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def secrets_of(servers: list[FakeTradevestServer]) -> set[str]:
    """Every client secret and access token the given fake servers know."""
    found = {"settings-client-secret"}
    for server in servers:
        found.update(
            secret for client in server.clients for secret in server.accepted_secrets(client)
        )
        # Every secret a client sent, accepted or not (fallbacks, callables, rotated ones).
        found.update(
            s for request in server.token_requests for s in request.form.get("client_secret", [])
        )
        found.update(server.issued_tokens)
    return found


def leaks_in(texts: list[str], secrets: set[str]) -> list[str]:
    return [text for text in texts for secret in secrets if secret and secret in text]


@pytest.fixture
def freezegun_in_threads() -> Iterator[None]:
    """freezegun gives real time to code called from ``threading`` (its default ignore list);
    the refresh thread must see the frozen clock like everyone else."""
    import freezegun
    import freezegun.config

    ignored = list(freezegun.config.settings.default_ignore_list)
    freezegun.configure(default_ignore_list=[])
    yield
    freezegun.configure(default_ignore_list=ignored)


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def debug_log_records(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[logging.LogRecord]]:
    """The suite-wide redaction proof, around every test.

    Collects every log record (all loggers, at DEBUG), every exception the package creates
    (message and repr), every management command's output and every system check message; after
    the test, scans them all for the client secrets and access tokens of the fake servers the
    test started. Yields the log records.
    """
    collector = _Collector()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(collector)
    root.setLevel(logging.DEBUG)
    started_servers: list[FakeTradevestServer] = []
    start = FakeTradevestServer.start

    def tracking_start(self: FakeTradevestServer) -> FakeTradevestServer:
        started_servers.append(self)
        return start(self)

    monkeypatch.setattr(FakeTradevestServer, "start", tracking_start)
    created: list[object] = []
    outputs: list[str] = []
    for cls in (TradevestError, TradevestConfigurationError, CheckMessage):
        monkeypatch.setattr(cls, "__init__", _recording(cls.__init__, created))
    original_write = OutputWrapper.write

    def write(self: OutputWrapper, msg: str = "", *args: object, **kwargs: object) -> None:
        outputs.append(msg)
        original_write(self, msg, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(OutputWrapper, "write", write)
    try:
        yield collector.records
    finally:
        root.removeHandler(collector)
        root.setLevel(old_level)
    formatter = logging.Formatter("%(message)s")
    logs = [formatter.format(record) for record in collector.records]
    objects = [text for obj in created for text in (str(obj), repr(obj))]
    secrets = secrets_of(started_servers)
    # ``tradevest_token --print-token`` prints exactly one token on purpose (documented as such).
    tokens = {token for server in started_servers for token in server.issued_tokens}
    outputs = [text for text in outputs if text.strip() not in tokens]
    leaked = leaks_in(logs + objects + outputs, secrets)
    figures.count("log_records_scanned", len(logs))
    figures.count("exceptions_and_check_messages_scanned", len(created))
    figures.count("command_outputs_scanned", len(outputs))
    figures.count("secrets_and_tokens_watched", len(secrets))
    figures.count("leaks_found", len(leaked))
    assert not leaked, f"a secret or token leaked into: {leaked[:3]!r}"


def _recording(init: Callable[..., None], created: list[object]) -> Callable[..., None]:
    def record(self: object, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)
        created.append(self)

    return record


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    figures.write()
