"""The redisched command's own surface: the default command and every --help."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from redisched import cli

ROOT = Path(__file__).resolve().parents[2]


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        cli.main([*argv, "--help"])
    assert stopped.value.code == 0
    return capsys.readouterr().out


def test_no_command_runs_serve_with_its_options(monkeypatch):
    ran = []
    monkeypatch.setattr(cli, "serve", lambda settings, args: ran.append(args) or 0)
    monkeypatch.delenv("REDISCHED_ACCESS_LOG", raising=False)
    assert cli.main([]) == 0
    assert cli.main(["--port", "9001", "--no-access-log"]) == 0
    assert [(args.port, args.access_log) for args in ran] == [(None, True), (9001, False)]


def test_the_access_log_setting_is_the_default_the_flag_overrides(monkeypatch):
    ran = []
    monkeypatch.setattr(cli, "serve", lambda settings, args: ran.append(args.access_log) or 0)
    monkeypatch.setenv("REDISCHED_ACCESS_LOG", "false")
    cli.main(["serve"])
    cli.main(["serve", "--access-log"])
    assert ran == [False, True]


COMMANDS = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_the_overview_lists_every_command(capsys):
    text = _help(capsys)
    assert "With no command: serve" in text
    for name in COMMANDS:
        assert f"    {name} " in text or f"    {name}\n" in text, name
    assert "``" not in text


@pytest.mark.parametrize("name", [name for name in COMMANDS if name != "bench"])
def test_every_command_says_what_it_does_and_lists_its_options(capsys, name):
    text = _help(capsys, name)
    assert text.startswith(f"usage: redisched {name}")
    description = COMMANDS[name].description
    assert description and " ".join(description.split()[:4]) in " ".join(text.split())
    assert "options:" in text and "--help" in text
    if name in ("serve", "api"):
        assert all(option in text for option in ("--host", "--port", "--access-log", "--no-access-log"))
        assert "--workers" in text
    assert "``" not in text


def _redisched(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "redisched", *argv], capture_output=True, text=True, cwd=ROOT, timeout=30)


def test_bench_help_lists_the_benchmarks():
    listed = _redisched("bench", "--list")
    assert listed.returncode == 0, listed.stderr
    benchmarks = [line.split(None, 1) for line in listed.stdout.splitlines() if line.strip()]
    assert len(benchmarks) >= 5
    done = _redisched("bench", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: redisched bench")
    for option in ("--quick", "--list", "--out"):
        assert option in done.stdout
    for name, what in benchmarks:
        assert f"  {name} " in done.stdout and what in done.stdout, name
    assert "``" not in done.stdout
