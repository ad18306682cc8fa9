"""The filter language without servers: parsing, validation errors, limits and the forms the
queue and the compilers consume. Agreement of the three evaluators is tested against real
Redis and Postgres in tests/integration/test_filters_agree.py."""

from __future__ import annotations

import json

import pytest

from redisched.filters import (
    MAX_DEPTH,
    MAX_LEAVES,
    MAX_LIST,
    OPERATORS,
    UPSTREAM_OPERATORS,
    And,
    FilterError,
    Leaf,
    Not,
    Or,
    evaluate,
    parse_filter_request,
    to_lua,
    to_sql,
)
from redisched import filters
from redisched.errors import Kind
from redisched.queue import indexes


def f(column="organisation", operator="eq", value="org1", **extra):
    return {"column": column, "operator": operator, "value": value, **extra}


def parse(*filters, target="tasks"):
    return parse_filter_request({"filters": list(filters)}, target)


def error_of(body, target="tasks") -> FilterError:
    with pytest.raises(FilterError) as caught:
        parse_filter_request(body, target)
    return caught.value


# --- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, {}, {"filters": None}, {"filters": []}, {"filters": {}}, {"filters": {"and": []}}])
def test_empty_bodies_constrain_nothing(body):
    assert parse_filter_request(body) is None


def test_a_single_filter_is_a_leaf():
    assert parse(f()) == Leaf("organisation", (), "eq", "org1")


def test_a_list_means_all_of_it():
    node = parse(f(), f(column="status", value="queued"))
    assert node == And((Leaf("organisation", (), "eq", "org1"), Leaf("status", (), "eq", "queued")))


def test_field_is_a_path_into_data():
    assert parse(f("data", "in", ["dns"], field="boefje__id")) == Leaf("data", ("boefje", "id"), "in", ["dns"])


def test_groups_nest_and_flatten():
    body = {
        "filters": {
            "and": [f(), {"and": [f(column="status", value="queued")]}],
            "or": [f(column="type", value="a"), {"or": [f(column="type", value="b")]}],
            "not": [f(column="hash", value=None), f(column="priority", operator="<", value=0)],
        }
    }
    assert parse_filter_request(body) == And(
        (
            Leaf("organisation", (), "eq", "org1"),
            Leaf("status", (), "eq", "queued"),
            Or((Leaf("type", (), "eq", "a"), Leaf("type", (), "eq", "b"))),
            Not(Or((Leaf("hash", (), "eq", None), Leaf("priority", (), "lt", 0)))),
        )
    )


def test_a_list_may_hold_groups():
    node = parse(f(), {"not": [f(column="status", value="queued")]})
    assert node == And((Leaf("organisation", (), "eq", "org1"), Not(Leaf("status", (), "eq", "queued"))))


@pytest.mark.parametrize("alias", sorted(OPERATORS))
def test_every_operator_parses_to_its_canonical_name(alias):
    canonical = OPERATORS[alias]
    value = {"in": ["x"], "not_in": ["x"], "@>": {"k": 1}, "<@": "[1, 2]"}.get(canonical, "x")
    node = parse(f("data", alias, value, field="k"))
    expected = {"is_null": "eq", "is_not_null": "ne"}.get(canonical, canonical)
    assert node.op == expected


def test_null_tests_ignore_the_value():
    assert parse({"column": "hash", "operator": "is_null"}) == Leaf("hash", (), "eq", None)
    assert parse(f("hash", "is_not_null", 123)) == Leaf("hash", (), "ne", None)
    assert parse(f("hash", "is", None)) == Leaf("hash", (), "eq", None)


def test_containment_takes_json_strings():
    assert parse(f("data", "@>", '{"boefje": {"id": "dns"}}')).value == {"boefje": {"id": "dns"}}
    assert parse(f("data", "<@", [1, 2])).value == [1, 2]


def test_datetimes_become_microseconds_utc():
    assert parse(f("created_at", ">=", "2025-06-01")).value == 1748736000_000000
    assert parse(f("created_at", ">=", "2025-06-01T02:00:00+02:00")).value == 1748736000_000000
    assert parse(f("modified_at", "==", "2025-06-01T00:00:00.000001Z")).value == 1748736000_000001
    assert parse(f("created_at", "in", ["2025-06-01", None])).value == [1748736000_000000, None]


