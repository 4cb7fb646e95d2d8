"""Atomic writes: the data reaches the disk before the rename makes it visible, and nothing is left on failure."""

from __future__ import annotations

import os

import pytest

from resnetlab import fileio


def test_the_file_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
        real_fsync(fd)

    def replace(source, destination):
        events.append(("rename", os.path.basename(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "runs" / "weights.bin"
    fileio.atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))
    assert [kind for kind, _ in events] == ["fsync", "rename", "fsync"]
    assert events[0][1].startswith(".weights.bin.") and events[1:] == [("rename", "weights.bin"), ("fsync", "runs")]
    assert target.read_bytes() == b"new"
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would make it, not mkstemp's 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def fails(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=r"No space left on device: '.*metrics\.json'"):
        fileio.atomic_write(target, fails)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_files_written_by_safetensors_get_the_umask_mode_too(tmp_path):
    import torch

    from resnetlab.weights import save_weights

    umask = os.umask(0o022)
    os.umask(umask)
    path = save_weights(torch.nn.Linear(2, 2), tmp_path / "w.safetensors", "linear")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # safetensors makes its file anew, private
