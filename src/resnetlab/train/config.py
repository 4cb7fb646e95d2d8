"""Training configuration: one dataclass, named recipes, TOML files and overrides.

Precedence, lowest first: the dataclass defaults, the recipe, a TOML file, explicit
overrides (the command line). Unknown keys are errors everywhere.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from ..limits import ceiling, over_ceiling

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "onecycle", "constant")
PRECISIONS = ("fp32", "bf16", "fp16")
MIN_IMAGE_SIZE = 8  # the ceilings are in limits.py


@dataclass
class TrainConfig:
    """Everything a training run depends on."""

    model: str = "resnet20"
    model_options: Dict[str, Any] = field(default_factory=dict)
    data: str = "fashion-mnist"
    data_dir: Optional[str] = None
    download: bool = False
    train_subset: int = 0  # train on the first N samples (0: all)
    test_subset: int = 0
    # Hold out a stratified, seeded part of the training set as the evaluation set: a fraction in (0, 1)
    # or a count (e.g. 5000); 0 evaluates on the test split (or an image folder's val/, else 0.1 of it).
    val_split: float = 0.0
    # Image folders only: the side images are resized (shorter side) and cropped to; 0: the input size of the
    # start weights when fine-tuning, else 224.
    image_size: int = 0
    workers: int = 2  # image folders only: processes decoding images
    cache: bool = True  # image folders only: decode once into memory (and a disk cache) when they fit the budget
    cache_budget_gb: float = 0.0  # image folders only: GiB of decoded images held in memory (0: a quarter of RAM)

    # Fine-tuning: named weights (a name, a tag of the model, or "default" for its default) or a checkpoint file
    # to start from; the data is normalized as they were trained, and the classifier is replaced unless the
    # classes are the weights' own.
    weights: str = ""
    freeze_epochs: int = 0  # epochs at the start in which only the classifier trains (backbone batch norm frozen)
    backbone_lr_mult: float = 1.0  # the lr of every layer but the classifier, as a fraction of its lr

    epochs: int = 10
    iterations: int = 0  # if > 0, train for this many steps instead of epochs
    batch_size: int = 128  # the global batch of one optimizer step, over all processes and micro-batches
    accum_steps: int = 1  # micro-batches per step (gradient accumulation): batch_size / (processes * this) each
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = False  # weight decay on BN parameters and biases too
    schedule: str = "cosine"
    milestones: List[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of training
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: str = "crop-flip"
    pad: int = 4
    erase: float = 0.0  # random-erasing probability per training image (Zhong et al. 2017)
    # Progressive resizing: training images start at this side length (0: off) and grow to the full
    # size over the progressive_ramp fractions of training. Evaluation is always at the full size.
    progressive_min_size: int = 0
    progressive_ramp: List[float] = field(default_factory=lambda: [0.25, 0.75])
    # InfoBatch (Qin et al. 2024), small datasets: each pass skips, with this probability, each sample whose
    # last training loss is below the mean (the easy ones it keeps weigh 1 / (1 - prune_easy) in the loss),
    # until prune_until of the training steps; `epochs` stays the budget of steps, spread over more passes.
    prune_easy: float = 0.0
    prune_until: float = 0.875
    clip_grad_norm: float = 0.0
    ema_decay: float = 0.0  # 0: no EMA of weights
    flip_tta: bool = False  # evaluate on each image and its mirror, averaging the logits
    shift_tta: bool = False  # also average in the four 1-pixel shifts of each test view (10 views with flip_tta)
    eval_every: int = 1  # evaluate after every N-th epoch (and always after the last)

    precision: str = "bf16"
    channels_last: bool = True
    compile: bool = False
    cuda_graphs: bool = False  # replay each training step's forward and backward as a CUDA graph (CUDA only)
    checkpoint_activations: bool = False  # recompute activations in backward: far less memory, ~1/3 more time
    device: str = "auto"  # under torchrun, each process takes the GPU of its LOCAL_RANK
    sync_bn: bool = False  # under torchrun on GPUs: batch-norm statistics over the global batch (SyncBatchNorm)
    dist_timeout: float = 300.0  # seconds a process waits for the others before failing with an error
    threads: int = 0  # CPU threads (0: torch's default)
    seed: int = 0
    deterministic: bool = False

    out: str = "runs"
    name: str = ""
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints (0: once per epoch)
    stop_after_steps: int = 0  # stop (as if interrupted) after this many steps; resume continues
    quiet: bool = False
    tensorboard: bool = False

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (for TOML, JSON and checkpoints)."""
        return dataclasses.asdict(self)


