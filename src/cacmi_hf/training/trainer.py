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

Generation runs sharded (each process captions its share, `eval_generation="sharded"`) or on the
main process alone (`"main"`). Under FSDP or DeepSpeed ZeRO-3 the parameters are split across
processes and greedy decoding stops at a data-dependent step, so lock-step sharded generation could
dead-lock on the parameter gathers: there the full weights are gathered once per evaluation into a
plain copy on the main process, which captions everything.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.data import DataLoader, SequentialSampler
from transformers import Trainer
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

    def set_initial_training_values(self, args, dataloader):
        """Record the optimizer steps per epoch: the halving schedule counts epochs."""
        values = super().set_initial_training_values(args, dataloader)
        self._steps_per_epoch = values[1]
        return values

    def get_decay_parameter_names(self, model) -> list[str]:
        """Parameters under weight decay: every one (`--weight_decay_scope all`, PDVC/CM2's Adam) or the Trainer's choice."""
        if getattr(self.args, "weight_decay_scope", "all") == "all":
            return [name for name, _ in model.named_parameters()]
        return super().get_decay_parameter_names(model)

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
        """True under FSDP or DeepSpeed ZeRO-3, where no process holds the full weights."""
        if self.is_fsdp_enabled:
            return True
        if self.is_deepspeed_enabled:
            config = getattr(self.accelerator.state.deepspeed_plugin, "deepspeed_config", {}) or {}
            return config.get("zero_optimization", {}).get("stage", 0) == 3
        return False

    def _generation_model(self) -> tuple[torch.nn.Module | None, bool]:
        """(model to generate with on this process or None, whether generation may be sharded)."""
        if not self._parameters_are_sharded():
            return self.accelerator.unwrap_model(self.model), True
        state = self.accelerator.get_state_dict(self.model)  # collective: every process takes part
        if not self.accelerator.is_main_process:
            return None, False
        unwrapped = self.accelerator.unwrap_model(self.model)
        replica = type(unwrapped)(copy.deepcopy(unwrapped.config))
        replica.load_state_dict(state)
        return replica.to(self.args.device), False

    @torch.no_grad()
    def caption_dataset(self, dataset: Any, compute_loss: bool | None = None) -> tuple[dict[str, list[dict]], float | None]:
        """Caption every video of `dataset`; returns (`{video_id: events}` on the main process, mean eval loss or None).

        Every process must call it (it gathers); on processes other than the main one the returned
        predictions are those gathered too when sharded, else empty.
        """
        compute_loss = self.args.eval_compute_loss if compute_loss is None else compute_loss
        processor = self.processing_class
        if processor is None or not hasattr(processor, "post_process_dense_video_captioning"):
            raise ValueError("DenseCaptioningTrainer needs processing_class=CACMIProcessor to turn generations into events.")
        model, may_shard = self._generation_model()
        sharded = may_shard and self.args.eval_generation == "sharded"
        if sharded:
            loader = self.get_eval_dataloader(dataset)
        elif model is not None:  # main process alone
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
        predictions: dict[str, list[dict[str, Any]]] = {}
        loss_sum, loss_count = 0.0, 0
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
            if sharded:
                items = self.accelerator.gather_for_metrics(items, use_gather_object=True)
                if losses is not None:
                    losses = self.accelerator.gather_for_metrics(losses)
            predictions.update(items)
            if losses is not None:
                loss_sum += float(losses.sum())
                loss_count += losses.numel()
        if model is not None:
            model.train(was_training)
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


__all__ = ["DenseCaptioningTrainer", "flatten_scores", "references_from_dataset"]
