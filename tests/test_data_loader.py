"""Tests for the in-memory data: ArrayDataset, the synthetic dataset and the DeviceLoader (augmentation,
erasing, sharding, resuming, pruning)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resnetlab.data import (
    ArrayDataset,
    DeviceLoader,
    augment_batch,
    draw_augmentation,
    draw_erasing,
    erase_batch,
    load_dataset,
    synthetic_dataset,
)
from resnetlab.data.loader import epoch_generator

pytestmark = pytest.mark.usefixtures("isolated")


def indexed_dataset(n: int = 50, channels: int = 3, size: int = 8) -> ArrayDataset:
    """Image i is filled with the value i, label i: every batch shows where its samples came from."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, channels, size, size).clone()
    return ArrayDataset(images, torch.arange(n), [f"c{i}" for i in range(n)],
                        (0.5,) * channels, (0.25,) * channels, "indexed")


def test_split_and_subset():
    ds = indexed_dataset(50)
    train, val = ds.split(0.2, seed=3)
    assert len(train) == 40 and len(val) == 10
    assert set(train.labels.tolist()).isdisjoint(val.labels.tolist())
    assert torch.equal(ds.split(0.2, seed=3)[1].labels, val.labels)
    assert not torch.equal(ds.split(0.2, seed=4)[1].labels, val.labels)
    assert len(ds.split(7)[1]) == 7
    assert ds.subset([3, 1]).labels.tolist() == [3, 1]
    with pytest.raises(ValueError):
        ds.split(50)


