"""The boefje, normalizer and report schedulers: they turn OpenKAT's events and timers into
ranked tasks on the Redis queues. ``runner.run_schedulers`` starts them; ``rules`` holds the
boefje decision rules; ``rankers`` the priorities."""
