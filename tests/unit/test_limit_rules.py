"""REDISCHED_LIMITS rules: parsing, the group a boefje task falls in, and the spacing kept."""

from __future__ import annotations

import pytest

from redisched.limit_rules import LimitRule, RuleSet, RulesInForce, group_of, parse_rules, plugin_rule

RULES = parse_rules(
    '[{"boefje": "shodan", "group": "shodan", "cooldown": 1},'
    ' {"boefje": "nmap", "group": "nmap:{object_type}:{input_ooi}", "concurrency": 2, "rate": "10/m"},'
    ' {"boefje": "*", "group": "org:{organisation}", "rate": "5/s", "cooldown": 0.1}]'
)


def data(boefje_id: str, ooi: str | None = "Hostname|internet|a.example") -> dict:
    return {"boefje": {"id": boefje_id}, "input_ooi": ooi, "organization": "o1"}


def named(group) -> tuple[str, str]:
    return group.name, group.rule.spec


def test_the_first_matching_rule_gives_the_group_and_its_spacing_and_concurrency():
    assert named(group_of(RULES, "o1", data("shodan"))) == ("shodan", "1000,0")
    assert named(group_of(RULES, "o1", data("nmap"))) == ("nmap:Hostname:Hostname|internet|a.example", "6000,2")
    assert named(group_of(RULES, "o1", data("dns-records"))) == ("org:o1", "200,0")  # 5/s: 200 ms beats 100 ms


def test_a_rule_naming_the_boefje_beats_its_katalogus_group_which_beats_a_star_rule():
    star_first = parse_rules([{"boefje": "*", "group": "all", "concurrency": 9}, {"boefje": "shodan", "group": "s", "cooldown": 2}])
    manifest = plugin_rule("shodan", "shodan:{object_type}", 1)
    assert named(group_of(star_first, "o1", data("shodan"), manifest)) == ("s", "2000,0")
    assert named(group_of(star_first[:1], "o1", data("shodan"), manifest)) == ("shodan:Hostname", "1000,0")
    assert named(group_of(star_first[:1], "o1", data("shodan"))) == ("all", "0,9")
    assert manifest.key != LimitRule(boefje="shodan", group="shodan:{object_type}", cooldown=1).key  # specs kept apart


def test_a_katalogus_group_without_an_interval_or_with_a_bad_template_limits_nothing(caplog):
    assert plugin_rule("shodan", "shodan", None) is None and plugin_rule("shodan", None, 1) is None
    assert plugin_rule("shodan", "{address}", 1) is None
    assert "not usable" in caplog.text


def test_a_process_moves_on_to_newer_rules_only():
    held = RulesInForce(RULES)
    newer = RuleSet(RULES[:1], "1700000000000000", "admin")
    held.adopt(newer)
    held.adopt(RuleSet((), "1600000000000000", "env"))
    assert held.current == newer
    assert newer.specs == {"shodan\0shodan": "1000,0"}


def test_a_template_that_cannot_be_filled_in_leaves_the_task_unlimited(caplog):
    assert group_of(RULES, "o1", data("nmap", ooi=None)) is None
    assert "cannot be filled in" in caplog.text
    assert group_of(parse_rules([]), "o1", data("shodan")) is None


@pytest.mark.parametrize(
    "rule",
    [
        {"boefje": "x", "group": "g"},
        {"boefje": "x", "group": "g", "rate": "0/s"},
        {"boefje": "x", "group": "g", "rate": "5 per second"},
        {"boefje": "x", "group": "g", "concurrency": 0},
        {"boefje": "x", "group": "{boefje}", "cooldown": 1},
        {"boefje": "x", "group": "g", "cooldown": 1, "burst": 3},
    ],
)
def test_a_bad_rule_is_refused_with_what_is_wrong(rule):
    with pytest.raises(ValueError, match="REDISCHED_LIMITS"):
        parse_rules([rule])


def test_hostile_katalogus_rate_limit_fields_leave_that_plugin_unlimited_and_the_rest_decoded(caplog):
    import msgspec

    from redisched.clients.http.katalogus import Plugin

    hostile = [("abc", 5), (-5, 5), (10**400, 5), ("1e400", 5), (True, 5), (None, 5), (1, "g" * 10_000), (1, 123),
               (1, ["g"]), (1, "{organisation:>1000000000}"), (1, "{")]
    listed = [{"id": f"p{i}", "type": "boefje", "rate_limit_interval": interval, "rate_limit_group": group}
              for i, (interval, group) in enumerate(hostile)]
    listed.append({"id": "good", "type": "boefje", "rate_limit_interval": 2, "rate_limit_group": "g:{object_type}"})
    plugins = msgspec.json.decode(msgspec.json.encode(listed), type=list[Plugin])  # one plugin's bad fields fail no other
    assert [plugin_rule(p.id, p.rate_limit_group, p.rate_limit_interval) for p in plugins[:-1]] == [None] * len(hostile)
    good = plugins[-1]
    assert plugin_rule(good.id, good.rate_limit_group, good.rate_limit_interval).spec == "2000,0"
    assert "not usable" in caplog.text
