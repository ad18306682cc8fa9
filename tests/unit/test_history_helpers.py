"""The history package's pure parts: named queries, deadlines, stream ids, event decoding."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import msgspec
import psycopg
import pytest

from redisched.errors import ValidationFailed
from redisched.history.db import queries
from redisched.history.schedules import check_cron, next_cron_run, push_deadline
from redisched.history.snapshotter import decode_entries, decode_events, refused_for_its_own_sake, stream_id
from redisched.history.tasks import Event, latest_records
from redisched.queue.records import TaskRecord, encode_record, priority_key

NOW = datetime(2025, 6, 1, 10, 30, tzinfo=timezone.utc)


def record(rev: str, status: str = "queued") -> TaskRecord:
    return TaskRecord(
        id="00000000-0000-4000-8000-000000000001", scheduler_id="boefje", organisation="o", priority="1", status=status, type="boefje",
        data="{}", created_at="1", modified_at="1", pk=priority_key(1), rev=rev,
    )


def test_named_queries_drop_their_description_comments():
    upsert = queries("tasks.sql")["upsert"]
    assert upsert.startswith("INSERT INTO tasks")
    assert set(queries("schedules.sql")) >= {"insert", "due", "insert_pushed", "lock_linked"}


def test_cron_supports_last_day_of_month():
    assert next_cron_run("0 0 L * *", NOW) == datetime(2025, 6, 30, tzinfo=timezone.utc)
    assert next_cron_run("0 0 L 2 *", NOW) == datetime(2026, 2, 28, tzinfo=timezone.utc)


@pytest.mark.parametrize("expression", ["bad", "61 * * * *", "* * * *"])
def test_bad_cron_is_a_validation_failure(expression):
    with pytest.raises(ValidationFailed, match=f"1 validation error for Schedule\nschedule\n  Value error, Invalid cron expression: {expression} "):
        check_cron(expression)


def test_push_deadlines():
    assert push_deadline("report", "0 12 * * *", NOW, 86400) == datetime(2025, 6, 1, 12, tzinfo=timezone.utc)
    assert push_deadline("report", None, NOW, 86400) is None
    for _ in range(50):
        deadline = push_deadline("boefje", None, NOW, 600)
        assert NOW + timedelta(seconds=600) <= deadline <= NOW + timedelta(seconds=600, hours=5)


def test_stream_ids_compare_as_numbers():
    assert stream_id(b"1700000000000-10") > stream_id("1700000000000-9")
    assert stream_id("1700000000001-0") > stream_id("1700000000000-99")


def test_latest_records_keeps_the_highest_rev_numerically():
    events = [Event("patch", record("1000", "failed"), None), Event("push", record("999"), None)]
    assert [r.rev for r in latest_records(events)] == ["1000"]


def test_decode_events_skips_unreadable_entries():
    entries = [
        (b"1-0", {b"op": b"push", b"rec": encode_record(record("1")), b"sched": b"new"}),
        (b"2-0", {b"op": b"push", b"rec": b"not json"}),
        (b"3-0", {b"rec": encode_record(record("2"))}),
        ("4-0", {"op": "pop", "rec": msgspec.json.encode(record("3")).decode()}),
    ]
    events = decode_events(entries)
    assert [(e.op, e.sched, e.record.rev) for e in events] == [("push", "new", "1"), ("pop", None, "3")]


@pytest.mark.parametrize(
    ("error", "poison"),
    [
        (psycopg.errors.ProgramLimitExceeded("index row size 3016 exceeds btree version 4 maximum 2704"), True),
        (psycopg.errors.UntranslatableCharacter("unsupported Unicode escape sequence"), True),
        (psycopg.errors.NumericValueOutOfRange("value overflows numeric format"), True),
        (psycopg.errors.CheckViolation("new row violates check constraint"), True),
        (psycopg.errors.UniqueViolation("duplicate key"), True),
        (psycopg.errors.CardinalityViolation("ON CONFLICT DO UPDATE command cannot affect row a second time"), True),
        (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), True),  # psycopg's own
        (psycopg.errors.AdminShutdown("terminating connection"), False),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), False),
        (psycopg.errors.DeadlockDetected("deadlock detected"), False),
        (psycopg.errors.SerializationFailure("could not serialize access"), False),
        (psycopg.errors.DiskFull("could not extend file"), False),
        (psycopg.errors.OutOfMemory("out of memory"), False),
        (psycopg.errors.UndefinedTable('relation "tasks" does not exist'), False),  # not the row's fault
        (psycopg.errors.InsufficientPrivilege("permission denied"), False),
        (psycopg.OperationalError("connection lost"), False),
    ],
)
def test_what_postgres_refuses_for_the_rows_sake_is_told_by_sqlstate_class(error, poison):
    assert refused_for_its_own_sake(error) is poison


def test_unreadable_entries_are_kept_for_the_quarantine():
    entries = [(b"1-0", {b"op": b"push", b"rec": encode_record(record("1"))}), (b"2-0", {b"op": b"push", b"rec": b"{"})]
    decoded, unreadable = decode_entries(entries)
    assert [entry.id for entry in decoded] == ["1-0"]
    assert [(poison.entry, poison.fields["op"]) for poison in unreadable] == [("2-0", b"push")]
    assert unreadable[0].reason.startswith("unreadable event")
