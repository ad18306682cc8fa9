"""Where this process last saw each live task it handed out: task id -> (queue id, partition).

A PATCH that carries no lease token (OpenKAT's runners send none) would have to ask every
queue partition (3 queues × N partitions script calls, all but one answering "not here").
The process that popped the task knows where it lives, so the PATCH goes there first; only
when that partition does not hold it (another process popped it, a restore moved it) are the
others asked. A hint, never the truth: a wrong one costs one round trip more, nothing else.
At most ``size`` entries, the oldest making room; a task is forgotten once it is finished.
"""

from __future__ import annotations


class TaskPlaces:
    def __init__(self, size: int = 16_384) -> None:
        self.size = size
        self._places: dict[str, tuple[str, int]] = {}

    def note(self, task_id: str, queue_id: str, partition: int) -> None:
        places = self._places
        places.pop(task_id, None)  # a task seen again moves to the young end
        if len(places) >= self.size:
            places.pop(next(iter(places)))
        places[task_id] = (queue_id, partition)

    def of(self, task_id: str) -> tuple[str, int] | None:
        return self._places.get(task_id)

    def forget(self, task_id: str) -> None:
        self._places.pop(task_id, None)

    def __len__(self) -> int:
        return len(self._places)
