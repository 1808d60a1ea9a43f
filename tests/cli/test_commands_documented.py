"""The README's command table names every command of the ``graywave`` CLI (the prober found
``plot``, ``status`` and ``rejects`` missing from the README's commands)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from graywave.cli.main import app


def _commands(command: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        return {prefix}
    return set().union(*(_commands(sub, (*prefix, name)) for name, sub in subcommands.items()))


def test_the_readme_lists_every_command():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme.split("## Commands", 1)[1].split("\n## ", 1)[0]
    documented: set[tuple[str, ...]] = set()
    for cell in re.findall(r"^\| (`graywave [^|]+) \|", table, re.MULTILINE):
        words = re.findall(r"`([^`]+)`", cell)
        group = words[0].split()[1:]  # `graywave query weekly` / `median` / `similar`
        documented.add(tuple(group))
        documented |= {(*group[:-1], word) for word in words[1:]}
    commands = _commands(typer.main.get_command(app))
    assert len(commands) > 15
    assert sorted(commands - documented) == []
    assert sorted(documented - commands) == []
