"""OpenTelemetry metrics and traces, read back through the SDK's in-memory reader and exporter."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import pytest

from tests.helpers import CountingCache, FakeClock, ServerFactory
from tradevest_django.exceptions import InvalidClient
from tradevest_django.manager import TokenManager
from tradevest_django.testing import FakeTradevestServer, Fault

pytest.importorskip("opentelemetry.sdk", reason="needs opentelemetry-sdk (the test extra)")

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)


def _installed() -> tuple[InMemoryMetricReader, InMemorySpanExporter]:
    """The in-memory reader and exporter, on the global providers (which are set once per
    process: a second run of the suite in the same process finds them there)."""
    meter_provider: Any = metrics.get_meter_provider()
    if not hasattr(meter_provider, "in_memory_reader"):
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[reader])
        meter_provider.in_memory_reader = reader
        metrics.set_meter_provider(meter_provider)
    tracer_provider: Any = trace.get_tracer_provider()
    if not hasattr(tracer_provider, "in_memory_exporter"):
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer_provider.in_memory_exporter = exporter
        trace.set_tracer_provider(tracer_provider)
    return meter_provider.in_memory_reader, tracer_provider.in_memory_exporter


_READER, _EXPORTER = _installed()


@pytest.fixture
def server(make_server: ServerFactory, clock: FakeClock) -> FakeTradevestServer:
    return make_server("otel-secret-Tq5", clock=clock)


def points(name: str, alias: str) -> list[Any]:
    data = _READER.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found += [
                        p
                        for p in metric.data.data_points
                        if p.attributes.get("tradevest.alias") == alias
                    ]
    return found


def counted(alias: str, **attributes: str) -> int:
    return sum(
        int(p.value)
        for p in points("tradevest.token.requests", alias)
        if all(p.attributes.get(k) == v for k, v in attributes.items())
    )


def spans(alias: str) -> list[Any]:
    return [
        s for s in _EXPORTER.get_finished_spans() if s.attributes.get("tradevest.alias") == alias
    ]


def manager_for(server: FakeTradevestServer, clock: FakeClock, alias: str) -> TokenManager:
    return TokenManager.from_options(
        alias,
        server.settings(FAILURE_COOLDOWN=0),
        cache=CountingCache(),
        clock=clock,
        sleep=clock.sleep,
    )


def test_the_counter_equals_the_servers_count(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    alias = f"otel-{uuid.uuid4().hex[:8]}"
    manager = manager_for(server, clock, alias)
    server.inject(Fault.error("invalid_client"))
    with pytest.raises(InvalidClient):
        manager.get_token()
    manager.get_token()
    server.inject(Fault.status(503))  # one retried attempt, then a token: two requests
    manager.refresh()
    assert server.token_request_count == 4
    assert counted(alias) == server.token_request_count
    assert counted(alias, outcome="success") == 2
    assert counted(alias, outcome="error", **{"error.type": "invalid_client"}) == 1
    assert counted(alias, outcome="error", **{"error.type": "TokenEndpointUnavailable"}) == 1
    fetches = points("tradevest.token.request.duration", alias)
    assert sum(p.count for p in fetches) == 3  # one per fetch, retries included
    assert {p.attributes["outcome"] for p in fetches} == {"success", "error"}


def test_each_fetch_is_a_span_under_the_current_one(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    alias = f"otel-{uuid.uuid4().hex[:8]}"
    manager = manager_for(server, clock, alias)
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("GET /prices") as parent:
        manager.get_token()
    server.inject(Fault.error("invalid_client"))
    manager.invalidate(manager.get_token())
    with pytest.raises(InvalidClient):
        manager.get_token()
    first, second = spans(alias)
    assert first.name == "tradevest token request"
    assert first.parent is not None
    assert first.parent.span_id == parent.get_span_context().span_id
    assert first.attributes["server.address"] == server.url.removeprefix("http://")
    assert first.attributes["http.response.status_code"] == 200
    assert "error.type" not in first.attributes
    assert second.attributes["http.response.status_code"] == 400
    assert second.attributes["error.type"] == "invalid_client"
    assert second.status.is_ok is False
    assert all("otel-secret-Tq5" not in str(s.to_json()) for s in (first, second))


def test_the_gauge_reads_the_in_process_token(
    server: FakeTradevestServer, clock: FakeClock
) -> None:
    alias = f"otel-{uuid.uuid4().hex[:8]}"
    manager = manager_for(server, clock, alias)
    assert points("tradevest.token.time_to_expiry", alias) == []
    manager.get_token()
    clock.advance(600)
    (gauge,) = points("tradevest.token.time_to_expiry", alias)
    assert abs(gauge.value - 3000) < 2


def test_the_hot_path_records_nothing(server: FakeTradevestServer, clock: FakeClock) -> None:
    alias = f"otel-{uuid.uuid4().hex[:8]}"
    manager = manager_for(server, clock, alias)
    manager.get_token()
    before = (counted(alias), len(spans(alias)))
    durations = sum(p.count for p in points("tradevest.token.request.duration", alias))
    for _ in range(1000):
        manager.get_token()
    assert (counted(alias), len(spans(alias))) == before == (1, 1)
    assert sum(p.count for p in points("tradevest.token.request.duration", alias)) == durations


def test_without_opentelemetry_nothing_is_imported() -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "import django\n"
        "from django.conf import settings\n"
        "settings.configure(SECRET_KEY='x')\n"
        "django.setup()\n"
        "from tradevest_django import telemetry\n"
        "fetch = telemetry.Fetch('default', 'host')\n"
        "with fetch.span() as report:\n"
        "    report.attempt(200, None)\n"
        "assert telemetry.instruments() is None\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "ok"
