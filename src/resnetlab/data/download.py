"""Downloading the small datasets from their canonical sources, md5-checked, leaving nothing partial."""

from __future__ import annotations

import os
import shutil
import urllib.error
from pathlib import Path
from typing import Optional

from torchvision.datasets.utils import check_integrity, download_and_extract_archive

from ..errors import DownloadError, one_line
from .catalog import DatasetRecord, record
from .locate import data_roots, find_idx, search_dirs

__all__ = ["download_data"]


def _writable_root(roots: list[Path]) -> Path:
    """The first root that exists or can be made, and is writable."""
    for root in roots:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(root, os.W_OK):
            return root
    raise DownloadError(f"no writable folder to download into; tried {', '.join(map(str, roots))}")


def _new_dirs(folder: Path) -> list[Path]:
    """folder and those of its parents that do not exist yet."""
    return [path for path in (folder, *folder.parents) if not path.exists()]


def _remove(path: Path) -> None:
    """Delete a file or a folder this code wrote."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _reason(err: BaseException) -> str:
    """A short, one-line reason for a failed download."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason  # "[Errno -3] Temporary failure ..." rather than "<urlopen error ...>"
    return one_line(err, limit=100)


def _fetch(url: str, folder: Path, filename: str, md5: str, extracted: Path) -> None:
    """Download `url` to folder/filename, check its md5 and extract it to `extracted`.

    A failure removes what this call wrote and a file that fails the md5 check.
    """
    archive = folder / filename
    fresh = [path for path in (archive, extracted) if not path.exists()]
    try:
        download_and_extract_archive(url, download_root=str(folder), filename=filename, md5=md5)
    except BaseException as err:  # URLError, HTTPError, md5 mismatch (RuntimeError), disk errors, ^C
        mismatch = archive.is_file() and not check_integrity(str(archive), md5)
        for path in fresh:
            _remove(path)
        if mismatch:
            archive.unlink(missing_ok=True)  # a bad download, from this call or an earlier one
        if not isinstance(err, Exception):
            raise
        reason = "md5 mismatch" if mismatch and type(err) is RuntimeError else _reason(err)
        raise DownloadError(f"{url}: {reason}") from None


def _download(entry: DatasetRecord, root: Path) -> Path:
    """Fetch the files of `entry` missing under root; the folder holding them."""
    source = entry.upstream  # read now: its urls and md5s are torchvision's current ones
    folder = root / entry.torchvision_folder
    if entry.file_format == "cifar":
        _fetch(source.url, root, source.filename, source.tgz_md5, folder)
        return folder
    for filename, md5 in source.resources:
        stem = filename.removesuffix(".gz")
        if find_idx(folder, stem) not in (None, folder / filename):
            continue  # there already, uncompressed; the fetch md5-checks an archive that is there
        errors = []
        for mirror in source.mirrors:
            try:
                _fetch(mirror + filename, folder, filename, md5, folder / stem)
                break
            except DownloadError as err:
                errors.append(str(err))
        else:
            tried = f" (tried {len(errors)} mirrors)" if len(errors) > 1 else ""
            raise DownloadError(errors[0] + tried)
    return folder


def download_data(name: str, data_dir: Optional[str | Path] = None) -> Path:
    """Download `name` from its canonical source (md5-checked) into the first writable root.

    Files already there are kept; a failure leaves no partial file and no folder it created, and
    its DownloadError says where the data was looked for and how to get it.
    """
    entry = record(name)
    roots = data_roots(data_dir)
    new_dirs = {path for root in roots for path in _new_dirs(root / entry.torchvision_folder)}
    try:
        return _download(entry, _writable_root(roots))
    except BaseException as err:
        for folder in sorted(new_dirs, key=lambda path: len(path.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if not isinstance(err, DownloadError):
            raise
        looked = ", ".join(str(d) for d in search_dirs(entry.name, data_dir))
        advice = entry.how_to_get.replace("pass --download, ", "")  # not again the advice that just failed
        advice = advice.removeprefix("or ")
        raise DownloadError(f"could not download {entry.name}: {err}; looked in {looked}; {advice}") from None
