"""Load and save ResNet weights: torchvision, timm, akamaster and resnetlab's own files.

State-dict names are torchvision's, so torchvision and timm checkpoints load as they
are. Wrapped checkpoints (``{'state_dict': ...}``, ``{'model': ...}``), DataParallel
and ``torch.compile`` prefixes and akamaster's CIFAR files (``linear`` head) are mapped
here. Pickled files are only ever read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..errors import one_line, refused_global
from ..fileio import atomic_write
from .metadata import check_class_names, check_metadata

__all__ = ["LoadResult", "read_checkpoint", "load_model", "load_weights", "save_weights"]

PathLike = Union[str, "os.PathLike[str]"]

ACCEPTED = ("accepted: a state dict saved with torch.save (torchvision, timm), a dict wrapping one "
            "under 'state_dict', 'model' or 'model_state_dict' (akamaster, trainers), "
            "or a .safetensors file")
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
STRIP_PREFIXES = ("module.", "_orig_mod.")
HEAD_KEYS = ("fc.weight", "fc.bias")
STEM_KEYS = ("conv1.weight", "conv1.0.weight")  # "imagenet"/"cifar" stem, "deep" stem
MAX_NAMES = 3


@dataclass
class LoadResult:
    """What load_weights did: keys it did not take, and the adaptations it made."""

    path: Optional[Path]
    missing: List[str] = field(default_factory=list)  # model keys kept as initialised (head)
    unexpected: List[str] = field(default_factory=list)  # checkpoint keys dropped (head)
    head_replaced: bool = False
    adapted_in_chans: bool = False
    metadata: Dict[str, Any] = field(default_factory=dict)


def _not_a_checkpoint(path: Path, reason: str) -> ValueError:
    return ValueError(f"{path} is not a checkpoint ({reason}); {ACCEPTED}")


def _is_safetensors(path: Path) -> bool:
    """Whether the file starts like safetensors: an 8-byte header length, then '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


def _read_safetensors(path: Path) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = dict(f.metadata() or {})
            state = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise _not_a_checkpoint(path, f"safetensors: {one_line(exc, 120)}") from None
    metadata: Dict[str, Any] = dict(raw)
    if raw.get("format") == "resnetlab":
        try:
            metadata["options"] = json.loads(raw.get("options", "{}"))
            for key in ("class_names", "preprocessing", "accuracy"):
                if key in raw:
                    metadata[key] = json.loads(raw[key])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} has unreadable resnetlab metadata ({one_line(exc, 120)}); "
                             "expected JSON in 'options' and 'class_names'") from None
        metadata = check_metadata(metadata, str(path))
    return state, metadata


def _unwrap(obj: Mapping[str, Any]) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
    """The tensors of a (possibly wrapped) state dict, and the wrapper's scalar entries."""
    metadata: Dict[str, Any] = {}
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
            metadata = {k: v for k, v in obj.items()
                        if k != key and isinstance(v, (str, int, float, bool))}
            obj = inner
            break
    return {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}, metadata


def _read_torch(path: Path) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
    try:
        with warnings.catch_warnings():  # plain pickles (protocol > 2) draw a warning before the refusal
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # text, random bytes, refused pickles: many exception types
        message = str(exc)
        refused = refused_global(message)
        if refused:  # a class (e.g. a whole pickled model rather than its state_dict()), or code such as os.system
            advice = "; save a state_dict()" if "not an allowed global" in message else ""
            raise _not_a_checkpoint(path, f"it pickles {refused}, which weights_only loading refuses{advice}"
                                    ) from None
        if "WeightsUnpickler error:" in message:  # a pickle, but not one of tensors and containers
            detail = " ".join(message.split("WeightsUnpickler error:", 1)[1].split("\n\n")[:2]).strip()
            raise _not_a_checkpoint(path, f"weights_only loading refused it: {one_line(detail, 120)}"
                                    ) from None
        with open(path, "rb") as f:
            head = f.read(4)
        if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):  # torch.save's zip, pickle
            raise _not_a_checkpoint(path, "not a torch.save zip archive, pickle or safetensors file"
                                    ) from None
        raise _not_a_checkpoint(path, f"torch.load: {one_line(exc, 120)}") from None
    if not isinstance(obj, Mapping):
        raise _not_a_checkpoint(path, f"it holds a {type(obj).__name__}, not a dict")
    state, metadata = _unwrap(obj)
    if not state:
        raise _not_a_checkpoint(path, "it holds a dict with no tensors")
    return state, metadata


