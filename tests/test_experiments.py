"""Paper reproductions: the degradation and gradient-flow runners, their measurements and CLI."""

from __future__ import annotations

import csv
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnetlab.cli import main
from resnetlab.data import synthetic_dataset
from resnetlab.experiments import common, run_degradation, run_gradients
from resnetlab.experiments.degradation import COLUMNS, _plan_iterations, _Setup
from resnetlab.experiments.gradients import GRADIENT_COLUMNS, RESPONSE_COLUMNS, _plan_steps
from resnetlab.experiments.measure import conv_grad_norms, recalibrate_norms, response_stds
from resnetlab.models import build_model

TINY = dict(data="synthetic", batch_size=16, test_subset=64, quiet=True)


def read_csv(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def batch(n=8, channels=3, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=generator), torch.randint(0, 10, (n,), generator=generator)


# ---------------------------------------------------------------- degradation


def test_degradation_figure_is_laid_out_like_figure_6(tmp_path, monkeypatch):
    from resnetlab.experiments import figures

    shown = {}

    def keep(fig, path):
        shown["figure"] = fig
        return path

    monkeypatch.setattr(figures, "save_figure", keep)
    rows = [dict(model=f"{'plain' if kind == 'plain' else 'resnet'}{depth}", kind=kind, depth=depth,
                 iteration=iteration, train_error=train, test_error=train + 3.0)
            for kind in ("plain", "residual") for depth in (20, 56)
            for iteration, train in ((100, 60.0), (200, 20.0), (300, 2.0))]
    figures.plot_degradation(rows, tmp_path / "f.png", title="t")
    plain, residual = shown["figure"].axes
    assert (plain.get_title(), residual.get_title()) == ("plain networks", "residual networks")
    assert plain.get_xlabel() == "iterations" and plain.get_ylabel() == "top-1 error (%)"
    assert plain.get_yscale() == "log"  # 2% to 63%: more than a decade
    for ax, names in ((plain, ("plain20", "plain56")), (residual, ("resnet20", "resnet56"))):
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {f"{n} {split}" for n in names for split in ("train", "test")}
        for name in names:
            train, test = lines[f"{name} train"], lines[f"{name} test"]
            assert train.get_linestyle() == "--" and test.get_linestyle() == "-"
            assert test.get_linewidth() > 2 * train.get_linewidth()  # test bold, train thin
            assert list(train.get_xdata()) == [100, 200, 300] and list(test.get_ydata()) == [63.0, 23.0, 5.0]
        assert ax.get_legend() is not None
    figures.pyplot().close(shown["figure"])


def test_degradation_writes_csv_png_and_report_with_mean_std(tmp_path):
    result = run_degradation([14, 8], iterations=12, eval_every=4, seeds=2, out=tmp_path, **TINY)
    assert result.data == "synthetic" and result.iterations == 12
    assert {p.name for p in tmp_path.iterdir()} == {"degradation.csv", "degradation.png", "report.md"}
    assert (tmp_path / "degradation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    columns, rows = read_csv(tmp_path / "degradation.csv")
    assert tuple(columns) == COLUMNS
    # one row per (model, seed, evaluation point): 4 models x 2 seeds x iterations 4, 8, 12
    keys = {(r["model"], r["seed"], r["iteration"]) for r in rows}
    assert len(rows) == len(keys) == 4 * 2 * 3
    assert {r["iteration"] for r in rows} == {"4", "8", "12"}
    assert {(r["model"], r["kind"], r["depth"]) for r in rows} == {
        ("plain8", "plain", "8"), ("plain14", "plain", "14"), ("resnet8", "residual", "8"),
        ("resnet14", "residual", "14")}
    for r in rows:
        assert 0.0 <= float(r["train_error"]) <= 100.0 and 0.0 <= float(r["test_error"]) <= 100.0
        # the test error is over the 64 test images: a multiple of 1/64
        assert float(r["test_error"]) * 64 / 100 == pytest.approx(round(float(r["test_error"]) * 64 / 100))
    report = (tmp_path / "report.md").read_text()
    assert "Is the deeper plain net worse than the shallower one on training error? **" in report
    assert "Is the deeper residual net better than or equal to the shallower one on training error? **" in report
    assert "±" in report and "seeds: 2" in report
    # the table's mean matches the CSV's last points
    last = [float(r["train_error"]) for r in rows if r["model"] == "plain14" and r["iteration"] == "12"]
    mean = sum(last) / 2
    assert re.search(rf"\| plain14 \| plain \| 14 \| [\d,]+ \| {mean:.2f} ± ", report)


def test_cuda_graphs_need_a_cuda_device(tmp_path):
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device, got cpu"):
        run_degradation([8, 14], iterations=2, cuda_graphs=True, device="cpu", out=tmp_path, **TINY)
    assert not any(tmp_path.iterdir())


def test_degradation_statement_follows_the_numbers(tmp_path):
    result = run_degradation([8, 14], iterations=4, eval_every=4, out=tmp_path, **TINY)
    _, rows = read_csv(tmp_path / "degradation.csv")
    final = {r["model"]: float(r["train_error"]) for r in rows}
    plain_worse = final["plain14"] > final["plain8"]
    assert result.statements[0].split("**")[1] == ("yes" if plain_worse else "no")
    resid_ok = final["resnet14"] <= final["resnet8"]
    assert result.statements[1].split("**")[1] == ("yes" if resid_ok else "no")
    assert ("appears in this run" in result.statements[2]) == (plain_worse and resid_ok)


def test_degradation_shortcut_b_builds_projections(tmp_path):
    run_degradation([8, 14], iterations=2, shortcut="B", out=tmp_path, **TINY)
    report = (tmp_path / "report.md").read_text()
    params = {m: int(n.replace(",", "")) for m, n in re.findall(r"\| (\w+) \| \w+ \| \d+ \| ([\d,]+) \|", report)}
    projected = build_model("resnet8", num_classes=10, in_chans=3, shortcut="B")
    assert any(isinstance(m, nn.Sequential) and isinstance(m[0], nn.Conv2d) for m in projected.modules())
    assert params["resnet8"] == sum(p.numel() for p in projected.parameters())
    assert params["resnet8"] > params["plain8"]  # option A and plain have the same parameters
    assert "residual shortcut: B" in report


def test_degradation_constant_schedule_keeps_the_lr(tmp_path):
    train = synthetic_dataset(num_samples=64, channels=3, size=8)
    setup = _Setup(train, None, torch.device("cpu"), 16, 0.05, "constant", "A", "fp32", 2)
    _, model = setup.model("residual", 8)
    optimizer, scheduler, _ = setup.optim(model, 10, 4)
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    run_degradation([8, 14], iterations=2, schedule="constant", out=tmp_path, **TINY)
    assert "schedule constant" in (tmp_path / "report.md").read_text()


def test_budget_sets_iterations_from_measured_speed(tmp_path):
    # 90% of 100 s less 10 s spent leaves 80 s: 10 evaluations of 2 s (a quarter), then 60 iterations of 1 s
    assert _plan_iterations(100.0, 10.0, 1.0, 2.0, seeds=1, eval_every=None) == (60, 6)
    # with plenty of time, at most 20 evaluations
    assert _plan_iterations(1000.0, 0.0, 1.0, 2.0, seeds=1, eval_every=None) == (860, 43)
    assert _plan_iterations(100.0, 10.0, 1.0, 2.0, seeds=2, eval_every=4) == (26, 4)  # 80 / (2 * 1.5)
    with pytest.raises(ValueError, match="too small"):
        _plan_iterations(5.0, 10.0, 1.0, 2.0, seeds=1, eval_every=None)
    result = run_degradation([8, 14], budget_minutes=0.1, eval_every=2, out=tmp_path, **TINY)
    assert result.iterations >= 1
    assert "chosen to fit a budget of 0.1 minutes" in (tmp_path / "report.md").read_text()


def test_auto_data_is_cifar10_when_found_else_fashion_mnist(tmp_path, monkeypatch):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))):
        (folder / name).write_bytes(b"")  # every file the reader needs is there (found, not read)
    assert common.choose_data("auto", tmp_path)[0] == "cifar10"

    def missing(name, data_dir=None):
        raise FileNotFoundError(name)

    monkeypatch.setattr(common, "find_data", missing)
    name, note = common.choose_data("auto")
    assert name == "fashion-mnist" and "CIFAR-10 was not found" in note
    assert common.choose_data("synthetic")[0] == "synthetic"


