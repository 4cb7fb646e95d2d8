"""Command line: parse, call the library, print. Bad input exits with status 2 and one line.

Each command group lives in its own module (models, weights, train, inference, explain, export,
experiment, serve) and adds its subcommands with ``register(subparsers)``.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from . import experiment, explain, export, inference, models, serve, train, weights
from .common import PROG, Parser, UsageError, parse_options

__all__ = ["PROG", "Parser", "UsageError", "build_parser", "main", "parse_options"]

COMMAND_GROUPS = (models, weights, train, inference, explain, export, experiment, serve)


def build_parser() -> Parser:
    """The argument parser with every subcommand."""
    parser = Parser(prog=PROG, description="The ResNet family: models, training, analysis, export.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", parser_class=Parser, required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def _version() -> str:
    from .. import __version__

    return f"{PROG} {__version__}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``resnetlab`` command."""
    from ..errors import DownloadError, RankLost, TrainingDiverged

    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except (TrainingDiverged, RankLost) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except UsageError as error:
        message = str(error)
        print(message if message.startswith(PROG) else f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except (ValueError, OSError, DownloadError) as error:
        text = str(error)
        if "\nOriginal Traceback" in text:  # re-raised from a DataLoader worker: the last line is the error
            text = text.strip().splitlines()[-1].split(": ", 1)[-1]
        message = " ".join(text.split()) or type(error).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