def reference_augment(x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Per-sample crop of the zero-padded image, then flip: the obvious slow implementation."""
    out = []
    h, w = x.shape[-2:]
    for image, (dy, dx), flip in zip(x, offsets.tolist(), flips.tolist()):
        crop = F.pad(image, (pad, pad, pad, pad))[:, dy:dy + h, dx:dx + w]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


def test_augment_batch_matches_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 10, 12), dtype=torch.uint8, generator=g)
    for pad in (0, 1, 4):
        offsets, flips = draw_augmentation(16, pad, g)
        assert offsets.min() >= 0 and offsets.max() <= 2 * pad and flips.any() and not flips.all()
        assert torch.equal(augment_batch(x, offsets, flips, pad), reference_augment(x, offsets, flips, pad))


def test_erasing_draws_and_batch_match_a_per_image_reference():
    g = torch.Generator().manual_seed(0)
    boxes = draw_erasing(2000, 10, 12, 0.5, g)
    top, left, box_h, box_w = boxes.unbind(1)
    erased = box_h > 0
    assert 0.4 < erased.float().mean() < 0.6
    assert (top + box_h <= 10).all() and (left + box_w <= 12).all() and (top >= 0).all() and (left >= 0).all()
    area = (box_h * box_w)[erased].float() / 120
    assert area.min() >= 0.005 and area.max() <= 0.45 and 0.1 < area.mean() < 0.25
    x = torch.randn(16, 3, 10, 12)
    expected = x.clone()
    for image, (t, lft, h, w) in zip(expected, boxes[:16].tolist()):
        image[:, t:t + h, lft:lft + w] = 0.0
    assert torch.equal(erase_batch(x, boxes[:16]), expected)
    assert draw_erasing(100, 10, 12, 0.0, g)[:, 2].eq(0).all()


def test_loader_erasing_is_an_extra_draw_after_crop_and_flip():
    ds = synthetic_dataset(num_samples=20, size=8)
    plain = next(iter(DeviceLoader(ds, 8, train=True, seed=5, pad=2)))[0]
    erasing = DeviceLoader(ds, 8, train=True, seed=5, pad=2, erase=1.0)
    x = next(iter(erasing))[0]
    g = epoch_generator(5, 0)
    torch.randperm(20, generator=g)
    draw_augmentation(20, 2, g)
    boxes = draw_erasing(20, 8, 8, 1.0, g)
    assert torch.equal(x, erase_batch(plain.clone(), boxes[:8]))
    assert not torch.equal(x, plain)
    assert DeviceLoader(ds, 8, train=False, erase=1.0).erase == 0.0  # evaluation is never erased
    with pytest.raises(ValueError, match="erase"):
        DeviceLoader(ds, 8, train=True, erase=1.5)


def test_loader_shapes_and_normalization():
    ds = synthetic_dataset(num_samples=10, channels=3, size=16)
    loader = DeviceLoader(ds, 4, train=False, channels_last=True)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]  # eval keeps the last batch
    x, y = batches[0]
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last)
    for i in range(4):
        for c in range(3):
            manual = (ds.images[i, c].double() / 255 - ds.mean[c]) / ds.std[c]
            assert torch.allclose(x[i, c].double(), manual, atol=1e-5)
    assert torch.equal(y, ds.labels[:4])
    half = next(iter(DeviceLoader(ds, 4, train=False, dtype=torch.bfloat16)))[0]
    assert half.dtype == torch.bfloat16


def test_train_batch_is_the_documented_draw():
    ds = synthetic_dataset(num_samples=20, size=8)
    loader = DeviceLoader(ds, 8, train=True, seed=5, pad=2)
    loader.set_epoch(3)
    x, y = next(iter(loader))
    g = epoch_generator(5, 3)
    order = torch.randperm(20, generator=g)
    offsets, flips = draw_augmentation(20, 2, g)
    expected = reference_augment(ds.images[order[:8]], offsets[:8], flips[:8], 2)
    mean, std = torch.tensor(ds.mean).view(1, -1, 1, 1), torch.tensor(ds.std).view(1, -1, 1, 1)
    assert torch.equal(y, ds.labels[order[:8]])
    assert torch.allclose(x, (expected.float() / 255 - mean) / std, atol=1e-5)


def epoch_labels(loader: DeviceLoader, epoch: int) -> list[list[int]]:
    loader.set_epoch(epoch)
    return [y.tolist() for _, y in loader]


def test_loader_determinism_and_epochs():
    ds = indexed_dataset(50)
    a, b = DeviceLoader(ds, 8, train=True, seed=1), DeviceLoader(ds, 8, train=True, seed=1)
    assert len(a) == 6  # drop_last in training
    assert epoch_labels(a, 2) == epoch_labels(b, 2)
    xa = torch.cat([x for x, _ in DeviceLoader(ds, 8, train=True, seed=1)])
    xb = torch.cat([x for x, _ in DeviceLoader(ds, 8, train=True, seed=1)])
    assert torch.equal(xa, xb)
    assert epoch_labels(a, 2) != epoch_labels(a, 3)
    assert epoch_labels(a, 2) != epoch_labels(DeviceLoader(ds, 8, train=True, seed=2), 2)
    for x, y in DeviceLoader(ds, 8, train=True, seed=1, pad=2):  # the centre pixel identifies the sample
        assert torch.allclose(x[:, 0, 4, 4], (y.float() / 255 - 0.5) / 0.25, atol=1e-5)


def test_loader_moves_to_next_epoch_after_a_pass():
    loader = DeviceLoader(indexed_dataset(50), 8, train=True)
    first = [y.tolist() for _, y in loader]
    second = [y.tolist() for _, y in loader]
    assert loader.epoch == 2 and first == epoch_labels(DeviceLoader(indexed_dataset(50), 8, train=True), 0)
    assert first != second


def test_shards_are_disjoint_and_equal():
    ds = indexed_dataset(51)
    shards = [sum(epoch_labels(DeviceLoader(ds, 5, train=True, rank=r, world_size=2), 4), []) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 25
    assert set(shards[0]).isdisjoint(shards[1])
    evals = [sum(epoch_labels(DeviceLoader(ds, 5, train=False, rank=r, world_size=2), 0), []) for r in (0, 1)]
    assert sorted(evals[0] + evals[1]) == list(range(51))  # evaluation sees every sample once


def test_a_global_batch_holds_the_same_samples_on_any_number_of_ranks():
    ds = indexed_dataset(50)
    one = epoch_labels(DeviceLoader(ds, 12, train=True, seed=3), 1)
    for ranks in (2, 3, 4):
        shards = [epoch_labels(DeviceLoader(ds, 12 // ranks, train=True, seed=3, rank=r, world_size=ranks), 1)
                  for r in range(ranks)]
        assert [sum(parts, []) for parts in zip(*shards)] == one  # rank r's slice of each global batch, in order
    loose = [epoch_labels(DeviceLoader(ds, 4, train=True, seed=3, rank=r, world_size=2, drop_last=False), 1)
             for r in range(2)]
    assert [len(b) for b in loose[1]] == [4] * 6 + [1]  # the last 2 samples, one per rank
    assert sorted(sum(sum(loose, []), [])) == list(range(50))


def test_resume_under_another_number_of_ranks():
    ds = indexed_dataset(50)
    two = [DeviceLoader(ds, 4, train=True, seed=5, rank=r, world_size=2) for r in (0, 1)]
    for loader in two:
        loader.set_epoch(2)
        iterator = iter(loader)
        next(iterator), next(iterator)
    one = DeviceLoader(ds, 8, train=True, seed=5)
    one.load_state_dict(two[0].state_dict())
    one.set_epoch(2)
    reference = epoch_labels(DeviceLoader(ds, 8, train=True, seed=5), 2)
    assert [y.tolist() for _, y in one] == reference[2:]
    with pytest.raises(ValueError, match="global_batch=8, this loader has 12"):
        DeviceLoader(ds, 6, train=True, seed=5, rank=0, world_size=2).load_state_dict(two[0].state_dict())


def test_resume_mid_epoch():
    ds = indexed_dataset(50)
    loader = DeviceLoader(ds, 8, train=True, seed=7)
    loader.set_epoch(1)
    reference = DeviceLoader(ds, 8, train=True, seed=7)
    reference.set_epoch(1)
    full = list(reference)
    it = iter(loader)
    for _ in range(3):
        next(it)
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["batch"] == 3
    resumed = DeviceLoader(ds, 8, train=True, seed=7)
    resumed.load_state_dict(state)
    resumed.set_epoch(1)  # a training loop calls this again after resuming: keeps the position
    rest = list(resumed)
    assert len(rest) == len(full) - 3
    for (xr, yr), (xf, yf) in zip(rest, full[3:]):
        assert torch.equal(yr, yf) and torch.equal(xr, xf)
    with pytest.raises(ValueError):
        DeviceLoader(ds, 4, train=True, seed=7).load_state_dict(state)


def pruned_pass(loader: DeviceLoader) -> dict[int, tuple[torch.Tensor, float]]:
    """One pass in which each sample's recorded loss is its label (its index): {index: (image, loss weight)}."""
    seen = {}
    for x, y in loader:
        for image, label, weight in zip(x, y.tolist(), loader.batch_weights().tolist()):
            seen[label] = (image, weight)
        loader.record_losses(y.float())
    return seen


def test_pruning_leaves_out_easy_samples_at_random_and_weighs_the_kept_ones():
    ds = indexed_dataset(50)
    loader = DeviceLoader(ds, 1, train=True, seed=1, pad=2, erase=0.5)
    loader.prune_easy = 0.5
    assert len(loader) == 50  # no loss known yet: every sample
    first = pruned_pass(loader)
    assert sorted(first) == list(range(50)) and {w for _, w in first.values()} == {1.0}
    assert len(loader) < 50  # the next pass is planned from the losses just recorded: 0..49, mean 24.5
    second = pruned_pass(loader)
    easy_kept = {i for i in second if i < 25}
    assert set(range(25, 50)) <= set(second)  # hard samples are always kept, with weight 1
    assert 5 <= len(easy_kept) <= 20  # about half of the 25 easy ones (p = 0.5)
    assert all(second[i][1] == (2.0 if i < 25 else 1.0) for i in second)  # kept easy ones count 1 / (1 - p)
    # The kept samples come in the order, and with the crops, flips and erasing, of an unpruned pass.
    plain = DeviceLoader(ds, 1, train=True, seed=1, pad=2, erase=0.5)
    plain.set_epoch(1)
    unpruned = [(int(y), x[0]) for x, y in plain]
    assert list(second) == [i for i, _ in unpruned if i in second]
    assert all(torch.equal(second[i][0], x) for i, x in unpruned if i in second)
    # Switched off, a pass keeps every sample again, with weight 1.
    loader.prune_easy = 0.0
    third = pruned_pass(loader)
    assert sorted(third) == list(range(50)) and {w for _, w in third.values()} == {1.0}


def test_pruned_pass_resumes_mid_pass():
    ds = indexed_dataset(50)
    loader = DeviceLoader(ds, 4, train=True, seed=3)
    loader.prune_easy = 0.5
    pruned_pass(loader)
    reference = DeviceLoader(ds, 4, train=True, seed=3)
    reference.load_state_dict(loader.state_dict())
    reference.prune_easy = 0.5
    full = [y.tolist() for _, y in reference]
    assert len(full) < 12
    it = iter(loader)
    for _ in range(2):
        _, y = next(it)
        loader.record_losses(torch.zeros(len(y)))  # changes the losses, not the pass already planned
    resumed = DeviceLoader(ds, 4, train=True, seed=3)
    resumed.load_state_dict(loader.state_dict())
    resumed.prune_easy = 0.5
    assert [y.tolist() for _, y in resumed] == full[2:]


def test_loader_state_holds_losses_only_once_some_are_recorded():
    ds = indexed_dataset(50)
    plain = DeviceLoader(ds, 5, train=True, seed=3)
    list(plain)
    assert "losses" not in plain.state_dict()  # a run that does not prune saves no per-sample tensors
    pruning = DeviceLoader(ds, 5, train=True, seed=3)
    pruning.prune_easy = 0.5
    pruned_pass(pruning)
    assert torch.equal(pruning.state_dict()["losses"], torch.arange(50.0))
    planned = len(pruning)
    assert planned < 10 and len(list(pruning)) == planned  # the pass yields the batches it planned
    pruning.load_state_dict(plain.state_dict())  # a state without losses leaves none known
    assert pruning.losses.isnan().all() and pruning.pass_losses.isnan().all()


def test_merge_losses_gives_every_rank_the_losses_all_recorded():
    import threading

    barrier, slots = threading.Barrier(2), {}

    def all_reduce(tensor: torch.Tensor) -> None:  # two threads standing in for two ranks
        slots[threading.get_ident()] = tensor.clone()
        barrier.wait()
        tensor.copy_(sum(slots.values()))
        barrier.wait()

    ds = indexed_dataset(48)
    ranks = [DeviceLoader(ds, 4, train=True, seed=2, rank=r, world_size=2) for r in (0, 1)]
    for loader in ranks:
        loader.prune_easy = 0.5
        pruned_pass(loader)
        assert int((~loader.losses.isnan()).sum()) == 24  # its own half
    threads = [threading.Thread(target=loader.merge_losses, args=(all_reduce,)) for loader in ranks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for loader in ranks:
        assert torch.equal(loader.losses, torch.arange(48.0))
    # Planned from the same losses, the ranks' slices make up the global batches one process would cut.
    one = DeviceLoader(ds, 8, train=True, seed=2)
    one.losses = torch.arange(48.0)
    one.prune_easy, one.epoch = 0.5, 1
    shards = [[y.tolist() for _, y in loader] for loader in ranks]
    assert [a + b for a, b in zip(*shards)] == [y.tolist() for _, y in one]


def test_synthetic_is_deterministic_and_learnable():
    a, b = synthetic_dataset(200, seed=3), synthetic_dataset(200, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, synthetic_dataset(200, seed=4).images)
    test = synthetic_dataset(200, seed=3, split="test")
    assert not torch.equal(a.images, test.images)
    assert a.images.dtype == torch.uint8 and a.images.shape == (200, 3, 32, 32)
    assert torch.bincount(a.labels).tolist() == [20] * 10
    # Nearest class mean of the train split classifies the test split: classes share templates.
    means = torch.stack([a.images[a.labels == k].float().mean(0) for k in range(10)]).flatten(1)
    predicted = torch.cdist(test.images.float().flatten(1), means).argmin(1)
    assert (predicted == test.labels).float().mean() > 0.5
    gray = load_dataset("synthetic", num_samples=8, channels=1, size=12, num_classes=3)
    assert gray.images.shape == (8, 1, 12, 12) and gray.num_classes == 3 and len(gray.mean) == 1
