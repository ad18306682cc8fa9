from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from redisched.clients.http import Plugin
from redisched.models import parse_payload, utcnow
from redisched.schedulers import rankers
from redisched.schedulers.rankers import RankContext, creation_time, epoch_seconds, get_ranker, rank, register_ranker

CREATED = datetime(2025, 6, 1, 10, 0, 0, 750000, tzinfo=timezone.utc)
CREATED_EPOCH = 1748772000


def boefje_ctx(**overrides) -> RankContext:
    data = {"boefje": {"id": "dns-records"}, "input_ooi": "Hostname|internet|a.nl", "organization": "org1"}
    fields = {"scheduler_id": "boefje", "organisation": "org1", "payload": parse_payload("boefje", data)}
    return RankContext(**{**fields, "created_at": CREATED, **overrides})


def normalizer_ctx(started_at: str | None, ended_at: str | None) -> RankContext:
    meta = {"id": str(uuid.uuid4()), "boefje": {"id": "dns-records"}, "organization": "org1"}
    meta |= {key: value for key, value in {"started_at": started_at, "ended_at": ended_at}.items() if value}
    data = {"normalizer": {"id": "kat_dns_normalize"}, "raw_data": {"id": str(uuid.uuid4()), "boefje_meta": meta}}
    payload = parse_payload("normalizer", data)
    return RankContext(scheduler_id="normalizer", organisation="org1", payload=payload, created_at=CREATED)


def test_epoch_seconds_truncates_and_reads_naive_as_utc():
    assert epoch_seconds(CREATED) == CREATED_EPOCH
    assert epoch_seconds(CREATED.replace(tzinfo=None)) == CREATED_EPOCH
    assert epoch_seconds(CREATED.astimezone(timezone(timedelta(hours=2)))) == CREATED_EPOCH


def test_boefje_priority_is_creation_time():
    assert rank(boefje_ctx()) == CREATED_EPOCH


def test_boefje_created_later_ranks_later():
    assert rank(boefje_ctx(created_at=CREATED + timedelta(seconds=5))) == CREATED_EPOCH + 5


def test_created_at_defaults_to_now():
    before = int(utcnow().timestamp())
    ctx = RankContext(scheduler_id="report", organisation="org1", payload=None)
    assert before <= rank(ctx) <= int(utcnow().timestamp())


def test_report_priority_is_now():
    payload = parse_payload("report", {"organisation_id": "org1", "report_recipe_id": "r1"})
    ctx = RankContext(scheduler_id="report", organisation="org1", payload=payload, created_at=CREATED)
    assert rank(ctx) == CREATED_EPOCH


def test_normalizer_priority_is_boefje_end_time():
    ctx = normalizer_ctx(started_at="2025-05-01T08:00:00Z", ended_at="2025-05-01T08:00:30.9Z")
    assert rank(ctx) == int(datetime(2025, 5, 1, 8, 0, 30, tzinfo=timezone.utc).timestamp())


def test_older_raw_files_rank_first():
    older = normalizer_ctx(None, "2025-05-01T08:00:00Z")
    newer = normalizer_ctx(None, "2025-05-02T08:00:00Z")
    assert rank(older) < rank(newer)


def test_normalizer_without_end_time_falls_back_to_start_then_creation():
    started = int(datetime(2025, 5, 1, 8, tzinfo=timezone.utc).timestamp())
    assert rank(normalizer_ctx("2025-05-01T08:00:00Z", None)) == started
    assert rank(normalizer_ctx(None, None)) == CREATED_EPOCH


def test_register_ranker_replaces_and_returns_previous():
    def intrusive_later(ctx: RankContext) -> int:
        intrusive = ctx.plugin is not None and ctx.plugin.scan_level >= 3
        return creation_time(ctx) + (3600 if intrusive else 0)

    previous = register_ranker("boefje", intrusive_later)
    try:
        intrusive = Plugin(id="nmap", type="boefje", scan_level=3)
        assert rank(boefje_ctx(plugin=intrusive)) == CREATED_EPOCH + 3600
        assert rank(boefje_ctx()) == CREATED_EPOCH
    finally:
        register_ranker("boefje", previous)
    assert get_ranker("boefje") is creation_time


def test_register_ranker_by_import_path():
    previous = register_ranker("report", "redisched.schedulers.rankers:raw_file_age")
    try:
        assert get_ranker("report") is rankers.raw_file_age
    finally:
        register_ranker("report", previous)


@pytest.mark.parametrize("path", ["redisched.schedulers.rankers", "redisched.schedulers.rankers:RankContext.nope"])
def test_register_ranker_rejects_bad_paths(path):
    with pytest.raises((ValueError, AttributeError)):
        register_ranker("report", path)
    assert get_ranker("report") is creation_time


def test_unknown_scheduler_has_no_ranker():
    with pytest.raises(KeyError, match="no ranker for scheduler 'nope'"):
        rank(RankContext(scheduler_id="nope", organisation="org1", payload=None))
