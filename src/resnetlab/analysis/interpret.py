"""Where a network looks: class activation maps (Grad-CAM and its kin, through the grad-cam
package) and the feature maps of the stem and each stage, for a checkpoint and image files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..data.inputs import ImagePreprocess
from ..device import resolve_device
from ..weights import load_model

__all__ = ["CAM_METHODS", "Explainer", "Explanation", "class_activation_maps", "denormalize", "find_layer",
           "stage_features"]

CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam")


def _cam_class(method: str):
    """The grad-cam package's class for ``method``."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(CAM_METHODS)}")
    try:
        import pytorch_grad_cam as cams
    except ImportError:
        raise ValueError("class activation maps need the grad-cam package: pip install 'resnetlab[interpret]'"
                         ) from None
    return {"gradcam": cams.GradCAM, "gradcam++": cams.GradCAMPlusPlus, "scorecam": cams.ScoreCAM,
            "eigencam": cams.EigenCAM}[method]


def find_layer(model: nn.Module, name: Optional[str] = None) -> nn.Module:
    """The module ``name`` of ``model`` (a stage such as "layer4", or a dotted path such as "layer3.1");
    None: the last stage."""
    stages = list(getattr(model, "stage_names", []))
    if name is None:
        if not stages:
            raise ValueError("the model has no stages to explain; pass a layer name")
        name = stages[-1]
    try:
        module = model.get_submodule(name) if name.split(".")[0] in stages else None
    except AttributeError:
        module = None
    if module is None or isinstance(module, nn.Identity):
        raise ValueError(f"unknown layer {name!r}; choose a stage ({', '.join(stages)}) or a block such as "
                         f"{stages[-1] if stages else 'layer1'}.0")
    return module


def class_activation_maps(model: nn.Module, x: torch.Tensor, classes: Sequence[int], method: str = "gradcam",
                          layer: Optional[str] = None) -> np.ndarray:
    """One map in [0, 1] per image of ``x`` (N x C x H x W) and class of ``classes`` (N of them), at the
    input's resolution: where ``layer``'s activations raise that class's logit."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_class = _cam_class(method)
    model.eval()
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    with torch.enable_grad(), cam_class(model=model, target_layers=[find_layer(model, layer)]) as cam:
        if method == "scorecam":
            cam.batch_size = 64
        maps = cam(input_tensor=x, targets=targets)
    return np.nan_to_num(np.asarray(maps, dtype=np.float32)).clip(0.0, 1.0)


@torch.no_grad()
def stage_features(model: nn.Module, x: torch.Tensor) -> List[Tuple[str, torch.Tensor]]:
    """The output of the stem and of each stage for ``x``: (name, N x C x h x w) in order."""
    model.eval()
    out = [("stem", model.forward_stem(x))]
    for name in model.stage_names:
        out.append((name, getattr(model, name)(out[-1][1])))
    return out


def denormalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """A normalized C x H x W tensor as an H x W x C float image in [0, 1] for display."""
    image = (x.detach().cpu().float() * std.view(-1, 1, 1) + mean.view(-1, 1, 1)).clamp(0, 1)
    return image.permute(1, 2, 0).numpy()


@dataclass
class Explanation:
    """One image's top classes, with a class activation map for each (or for the requested target)."""

    path: str
    image: np.ndarray  # H x W x C in [0, 1], as the model saw it
    classes: List[str] = field(default_factory=list)
    probabilities: List[float] = field(default_factory=list)
    maps: List[np.ndarray] = field(default_factory=list)  # one H x W map in [0, 1] per class above
    method: str = "gradcam"


class Explainer:
    """A checkpoint ready to say where it looks in image files: its top classes and their activation maps."""

    def __init__(self, weights: Union[str, Path], model_name: Optional[str] = None, device: str = "cpu") -> None:
        self.device = resolve_device(device)
        model, metadata = load_model(weights, model_name)
        self.model: nn.Module = model.to(self.device).eval()
        self.metadata: Dict[str, Any] = metadata
        self.preprocess = ImagePreprocess(metadata.get("preprocessing"), model.in_chans)
        self.class_names: List[str] = metadata.get("class_names") or [str(i) for i in range(model.num_classes)]

    def class_index(self, target: Union[str, int]) -> int:
        """The index of class ``target``, given by name or by number."""
        if str(target) in self.class_names:
            return self.class_names.index(str(target))
        if str(target).isdigit() and int(target) < len(self.class_names):
            return int(target)
        shown = ", ".join(self.class_names[:20]) + (", ..." if len(self.class_names) > 20 else "")
        raise ValueError(f"unknown class {target!r}; choose a name ({shown}) or a number below "
                         f"{len(self.class_names)}")

    def prepare(self, path: Union[str, Path]) -> torch.Tensor:
        """An image file as the 1 x C x H x W input the model expects."""
        return self.preprocess(path).unsqueeze(0).to(self.device)

    def image(self, x: torch.Tensor) -> np.ndarray:
        """The model's input ``x`` (1 x C x H x W) as an image for display."""
        return denormalize(x[0], self.preprocess.mean, self.preprocess.std)

    def explain(self, path: Union[str, Path], topk: int = 3, method: str = "gradcam",
                target: Union[None, str, int] = None, layer: Optional[str] = None) -> Explanation:
        """The top-``topk`` classes of the image file ``path`` and a map for each (``target``: that class only)."""
        _cam_class(method)
        x = self.prepare(path)
        with torch.no_grad():
            probs = torch.softmax(self.model(x).float(), dim=1)[0]
        k = max(1, min(topk, len(self.class_names)))
        chosen = [self.class_index(target)] if target is not None else probs.topk(k).indices.tolist()
        maps = class_activation_maps(self.model, x.expand(len(chosen), -1, -1, -1).clone(), chosen, method, layer)
        return Explanation(str(path), self.image(x), [self.class_names[i] for i in chosen],
                           [float(probs[i]) for i in chosen], list(maps), method)

    def features(self, path: Union[str, Path]) -> List[Tuple[str, torch.Tensor]]:
        """The stem's and each stage's output for the image file ``path`` (see stage_features)."""
        return stage_features(self.model, self.prepare(path))
