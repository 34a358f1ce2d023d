"""Commands stay thin: each module of tokred.commands is one subcommand that configures its
parser and calls the library (tokred.analysis, tokred.demo_run, ...); what a command does
never lives in another command, nor a helper module in commands/."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import pytest
import tokred.commands as commands
from tokred.commands import discover_commands

MODULES = sorted(Path(commands.__file__).parent.glob("[!_]*.py"))


def test_every_module_in_commands_is_a_command():
    names = {m.name for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_")}
    assert (
        names
        == set(discover_commands())
        == {"analyze", "bench", "demo", "eval", "flops", "study", "train"}
    )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_a_command_module_holds_its_parser_and_one_call(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    assert defined == {"configure", "run"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = node.module or ""
            assert not (node.level == 1 and target), f"imports the command module .{target}"
            assert not target.startswith("tokred.commands."), f"imports {target}"
