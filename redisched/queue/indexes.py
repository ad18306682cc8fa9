"""The queue's secondary indexes, in one place: which fields are indexed, how a task's index
values come from its payload or its data, and which index drives a filtered search.

Each index is a lex ZSET per queue partition (``ix:<name>`` in keys.py), member
``"<value>\\0<order key>"``; Lua keeps them in step with the task records (``rec.ix``).
"""

from __future__ import annotations

from typing import Any

from redisched import filters

# name -> (column, path into data): the pop planner drives a pop from one of them when the
# filter has an eq/in with string values on that column/path.
INDEXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "org": ("organisation", ()),
    "boefje": ("data", ("boefje", "id")),
    "image": ("data", ("boefje", "oci_image")),
    "dedup": ("data", ("deduplication_key",)),
}
# The indexes whose value is the data's own string at their path (the dedup key is
# normalised as a UUID, so not it): a filter's eq/in on strings there may read the value from
# the record's ix instead of decoding the data (lua/includes/filter.lua, indexed_leaf).
VERBATIM_INDEXES = ("boefje", "image")
# The most (boefje id, image) pairs a search reads the heads of (one HMGET); a filter that
# names more is driven by its boefje ids' pairs alone.
PAIRS_MAX = 1024
# Most selective first. The dedup index serves the boefje batch rule (pop.lua), not searches.
DRIVING_INDEXES = ("boefje", "image", "org")
_DRIVING_BY_FIELD = {INDEXES[name]: name for name in DRIVING_INDEXES}


class BadIndexValue(ValueError):
    """An index value with a NUL byte (the member separator)."""


def values_of_payload(organisation: str, payload: Any) -> dict[str, str]:
    """The index values of a pushed task, from its parsed payload (models.py)."""
    values = {"org": organisation}
    boefje = getattr(payload, "boefje", None)
    if boefje is not None:
        values["boefje"] = boefje.id
        if boefje.oci_image is not None:
            values["image"] = boefje.oci_image
    dedup_key = getattr(payload, "deduplication_key", None)
    if dedup_key is not None:
        values["dedup"] = str(dedup_key)
    return checked(values)


def values_of_data(data: dict[str, Any]) -> dict[str, str | None]:
    """The data-borne index values of any shape of data (a patch's, Postgres's); None for an
    index the data does not feed (the task leaves it)."""
    boefje = data.get("boefje") if isinstance(data.get("boefje"), dict) else {}
    dedup = data.get("deduplication_key")
    return {
        "boefje": boefje.get("id") if isinstance(boefje.get("id"), str) else None,
        "image": boefje.get("oci_image") if isinstance(boefje.get("oci_image"), str) else None,
        "dedup": str(dedup) if dedup is not None else None,
    }


def values_of_task(organisation: str, data: dict[str, Any]) -> dict[str, str]:
    """The index values of a task Postgres holds, from its organisation and data."""
    values = {"org": organisation, **values_of_data(data)}
    return {name: value for name, value in values.items() if value is not None}


def checked(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` unchanged; BadIndexValue when one holds a NUL byte."""
    if any(isinstance(value, str) and "\0" in value for value in values.values()):
        raise BadIndexValue("index values must not contain NUL")
    return values


def terms(node: filters.Node | None) -> list[tuple[str, str | None, str, tuple[str, ...]]]:
    """The top-level AND leaves an index can serve: ``(column, field, op, values)`` for
    ``eq``/``in`` with string values on an indexed column or data path."""
    leaves = node.children if isinstance(node, filters.And) else (node,) if node is not None else ()
    found = []
    for leaf in leaves:
        if not isinstance(leaf, filters.Leaf) or leaf.op not in ("eq", "in") or (leaf.column, leaf.path) not in _DRIVING_BY_FIELD:
            continue
        values = leaf.value if leaf.op == "in" else [leaf.value]
        if all(isinstance(value, str) for value in values):
            found.append((leaf.column, "__".join(leaf.path) or None, leaf.op, tuple(values)))
    return found


def pair_name(boefje: str, image: str | None) -> str:
    """A (boefje id, image) pair as the pair index names it (lua/includes/common.lua,
    pair_name): the id's length in bytes, ":", the id, then "=" and the image if any."""
    return f"{len(boefje.encode())}:{boefje}" + (f"={image}" if image is not None else "")


def driving_index(node: filters.Node | None) -> tuple[str, list[str]] | None:
    """Which index drives the search, and for which values: with a boefje id or an image
    constrained, the pair index, ``("pair", [n, m, n boefje ids, m images, the n x m pair
    names])`` (n or m may be 0; lua/includes/candidates.lua, pair_ranges: with both, as the
    runners send them, one HMGET of the heads of B x I, so a runner pays nothing for a
    plugin whose image it lacks); else the organisation index. ``("", [])``: none, the search walks the queue.
    None: nothing can match."""
    wanted: dict[str, set[str]] = {}
    for column, field, _op, values in terms(node):
        name = _DRIVING_BY_FIELD[(column, tuple(field.split("__")) if field else ())]
        wanted[name] = wanted[name] & set(values) if name in wanted else set(values)
    if any(name in wanted and not wanted[name] for name in DRIVING_INDEXES):
        return None
    if "boefje" in wanted or "image" in wanted:
        boefjes, images = sorted(wanted.get("boefje", ())), sorted(wanted.get("image", ()))
        if boefjes and len(boefjes) * len(images) > PAIRS_MAX:
            images = []  # the pairs of those boefjes, whatever their image
        pairs = [pair_name(boefje, image) for boefje in boefjes for image in images]
        return "pair", [str(len(boefjes)), str(len(images)), *boefjes, *images, *pairs]
    if "org" in wanted:
        return "org", sorted(wanted["org"])
    return "", []
