"""The soak benchmark (benchmarks/soak.py), short: 60 s of pushes and pops at ~500/s (what the
benchmark's threaded sync clients sustain on 2 cores; the 10-minute benchmark asks 1,000/s)
with the direct client, the snapshotter and the reaper. Memory flat once the queue is at its
depth, no leaked leases, snapshot lag bounded."""

from __future__ import annotations

import pytest

from benchmarks.soak import soak

pytestmark = pytest.mark.timeout(150, method="thread")


def test_soak_60_s():
    samples = soak(seconds=60, pops_per_s=500, sample_every=5, depth=1000, lag_limit=2.0)
    print(f"[faults] soak 60 s: {len(samples)} samples, {samples[-1].pops} pops, "
          f"memory {samples[-1].used_memory:,d} B, worst lag {max(s.lag_s for s in samples) * 1000:.0f} ms", flush=True)