# ---------------------------------------------------------------- measurements


@pytest.mark.parametrize("name,options", [("plain8", {}), ("resnet8", dict(shortcut="B")),
                                          ("resnet8", dict(norm_layer="none"))])
def test_conv_grad_norms_equal_autograd(name, options):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, **options).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch()
    measured = conv_grad_norms(model, x, y)
    # the model is as it was: eval mode, no .grad, the same BN running statistics
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train()
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, [m.weight for _, m in convs])
    assert [n for n, _ in measured] == [n for n, _ in convs]  # forward order is registration order here
    for (_, value), grad in zip(measured, grads):
        assert value == pytest.approx(float(grad.norm()), rel=1e-6)


@pytest.mark.parametrize("name", ["plain8", "resnet8"])
def test_response_stds_equal_the_block_run_by_hand(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10)
    x, _ = batch(16)
    model.train()
    with torch.no_grad():
        model(x)  # running statistics that differ from the initial ones
    stds = dict(response_stds(model, x))
    assert list(stds) == ["layer1.0", "layer2.0", "layer3.0"] and model.training
    model.eval()
    with torch.no_grad():
        h = model.forward_stem(x)
        for stage, name_ in ((model.layer1, "layer1.0"), (model.layer2, "layer2.0")):
            block = stage[0]
            response = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h)))))
            expected = float(response.double().std(unbiased=False))
            assert stds[name_] == pytest.approx(expected, rel=1e-6)
            h = stage(h)


