"""Command-line arguments of CACMI training: data, model and the Trainer's arguments with the recipe's defaults.

Three dataclasses for `transformers.HfArgumentParser`. `DenseCaptioningTrainingArguments` is the
Trainer's `TrainingArguments` with the DESIGN §7 recipe as defaults (Adam lr 5e-5, weight decay 1e-4,
gradient clip 100, 30 epochs, lr halved every 3 epochs from epoch 8) and the settings this model
needs (`remove_unused_columns=False`, tensor labels, evaluation and best-checkpoint selection every
epoch). `build_parser` applies a preset's defaults before parsing, so anything on the command line
wins over the preset.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

from transformers import HfArgumentParser, TrainingArguments

from ..configuration_cacmi import VARIANTS
from ..evaluation.protocols import DEFAULT_PROTOCOL, PROTOCOLS, check_protocol
from .presets import TRAINING_PRESETS, get_training_preset

LABEL_NAMES = ["event_segments", "event_mask", "caption_ids"]


@dataclass
class DataArguments:
    """Where the annotations, features, memory bank and caption vocabulary come from, and which splits do what."""

    preset: str = field(
        default="activitynet",
        metadata={"help": f"Benchmark preset ({', '.join(TRAINING_PRESETS)}): model sizes, recipe and splits."},
    )
    annotations: list[str] = field(
        default_factory=list,
        metadata={"help": "Annotation sources: files (train.json val_1.json ...), a folder, or a hub dataset id."},
    )
    features: str | None = field(
        default=None,
        metadata={"help": "Frame features: a folder of <video_id>.npy, a .pt/.pth dict, or a saved datasets folder."},
    )
    memory_bank: str | None = field(
        default=None, metadata={"help": "Memory-bank folder written by `cacmi build-memory` (needed with CFA)."}
    )
    tokenizer: str | None = field(
        default=None,
        metadata={"help": "Caption tokenizer folder (`cacmi build-vocab`); default: built from the training captions."},
    )
    min_count: int = field(default=2, metadata={"help": "Vocabulary: keep words seen this often in training captions."})
    caption_normalization: str = field(
        default="reference",
        metadata={"help": "Vocabulary: 'reference' (PDVC/CM2: only , : ! _ ; - . ? / \" \\ become spaces) or "
                  "'punctuation' (every punctuation mark becomes a space)."},
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Held-out split for checkpoint selection; default: `holdout_videos` videos carved from train."},
    )
    holdout_videos: int = field(
        default=500, metadata={"help": "Videos held out of the train split for selection when eval_split is unset."}
    )
    test_splits: list[str] = field(
        default_factory=list,
        metadata={"help": "Splits scored once at the end with the best model; 'val_1+val_2' scores the union of "
                  "the videos against both reference sets (the ActivityNet protocol)."},
    )
    max_train_videos: int | None = field(default=None, metadata={"help": "Use only the first N training videos."})
    max_eval_videos: int | None = field(default=None, metadata={"help": "Use only the first N held-out videos."})
    missing_features: str = field(
        default="error", metadata={"help": "'error': a video without features stops the run; 'skip': drop it."}
    )
    clip: str | None = field(
        default=None,
        metadata={"help": "open_clip model (name or local-dir folder) that made the features; the saved model then "
                  "carries its image tower and captions raw videos."},
    )
    clip_pretrained: str | None = field(default=None, metadata={"help": "Weights of --clip (file or folder)."})
    video_fps: float = field(default=1.0, metadata={"help": "Frame rate the features were extracted at."})


@dataclass
class ModelArguments:
    """Which model to build (or start from) and which switches to flip."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from these weights (a saved folder or hub id) instead of from scratch."}
    )
    variant: str = field(
        default="cacmi",
        metadata={"help": f"Model variant: {', '.join(VARIANTS)} (ablations: pdvc = no CFA/CFE, cm2 = window retrieval)."},
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Comma-separated CACMIConfig overrides, e.g. 'hidden_size=256,num_queries=20'."}
    )
    event_count: str = field(
        default="argmax",
        metadata={"help": "How the event counter's logits give the number of events kept when evaluating and in the "
                  "saved processor: 'argmax' (PDVC) or 'expected' (the mean count; see benchmarks/bench_post_processing.py)."},
    )


