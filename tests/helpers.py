"""Helpers shared by the test files: running the CLI, writing files in upstream formats, hostile pickles."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Optional

import numpy as np

from resnetlab.cli import main


def run_cli(capsys, *argv):
    """Run ``resnetlab ARGV`` in-process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_idx(path: Path, array: np.ndarray, gz: bool = False, magic: Optional[int] = None) -> Path:
    """Write an idx file of unsigned bytes: magic 0x0000080N, N big-endian dims, data (``gz``: as NAME.gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x00000800 | array.ndim if magic is None else magic
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


class Exploit:
    """Runs a shell command when unpickled by an unrestricted unpickler."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))