def test_schedules_have_their_own_columns():
    assert parse(f("enabled", "eq", True), target="schedules") == Leaf("enabled", (), "eq", True)
    assert parse(f("deadline_at", "is_null", None), target="schedules") == Leaf("deadline_at", (), "eq", None)
    assert "unknown column 'priority'" in error_of({"filters": [f("priority", "eq", 1)]}, "schedules").message
    assert "unknown column 'enabled'" in error_of({"filters": [f("enabled", "eq", True)]}).message


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, message",
    [
        ([1], "the body must be an object"),
        ({"filters": "organisation=org1"}, "'filters' must be a list"),
        ({"filters": [5]}, "filters[0]: expected a filter"),
        ({"filters": [{}]}, "filters[0]: expected a filter"),
        ({"filters": {"xor": []}}, "unknown group key(s) xor"),
        ({"filters": {"and": f()}}, "filters.and: must be a list"),
        ({"filters": {"or": [f(), {"foo": []}]}}, "filters.or[1]: expected a filter"),
        ({"filters": [f(column="nosuchcolumn")]}, "filters[0]: unknown column 'nosuchcolumn'; tasks columns are id,"),
        ({"filters": [f(column=None)]}, "unknown column None"),
        ({"filters": [{"column": "status", "value": "x"}]}, "filters[0]: 'operator' is required"),
        ({"filters": [{"column": "status", "operator": "eq"}]}, "'value' is required for operator 'eq'"),
        ({"filters": [f(field="x")]}, "'field' is only allowed with columns 'data' and 'schedule'"),
        ({"filters": [f("data", field=5)]}, "'field' must be a string"),
        ({"filters": [f("data", field="boefje____id")]}, "keys are joined by '__' and may not be empty"),
        ({"filters": [f("data", field="__id")]}, "may not be empty"),
        ({"filters": [f("data", field="id__")]}, "may not be empty"),
        ({"filters": [f("data", field="__".join("k" * 17))]}, "more than 16 keys"),
        ({"filters": [f("data", field="k" * 257)]}, "longer than 256 characters"),
        ({"filters": [f("data", field="a\x00b")]}, "NUL"),
        ({"filters": [f(operator="in", value="org1")]}, "operator 'in' needs a list value"),
        ({"filters": [f(operator="not_in", value=["x"] * (MAX_LIST + 1))]}, "more than 1000 items"),
        ({"filters": [f(operator="like", value=5)]}, "operator 'like' needs a string value"),
        ({"filters": [f(operator="ilike", value="abc\\")]}, "may not end with the escape character"),
        ({"filters": [f(operator="starts_with", value=None)]}, "needs a string value"),
        ({"filters": [f("data", "@>", 5)]}, "needs a JSON object or array"),
        ({"filters": [f("data", "@>", "{not json")]}, "not this string"),
        ({"filters": [f("data", "<@", '"scalar"')]}, "needs a JSON object or array"),
        ({"filters": [f("organisation", "@>", {"a": 1})]}, "only applies to column 'data'"),
        ({"filters": [f("created_at", ">", "yesterday")]}, "ISO-8601 strings, not 'yesterday'"),
        ({"filters": [f("created_at", ">", 1700000000)]}, "ISO-8601 strings"),
        ({"filters": [f("created_at", "in", "2025-06-01")]}, "needs a list value"),
        ({"filters": [f("created_at", "like", "2025%")]}, "operator 'like' does not apply to datetime column"),
        ({"filters": [f("modified_at", "contains", "2025")]}, "does not apply to datetime column"),
        ({"filters": [f(value=float("nan"))]}, "numbers must be finite"),
        ({"filters": [f(value=2**53 + 1)]}, "within ±2^53"),
        ({"filters": [f(value="a\x00")]}, "NUL"),
        ({"filters": [f(value="\ud800")]}, "valid Unicode"),
        ({"filters": [f(value="x" * 4097)]}, "limited to 4096 characters"),
        ({"filters": [f(value={"\x00": 1})]}, "NUL"),
        ({"filters": [f(value=json.loads("[" * 18 + "]" * 18))]}, "nests deeper than 16"),
        ({"filters": [f(value={1, 2})]}, "the value is not JSON"),
        ({"filters": [f(operator="any")]}, "filters[0]: operator 'any' is not supported"),
        ({"filters": [f(operator="@@")]}, "operator '@@' is not supported"),
    ],
)
def test_invalid_filters_say_where_and_what(body, message):
    error = error_of(body)
    assert error.kind is Kind.INVALID_FILTER
    assert message in error.message


def test_nesting_depth_is_bounded():
    group = f()
    for _ in range(MAX_DEPTH):
        group = {"and": [group]}
    assert parse_filter_request({"filters": group}) == Leaf("organisation", (), "eq", "org1")
    error = error_of({"filters": {"and": [group]}})
    assert f"nest deeper than {MAX_DEPTH}" in error.message


def test_leaf_count_is_bounded():
    assert parse(*[f()] * MAX_LEAVES) is not None
    assert f"at most {MAX_LEAVES}" in error_of({"filters": [f()] * (MAX_LEAVES + 1)}).message


