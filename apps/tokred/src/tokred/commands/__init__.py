"""Subcommands of `tokred`, one module each.

To add a subcommand, drop a module in this package that defines

    COMMAND = Command(name="demo", help="...", configure=add_arguments, run=run)

`configure(parser)` adds its arguments; `run(args)` calls the one library function that
does the work (in a module of `tokred` beside this package: analysis, demo_run,
evaluation, flops_table, training) and prints its result, returning the exit status.
Every module here is a command: what commands share lives in those library modules, and
no command imports another (tests/test_commands.py checks both). Modules are discovered on
start-up, so keep their top level light: import the library module (and through it
torch-heavy or model code: tokred_train, transformers) inside `run`, never at import time,
so that `tokred --help` and `tokred flops` stay fast and work without those extras.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Command", "add_set_option", "discover_commands"]


@dataclass(frozen=True)
class Command:
    name: str
    """The subcommand word, e.g. `flops`."""
    help: str
    """One line for `tokred --help`."""
    configure: Callable[[argparse.ArgumentParser], None]
    """Adds the subcommand's arguments to its parser."""
    run: Callable[[argparse.Namespace], int]
    """Runs the subcommand; returns the exit status."""
    description: str | None = None
    """Longer text for `tokred NAME --help` (defaults to `help`)."""


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """`--set KEY=VALUE` (repeatable, into `args.overrides`): every command's overrides."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def discover_commands() -> dict[str, Command]:
    """Every `COMMAND` of the modules in this package, by name."""
    commands: dict[str, Command] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        command = getattr(module, "COMMAND", None)
        if not isinstance(command, Command):
            continue  # a helper module shared by commands
        if command.name in commands:
            raise RuntimeError(f"subcommand {command.name!r} is defined twice")
        commands[command.name] = command
    return commands
