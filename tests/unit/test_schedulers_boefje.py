"""The boefje scheduler's decisions, against a fake world and fake queues/history."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from fakeredis import FakeAsyncRedis

from redisched.clients.amqp import MutatedObject, MutationOperation, ScanProfile, ScanProfileMutation
from redisched.clients.http import ServiceUnavailable
from redisched.history.scheduler_queries import TaskState
from redisched.models import TaskStatus, payload_hash
from redisched.schedulers.boefje import CLAIM_HOLD, SCHEDULES_PER_BATCH, BoefjeScheduler
from redisched.schedulers.seen import SeenBoefjes
from tests.simulation.fakes import Clock, fake_context
from tests.simulation.world import World, boefje

HOST = "Hostname|internet|example.com"


@pytest.fixture
def world() -> World:
    world = World()
    world.add_plugin("org1", boefje("dns-records", scan_level=1))
    world.add_plugin("org1", boefje("nmap", scan_level=2))
    world.add_plugin("org1", boefje("off", scan_level=0, enabled=False))
    world.add_plugin("org1", boefje("ip-only", consumes=["IPAddressV4"], scan_level=0))
    world.add_object("org1", HOST, 1)
    return world


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def setup(world, clock):
    ctx, outlet, history = fake_context(world, clock)
    seen = SeenBoefjes(FakeAsyncRedis(), "unit")
    return BoefjeScheduler(ctx, seen), outlet, history


def mutation(level: int | None = 1, operation: str = "create", pk: str = HOST, org: str = "org1") -> ScanProfileMutation:
    value = None
    if level is not None:
        value = MutatedObject(primary_key=pk, object_type=pk.split("|")[0], scan_profile=ScanProfile(level=level))
    return ScanProfileMutation(operation=MutationOperation(operation), primary_key=pk, value=value, client_id=org)


def created(outlet) -> set[tuple[str, str | None, str]]:
    return {(p.data["boefje"]["id"], p.data["input_ooi"], p.organisation) for p in outlet.pushed}


def boefje_hash(boefje_id: str, ooi: str | None = HOST, org: str = "org1") -> str:
    return payload_hash("boefje", {"boefje": {"id": boefje_id}, "input_ooi": ooi, "organization": org})


# --- scan profile mutations ------------------------------------------------------------------


async def test_a_mutation_creates_tasks_for_enabled_boefjes_within_the_objects_scan_level(setup):
    scheduler, outlet, _ = setup
    await scheduler.handle_mutation(mutation(level=1))
    assert created(outlet) == {("dns-records", HOST, "org1")}
    await scheduler.handle_mutation(mutation(level=2, operation="update"))
    assert created(outlet) == {("dns-records", HOST, "org1"), ("nmap", HOST, "org1")}


async def test_a_task_carries_its_id_the_boefje_and_the_creation_time_as_priority(setup, clock):
    scheduler, outlet, _ = setup
    await scheduler.handle_mutation(mutation())
    [task] = outlet.pushed
    assert task.priority == int(clock.now.timestamp())
    assert task.data["boefje"] == {"id": "dns-records", "name": "dns-records", "version": None, "oci_image": None}
    assert task.data["deduplication_key"] is None and task.schedule is True
    uuid.UUID(task.data["id"])


async def test_a_mutation_without_value_is_ignored(setup):
    scheduler, outlet, _ = setup
    await scheduler.handle_mutation(mutation(level=None, operation="delete"))
    assert outlet.pushed == [] and outlet.cancelled == []


async def test_a_delete_with_value_cancels_the_objects_queued_tasks(setup):
    scheduler, outlet, _ = setup
    await scheduler.handle_mutation(mutation(operation="delete"))
    assert outlet.pushed == [] and outlet.cancelled == [("org1", HOST)]


async def test_run_on_boefjes_run_on_their_operation_only_and_link_no_schedule(setup, world):
    world.add_plugin("org1", boefje("on-create", run_on=["create"], scan_level=0))
    world.add_plugin("org1", boefje("on-update", run_on=["update"], scan_level=0))
    scheduler, outlet, _ = setup
    await scheduler.handle_mutation(mutation(operation="update"))
    assert {p.data["boefje"]["id"]: p.schedule for p in outlet.pushed} == {"dns-records": True, "on-update": False}


async def test_a_boefje_bytes_saw_run_within_the_grace_period_is_skipped(setup, world, clock):
    world.record_run("dns-records", HOST, "org1", clock.now - timedelta(hours=3), clock.now - timedelta(hours=2))
    scheduler, outlet, _ = setup
    await scheduler.handle_mutation(mutation())
    assert outlet.pushed == []


async def test_a_boefje_with_an_interval_runs_again_once_it_passed(setup, world, clock):
    world.add_plugin("org1", boefje("dns-records", scan_level=1, interval=60))
    world.record_run("dns-records", HOST, "org1", clock.now - timedelta(hours=3), clock.now - timedelta(hours=2))
    scheduler, outlet, _ = setup
    await scheduler.handle_mutation(mutation())
    assert created(outlet) == {("dns-records", HOST, "org1")}


async def test_a_task_in_our_history_that_is_running_or_recent_blocks_and_bytes_is_not_asked(setup, world, clock):
    scheduler, outlet, history = setup
    history.latest[boefje_hash("dns-records")] = TaskState(uuid.uuid4(), TaskStatus.RUNNING, clock.now - timedelta(days=2))
    await scheduler.handle_mutation(mutation())
    assert outlet.pushed == [] and not [r for r in world.requests if r.startswith("bytes")]


async def test_a_task_finished_longer_than_the_grace_period_ago_is_created_again(setup, clock):
    scheduler, outlet, history = setup
    history.latest[boefje_hash("dns-records")] = TaskState(uuid.uuid4(), TaskStatus.COMPLETED, clock.now - timedelta(hours=25))
    await scheduler.handle_mutation(mutation())
    assert created(outlet) == {("dns-records", HOST, "org1")}


async def test_a_queued_twin_is_not_pushed_again(setup):
    scheduler, outlet, _ = setup
    await scheduler.handle_mutation(mutation())
    await scheduler.handle_mutation(mutation(operation="update"))
    assert len(outlet.pushed) == 1


async def test_a_task_stalled_in_dispatched_is_failed_in_the_history_and_replaced(setup, clock):
    scheduler, outlet, history = setup
    stalled = TaskState(uuid.uuid4(), TaskStatus.DISPATCHED, clock.now - timedelta(hours=25))
    history.latest[boefje_hash("dns-records")] = stalled
    await scheduler.handle_mutation(mutation())
    assert history.failed == [stalled.id] and created(outlet) == {("dns-records", HOST, "org1")}


async def test_a_stalled_task_redis_still_holds_as_dispatched_is_failed_in_redis(setup, clock):
    scheduler, outlet, history = setup
    stalled = TaskState(uuid.uuid4(), TaskStatus.DISPATCHED, clock.now - timedelta(hours=25))
    history.latest[boefje_hash("dns-records")] = stalled
    outlet.live[stalled.id] = "dispatched"
    await scheduler.handle_mutation(mutation())
    assert outlet.live[stalled.id] == "failed" and history.failed == [] and len(outlet.pushed) == 1


async def test_a_task_redis_shows_running_is_not_stalled_whatever_the_history_says(setup, clock):
    scheduler, outlet, history = setup
    lagging = TaskState(uuid.uuid4(), TaskStatus.DISPATCHED, clock.now - timedelta(hours=25))
    history.latest[boefje_hash("dns-records")] = lagging
    outlet.live[lagging.id] = "running"
    await scheduler.handle_mutation(mutation())
    assert history.failed == [] and outlet.pushed == []


async def test_an_outage_of_bytes_propagates(setup, world):
    scheduler, _, _ = setup

    async def down(*_args):
        raise ServiceUnavailable("bytes", "down")

    scheduler.ctx.bytes.get_last_run_boefje = down
    with pytest.raises(ServiceUnavailable):
        await scheduler.handle_mutation(mutation())


# --- cross-organisation dedup ----------------------------------------------------------------


async def test_duplicate_configs_give_the_other_organisations_tasks_sharing_a_deduplication_key(setup, world):
    world.duplicates["dns-records"] = {"org1", "org2", "org3", "org4"}
    world.add_object("org2", HOST, 1)
    world.add_object("org3", HOST, 0)  # below the boefje's scan level
    scheduler, outlet, _ = setup
    await scheduler.handle_mutation(mutation())
    assert created(outlet) == {("dns-records", HOST, "org1"), ("dns-records", HOST, "org2")}
    original, twin = outlet.pushed
    assert original.data["deduplication_key"] == original.data["id"] == twin.data["deduplication_key"]
    assert twin.data["id"] != original.data["id"] and twin.organisation == "org2" and twin.schedule


async def test_without_duplicates_a_task_has_no_deduplication_key(setup, world):
    world.duplicates["dns-records"] = {"org1"}
    scheduler, outlet, _ = setup
    await scheduler.handle_mutation(mutation())
    [task] = outlet.pushed
    assert task.data["deduplication_key"] is None


async def test_a_katalogus_failure_while_looking_for_duplicates_leaves_the_task_alone(setup):
    scheduler, outlet, _ = setup

    async def down(*_args, **_kwargs):
        raise ServiceUnavailable("katalogus", "down")

    scheduler.ctx.katalogus.get_configs = down
    await scheduler.handle_mutation(mutation())
    assert created(outlet) == {("dns-records", HOST, "org1")}


# --- new boefjes -----------------------------------------------------------------------------


async def test_the_first_sweep_creates_tasks_for_every_object_each_boefje_may_scan(setup, world):
    world.add_object("org1", "Hostname|internet|low.example", 0)
    world.add_object("org1", "Hostname|internet|high.example", 3)
    world.add_object("org1", "IPAddressV4|internet|10.0.0.1", 0)
    scheduler, outlet, _ = setup
    await scheduler.sweep_new_boefjes()
    assert created(outlet) == {
        ("dns-records", HOST, "org1"),
        ("dns-records", "Hostname|internet|high.example", "org1"),
        ("nmap", "Hostname|internet|high.example", "org1"),
        ("ip-only", "IPAddressV4|internet|10.0.0.1", "org1"),
    }


async def test_later_sweeps_only_sweep_boefjes_enabled_since(setup, world):
    scheduler, outlet, _ = setup
    await scheduler.sweep_new_boefjes()
    outlet.run_all()
    before = len(outlet.pushed)
    await scheduler.sweep_new_boefjes()
    assert len(outlet.pushed) == before
    world.set_enabled("org1", "off", True)
    await scheduler.sweep_new_boefjes()
    assert created(outlet) - {("dns-records", HOST, "org1")} == {("off", HOST, "org1")}


async def test_what_was_swept_survives_a_restart(world, clock):
    redis = FakeAsyncRedis()
    ctx, outlet, _ = fake_context(world, clock)
    await BoefjeScheduler(ctx, SeenBoefjes(redis, "unit")).sweep_new_boefjes()
    outlet.run_all()
    swept = len(outlet.pushed)
    await BoefjeScheduler(ctx, SeenBoefjes(redis, "unit")).sweep_new_boefjes()
    assert swept == 1 and len(outlet.pushed) == swept


async def test_a_boefje_disabled_and_enabled_again_is_swept_again(setup, world, clock):
    scheduler, outlet, _ = setup
    await scheduler.sweep_new_boefjes()
    outlet.run_all()
    world.set_enabled("org1", "dns-records", False)
    await scheduler.sweep_new_boefjes()
    world.set_enabled("org1", "dns-records", True)
    clock.advance(days=2)
    await scheduler.sweep_new_boefjes()
    assert [p.data["boefje"]["id"] for p in outlet.pushed] == ["dns-records", "dns-records"]


async def test_run_on_boefjes_are_not_swept(setup, world):
    world.add_plugin("org1", boefje("on-create", run_on=["create"], scan_level=0))
    scheduler, outlet, _ = setup
    await scheduler.sweep_new_boefjes()
    assert "on-create" not in {p.data["boefje"]["id"] for p in outlet.pushed}


async def test_a_sweep_that_fails_is_retried_next_round(setup):
    scheduler, outlet, _ = setup
    working = scheduler.ctx.octopoes.iter_objects

    def down(*_args, **_kwargs):
        raise ServiceUnavailable("octopoes", "down")

    scheduler.ctx.octopoes.iter_objects = down
    with pytest.raises(ServiceUnavailable):
        await scheduler.sweep_new_boefjes()
    scheduler.ctx.octopoes.iter_objects = working
    await scheduler.sweep_new_boefjes()
    assert created(outlet) == {("dns-records", HOST, "org1")}


# --- due schedules ---------------------------------------------------------------------------


def schedule_data(boefje_id: str = "dns-records", ooi: str | None = HOST, org: str = "org1") -> dict:
    return {"id": str(uuid.uuid4()), "boefje": {"id": boefje_id}, "input_ooi": ooi, "organization": org}


async def test_a_due_schedule_gets_a_new_task_with_the_plugins_current_fields(setup, world, clock):
    world.add_plugin("org1", boefje("dns-records", scan_level=1, version="v2", oci_image="img"))
    scheduler, outlet, history = setup
    schedule = history.add_schedule("boefje", schedule_data(), clock.now - timedelta(minutes=1))
    await scheduler.reschedule_due()
    [task] = outlet.pushed
    assert task.hash == schedule.hash and task.data["boefje"]["version"] == "v2" and task.schedule
    assert history.schedules[schedule.id].deadline_at == clock.now + CLAIM_HOLD  # until the push moves it


async def test_a_schedule_not_yet_due_is_left_alone(setup, clock):
    scheduler, outlet, history = setup
    history.add_schedule("boefje", schedule_data(), clock.now + timedelta(minutes=1))
    await scheduler.reschedule_due()
    assert outlet.pushed == []


@pytest.mark.parametrize(
    "change",
    ["plugin gone", "plugin disabled", "object gone", "scan level lowered", "type no longer consumed", "now run_on"],
)
async def test_a_schedule_whose_boefje_or_object_no_longer_qualifies_is_disabled(setup, world, clock, change):
    if change == "plugin gone":
        del world.plugins["org1"]["dns-records"]
    elif change == "plugin disabled":
        world.set_enabled("org1", "dns-records", False)
    elif change == "object gone":
        del world.objects["org1"][HOST]
    elif change == "scan level lowered":
        world.add_object("org1", HOST, 0)
    elif change == "type no longer consumed":
        world.add_plugin("org1", boefje("dns-records", consumes=["DNSZone"]))
    else:
        world.add_plugin("org1", boefje("dns-records", run_on=["create"]))
    scheduler, outlet, history = setup
    schedule = history.add_schedule("boefje", schedule_data(), clock.now - timedelta(minutes=1))
    await scheduler.reschedule_due()
    assert outlet.pushed == [] and history.schedules[schedule.id].enabled is False


async def test_a_schedule_without_object_runs_without_object_checks(setup, world, clock):
    world.add_plugin("org1", boefje("org-wide", consumes=["Hostname"], scan_level=4))
    scheduler, outlet, history = setup
    history.add_schedule("boefje", schedule_data("org-wide", ooi=None), clock.now - timedelta(minutes=1))
    await scheduler.reschedule_due()
    assert created(outlet) == {("org-wide", None, "org1")}


async def test_a_blocked_schedule_is_postponed_until_its_blocker_can_be_over(setup, world, clock):
    world.record_run("dns-records", HOST, "org1", clock.now - timedelta(hours=7), clock.now - timedelta(hours=6))
    scheduler, outlet, history = setup
    schedule = history.add_schedule("boefje", schedule_data(), clock.now - timedelta(minutes=1))
    await scheduler.reschedule_due()
    assert outlet.pushed == []
    assert history.schedules[schedule.id].deadline_at == clock.now + timedelta(hours=18)


async def test_every_due_schedule_is_handled_not_only_one_batch(setup, world, clock):
    hosts = [f"Hostname|internet|h{i}.example" for i in range(SCHEDULES_PER_BATCH * 2 + 5)]
    scheduler, outlet, history = setup
    for host in hosts:
        world.add_object("org1", host, 1)
        history.add_schedule("boefje", schedule_data(ooi=host), clock.now - timedelta(minutes=1))
    await scheduler.reschedule_due()
    assert len(outlet.pushed) == len(hosts)


async def test_a_cron_boefje_schedule_follows_the_plugins_cron(setup, world, clock):
    world.add_plugin("org1", boefje("dns-records", scan_level=1, cron="0 6 * * *"))
    scheduler, _, history = setup
    schedule = history.add_schedule("boefje", schedule_data(), clock.now - timedelta(minutes=1))
    await scheduler.reschedule_due()
    assert history.schedules[schedule.id].schedule == "0 6 * * *"


async def test_a_cron_boefjes_first_task_creates_its_schedule_on_the_cron(setup, world, clock):
    world.add_plugin("org1", boefje("dns-records", scan_level=1, cron="0 6 * * *"))
    scheduler, outlet, history = setup
    await scheduler.handle_mutation(mutation())
    [schedule] = history.schedules.values()
    assert schedule.hash == outlet.pushed[0].hash
    assert (schedule.schedule, schedule.deadline_at) == ("0 6 * * *", clock.now.replace(hour=6))
