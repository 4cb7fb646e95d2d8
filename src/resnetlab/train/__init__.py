"""Training: config and recipes, the loop, optimizers and schedules, checkpoints."""

from .config import RECIPES, TrainConfig, resolve_config
from .engine import TrainingDiverged, evaluate, train_steps
from .run import Trainer, resume, train

__all__ = ["RECIPES", "TrainConfig", "Trainer", "TrainingDiverged", "evaluate", "resolve_config", "resume",
           "train", "train_steps"]
