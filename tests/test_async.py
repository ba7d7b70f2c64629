"""aget_token(): the event loop keeps running, and single flight holds at every level."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import tradevest_django
from tradevest_django.exceptions import InvalidClient
from tradevest_django.testing import FakeTradevestServer, Fault


@pytest.fixture
def server(tradevest_settings: FakeTradevestServer) -> FakeTradevestServer:
    return tradevest_settings


def test_aget_token_and_get_token_share_one_token(server: FakeTradevestServer) -> None:
    first = asyncio.run(tradevest_django.aget_token())
    assert tradevest_django.get_token() is first
    assert asyncio.run(tradevest_django.aget_token()) is first
    assert server.token_request_count == 1


def test_the_loop_keeps_running_while_a_token_is_requested(server: FakeTradevestServer) -> None:
    server.token_delay = 0.8

    async def scenario() -> list[float]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.005)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        started = time.monotonic()
        await tradevest_django.aget_token()
        assert time.monotonic() - started >= 0.75  # the request really took its time
        done.set()
        await task
        return gaps

    gaps = asyncio.run(scenario())
    assert len(gaps) > 50
    assert max(gaps) < 0.05, f"the loop stalled {max(gaps) * 1000:.0f} ms"


def test_500_coroutines_on_a_cold_cache_make_one_request(server: FakeTradevestServer) -> None:
    server.token_delay = 0.2

    async def scenario() -> set[str]:
        tokens = await asyncio.gather(*(tradevest_django.aget_token() for _ in range(500)))
        return {token.access_token for token in tokens}

    assert asyncio.run(scenario()) == {server.issued_tokens[0]}
    assert server.token_request_count == 1


def test_loops_in_four_threads_and_sync_callers_share_one_request(
    server: FakeTradevestServer,
) -> None:
    server.token_delay = 0.3
    barrier = threading.Barrier(6)
    seen: list[str] = []
    errors: list[BaseException] = []

    def loop_thread() -> None:
        async def coroutines() -> None:
            barrier.wait(timeout=10)
            tokens = await asyncio.gather(*(tradevest_django.aget_token() for _ in range(50)))
            seen.extend(token.access_token for token in tokens)

        try:
            asyncio.run(coroutines())
        except BaseException as err:
            errors.append(err)

    def sync_thread() -> None:
        barrier.wait(timeout=10)
        seen.append(tradevest_django.get_token().access_token)

    threads = [threading.Thread(target=loop_thread) for _ in range(4)]
    threads += [threading.Thread(target=sync_thread) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors and not any(thread.is_alive() for thread in threads)
    assert len(seen) == 4 * 50 + 2 and set(seen) == {server.issued_tokens[0]}
    assert server.token_request_count == 1


def test_asyncio_run_twice_under_contention(server: FakeTradevestServer) -> None:
    server.token_delay = 0.1

    async def burst() -> None:
        await asyncio.gather(*(tradevest_django.aget_token() for _ in range(20)))

    asyncio.run(burst())
    tradevest_django.invalidate_token(tradevest_django.get_token())
    asyncio.run(burst())  # a new loop: nothing of the first one is used
    assert server.token_request_count == 2


def test_a_cancelled_waiter_does_not_cancel_the_others(server: FakeTradevestServer) -> None:
    server.token_delay = 0.3

    async def scenario() -> str:
        impatient = asyncio.create_task(tradevest_django.aget_token())
        patient = asyncio.create_task(tradevest_django.aget_token())
        await asyncio.sleep(0.05)
        impatient.cancel()
        return (await patient).access_token

    assert asyncio.run(scenario()) == server.issued_tokens[0]
    assert server.token_request_count == 1


def test_errors_reach_every_waiter(server: FakeTradevestServer) -> None:
    server.inject(Fault.error("invalid_client", delay=0.1))

    async def scenario() -> list[BaseException | object]:
        return await asyncio.gather(
            *(tradevest_django.aget_token() for _ in range(10)), return_exceptions=True
        )

    results = asyncio.run(scenario())
    assert all(isinstance(result, InvalidClient) for result in results)
    assert server.token_request_count == 1


def test_ainvalidate_token(server: FakeTradevestServer) -> None:
    async def scenario() -> tuple[bool, str]:
        token = await tradevest_django.aget_token()
        dropped = await tradevest_django.ainvalidate_token(token)
        return dropped, (await tradevest_django.aget_token()).access_token

    dropped, fresh = asyncio.run(scenario())
    assert dropped and fresh == server.issued_tokens[1]
