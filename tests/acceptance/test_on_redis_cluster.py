"""The API's acceptance tests again, on a 3-master Redis Cluster, with each queue in one
partition and spread over three (one per master): the golden mula session and the OpenKAT
runner's and UI's calls, over ASGI and over a real socket."""

from __future__ import annotations

import pytest

from redisched.config import Settings
from tests.acceptance.harness import api, api_process, db_dsn, template_db  # noqa: F401
from tests.acceptance.test_golden_replay import test_mula_session_replays_with_the_same_answers as replay
from tests.acceptance.test_openkat_clients import (  # noqa: F401
    test_the_boefje_runner_pops_runs_and_completes_a_task,
    test_the_web_ui_counts_pages_and_manages_schedules,
)
from tests.support.servers import private_cluster


@pytest.fixture(scope="module")
def cluster_url():
    with private_cluster(3) as urls:
        yield urls[0]


@pytest.fixture(params=[1, 3], ids=["1-partition", "3-partitions"])
def settings(request, cluster_url: str, db_dsn: str, key_prefix: str) -> Settings:  # noqa: F811
    return Settings(
        redis_url=cluster_url, redis_cluster=True, db_uri=db_dsn, key_prefix=key_prefix, partitions=request.param,
        one_task_per_schedule=False,  # the recording is mula 1.20.1's rule
    )  # fmt: skip


# The recorded pops follow one queue's strict order, which partitions keep per partition only:
# the replay runs on the one-partition cluster (not generated, rather than skipped, for three).
@pytest.mark.parametrize("settings", [1], ids=["1-partition"], indirect=True)
async def test_mula_session_replays_with_the_same_answers(api):  # noqa: F811
    await replay(api)
