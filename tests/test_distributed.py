"""Several processes with torchrun (gloo on CPU, even where GPUs are): same weights as one process, resume,
rank death, accumulation."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from resnetlab.cli import main
from resnetlab.data import DeviceLoader, load_dataset
from resnetlab.train import RECIPES, Trainer, resolve_config, resume, train
from resnetlab.train.distributed import Ranks
from resnetlab.train.engine import evaluate
from resnetlab.weights import load_model, read_checkpoint

# 256 samples at a global batch of 64: 4 steps per epoch; 2 epochs are 8 steps.
FLAGS = ["--data", "synthetic", "--model", "resnet8", "--batch-size", "64", "--epochs", "2", "--train-subset", "256",
         "--test-subset", "64", "--precision", "fp32", "--no-channels-last", "--optimizer", "sgd", "--lr", "0.05",
         "--schedule", "cosine", "--quiet", "--device", "cpu"]
CONFIG = dict(data="synthetic", model="resnet8", batch_size=64, epochs=2, train_subset=256, test_subset=64,
              precision="fp32", channels_last=False, optimizer="sgd", lr=0.05, schedule="cosine", quiet=True,
              device="cpu")


def torchrun(out: Path, name: str, *flags: str, processes: int = 2, **popen) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node N -m resnetlab train`` (standalone: a free local port)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               "-m", "resnetlab", "train", *FLAGS, "--out", str(out), "--name", name, *flags]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(process: subprocess.Popen, timeout: float = 120) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def one_process(out: Path, name: str, **overrides) -> Path:
    """A run in this process, on 1 thread as torchrun gives each worker (OMP_NUM_THREADS=1): with 2 threads
    the CPU kernels add up in another order and the weights drift apart by about 1e-5 in 6 steps."""
    overrides.setdefault("threads", 1)
    result = train(resolve_config("default", overrides=dict(CONFIG, out=str(out), name=name, **overrides)))
    return Path(result["run_dir"])


def weights(run_dir: Path, tag: str = "last") -> Dict[str, torch.Tensor]:
    return read_checkpoint(run_dir / f"{tag}.safetensors")[0]


def max_difference(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], keys: List[str]) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in keys)


def parameter_keys(run_dir: Path) -> List[str]:
    """Trainable parameters: the BN running statistics (buffers) are left out."""
    model, _ = load_model(run_dir / "last.safetensors")
    return [name for name, _ in model.named_parameters()]


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """Two torchrun launches of 2 processes, one after the other: with batch norm, stopped after 6 of 8 steps;
    and without normalization, with 2 micro-batches per process and activation checkpointing, to the end."""
    out = tmp_path_factory.mktemp("runs")
    with_bn = torchrun(out, "bn", "--stop-after-steps", "6")
    output_bn = finish(with_bn)
    no_norm = torchrun(out, "nonorm", "--accum-steps", "2", "--checkpoint-activations", "-o", "norm_layer=none")
    output_no_norm = finish(no_norm)
    return out, output_bn, output_no_norm


def test_two_processes_equal_one_process_with_the_same_batch_norm_batches(two_process_runs, tmp_path):
    """2 processes x 32 images in BN's batch equal 1 process x 2 micro-batches of 32: the same images.

    A global batch holds the same 64 images on any number of processes and rank r takes its r-th
    slice of 32; one process with accum_steps=2 cuts the same 64 into the same two slices. So each
    batch-norm layer normalizes over the same 32 images in both runs (no SyncBatchNorm: torch's
    does not run on the CPU), and the gradient is the mean over the 64 in both. The running
    statistics (buffers) are not compared: under DDP they are rank 0's, updated once per step from
    its slice; one process updates them once per micro-batch.
    """
    out, output, _ = two_process_runs
    ddp = out / "bn"
    single = one_process(tmp_path, "single", accum_steps=2, stop_after_steps=6)
    keys = parameter_keys(ddp)
    assert len(keys) > 20
    assert max_difference(weights(ddp), weights(single), keys) <= 1e-5
    assert torch.load(ddp / "last.state.pt", weights_only=True)["step"] == 6
    # BN over all 64 images at once normalizes differently: the matching above is what makes them equal.
    whole = one_process(tmp_path, "whole", stop_after_steps=6)
    assert max_difference(weights(ddp), weights(whole), keys) > 1e-4
    # Only rank 0 printed and wrote: one "stopped" line, one run folder.
    assert output.count("stopped after step 6") == 1
    assert sorted(p.name for p in out.iterdir()) == ["bn", "nonorm"]


def test_two_processes_with_accumulation_equal_one_process_without(two_process_runs, tmp_path):
    """Without normalization nothing depends on how the batch is cut: 2 processes x 2 micro-batches of 16
    (and activations recomputed in backward) give the weights of 1 process taking the batch of 64 at once."""
    out, _, _ = two_process_runs
    single = one_process(tmp_path, "single", model_options=dict(norm_layer="none"))
    a, b = weights(out / "nonorm"), weights(single)
    assert a.keys() == b.keys() and max_difference(a, b, list(a)) <= 1e-5


def test_metrics_are_over_all_ranks(two_process_runs):
    """The test figures of a 2-process epoch are those of its model on all 64 test images, not rank 0's 32."""
    import json

    out, _, _ = two_process_runs
    history = json.loads((out / "bn" / "metrics.json").read_text())["history"]
    model, _ = load_model(out / "bn" / "best.safetensors")  # the end of epoch 1 (the run stopped in epoch 2)
    test_set = load_dataset("synthetic", "test")
    test_set = test_set.subset(range(64))
    stats = evaluate(model, DeviceLoader(test_set, 256, train=False), device=torch.device("cpu"), num_classes=10,
                     flip_tta=RECIPES["default"]["flip_tta"])
    assert stats.samples == 64
    assert abs(history[0]["test_loss"] - stats.result("test")["test_loss"]) <= 1e-6  # rank 1 used rank 0's BN buffers
    assert history[0]["test_top1"] == stats.result("test")["test_top1"]


