"""Named weights (``arch.tag``): torchvision's, timm's, akamaster's CIFAR-10 models and resnetlab's own.

torchvision's entries are read from torchvision's installed ``Weights`` enums (URL, categories,
metrics, transforms), so they follow the installed version; timm's, from the installed timm's
pretrained configs (none when timm is not installed). ``arch`` alone names the architecture's
default weights.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from ..data.catalog import CLASSES
from ..models.published import AKAMASTER_CIFAR_ERROR
from .download import download_file, hash_prefix_of

__all__ = ["WeightsEntry", "get_weights", "is_weights_name", "list_weights", "resolve_weights"]

SHIPPED = Path(__file__).parent / "shipped"
TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                     "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2")
TORCHVISION_TAGS = {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k"}  # timm's names for them
# timm's networks of these names are torchvision's (the same modules and keys); its files on the hub:
HF_FILE_URL = "https://huggingface.co/{repo}/resolve/{revision}/{filename}"
AKAMASTER_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
AKAMASTER_FILES = {20: "resnet20-12fca82f.th", 32: "resnet32-d509ac18.th", 44: "resnet44-014dd654.th",
                   56: "resnet56-4bfd9763.th", 110: "resnet110-1d1ed7c2.th", 1202: "resnet1202-f3b1deed.th"}
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# resnetlab's own: file in shipped/, sha256, and whether it is its architecture's default.
SHIPPED_FILES = {
    "resnet20.resnetlab_cifar10": ("resnet20_cifar10.safetensors",
                                   "8affedf63dcdb1739e661ed674dd2d92411f2f00d0578c204e55de81e4edaab7", True),
    "resnet14.fashion_mnist": ("resnet14_fashion_mnist.safetensors",
                               "da996ae02260ff33cee1362862d51012af7e996a039c4d7f6977a94cbf1c5423", True),
    "resnet20.fashion_mnist": ("resnet20_fashion_mnist.safetensors",
                               "802927b6a29f375bea99e58033cb70c6a87e2089f81c9b55ced06d92e04eea78", False),
}
CHECKPOINT_SUFFIXES = {".pth", ".pt", ".th", ".tar", ".bin", ".ckpt", ".safetensors", ".onnx", ".xml"}


@dataclass(frozen=True)
class WeightsEntry:
    """One named set of weights: where it comes from, what it expects, how good it is."""

    name: str  # arch.tag
    arch: str
    tag: str
    source: str  # torchvision, timm, akamaster or resnetlab
    license: str
    url: Optional[str] = None  # None for weights shipped inside the package
    sha256: Optional[str] = None  # the whole hash when known
    hash_prefix: Optional[str] = None  # else the prefix in the file name
    file_size_mb: Optional[float] = None
    categories: Tuple[str, ...] = ()
    preprocessing: Dict[str, Any] = field(default_factory=dict)  # input_size, resize, crop, interpolation, mean, std
    accuracy: Dict[str, Any] = field(default_factory=dict)  # top1 (top5), dataset, kind: published or measured
    default: bool = False
    path: Optional[Path] = None  # shipped weights
    filename: Optional[str] = None  # the cached file's name, when not the URL's (hub files: model.safetensors)

    @property
    def num_classes(self) -> int:
        """The classifier's size."""
        return len(self.categories)

    def metadata(self) -> Dict[str, Any]:
        """What a checkpoint's metadata would say: arch, class names, preprocessing, the weights' name."""
        return {"arch": self.arch, "class_names": list(self.categories), "preprocessing": dict(self.preprocessing),
                "accuracy": dict(self.accuracy), "weights": self.name}

    def to_dict(self) -> Dict[str, Any]:
        """The entry as JSON values."""
        out = asdict(self)
        out["path"] = None if self.path is None else self.path.name
        out["categories"] = list(self.categories)
        return out

    def file(self, progress: bool = True) -> Path:
        """The weights file: the shipped one, or the cached download (downloaded first when missing)."""
        if self.path is not None:
            return self.path
        return download_file(self.url, sha256=self.sha256, hash_prefix=self.hash_prefix, progress=progress,
                             filename=self.filename)