@dataclass
class DenseCaptioningTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the CM2/PDVC recipe as defaults, plus the schedule and evaluation settings."""

    output_dir: str | None = field(default="cacmi-output", metadata={"help": "Checkpoints and the final model."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Adam learning rate [CM2]."})
    weight_decay: float = field(default=1e-4, metadata={"help": "L2 weight decay [CM2]."})
    weight_decay_scope: str = field(
        default="all",
        metadata={"help": "'all': decay every parameter, as PDVC/CM2's torch.optim.Adam(model.parameters(), "
                  "weight_decay=...); 'weights': the Trainer's rule (no decay on biases and norm layers)."},
    )
    max_grad_norm: float = field(default=100.0, metadata={"help": "Gradient clipping norm [CM2]."})
    num_train_epochs: float = field(default=30.0, metadata={"help": "Training epochs [CM2]."})
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Videos per device and step (any size)."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Videos per device when generating."})
    lr_decay_start: int = field(default=8, metadata={"help": "First epoch (0-based) with a halved learning rate."})
    lr_decay_every: int = field(default=3, metadata={"help": "Epochs between halvings."})
    lr_decay_rate: float = field(default=0.5, metadata={"help": "Factor applied at each halving."})
    lr_schedule: str = field(
        default="step_halving",
        metadata={"help": "'step_halving' (the recipe) or 'transformers' (use --lr_scheduler_type)."},
    )
    recipe_optimizer: bool = field(
        default=True,
        metadata={"help": "Adam with L2 weight decay as in PDVC/CM2 (torch.optim.Adam); False uses --optim."},
    )
    eval_generation: str = field(
        default="sharded",
        metadata={"help": "'sharded': every process captions its share of the held-out videos (results gathered); "
                  "'main': the main process captions all of them while the others wait at a barrier. Under "
                  "FSDP/ZeRO-3 the full weights are gathered into a plain replica first."},
    )
    eval_tious: list[float] = field(
        default_factory=lambda: [0.3, 0.5, 0.7, 0.9], metadata={"help": "tIoU thresholds of the caption metrics."}
    )
    eval_protocol: str = field(
        default=DEFAULT_PROTOCOL,
        metadata={"help": f"densevid evaluator version of the caption metrics: one of {', '.join(PROTOCOLS)} "
                  "(evaluate2018.py, evaluate2021.py, evaluate2018_cider.py; see cacmi evaluate --protocol)."},
    )
    eval_no_java: bool = field(
        default=False, metadata={"help": "Score without Java: no METEOR/SODA_c (numbers not comparable to papers)."}
    )
    eval_soda: bool = field(default=True, metadata={"help": "Compute SODA_c during evaluation."})
    eval_compute_loss: bool = field(default=True, metadata={"help": "Also report the teacher-forced eval_loss."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Must stay False: the collator needs every column."})
    label_names: list[str] | None = field(default_factory=lambda: list(LABEL_NAMES))
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate (no, steps, epoch)."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to save a checkpoint (no, steps, epoch, best)."})
    logging_steps: float = field(default=50, metadata={"help": "Log the training loss every N steps."})
    load_best_model_at_end: bool = field(default=True, metadata={"help": "End with the best held-out checkpoint."})
    metric_for_best_model: str | None = field(
        default="score", metadata={"help": "Selection metric: 'score' = METEOR + SODA_c (PDVC's rule), or any eval metric."}
    )
    greater_is_better: bool | None = field(default=True)
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (the best one is always kept)."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Loggers (tensorboard, wandb, ...)."})
    ddp_broadcast_buffers: bool | None = field(
        default=False,
        metadata={"help": "The memory bank is a (large) buffer, identical on every process: do not re-broadcast it."},
    )
    time_budget_minutes: float | None = field(
        default=None,
        metadata={"help": "Wall-clock budget of training: stop at the end of the epoch after which one more epoch "
                  "(with its evaluation) would overrun it; the schedule stays that of --num_train_epochs."},
    )

    def __post_init__(self):
        try:  # a typo fails here, not after the first epoch
            check_protocol(self.eval_protocol)
        except ValueError as err:
            raise ValueError(f"--eval_protocol: {err}") from None
        if self.lr_schedule not in ("step_halving", "transformers"):
            raise ValueError(f"--lr_schedule must be 'step_halving' or 'transformers', got {self.lr_schedule!r}.")
        if self.weight_decay_scope not in ("all", "weights"):
            raise ValueError(f"--weight_decay_scope must be 'all' or 'weights', got {self.weight_decay_scope!r}.")
        if self.eval_generation not in ("sharded", "main"):
            raise ValueError(f"--eval_generation must be 'sharded' or 'main', got {self.eval_generation!r}.")
        if self.remove_unused_columns:
            raise ValueError(
                "--remove_unused_columns must be False for CACMI: the collator reads video_id, duration, timestamps, "
                "sentences and video_features, which the model's forward does not name."
            )
        if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
            raise ValueError(f"--time_budget_minutes must be > 0 (or unset for no budget), got {self.time_budget_minutes}.")
        if self.eval_no_java and self.metric_for_best_model in ("score", "METEOR", "eval_METEOR", "SODA_c", "eval_SODA_c"):
            raise ValueError(
                f"--eval_no_java computes no METEOR/SODA_c, so --metric_for_best_model {self.metric_for_best_model} "
                "cannot be used; pick e.g. CIDEr or F1, or install Java."
            )
        super().__post_init__()


def parse_config_overrides(text: str | None) -> dict[str, Any]:
    """'a=1,b=true,c=0.5,d=none' -> {'a': 1, 'b': True, 'c': 0.5, 'd': None} (JSON-like scalars)."""
    import json

    overrides: dict[str, Any] = {}
    if not text:
        return overrides
    for item in text.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise ValueError(f"--config_overrides item {item!r} is not key=value (e.g. 'hidden_size=256').")
        key, value = (part.strip() for part in item.split("=", 1))
        lowered = value.lower()
        if lowered in ("true", "false"):
            overrides[key] = lowered == "true"
        elif lowered in ("none", "null"):
            overrides[key] = None
        else:
            try:
                overrides[key] = json.loads(value)
            except json.JSONDecodeError:
                overrides[key] = value
    return overrides


def build_parser(preset: str | None = None) -> HfArgumentParser:
    """HfArgumentParser over the three dataclasses, with `preset`'s defaults applied."""
    parser = HfArgumentParser((DataArguments, ModelArguments, DenseCaptioningTrainingArguments))
    if preset is not None:
        chosen = get_training_preset(preset)
        parser.set_defaults(preset=preset, **chosen.training, **chosen.data, **chosen.model)
    return parser


def parse_args(
    argv: Sequence[str] | None = None,
) -> tuple[DataArguments, ModelArguments, DenseCaptioningTrainingArguments]:
    """Parse `argv` (default sys.argv): first `--preset`, then everything else on top of its defaults."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        # a config file: the preset it names sets the defaults, its values win
        import json

        import yaml  # noqa: F401  (HfArgumentParser needs it for yaml)

        path = argv[0]
        values = json.load(open(path)) if path.endswith(".json") else yaml.safe_load(open(path))
        parser = build_parser(values.get("preset", "activitynet"))
        return parser.parse_dict(values)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--preset", default="activitynet")
    known, _ = first.parse_known_args(argv)
    parser = build_parser(known.preset)
    return parser.parse_args_into_dataclasses(argv)


__all__ = [
    "LABEL_NAMES",
    "VARIANTS",
    "DataArguments",
    "DenseCaptioningTrainingArguments",
    "ModelArguments",
    "build_parser",
    "parse_args",
    "parse_config_overrides",
]
