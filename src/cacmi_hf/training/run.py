"""From arguments to a trained, saved captioner: data, vocabulary, config, memory bank, model, processor, Trainer.

`prepare_training` does everything up to the first step (and runs every pre-flight check), so a bad
set-up fails in seconds; `build_trainer` wraps the result in a `DenseCaptioningTrainer`; `train` runs
training, keeps the best held-out checkpoint, saves a folder that `from_pretrained` and
`pipeline("dense-video-captioning", model=folder)` load (model with its memory bank, processor with
the caption tokenizer), and scores the test splits. `examples/train.py` and `cacmi demo` are thin
layers over these three functions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from transformers.trainer_utils import IntervalStrategy

from ..configuration_cacmi import CACMIConfig
from .arguments import VARIANTS, DataArguments, DenseCaptioningTrainingArguments, ModelArguments, parse_config_overrides
from .budget import TimeBudgetCallback
from .checks import (
    TrainingSetupError,
    check_feature_dim,
    check_memory_bank,
    check_same_vocabulary,
    check_splits,
    check_tokenizer,
)
from .presets import get_training_preset
from .trainer import DenseCaptioningTrainer, references_from_dataset

logger = logging.getLogger(__name__)

RESULTS_NAME = "results.json"


@dataclass
class TestSet:
    """Videos to score at the end and the reference set(s) to score them against."""

    name: str
    dataset: Any
    references: list[dict[str, Any]]


@dataclass
class TrainingSetup:
    """Everything `build_trainer` needs, checked."""

    config: CACMIConfig
    model: Any
    processor: Any
    tokenizer: Any
    train_dataset: Any
    eval_dataset: Any
    test_sets: list[TestSet]
    train_collator: Any
    eval_collator: Any
    memory_bank: Any = None
    notes: list[str] = field(default_factory=list)


def load_annotations(data_args: DataArguments):
    """The annotation `DatasetDict` of `data_args.annotations` with the preset's loader (YouCook2 adds the v_ prefix)."""
    from ..data import load_dense_captions, load_youcook2

    if not data_args.annotations:
        raise TrainingSetupError("No --annotations given: pass the annotation files (train.json val_1.json ...), a folder or a hub id.")
    source = data_args.annotations[0] if len(data_args.annotations) == 1 else list(data_args.annotations)
    loader = load_youcook2 if data_args.preset == "youcook2" else load_dense_captions
    return loader(source)


def _take(dataset: Any, count: int | None) -> Any:
    """The first `count` rows (all when None)."""
    return dataset if count is None or count >= len(dataset) else dataset.select(range(count))


def _split(annotations: Any, name: str, role: str) -> Any:
    """One split by name, or an error listing the available ones."""
    if name not in annotations:
        raise TrainingSetupError(
            f"The {role} split {name!r} is not in the annotations (splits: {list(annotations)}); set --{role}_split "
            "to one of them."
        )
    return annotations[name]


def _feature_dim(features: Any, video_ids: list[str]) -> int | None:
    """D of the first stored feature array among `video_ids` (None when none is stored; the full check comes later)."""
    from ..data.features import open_feature_store

    store = open_feature_store(features)
    for vid in video_ids[:50]:
        key = store.resolve(vid)
        if key is not None:
            shape = store.check(key)
            return int(shape[-1])
    return None


def _union(datasets: list[Any]) -> Any:
    """Rows of several splits, each video once (val_1 and val_2 share their videos)."""
    from datasets import concatenate_datasets

    merged = concatenate_datasets(datasets) if len(datasets) > 1 else datasets[0]
    seen: set[str] = set()
    keep = []
    for i, vid in enumerate(merged["video_id"]):
        if vid not in seen:
            seen.add(vid)
            keep.append(i)
    return merged.select(keep) if len(keep) < len(merged) else merged


