"""Where this process last saw each live task it handed out: task id -> (queue id, partition).

A PATCH that carries no lease token (OpenKAT's runners send none) would have to ask every
queue partition (3 queues × N partitions script calls, all but one answering "not here").
The process that popped the task knows where it lives, so the PATCH goes there first; only
when that partition does not hold it (another process popped it, a restore moved it) are the
others asked. A hint, never the truth: a wrong one costs one round trip more, nothing else.
At most ``size`` entries, the oldest making room; a task is forgotten once it is finished.
The sync Client may be shared by threads: a note (look up the oldest, then drop it) holds a
lock, else two threads drop the same oldest entry (KeyError, raised after the pop had taken
its tasks) or one iterates while another inserts (RuntimeError). An OrderedDict, not a dict:
a dict whose oldest entries keep being dropped finds its first live entry past every slot
emptied since its last resize (10-20 us a note once full), an OrderedDict at once (< 1 us).
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class TaskPlaces:
    def __init__(self, size: int = 16_384) -> None:
        self.size = size
        self._places: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._lock = threading.Lock()

    def note(self, task_id: str, queue_id: str, partition: int) -> None:
        places = self._places
        with self._lock:
            places.pop(task_id, None)  # a task seen again moves to the young end
            if len(places) >= self.size:
                places.popitem(last=False)
            places[task_id] = (queue_id, partition)

    def of(self, task_id: str) -> tuple[str, int] | None:
        return self._places.get(task_id)

    def forget(self, task_id: str) -> None:
        with self._lock:  # not between a note's look-up of the oldest entry and its drop
            self._places.pop(task_id, None)

    def __len__(self) -> int:
        return len(self._places)
