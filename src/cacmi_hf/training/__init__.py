"""Training CACMI with the transformers Trainer and Accelerate: recipe, presets, pre-flight checks, evaluation."""

from .arguments import (
    LABEL_NAMES,
    VARIANTS,
    DataArguments,
    DenseCaptioningTrainingArguments,
    ModelArguments,
    build_parser,
    parse_args,
    parse_config_overrides,
)
from .budget import TimeBudgetCallback
from .checks import TrainingSetupError
from .presets import TRAINING_PRESETS, TrainingPreset, get_training_preset
from .run import TrainingRun, TrainingSetup, build_trainer, prepare_training, train
from .scheduler import get_step_halving_schedule, halving_factor, halving_milestones
from .trainer import DenseCaptioningTrainer, flatten_scores, references_from_dataset

__all__ = [
    "LABEL_NAMES",
    "TRAINING_PRESETS",
    "VARIANTS",
    "DataArguments",
    "DenseCaptioningTrainer",
    "DenseCaptioningTrainingArguments",
    "ModelArguments",
    "TrainingPreset",
    "TrainingRun",
    "TrainingSetup",
    "TimeBudgetCallback",
    "TrainingSetupError",
    "build_parser",
    "build_trainer",
    "flatten_scores",
    "get_step_halving_schedule",
    "get_training_preset",
    "halving_factor",
    "halving_milestones",
    "parse_args",
    "parse_config_overrides",
    "prepare_training",
    "references_from_dataset",
    "train",
]
