"""Atomic file writing: write to a temporary name in the same folder, then rename."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

from safetensors import SafetensorError

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path``; nothing is left on failure
    (neither the temporary file nor the folders made for it). A write that fails (a full disk, a
    read-only folder) is an OSError naming ``path``."""
    path = Path(path)
    made = []  # missing folders, deepest first
    folder = path.parent
    while not folder.exists():
        made.append(folder)
        folder = folder.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            write(Path(tmp))
            os.replace(tmp, path)
        except (RuntimeError, SafetensorError) as error:
            # torch.save reports a full disk as "PytorchStreamWriter failed writing", safetensors as an IoError
            if type(error) not in (RuntimeError, SafetensorError):  # a caller's own error type stays itself
                raise
            raise OSError(errno.EIO, f"write failed ({' '.join(str(error).split())})", str(path)) from None
        except OSError as error:  # named after the file it was meant for, not the temporary one
            raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # something else was put there meanwhile
                break
        raise
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write a text file atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