def normalize_keys(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Strip DataParallel/DDP and torch.compile prefixes; map akamaster's ``linear`` head to ``fc``."""
    out: Dict[str, Tensor] = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in STRIP_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        out[key] = value
    if any(k.startswith("linear.") for k in out) and not any(k.startswith("fc.") for k in out):
        out = {("fc." + k[len("linear."):] if k.startswith("linear.") else k): v for k, v in out.items()}
    return out


def read_checkpoint(path: PathLike) -> Tuple[Dict[str, Tensor], Dict[str, Any]]:
    """Read a checkpoint file into (state dict with resnetlab names, metadata)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; {ACCEPTED}")
    if not path.is_file():
        raise _not_a_checkpoint(path, "it is not a regular file")
    if _is_safetensors(path):
        state, metadata = _read_safetensors(path)
    else:
        state, metadata = _read_torch(path)
    if not state:
        raise _not_a_checkpoint(path, "it holds no tensors")
    return normalize_keys(state), metadata


def _plural(count: int, noun: str, plural: str) -> str:
    return f"{count} {noun if count == 1 else plural}"


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_NAMES])
    return shown + (", ..." if len(items) > MAX_NAMES else "")


def _describe(model: nn.Module) -> str:
    """The zoo name a model was built as (build_model records it), else its class name."""
    return getattr(model, "arch", None) or type(model).__name__


def _adapt_in_chans(weight: Tensor, in_chans: int) -> Tensor:
    """Adapt an RGB (timm's convention) or grayscale first-conv weight to ``in_chans`` inputs.

    A grayscale weight is tiled and divided by ``in_chans``, so a gray image repeated over
    the channels gives the same output as before.
    """
    dtype = weight.dtype
    weight = weight.float()
    if weight.shape[1] == 1:
        adapted = weight.repeat(1, in_chans, 1, 1) / in_chans
    elif in_chans == 1:
        adapted = weight.sum(dim=1, keepdim=True)
    else:
        repeat = math.ceil(in_chans / 3)
        adapted = weight.repeat(1, repeat, 1, 1)[:, :in_chans] * (3 / in_chans)
    return adapted.to(dtype)


def load_weights(model: nn.Module, path_or_state_dict: Union[PathLike, Mapping[str, Tensor]],
                 strict: bool = False, verbose: bool = True) -> LoadResult:
    """Load a checkpoint into ``model``, re-initialising the head or adapting the stem if needed.

    With ``strict`` the checkpoint must fit as it is: a head of another size or an
    input conv with other channels raises instead of being adapted. Any other mismatch
    always raises, and the model is left untouched whenever this raises.
    """
    if isinstance(path_or_state_dict, Mapping):
        path: Optional[Path] = None
        state, metadata = _unwrap(path_or_state_dict)
        if not state:
            raise ValueError(f"the state dict given holds no tensors; {ACCEPTED}")
        state = normalize_keys(state)
        where = "state dict"
    else:
        path = Path(path_or_state_dict)
        state, metadata = read_checkpoint(path)
        where = f"checkpoint {path}"
    state = dict(state)
    own = model.state_dict()
    result = LoadResult(path=path, metadata=metadata)
    notes: List[str] = []  # what was adapted, printed once the load succeeded
    refusals: List[str] = []  # the same, as errors for strict=True

    # Head: drop it when the model has none; keep the model's fresh one when sizes differ.
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Identity):
        result.unexpected += [k for k in HEAD_KEYS if state.pop(k, None) is not None]
    elif isinstance(fc, nn.Linear):
        weight = state.get("fc.weight")
        theirs = None  # None: the head fits, or it does not fit for another reason (checked below)
        if weight is None and "fc.bias" not in state:
            theirs = "has no classifier"
        elif (weight is not None and weight.dim() == 2 and weight.shape[1] == fc.in_features
              and weight.shape[0] != fc.out_features):
            theirs = f"head has {weight.shape[0]} classes"
        if theirs is not None:
            result.unexpected += [k for k in HEAD_KEYS if state.pop(k, None) is not None]
            result.missing += [k for k in HEAD_KEYS if k in own]
            result.head_replaced = True
            notes.append(f"checkpoint {theirs}, model has {fc.out_features}: fc re-initialised")
            refusals.append(f"{where} {theirs}, model has {fc.out_features} classes; "
                            "pass strict=False to re-initialise fc")

    # Stem: adapt an RGB first conv to the model's input channels.
    for key in STEM_KEYS:
        if key in state and key in own:
            theirs_w, ours = state[key], own[key]
            chans = ours.shape[1]
            source = theirs_w.shape[1] if theirs_w.dim() == 4 else 0
            if (ours.dim() == 4 and source in (1, 3) and chans != source
                    and theirs_w.shape[0] == ours.shape[0] and theirs_w.shape[2:] == ours.shape[2:]):
                state[key] = _adapt_in_chans(theirs_w, chans)
                result.adapted_in_chans = True
                how = ("grayscale tiled and divided by C" if source == 1 else
                       "summed over RGB" if chans == 1 else "RGB tiled and rescaled by 3/C")
                notes.append(f"checkpoint {key} takes {source} input channels, model takes {chans}: {how}")
                refusals.append(f"{where} {key} takes {source} input channels, model takes {chans}; "
                                "pass strict=False to adapt it")
            break

    # Everything else must fit exactly; num_batches_tracked may be absent (akamaster, old torch).
    missing = [k for k in own if k not in state and k not in result.missing
               and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in state.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{_plural(len(missing), 'missing key', 'missing keys')} ({_names(missing)})")
        if unexpected:
            parts.append(f"{_plural(len(unexpected), 'unexpected key', 'unexpected keys')} "
                         f"({_names(unexpected)})")
        if mismatched:
            parts.append(f"{_plural(len(mismatched), 'shape mismatch', 'shape mismatches')} "
                         f"({_names(mismatched)})")
        raise ValueError(f"{where} does not fit this {_describe(model)}: {', '.join(parts)}")
    if strict and refusals:
        raise ValueError(refusals[0])

    full = {k: state.get(k, own[k]) for k in own}
    model.load_state_dict(full, strict=True)
    if verbose:
        for note in notes:
            print(f"resnetlab: {note}", file=sys.stderr)
    return result


def _tensors_for_saving(model: nn.Module) -> Dict[str, Tensor]:
    """The state dict as contiguous CPU tensors that share no memory (safetensors needs both)."""
    tensors: Dict[str, Tensor] = {}
    seen = set()
    for key, value in model.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        storage = tensor.untyped_storage()
        whole = storage.nbytes() == tensor.numel() * tensor.element_size()
        if storage.data_ptr() in seen or not whole:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    return tensors


def all_finite(model: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer (BatchNorm's running statistics) is finite."""
    return all(bool(torch.isfinite(t).all()) for t in (*model.parameters(), *model.buffers()) if t.is_floating_point())


def save_weights(model: nn.Module, path: PathLike, arch: str,
                 options: Optional[Mapping[str, Any]] = None,
                 class_names: Optional[Sequence[str]] = None,
                 preprocessing: Optional[Mapping[str, Any]] = None,
                 dtype: Optional[torch.dtype] = None) -> Path:
    """Write the model's weights and how to rebuild it to a safetensors file, atomically.

    ``preprocessing`` (mean, std, input_size, dataset) tells eval and predict how to
    prepare inputs as training did. ``dtype`` (e.g. torch.bfloat16) stores the floating
    point tensors in that type; loading casts them back to the model's.
    """
    path = Path(path)
    try:
        metadata = {"format": "resnetlab", "arch": str(arch),
                    "options": json.dumps(dict(options or {}), sort_keys=True)}
        if class_names is not None:
            metadata["class_names"] = json.dumps([str(c) for c in class_names])
        if preprocessing is not None:
            metadata["preprocessing"] = json.dumps(dict(preprocessing), sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"options must be JSON values (numbers, strings, lists): {one_line(exc, 120)}") from None
    tensors = _tensors_for_saving(model)
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_model(path: PathLike, arch: Optional[str] = None, strict: bool = True,
               **options: Any) -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the model a checkpoint describes and load it; returns (model in eval mode, metadata).

    ``path`` is a checkpoint file or a weights name (``resnet50.tv2_in1k``, or a tag of ``arch``;
    see list_weights), downloaded when needed. resnetlab checkpoints and named weights know their
    architecture; for other files (torchvision, timm, akamaster) pass ``arch`` and the options that
    differ from the zoo's. Options given here override the stored ones (with ``strict=False`` a
    new head is allowed).
    """
    from ..models import build_model
    from .registry import resolve_weights

    path, entry = resolve_weights(path, arch)
    state, metadata = read_checkpoint(path)
    if entry is not None:
        metadata = {**entry.metadata(), **metadata}
    stored = metadata.get("arch")
    if arch and stored and arch != stored:
        raise ValueError(f"checkpoint {path} holds a {stored}, not a {arch}")
    name = arch or stored
    if not name:
        raise ValueError(f"checkpoint {path} does not name its architecture; pass the model name")
    merged = dict(metadata.get("options") or {})
    merged.update(options)
    if "fc.weight" in state and "num_classes" not in merged:
        merged["num_classes"] = int(state["fc.weight"].shape[0])
    model = build_model(name, **merged)
    load_weights(model, state, strict=strict, verbose=not strict)
    if not options:  # the stored head: its names must fit it (a new head keeps no names)
        check_class_names(metadata, model.num_classes, str(path))
    return model.eval(), metadata
