"""Clocks that jump or disagree: no expired token is ever sent, and no refresh storm follows.

* the whole machine's clock jumps forward past expiry and back by minutes (freezegun moves the
  manager and the fake server together);
* a host whose clock is off by minutes against the token server's ``Date`` header;
* a fleet where one host's clock is off, or steps, while the token server's clock does not.

Every token a manager returns is sent to the fake API, which answers 401 to an expired token.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
import requests
from django.core.cache.backends.locmem import LocMemCache
from freezegun import freeze_time

from tests.helpers import FakeClock, ServerFactory
from tests.reliability import figures
from tradevest_django.manager import TokenManager
from tradevest_django.sessions import TradevestAuth
from tradevest_django.testing import FakeTradevestServer
from tradevest_django.tokens import Token

LIFETIME = 300
#: Refresh ahead renews a token at >= 80 % of its life (margin 5 %, window <= 10 % + 25 % jitter).
MIN_RENEWAL = 0.8 * LIFETIME
STEP = 10.0
OFF = 600.0  # "off by minutes"


def api_status(server: FakeTradevestServer, token: Token) -> int:
    response = requests.get(
        f"{server.api_url}/prices", headers={"Authorization": token.authorization}, timeout=10
    )
    return response.status_code


def join_refresh(manager: TokenManager) -> None:
    thread = manager._refresh_thread
    if thread is not None:
        thread.join(timeout=10)
        assert not thread.is_alive()


def renewals_bound(seconds: float) -> int:
    """The most token requests refresh ahead may make in ``seconds``, plus the first one."""
    return math.ceil(seconds / MIN_RENEWAL) + 1


def manager_for(
    server: FakeTradevestServer,
    cache: LocMemCache,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    monotonic: Callable[[], float] | None = None,
) -> TokenManager:
    """One host's manager, on wall clock ``clock`` (and ``monotonic``, which never steps);
    the server stays on its own clock."""
    return TokenManager.from_options(
        "default", server.settings(), cache=cache, clock=clock, sleep=sleep, monotonic=monotonic
    )


@pytest.fixture
def server(make_server: ServerFactory, clock: FakeClock) -> FakeTradevestServer:
    """The token server, on its own (correct) clock."""
    return make_server("clock-secret-RTY", clock=clock, token_lifetime=LIFETIME)


@pytest.mark.usefixtures("freezegun_in_threads")
def test_machine_clock_jumps_forward_and_backward() -> None:
    start = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    with (
        freeze_time(start) as frozen,
        FakeTradevestServer(client_secret="clock-secret-RTY") as server,
    ):
        server.token_lifetime = LIFETIME
        manager = TokenManager.from_options(
            "default", server.settings(), cache=LocMemCache(f"clock-{uuid.uuid4()}", {})
        )
        first = manager.get_token()
        assert api_status(server, first) == 200

        frozen.tick(LIFETIME + 60)  # forward, past the token's expiry
        assert api_status(server, first) == 401  # it really expired for the server
        returned: set[Token] = set()
        lock = threading.Lock()

        def take() -> None:
            for _ in range(25):
                token = manager.get_token()
                with lock:
                    returned.add(token)

        threads = [threading.Thread(target=take) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads)
        assert first not in returned and len(returned) == 1
        assert server.token_request_count == 2  # exactly one new request for 200 callers
        (second,) = returned
        assert api_status(server, second) == 200

        frozen.move_to(start + timedelta(seconds=LIFETIME + 60 - 600))  # back by ten minutes
        for _ in range(1000):
            assert manager.get_token() is second
        assert manager._refresh_thread is None  # not even a background look at the cache
        assert server.token_request_count == 2
        assert api_status(server, second) == 200

        stepped = 0.0
        while stepped < 3 * LIFETIME + 600:  # walk forward again, through three lifetimes
            frozen.tick(STEP)
            stepped += STEP
            token = manager.get_token()
            join_refresh(manager)
            assert api_status(server, token) == 200, f"expired token sent {stepped} s later"
        added = server.token_request_count - 2
        figures.record(
            "infrastructure",
            scenario="machine clock jumps +360 s, then -600 s (freezegun, server too)",
            processes=1,
            threads=8,
            calls=200 + 1000 + int(stepped / STEP),
            token_requests=server.token_request_count,
            unauthorized=0,
            failed_calls=0,
        )
        assert 1 <= added <= renewals_bound(stepped - 600), added


@pytest.mark.parametrize("offset", [OFF, -OFF], ids=["host-ahead", "host-behind"])
def test_host_clock_off_by_minutes(
    server: FakeTradevestServer, clock: FakeClock, offset: float
) -> None:
    manager = manager_for(
        server,
        LocMemCache(f"skew-{uuid.uuid4()}", {}),
        lambda: clock() + offset,
        clock.sleep,
    )
    unauthorized = calls = 0
    steps = int(10 * LIFETIME / STEP)
    for _ in range(steps):
        for _ in range(3):
            token = manager.get_token()
            join_refresh(manager)
            issued = server.issued_tokens.index(token.access_token)
            server_expiry = server.token_requests[issued].received_at + LIFETIME
            # expires_at is on this host's clock, the cache's expiry on the server's (Date has a
            # one-second resolution)
            assert abs(token.expires_at_timestamp - (server_expiry + offset)) <= 1.01
            assert abs(token.server_expiry - server_expiry) <= 1.01
            calls += 1
            unauthorized += api_status(server, token) == 401
        clock.advance(STEP)
    figures.record(
        "infrastructure",
        scenario=f"host clock {offset:+.0f} s off the server's Date",
        processes=1,
        threads=1,
        calls=calls,
        token_requests=server.token_request_count,
        unauthorized=unauthorized,
        failed_calls=0,
    )
    assert calls == 3 * steps
    assert unauthorized == 0
    assert 10 <= server.token_request_count <= renewals_bound(steps * STEP)


def offset_clock(clock: FakeClock, offsets: dict[str, float], name: str) -> Callable[[], float]:
    """Host ``name``'s clock: the true time plus ``offsets[name]`` (which a test may change)."""
    return lambda: clock() + offsets[name]


