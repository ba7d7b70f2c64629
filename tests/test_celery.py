"""A real Celery worker (prefork, 4 processes) sharing one token through Redis."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from tests.helpers import ServerFactory, stop_process
from tradevest_django.testing import FakeTradevestServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
TASKS = 240
LIFETIME = 2


@pytest.fixture
def server(make_server: ServerFactory) -> FakeTradevestServer:
    return make_server("celery-secret-ZXCV", token_lifetime=LIFETIME)


@pytest.fixture
def worker(
    server: FakeTradevestServer, redis_url: str, tmp_path: Path
) -> Iterator[tuple[Celery, str]]:
    queue = f"tvtest-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "tests.celery_settings",
        "TEST_REDIS_URL": redis_url,
        "TEST_KEY_PREFIX": queue,
        "TRADEVEST_CLIENT_ID": server.client_id,
        "TRADEVEST_CLIENT_SECRET": server.client_secret,
        "TRADEVEST_AUTH_URL": server.auth_url,
        "TRADEVEST_API_URL": server.api_url,
    }
    log_path = tmp_path / "worker.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.celery_app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "4",
            "--queues",
            queue,
            "--hostname",
            f"{queue}@%h",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = Celery("tvtests-client", broker=redis_url, backend=redis_url)
    try:
        deadline = time.monotonic() + 60
        while not client.control.ping(destination=[f"{queue}@{os.uname().nodename}"], timeout=0.5):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the Celery worker did not start within 60 s"
        yield client, queue
    finally:
        stop_process(proc, grace=30)  # a warm shutdown lets running tasks finish
        log.close()
        client.close()


def test_prefork_worker_shares_one_token_per_lifetime(
    server: FakeTradevestServer, worker: tuple[Celery, str]
) -> None:
    client, queue = worker
    server.api_delay = 0.02  # each call takes a moment, so bursts spread over the pool
    results = []
    for number in range(TASKS):
        results.append(client.send_task("tvtests.call_api", args=[number], queue=queue))
        if number % 8 == 7:
            time.sleep(0.15)  # bursts spread over several token lifetimes; pacing, not syncing
    outcomes = [result.get(timeout=60) for result in results]
    assert len(outcomes) == TASKS
    assert all(outcome["status"] == 200 for outcome in outcomes), outcomes
    assert len({outcome["pid"] for outcome in outcomes}) > 1  # really several processes
    assert server.api_unauthorized_count == 0
    calls = [r.received_at for r in server.api_requests]
    span = max(calls) - server.token_requests[0].received_at
    lifetimes = math.ceil(span / LIFETIME)
    print(
        f"celery: {TASKS} tasks, {server.token_request_count} token requests, {lifetimes} lifetimes"
    )
    assert lifetimes >= 3  # the token expired at least twice during the run
    assert server.token_request_count <= lifetimes + 1, (server.token_request_count, lifetimes)
