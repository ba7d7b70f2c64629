"""The fake Tradevest server and the Redis keys of one client run.

Each client run gets a fresh :class:`FakeTradevestServer` (in this process, threaded, on
loopback) with a random client secret, and tradevest-django a fresh Redis key prefix, so no run
can see another's tokens or counters.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from bench.clients import Target
from tradevest_django.testing import FakeTradevestServer
from tradevest_django.testing import _http as fake_server_module

#: The fake server's listen backlog. socketserver's default is 5: when a fleet's 64 to 128
#: threads connect at the start line, Linux drops the overflow and the clients' SYN-ACK
#: retransmits stall calls (token requests included) for 1 to 30 s. A real auth server or API
#: has no such backlog, so the benchmark raises it (for every client alike).
LISTEN_BACKLOG = 1024
fake_server_module._Server.request_queue_size = LISTEN_BACKLOG


@contextlib.contextmanager
def fake_server(
    lifetime: int, *, token_delay: float = 0.0
) -> Iterator[tuple[FakeTradevestServer, Callable[[str], str]]]:
    """A fresh fake server and a function that masks its secret and tokens in worker errors."""
    server = FakeTradevestServer(
        client_id=f"bench-{uuid.uuid4().hex[:8]}",
        client_secret=secrets.token_urlsafe(24),
        token_lifetime=lifetime,
    )
    server.token_delay = token_delay

    def redact(text: str) -> str:
        for secret in [server.client_secret, *server.issued_tokens]:
            text = text.replace(secret, "***")
        return text

    with server:
        yield server, redact


#: Set (by ``run.py --with-fallback``): tradevest-django gets a fallback secret it never needs.
FALLBACK_VARIABLE = "TRADEVEST_BENCH_FALLBACK"


def target(server: FakeTradevestServer, redis_url: str, key_prefix: str) -> dict[str, Any]:
    """The job's ``target``: the fake server's URLs and credentials, as plain JSON."""
    tradevest = server.settings()
    if os.environ.get(FALLBACK_VARIABLE):
        tradevest["CLIENT_SECRET_FALLBACKS"] = ["bench-older-secret"]
    return asdict(
        Target(
            token_url=server.token_url,
            api_url=server.api_url,
            client_id=server.client_id,
            client_secret=server.client_secret,
            lifetime=server.token_lifetime,
            tradevest=tradevest,
            redis_url=redis_url,
            key_prefix=key_prefix,
        )
    )