def test_a_two_process_checkpoint_resumes_in_one_process(two_process_runs, tmp_path):
    """The 2-process run stopped at step 6 of 8 (mid-epoch) continues in 1 process to the weights of a
    1-process run that never stopped (accum_steps=2 keeps BN's batches the same, as above)."""
    out, _, _ = two_process_runs
    run = tmp_path / "bn"
    shutil.copytree(out / "bn", run)
    result = resume(run, dict(stop_after_steps=0, accum_steps=2))
    assert result["steps"] == 8 and result["epochs"] == 2
    single = one_process(tmp_path, "single", accum_steps=2)
    keys = parameter_keys(run)
    assert max_difference(weights(run), weights(single), keys) <= 1e-5


def test_two_processes_prune_the_samples_one_process_prunes(tmp_path):
    """Each pass is planned from the losses all ranks recorded (merged at every checkpoint): 2 processes leave
    out the samples 1 process leaves out (with the same batch-norm slices, accum_steps=2) and end at its
    weights. Planned from its own half of the losses, each rank would cut other global batches."""
    import json

    finish(torchrun(tmp_path, "pruned", "--prune-easy", "0.5"))
    single = one_process(tmp_path, "single", accum_steps=2, prune_easy=0.5)
    ddp = tmp_path / "pruned"
    passes = [[row["step"], row["train_samples"]] for row in json.loads((ddp / "metrics.json").read_text())["history"]]
    assert passes[0] == [4, 256] and passes[1][1] < 256  # the second pass is pruned: 8 steps in 3 passes or more
    assert passes == [[row["step"], row["train_samples"]]
                      for row in json.loads((single / "metrics.json").read_text())["history"]]
    keys = parameter_keys(ddp)
    assert max_difference(weights(ddp), weights(single), keys) <= 1e-5


