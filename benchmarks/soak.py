"""Soak: minutes of steady work with the direct client, the snapshotter and the lease reaper
(the code, and what it checks, in tests/faults/soak.py, which the short CI soak runs too).

    python -m benchmarks.soak                 # 10 minutes at 1,000 pops/s
    python -m benchmarks.soak --seconds 60
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.faults.soak import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
