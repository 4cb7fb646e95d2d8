"""The exception types resnetlab raises beyond ValueError and OSError, and the one-line formatter
every user-facing error goes through."""

from __future__ import annotations

import re
import unicodedata
from typing import Optional, Union

__all__ = ["DownloadError", "RankLost", "TrainingDiverged", "one_line", "printable", "refused_global", "load_failure"]

_COLOURS = re.compile(r"\x1b\[[0-9;]*m")
# torch 2.6 to 2.14 word a refusal "GLOBAL torch.nn.modules.linear.Linear was not an allowed global" (a class)
# or "GLOBAL posix.system whose module posix is blocked" (a module weights_only never loads from).
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


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


def refused_global(error: Union[BaseException, str]) -> Optional[str]:
    """The global (``posix.system``, ``torch.nn.modules.linear.Linear``) whose refusal by
    ``torch.load(..., weights_only=True)`` ``error`` reports, or None when it reports none."""
    found = _REFUSED_GLOBAL.search(str(error))
    return found.group(1) if found else None


def load_failure(error: BaseException, limit: int = 160) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in one line: the refused global when there is one
    (the part of torch's long message that matters), else the start of the message."""
    refused = refused_global(error)
    if refused:
        return f"it pickles {refused}, which weights_only loading refuses"
    return one_line(error)[:limit]