def test_recalibrate_norms_uses_the_exact_batch_statistics():
    torch.manual_seed(0)
    model = build_model("resnet8", num_classes=10).eval()
    x, _ = batch(32)
    recalibrate_norms(model, x, batch_size=32)
    assert not model.training and model.bn1.momentum == 0.1
    with torch.no_grad():
        z = model.conv1(x)
    assert torch.allclose(model.bn1.running_mean, z.mean(dim=(0, 2, 3)), atol=1e-6)


# ---------------------------------------------------------------- gradients runner


def test_gradients_runner_reports_what_autograd_measures(tmp_path):
    result = run_gradients([8], steps=[0, 2], data="synthetic", batch_size=16, response_images=32, out=tmp_path,
                           device="cpu", quiet=True)
    names = {"gradients.csv", "gradients.png", "responses.csv", "responses.png", "report.md"}
    assert {p.name for p in tmp_path.iterdir()} == names
    columns, grads = read_csv(tmp_path / "gradients.csv")
    assert tuple(columns) == GRADIENT_COLUMNS
    # 2 norms x 2 kinds x 2 steps x 7 convs (stem + 3 blocks x 2)
    assert len(grads) == 2 * 2 * 2 * 7
    columns, responses = read_csv(tmp_path / "responses.csv")
    assert tuple(columns) == RESPONSE_COLUMNS
    assert len(responses) == 2 * 2 * 3 - 3 * len(result.diverged)
    assert {r["step"] for r in responses} == {"2"}
    report = (tmp_path / "report.md").read_text()
    assert "ratio first/last" in report and "Residual responses" in report
    # the step-0 row of plain8 with BN is conv_grad_norms of the same net on the same fixed batch
    torch.manual_seed(0)
    model = build_model("plain8", num_classes=10, in_chans=3, norm_layer="batch")
    x, y = common.fixed_batch(common.load_split("synthetic", "train"), 16, torch.device("cpu"))
    expected = conv_grad_norms(model, x, y)
    got = [(r["layer_name"], float(r["grad_norm"])) for r in grads
           if r["model"] == "plain8" and r["norm"] == "batch" and r["step"] == "0"]
    assert [n for n, _ in got] == [n for n, _ in expected]
    for (_, value), (_, reference) in zip(got, expected):
        assert value == pytest.approx(reference, rel=1e-6)


