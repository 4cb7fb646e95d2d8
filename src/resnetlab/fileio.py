"""Atomic file writing: write to a temporary name in the same folder, flush it to disk, then rename."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

from safetensors import SafetensorError

PathLike = Union[str, os.PathLike]


FULL_DISK_BYTES = 2**20  # a write that fails with less free space than this failed for want of it


def _free_bytes(folder: Path) -> int:
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs (Windows): the write's own message stands
        return FULL_DISK_BYTES
    return stats.f_bavail * stats.f_frsize


def _file_mode() -> int:
    """The mode open() gives a new file (0o666 less the umask); mkstemp's is 0o600, private to its owner."""
    try:  # Linux says the umask without changing it (setting it, even back, races with other threads)
        with open("/proc/self/status") as status:
            umask = next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def _flush_to_disk(path: Path) -> None:
    """fsync ``path`` (a file or a folder), so that what was written survives a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as error:  # some file systems cannot sync a folder; the data itself was synced
        if not path.is_dir() or error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path``; nothing is left on failure
    (neither the temporary file nor the folders made for it). A write that fails (a full disk, a
    read-only folder) is an OSError naming ``path``. The file is flushed to disk before the rename and
    the folder after it, so that a power loss leaves the old file or the new one, never an empty one."""
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
            os.chmod(tmp, _file_mode())  # as any file its owner writes (after: some writers make the file anew)
            _flush_to_disk(Path(tmp))
            os.replace(tmp, path)
            _flush_to_disk(path.parent)
        except (RuntimeError, SafetensorError) as error:
            # torch.save reports a full disk as "PytorchStreamWriter failed writing", safetensors as an IoError
            if type(error) not in (RuntimeError, SafetensorError):  # a caller's own error type stays itself
                raise
            if _free_bytes(path.parent) < FULL_DISK_BYTES:  # their messages do not say why; the disk does
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
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
