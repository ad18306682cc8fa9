"""Loads the Lua scripts of ``lua/`` as one Redis Functions library (queue/driver.py runs
them with FCALL, FCALL_RO for the read-only ones).

A script names shared code with ``--- @include "name"`` (from ``lua/includes/``). The
library defines that code once, when it is loaded, not in every call: a generated preamble
(the key locals of keys.py, the rates ring's shape, the error codes of errors.py's
``ScriptError`` as ``E_<NAME>`` locals), then every include. Each script's body is one
function of the library, ``function(keys, argv) begin(keys, argv, writes) <body> end``:
``begin`` points the key locals at this call's KEYS and resets what the includes keep per
call (``per_call`` in an include: its state that must start afresh, a cache keyed by this
call's tables, a counter). Redis runs one call at a time, so no two calls share that state.
``Script.source`` is the same text as one EVAL script. The library's main chunk holds the
top-level locals of every include, and a Lua function may hold at most 200: an include keeps
what only it uses inside a ``do ... end`` block (filter.lua does).

The library's name carries a digest of its source (``redisched_<digest>``, each function
``redisched_<digest>_<script>``), so two versions of the service side by side each run their
own. The service's connection loads it with ``FUNCTION LOAD REPLACE`` at start and again on
``Function not found`` (a restart without persistence, a failover, ``FUNCTION FLUSH``, a new
shard); the direct client's ACL user may not load it (queue/acl.py): it gets
``FunctionsNotLoaded``. Nobody needs EVAL.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from redis.exceptions import ResponseError

from redisched.errors import ScriptError
from redisched.queue.indexes import INDEXES, VERBATIM_INDEXES
from redisched.queue.keys import FAIR_KEY_NAMES, FAIR_SLICES_MAX, KEY_NAMES, LIMIT_GROUPS_KEPT, RATE_BUCKET_SECONDS, RATE_COUNT_SPAN, RATE_SLOTS
from redisched.queue.records import order_key_prefix, priority_key

_DIRECTIVE = re.compile(r'^--- @(include|operation) "([\w-]+)"$', re.MULTILINE)


def _lua_dir() -> Path:
    packaged = resources.files("redisched") / "lua"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "lua"


READ_ONLY = frozenset({"peek", "stats"})  # may not write: they pass over what healing would move aside


def _shared() -> str:
    """What every script shares, defined once per library load (not once per call: building
    the includes' ~140 functions and tables cost each call ~9 µs): the key locals, assigned
    per call by ``begin``, the constants, and the includes in dependency order. An include's
    state that must start afresh in each call is reset by what it hands to ``per_call``."""
    # The fair keys come last: a call without them (fairness off) finds them nil.
    names = KEY_NAMES + FAIR_KEY_NAMES
    keys = [f"K_{name.upper().replace(':', '_')}" for name in names if not name.startswith("ix:")]
    positions = [position for position, name in enumerate(names, start=1) if not name.startswith("ix:")]
    indexes = [(name[3:], position) for position, name in enumerate(names, start=1) if name.startswith("ix:")]
    lines = ["local ARGV, SCRIPT_WRITES", f"local {', '.join(keys)}", "local IX = {}"]
    lines.append(f"local RATE_BUCKET_US, RATE_SLOTS, RATE_COUNT_SPAN = {RATE_BUCKET_SECONDS * 1_000_000}, {RATE_SLOTS}, {RATE_COUNT_SPAN}")
    lines.append(f"local LIMIT_GROUPS_KEPT = {LIMIT_GROUPS_KEPT}")
    lines.append(f"local FAIR_SLICES_MAX = {FAIR_SLICES_MAX}")
    # Order keys below this one are tasks of priority <= 1 (a person's scan): they pass fairness;
    # in an earlier version's text form (keys.py), those below the text one.
    lines.append(f"local MANUAL_ORDER_END = {_lua_string(order_key_prefix(2))}")
    lines.append(f"local TEXT_MANUAL_ORDER_END = '{priority_key(2)}'")
    lines += [f"local E_{code.name} = {code.value}" for code in ScriptError]
    lines.append(verbatim_index_paths())
    lines.append("local CALL_RESETS = {}")
    lines.append("local function per_call(reset) CALL_RESETS[#CALL_RESETS + 1] = reset end")
    lines += [_include_text(name) for name in _include_order()]
    lines.append("local function begin(keys, argv, writes)")
    lines.append(f"  {', '.join(keys)} = {', '.join(f'keys[{p}]' for p in positions)}")
    lines += [f"  IX.{name} = keys[{position}]" for name, position in indexes]
    lines.append("  ARGV, SCRIPT_WRITES = argv, writes")
    lines.append("  for i = 1, #CALL_RESETS do CALL_RESETS[i]() end")
    lines.append("end")
    return "\n".join(lines) + "\n"


def _lua_string(value: bytes) -> str:
    """A Lua string literal of these bytes (decimal escapes: they may hold any byte)."""
    return "'" + "".join(f"\\{byte:03d}" for byte in value) + "'"


def verbatim_index_paths() -> str:
    """``IX_OF_DATA_PATH``: data path (keys joined by NUL) -> the verbatim index of that path."""
    paths = ("\\0".join(INDEXES[name][1]) for name in VERBATIM_INDEXES)
    return "local IX_OF_DATA_PATH = {" + ", ".join(f'["{p}"] = "{n}"' for p, n in zip(paths, VERBATIM_INDEXES)) + "}"


def _include_text(name: str) -> str:
    return (_lua_dir() / "includes" / f"{name}.lua").read_text()


def _include_order() -> list[str]:
    """Every include the scripts name, each after the includes it names itself."""
    order: list[str] = []

    def visit(source: str) -> None:
        for kind, name in _DIRECTIVE.findall(source):
            if kind == "include" and name not in order:
                visit(_include_text(name))
                order.append(name)

    for name in script_names():
        visit((_lua_dir() / f"{name}.lua").read_text())
    return order


def _body(source: str) -> str:
    """A script's own text: its ``@include``s are in the shared part; ``--- @operation
    "patch"`` makes ``run_patch(args)``, patch.lua's body as a local function run on ``args``
    as ARGV, for a script that runs two operations in one call (pop_next.lua)."""

    def expand(match: re.Match[str]) -> str:
        kind, name = match.groups()
        if kind == "operation":
            return f"local function run_{name}(args)\nARGV = args\n{_body((_lua_dir() / f'{name}.lua').read_text())}\nend\n"
        return ""

    return _DIRECTIVE.sub(expand, source)


class FunctionsNotLoaded(RuntimeError):
    """This Redis lacks this version's functions, and this connection may not load them."""


@dataclass(frozen=True)
class Script:
    """One script: ``source`` as EVAL would take it (benchmarks, tests), ``function`` the name
    FCALL takes."""

    name: str
    source: str
    sha: str
    function: str
    read_only: bool

    def fcall(self, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        """The command that runs this script: FCALL (FCALL_RO) function numkeys keys... args..."""
        return ("FCALL_RO" if self.read_only else "FCALL", self.function, len(keys), *keys, *args)


@dataclass(frozen=True)
class Library:
    name: str
    source: str

    def load_command(self) -> tuple[str, ...]:
        """FUNCTION LOAD REPLACE (redis-py's cluster client sends it to every primary)."""
        return ("FUNCTION", "LOAD", "REPLACE", self.source)


def script_names() -> tuple[str, ...]:
    """One script per ``lua/<name>.lua``."""
    return tuple(sorted(path.stem for path in _lua_dir().glob("*.lua")))


def _begin(name: str, keys: str, argv: str) -> str:
    return f"begin({keys}, {argv}, {'false' if name in READ_ONLY else 'true'})\n"


@cache
def _source(name: str) -> str:
    """The script as EVAL takes it: the shared part, then its body."""
    return "local CALL_KEYS, CALL_ARGV = KEYS, ARGV\n" + _shared() + _begin(name, "CALL_KEYS", "CALL_ARGV") + _script_body(name)


@cache
def _script_body(name: str) -> str:
    return _body((_lua_dir() / f"{name}.lua").read_text())


@cache
def library() -> Library:
    names = script_names()
    shared = _shared()
    digest = hashlib.sha1("\0".join([shared, *(_script_body(name) for name in names)]).encode()).hexdigest()[:12]
    lib = f"redisched_{digest}"
    parts = [f"#!lua name={lib}", shared]
    for name in names:
        flags = "{'no-writes'}" if name in READ_ONLY else "{}"
        parts.append(
            f"redis.register_function{{function_name='{lib}_{name}', flags={flags}, callback=function(keys, argv)\n"
            f"{_begin(name, 'keys', 'argv')}{_script_body(name)}\nend}}"
        )
    return Library(lib, "\n".join(parts) + "\n")


def is_not_loaded(reply: Any) -> bool:
    return isinstance(reply, ResponseError) and "function not found" in str(reply).lower()


def not_loaded(reason: BaseException) -> FunctionsNotLoaded:
    return FunctionsNotLoaded(
        f"Redis lacks the functions {library().name} and this connection could not load them ({reason}): "
        "start this version of the redisched service once (it loads them at start), or load them as an admin"
    )


@cache
def load(name: str) -> Script:
    source = _source(name)
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest(), f"{library().name}_{name}", name in READ_ONLY)
