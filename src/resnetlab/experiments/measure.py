"""Measurements inside a network: gradient norm per conv layer, response std per residual function.

Both functions leave the model as they found it: its mode, its parameters' ``.grad``
and its norm layers' running statistics are unchanged afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["conv_grad_norms", "response_stds", "conv_layers_in_forward_order", "recalibrate_norms"]


@contextmanager
def _kept_state(model: nn.Module) -> Iterator[None]:
    """Restore the model's train/eval mode and its buffers (BN running stats) on exit."""
    modes = {m: m.training for m in model.modules()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        for m, training in modes.items():
            m.train(training)


def conv_layers_in_forward_order(model: nn.Module, x: Tensor) -> List[Tuple[str, nn.Conv2d]]:
    """Every Conv2d of the model with its qualified name, in the order a forward pass calls them."""
    names = {m: name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    order: List[nn.Module] = []
    handles = [m.register_forward_pre_hook(lambda mod, _inp: order.append(mod)) for m in names]
    try:
        with _kept_state(model), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    seen: Dict[nn.Module, None] = dict.fromkeys(order)  # first call of each, in order
    return [(names[m], m) for m in seen]  # type: ignore[misc]


def conv_grad_norms(model: nn.Module, x: Tensor, y: Tensor) -> List[Tuple[str, float]]:
    """L2 norm of d(cross-entropy)/d(weight) of every conv layer, in forward order, on one batch.

    The loss is the mean cross-entropy of a train-mode forward pass in fp32 (BN uses the
    batch's statistics, as during training).
    """
    convs = conv_layers_in_forward_order(model, x)
    with _kept_state(model):
        model.train()
        loss = F.cross_entropy(model(x).float(), y)
        grads = torch.autograd.grad(loss, [conv.weight for _, conv in convs])
    return [(name, float(g.detach().double().norm())) for (name, _), g in zip(convs, grads)]


def response_stds(model: nn.Module, x: Tensor) -> List[Tuple[str, float]]:
    """Std of each residual function's response (its last norm's output, before the addition).

    One value per block in forward order, from an eval-mode forward pass of ``x``: the
    population std over all elements (images, channels, positions) of that output,
    the quantity of Figure 7 in He et al. (2015).
    """
    blocks = [(name, m) for name, m in model.named_modules() if callable(getattr(m, "last_norm", None))]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no residual blocks (modules with last_norm())")
    stds: Dict[str, float] = {}
    handles = []
    for name, block in blocks:
        # The std is taken inside the hook: a plain block's ReLU then works in place on this tensor.
        def hook(_mod: nn.Module, _inp: object, out: Tensor, name: str = name) -> None:
            stds[name] = float(out.detach().double().std(unbiased=False))

        handles.append(block.last_norm().register_forward_hook(hook))
    try:
        with _kept_state(model), torch.no_grad():
            model.eval()
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return [(name, stds[name]) for name, _ in blocks if name in stds]


@torch.no_grad()
def recalibrate_norms(model: nn.Module, images: Tensor, batch_size: int) -> None:
    """Replace BN running statistics by their exact average over ``images`` (train-mode passes, no update)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    modes = {m: m.training for m in model.modules()}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes
    model.train()
    try:
        for start in range(0, images.shape[0], batch_size):
            model(images[start:start + batch_size])
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        for m, training in modes.items():
            m.train(training)
