"""The exception types resnetlab raises beyond ValueError and OSError, and the one-line formatter
every user-facing error goes through."""

from __future__ import annotations

import re
import unicodedata
from typing import Optional, Union

__all__ = ["DownloadError", "RankLost", "TrainingDiverged", "one_line", "printable"]

_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite."""


class DownloadError(RuntimeError):
    """A download failed (no network, or a checksum mismatch)."""


class RankLost(RuntimeError):
    """A process of a distributed run lost contact with the others."""


def one_line(error: Union[BaseException, str], limit: Optional[int] = None) -> str:
    """An exception's message on one line, without terminal colours (its type's name when it has
    no message), cut to ``limit`` characters with '...' when longer."""
    text = " ".join(_COLOURS.sub("", str(error)).split()) or type(error).__name__
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters (escape codes, newlines) as \\xNN or \\uNNNN."""
    return "".join(char if unicodedata.category(char) not in ("Cc", "Zl", "Zp") else
                   (f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}") for char in text)
