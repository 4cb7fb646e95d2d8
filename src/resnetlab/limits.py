"""Ceilings on sizes read from files and flags.

They keep a typo or a hostile file from allocating the machine's memory and sit far above any
published ResNet. A real use that needs more raises one deliberately, for one command or a whole
shell, with the environment variable ``RESNETLAB_LIMITS``::

    RESNETLAB_LIMITS="image_size=8192,idx_mib=1024" resnetlab train ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict

__all__ = ["CEILINGS", "LIMITS_ENV", "Ceiling", "ceiling", "over_ceiling", "raise_hint"]

LIMITS_ENV = "RESNETLAB_LIMITS"


@dataclass(frozen=True)
class Ceiling:
    default: int
    bounds: str  # what it bounds, as the docs' table says it


CEILINGS: Dict[str, Ceiling] = {
    "blocks": Ceiling(1000, "blocks per stage (model option `layers`)"),
    "width": Ceiling(16384, "channels of a stage (`widths`) and `width_per_group`"),
    "groups": Ceiling(1024, "`groups` of a grouped convolution"),
    "classes": Ceiling(1_000_000, "classes of a head (`num_classes`, metadata `class_names`)"),
    "channels": Ceiling(1024, "input channels (`in_chans`; metadata `mean` and `std` entries)"),
    "image_size": Ceiling(4096, "pixels of a side (`image_size`, metadata `input_size`)"),
    "pad": Ceiling(64, "pixels of padding before a random crop (`pad`)"),
    "batch_size": Ceiling(65536, "images of one optimizer step (`batch_size`)"),
    "idx_mib": Ceiling(200, "MiB of an idx file, decompressed"),
}


def _overrides() -> Dict[str, int]:
    text = os.environ.get(LIMITS_ENV, "")
    overrides = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in CEILINGS or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"{LIMITS_ENV} entry {item!r} is not NAME=N with N a whole number above 0 and "
                             f"NAME one of {', '.join(CEILINGS)}")
        overrides[name] = int(value)
    return overrides


def ceiling(name: str) -> int:
    """The ceiling ``name`` (one of ``CEILINGS``): its default, or the value ``RESNETLAB_LIMITS`` sets."""
    return _overrides().get(name, CEILINGS[name].default)


def raise_hint(name: str) -> str:
    """How to raise the ceiling ``name``, to close an error about a value above it."""
    return f" (a ceiling: raise it with {LIMITS_ENV}={name}=N)"


def over_ceiling(name: str, value: object) -> str:
    """``raise_hint(name)`` when ``value`` is a number above the ceiling ``name``, else nothing."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > ceiling(name):
        return raise_hint(name)
    return ""
