"""Fixtures of the reliability suite: private service processes and a database cache table.

Each fixture skips its test when the service cannot be had, and fails it under ``CI=true``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import services


@pytest.fixture
def private_redis_server(tmp_path: Path) -> Iterator[services.ServiceProcess]:
    """A redis-server of this test's own on a free port (never the shared one), stopped after."""
    with services.started(lambda: services.redis_server(tmp_path)) as server:
        yield server


@pytest.fixture
def private_memcached() -> Iterator[services.ServiceProcess]:
    """A memcached of this test's own on a free port, stopped after."""
    with services.started(services.memcached_server) as server:
        yield server


@pytest.fixture
def postgres_cache_table() -> Iterator[tuple[dict[str, Any], str]]:
    """(DATABASES, table): a database cache table under a unique name, dropped after."""
    databases = services.postgres_databases()
    table = f"tvcache_{uuid.uuid4().hex[:12]}"
    try:
        services.create_cache_table(databases, table)
        yield databases, table
    finally:
        services.drop_table(table)
