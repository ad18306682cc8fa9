"""The runner: which schedulers run, loops that survive failures, clean stop."""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest
from fakeredis import FakeAsyncRedis

from redisched.clients.amqp import Retryable
from redisched.clients.http import ServiceUnavailable
from redisched.schedulers import runner as runner_module
from redisched.schedulers.runner import SchedulerRunner, supervise
from redisched.schedulers.seen import SeenBoefjes
from tests.simulation.fakes import Clock, fake_context
from tests.support.cancellation import lose_cancellation
from tests.simulation.world import World


def make_runner(**options) -> SchedulerRunner:
    ctx, _, _ = fake_context(World(), Clock())
    return SchedulerRunner(ctx, SeenBoefjes(FakeAsyncRedis(), "unit"), **options)


def test_without_katalogus_only_the_report_scheduler_works():
    runner = make_runner(unconfigured=["katalogus"])
    assert runner.boefje is None and runner.normalizer is None
    assert list(runner.rounds()) == ["report: due schedules"] and runner.handlers() == {}


def test_without_bytes_the_normalizer_still_works():
    runner = make_runner(unconfigured=["bytes"])
    assert runner.boefje is None and runner.normalizer is not None
    assert list(runner.handlers()) == ["raw_file_received"]


def test_with_everything_configured_all_rounds_and_listeners_exist():
    runner = make_runner(mutations_queue="m", raw_files_queue="r")
    assert set(runner.rounds()) == {"report: due schedules", "boefje: new boefjes", "boefje: due schedules"}
    assert set(runner.handlers()) == {"m", "r"}


async def test_idle_schedulers_say_so_once_at_start(caplog):
    runner = make_runner(unconfigured=["katalogus", "octopoes"], interval=None)
    with caplog.at_level(logging.WARNING, logger="redisched.schedulers.runner"):
        await runner.start()
        await runner.tick()
        await runner.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "boefje scheduler idle: katalogus, octopoes not configured",
        "normalizer scheduler idle: katalogus not configured",
        "no RabbitMQ configured (QUEUE_URI): scan profile mutations and raw files are not read",
    ]


async def test_a_failing_round_is_logged_with_its_traceback_and_retried_with_backoff(monkeypatch, caplog):
    monkeypatch.setattr(runner_module, "FIRST_RETRY_SECONDS", 0.05)
    calls = []

    async def flaky() -> None:
        calls.append(asyncio.get_running_loop().time())
        if len(calls) <= 3:
            raise RuntimeError(f"boom {len(calls)}")

    with caplog.at_level(logging.INFO, logger="redisched.schedulers.runner"):
        loop = asyncio.create_task(supervise("flaky", flaky, interval=30))
        while len(calls) < 4:
            await asyncio.sleep(0.01)
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps[2] > gaps[0] * 2  # backing off: nominally 0.05, 0.1, 0.2 s
    first, *rest = [r for r in caplog.records if "flaky" in r.getMessage()]
    assert first.exc_info is not None and "boom 1" in str(first.exc_info[1])
    assert [r.exc_info for r in rest[:2]] == [None, None]
    assert rest[-1].getMessage() == "flaky works again after 3 failures"


async def test_a_loop_whose_cancellation_was_lost_in_a_round_stops_instead_of_sleeping_to_the_next():
    """A round's Redis send (under a socket timeout) or pool wait may lose the cancellation
    on Python 3.11: the loop must not sleep its interval into the next round (the worker's
    stop waited for it, 5 s, then gave up on it)."""
    rounds = 0

    async def round_losing_the_cancellation() -> None:
        nonlocal rounds
        rounds += 1
        await lose_cancellation()

    loop = asyncio.create_task(supervise("quiet", round_losing_the_cancellation, interval=60))
    done, _ = await asyncio.wait([loop], timeout=5)
    assert done and loop.cancelled() and rounds == 1


async def test_stop_ends_the_loops():
    runner = make_runner(unconfigured=["katalogus"], interval=0.01)
    await runner.start()
    loops = list(runner._loops)
    await runner.stop()
    assert all(loop.done() for loop in loops)


async def test_a_service_outage_in_a_handler_is_retryable_not_poison():
    async def outage(_message) -> None:
        raise ServiceUnavailable("katalogus", "down")

    handle = runner_module._handler(dict, outage, None)
    with pytest.raises(Retryable):
        await handle(msgspec.json.encode({}))