class Host:
    """One host of a fleet: a token manager on the host's clock, and how it calls the API.

    ``through_session``: one long-lived session (``TradevestAuth``: the token at send time, one
    replay after a 401, the clock checked on its first response and on every 401). Otherwise
    the host sends requests itself with ``get_token()`` and, after a 401, invalidates the token
    (passing the response's ``Date``) and sends once more, as the README tells such callers to do.
    """

    def __init__(self, manager: TokenManager, server: FakeTradevestServer, through_session: bool):
        self.manager = manager
        self.url = f"{server.api_url}/prices"
        self.session = requests.Session()
        if through_session:
            self.session.auth = TradevestAuth(manager=manager)
        self.through_session = through_session
        self.rejected = 0  # 401s the API sent to this host
        self.failed = 0  # calls whose caller got something else than 200

    def call(self) -> None:
        if self.through_session:
            response = self.session.get(self.url, timeout=10)
            join_refresh(self.manager)
            self.rejected += sum(1 for r in [*response.history, response] if r.status_code == 401)
            self.failed += response.status_code != 200
            return
        for _ in range(2):
            token = self.manager.get_token()
            join_refresh(self.manager)
            response = self.session.get(self.url, headers={"Authorization": token.authorization})
            if response.status_code != 401:
                break
            self.rejected += 1
            self.manager.invalidate(token, server_date=response.headers.get("Date"))
        self.failed += response.status_code != 200


def run_hosts(
    server: FakeTradevestServer,
    clock: FakeClock,
    offsets: dict[str, float],
    *,
    through_session: bool,
    step_clock: tuple[int, str, float] | None = None,
) -> dict[str, Host]:
    """Hosts sharing one cache (as through Redis), each on its own clock, call the API every
    STEP for ten lifetimes; ``step_clock=(step, host, seconds)`` steps one host's clock then."""
    cache = LocMemCache(f"hosts-{uuid.uuid4()}", {})
    hosts = {
        name: Host(
            manager_for(
                server,
                cache,
                offset_clock(clock, offsets, name),
                clock.sleep,
                monotonic=clock,  # a host's monotonic clock runs true, whatever its wall clock
            ),
            server,
            through_session,
        )
        for name in offsets
    }
    scenario = ", ".join(f"host {name} {offset:+.0f} s" for name, offset in offsets.items())
    if step_clock is not None:
        scenario += f", its clock stepping {step_clock[2]:+.0f} s"
    steps = int(10 * LIFETIME / STEP)
    try:
        for step in range(steps):
            if step_clock is not None and step == step_clock[0]:
                offsets[step_clock[1]] += step_clock[2]
            for host in hosts.values():
                host.call()
            clock.advance(STEP)
    finally:
        for host in hosts.values():
            host.session.close()
    figures.record(
        "infrastructure",
        scenario=f"{scenario} (server right), shared cache, "
        + ("get_session()" if through_session else "get_token() and own requests"),
        processes=len(hosts),
        threads=1,
        calls=len(hosts) * steps,
        token_requests=server.token_request_count,
        unauthorized=sum(host.failed for host in hosts.values()),
        failed_calls=sum(host.failed for host in hosts.values()),
        note=f"requests the API rejected (401): {sum(host.rejected for host in hosts.values())}",
    )
    return hosts


def test_fleet_host_with_a_fast_clock(server: FakeTradevestServer, clock: FakeClock) -> None:
    hosts = run_hosts(server, clock, {"fetcher": 0.0, "fast": OFF}, through_session=True)
    assert all(host.rejected == 0 and host.failed == 0 for host in hosts.values())
    # the fast host finds the shared token expired and fetches once, learning its skew
    assert server.token_request_count <= renewals_bound(10 * LIFETIME) + 1


@pytest.mark.parametrize(
    "through_session",
    [
        pytest.param(True, id="get_session"),
        pytest.param(False, id="get_token"),
    ],
)
def test_fleet_host_with_a_slow_clock(
    server: FakeTradevestServer, clock: FakeClock, through_session: bool
) -> None:
    offsets = {"fetcher": 0.0, "slow": -OFF}
    hosts = run_hosts(server, clock, offsets, through_session=through_session)
    assert all(host.failed == 0 for host in hosts.values())
    assert hosts["fetcher"].rejected == 0
    # A session learns the skew from its first response. A host sending its own requests
    # learns it from the Date of the first 401 it passes to invalidate(): at most one.
    assert hosts["slow"].rejected <= (0 if through_session else 1)
    assert server.token_request_count <= renewals_bound(10 * LIFETIME)


@pytest.mark.parametrize(
    "step",
    [
        pytest.param(OFF, id="forward"),
        pytest.param(-OFF, id="back"),
    ],
)
def test_host_clock_steps_while_the_server_clock_does_not(
    server: FakeTradevestServer, clock: FakeClock, step: float
) -> None:
    hosts = run_hosts(
        server,
        clock,
        {"stepping": 0.0},
        through_session=True,
        step_clock=(3, "stepping", step),
    )
    assert hosts["stepping"].failed == 0  # no 401 reaches the caller either way
    assert server.token_request_count <= renewals_bound(10 * LIFETIME) + 1
    assert hosts["stepping"].rejected == 0
