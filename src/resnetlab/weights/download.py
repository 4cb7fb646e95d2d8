"""Downloading weight files: a cache, sha256 checks, offline mode, mirrors, retries, nothing partial.

Files are cached in ``$RESNETLAB_HOME/weights`` (default ``~/.cache/resnetlab/weights``); a file
already in torch hub's cache (``$TORCH_HOME/hub/checkpoints``) is used as it is.
``RESNETLAB_OFFLINE=1`` never touches the network; ``RESNETLAB_WEIGHTS_MIRROR=http://host/path/``
replaces the scheme and host of every URL.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Optional

from ..errors import DownloadError, one_line
from ..fileio import atomic_write

__all__ = ["cached_file", "download_file", "hash_prefix_of", "mirrored", "torch_hub_dir", "weights_dir"]

HOME_ENV = "RESNETLAB_HOME"
OFFLINE_ENV = "RESNETLAB_OFFLINE"
MIRROR_ENV = "RESNETLAB_WEIGHTS_MIRROR"
CHUNK = 1 << 20
TIMEOUT_S = 30.0
RETRIES = 3
BACKOFF_S = 1.0
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.")  # torch hub's convention: name-<sha256 prefix>.ext


class _Retryable(Exception):
    """A failure worth another try (connection lost, timeout, 5xx)."""


def weights_dir() -> Path:
    """Where downloaded weights are cached: ``$RESNETLAB_HOME/weights``, else ``~/.cache/resnetlab/weights``."""
    home = os.environ.get(HOME_ENV)
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "resnetlab") / "weights"


def torch_hub_dir() -> Path:
    """torch hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def offline() -> bool:
    """Whether ``RESNETLAB_OFFLINE`` forbids the network."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def mirrored(url: str) -> str:
    """``url`` with its scheme and host replaced by ``$RESNETLAB_WEIGHTS_MIRROR`` when that is set."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return url
    return mirror.rstrip("/") + "/" + urllib.parse.urlsplit(url).path.lstrip("/")


def hash_prefix_of(url: str) -> Optional[str]:
    """The sha256 prefix torch hub's file names carry (``resnet50-11ad3fa6.pth``), if any."""
    match = _HASH_IN_NAME.search(Path(urllib.parse.urlsplit(url).path).name)
    return match.group(1) if match else None


def cached_file(filename: str) -> Optional[Path]:
    """The cached copy of ``filename`` (resnetlab's cache, then torch hub's), or None."""
    for folder in (weights_dir(), torch_hub_dir()):
        if (folder / filename).is_file():
            return folder / filename
    return None


def _stream(url: str, tmp: Path, timeout: float, progress: bool, label: str) -> str:
    """Write the body of ``url`` to ``tmp``; its sha256 hex digest."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "resnetlab"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                      disable=not progress, file=sys.stderr, leave=False) as bar:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise _Retryable(f"connection closed after {received} of {total} bytes")
    except urllib.error.HTTPError as err:
        if err.code >= 500:
            raise _Retryable(f"HTTP {err.code} {err.reason}") from None
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        reason = err.reason
        raise _Retryable("timed out" if isinstance(reason, (socket.timeout, TimeoutError)) else one_line(reason, 100)
                         ) from None
    except (socket.timeout, TimeoutError):
        raise _Retryable(f"no data for {timeout:g} s (timed out)") from None
    except (http.client.HTTPException, ConnectionError) as err:
        raise _Retryable(f"connection lost ({one_line(err, 80)})") from None
    return digest.hexdigest()


def download_file(url: str, sha256: Optional[str] = None, hash_prefix: Optional[str] = None,
                  timeout: float = TIMEOUT_S, retries: int = RETRIES, backoff: float = BACKOFF_S,
                  progress: bool = True, filename: Optional[str] = None) -> Path:
    """The cached file ``url`` names, downloaded first when neither cache holds it.

    The download goes to a temporary name, is checked against ``sha256`` (else ``hash_prefix``,
    else the prefix in the file name; with none of them, it is not checked) and only then renamed;
    a mismatch removes it. Failures worth another try (timeouts, dropped connections, 5xx) are
    retried ``retries`` times with growing waits; each try starts from zero. ``filename`` is the
    cached file's name when the URL's last part is not unique (hub files are all model.safetensors).
    """
    filename = filename or Path(urllib.parse.urlsplit(url).path).name
    found = cached_file(filename)
    if found is not None:
        return found
    target = weights_dir() / filename
    if offline():
        raise DownloadError(f"{OFFLINE_ENV} is set and {filename} is not cached: download {url} "
                            f"and put it at {target}")
    source = mirrored(url)
    expected = (sha256 or hash_prefix or hash_prefix_of(url) or "").lower()
    last = ""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            return atomic_write(target, lambda tmp: _check(source, tmp, expected, timeout, progress, filename))
        except _Retryable as err:
            last = str(err)
    tries = f" after {retries + 1} tries" if retries else ""
    raise DownloadError(f"{source}: {last}{tries}; nothing was written to {target}")


def _check(url: str, tmp: Path, expected: str, timeout: float, progress: bool, label: str) -> None:
    """Download into ``tmp`` and compare its sha256 with ``expected`` (a whole hash or a prefix)."""
    digest = _stream(url, tmp, timeout, progress, label)
    if expected and not digest.startswith(expected):
        raise DownloadError(f"{url}: sha256 mismatch (expected {expected}..., got {digest[:len(expected)]}...); "
                            "the downloaded file was removed")
