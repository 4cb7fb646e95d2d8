"""Evaluation: top-1 and the confusion matrix, and the test-time augmentation views."""

from __future__ import annotations

import torch


def test_confusion_matrix_agrees_with_top1_even_with_tied_logits():
    from resnetlab.evaluation import evaluate

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 3)  # every class ties

    batches = [(torch.zeros(4, 1), torch.tensor([0, 1, 2, 2]))]
    stats = evaluate(Constant(), batches, device=torch.device("cpu"), num_classes=3)
    assert 100.0 * stats.confusion.trace() / stats.confusion.sum() == stats.result("test")["test_top1"]


def test_flip_tta_averages_the_logits_of_image_and_mirror():
    from resnetlab.evaluation import evaluate

    class Asymmetric(torch.nn.Module):
        def forward(self, x):
            left = x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3))
            return torch.stack([left, -left], dim=1)

    x = torch.zeros(2, 1, 2, 4)
    x[0, ..., :2] = 1.0  # image 0 is bright on the left; its mirror on the right
    y = torch.tensor([0, 1])
    plain = evaluate(Asymmetric(), [(x, y)], device=torch.device("cpu"), num_classes=2)
    tta = evaluate(Asymmetric(), [(x, y)], device=torch.device("cpu"), num_classes=2, flip_tta=True)
    expected = (Asymmetric()(x) + Asymmetric()(x.flip(3))) / 2
    assert plain.result("test")["test_loss"] != tta.result("test")["test_loss"]
    assert abs(tta.result("test")["test_loss"] - float(torch.nn.functional.cross_entropy(expected, y))) < 1e-6


def test_shift_image_moves_by_one_pixel_and_repeats_the_edge():
    from resnetlab.evaluation import shift_image

    x = torch.arange(12.0).view(1, 1, 3, 4)
    right = shift_image(x, 1, 0)
    assert torch.equal(right[..., 1:], x[..., :-1]) and torch.equal(right[..., 0], x[..., 0])
    left = shift_image(x, -1, 0)
    assert torch.equal(left[..., :-1], x[..., 1:]) and torch.equal(left[..., -1], x[..., -1])
    down = shift_image(x, 0, 1)
    assert torch.equal(down[..., 1:, :], x[..., :-1, :]) and torch.equal(down[..., 0, :], x[..., 0, :])
    up = shift_image(x, 0, -1)
    assert torch.equal(up[..., :-1, :], x[..., 1:, :]) and torch.equal(up[..., -1, :], x[..., -1, :])
    assert torch.equal(shift_image(x, 0, 0), x)


def test_shift_tta_averages_the_logits_of_ten_views():
    from resnetlab.evaluation import evaluate, predict_logits

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(20, 3))  # sees every pixel where it is
    x, y = torch.randn(4, 1, 4, 5), torch.tensor([0, 1, 2, 0])
    shifted = [x, x.roll(1, 3), x.roll(-1, 3), x.roll(1, 2), x.roll(-1, 2)]
    # the line that rolled around to the other side is the repeated edge instead
    shifted[1][..., 0], shifted[2][..., -1] = x[..., 0], x[..., -1]
    shifted[3][..., 0, :], shifted[4][..., -1, :] = x[..., 0, :], x[..., -1, :]
    with torch.no_grad():
        five = sum(model(v) for v in shifted) / 5
        ten = sum(model(v) + model(v.flip(3)) for v in shifted) / 10
    assert torch.allclose(predict_logits(model, x, shift_tta=True), five, atol=1e-6)
    assert torch.allclose(predict_logits(model, x, flip_tta=True, shift_tta=True), ten, atol=1e-6)
    assert not torch.allclose(five, model(x).detach(), atol=1e-3)  # the views differ, so the average is no no-op
    stats = evaluate(model, [(x, y)], device=torch.device("cpu"), num_classes=3, flip_tta=True, shift_tta=True)
    assert abs(stats.result("test")["test_loss"] - float(torch.nn.functional.cross_entropy(ten, y))) < 1e-6
