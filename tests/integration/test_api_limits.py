"""Limits per boefje group over HTTP, on two real ``redisched api`` processes sharing one
Redis (and on the 3-master cluster with 3 partitions): 20 runners popping through both never see a cooldown or rate group go faster than its
rule or a concurrency group hold more than its cap, while the rest of the queue flows; the
rules are read and replaced at run time (admin), and a replacement made through one process
holds for pushes through the other."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime

import httpx
import pytest
import redis

from redisched.queue.layout import QueueLayout
from tests.acceptance.harness import boefje_push
from tests.integration.http_server import backends, template_db  # noqa: F401
from tests.support.api import ApiProcess, backend_env, running_api

RULES = [
    {"boefje": "shodan", "group": "shodan", "cooldown": 0.3},
    {"boefje": "nmap", "group": "nmap", "rate": "4/s"},
    {"boefje": "whois", "group": "whois", "concurrency": 2},
]
ADMIN, RUNNER = {"authorization": "Bearer adm"}, {"authorization": "Bearer run"}
TOKENS = {"REDISCHED_ADMIN_TOKENS": '["adm"]', "REDISCHED_RUNNER_TOKENS": '["run"]'}


@dataclass(frozen=True)
class TwoApis:
    first: ApiProcess
    second: ApiProcess
    layout: QueueLayout
    redis: redis.Redis | redis.RedisCluster  # to read the groups' state


@pytest.fixture(scope="module", params=["redis", "cluster-3-partitions"])
def two_apis(request, backends):  # noqa: F811
    """Two API processes on one Redis, or on the 3-master cluster with 3 partitions."""
    env = {"REDISCHED_LIMITS": json.dumps(RULES), **TOKENS}
    prefix = f"{backends.key_prefix}{request.param[0]}"
    if request.param == "redis":
        sampler, partitions = redis.Redis.from_url(backends.redis_url), 1
        env |= backend_env(backends.redis_url, backends.db_dsn, prefix)
    else:
        url, partitions = request.getfixturevalue("cluster_url"), 3
        sampler = redis.RedisCluster.from_url(url)
        env |= backend_env(url, backends.db_dsn, prefix, cluster=True) | {"REDISCHED_PARTITIONS": "3"}
    with running_api(env) as first, running_api(env) as second:
        yield TwoApis(first, second, QueueLayout(prefix=prefix, partitions=partitions), sampler)
    sampler.close()


def push_body(boefje_id: str, n: int, priority: int = 5, org: str = "org1") -> dict:
    return boefje_push(f"Hostname|internet|{boefje_id}-{n}.example", boefje_id=boefje_id, priority=priority, org=org)


LATE = {"filters": [{"column": "organisation", "operator": "eq", "value": "late"}]}


def popped_at(task: dict) -> float:
    return datetime.fromisoformat(task["modified_at"]).timestamp()


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times)), default=0)


async def test_limits_hold_across_two_api_processes_and_twenty_runners(two_apis):
    first, second = two_apis.first, two_apis.second
    async with httpx.AsyncClient(base_url=first.url, timeout=15) as a, httpx.AsyncClient(base_url=second.url, timeout=15) as b:
        for boefje_id, count in (("shodan", 6), ("nmap", 8), ("whois", 12), ("dns-records", 150)):
            for n in range(count):
                client = a if n % 2 else b
                pushed = await client.post("/schedulers/boefje/push", json=push_body(boefje_id, n, 1), headers=ADMIN)
                assert pushed.status_code == 201, pushed.text
        popped: dict[str, list[float]] = {"shodan": [], "nmap": [], "whois": [], "dns-records": []}
        whois_held = []
        stop = time.monotonic() + 2.6

        async def runner(client: httpx.AsyncClient) -> None:
            while time.monotonic() < stop:
                answer = await client.post("/schedulers/boefje/pop?limit=1", headers=RUNNER)
                assert answer.status_code == 200, answer.text
                if not answer.json()["results"]:
                    await asyncio.sleep(0.01)
                    continue
                [task] = answer.json()["results"]
                boefje_id = task["data"]["boefje"]["id"]
                popped[boefje_id].append(popped_at(task))
                if boefje_id == "whois":
                    in_use = [int(two_apis.redis.hget(keys.limits, "whois\0n") or 0) for keys in two_apis.layout.of("boefje")]
                    whois_held.append(sum(in_use))
                    await asyncio.sleep(0.05)  # runs a while, holding its slot
                done = await client.patch(f"/tasks/{task['id']}", json={"status": "completed"}, headers=RUNNER)
                assert done.status_code == 200, done.text

        await asyncio.gather(*(runner(a if i % 2 else b) for i in range(20)))

    shodan_gaps = [later - earlier for earlier, later in zip(sorted(popped["shodan"]), sorted(popped["shodan"])[1:])]
    assert len(popped["shodan"]) >= 3 and min(shodan_gaps) >= 0.3 - 1e-6, shodan_gaps  # cooldown, to the µs
    assert len(popped["nmap"]) >= 5 and most_in_any_window(popped["nmap"], 1.0) <= 4, popped["nmap"]  # 4/s
    assert len(popped["whois"]) >= 4 and max(whois_held) <= 2, whois_held  # never over its cap ...
    assert 2 in whois_held  # ... which it does reach
    assert len(popped["dns-records"]) > 40  # the unlimited rest flowed meanwhile


async def test_rules_are_read_and_replaced_at_run_time_and_reach_the_other_process(two_apis):
    first, second = two_apis.first, two_apis.second
    with httpx.Client(base_url=first.url, timeout=10) as a, httpx.Client(base_url=second.url, timeout=10) as b:
        in_force = a.get("/limits", headers=ADMIN).json()
        assert in_force["rules"] == RULES and in_force["source"] == "env"
        assert a.put("/limits", json=[], headers=RUNNER).status_code == 403
        for bad, says in (
            ([{"boefje": "x", "group": "g"}], "sets none of cooldown, rate, concurrency"),
            ([{"boefje": "x", "group": "{address}", "cooldown": 1}], "it may use"),
            ([{"boefje": "x", "group": "g", "rate": "5 per second"}], "is not <N>/<s|m|h>"),
            ({"boefje": "x"}, "a JSON list of rules"),
        ):
            refused = a.put("/limits", json=bad, headers=ADMIN)
            assert refused.status_code == 400 and says in refused.json()["detail"], refused.text
        assert a.get("/limits", headers=ADMIN).json()["version"] == in_force["version"]  # nothing changed

        hourly = [{"boefje": "shodan", "group": "shodan:{organisation}", "cooldown": 3600}]
        replaced = a.put("/limits", json=hourly, headers=ADMIN).json()
        assert replaced["rules"] == hourly and replaced["source"] == "admin"
        assert int(replaced["version"]) > int(in_force["version"])
        assert b.get("/limits", headers=ADMIN).json() == replaced
        for n in (100, 101):  # through the other process, which pushed with the old rules so far
            pushed = b.post("/schedulers/boefje/push", json=push_body("shodan", n, org="late"), headers=ADMIN)
            assert pushed.status_code == 201
        [task] = b.post("/schedulers/boefje/pop", json=LATE, headers=RUNNER).json()["results"]
        assert task["data"]["boefje"]["id"] == "shodan"
        assert a.post("/schedulers/boefje/pop", json=LATE, headers=RUNNER).json()["results"] == []  # an hour's cooldown
        assert "/limits" in a.get("/openapi.json", headers=ADMIN).json()["paths"]
