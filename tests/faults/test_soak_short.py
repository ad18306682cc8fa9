"""The soak benchmark (benchmarks/soak.py), short: 60 s at 1,000 pops/s (and as many pushes
and token-carrying completes), the 10-minute benchmark's rate, with the direct client in
runner processes, the snapshotter and the reaper. Memory flat once the queue is at its depth,
no leaked leases, snapshot lag bounded. The machine (2 cores) sustains 1,000/s when quiet
(its ceiling there is ~1,350/s); with other tests running beside it the achieved rate drops
(430-730/s measured), so the test requires only a quarter of the asked rate and prints the
achieved one."""

from __future__ import annotations

import pytest

from tests.faults.soak import soak

pytestmark = pytest.mark.timeout(180, method="thread")

RATE = 1000


def test_soak_60_s():
    summary = soak(seconds=60, pops_per_s=RATE, sample_every=5, depth=1000, lag_limit=2.0, min_rate=0.25)
    early, late = summary.memory_floor
    print(f"[faults] soak 60 s: {summary.pops_per_s:.0f} pops/s achieved of {RATE} asked, {summary.samples[-1].pops} pops, "
          f"memory floor {early:,d} -> {late:,d} B, worst lag {summary.worst_lag_s * 1000:.0f} ms", flush=True)
