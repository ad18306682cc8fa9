"""Loads the Lua scripts of ``lua/`` (queue/driver.py runs them: by SHA, EVAL on NOSCRIPT).

A script names shared code with ``--- @include "name"`` (from ``lua/includes/``); the loader
inlines it, after a generated preamble that binds the key locals of keys.py to KEYS
positions, the rates ring's shape and the error codes of errors.py's ``ScriptError`` to
``E_<NAME>`` locals.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

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


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str


@cache
def load(name: str) -> Script:
    source = _key_preamble(name) + _expand((_lua_dir() / f"{name}.lua").read_text(), set())
    return Script(name, source, hashlib.sha1(source.encode()).hexdigest())
