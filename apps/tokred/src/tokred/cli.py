"""The `tokred` command: argparse over the subcommands in `tokred.commands`.

Every user mistake (a `TokredError`, a bad argument, a missing file) ends as one line
`tokred: error: <message>` on stderr and exit status 2, never a traceback: the message
already names the bad value and the fix. A run stopped by SIGINT or SIGTERM says where it
saved and how to resume, and exits 130 or 143. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from tokred_core import RunInterrupted, TokredError

from .commands import Command, discover_commands

__all__ = ["main", "build_parser", "EXIT_USAGE"]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse prints usage plus a message and exits itself; we want one line via main."""

    def error(self, message: str) -> NoReturn:
        raise TokredError(f"{message} (see '{self.prog} --help')")


def build_parser(commands: dict[str, Command]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tokred",
        description="Token reduction for training unified vision-language models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, command in sorted(commands.items()):
        command.configure(
            sub.add_parser(name, help=command.help, description=command.description or command.help)
        )
    return parser


def _fail(message: str) -> int:
    # Multi-line messages (e.g. from OSError chains) are folded so the contract holds.
    line = " ".join(str(message).split())
    print(f"tokred: error: {line}", file=sys.stderr)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run `tokred` with `argv` (default: sys.argv[1:]); returns the exit status."""
    try:
        commands = discover_commands()
        args = build_parser(commands).parse_args(argv)
        if args.command is None:
            raise TokredError(f"no command given: expected one of {', '.join(sorted(commands))}")
        return int(commands[args.command].run(args) or 0)
    except TokredError as exc:
        return _fail(str(exc))
    except OSError as exc:  # missing or unreadable files named on the command line
        return _fail(str(exc))
    except RunInterrupted as exc:  # a run saved what it could; say where, and how to resume
        print(f"tokred: {' '.join(exc.message.split())}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("tokred: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help and friends exit through argparse
        return (
            exc.code if isinstance(exc.code, int) else (0 if exc.code is None else _fail(exc.code))
        )


if __name__ == "__main__":
    sys.exit(main())
