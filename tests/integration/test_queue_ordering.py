"""Pops come out by (priority, created_at) for any mix of pushes: a property test."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redisched.client import Client
from tests.factories import normalizer_data
from tests.integration.conftest import make_layout

EPOCH_SECONDS = st.integers(1_500_000_000, 2_000_000_000)
NEAR_2_53 = st.integers(-(2**53) - 5, -(2**53) + 5) | st.integers(2**53 - 5, 2**53 + 5)
INT64_EDGES = st.sampled_from([-(2**63), -(2**63) + 1, 2**63 - 2, 2**63 - 1])
PRIORITIES = (st.integers(-5, 5) | EPOCH_SECONDS | NEAR_2_53 | INT64_EDGES).filter(lambda p: p != 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(priorities=st.lists(PRIORITIES, min_size=1, max_size=40))
def test_pops_come_out_by_priority_then_push_order(sync_redis, priorities):
    prefix = f"t{uuid.uuid4().hex[:10]}"
    queue = Client(sync_redis, make_layout(prefix)).queue("normalizer")
    try:
        pushed = [(p, i, queue.push(organisation="o", data=normalizer_data(), priority=p).id) for i, p in enumerate(priorities)]
        popped = queue.pop(limit=len(priorities))
        assert [r.id for r in popped] == [task_id for _p, _i, task_id in sorted(pushed)]
        assert [int(r.priority) for r in popped] == sorted(priorities)
    finally:
        for key in sync_redis.scan_iter(match=f"{prefix}:*"):
            sync_redis.delete(key)
