"""Layer-by-layer summary (output shape, parameters, MACs) and per-model figures.

MACs come from ``torch.utils.flop_counter`` (which counts 2 FLOPs per multiply-add
for convolutions and matrix products); norms, activations and pools are not counted,
as in torchvision's and the paper's figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..models import ResNet, build_model, get_spec
from ..models.published import published_figures


@dataclass
class LayerRow:
    """One module call: its qualified name, output shape, parameters and MACs."""

    name: str
    kind: str
    depth: int
    output_shape: List[int]
    params: int
    macs: int


@dataclass
class Summary:
    """What ``summarize`` measured: one row per module call, and totals."""

    input_shape: List[int]
    rows: List[LayerRow] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0
    output_shape: List[int] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)


def count_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass at ``input_size`` (N x C x H x W)."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    x = torch.zeros(*input_size, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() // 2


def summarize(model: nn.Module, input_size: Sequence[int], depth: int = 1) -> Summary:
    """Run one forward pass and record every module call down to ``depth`` levels."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    if len(input_size) != 4 or any(int(s) < 1 for s in input_size):
        raise ValueError(f"input size must be 4 positive numbers N C H W, got {list(input_size)}")
    summary = Summary(input_shape=[int(s) for s in input_size])
    calls: List[list] = []
    pending: List[int] = []
    seen: set = set()
    handles = []
    for name, module in model.named_modules():
        level = name.count(".") + 1 if name else 0
        if not name or level > depth or isinstance(module, nn.Identity):
            continue

        # A row is opened when the call starts (so a stage comes before its blocks) and
        # gets its output shape when the call ends.
        def open_row(mod: nn.Module, _inputs: Any, name: str = name, level: int = level) -> None:
            pending.append(len(calls))
            calls.append([name, type(mod).__name__, level, [], mod])

        def close_row(_mod: nn.Module, _inputs: Any, output: Any) -> None:
            calls[pending.pop()][3] = list(output.shape) if isinstance(output, torch.Tensor) else []

        handles.append(module.register_forward_pre_hook(open_row))
        handles.append(module.register_forward_hook(close_row))

    device = next(iter(model.parameters()), torch.empty(0)).device
    counter = FlopCounterMode(display=False, depth=None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            output = model(torch.zeros(*summary.input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    flops = counter.get_flop_counts()
    root = type(model).__name__
    for name, kind, level, shape, module in calls:
        first_call = name not in seen
        seen.add(name)
        params = sum(p.numel() for p in module.parameters()) if first_call else 0
        macs = sum(flops.get(f"{root}.{name}", {}).values()) // 2 if first_call else 0
        summary.rows.append(LayerRow(name, kind, level, shape, params, macs))
    summary.total_params = sum(p.numel() for p in model.parameters())
    summary.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    summary.total_macs = counter.get_total_flops() // 2
    summary.output_shape = list(output.shape)
    return summary


def format_summary(summary: Summary) -> str:
    """The summary as a fixed-width table with totals."""
    header = ("layer", "type", "output shape", "params", "MACs")
    lines = [(("  " * (row.depth - 1)) + row.name, row.kind, str(row.output_shape),
              f"{row.params:,}" if row.params else "-", f"{row.macs:,}" if row.macs else "-")
             for row in summary.rows]
    widths = [max(len(str(col)) for col in column) for column in zip(header, *lines)]
    aligns = ["<", "<", "<", ">", ">"]

    def fmt(cols: Sequence[str]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cols, aligns, widths)).rstrip()

    rule = "-" * len(fmt(header))
    out = [fmt(header), rule, *(fmt(line) for line in lines), rule]
    out.append(f"input {summary.input_shape} -> output {summary.output_shape}")
    out.append(f"params: {summary.total_params:,} ({summary.trainable_params:,} trainable, "
               f"{summary.total_params * 4 / 2**20:.1f} MiB as fp32)")
    out.append(f"MACs: {summary.total_macs:,} ({summary.total_macs / 1e9:.3f} G)")
    return "\n".join(out)


def model_info(name: str, input_size: Optional[Sequence[int]] = None, **options: Any) -> Dict[str, Any]:
    """Params, MACs at the default (or given) input, depth, block and published figures of a zoo model."""
    spec = get_spec(name)
    with torch.device("meta"):
        model: ResNet = build_model(name, **options)
    if input_size is None:
        input_size = (1, model.in_chans, *spec.input_size[1:])
    with torch.device("meta"):
        macs = count_macs(model, input_size)
    return dict(
        name=spec.name,
        family=spec.family,
        block=spec.block.__name__,
        layers=list(spec.layers),
        depth=spec.depth,
        shortcut=model.shortcut,
        params=sum(p.numel() for p in model.parameters()),
        macs=macs,
        gmacs=round(macs / 1e9, 3),
        input_size=list(input_size),
        num_classes=model.num_classes,
        published=published_figures(spec.name),
    )
