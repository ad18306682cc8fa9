import sys
import threading
import time

from redisched.queue.places import TaskPlaces


def test_places_are_bounded_and_the_oldest_makes_room():
    places = TaskPlaces(size=3)
    for i in range(5):
        places.note(f"t{i}", "boefje", i)
    assert len(places) == 3
    assert [places.of(f"t{i}") for i in range(5)] == [None, None, ("boefje", 2), ("boefje", 3), ("boefje", 4)]


def test_a_task_noted_again_is_young_again_and_forget_drops_it():
    places = TaskPlaces(size=2)
    places.note("a", "boefje", 0)
    places.note("b", "boefje", 0)
    places.note("a", "report", 1)
    places.note("c", "boefje", 0)  # b is the oldest now
    assert places.of("b") is None and places.of("a") == ("report", 1)
    places.forget("a")
    places.forget("never seen")
    assert places.of("a") is None and len(places) == 1


def test_threads_sharing_the_places_never_fail_and_keep_the_bound():
    """The sync Client may be shared by threads: notes (each dropping the oldest entry once
    full) and forgets from several at once, the interpreter switching threads as often as it
    can. Unlocked, two threads dropped the same oldest entry (KeyError) within a few ms."""
    places, errors = TaskPlaces(size=8), []
    deadline = time.monotonic() + 2

    def work(k: int) -> None:
        try:
            for i in range(1_000_000):
                places.note(f"{k}-{i}", "boefje", 0)
                if k == 0:
                    places.forget(f"{k + 1}-{i}")
                if errors or (i % 1000 == 0 and time.monotonic() > deadline):
                    return
        except Exception as exc:  # noqa: BLE001 - the failure under test
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        sys.setswitchinterval(interval)
    assert errors == [] and len(places) <= 8