# Fashion-MNIST default: resnet14 for 7 epochs of one-cycle SGD with label smoothing, flips and the mirror at
# test time, which reaches 93% after 244 s and ends at 93.65% on a 2-core AMD EPYC
# (benchmarks/results/time_to_accuracy-default.json).
# No random crops: in 7 epochs they end 0.81 points lower, at 92.84% (time_to_accuracy-resnet14-crop-flip-7ep.json).
# Batch 128: a batch of 64 (lr 0.05) trains at 11% fewer images/s for +0.22 points
# (time_to_accuracy-resnet14-crop-flip-batch64-7ep.json against time_to_accuracy-resnet14-crop-flip-7ep.json).
_FASHION_DEFAULT: Dict[str, Any] = dict(model="resnet14", epochs=7, batch_size=128, lr=0.1, weight_decay=5e-4,
                                        schedule="onecycle", label_smoothing=0.1, augment="flip", flip_tta=True,
                                        pad=2, precision="bf16")

# Named presets: the keys each sets over the dataclass defaults.
RECIPES: Dict[str, Dict[str, Any]] = {
    "default": _FASHION_DEFAULT,
    # 93% sooner: the stages at half the side (a max-pool after the stem) and twice the width, which costs what
    # resnet14 costs per image and learns more per epoch; 5 epochs at lr 0.2 with Nesterov momentum reached 93% at
    # the last epoch with every seed timed (93.59%, 93.16%, 93.29% after 200, 220 and 184 s), where the default
    # reached it after 245 s on the same machine (benchmarks/results/time_to_accuracy-fast-seed{0,1,2}.json,
    # time_to_accuracy-default-rerun.json). The previous fast recipe, the default one epoch shorter, ended at
    # 93.07% (time_to_accuracy-default-6ep.json). Four epochs ended at 93.09% (seed 0), three at 92.41% to 92.70%;
    # resnet14 with progressive resizing from 16 pixels ended 4 epochs at 91.08%, below 3 epochs without it (91.94%)
    # (time_to_accuracy-default-*ep*.json).
    "fast": dict(_FASHION_DEFAULT, model_options=dict(widths=[32, 64, 128], stem_pool=True), epochs=5, lr=0.2,
                 nesterov=True),
    # The best accuracy measured within 30 minutes on 2 CPU cores: 95% with every seed timed, after 1219, 1047 and
    # 1076 s, ending at 95.03%, 95.10% and 95.18% (benchmarks/results/time_to_accuracy-accurate-seed{0,1,2}.json).
    # resnet20 with pad-2 crops and random erasing p 0.25, the best of p 0, 0.25 and 0.5 at full size (94.83%,
    # 94.89%, 94.70%: time_to_accuracy-accurate-32ep-eval4-erase0.json, -erase025.json and
    # time_to_accuracy-accurate-32ep-eval4.json).
    # Progressive resizing from 16 pixels, because 44 epochs of it cost what 30.63 full-size epochs cost
    # (progressive_resize.json) and lifted the full-size plateau from 94.89% to 95.01%
    # (time_to_accuracy-accurate-44ep-prog16.json).
    # Easy samples pruned (the same 20,592 steps over ~72 shorter passes), because unpruned the same steps ended at
    # 95.02%, 94.96% and 94.85% with seeds 0, 1 and 2 (time_to_accuracy-accurate-unpruned-seed0.json,
    # time_to_accuracy-accurate-44ep-prog16-seed{1,2}.json, the last two scored on the mirror only).
    # Evaluated every 18th pass on 10 views (mirror and 1-pixel shifts): 4 evaluations, as when the unpruned
    # recipe evaluated every 11th epoch and ended at 95.02% after 1712 s
    # (time_to_accuracy-accurate-44ep-prog16-shift-tta.json).
    "accurate": dict(_FASHION_DEFAULT, model="resnet20", epochs=44, augment="crop-flip", erase=0.25,
                     progressive_min_size=16, shift_tta=True, prune_easy=0.5, eval_every=18),
    # He et al. 2015, section 4.2: 64k iterations, lr /10 at 32k and 48k, 45k/5k split.
    "paper-cifar": dict(model="resnet20", data="cifar10", iterations=64000, batch_size=128, lr=0.1,
                        momentum=0.9, weight_decay=1e-4, decay_norm_and_bias=True,
                        schedule="multistep", milestones=[0.5, 0.75], gamma=0.1, pad=4,
                        val_split=0.1, precision="fp32", label_smoothing=0.0),
    # CIFAR-10 on a CPU in minutes: resnet20, one-cycle, label smoothing, 4-pixel crops and flips, the mirror
    # averaged in at test time, bf16, 15 epochs on the paper's 45k/5k split: 84.98% validation accuracy after
    # 548 s on the JPEG training folder, 2-core Xeon (time_to_accuracy-cifar-fast.json).
    "cifar-fast": dict(_FASHION_DEFAULT, model="resnet20", data="cifar10", epochs=15, augment="crop-flip", pad=4,
                       val_split=5000, image_size=32, eval_every=5),
    # Fine-tuning pretrained weights (the model's default ones unless --weights names others) on a small image
    # folder: the classifier alone for the first epoch, then everything with the backbone at a tenth of the lr.
    # Measured from the CIFAR-10 ResNet-20 on 100 Fashion-MNIST images per class (500 steps, 3 seeds): this recipe
    # 80.18%, the same with every layer at the full lr (--freeze-epochs 0 --backbone-lr-mult 1) 85.35%, from
    # scratch 83.18%: data unlike the weights' own needs the full lr (benchmarks/results/finetune.json). Near the
    # weights' own data (five Fashion-MNIST classes from weights trained on the other five, 100 per class) this
    # recipe 93.70%, every layer at the full lr 94.90%, scratch 93.60% (benchmarks/results/finetune-near.json).
    "finetune": dict(weights="default", epochs=8, batch_size=64, lr=0.05, weight_decay=1e-4, schedule="cosine",
                     label_smoothing=0.1, freeze_epochs=1, backbone_lr_mult=0.1, augment="crop-flip", pad=2),
    # ResNet v1.5 style ImageNet recipe: SGD, cosine, warmup, label smoothing. The data is the
    # image folder "imagenet" under the data roots (train/ and val/ inside), or --data PATH.
    "imagenet": dict(model="resnet50", data="imagenet", epochs=90, batch_size=256, lr=0.1, momentum=0.9,
                     nesterov=False, weight_decay=1e-4, schedule="cosine", warmup_epochs=5,
                     label_smoothing=0.1, model_options=dict(zero_init_residual=True)),
}

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value: Any) -> Any:
    """Check and convert one value to the type of the field it sets."""
    default = getattr(TrainConfig(), key)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"config key {key} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key {key} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key {key} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {key} must be a list, got {value!r}")
        return [float(v) for v in value]
    if isinstance(default, dict):
        if not isinstance(value, Mapping):
            raise ValueError(f"config key {key} must be a table, got {value!r}")
        return dict(value)
    if value is not None and not isinstance(value, str):  # str or Optional[str]
        raise ValueError(f"config key {key} must be a string, got {value!r}")
    return value


