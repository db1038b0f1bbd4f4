"""`DenseCaptioningTrainer`: the transformers Trainer taught to train and evaluate a dense video captioner.

What it adds to `Trainer`:
- the recipe's optimiser (Adam with L2 weight decay, as PDVC/CM2) and the epoch-wise halving schedule,
  stepped per optimizer step (`scheduler.py`);
- `evaluate()` that *generates*: every held-out video is captioned (`model.generate` → the processor's
  post-processing), the events are gathered across processes and scored with `cacmi_hf.evaluation`
  on the main process, and the scores are logged as `eval_METEOR`, `eval_SODA_c`, `eval_CIDEr`,
  `eval_F1`, ... plus `eval_score` = METEOR + SODA_c (PDVC's selection rule) and the teacher-forced
  `eval_loss`; best-checkpoint selection then works through `metric_for_best_model`;
- the unweighted loss terms (`loss_ce`, `loss_giou`, `loss_caption`, ...) logged beside the loss.

Evaluation never reaches a collective from one process alone. `eval_generation="sharded"` (default):
every process captions its share of the videos and the results are gathered; `"main"`: the main
process captions every video while the others wait at one barrier (no collective in between). Under
FSDP or DeepSpeed ZeRO-3 no process holds the full weights and greedy decoding stops at a
data-dependent step, so running the sharded module would dead-lock on its parameter gathers: there
the full weights are gathered once per evaluation (every process takes part) into a plain replica —
on every process for "sharded", on the main process for "main" — which then runs without collectives.
The criterion's event-count all-reduce runs in training mode only (`CACMICriterion.num_events`).

Exact resume: the Trainer saves and restores the torch / numpy / python RNGs per process and the
sampler is seeded per epoch; the collator's event sampling is a function of (seed, epoch, video)
(`DenseCaptioningCollator.set_epoch`, called at every epoch start), so a resumed run draws the same
event subsets with nothing more to save.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, SequentialSampler
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import speed_metrics

from .scheduler import get_step_halving_schedule

logger = logging.getLogger(__name__)

# Keys of a collated batch that the model's forward / generate take.
MODEL_INPUTS = ("video_features", "video_mask", "durations", "video_ids")
GENERATE_INPUTS = ("video_features", "video_mask", "durations")
LABELS = ("event_segments", "event_mask", "caption_ids")
REFERENCE_COLUMNS = ("video_id", "duration", "timestamps", "sentences")


def references_from_dataset(dataset: Any) -> dict[str, dict[str, Any]]:
    """`{video_id: {"duration", "timestamps", "sentences"}}` of an annotation dataset (the evaluator's reference format)."""
    table = dataset.with_format(None).select_columns(list(REFERENCE_COLUMNS)).to_dict()
    return {
        vid: {"duration": duration, "timestamps": timestamps, "sentences": sentences}
        for vid, duration, timestamps, sentences in zip(*(table[c] for c in REFERENCE_COLUMNS))
    }


def flatten_scores(result: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of an `evaluate_dense_captions` result: averages, SODA_c, paragraph scores, `score`."""
    metrics = {name: float(value) for name, value in result["average"].items() if value is not None}
    if result.get("SODA_c") is not None:
        metrics["SODA_c"] = float(result["SODA_c"])
    paragraph = result.get("paragraph")
    if paragraph:
        metrics.update({f"para_{k}": float(v) for k, v in paragraph.items() if isinstance(v, (int, float)) and k[0].isupper()})
    if "METEOR" in metrics and "SODA_c" in metrics:
        metrics["score"] = metrics["METEOR"] + metrics["SODA_c"]  # PDVC's checkpoint-selection score
    metrics["num_videos"] = float(result["videos"]["evaluated"])
    return metrics


class CollatorEpochCallback(TrainerCallback):
    """Tells the training collator which epoch starts, so its event sampling is a function of (seed, epoch, video)."""

    def __init__(self, trainer: "DenseCaptioningTrainer"):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        """Warn where the epoch cannot reach the collator: persistent DataLoader workers keep their first copy."""
        if args.dataloader_persistent_workers and args.dataloader_num_workers > 0 and hasattr(self.trainer.data_collator, "set_epoch"):
            logger.warning(
                "dataloader_persistent_workers keeps each worker's copy of the collator from the first epoch, so every "
                "epoch draws the same event subsets per video; turn it off for per-epoch sampling and exact resume."
            )

    def on_epoch_begin(self, args, state, control, **kwargs):
        """`set_epoch` of the collator before the epoch's DataLoader iterator (and its workers) is created."""
        collator = self.trainer.data_collator
        if hasattr(collator, "set_epoch"):
            collator.set_epoch(math.floor((state.epoch or 0) + 1e-6))  # resumed mid-epoch: state.epoch is e.g. 0.75


class DenseCaptioningTrainer(Trainer):
    """Trainer for `CACMIForDenseCaptioning`: recipe optimiser/schedule and generation-based evaluation.

    Args (beyond `Trainer`'s):
        eval_data_collator: collator for evaluation batches (all events, `return_video_names=True`);
            default: `data_collator`, which must then return `video_names`.
        eval_references: reference annotations for the default eval dataset (a dict as the evaluator
            takes, a path, or a list of them); default: built from the eval dataset's own rows.
        paragraph_references: optional paragraph references passed to the evaluator.
    """

    def __init__(
        self,
        *args: Any,
        eval_data_collator: Any = None,
        eval_references: Any = None,
        paragraph_references: Any = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator
        self.eval_references = eval_references
        self.paragraph_references = paragraph_references
        self._steps_per_epoch: int | None = None
        self._loss_terms: dict[str, torch.Tensor] = {}
        self._loss_term_count = 0
        self.last_predictions: dict[str, list[dict[str, Any]]] | None = None
        self.last_scores: dict[str, Any] | None = None
        self._meteor = None  # the session's METEOR process while a run evaluates (see keep_meteor)
        self._saving_checkpoint = False
        self.add_callback(CollatorEpochCallback(self))
        if self.args.device.type == "cpu":
            # A denormal underflow once made CPU steps 16x slower (DESIGN §9).
            torch.set_flush_denormal(True)

    # ------------------------------------------------------------------------------------------------------------
    # optimisation

    def create_optimizer(self, model=None):
        """Adam with coupled (L2) weight decay when `args.recipe_optimizer`, as PDVC/CM2 train; else `--optim`."""
        if self.optimizer is None and getattr(self.args, "recipe_optimizer", False) and self.optimizer_cls_and_kwargs is None:
            self.optimizer_cls_and_kwargs = (
                torch.optim.Adam,
                {"lr": self.args.learning_rate, "betas": (self.args.adam_beta1, self.args.adam_beta2), "eps": self.args.adam_epsilon},
            )
        return super().create_optimizer(model)

    def get_decay_parameter_names(self, model) -> list[str]:
        """Parameters under weight decay: every one (`--weight_decay_scope all`, PDVC/CM2's Adam) or the Trainer's choice."""
        if getattr(self.args, "weight_decay_scope", "all") == "all":
            return [name for name, _ in model.named_parameters()]
        return super().get_decay_parameter_names(model)

    def set_initial_training_values(self, args, dataloader):
        """Record the optimizer steps per epoch: the halving schedule counts epochs."""
        values = super().set_initial_training_values(args, dataloader)
        self._steps_per_epoch = values[1]
        return values

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """The recipe's epoch-wise halving (`args.lr_schedule == "step_halving"`), else transformers' schedulers."""
        if self.lr_scheduler is None and getattr(self.args, "lr_schedule", "transformers") == "step_halving":
            steps_per_epoch = self._steps_per_epoch or max(1, math.ceil(num_training_steps / max(self.args.num_train_epochs, 1)))
            num_epochs = math.ceil(num_training_steps / steps_per_epoch)
            self.lr_scheduler = get_step_halving_schedule(
                optimizer if optimizer is not None else self.optimizer,
                steps_per_epoch,
                num_epochs,
                self.args.lr_decay_start,
                self.args.lr_decay_every,
                self.args.lr_decay_rate,
            )
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The model's weighted loss; keeps the unweighted terms for logging."""
        outputs = model(**{k: inputs[k] for k in (*MODEL_INPUTS, *LABELS) if k in inputs})
        loss = outputs.loss
        if model.training and outputs.loss_dict:
            for key, value in outputs.loss_dict.items():
                if "_" in key and key.rsplit("_", 1)[-1].isdigit():
                    continue  # auxiliary-layer terms: the last layer's are enough to follow training
                value = value.detach().float()
                self._loss_terms[key] = self._loss_terms.get(key, 0.0) + value
            self._loss_term_count += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean unweighted loss terms since the last log to the training logs."""
        if "loss" in logs and self._loss_term_count:
            for key, total in self._loss_terms.items():
                logs[key] = round(float(total) / self._loss_term_count, 4)
            self._loss_terms, self._loss_term_count = {}, 0
        super().log(logs, start_time)

    def train(self, *args: Any, **kwargs: Any):
        """`Trainer.train`, with the session's METEOR process given to every evaluation of the run (see `keep_meteor`)."""
        with self.keep_meteor():
            return super().train(*args, **kwargs)

    @contextmanager
    def keep_meteor(self):
        """Give every evaluation inside the block the session's METEOR process (main process, Java scoring only).

        Starting METEOR 1.5 loads its paraphrase tables (10-60 CPU seconds here), which would otherwise be paid
        at every evaluation. The process is `shared_meteor()`: started at most once per Python process, passed to
        `evaluate_dense_captions(meteor=...)`, and kept after the block for later evaluations in the same
        process (a second run, the test split, a notebook); it stops when Python exits.
        """
        if self._meteor is not None or self.args.eval_no_java or not self.accelerator.is_main_process:
            yield
            return
        from ..evaluation import meteor

        self._meteor = meteor.shared_meteor()
        try:
            yield
        finally:
            self._meteor = None

    # ------------------------------------------------------------------------------------------------------------
    # evaluation

    def get_eval_dataloader(self, eval_dataset=None):
        """The Trainer's (process-sharded) eval dataloader, built with the evaluation collator."""
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        train_collator = self.data_collator
        self.data_collator = self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    def _parameters_are_sharded(self) -> bool:
        """True under FSDP or DeepSpeed ZeRO-3 (or parameters sharded as DTensors), where no process holds the full weights."""
        if self.is_fsdp_enabled:
            return True
        if self.is_deepspeed_enabled:
            config = getattr(self.accelerator.state.deepspeed_plugin, "deepspeed_config", {}) or {}
            if config.get("zero_optimization", {}).get("stage", 0) == 3:
                return True
        from torch.distributed.tensor import DTensor

        return any(isinstance(p, DTensor) or hasattr(p, "ds_id") for p in self.model.parameters())

    def _gather_full_state(self) -> tuple[dict[str, torch.Tensor], bool]:
        """(full state dict of the sharded model, whether every process holds it); every process must call it.

        FSDP2 (DTensor parameters): each shard is all-gathered on every process, in the same key order.
        FSDP1 / ZeRO-3: the backend's consolidation (`accelerator.get_state_dict`), complete on the main process.
        """
        from torch.distributed.tensor import DTensor

        state = self.model.state_dict()
        if any(isinstance(v, DTensor) for v in state.values()):
            return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in state.items()}, True
        return self.accelerator.get_state_dict(self.model), False

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`: the whole model in a final folder, the trainable state in a checkpoint (`_internal_call`).

        With FSDP2-sharded parameters the full weights are gathered first (every process calls it).
        """
        from torch.distributed.tensor import DTensor

        self._saving_checkpoint = _internal_call
        try:
            if not any(isinstance(p, DTensor) for p in self.model.parameters()):
                return super().save_model(output_dir, _internal_call)
            state, _ = self._gather_full_state()  # collective: before any process-dependent branch
            output_dir = output_dir or self.args.output_dir
            if self.args.should_save:
                self._save_plain(output_dir, {k: v.detach().cpu() for k, v in state.items()})
            if self.accelerator.num_processes > 1:
                self.accelerator.wait_for_everyone()
        finally:
            self._saving_checkpoint = False

    def _save_plain(self, output_dir: str, state: dict[str, torch.Tensor]) -> None:
        """Save gathered full weights through a plain copy of the model class (FSDP2 swaps the class of the sharded
        module for a generated `FSDP...` one, whose remote-code files would be torch's own)."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        from torch.distributed.fsdp import FSDPModule

        cls = next(c for c in type(unwrapped).__mro__ if c is not type(unwrapped) and not issubclass(c, FSDPModule))
        with torch.device("meta"):
            plain = cls(copy.deepcopy(unwrapped.config))
        plain.load_state_dict(state, strict=False, assign=True)
        original, self.model = self.model, plain
        try:
            self._save(output_dir, state_dict=state)
        finally:
            self.model = original

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        """`Trainer._load_from_checkpoint`; FSDP2-sharded parameters are read as `_load_best_model` reads them."""
        from torch.distributed.tensor import DTensor

        target = model if model is not None else self.model
        if not any(isinstance(p, DTensor) for p in target.parameters()):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_full_weights(target, resume_from_checkpoint)

    def _load_full_weights(self, model: torch.nn.Module, folder: str) -> None:
        """Every process reads `folder`'s model.safetensors and keeps its own shards (no broadcast from one process)."""
        import os

        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        state = load_file(os.path.join(folder, "model.safetensors"))
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))

    def _load_best_model(self) -> None:
        """`Trainer._load_best_model`; with FSDP2-sharded parameters every process reads the best checkpoint's full
        weights and keeps its own shards (Accelerate's FSDP loader broadcasts from one process, which dead-locks here)."""
        from torch.distributed.tensor import DTensor

        if not any(isinstance(p, DTensor) for p in self.model.parameters()):
            return super()._load_best_model()
        logger.info("Loading best model from %s (score: %s).", self.state.best_model_checkpoint, self.state.best_metric)
        self._load_full_weights(self.model, self.state.best_model_checkpoint)

    def _frozen_tower_keys(self) -> set[str]:
        """State-dict keys of the frozen CLIP image tower (empty without one): what a checkpoint need not repeat."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        tower = getattr(unwrapped, "vision_tower", None)
        if tower is None or any(p.requires_grad for p in tower.parameters()):
            return set()
        return {f"vision_tower.{k}" for k in tower.state_dict()}

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save the model; a checkpoint leaves out the frozen CLIP tower (1.2 GB for ViT-L/14), which never changes.

        The tower is in the final folder (`save_model(output_dir)`, what `from_pretrained` loads) and in the
        model being trained, so resuming and best-model loading only need the trainable state; the checkpoint
        notes what it leaves out in `omitted_weights.json`.
        """
        frozen = self._frozen_tower_keys() if self._saving_checkpoint else set()
        if frozen:
            if state_dict is None:
                state_dict = self.accelerator.unwrap_model(self.model).state_dict()
            state_dict = {k: v for k, v in state_dict.items() if k not in frozen}
            if self.args.should_save:
                import json
                import os

                os.makedirs(output_dir or self.args.output_dir, exist_ok=True)
                note = {
                    "omitted": "vision_tower",
                    "tensors": len(frozen),
                    "why": "the frozen CLIP image tower is unchanged by training; the final model folder carries it",
                }
                with open(os.path.join(output_dir or self.args.output_dir, "omitted_weights.json"), "w") as handle:
                    json.dump(note, handle, indent=1)
        super()._save(output_dir, state_dict=state_dict)

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        """Trainer's missing-key warning, without the frozen tower that checkpoints leave out on purpose."""
        frozen = self._frozen_tower_keys()
        if frozen and getattr(load_result, "missing_keys", None):
            load_result = type(load_result)([k for k in load_result.missing_keys if k not in frozen], load_result.unexpected_keys)
        super()._issue_warnings_after_load(load_result)

    def _replica(self, on_every_process: bool) -> torch.nn.Module | None:
        """A plain (unsharded) copy of the model's full weights, without the frozen vision tower (evaluation takes features).

        Every process must call it: the weights are gathered with the distributed backend (FSDP full state
        dict, ZeRO-3 consolidation), then broadcast from the main process when `on_every_process`. Returns the
        replica on the processes that get one, else None.
        """
        state, everywhere = self._gather_full_state()
        unwrapped = self.accelerator.unwrap_model(self.model)
        is_main = self.accelerator.is_main_process
        if not (on_every_process or is_main):
            return None
        config = copy.deepcopy(unwrapped.config)
        config.vision_config = None  # the tower is frozen and evaluation runs on features: no need to copy it
        replica = type(unwrapped)(config).to(self.args.device)
        if is_main or everywhere:
            wanted = replica.state_dict()
            missing = [k for k in wanted if k not in state]
            if missing:
                raise RuntimeError(f"The gathered state dict lacks {missing[:5]}; cannot build the evaluation replica.")
            replica.load_state_dict({k: state[k] for k in wanted})
        if on_every_process and not everywhere and self.accelerator.num_processes > 1:
            for tensor in replica.state_dict().values():  # same order and shapes on every process
                dist.broadcast(tensor, src=0)
        return replica

    def _evaluation_model(self, mode: str) -> torch.nn.Module | None:
        """The model this process captions with in `mode` ("sharded" or "main"), or None when it captions nothing."""
        if self._parameters_are_sharded():
            return self._replica(on_every_process=mode == "sharded")
        if mode == "main" and not self.accelerator.is_main_process:
            return None
        return self.accelerator.unwrap_model(self.model)

    @torch.no_grad()
    def caption_dataset(self, dataset: Any, compute_loss: bool | None = None) -> tuple[dict[str, list[dict]], float | None]:
        """Caption every video of `dataset`; returns (`{video_id: events}`, mean eval loss or None).

        Every process must call it. "sharded": each process captions its share and every process gets the
        gathered predictions; "main": the main process captions all of them and returns them, the others
        wait at a barrier and return ({}, None).
        """
        compute_loss = self.args.eval_compute_loss if compute_loss is None else compute_loss
        processor = self.processing_class
        if processor is None or not hasattr(processor, "post_process_dense_video_captioning"):
            raise ValueError("DenseCaptioningTrainer needs processing_class=CACMIProcessor to turn generations into events.")
        mode = self.args.eval_generation
        model = self._evaluation_model(mode)
        predictions: dict[str, list[dict[str, Any]]] = {}
        loss_sum, loss_count = 0.0, 0
        if mode == "sharded":
            loader = self.get_eval_dataloader(dataset)  # process-sharded; every process gets the same number of batches
        elif model is not None:
            collator = self.eval_data_collator or self.data_collator
            loader = DataLoader(
                dataset, batch_size=self.args.eval_batch_size, sampler=SequentialSampler(dataset), collate_fn=collator,
                num_workers=self.args.dataloader_num_workers,
            )
        else:
            loader = []
        was_training = model.training if model is not None else False
        if model is not None:
            model.eval()
        try:
            for batch in loader:
                batch = self._prepare_inputs(batch)
                names = batch.get("video_names")
                if names is None:
                    raise ValueError("The evaluation collator must return `video_names` (DenseCaptioningCollator(return_video_names=True)).")
                generated = model.generate(**{k: batch[k] for k in GENERATE_INPUTS if k in batch})
                events = processor.post_process_dense_video_captioning(
                    generated, batch["durations"], rerank_alpha=float(getattr(model.config, "rerank_alpha", 1.0))
                )
                items = [(name, [{k: e[k] for k in ("timestamp", "caption", "score")} for e in video]) for name, video in zip(names, events)]
                losses = None
                if compute_loss and all(k in batch for k in LABELS):
                    loss = model(**{k: batch[k] for k in (*GENERATE_INPUTS, *LABELS)}).loss
                    losses = loss.detach().float().reshape(1).repeat(len(names))  # (B,) one per video, to weight by videos
                if mode == "sharded":  # every process reaches these gathers once per batch
                    items = self.accelerator.gather_for_metrics(items, use_gather_object=True)
                    if losses is not None:
                        losses = self.accelerator.gather_for_metrics(losses)
                predictions.update(items)
                if losses is not None:
                    loss_sum += float(losses.sum())
                    loss_count += losses.numel()
        finally:
            if model is not None:
                model.train(was_training)
            if mode == "main" and self.accelerator.num_processes > 1:
                self.accelerator.wait_for_everyone()  # the others wait here while the main process captions
        return predictions, (loss_sum / loss_count if loss_count else None)

    def score_predictions(self, predictions: dict[str, list[dict]], references: Any, paragraph_references: Any = None) -> dict[str, Any] | None:
        """Score on the main process with `cacmi_hf.evaluation`; returns the full result there, None elsewhere."""
        if not self.accelerator.is_main_process:
            return None
        from ..evaluation import evaluate_dense_captions

        return evaluate_dense_captions(
            {vid: [{"timestamp": e["timestamp"], "sentence": e["caption"]} for e in events] for vid, events in predictions.items()},
            references,
            tious=self.args.eval_tious,
            protocol=self.args.eval_protocol,
            paragraph_references=paragraph_references,
            soda=self.args.eval_soda,
            no_java=self.args.eval_no_java,
            meteor=self._meteor,
        )

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
        references: Any = None,
        paragraph_references: Any = None,
    ) -> dict[str, float]:
        """Caption the eval videos, score them, log `{prefix}_METEOR`, `{prefix}_SODA_c`, ... and return the metrics.

        `references` default to the eval dataset's own annotations (or `eval_references` for the
        default eval dataset); a list of several reference sets scores against each, as ActivityNet's
        val_1 + val_2.
        """
        override = eval_dataset is not None
        dataset = eval_dataset if override else self.eval_dataset
        if isinstance(dataset, dict):
            metrics: dict[str, float] = {}
            for name, split in dataset.items():
                metrics.update(self.evaluate(split, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        if dataset is None:
            raise ValueError("DenseCaptioningTrainer.evaluate needs an eval_dataset.")
        if references is None:
            references = self.eval_references if (not override and self.eval_references is not None) else references_from_dataset(dataset)
        if paragraph_references is None and not override:
            paragraph_references = self.paragraph_references

        self._memory_tracker.start()
        start_time = time.time()
        predictions, eval_loss = self.caption_dataset(dataset)
        result = self.score_predictions(predictions, references, paragraph_references)
        if result is not None:  # the logged metrics are numbers; this line says which protocol they follow
            from ..evaluation import summary_line

            logger.info("%s: %s", metric_key_prefix, summary_line(result))
        from accelerate.utils import broadcast_object_list

        shared = [flatten_scores(result) if result is not None else None]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(shared, from_process=0)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in shared[0].items()}
        if eval_loss is not None:
            metrics[f"{metric_key_prefix}_loss"] = eval_loss
        num_samples = len(dataset)
        metrics.update(
            speed_metrics(
                metric_key_prefix,
                start_time,
                num_samples=num_samples,
                num_steps=math.ceil(num_samples / (self.args.eval_batch_size * self.args.world_size)),
            )
        )
        self.last_predictions, self.last_scores = predictions, result
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics


__all__ = ["CollatorEpochCallback", "DenseCaptioningTrainer", "flatten_scores", "references_from_dataset"]
