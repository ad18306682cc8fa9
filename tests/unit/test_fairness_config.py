"""REDISCHED_FAIRNESS and REDISCHED_ORGANISATION_WEIGHTS: read from the environment, checked,
and the fair keys handed to the scripts only with fairness on (so `none` costs nothing)."""

from __future__ import annotations

import pydantic
import pytest

from redisched.config import Settings
from redisched.queue.keys import FAIR_KEY_NAMES, KEY_NAMES, QueueKeys
from redisched.queue.layout import QueueLayout
from redisched.queue.scripts import load


def test_fairness_and_weights_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("REDISCHED_FAIRNESS", "organisation")
    monkeypatch.setenv("REDISCHED_ORGANISATION_WEIGHTS", '{"a": 5, "b": 0.5}')
    settings = Settings()
    assert settings.fairness == "organisation" and settings.organisation_weights == {"a": 5.0, "b": 0.5}
    assert QueueLayout.from_settings(settings).fair
    assert not QueueLayout.from_settings(Settings(_env_file=None, fairness="none")).fair


@pytest.mark.parametrize("weights", ['{"a": 0}', '{"a": -1}', '{"a": "x"}', '["a"]', '{"a": Infinity}'])
def test_a_weight_must_be_a_number_above_zero(monkeypatch, weights):
    monkeypatch.setenv("REDISCHED_ORGANISATION_WEIGHTS", weights)
    with pytest.raises(pydantic.ValidationError):
        Settings()


def test_an_unknown_fairness_is_refused(monkeypatch):
    monkeypatch.setenv("REDISCHED_FAIRNESS", "round-robin")
    with pytest.raises(pydantic.ValidationError):
        Settings()
    with pytest.raises(ValueError):
        QueueLayout(fairness="round-robin")


def test_the_fair_keys_are_handed_to_the_scripts_only_with_fairness_on():
    plain, fair = QueueKeys("rs", "boefje"), QueueKeys("rs", "boefje", fair=True)
    assert len(plain.all) == len(KEY_NAMES) and fair.all == plain.all + [f"rs:{{boefje}}:{n}" for n in FAIR_KEY_NAMES]
    assert QueueLayout(fairness="organisation").of("boefje")[0].all == fair.all
    preamble = load("pop").source
    bound = next(line for line in preamble.splitlines() if line.lstrip().startswith("K_QUEUE, "))
    names, positions = (side.split(", ") for side in bound.strip().split(" = "))
    assert positions[names.index("K_FAIR_TASKS")] == f"keys[{len(KEY_NAMES) + 1}]"  # nil without them
