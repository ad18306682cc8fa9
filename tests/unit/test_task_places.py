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
