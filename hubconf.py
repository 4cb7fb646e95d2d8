"""torch.hub entry points: every zoo model, with resnetlab's named weights.

>>> model = torch.hub.load("path/to/resnetlab", "resnet50", source="local", weights="tv2_in1k")
"""

import sys as _sys
from pathlib import Path as _Path

dependencies = ["torch", "torchvision", "safetensors"]

_sys.path.insert(0, str(_Path(__file__).resolve().parent / "src"))  # this checkout's package, installed or not

from resnetlab import create_model as _create_model  # noqa: E402
from resnetlab.models import list_models as _list_models  # noqa: E402


def _entry(name):
    def entry(pretrained=False, weights=None, **options):
        return _create_model(name, weights=weights, pretrained=pretrained, **options)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"{name}: pretrained=True loads its default weights, weights= a tag, name or file "
                     "(see `resnetlab weights`); options as create_model's.")
    return entry


for _name in _list_models():
    globals()[_name] = _entry(_name)
