"""Property-based fuzzing of everything resnetlab reads from a file or a flag: each input gives a
correct result or a one-line error (ValueError, or OSError for files), never another exception, and
memory stays bounded: on Linux every property runs under RLIMIT_DATA (the private writable memory
the process holds now, plus MEMORY_BOUND_MIB), so an input that makes a reader allocate more fails
there, named by Hypothesis; everywhere, the module's peak memory is checked at its end.

The number of examples per property is 60 by default, fast enough for CI; raise it for longer runs
with pytest's option (``pytest tests/test_fuzz.py --fuzz-examples 2000``, defined in conftest.py) or
the environment (RESNETLAB_FUZZ_EXAMPLES=2000).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import resource
import struct
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnetlab.data import readers
from resnetlab.data.folder_cache import decode_image_file
from resnetlab.data.inputs import ImagePreprocess
from resnetlab.models import build_model
from resnetlab.options import parse_options
from resnetlab.train.config import resolve_config
from resnetlab.weights import load_model
from resnetlab.weights.metadata import check_metadata

EXAMPLES = int(os.environ.get("RESNETLAB_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                             HealthCheck.too_slow])
MEMORY_BOUND_MIB = 1024  # what the whole module may add to the process's memory


def one_line_error(error: BaseException) -> None:
    message = str(error)
    assert message and "\n" not in message, repr(message)


def expect_result_or_one_line(call, accepted=(ValueError,)):
    """Run ``call``; a result, or one of ``accepted`` with a one-line message. Anything else fails the test."""
    try:
        return call()
    except accepted as error:
        one_line_error(error)
        return None


def data_mib() -> Optional[float]:
    """The process's private writable memory in MiB (Linux's VmData, what RLIMIT_DATA limits), or None
    where /proc does not say. Unlike RLIMIT_AS, it leaves out the address space torch's CUDA build
    reserves and its mapped libraries (3 GiB of address space for 0.7 GiB of data after `import torch`)."""
    try:
        with open("/proc/self/status") as status:
            line = next((line for line in status if line.startswith("VmData:")), None)
    except OSError:
        return None
    return int(line.split()[1]) / 1024 if line else None


@pytest.fixture(scope="module", autouse=True)
def bounded_memory():
    """RLIMIT_DATA at the memory held now plus MEMORY_BOUND_MIB while the module runs (Linux), and
    the peak memory checked at its end."""
    with torch.no_grad():  # start torch's threads first: their stacks count as data
        build_model("resnet8")(torch.zeros(2, 3, 16, 16))
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    held = data_mib()
    if held is not None:
        limit = int((held + MEMORY_BOUND_MIB) * 2**20)
        if soft != resource.RLIM_INFINITY:
            limit = min(limit, soft)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        yield held
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown < MEMORY_BOUND_MIB, f"the fuzzed readers took {grown:.0f} MiB"


def test_the_memory_limit_holds(bounded_memory):
    if bounded_memory is None:
        pytest.skip("RLIMIT_DATA is measured through Linux's /proc/self/status")
    with pytest.raises(MemoryError):
        bytearray((MEMORY_BOUND_MIB + 64) << 20)
    with pytest.raises(RuntimeError, match="can't allocate memory"):
        torch.empty((MEMORY_BOUND_MIB + 64) << 20, dtype=torch.uint8)


def idx_bytes(draw_dims, payload: bytes, magic: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in draw_dims) + payload


idx_files = st.one_of(
    st.binary(max_size=64),
    st.builds(idx_bytes, st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=4), st.binary(max_size=256),
              st.sampled_from([readers.IDX_IMAGES_MAGIC, readers.IDX_LABELS_MAGIC, 0x0802, 0])),
    st.builds(idx_bytes, st.lists(st.integers(0, 6), min_size=3, max_size=3), st.binary(max_size=300),
              st.just(readers.IDX_IMAGES_MAGIC)),
)


@FUZZ
@given(data=idx_files, compressed=st.booleans(), cut=st.integers(0, 40))
def test_idx_files_read_or_fail_in_one_line(tmp_path_factory, data, compressed, cut):
    path = tmp_path_factory.mktemp("idx") / "train-images-idx3-ubyte"
    blob = gzip.compress(data) if compressed else data
    if compressed and cut:
        blob = blob[:-cut]  # truncated gzip streams too
    path.write_bytes(blob)
    images = expect_result_or_one_line(lambda: readers.read_idx(path, readers.IDX_IMAGES_MAGIC))
    if images is not None:
        assert images.dtype == np.uint8 and images.ndim == 3


pickled = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.binary(max_size=20)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6) | st.binary(max_size=6),
                                                                  inner, max_size=4),
    max_leaves=12)


@FUZZ
@given(batch=st.one_of(
    pickled,
    st.fixed_dictionaries({b"data": st.one_of(st.binary(max_size=64), pickled,
                                              st.just(np.zeros((2, 3072), dtype=np.uint8))),
                           b"labels": st.one_of(pickled, st.lists(st.integers(-3, 12), max_size=3))})),
    protocol=st.integers(0, pickle.HIGHEST_PROTOCOL), raw=st.binary(max_size=40), use_raw=st.booleans())
def test_cifar_batches_read_or_fail_in_one_line(tmp_path_factory, batch, protocol, raw, use_raw):
    path = tmp_path_factory.mktemp("cifar") / "data_batch_1"
    path.write_bytes(raw if use_raw else pickle.dumps(batch, protocol=protocol))
    result = expect_result_or_one_line(lambda: readers.read_cifar_batch(path, "labels", 10))
    if result is not None:
        images, labels = result
        assert images.shape[1:] == (3, 32, 32) and len(images) == len(labels)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=10)
metadata_entries = st.fixed_dictionaries({}, optional={
    "arch": json_values | st.sampled_from(["resnet8", "resnet20", "plain8"]),
    "options": json_values | st.dictionaries(st.sampled_from(["widths", "groups", "num_classes", "in_chans",
                                                              "shortcut", "stem", "width_per_group"]),
                                             json_values, max_size=3),
    "class_names": json_values | st.lists(st.text(max_size=5), min_size=0, max_size=12),
    "preprocessing": json_values | st.dictionaries(
        st.sampled_from(["mean", "std", "input_size", "dataset", "crop_fraction", "flip_tta", "val_split"]),
        json_values | st.lists(st.floats(-2, 2), min_size=1, max_size=3)
        | st.lists(st.integers(0, 10000), min_size=2, max_size=2), max_size=4),
})


@FUZZ
@given(entries=metadata_entries)
def test_metadata_is_checked_before_anything_is_built(entries):
    checked = expect_result_or_one_line(lambda: check_metadata(entries, "file.safetensors"))
    if checked is not None:
        assert checked == entries


@FUZZ
@given(entries=metadata_entries, garbage=st.sampled_from(["", "not json", "{", "[1, 2", "NaN"]),
       break_json=st.booleans())
def test_safetensors_checkpoints_with_any_metadata_load_or_fail_in_one_line(tmp_path_factory, entries, garbage,
                                                                            break_json):
    from safetensors.torch import save_file

    model = build_model("resnet8", num_classes=3)
    raw = {"format": "resnetlab", "arch": "resnet8"}
    # Options are fuzzed on the meta device below; here real weights are built, which wide options would make huge.
    for key, value in ((k, v) for k, v in entries.items() if k != "options"):
        raw[key] = value if isinstance(value, str) and key == "arch" else json.dumps(value)
    if break_json:
        raw["options"] = garbage
    path = tmp_path_factory.mktemp("ckpt") / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata=raw)
    loaded = expect_result_or_one_line(lambda: load_model(path), accepted=(ValueError, FileNotFoundError))
    if loaded is not None:
        assert loaded[0].num_classes >= 0


toml_lines = st.lists(st.one_of(
    st.sampled_from(["epochs = 2", "lr = -1", "lr = 'fast'", "batch_size = 0", "pad = 100000", "image_size = 0",
                     "warmup_epochs = inf", "val_split = 1.5", "schedule = 'linear'", "milestones = [2.0]",
                     "[model_options]", "widths = [16, 0, 64]", "groups = 'x'", "colour = 1", "name = '../x'",
                     "progressive_ramp = [0.9, 0.1]", "prune_easy = 1.0", "= 3", "[[x]]", "a = [", "\x00"]),
    st.text(max_size=30)), max_size=6)


@FUZZ
@given(lines=toml_lines, binary=st.binary(max_size=30), use_binary=st.booleans())
def test_toml_configs_resolve_or_fail_in_one_line(tmp_path_factory, lines, binary, use_binary):
    path = tmp_path_factory.mktemp("toml") / "run.toml"
    if use_binary:
        path.write_bytes(binary)
    else:
        path.write_text("\n".join(lines), encoding="utf-8")

    def resolve_and_build():
        config = resolve_config("default", config_file=path)
        with torch.device("meta"):  # the options' validation, without their allocation
            build_model(config.model, **config.model_options)
        return config

    try:
        resolve_and_build()
    except ValueError as error:  # a file's error names the file; an option's names the option
        one_line_error(error)
        if use_binary or any(line.strip().startswith(("=", "[[", "a = [", "\x00")) for line in lines):
            assert str(path) in str(error) or "must" in str(error) or "unknown" in str(error), str(error)


@FUZZ
@given(pairs=st.lists(st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["widths", "groups", "width_per_group", "num_classes",
                                                        "in_chans", "shortcut", "stem", "norm_layer", "layers",
                                                        "zero_init_residual", "colour", ""]),
              st.one_of(st.sampled_from(["None", "(16, 0, 64)", "[16, 32, 64]", "'x'", "1e9", "-1", "0", "A",
                                         "batch", "[[1]]", "inf", "nan", "True", "{'a': 1}"]),
                        st.text(max_size=8))),
    st.text(max_size=10)), max_size=4), model=st.sampled_from(["resnet8", "resnet18", "plain8", "resnet50"]))
def test_model_options_build_or_fail_in_one_line(pairs, model):
    def build():
        options = parse_options(pairs)
        with torch.device("meta"):
            return build_model(model, **options)

    expect_result_or_one_line(build)


@FUZZ
@given(blob=st.one_of(st.binary(max_size=200), st.builds(lambda cut: PNG[:cut], st.integers(0, 200))),
       suffix=st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".txt"]))
def test_image_files_decode_or_fail_in_one_line(tmp_path_factory, blob, suffix):
    path = tmp_path_factory.mktemp("img") / f"x{suffix}"
    path.write_bytes(blob)
    image = expect_result_or_one_line(lambda: decode_image_file(str(path), 16))
    if image is not None:
        assert image.shape == (3, 16, 16) and image.dtype == torch.uint8
    prepared = expect_result_or_one_line(lambda: ImagePreprocess({"input_size": [16, 16]}, 3)(path),
                                         accepted=(ValueError, OSError))
    if prepared is not None:
        assert prepared.shape == (3, 16, 16)


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (20, 12), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


def test_a_whole_png_still_decodes(tmp_path):
    path = tmp_path / "ok.png"
    path.write_bytes(PNG)
    assert decode_image_file(str(path), 16).shape == (3, 16, 16)
    assert Path(path).stat().st_size == len(PNG)


def mutated(blob: bytes, cut: int, flips: list) -> bytes:
    """``blob`` with bytes overwritten at (fraction of its length, value) pairs, then cut to ``cut`` bytes
    from its end."""
    data = bytearray(blob)
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    return bytes(data[:len(data) - cut] if cut else data)


byte_flips = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6)


def _checkpoint_files() -> dict:
    from safetensors.torch import save as save_safetensors

    model = build_model("resnet8", num_classes=3)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    pth = io.BytesIO()
    torch.save(state, pth)
    training = io.BytesIO()
    torch.save(dict(model=state, epoch=1, step=3, history=[dict(epoch=1, test_top1=50.0)], run_id="a" * 32), training)
    return {"w.safetensors": save_safetensors(state, metadata={"format": "resnetlab", "arch": "resnet8",
                                                                "options": json.dumps({"num_classes": 3})}),
            "w.pth": pth.getvalue(), "last.state.pt": training.getvalue()}


CHECKPOINTS = _checkpoint_files()


@FUZZ
@given(name=st.sampled_from(sorted(CHECKPOINTS)), cut=st.integers(0, 64), flips=byte_flips,
       head=st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_damaged_checkpoint_files_load_or_fail_in_one_line(tmp_path_factory, name, cut, flips, head):
    from resnetlab.train.checkpoint import load_state

    blob = mutated(CHECKPOINTS[name], cut, flips)
    if head is not None and name.endswith(".safetensors"):  # the header's length field, which sizes what is read
        blob = struct.pack("<Q", head) + blob[8:]
    path = tmp_path_factory.mktemp("damaged") / name
    path.write_bytes(blob)
    if name == "last.state.pt":
        expect_result_or_one_line(lambda: load_state(path))
    else:
        expect_result_or_one_line(lambda: load_model(path, arch="resnet8", num_classes=3),
                                  accepted=(ValueError, FileNotFoundError))


@FUZZ
@given(content=pickled, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL), raw=st.binary(max_size=40),
       use_raw=st.booleans(), names=st.lists(st.one_of(st.text(max_size=6), st.binary(max_size=6)), max_size=12))
def test_cifar_meta_files_read_or_fail_in_one_line(tmp_path_factory, content, protocol, raw, use_raw, names):
    path = tmp_path_factory.mktemp("meta") / "batches.meta"
    meta = content if not isinstance(content, dict) or len(content) % 2 else {b"label_names": names, **content}
    path.write_bytes(raw if use_raw else pickle.dumps(meta, protocol=protocol))
    found = expect_result_or_one_line(lambda: readers.read_cifar_meta(path, b"label_names"))
    if found is not None:
        assert len(found) >= 2 and all(isinstance(n, str) for n in found)


def _onnx_bytes(metadata: Optional[str], input_shape=("batch", 3, 8, 8)) -> bytes:
    """A small ONNX classifier (mean of each channel: 3 classes) with ``metadata`` as resnetlab's entry."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["y"])],
        "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "resnetlab", metadata
    return model.SerializeToString()


@FUZZ
@given(entries=metadata_entries, garbage=st.sampled_from(["", "not json", "{", "[1, 2", "NaN", "[]", "7", "null"]),
       break_json=st.booleans(), cut=st.integers(0, 30), flips=byte_flips,
       shape=st.sampled_from([("batch", 3, 8, 8), ("batch", "C", 8, 8), ("batch",), (1, 3, 8, 8)]))
def test_onnx_files_and_their_metadata_load_or_fail_in_one_line(tmp_path_factory, entries, garbage, break_json,
                                                                cut, flips, shape):
    pytest.importorskip("onnxruntime")
    from resnetlab.export.onnx import OnnxModel

    blob = _onnx_bytes(garbage if break_json else json.dumps(entries), shape)
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    path.write_bytes(mutated(blob, cut, flips))
    model = expect_result_or_one_line(lambda: OnnxModel(path))
    if model is not None:
        assert model.num_classes == 3 and model.in_chans == 3
