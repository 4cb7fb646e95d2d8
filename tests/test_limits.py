"""Ceilings on sizes read from files and flags: one place, raised by RESNETLAB_LIMITS, named in errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import run_cli, tiny_config
from resnetlab.limits import CEILINGS, LIMITS_ENV, ceiling
from resnetlab.models import build_model
from resnetlab.train.config import validate
from resnetlab.weights.metadata import check_metadata

SECURITY_PAGE = Path(__file__).resolve().parents[1] / "docs" / "security.md"


def test_the_docs_table_lists_every_ceiling_with_its_default():
    rows = re.findall(r"^\| `(\w+)` \| ([\d,]+) \| (.+) \|$", SECURITY_PAGE.read_text(), re.M)
    assert {name: (int(default.replace(",", "")), bounds) for name, default, bounds in rows} == {
        name: (c.default, c.bounds) for name, c in CEILINGS.items()}


def test_a_ceiling_is_raised_by_the_environment_and_bad_entries_are_one_line(monkeypatch):
    monkeypatch.delenv(LIMITS_ENV, raising=False)
    assert ceiling("image_size") == 4096
    monkeypatch.setenv(LIMITS_ENV, " image_size=8192 , pad=100,")
    assert (ceiling("image_size"), ceiling("pad"), ceiling("blocks")) == (8192, 100, 1000)
    for bad in ("image_size=big", "pixels=9", "pad=0", "pad"):
        monkeypatch.setenv(LIMITS_ENV, bad)
        with pytest.raises(ValueError, match=rf"^{LIMITS_ENV} entry '{bad}' is not NAME=N .* one of blocks, "):
            ceiling("pad")


def test_a_value_over_a_ceiling_names_it_and_passes_once_it_is_raised(tmp_path, monkeypatch):
    monkeypatch.delenv(LIMITS_ENV, raising=False)
    with pytest.raises(ValueError, match=r"^in_chans must be a whole number from 1 to 1,024, got 1500 \(a ceiling: "
                                         rf"raise it with {LIMITS_ENV}=channels=N\)$"):
        build_model("resnet8", in_chans=1500)
    with pytest.raises(ValueError, match=r"got 0$"):  # under the floor: nothing to raise
        build_model("resnet8", in_chans=0)
    with pytest.raises(ValueError, match=rf"batch_size must be from 1 to 65,536, got 70000 .*{LIMITS_ENV}=batch_size="):
        validate(tiny_config(tmp_path, batch_size=70000))
    with pytest.raises(ValueError, match=r"input_size is \[5000, 5000\]; accepted: \[height, width\], each 8 to 4096"):
        check_metadata(dict(preprocessing=dict(input_size=[5000, 5000])), "w.safetensors")
    monkeypatch.setenv(LIMITS_ENV, "channels=2048,batch_size=100000,image_size=6000")
    assert build_model("resnet8", in_chans=1500).conv1.in_channels == 1500
    validate(tiny_config(tmp_path, batch_size=70000))
    check_metadata(dict(preprocessing=dict(input_size=[5000, 5000])), "w.safetensors")


def test_the_cli_names_the_ceiling_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(LIMITS_ENV, raising=False)
    status, out, err = run_cli(capsys, "train", "--data", "synthetic", "--pad", "65", "--out", tmp_path)
    last = err.strip().splitlines()[-1]
    assert status == 2 and last.endswith(f"got 65 (a ceiling: raise it with {LIMITS_ENV}=pad=N)")
    monkeypatch.setenv(LIMITS_ENV, "pad=oops")
    status, out, err = run_cli(capsys, "train", "--data", "synthetic", "--out", tmp_path)
    assert status == 2 and len(err.strip().splitlines()) == 1 and f"{LIMITS_ENV} entry 'pad=oops'" in err
    assert not any(tmp_path.iterdir())  # nothing half-made
