"""KEY=VALUE options, as given on a command line (-o shortcut=B, --set lr=0.1)."""

from __future__ import annotations

import ast
from typing import Any, Dict, Sequence

__all__ = ["parse_options"]


def parse_options(pairs: Sequence[str]) -> Dict[str, Any]:
    """Turn ['key=value', ...] into a dict; values are Python literals where they parse as one.

    Raises ValueError (one line) for a pair that is not KEY=VALUE.
    """
    options: Dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"option {pair!r} is not KEY=VALUE")
        try:
            options[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            options[key] = raw
    return options