def test_unknown_operator_is_a_422_shaped_like_mula():
    filters = [f(operator="~~", value="x")]
    error = error_of({"filters": filters})
    assert error.kind is Kind.INVALID_REQUEST
    assert error.message == "filters[0]: unknown operator '~~'"
    expected = ", ".join(f"'{o}'" for o in UPSTREAM_OPERATORS[:-1]) + " or '@@'"
    # byte for byte the detail recorded from mula (golden/mula-v1.20-session.json, seq 27)
    assert error.errors == [
        {
            "type": "literal_error",
            "loc": ["body", "filters", "list[Filter]", 0, "operator"],
            "msg": f"Input should be {expected}",
            "input": "~~",
            "ctx": {"expected": expected},
        },
        {
            "type": "dict_type",
            "loc": ["body", "filters", "dict[str,list[Filter]]"],
            "msg": "Input should be a valid dictionary",
            "input": filters,
        },
    ]


def test_unknown_operator_in_a_group_points_into_it():
    filters = {"or": [f(), f(operator=5)]}
    error = error_of({"filters": filters})
    assert error.kind is Kind.INVALID_REQUEST
    literal, sibling = error.errors
    assert literal["loc"] == ["body", "filters", "dict[str,list[Filter]]", "or", 1, "operator"]
    assert literal["input"] == 5
    assert sibling["type"] == "list_type" and sibling["loc"] == ["body", "filters", "list[Filter]"]


# --- index terms -----------------------------------------------------------------------------


def test_the_index_terms_are_the_runner_and_ui_filters():
    node = parse(
        f("data", "in", ["ghcr.io/x:1"], field="boefje__oci_image"),
        f("data", "in", ["dns", "nmap"], field="boefje__id"),
        f("organisation", "==", "org1"),
        f("status", "eq", "queued"),
        f("data", "eq", "x", field="boefje__name"),
        f("organisation", "in", ["org1", None]),
        f("organisation", "ne", "org2"),
        {"or": [f("organisation", "eq", "org3"), f("organisation", "eq", "org4")]},
    )
    assert indexes.terms(node) == [
        ("data", "boefje__oci_image", "in", ("ghcr.io/x:1",)),
        ("data", "boefje__id", "in", ("dns", "nmap")),
        ("organisation", None, "eq", ("org1",)),
    ]
    assert indexes.terms(parse(f())) == [("organisation", None, "eq", ("org1",))]
    assert indexes.terms(parse(f(operator="in", value=[]))) == [("organisation", None, "in", ())]
    assert indexes.terms(None) == []


# --- compiled forms --------------------------------------------------------------------------


def test_lua_form():
    assert json.loads(to_lua(None)) == {"and": []}
    node = parse(
        f("data", "in", ["dns"], field="boefje__id"),
        {"not": [f("created_at", "<", "1970-01-01T00:00:01Z")]},
        f("type", "ilike", "BoeF%"),
    )
    assert json.loads(to_lua(node)) == {
        "and": [
            {"op": "in", "col": "data", "path": ["boefje", "id"], "val": ["dns"]},
            {"not": {"op": "lt", "col": "created_at", "val": 1_000_000}},
            {"op": "ilike", "col": "type", "val": "boef%", "segs": [["boef", "boef", ["boef"], False, 4], ["", "", [""], False, 0]]},
        ]
    }


def test_like_patterns_reach_lua_compiled_into_segments():
    # [literal, ascii Lua pattern, runs, has '_', width in bytes] per '%'-separated segment
    node = parse(f("data", "like", "a_é.%\\%x__", field="k"))
    assert json.loads(to_lua(node))["segs"] == [
        ["aé.", "a.é%.", ["a", 1, "é%."], True, 5],
        ["%x", "%%x..", ["%%x", 2], True, 4],
    ]


def test_lua_form_marks_empty_arrays_where_they_matter():
    node = parse(f("data", "@>", {"a": [], "b": {}, "c": [[]]}), f("data", "in", [[], "x"], field="k"))
    assert to_lua(node) == (
        b'{"and":[{"op":"@>","col":"data","exact":true,"val":{"a":[NaN],"b":{},"c":[[NaN]]}},'
        b'{"op":"in","col":"data","path":["k"],"exact":true,"val":[[NaN],"x"]}]}'
    )


HOSTILE = ["'; DROP TABLE tasks; --", "a'b", 'a"b', "a\\b", "100%", "$1", "%s", "%(x)s", "{}", "é ' \\' \"", "E'\\x41'"]


def every_kind_of_leaf(text: str):
    return parse(
        f("data", "eq", text, field=text),
        f("data", "like", text.replace("\\", "\\\\"), field="k"),
        f("data", "contains", text, field="k"),
        f("data", "gt", text, field=f"{text}__{text}"),
        f("organisation", "in", [text]),
        f("data", "@>", {text: [text]}),
    )


