"""CUDA paths, skipped where there is no GPU: mixed precision, exact resume, loaders, NCCL, experiments, eval."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnetlab.data import DeviceLoader, load_dataset
from resnetlab.experiments import run_degradation, run_gradients
from resnetlab.inference import evaluate_checkpoint
from resnetlab.train import resolve_config, resume, train
from resnetlab.train.config import to_toml
from resnetlab.weights import load_model, read_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SMALL = dict(data="synthetic", model="resnet8", epochs=2, batch_size=32, train_subset=256, test_subset=64,
             optimizer="adamw", lr=0.003, schedule="cosine", augment="none", flip_tta=False, quiet=True, device="cuda")


def run_config(tmp_path: Path, **overrides):
    return resolve_config("default", overrides=dict(SMALL, out=str(tmp_path), **overrides))


def weights(run_dir) -> dict:
    return read_checkpoint(Path(run_dir) / "last.safetensors")[0]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_cuda_learns_and_its_weights_run_on_the_cpu(tmp_path, precision):
    result = train(run_config(tmp_path, name=precision, precision=precision, epochs=4))
    assert result["test_top1"] > 30.0  # learnable data: well above the 10% of chance
    model, _ = load_model(Path(result["run_dir"]) / "best.safetensors")
    x = torch.randn(4, 3, 32, 32)
    on_cpu = model.eval()(x)
    on_gpu = model.cuda()(x.cuda()).cpu()
    # cuDNN convolutions may use TF32: agreement relative to the logits' scale
    assert (on_cpu - on_gpu).abs().max() <= 1e-2 * max(1.0, float(on_cpu.abs().max()))


def test_device_loader_gives_the_same_batches_on_cpu_and_cuda():
    dataset = load_dataset("synthetic", "train", num_samples=300)
    cpu = DeviceLoader(dataset, 64, train=True, device="cpu", seed=3, channels_last=True)
    gpu = DeviceLoader(dataset, 64, train=True, device="cuda", seed=3, channels_last=True)
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.is_cuda and torch.equal(yc, yg.cpu())
        assert torch.allclose(xc, xg.cpu(), atol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_resume_on_cuda_equals_the_uninterrupted_run(tmp_path, precision):
    full = train(run_config(tmp_path, name="full", precision=precision, deterministic=True, ema_decay=0.9))
    cut = train(run_config(tmp_path, name="cut", precision=precision, deterministic=True, ema_decay=0.9,
                           stop_after_steps=11))
    resumed = resume(cut["run_dir"], dict(stop_after_steps=0))
    assert resumed["steps"] == full["steps"] == 16
    a, b = weights(full["run_dir"]), weights(resumed["run_dir"])
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_torchrun_with_nccl_equals_one_process(tmp_path):
    config = run_config(tmp_path, name="ddp", epochs=1, precision="fp32", deterministic=True)
    (tmp_path / "ddp.toml").write_text(to_toml(config))  # the same settings as the run in this process
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m",
               "resnetlab", "train", "--config", str(tmp_path / "ddp.toml")]
    process = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-2000:]
    alone = train(run_config(tmp_path, name="alone", epochs=1, precision="fp32", deterministic=True))
    a, b = weights(tmp_path / "ddp"), weights(alone["run_dir"])
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) <= 1e-5


def test_checkpointed_activations_give_the_same_gradients_on_cuda():
    from resnetlab.models import build_model

    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(0)
    model = build_model("resnet20").cuda()
    x, y = torch.randn(16, 3, 32, 32, device="cuda"), torch.randint(0, 10, (16,), device="cuda")
    grads = []
    for checkpointing in (False, True):
        model.set_grad_checkpointing(checkpointing)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_cuda_graphs_train_the_degradation_nets_as_eager_steps_do(tmp_path):
    common = dict(data="synthetic", batch_size=32, test_subset=256, iterations=60, eval_every=20, device="cuda",
                  precision="fp32", quiet=True)
    eager = run_degradation([8, 14], out=tmp_path / "eager", **common)
    graphed = run_degradation([8, 14], cuda_graphs=True, out=tmp_path / "graphed", **common)
    assert "replayed as CUDA graphs" in graphed.report.read_text()
    rows = [line.split(",") for line in eager.csv.read_text().splitlines()[1:]]
    graphed_rows = [line.split(",") for line in graphed.csv.read_text().splitlines()[1:]]
    assert [r[:5] for r in rows] == [r[:5] for r in graphed_rows]
    # the same training up to arithmetic order: training errors within a few points after 60 steps
    for a, b in zip(rows, graphed_rows):
        assert abs(float(a[5]) - float(b[5])) <= 6.0, (a, b)


def test_gradients_on_cuda_measure_what_the_cpu_measures(tmp_path):
    common = dict(norms=["batch"], steps=[0, 2], data="synthetic", batch_size=16, response_images=32, quiet=True)
    gpu = run_gradients([8], device="cuda", out=tmp_path / "gpu", **common)
    cpu = run_gradients([8], device="cpu", out=tmp_path / "cpu", **common)
    assert "device: cuda" in gpu.report.read_text()
    gpu_rows = [line.split(",") for line in gpu.gradients_csv.read_text().splitlines()[1:]]
    cpu_rows = [line.split(",") for line in cpu.gradients_csv.read_text().splitlines()[1:]]
    assert [r[:7] for r in gpu_rows] == [r[:7] for r in cpu_rows] and len(gpu_rows) == 2 * 2 * 7
    for a, b in zip(gpu_rows, cpu_rows):
        if a[4] == "0":  # at initialization: the same net on the same batch (TF32 convolutions allowed)
            assert float(a[7]) == pytest.approx(float(b[7]), rel=1e-2), (a, b)


def test_eval_on_cuda_and_int8_on_the_cpu_from_auto(tmp_path):
    run = Path(train(run_config(tmp_path, name="run", precision="fp32"))["run_dir"])
    gpu = evaluate_checkpoint(run / "best.safetensors", "synthetic", device="cuda")
    cpu = evaluate_checkpoint(run / "best.safetensors", "synthetic", device="cpu")
    assert abs(gpu["test_top1"] - cpu["test_top1"]) <= 1.0
    int8 = evaluate_checkpoint(run / "best.safetensors", "synthetic", device="auto", precision="int8")
    assert abs(int8["test_top1"] - cpu["test_top1"]) <= 5.0
