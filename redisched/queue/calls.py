"""What a queue operation sends to Redis: script calls and plain commands, in batches.

A plan (queue/plans.py) is a generator: it yields a batch (a list of calls), is sent back
their results in the same order, and returns the operation's result. It decides the fan-out
over queues and partitions; a driver (queue/driver.py) only sends what it yields.

    def qsize(layout, queue_id):
        sizes = yield [Command(("ZCARD", keys.queue)) for keys in layout.of(queue_id)]
        return sum(sizes)
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, Union

from redisched.queue.scripts import Script

T = TypeVar("T")


def _same(reply: Any) -> Any:
    return reply


@dataclass(frozen=True)
class ScriptCall(Generic[T]):
    """One script run. Calls with the same ``merge_key`` may run as one script run: ``join``
    makes its arguments from theirs (each call's args, in order), ``split`` cuts its reply back
    into one reply per call (queue/pipeliner.py)."""

    script: Script
    keys: list[str]
    args: list[Any]
    parse: Callable[[Any], T]
    merge_key: tuple[Any, ...] | None = None
    split: Callable[[list[Any]], list[list[Any]]] | None = None
    join: Callable[[list[list[Any]]], list[Any]] | None = None

    def command(self) -> tuple[Any, ...]:
        """The Redis command that runs the script's function: FCALL, FCALL_RO when read-only."""
        return self.script.fcall(self.keys, self.args)


@dataclass(frozen=True)
class Command(Generic[T]):
    """One plain Redis command (a read, mostly): ``args`` as redis-py's execute_command takes
    them."""

    args: tuple[Any, ...]
    parse: Callable[[Any], T] = _same
    merge_key = None
    split = None
    join = None

    def command(self) -> tuple[Any, ...]:
        return self.args


Call = Union[ScriptCall[Any], Command[Any]]
Batch = list[Call]
Plan = Generator[Batch, list[Any], T]