def _torchvision_entries() -> List[WeightsEntry]:
    from torchvision.models import get_model_weights

    entries = []
    for arch in TORCHVISION_ARCHS:
        enum = get_model_weights(arch)
        for weights in enum:
            transform = weights.transforms()
            crop, resize = int(transform.crop_size[0]), int(transform.resize_size[0])
            metrics = weights.meta["_metrics"]["ImageNet-1K"]
            tag = TORCHVISION_TAGS.get(weights.name, weights.name.lower())
            entries.append(WeightsEntry(
                name=f"{arch}.{tag}", arch=arch, tag=tag, source="torchvision",
                license="BSD-3-Clause (torchvision)", url=weights.url, hash_prefix=hash_prefix_of(weights.url),
                file_size_mb=weights.meta.get("_file_size"), categories=tuple(weights.meta["categories"]),
                preprocessing=dict(input_size=[crop, crop], resize_size=resize, crop_fraction=crop / resize,
                                   interpolation=transform.interpolation.value, mean=list(transform.mean),
                                   std=list(transform.std)),
                accuracy=dict(top1=metrics["acc@1"], top5=metrics["acc@5"], dataset="ImageNet-1K validation",
                              kind="published", recipe=weights.meta.get("recipe")),
                default=weights is enum.DEFAULT))
    return entries


def _timm_entries() -> List[WeightsEntry]:
    """timm's ImageNet-1k weights for the zoo's torchvision architectures, from the installed timm's
    pretrained configs; none without timm. torchvision's own (tv_in1k, tv2_in1k) keep their entries."""
    try:
        import timm
        from timm.models import get_pretrained_cfg
    except ImportError:
        return []
    from torchvision.models import ResNet50_Weights

    categories = tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])  # ImageNet-1k's, in timm's order too
    entries = []
    for arch in TORCHVISION_ARCHS:
        for name in timm.list_pretrained(f"{arch}.*"):
            cfg = get_pretrained_cfg(name)
            cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg or {})
            tag = name.split(".", 1)[1] if "." in name else ""
            if (not tag or tag in TORCHVISION_TAGS.values() or cfg.get("num_classes") != 1000
                    or cfg.get("custom_load") or not (cfg.get("hf_hub_id") or cfg.get("url"))):
                continue
            url, filename = cfg.get("url"), None
            if cfg.get("hf_hub_id"):  # timm's own files: safetensors on the hub, loaded first by timm too
                repo, _, revision = cfg["hf_hub_id"].partition("@")
                hub_file = cfg.get("hf_hub_filename") or "model.safetensors"
                url = HF_FILE_URL.format(repo=repo, revision=revision or cfg.get("hf_hub_revision") or "main",
                                         filename=hub_file)
                filename = f"{name}{Path(hub_file).suffix}"  # every hub file has the same name
            height, width = (int(v) for v in cfg["input_size"][-2:])
            crop = float(cfg.get("crop_pct") or 0.875)  # timm's default crop
            preprocessing = dict(input_size=[height, width], crop_fraction=crop, resize_size=round(height / crop),
                                 interpolation=cfg.get("interpolation") or "bicubic", mean=list(cfg["mean"]),
                                 std=list(cfg["std"]))
            if cfg.get("test_input_size"):
                preprocessing["test_input_size"] = [int(v) for v in cfg["test_input_size"][-2:]]
            if cfg.get("test_crop_pct"):
                preprocessing["test_crop_fraction"] = float(cfg["test_crop_pct"])
            entries.append(WeightsEntry(
                name=f"{arch}.{tag}", arch=arch, tag=tag, source="timm",
                license=f"{cfg.get('license') or 'see its model card'} (timm)", url=url, filename=filename,
                hash_prefix=None if filename else hash_prefix_of(url), categories=categories,
                preprocessing=preprocessing))  # no hash for the hub's files, no accuracy in timm's configs
    return entries


def _akamaster_entries() -> List[WeightsEntry]:
    entries = []
    for depth, filename in AKAMASTER_FILES.items():
        url = AKAMASTER_URL + filename
        entries.append(WeightsEntry(
            name=f"resnet{depth}.akamaster_cifar10", arch=f"resnet{depth}", tag="akamaster_cifar10",
            source="akamaster", license="BSD-2-Clause (akamaster/pytorch_resnet_cifar10)", url=url,
            hash_prefix=hash_prefix_of(url), categories=tuple(CLASSES["cifar10"]),
            preprocessing=dict(dataset="cifar10", input_size=[32, 32], crop_fraction=1.0, interpolation="bilinear",
                               mean=IMAGENET_MEAN, std=IMAGENET_STD),
            accuracy=dict(top1=round(100 - AKAMASTER_CIFAR_ERROR[depth], 2), dataset="CIFAR-10 test",
                          kind="published"),
            default=depth != 20))  # resnet20's default is resnetlab's, which needs no download
    return entries