def test_gradients_budget_sets_the_last_step_from_measured_speed(tmp_path, monkeypatch):
    import resnetlab.experiments.gradients as gradients

    # 90% of 100 s, less 10 s spent, 3 x 5 s of gradient measurements (steps 0, 50 and the last) and
    # 10 s of final ones, leaves 55 s: 55 steps of 1 s
    assert _plan_steps([0, 50], 100.0, 10.0, 1.0, 5.0, 10.0) == [0, 50, 55]
    # asked-for steps above the planned last one are not measured, so they take no budget
    assert _plan_steps([0, 1000, 2000], 100.0, 10.0, 1.0, 5.0, 10.0) == [0, 60]
    # counting step 100 too would plan 60 steps, below it: step 100 is never measured, so 65
    assert _plan_steps([0, 100], 100.0, 10.0, 1.0, 5.0, 5.0) == [0, 65]
    with pytest.raises(ValueError, match="too small"):
        _plan_steps([0, 50], 30.0, 10.0, 1.0, 10.0, 0.0)
    with pytest.raises(ValueError, match="budget of 0.00 minutes is too small"):  # and no folder made
        run_gradients([8], norms=["batch"], budget_minutes=1e-4, data="synthetic", batch_size=16,
                      out=tmp_path / "never", device="cpu", quiet=True)
    assert not (tmp_path / "never").exists()
    # the timing of each net, as measured: 0.2 s a step, so the 6 s budget plans some 20 steps
    monkeypatch.setattr(gradients, "_time_model", lambda *args: (0.2, 0.01, 0.01))
    result = run_gradients([8], norms=["batch"], steps=[0, 1, 100000], budget_minutes=0.1, data="synthetic",
                           batch_size=16, response_images=32, out=tmp_path, device="cpu", quiet=True)
    assert not result.diverged
    _, grads = read_csv(tmp_path / "gradients.csv")
    steps = sorted({int(r["step"]) for r in grads})
    assert steps[:2] == [0, 1] and len(steps) == 3 and 1 < steps[-1] < 100000  # the planned last step
    _, responses = read_csv(tmp_path / "responses.csv")
    assert {int(r["step"]) for r in responses} == {steps[-1]}
    report = (tmp_path / "report.md").read_text()
    assert f"steps measured: 0, 1, {steps[-1]} (the last chosen to fit a budget of 0.1 minutes" in report
    assert f"Residual responses after {steps[-1]} steps" in report


# ---------------------------------------------------------------- command line


def test_cli_experiments_write_their_files(tmp_path, capsys):
    out = tmp_path / "deg"
    code = main(["experiment", "degradation", "--data", "synthetic", "--depths", "8", "14", "--iterations", "20",
                 "--batch-size", "16", "--test-subset", "64", "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert {"degradation.csv", "degradation.png", "report.md"} <= {p.name for p in out.iterdir()}
    assert "deeper plain net" in printed and "**" not in printed
    out = tmp_path / "grad"
    code = main(["experiment", "gradients", "--data", "synthetic", "--depths", "8", "--norm", "batch", "--steps",
                 "0", "1", "--batch-size", "8", "--response-images", "16", "--out", str(out), "--quiet"])
    assert code == 0
    assert {"gradients.csv", "gradients.png", "responses.csv", "responses.png", "report.md"} <= {
        p.name for p in out.iterdir()}


@pytest.mark.parametrize("argv,fragment", [
    (["degradation", "--depths", "8", "15"], "6n+2"),
    (["degradation", "--depths", "8"], "at least 2 different depths"),
    (["degradation", "--shortcut", "C"], "unknown shortcut 'C'"),
    (["degradation", "--iterations", "0"], "iterations must be >= 1"),
    (["degradation", "--iterations", "5", "--budget-minutes", "1"], "not both"),
    (["degradation", "--budget-minutes", "0"], "positive number of minutes"),
    (["degradation", "--data", "imagenet"], "unknown dataset 'imagenet'"),
    (["degradation", "--schedule", "step"], "unknown schedule"),
    (["gradients", "--norm", "layer"], "unknown norm 'layer'"),
    (["gradients", "--steps", "-1"], "steps must be integers >= 0"),
    (["gradients", "--budget-minutes", "-1"], "positive number of minutes"),
    (["gradients", "--depths", "x"], "invalid int value"),
    (["nosuch"], "invalid choice"),
])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, fragment):
    code = main(["experiment", *argv, "--out", str(tmp_path / "never")] if argv[0] != "nosuch"
                else ["experiment", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and fragment in err
    assert not (tmp_path / "never").exists()