def apply_overrides(config: TrainConfig, overrides: Mapping[str, Any], source: str) -> TrainConfig:
    """A copy of ``config`` with ``overrides`` applied; unknown keys are errors naming ``source``.

    Tables (``model_options``) are merged key by key into the ones already set."""
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)} in {source}; "
                         f"accepted: {', '.join(FIELDS)}")
    values = {key: _coerce(key, value) for key, value in overrides.items()}
    for key, value in values.items():
        if isinstance(value, dict):  # model_options: a table adds to the options set before it
            values[key] = {**getattr(config, key), **value}
    return dataclasses.replace(config, **values)


def load_toml(path: str | Path) -> Dict[str, Any]:
    """Read a TOML config file (flat keys; model_options as a table)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {path} is not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ValueError(f"config file {path} is not valid TOML: it is not UTF-8 text") from None


def resolve_config(recipe: str = "default", config_file: Optional[str | Path] = None,
                   overrides: Optional[Mapping[str, Any]] = None) -> TrainConfig:
    """Defaults, then the recipe, then the TOML file, then explicit overrides."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; accepted: {', '.join(RECIPES)}")
    config = apply_overrides(TrainConfig(), RECIPES[recipe], f"recipe {recipe}")
    if config_file:
        config = apply_overrides(config, load_toml(config_file), str(config_file))
    if overrides:
        config = apply_overrides(config, overrides, "the command line")
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Reject impossible values with one line naming the value and what is accepted."""
    largest_batch, largest_image, largest_pad = ceiling("batch_size"), ceiling("image_size"), ceiling("pad")
    checks = [
        (1 <= config.batch_size <= largest_batch,
         f"batch_size must be from 1 to {largest_batch:,}, got {config.batch_size}"
         f"{over_ceiling('batch_size', config.batch_size)}"),
        (config.epochs >= 1 or config.iterations >= 1,
         f"epochs must be >= 1 (or iterations > 0), got {config.epochs}"),
        (config.iterations >= 0, f"iterations must be >= 0, got {config.iterations}"),
        (math.isfinite(config.lr) and config.lr > 0, f"lr must be a positive number, got {config.lr}"),
        (config.weight_decay >= 0, f"weight_decay must be >= 0, got {config.weight_decay}"),
        (0 <= config.momentum < 1, f"momentum must be in [0, 1), got {config.momentum}"),
        (config.optimizer in OPTIMIZERS,
         f"unknown optimizer {config.optimizer!r}; accepted: {', '.join(OPTIMIZERS)}"),
        (config.schedule in SCHEDULES,
         f"unknown schedule {config.schedule!r}; accepted: {', '.join(SCHEDULES)}"),
        (config.precision in PRECISIONS,
         f"unknown precision {config.precision!r}; accepted: {', '.join(PRECISIONS)}"),
        (all(0 < m < 1 for m in config.milestones),
         f"milestones are fractions of training in (0, 1), got {config.milestones}"),
        (math.isfinite(config.gamma) and config.gamma > 0,
         f"gamma (the multistep lr factor) must be a positive number, got {config.gamma}"),
        (0 <= config.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {config.label_smoothing}"),
        (0 <= config.ema_decay < 1, f"ema_decay must be in [0, 1), got {config.ema_decay}"),
        (config.val_split == 0 or 0 < config.val_split < 1 or (config.val_split >= 1 and
                                                                float(config.val_split).is_integer()),
         f"val_split must be a fraction in (0, 1) or a whole count of samples, got {config.val_split}"),
        (config.cache_budget_gb >= 0, f"cache_budget_gb must be >= 0 (0: a quarter of RAM), got "
                                      f"{config.cache_budget_gb}"),
        (math.isfinite(config.warmup_epochs) and config.warmup_epochs >= 0,
         f"warmup_epochs must be a number >= 0, got {config.warmup_epochs}"),
        (config.checkpoint_every >= 0,
         f"checkpoint_every must be >= 0 (0: once per epoch), got {config.checkpoint_every}"),
        (config.stop_after_steps >= 0, f"stop_after_steps must be >= 0 (0: never), got {config.stop_after_steps}"),
        (config.image_size == 0 or MIN_IMAGE_SIZE <= config.image_size <= largest_image,
         f"image_size must be 0 (automatic) or from {MIN_IMAGE_SIZE} to {largest_image:,} pixels, "
         f"got {config.image_size}{over_ceiling('image_size', config.image_size)}"),
        (config.freeze_epochs >= 0, f"freeze_epochs must be >= 0, got {config.freeze_epochs}"),
        (config.freeze_epochs == 0 or config.weights,
         "freeze_epochs keeps pretrained weights fixed and needs weights to start from (--weights NAME or FILE)"),
        (math.isfinite(config.backbone_lr_mult) and 0 < config.backbone_lr_mult <= 1000,
         f"backbone_lr_mult must be a number in (0, 1000], got {config.backbone_lr_mult}"),
        (0 <= config.pad <= largest_pad,
         f"pad must be from 0 to {largest_pad} pixels, got {config.pad}{over_ceiling('pad', config.pad)}"),
        (config.workers >= 0 and config.threads >= 0,
         f"workers and threads must be >= 0, got {config.workers} and {config.threads}"),
        (not {"num_classes", "in_chans"} & set(config.model_options),
         "num_classes and in_chans come from the data; drop them from the model options (-o)"),
        (config.clip_grad_norm >= 0, f"clip_grad_norm must be >= 0, got {config.clip_grad_norm}"),
        (config.train_subset >= 0 and config.test_subset >= 0, "train_subset and test_subset must be >= 0"),
        (0 <= config.erase <= 1, f"erase (a probability) must be in [0, 1], got {config.erase}"),
        (config.progressive_min_size == 0 or config.progressive_min_size >= 4,
         f"progressive_min_size must be 0 (off) or a side length >= 4, got {config.progressive_min_size}"),
        (len(config.progressive_ramp) == 2 and 0 <= config.progressive_ramp[0] <= config.progressive_ramp[1] <= 1,
         f"progressive_ramp must be [start, end] with 0 <= start <= end <= 1, got {config.progressive_ramp}"),
        (0 <= config.prune_easy < 1, f"prune_easy (a probability) must be in [0, 1), got {config.prune_easy}"),
        (0 <= config.prune_until <= 1,
         f"prune_until (a fraction of training) must be in [0, 1], got {config.prune_until}"),
        (config.eval_every >= 1, f"eval_every must be >= 1 (epochs), got {config.eval_every}"),
        (config.accum_steps >= 1, f"accum_steps must be >= 1, got {config.accum_steps}"),
        (config.accum_steps < 1 or config.batch_size % config.accum_steps == 0,
         f"batch_size {config.batch_size} must be a multiple of accum_steps {config.accum_steps}"),
        (not config.name or (config.name == Path(config.name).name and config.name not in (".", "..")
                             and "\\" not in config.name),
         f"name must be a plain folder name (created under out), got {config.name!r}"),
        (config.dist_timeout > 0, f"dist_timeout must be a positive number of seconds, got {config.dist_timeout}"),
        (not (config.compile and config.checkpoint_activations),
         "compile and checkpoint_activations cannot be combined (torch.compile rejects the recomputation "
         "context that keeps batch-norm statistics right); choose one"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def to_toml(config: TrainConfig) -> str:
    """The config as TOML that ``load_toml`` reads back to the same values."""
    lines: List[str] = []
    tables: List[str] = []
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            tables.append(f"\n[{key}]")
            tables.extend(f"{k} = {_toml_value(v)}" for k, v in value.items())
        elif value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines + tables) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")