def test_accumulation_equals_the_whole_batch_at_once(tmp_path):
    """Without normalization, 4 micro-batches of 16 give the weights of the batch of 64 (with batch norm they
    would not: BN normalizes each micro-batch over its own 16 images)."""
    whole = one_process(tmp_path, "whole", model_options=dict(norm_layer="none"), epochs=1)
    accumulated = one_process(tmp_path, "accumulated", model_options=dict(norm_layer="none"), epochs=1,
                              accum_steps=4)
    a, b = weights(whole), weights(accumulated)
    assert max_difference(a, b, list(a)) <= 1e-5
    assert max_difference(a, weights(one_process(tmp_path, "fresh", model_options=dict(norm_layer="none"),
                                                 epochs=1, lr=0.02)), list(a)) > 1e-3  # the check can fail


def workers_of(process: subprocess.Popen) -> Dict[int, int]:
    """Rank -> pid of torchrun's worker processes."""
    workers = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            environment = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if parent == process.pid:
            rank = next(v for v in environment if v.startswith(b"RANK="))
            workers[int(rank[5:])] = int(entry)
    return workers


def start_and_wait_for_training(tmp_path: Path, *flags: str) -> subprocess.Popen:
    """A long 2-process run, returned once it has written a checkpoint (so both ranks are training)."""
    process = torchrun(tmp_path, "long", "--epochs", "1000", "--checkpoint-every", "2", *flags)
    state = tmp_path / "long" / "last.state.pt"
    deadline = time.time() + 90
    while not state.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert state.exists(), "the run did not start training"
    return process


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds torchrun's workers through /proc")
def test_when_a_rank_dies_the_run_ends_with_an_error(tmp_path):
    process = start_and_wait_for_training(tmp_path)
    workers = workers_of(process)
    assert sorted(workers) == [0, 1]
    killed = time.time()
    os.kill(workers[1], signal.SIGKILL)
    output, _ = process.communicate(timeout=60)
    assert time.time() - killed < 60
    assert process.returncode != 0
    assert "resnetlab FAILED" in output and "Signal 9 (SIGKILL) received by PID" in output  # torchrun's summary


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds torchrun's workers through /proc")
def test_when_a_rank_hangs_the_others_stop_after_dist_timeout(tmp_path):
    """A stopped (not dead) rank is invisible to torchrun: only the process group's timeout ends the wait."""
    process = start_and_wait_for_training(tmp_path, "--dist-timeout", "4")
    workers = workers_of(process)
    os.kill(workers[1], signal.SIGSTOP)
    stopped = time.time()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "resnetlab: error:" in line:
                break
        waited = time.time() - stopped
    finally:
        os.kill(workers[1], signal.SIGCONT)  # torchrun's SIGTERM to it takes effect now
    output = "".join(lines) + process.communicate(timeout=60)[0]
    assert process.returncode != 0
    assert 3 <= waited < 30, waited
    assert ("resnetlab: error: rank 0 of 2 lost contact with the other ranks (Timed out waiting 4000ms"
            in output), output[-3000:]


def test_bad_distributed_settings_are_one_line_errors(tmp_path, capsys):
    config = resolve_config("default", overrides=dict(CONFIG, out=str(tmp_path), batch_size=60, accum_steps=2))
    with pytest.raises(ValueError, match=r"batch_size 60 must be a multiple of processes x accum_steps = "
                                         r"4 x 2 = 8"):
        Trainer(config, ranks=Ranks(rank=0, local_rank=0, world_size=4))
    config = resolve_config("default", overrides=dict(CONFIG, out=str(tmp_path), sync_bn=True))
    with pytest.raises(ValueError, match="sync_bn needs CUDA devices"):
        Trainer(config, ranks=Ranks(rank=1, local_rank=1, world_size=2))
    assert main(["train", "--accum-steps", "0", "--out", str(tmp_path)]) == 2
    assert main(["train", "--batch-size", "64", "--accum-steps", "3", "--out", str(tmp_path)]) == 2
    assert main(["train", "--dist-timeout", "0", "--out", str(tmp_path)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == ["resnetlab: error: accum_steps must be >= 1, got 0",
                      "resnetlab: error: batch_size 64 must be a multiple of accum_steps 3",
                      "resnetlab: error: dist_timeout must be a positive number of seconds, got 0.0"]
    assert not any(tmp_path.iterdir())  # nothing written