@pytest.mark.parametrize("text", HOSTILE)
def test_sql_carries_values_and_fields_only_as_parameters(text):
    condition, params = to_sql(every_kind_of_leaf(text))
    benign, _ = to_sql(every_kind_of_leaf("benign"))
    assert condition.as_string(None) == benign.as_string(None)
    assert condition.as_string(None).count("%s") == len(params)
    assert text in params


def test_sql_for_nothing_is_true():
    condition, params = to_sql(None)
    assert condition.as_string(None) == "TRUE" and params == []


def test_sql_uses_plain_column_comparisons_for_indexed_text_columns():
    condition, params = to_sql(parse(f("organisation", "in", ["org1", "org2"])))
    assert condition.as_string(None) == '("organisation" = ANY(%s::text[]) AND "organisation" IS NOT NULL)'
    assert params == [["org1", "org2"]]


# --- semantics spot checks (the integration test compares all three evaluators) -------------


TASK = {
    "id": "0b6e2d3c-6f0a-4f7e-9a39-9f1f0d3c7a11",
    "organisation": "org1",
    "priority": 5,
    "status": "queued",
    "hash": None,
    "created_at": "2025-06-01T10:00:00Z",
    "data": {
        "boefje": {"id": "dns-records", "oci_image": None},
        "name": "Élan_50%",
        "n": 1.0,
        "flag": True,
        "tags": ["a", [1, 2], {"k": 1}],
        "obj": {"x": {"y": [1, 2, 3]}, "e": []},
    },
}


@pytest.mark.parametrize(
    "flt, expected",
    [
        (f("data", "eq", 1, field="n"), True),
        (f("data", "eq", True, field="n"), False),
        (f("data", "ne", "1", field="n"), True),
        (f("data", "eq", None, field="boefje__oci_image"), True),
        (f("data", "eq", None, field="no__such__path"), True),
        (f("data", "eq", None, field="name__deeper"), True),
        (f("data", "in", ["x", "y"], field="boefje__oci_image"), False),
        (f("data", "not_in", ["x", "y"], field="boefje__oci_image"), True),
        (f("data", "like", "_lan\\_50\\%", field="name"), True),
        (f("data", "like", "%50%", field="name"), True),
        (f("data", "like", "élan%", field="name"), False),
        (f("data", "ilike", "éLAN%", field="name"), False),
        (f("data", "ilike", "ÉLAN%", field="name"), True),
        (f("data", "not_like", "x%", field="n"), False),
        (f("data", "gt", 0.5, field="n"), True),
        (f("data", "gt", "0", field="n"), False),
        (f("data", "lt", "f", field="name"), False),
        (f("data", "contains", "50%", field="name"), True),
        (f("data", "contains", [1, 2], field="tags"), True),
        (f("data", "contains", [1], field="tags"), False),
        (f("data", "starts_with", "Éla", field="name"), True),
        (f("data", "@>", {"obj": {"x": {"y": [3, 1]}}}), True),
        (f("data", "@>", {"obj": {"x": {"y": 3}}}), False),
        (f("data", "@>", '{"obj": {"e": []}}'), True),
        (f("data", "@>", '{"obj": {"e": {}}}'), False),
        (f("data", "@>", ["a"], field="tags"), True),
        (f("data", "<@", ["a", "b"], field="boefje__id"), False),
        (f("data", "<@", [None], field="missing"), True),
        (f("priority", "gte", 5), True),
        (f("created_at", "eq", "2025-06-01T12:00:00+02:00"), True),
        (f("created_at", "lt", "2025-06-01"), False),
        (f("hash", "is_not", None), False),
    ],
)
def test_reference_semantics(flt, expected):
    assert evaluate(parse(flt), TASK) is expected


def test_an_indexed_scan_passes_over_a_fixed_count_sized_by_the_filters_cost():
    """A count, not the clock: a busy machine's pop finds the indexed match an idle one finds;
    a costlier filter passes over fewer candidates, never more than the scan budget."""
    cheap = filters.parse_filter_request({"filters": [{"column": "organisation", "operator": "eq", "value": "o"}]})
    costly = filters.parse_filter_request({"filters": [{"column": "data", "field": "x", "operator": "like", "value": "%a" + "_" * 900 + "b%"}]})
    assert filters.indexed_scan_budget(cheap, 2000, 1000) == 1000 * 10 // (100 + filters.cost(cheap).per_record)
    assert 1 <= filters.indexed_scan_budget(costly, 2000, 1000) < filters.indexed_scan_budget(cheap, 2000, 1000)
    assert filters.indexed_scan_budget(cheap, 20, 1000) == 20