def _load_tokenizer(path: str):
    """A saved caption tokenizer (folder), with a clear error when the folder has none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise TrainingSetupError(f"Could not load a caption tokenizer from {path}: {err}. Save one with `cacmi build-vocab`.") from err


def _build_config(model_args, overrides, preset, tokenizer, feature_dim, train_dataset) -> CACMIConfig:
    """The config of a model trained from scratch: preset + variant + (parsed) overrides, sized from the data."""
    from ..criterion import estimate_count_prior

    values = preset.model_config(model_args.variant)
    values.update(overrides)
    if feature_dim is not None and "feature_dim" not in overrides:
        values["feature_dim"] = feature_dim  # sized from the data, like vocab_size from the tokenizer
    values["vocab_size"] = len(tokenizer)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id"):
        if getattr(tokenizer, name, None) is not None:
            values[name] = getattr(tokenizer, name)
    try:
        config = CACMIConfig(**values)
    except (TypeError, ValueError) as err:
        raise TrainingSetupError(f"Invalid model configuration ({err}); check --config_overrides.") from err
    if "count_prior" not in overrides:
        counts = [len(t) for t in train_dataset.with_format(None)["timestamps"]]
        config.count_prior = estimate_count_prior(counts, config.max_event_count)
    return config


def prepare_training(
    data_args: DataArguments, model_args: ModelArguments, training_args: DenseCaptioningTrainingArguments
) -> TrainingSetup:
    """Load and check data, vocabulary, memory bank and model; raise `TrainingSetupError` before any training."""
    from transformers.utils import cached_file

    from ..data import DenseCaptioningCollator, attach_features, build_caption_tokenizer, load_memory_bank
    from ..modeling_cacmi import CACMIForDenseCaptioning
    from ..processing_cacmi import CACMIProcessor, CACMIVideoProcessor

    # the arguments, read once and checked before any data is loaded
    preset = get_training_preset(data_args.preset)
    try:
        overrides = parse_config_overrides(model_args.config_overrides)
    except ValueError as err:
        raise TrainingSetupError(str(err)) from err
    if not model_args.model_name_or_path and model_args.variant not in VARIANTS:
        raise TrainingSetupError(f"Unknown --variant {model_args.variant!r}; choose one of {sorted(VARIANTS)}.")
    notes: list[str] = []
    annotations = load_annotations(data_args)
    source = ", ".join(map(str, data_args.annotations))

    # splits: train, held-out selection split, test sets
    train = _take(_split(annotations, data_args.train_split, "train"), data_args.max_train_videos)
    if data_args.eval_split:
        eval_dataset = _split(annotations, data_args.eval_split, "eval")
    elif data_args.holdout_videos > 0:
        if data_args.holdout_videos >= len(train):
            raise TrainingSetupError(
                f"--holdout_videos {data_args.holdout_videos} leaves nothing to train on ({len(train)} training videos)."
            )
        parts = train.train_test_split(test_size=data_args.holdout_videos, seed=training_args.seed, shuffle=True)
        train, eval_dataset = parts["train"], parts["test"]
        notes.append(f"held out {len(eval_dataset)} training videos for checkpoint selection")
    else:
        eval_dataset = None
    if eval_dataset is not None:
        eval_dataset = _take(eval_dataset, data_args.max_eval_videos)
    test_sets = []
    for name in data_args.test_splits:
        parts = [_split(annotations, part, "test") for part in name.split("+")]
        test_sets.append(TestSet(name, _union(parts), [references_from_dataset(p) for p in parts]))
    check_splits({"train": train, "eval": eval_dataset, **{f"test ({t.name})": t.dataset for t in test_sets}}, source)

    # features: their size D decides the model's input size
    if data_args.features is None:
        raise TrainingSetupError("No --features given: extract them with `cacmi extract-features` and pass the folder.")
    feature_dim = _feature_dim(data_args.features, train["video_id"])

    # caption tokenizer and config
    model_source = model_args.model_name_or_path
    if model_source:
        config = CACMIConfig.from_pretrained(model_source)
        for key, value in overrides.items():
            setattr(config, key, value)
        saved_tokenizer = None
        if cached_file(model_source, "tokenizer.json", _raise_exceptions_for_missing_entries=False) is not None:
            saved_tokenizer = _load_tokenizer(model_source)
        tokenizer = _load_tokenizer(data_args.tokenizer) if data_args.tokenizer else saved_tokenizer
        if tokenizer is None:
            raise TrainingSetupError(
                f"The checkpoint {model_source} has no caption tokenizer; pass --tokenizer with the one it was trained with."
            )
        check_tokenizer(tokenizer, config, data_args.tokenizer or model_source, model_source)
        if saved_tokenizer is not None and data_args.tokenizer:
            check_same_vocabulary(tokenizer, saved_tokenizer, data_args.tokenizer, model_source)
        if feature_dim is not None:
            check_feature_dim(feature_dim, config, data_args.features)
    else:
        if data_args.tokenizer:
            tokenizer = _load_tokenizer(data_args.tokenizer)
        else:
            sentences = [s for row in train.with_format(None)["sentences"] for s in row]
            max_len = overrides.get("max_caption_len", preset.config.get("max_caption_len", 30))
            tokenizer = build_caption_tokenizer(sentences, min_count=data_args.min_count, max_caption_len=max_len,
                                                normalization=data_args.caption_normalization)
        config = _build_config(model_args, overrides, preset, tokenizer, feature_dim, train)
        check_tokenizer(tokenizer, config, data_args.tokenizer or "built from the training captions", "being built")

    # memory bank (CFA), without the captions of videos held out for selection
    bank = None
    if config.use_cfa:
        if data_args.memory_bank is None:
            check_memory_bank(None, config, None)
        bank = load_memory_bank(data_args.memory_bank)
        if eval_dataset is not None and not data_args.eval_split:
            bank = _without_videos(bank, set(eval_dataset["video_id"]))
        check_memory_bank(bank, config, data_args.memory_bank, train["video_id"])
        if not model_source:
            config.memory_size = bank.num_entries

    # model (+ the CLIP image tower, so the saved folder captions raw videos) and processor; seeded first,
    # so the initial weights depend on --seed alone, not on what the caller did with the global RNG
    from transformers import set_seed

    set_seed(training_args.seed)
    if model_source:
        model = CACMIForDenseCaptioning.from_pretrained(model_source, config=config)
    elif data_args.clip:
        from ..vision_tower import from_clip

        model = from_clip(CACMIForDenseCaptioning, data_args.clip, data_args.clip_pretrained, config=config)
    else:
        model = CACMIForDenseCaptioning(config)
    config = model.config  # from_clip works on a copy: its vision_config decides the processor's frames
    if bank is not None:
        model.set_memory_bank(bank.embeddings, bank.video_index)
    if config.vision_config is not None:
        video_processor = CACMIVideoProcessor.from_open_clip(config.vision_config, num_frames=config.num_frames, max_fps=data_args.video_fps)
    else:
        video_processor = CACMIVideoProcessor(num_frames=config.num_frames, max_fps=data_args.video_fps)
    processor = CACMIProcessor(video_processor, tokenizer, memory_sentences=bank.sentences if bank is not None else None,
                               event_count=model_args.event_count, rerank_alpha=config.rerank_alpha)

    # features attached lazily; attach_features checks every video now and names the missing ones
    def with_features(dataset):
        return attach_features(
            dataset, data_args.features, num_frames=config.num_frames, missing=data_args.missing_features,
            feature_dim=config.feature_dim,
        )

    train = with_features(train)
    eval_dataset = with_features(eval_dataset) if eval_dataset is not None else None
    for test in test_sets:
        test.dataset = with_features(test.dataset)
    check_splits({"train": train, "eval": eval_dataset, **{f"test ({t.name})": t.dataset for t in test_sets}}, source)

    lookup = bank.video_lookup if bank is not None else None
    train_collator = DenseCaptioningCollator(tokenizer, config, memory_video_lookup=lookup, training=True, seed=training_args.seed)
    eval_collator = DenseCaptioningCollator(tokenizer, config, memory_video_lookup=lookup, training=False, return_video_names=True)
    return TrainingSetup(config, model, processor, tokenizer, train, eval_dataset, test_sets, train_collator, eval_collator, bank, notes)


def _without_videos(bank: Any, videos: set[str]) -> Any:
    """A copy of a memory bank without the captions of `videos` (held-out videos must not find their own captions)."""
    from ..data import MemoryBankData

    drop = torch.tensor([bank.video_ids[int(i)] in videos for i in bank.video_index.tolist()], dtype=torch.bool)
    if not bool(drop.any()):
        return bank
    keep = ~drop
    return MemoryBankData(
        bank.embeddings[keep], bank.video_index[keep], list(bank.video_ids),
        [s for s, k in zip(bank.sentences, keep.tolist()) if k], dict(bank.clip),
    )


def build_trainer(setup: TrainingSetup, training_args: DenseCaptioningTrainingArguments, callbacks: list | None = None) -> DenseCaptioningTrainer:
    """A `DenseCaptioningTrainer` over a prepared set-up (no evaluation / selection when there is no held-out split)."""
    if setup.eval_dataset is None and (training_args.eval_strategy != "no" or training_args.load_best_model_at_end):
        logger.warning("No held-out split: training without evaluation or best-checkpoint selection.")
        training_args.eval_strategy = IntervalStrategy.NO
        training_args.load_best_model_at_end = False
    return DenseCaptioningTrainer(
        model=setup.model,
        args=training_args,
        train_dataset=setup.train_dataset,
        eval_dataset=setup.eval_dataset,
        data_collator=setup.train_collator,
        eval_data_collator=setup.eval_collator,
        processing_class=setup.processor,
        callbacks=callbacks,
    )


@dataclass
class TrainingRun:
    """What `train` produced: the metrics (also in `<output_dir>/results.json`), the trainer and the set-up."""

    metrics: dict[str, Any]
    trainer: DenseCaptioningTrainer
    setup: TrainingSetup


def best_eval_metrics(trainer: DenseCaptioningTrainer) -> dict[str, float] | None:
    """The logged held-out metrics of the selected (best) checkpoint, else of the last evaluation."""
    evaluations = [entry for entry in trainer.state.log_history if any(k.startswith("eval_") for k in entry)]
    if not evaluations:
        return None
    best = [e for e in evaluations if e.get("step") == trainer.state.best_global_step]
    return (best or evaluations)[-1]


def train(
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: DenseCaptioningTrainingArguments,
    callbacks: list | None = None,
) -> TrainingRun:
    """Prepare, train (resuming when `training_args.resume_from_checkpoint`), save the final model, score the test sets.

    `metrics` = `{"train": ..., "eval": held-out metrics of the kept checkpoint, "test": {name: metrics},
    "output_dir": path}`, also written to `<output_dir>/results.json` by the main process.
    """
    setup = prepare_training(data_args, model_args, training_args)
    callbacks = list(callbacks or [])
    budget = None
    if training_args.time_budget_minutes is not None:
        budget = TimeBudgetCallback(60.0 * training_args.time_budget_minutes)
        callbacks.append(budget)
    trainer = build_trainer(setup, training_args, callbacks)
    for note in setup.notes:
        logger.info(note)
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last"):
        resume = True
    metrics: dict[str, Any] = {"output_dir": training_args.output_dir, "test": {}}
    with trainer.keep_meteor():  # the session's METEOR process for every evaluation of the run
        train_output = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model(training_args.output_dir)
        metrics["train"] = train_output.metrics
        if budget is not None:
            metrics["train"]["stopped_by_time_budget"] = budget.stopped_after is not None
        metrics["eval"] = best_eval_metrics(trainer)
        for test in setup.test_sets:
            references = test.references if len(test.references) > 1 else test.references[0]
            prefix = "test" if len(setup.test_sets) == 1 else f"test_{test.name.replace('+', '_')}"
            metrics["test"][test.name] = trainer.evaluate(test.dataset, metric_key_prefix=prefix, references=references)
            if trainer.is_world_process_zero() and trainer.last_predictions is not None:
                path = Path(training_args.output_dir) / f"predictions_{test.name.replace('+', '_')}.json"
                path.write_text(json.dumps({"results": trainer.last_predictions}, indent=1))
    if trainer.is_world_process_zero():
        Path(training_args.output_dir, RESULTS_NAME).write_text(json.dumps(metrics, indent=2, default=float))
    return TrainingRun(metrics, trainer, setup)


__all__ = [
    "TestSet",
    "TrainingRun",
    "TrainingSetup",
    "best_eval_metrics",
    "build_trainer",
    "load_annotations",
    "prepare_training",
    "train",
]
