"""What every command module shares: the program name, the one-line parser and its error."""

from __future__ import annotations

import argparse
from typing import Any, Dict, Sequence

from .. import options

PROG = "resnetlab"


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors in one line instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message}")


def parse_options(pairs: Sequence[str]) -> Dict[str, Any]:
    """The -o KEY=VALUE options as a dict; a malformed pair is a UsageError."""
    try:
        return options.parse_options(pairs)
    except ValueError as error:
        raise UsageError(str(error)) from None
