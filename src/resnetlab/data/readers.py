"""Readers for the upstream file formats: idx (MNIST, Fashion-MNIST) and CIFAR's python pickles."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..errors import one_line
from ..limits import ceiling, raise_hint
from .catalog import KNOWN_IDX

__all__ = ["read_idx", "read_idx_pair", "read_cifar_batch", "read_cifar_meta", "RestrictedUnpickler"]

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzip (by content, whatever its name), at most the ceiling
    ``idx_mib`` (4x MNIST's training images by default): a gzip file that inflates past it (a decompression
    bomb) is refused before the memory is taken."""
    limit = ceiling("idx_mib") * 2**20
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    parts, size = [], 0
    try:
        while raw:  # one gzip member after another, as gzip.decompress reads them
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            parts.append(inflater.decompress(raw, limit - size + 1))
            size += len(parts[-1])
            if size > limit:
                raise ValueError(f"{path}: decompresses to more than {limit // 2**20} MiB, more than any idx "
                                 f"file this reader takes{raise_hint('idx_mib')}") from None
            if not inflater.eof:
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
            raw = inflater.unused_data
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt or truncated gzip file ({one_line(err)})") from None
    return b"".join(parts)


def _verify_known(data: bytes, path: Path, dataset: Optional[str], stem: Optional[str]) -> None:
    """Check a full-size upstream file against its known digest (see catalog); smaller ones are not checked."""
    known = KNOWN_IDX.get(dataset or "", {}).get(stem or "")
    if known is None or len(data) != known[0]:
        return
    size, algorithm, expected = known
    digest = hashlib.new(algorithm, data).hexdigest()
    if digest != expected:
        raise ValueError(
            f"{path}: {algorithm} of the decompressed bytes is {digest}, expected {expected} for "
            f"{dataset} {stem}; the file is corrupt or not {dataset}"
        )


def read_idx(path: str | Path, magic: int, dataset: Optional[str] = None,
             stem: Optional[str] = None) -> np.ndarray:
    """Read an idx file (gzipped or not) of unsigned bytes; its header must carry `magic`."""
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated idx file ({len(data)} bytes, no header)")
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        raise ValueError(f"{path}: wrong magic number 0x{found:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated idx file ({len(data)} bytes, header needs {header})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "too long"
        raise ValueError(
            f"{path}: {problem} idx file: dims {'x'.join(map(str, dims))} need {expected} bytes, "
            f"found {len(data)}"
        )
    _verify_known(data, path, dataset, stem)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_pair(images_path: str | Path, labels_path: str | Path, num_classes: int,
                  dataset: Optional[str] = None) -> tuple[np.ndarray, np.ndarray]:
    """Read matching idx image and label files; returns (N x H x W uint8, N uint8)."""
    images = read_idx(images_path, IDX_IMAGES_MAGIC, dataset, _stem(images_path))
    labels = read_idx(labels_path, IDX_LABELS_MAGIC, dataset, _stem(labels_path))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images in {images_path}"
        )
    if labels.size and int(labels.max()) >= num_classes:
        raise ValueError(f"{labels_path}: label {int(labels.max())} out of range 0..{num_classes - 1}")
    return images, labels


def _stem(path: str | Path) -> str:
    """Upstream file stem: 'train-images-idx3-ubyte' for '.../train-images.idx3-ubyte.gz'."""
    name = Path(path).name
    if name.endswith(".gz"):
        name = name[:-3]
    return name.replace(".idx", "-idx")


def _numpy_globals() -> tuple[Any, Any]:
    """numpy's array reconstructors for pickle protocols 0-4 and 5."""
    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
        from numpy.core.numeric import _frombuffer
    return _reconstruct, _frombuffer


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that builds only numpy arrays; any other import is refused with ValueError."""

    def __init__(self, file: io.BufferedIOBase, name: str) -> None:
        super().__init__(file, encoding="bytes")
        self.name = name
        reconstruct, frombuffer = _numpy_globals()
        self.allowed = {
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
            ("numpy.core.numeric", "_frombuffer"): frombuffer,
            ("numpy._core.numeric", "_frombuffer"): frombuffer,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): _latin1_encode,
        }

    def find_class(self, module: str, name: str) -> Any:
        """Return an allowed numpy global; refuse everything else."""
        found = self.allowed.get((module, name))
        if found is None:
            raise _Refused(f"{self.name}: the pickle tries to import {module}.{name}; refused")
        return found


class _Refused(ValueError):
    pass


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """The `_codecs.encode` that protocol-2 pickles use for bytes, limited to latin1."""
    if encoding not in ("latin1", "latin-1"):
        raise ValueError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def load_pickle(path: str | Path) -> dict[str, Any]:
    """Load a CIFAR python pickle safely; returns its dict with str keys."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, str(path)).load()
    except _Refused:
        raise
    except Exception as err:  # truncated or corrupt pickles fail in many ways
        raise ValueError(f"{path}: corrupt or truncated pickle ({one_line(err)})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def read_cifar_meta(path: str | Path, key: str) -> list[str]:
    """Class names from CIFAR's batches.meta (key 'label_names') or meta ('fine_label_names')."""
    meta = load_pickle(path)
    if key not in meta:
        raise ValueError(f"{path}: no {key!r} in the meta file (found {sorted(meta)})")
    names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta[key]]
    if len(names) < 2:
        raise ValueError(f"{path}: {key!r} lists {len(names)} classes, need at least 2")
    return names


def read_cifar_batch(path: str | Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR batch; returns (N x 3 x 32 x 32 uint8, N int64)."""
    path = Path(path)
    batch = load_pickle(path)
    for key in ("data", label_key):
        if key not in batch:
            raise ValueError(f"{path}: no {key!r} entry in the batch (found {sorted(batch)})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise ValueError(f"{path}: 'data' must be N x 3072 uint8, found {type(data).__name__} {shape}")
    try:
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{path}: {label_key!r} is not a list of integers") from None
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise ValueError(f"{path}: label {bad} out of range 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels
