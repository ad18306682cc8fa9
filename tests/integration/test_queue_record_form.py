"""The stored record (lua/includes/common.lua, stored_form): a queued task's record leaves
out modified_at (= created_at), rev (= modified_at) and ix.org (= organisation) and does not
escape '/', so it takes a
smaller allocation; readers put the fields back. A record an earlier version wrote in full
reads, pops and finishes the same."""

from __future__ import annotations

import json

import redis

from redisched.client import Client
from redisched.queue.layout import QueueLayout
from redisched.queue.records import decode_record
from tests.factories import boefje_data
from tests.support.servers import private_redis

IMAGE = "ghcr.io/minvws/openkat/nmap:latest"


def _queue(url: str):
    client = redis.Redis.from_url(url)
    direct = Client(client, QueueLayout(prefix="form"))
    direct.load_functions()
    return client, direct, direct.queue("boefje")


def test_a_queued_tasks_record_is_stored_without_its_derived_fields_and_reads_in_full():
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp", oci_image=IMAGE), priority=5)
        keys = direct.commands.keys("boefje")
        raw = client.hget(keys.tasks, pushed.id)
        stored = json.loads(raw)
        assert "modified_at" not in stored and "rev" not in stored and "org" not in stored["ix"]
        assert b"\\/" not in raw and IMAGE.encode() in raw
        record = decode_record(raw)
        assert record.modified_at == record.created_at == pushed.created_at
        assert record.rev == pushed.rev == record.created_at
        assert record.ix == pushed.ix == {"org": "o", "boefje": "nmap-tcp", "image": IMAGE}
        # still in the organisation's index: an organisation filter pops it
        assert client.zcard(keys.key("ix:org")) == 1
        # the push event carries the same form; the snapshotter decodes it in full
        (_, fields), = client.xrange(keys.events)
        assert decode_record(fields[b"rec"]).rev == pushed.rev

        popped, = queue.pop({"filters": [{"column": "organisation", "operator": "eq", "value": "o"}]}, limit=1)
        assert popped.id == pushed.id and popped.status == "dispatched"
        after = json.loads(client.hget(keys.tasks, pushed.id))
        # dispatched: modified_at moved on and is kept; the rev of the same call is left out
        assert after["modified_at"] != after["created_at"]
        assert int(decode_record(client.hget(keys.tasks, pushed.id)).rev) > int(pushed.rev)


def test_a_record_an_earlier_version_wrote_in_full_reads_pops_and_finishes():
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp", oci_image=IMAGE), priority=5)
        keys = direct.commands.keys("boefje")
        full = json.loads(client.hget(keys.tasks, pushed.id))
        full["modified_at"], full["rev"], full["ix"]["org"] = full["created_at"], pushed.rev, "o"
        client.hset(keys.tasks, pushed.id, json.dumps(full).replace("/", "\\/"))  # as cjson wrote it

        peeked, = queue.peek()
        assert (peeked.id, peeked.modified_at, peeked.rev, peeked.ix) == (pushed.id, pushed.modified_at, pushed.rev, pushed.ix)
        popped, = queue.pop({"filters": [{"column": "organisation", "operator": "eq", "value": "o"}]}, limit=1)
        assert popped.id == pushed.id and popped.data == pushed.data
        done = queue.patch(pushed.id, {"status": "completed"}, token=popped.lease)
        assert done is not None and done.status == "completed"
        assert client.hget(keys.meta, "quarantined") is None


def test_a_record_without_created_at_is_still_quarantined():
    with private_redis() as url:
        client, direct, queue = _queue(url)
        pushed = queue.push(organisation="o", data=boefje_data("nmap-tcp", oci_image=IMAGE), priority=5)
        keys = direct.commands.keys("boefje")
        stored = json.loads(client.hget(keys.tasks, pushed.id))
        del stored["created_at"]
        client.hset(keys.tasks, pushed.id, json.dumps(stored))
        assert queue.pop(limit=1) == []
        assert client.hexists(keys.quarantine, pushed.id)
