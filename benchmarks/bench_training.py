#!/usr/bin/env python
"""Training throughput of the ActivityNet preset on this CPU: videos per second at batch 1 and 8, through the Trainer.

Real sizes: L = 100 frames of D = 768 features (random values), the real ActivityNet train annotations
(events per video, caption lengths) and the vocabulary built from them (min count 2, ~10k words when
the file has all 10,009 videos), a 37,421 x 768 memory bank. Each timed run is one `Trainer.train` of
`--warmup + --steps` steps; the per-step wall time of the timed steps is measured by a callback and
the median reported. The batch sizes alternate over `--repeats` rounds (DESIGN §8: a process runs at
one of two speeds, so alternate and take medians).

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 \
        python benchmarks/bench_training.py --annotations ../shared/data/activitynet/train_modified.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _dataset(annotations: str, videos: int, feature_dim: int, frames: int, seed: int):
    """The first `videos` training videos with random (L, D) features attached."""
    from cacmi_hf.data import attach_features, load_dense_captions

    table = load_dense_captions(annotations)
    train = table["train"] if "train" in table else table[next(iter(table))]
    train = train.select(range(min(videos, len(train))))
    rng = np.random.default_rng(seed)
    features = {vid: rng.standard_normal((frames, feature_dim)).astype(np.float32) for vid in train["video_id"]}
    return table, attach_features(train, features, num_frames=frames, feature_dim=feature_dim)


class _StepTimer:
    """TrainerCallback recording the wall time of every optimizer step."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Timer(TrainerCallback):
            def __init__(self):
                self.times, self._start = [], None

            def on_step_begin(self, args, state, control, **kwargs):
                self._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                self.times.append(time.perf_counter() - self._start)

        return Timer()


def time_training(dataset, tokenizer, config, bank, batch_size: int, steps: int, warmup: int, workdir: str) -> list[float]:
    """Per-step seconds of the `steps` timed steps of one Trainer run at `batch_size`."""
    from cacmi_hf.data import DenseCaptioningCollator
    from cacmi_hf.modeling_cacmi import CACMIForDenseCaptioning
    from cacmi_hf.processing_cacmi import CACMIProcessor, CACMIVideoProcessor
    from cacmi_hf.training import DenseCaptioningTrainer, DenseCaptioningTrainingArguments

    torch.manual_seed(0)
    model = CACMIForDenseCaptioning(config)
    model.set_memory_bank(bank["embeddings"], bank["video_index"])
    args = DenseCaptioningTrainingArguments(
        output_dir=workdir, per_device_train_batch_size=batch_size, max_steps=warmup + steps, eval_strategy="no",
        save_strategy="no", load_best_model_at_end=False, logging_steps=10_000, disable_tqdm=True, use_cpu=True,
        report_to="none", dataloader_num_workers=0,
    )
    timer = _StepTimer()
    lookup = {vid: i for i, vid in enumerate(bank["video_ids"])}
    trainer = DenseCaptioningTrainer(
        model=model, args=args, train_dataset=dataset,
        data_collator=DenseCaptioningCollator(tokenizer, config, memory_video_lookup=lookup),
        processing_class=CACMIProcessor(CACMIVideoProcessor(num_frames=config.num_frames), tokenizer),
        callbacks=[timer],
    )
    trainer.train()
    return timer.times[warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", default=str(Path(__file__).resolve().parents[2] / "shared/data/activitynet/train_modified.json"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=6, help="Timed steps per run.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps at the start of each run.")
    parser.add_argument("--repeats", type=int, default=3, help="Rounds over the batch sizes (alternating).")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        if name not in os.environ:
            print(f"note: {name} is not set; timings may switch between two speeds (DESIGN §8)")

    from cacmi_hf.configuration_cacmi import CACMIConfig
    from cacmi_hf.criterion import estimate_count_prior
    from cacmi_hf.data import build_caption_tokenizer

    config = CACMIConfig.from_preset("activitynet")
    videos = max(args.batch_sizes) * (args.warmup + args.steps)
    table, dataset = _dataset(args.annotations, videos, config.feature_dim, config.num_frames, seed=0)
    train = table["train"] if "train" in table else table[next(iter(table))]
    tokenizer = build_caption_tokenizer((s for row in train["sentences"] for s in row), min_count=2)
    config.vocab_size = len(tokenizer)
    config.count_prior = estimate_count_prior([len(t) for t in train["timestamps"]], config.max_event_count)
    size = 37_421
    generator = torch.Generator().manual_seed(0)
    bank = {
        "embeddings": torch.nn.functional.normalize(torch.randn(size, config.text_dim, generator=generator), dim=-1),
        "video_index": torch.arange(size) % len(dataset),
        "video_ids": list(dataset["video_id"]),
    }
    config.memory_size = size

    per_step: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.repeats):
            for batch_size in args.batch_sizes:
                per_step[batch_size] += time_training(dataset, tokenizer, config, bank, batch_size, args.steps, args.warmup, workdir)

    print(f"ActivityNet preset (L={config.num_frames}, D={config.feature_dim}, hidden {config.hidden_size}, "
          f"{config.num_queries} queries, vocab {config.vocab_size}, bank {size}), torch threads {torch.get_num_threads()}")
    print(f"{'batch':>6}{'median s/step':>15}{'videos/s':>10}{'steps timed':>13}")
    for batch_size, times in per_step.items():
        median = statistics.median(times)
        print(f"{batch_size:>6}{median:>15.3f}{batch_size / median:>10.2f}{len(times):>13}")


if __name__ == "__main__":
    main()
