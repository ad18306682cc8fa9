"""The normalizer scheduler: tasks per raw file, against a fake world and fake queues."""

from __future__ import annotations

import uuid
from datetime import timedelta

import msgspec
import pytest

from redisched.clients.amqp import RawFileReceived
from redisched.models import Boefje, BoefjeMeta, BoefjeTask, MimeType, RawData
from redisched.schedulers.normalizer import NormalizerScheduler
from tests.simulation.fakes import Clock, fake_context
from tests.simulation.world import World, normalizer


@pytest.fixture
def world() -> World:
    world = World()
    world.add_plugin("org1", normalizer("kat_dns_normalize", ["boefje/dns-records", "text/plain"]))
    world.add_plugin("org1", normalizer("kat_generic", ["text/plain"]))
    world.add_plugin("org1", normalizer("kat_off", ["boefje/dns-records"], enabled=False))
    return world


@pytest.fixture
def setup(world):
    clock = Clock()
    ctx, outlet, _ = fake_context(world, clock)
    return NormalizerScheduler(ctx), outlet, clock


def raw_file(*mime_types: str, ended_ago: timedelta | None = timedelta(hours=1), clock: Clock | None = None) -> RawFileReceived:
    now = (clock or Clock()).now
    meta = BoefjeMeta(
        id=uuid.uuid4(), boefje=Boefje(id="dns-records"), input_ooi="Hostname|internet|example.com",
        organization="org1", started_at=now - timedelta(hours=2), ended_at=now - ended_ago if ended_ago else None,
    )  # fmt: skip
    raw = RawData(id=uuid.uuid4(), boefje_meta=meta, mime_types=[MimeType(value=m) for m in mime_types])
    return RawFileReceived(organization="org1", raw_data=raw)


async def test_one_task_per_distinct_enabled_normalizer_of_the_mime_types(setup):
    scheduler, outlet, _ = setup
    await scheduler.handle_raw_file(raw_file("boefje/dns-records", "text/plain", "text/plain"))
    assert sorted(p.data["normalizer"]["id"] for p in outlet.pushed) == ["kat_dns_normalize", "kat_generic"]
    assert all(p.scheduler_id == "normalizer" and p.organisation == "org1" for p in outlet.pushed)


async def test_a_raw_file_with_an_error_mime_type_gets_no_tasks(setup):
    scheduler, outlet, _ = setup
    await scheduler.handle_raw_file(raw_file("boefje/dns-records", "error/boefje"))
    assert outlet.pushed == []


async def test_no_normalizer_for_the_mime_types_means_no_tasks(setup):
    scheduler, outlet, _ = setup
    await scheduler.handle_raw_file(raw_file("image/png"))
    assert outlet.pushed == []


async def test_the_priority_is_the_boefje_runs_end_in_epoch_seconds(setup):
    scheduler, outlet, clock = setup
    event = raw_file("boefje/dns-records", clock=clock)
    await scheduler.handle_raw_file(event)
    [task] = outlet.pushed
    assert task.priority == int(event.raw_data.boefje_meta.ended_at.timestamp())
    assert task.data["raw_data"]["id"] == str(event.raw_data.id)


async def test_the_same_raw_file_twice_queues_its_tasks_once(setup):
    scheduler, outlet, _ = setup
    event = raw_file("boefje/dns-records")
    await scheduler.handle_raw_file(event)
    await scheduler.handle_raw_file(event)
    assert len(outlet.pushed) == 1


async def test_a_deschedule_raw_file_deletes_the_boefjes_schedule_and_makes_no_tasks(world):
    clock = Clock()
    ctx, outlet, history = fake_context(world, clock)
    event = raw_file("openkat/deschedule", "text/plain")
    meta = event.raw_data.boefje_meta
    task = BoefjeTask(boefje=meta.boefje, input_ooi=meta.input_ooi, organization="org1")
    schedule = history.add_schedule("boefje", msgspec.to_builtins(task), clock.now)
    without_object = msgspec.to_builtins(BoefjeTask(boefje=meta.boefje, organization="org1"))
    other = history.add_schedule("boefje", without_object, clock.now)
    await NormalizerScheduler(ctx).handle_raw_file(event)
    assert outlet.pushed == []
    assert list(history.schedules) == [other.id]
    assert [schedule_id for schedule_id, _ in outlet.unlinked] == [schedule.id]


async def test_a_deschedule_raw_file_without_a_schedule_does_nothing(setup):
    scheduler, outlet, _ = setup
    await scheduler.handle_raw_file(raw_file("openkat/deschedule"))
    assert outlet.pushed == [] and outlet.unlinked == []
