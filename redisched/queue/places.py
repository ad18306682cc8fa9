"""Where this process last saw each live task it handed out: task id -> (queue id, partition).

A PATCH that carries no lease token (OpenKAT's runners send none) would have to ask every
queue partition (3 queues × N partitions script calls, all but one answering "not here").
The process that popped the task knows where it lives, so the PATCH goes there first; only
when that partition does not hold it (another process popped it, a restore moved it) are the
others asked. A hint, never the truth: a wrong one costs one round trip more, nothing else.
At most ``size`` entries (memo.py: the oldest makes room, safe for threads sharing a sync
Client); a task is forgotten once it is finished.
"""

from __future__ import annotations

from redisched.memo import BoundedMemo


class TaskPlaces(BoundedMemo[tuple[str, int]]):
    def __init__(self, size: int = 16_384) -> None:
        super().__init__(size)

    def note(self, task_id: str, queue_id: str, partition: int) -> None:
        """Seen again, a task becomes the youngest entry."""
        self.put(task_id, (queue_id, partition))

    def of(self, task_id: str) -> tuple[str, int] | None:
        return self.lookup(task_id)
