import time

from redisched.queue.places import TaskPlaces
from tests.support.threads import errors_in_threads


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
    places = TaskPlaces(size=8)

    def work(k: int, i: int) -> None:
        places.note(f"{k}-{i}", "boefje", 0)
        if k == 0:
            places.forget(f"{k + 1}-{i}")

    assert errors_in_threads(work) == [] and len(places) <= 8


def test_a_note_once_full_costs_about_what_one_before_does():
    """Over 100k pops the places stay at their bound, and a note that drops the oldest entry
    is not dearer than one that drops none (a plain dict's was 10-20x: it walked past every
    slot emptied at its front since its last resize)."""
    keys = [f"t{i}" for i in range(100_000)]

    def seconds_per_note(places: TaskPlaces) -> float:
        best = float("inf")
        for attempt in range(3):
            started = time.perf_counter()
            for key in keys[attempt * 20_000 : (attempt + 1) * 20_000]:
                places.note(key, "normalizer", 1)
            best = min(best, time.perf_counter() - started)
        return best

    unbounded = seconds_per_note(TaskPlaces(size=len(keys)))
    full = TaskPlaces(size=16_384)
    for key in keys:
        full.note(f"warm-{key}", "boefje", 0)
    assert len(full) == full.size
    at_bound = seconds_per_note(full)
    assert len(full) == full.size and full.of(keys[59_999]) == ("normalizer", 1)
    assert at_bound < 4 * unbounded, f"a note at the bound: {at_bound / unbounded:.1f}x one below it"