def _shipped_entries() -> List[WeightsEntry]:
    from safetensors import safe_open

    entries = []
    for name, (filename, sha256, default) in SHIPPED_FILES.items():
        path = SHIPPED / filename
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata()
        arch, tag = name.split(".", 1)
        preprocessing = json.loads(meta["preprocessing"])
        preprocessing.setdefault("interpolation", "bilinear")
        entries.append(WeightsEntry(
            name=name, arch=arch, tag=tag, source="resnetlab", license="MIT (resnetlab)", sha256=sha256,
            file_size_mb=round(path.stat().st_size / 1e6, 3), categories=tuple(json.loads(meta["class_names"])),
            preprocessing=preprocessing, accuracy=json.loads(meta["accuracy"]), default=default, path=path))
    return entries


@lru_cache(maxsize=1)
def _registry() -> Dict[str, WeightsEntry]:
    entries = _torchvision_entries() + _timm_entries() + _akamaster_entries() + _shipped_entries()
    return {entry.name: entry for entry in sorted(
        entries, key=lambda e: (_arch_order(e.arch), e.source == "timm", e.name))}  # timm's after the others


def _arch_order(arch: str) -> Tuple[int, int]:
    """torchvision's architectures in zoo order, then the CIFAR ones by depth."""
    if arch in TORCHVISION_ARCHS:
        return (0, TORCHVISION_ARCHS.index(arch))
    return (1, int("".join(c for c in arch if c.isdigit()) or 0))


def list_weights(pattern: Optional[str] = None) -> List[WeightsEntry]:
    """The named weights; ``pattern`` is an architecture name or a shell-style filter such as 'resnet5*'."""
    entries = list(_registry().values())
    if pattern:
        entries = [e for e in entries if e.arch == pattern or fnmatch.fnmatch(e.name, pattern)]
    return entries


def get_weights(name: str, arch: Optional[str] = None) -> WeightsEntry:
    """The entry ``name`` names: ``arch.tag``, a bare ``tag`` of ``arch``, or an architecture (its default)."""
    registry = _registry()
    candidates = [name] + ([f"{arch}.{name}"] if arch and "." not in name else [])
    for candidate in candidates:
        if candidate in registry:
            entry = registry[candidate]
            break
    else:
        defaults = [e for e in registry.values() if e.arch == name and e.default]
        if not defaults:
            raise ValueError(_unknown(name, arch, registry))
        entry = defaults[0]
    if arch and entry.arch != arch:
        raise ValueError(f"weights {entry.name} are for {entry.arch}, not {arch}; "
                         f"{arch}'s: {', '.join(e.tag for e in list_weights(arch)) or 'none'}")
    return entry


def _unknown(name: str, arch: Optional[str], registry: Dict[str, WeightsEntry]) -> str:
    """The one-line error for a name the registry lacks, with the closest names (the architecture's first)."""
    owner = name.split(".", 1)[0] if "." in name else (arch or name)
    full = name if "." in name or not arch else f"{arch}.{name}"
    own = [n for n, e in registry.items() if e.arch == owner]
    if owner and not own and owner in _zoo_names():
        return f"{owner} has no named weights (not a file either); see `resnetlab weights` or list_weights()"
    close = difflib.get_close_matches(full, own or list(registry), n=3, cutoff=0.0 if own else 0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"unknown weights {name!r} (not a file either){hint} (see `resnetlab weights` or list_weights())"


def _zoo_names() -> List[str]:
    from ..models import list_models

    return list_models()


def looks_like_name(value: Union[str, Path]) -> bool:
    """Whether ``value`` reads as a weights name rather than a file path."""
    text = str(value)
    return "/" not in text and "\\" not in text and Path(text).suffix.lower() not in CHECKPOINT_SUFFIXES


def is_weights_name(value: Union[str, Path]) -> bool:
    """Whether ``value`` names registry weights: no such file, and it does not read as a path."""
    return not Path(value).exists() and looks_like_name(value)


def resolve_weights(value: Union[str, Path], arch: Optional[str] = None
                    ) -> Tuple[Path, Optional[WeightsEntry]]:
    """The file ``value`` names and its registry entry (None for a plain file); downloads when needed."""
    if not is_weights_name(value):
        return Path(value), None
    entry = get_weights(str(value), arch)
    return entry.file(), entry
