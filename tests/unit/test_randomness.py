"""Task ids and lease tokens from the pooled OS randomness (redisched/queue/randomness.py):
well-formed, never repeated between threads sharing a client, nor between a forked child and
its parent."""

from __future__ import annotations

import os
import time
import uuid
from types import SimpleNamespace

from redisched.queue.commands import QueueCommands
from redisched.queue.layout import QueueLayout
from redisched.queue import randomness
from redisched.queue.randomness import fresh_uuid
from tests.support.threads import errors_in_threads


def test_a_fresh_uuid_is_a_version_4_uuid_text():
    for _ in range(1000):
        text = fresh_uuid()
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_child_makes_other_uuids_and_tokens_than_its_parent():
    commands = QueueCommands(QueueLayout())
    fresh_uuid()  # random bytes read ahead, which the child must not reuse
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(write, "".join(fresh_uuid() + commands.lease_token("boefje", 0) for _ in range(10)).encode())
        os._exit(0)
    os.waitpid(child, 0)
    childs = os.read(read, 10 * (36 + 25)).decode()
    ours = "".join(fresh_uuid() + commands.lease_token("boefje", 0) for _ in range(10))
    assert len(childs) == len(ours) == 10 * (36 + 25)
    pieces = lambda text: {text[i : i + 36 + 16] for i in range(0, len(text), 36 + 25)}  # noqa: E731
    assert pieces(childs).isdisjoint(pieces(ours))


def test_threads_sharing_a_client_never_get_the_same_id_or_token(monkeypatch):
    """A small pool read from a slow OS (the GIL goes to another thread meanwhile), so the
    threads meet at every refill."""
    real_urandom = os.urandom

    def slow_urandom(count: int) -> bytes:
        time.sleep(0.0005)
        return real_urandom(count)

    monkeypatch.setattr(randomness, "POOL_BYTES", 64)
    monkeypatch.setattr(randomness, "os", SimpleNamespace(urandom=slow_urandom))
    randomness.random_hex.forget()
    commands = QueueCommands(QueueLayout())
    made: list[list[str]] = [[] for _ in range(4)]

    def work(k: int, i: int) -> None:
        made[k].append(fresh_uuid())
        made[k].append(commands.lease_token("boefje", 0))

    assert errors_in_threads(work, seconds=1.0) == []
    everything = [text for texts in made for text in texts]
    assert len(everything) > 1_000
    assert len(set(everything)) == len(everything)
