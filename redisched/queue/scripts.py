"""Loads the Lua scripts of ``lua/`` as one Redis Functions library (queue/driver.py runs
them with FCALL, FCALL_RO for the read-only ones).

A script names shared code with ``--- @include "name"`` (from ``lua/includes/``); the loader
inlines it, after a generated preamble that binds the key locals of keys.py to KEYS
positions, the rates ring's shape and the error codes of errors.py's ``ScriptError`` to
``E_<NAME>`` locals. Each expanded script, unchanged, is the body of one function of the
library: ``function(KEYS, ARGV) <script> end``, what EVAL makes of a script too.

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
from redisched.queue.keys import KEY_NAMES, LIMIT_GROUPS_KEPT, RATE_BUCKET_SECONDS, RATE_SLOTS

_DIRECTIVE = re.compile(r'^--- @(include|operation) "([\w-]+)"$', re.MULTILINE)


def _lua_dir() -> Path:
    packaged = resources.files("redisched") / "lua"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "lua"


READ_ONLY = frozenset({"peek", "stats"})  # may not write: they pass over what healing would move aside


def _key_preamble(script: str) -> str:
    # ARGV as a local, so an @operation can point the includes at its own arguments.
    lines, indexes = ["local ARGV = ARGV", f"local SCRIPT_WRITES = {'false' if script in READ_ONLY else 'true'}"], []
    for position, name in enumerate(KEY_NAMES, start=1):
        if name.startswith("ix:"):
            indexes.append(f"{name[3:]} = KEYS[{position}]")
        else:
            lines.append(f"local K_{name.upper()} = KEYS[{position}]")
    lines.append("local IX = {" + ", ".join(indexes) + "}")
    lines.append(f"local RATE_BUCKET_US, RATE_SLOTS = {RATE_BUCKET_SECONDS * 1_000_000}, {RATE_SLOTS}")
    lines.append(f"local LIMIT_GROUPS_KEPT = {LIMIT_GROUPS_KEPT}")
    lines += [f"local E_{code.name} = {code.value}" for code in ScriptError]
    return "\n".join(lines) + "\n"


def _expand(source: str, included: set[str]) -> str:
    """Inline ``@include``s (once each) and ``@operation``s: ``--- @operation "patch"`` makes
    ``run_patch(args)``, patch.lua's body as a local function run on ``args`` as ARGV, for a
    script that runs two operations in one call (pop_next.lua)."""

    def expand(match: re.Match[str]) -> str:
        kind, name = match.groups()
        if kind == "operation":
            body = _expand((_lua_dir() / f"{name}.lua").read_text(), included)
            return f"local function run_{name}(args)\nARGV = args\n{body}\nend\n"
        if name in included:
            return ""
        included.add(name)
        text = (_lua_dir() / "includes" / f"{name}.lua").read_text()
        return _expand(text, included)

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


@cache
def _source(name: str) -> str:
    return _key_preamble(name) + _expand((_lua_dir() / f"{name}.lua").read_text(), set())


@cache
def library() -> Library:
    names = script_names()
    digest = hashlib.sha1("\0".join(_source(name) for name in names).encode()).hexdigest()[:12]
    lib = f"redisched_{digest}"
    parts = [f"#!lua name={lib}"]
    for name in names:
        flags = "{'no-writes'}" if name in READ_ONLY else "{}"
        parts.append(
            f"redis.register_function{{function_name='{lib}_{name}', flags={flags}, callback=function(KEYS, ARGV)\n"
            f"{_source(name)}\nend}}"
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
