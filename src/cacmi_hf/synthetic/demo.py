"""`cacmi demo`: the whole pipeline, for real, on the synthetic world, within ten minutes on a laptop CPU.

Stages (a progress bar each on a terminal, a log line every 10 % elsewhere: `cacmi_hf.progress`): generate
the world's mp4s and annotations → train (or reuse) the tiny CLIP → extract its frame features from the
mp4s → build the text memory bank from the train captions → train CACMI with the Trainer, selecting the
checkpoint on the val split → score the test split with the field's metrics next to a trivial baseline
(evenly spaced segments captioned with the most frequent training sentence) → caption a held-out mp4 with
`pipeline("dense-video-captioning")`, printing its events and writing the SRT subtitles and the timeline PNG.

Training runs the synthetic preset's epochs or, on a machine too slow for all of them, as many as fit the
`--time-budget` (10 minutes for the whole demo): the learning-rate schedule is the full run's either way,
and the demo prints how many epochs it trained. `--time-budget 0` trains every epoch whatever it takes.

Everything lands in `--work-dir`; the world, the tiny CLIP (cached in ~/.cache/cacmi_hf), the features
and the memory bank are reused by later runs with the same settings.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

# Demo targets on the test split (see BENCHMARKS.md): localisation F1 averaged over tIoU 0.3-0.9, and
# caption metrics at least this many times the trivial baseline's.
TARGET_F1 = 0.75
TARGET_RATIO = 3.0
RATIO_METRICS = ("METEOR", "CIDEr", "SODA_c")

# The world and the tiny CLIP are sized so that the stages before training take a few minutes at most on two
# CPU cores; training then runs the synthetic preset's 50 epochs, or as many as fit the time budget on slower
# machines (see BENCHMARKS.md for what each stage costs and what each budget reaches).
FULL = dict(videos={"train": 200, "val": 30, "test": 30}, clip_steps=50, epochs=50)
QUICK = dict(videos={"train": 16, "val": 4, "test": 4}, clip_steps=10, epochs=2)
TIME_BUDGET_MINUTES = 10.0
# Seconds of the budget kept for what follows training (scoring the test split with METEOR, captioning the
# held-out mp4; ~55 s on the slowest two-core box measured) and for interpreter start-up before the demo's clock.
AFTER_TRAINING_S = 100.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cacmi demo`."""
    parser.add_argument("--work-dir", default="cacmi-demo", help="Folder for the world, features, bank and model (reused).")
    parser.add_argument("--quick", action="store_true", help="A tiny world and a few steps: checks the plumbing in about a minute.")
    parser.add_argument("--variant", default="cacmi", choices=("cacmi", "pdvc", "cm2"),
                        help="cacmi (default), pdvc (no CFA/CFE) or cm2 (fixed-window retrieval) — the ablation.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the world and of training.")
    parser.add_argument("--epochs", type=float, default=None,
                        help="Most training epochs (default 50, the synthetic preset's; --quick 2).")
    parser.add_argument("--time-budget", type=float, default=TIME_BUDGET_MINUTES,
                        help="Minutes the whole demo may take (default 10): training stops after the last epoch that "
                             "fits; 0 trains every epoch whatever it takes.")
    parser.add_argument("--batch-size", type=int, default=None, help="Videos per training step (default: the preset's).")
    parser.add_argument("--learning-rate", type=float, default=None, help="Peak learning rate (default: the preset's).")
    parser.add_argument("--clip-steps", type=int, default=None, help="Tiny-CLIP training steps (default 50; --quick 10).")
    parser.add_argument("--clip-cache", default=None, help="Tiny-CLIP cache folder (default ~/.cache/cacmi_hf/tiny_clip).")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the demo's small models run faster on one thread).")
    parser.add_argument("--no-java", action="store_true", help="Score without Java (no METEOR / SODA_c).")
    parser.add_argument("--config-overrides", default=None, help="Extra CACMIConfig overrides, e.g. 'hidden_size=96'.")


def _keep_freed_memory() -> None:
    """Ask glibc to keep freed tensor buffers instead of unmapping them (like MALLOC_MMAP_THRESHOLD_ /
    MALLOC_TRIM_THRESHOLD_): re-faulting them at every training step otherwise costs a large share of
    CPU time on small machines. No-op where glibc's `mallopt` is absent."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD: buffers below 32 MiB come from the heap
    mallopt(-1, 2**30)  # M_TRIM_THRESHOLD: trim the heap only when 1 GiB is free at its top


def training_budget_seconds(time_budget_minutes: float | None, elapsed_seconds: float) -> float | None:
    """Seconds left for training in a demo of `time_budget_minutes` after `elapsed_seconds` (None: no budget).

    `AFTER_TRAINING_S` is kept for what follows training; at least one second is left, so a machine that
    is already late still trains (and is stopped after) one epoch.
    """
    if not time_budget_minutes or time_budget_minutes <= 0:
        return None
    return max(60.0 * time_budget_minutes - elapsed_seconds - AFTER_TRAINING_S, 1.0)


def _stage(name: str, started: float) -> None:
    """One line per finished stage with the elapsed time."""
    print(f"[{time.perf_counter() - started:6.1f}s] {name}", flush=True)


def trivial_baseline(train_annotations: dict[str, Any], test_annotations: dict[str, Any]) -> dict[str, list[dict]]:
    """Every test video cut into n equal segments (n = mean train event count), each captioned with the most frequent train sentence."""
    sentences = Counter(s for video in train_annotations.values() for s in video["sentences"])
    caption = sentences.most_common(1)[0][0]
    count = max(1, round(sum(len(v["sentences"]) for v in train_annotations.values()) / len(train_annotations)))
    predictions = {}
    for vid, video in test_annotations.items():
        step = float(video["duration"]) / count
        predictions[vid] = [{"timestamp": [k * step, (k + 1) * step], "caption": caption} for k in range(count)]
    return predictions


def _extract(world, clip_dir: Path, features_dir: Path) -> None:
    """Tiny-CLIP features of every video of the world at the world's frame rate (finished videos are skipped)."""
    from ..data.extract import extract_features, find_videos
    from ..open_clip_tower import load_open_clip

    model, spec = load_open_clip(str(clip_dir))
    fps = json.loads(world.manifest.read_text())["config"]["fps"]
    report = extract_features(find_videos(world.videos_dir), features_dir, model, spec, fps=float(fps), batch_size=256)
    if report.failed:
        raise RuntimeError(f"Feature extraction failed for {len(report.failed)} videos: {report.summary()}")


def _memory_bank(world, clip_dir: Path, bank_dir: Path) -> None:
    """The CLIP text memory bank of the train captions (skipped when already built)."""
    from ..data import build_memory_bank, load_dense_captions, save_memory_bank
    from ..data.annotations import training_sentences
    from ..open_clip_tower import get_text_tokenizer, load_open_clip

    if (bank_dir / "memory_bank.safetensors").is_file():
        return
    model, spec = load_open_clip(str(clip_dir))
    pairs = training_sentences(load_dense_captions(str(world.annotations["train"])), "train")
    bank = build_memory_bank(pairs, model, get_text_tokenizer(spec), clip=spec.to_dict(), progress=True)
    save_memory_bank(bank, bank_dir)


def _train(args, world, clip_dir: Path, features_dir: Path, bank_dir: Path, model_dir: Path, budget_s: float | None):
    """CACMI trained with the synthetic preset through the same code path as examples/train.py (at most `budget_s`)."""
    from ..progress import progress_mode, trainer_progress_callback
    from ..training import parse_args, train

    # the Trainer's own bar on a terminal; in a log, a line every 10 % of the steps (and its loss lines)
    bars = progress_mode() == "bar"
    argv = [
        "--preset", "synthetic",
        "--annotations", *(str(world.annotations[s]) for s in ("train", "val", "test")),
        "--features", str(features_dir),
        "--memory_bank", str(bank_dir),
        "--clip", str(clip_dir),
        "--variant", args.variant,
        "--output_dir", str(model_dir),
        "--save_total_limit", "1",
        "--seed", str(args.seed),
        "--use_cpu", "true",
        "--disable_tqdm", "false" if bars else "true",
        "--logging_steps", "25",
    ]
    epochs = args.epochs if args.epochs is not None else (QUICK if args.quick else FULL)["epochs"]
    if epochs is not None:
        argv += ["--num_train_epochs", str(epochs)]
    if args.batch_size is not None:
        argv += ["--per_device_train_batch_size", str(args.batch_size)]
    if args.learning_rate is not None:
        argv += ["--learning_rate", str(args.learning_rate)]
    # Checkpoint selection (the preset's: localisation F1) scores without Java; the test split is then scored once
    # with METEOR, in the same process as the baseline: each METEOR start loads its paraphrase table, tens of
    # CPU-seconds the demo's budget does not have twice.
    argv += ["--eval_no_java", "true"]
    if budget_s is not None:
        argv += ["--time_budget_minutes", str(budget_s / 60.0)]
    if args.config_overrides:
        argv += ["--config_overrides", args.config_overrides]
    data_args, model_args, training_args = parse_args(argv)
    return train(data_args, model_args, training_args, callbacks=None if bars else [trainer_progress_callback()])


def _score_test(predictions: dict[str, list[dict]], baseline: dict[str, list[dict]], references: dict[str, Any],
                no_java: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's and the baseline's test-split scores, sharing the session's METEOR process (none with `no_java`)."""
    from ..evaluation import evaluate_dense_captions
    from ..evaluation.meteor import shared_meteor

    def as_submission(events_by_video):
        return {vid: [{"timestamp": e["timestamp"], "sentence": e["caption"]} for e in events] for vid, events in events_by_video.items()}

    meteor = None if no_java else shared_meteor()
    return tuple(
        evaluate_dense_captions(as_submission(p), references, no_java=no_java, meteor=meteor) for p in (predictions, baseline)
    )


def _report(model_scores: dict[str, Any], baseline_scores: dict[str, Any], quick: bool) -> tuple[list[str], bool]:
    """Lines comparing the model with the baseline on the test split, and whether the demo targets are met."""
    from ..training import flatten_scores

    ours, base = flatten_scores(model_scores), flatten_scores(baseline_scores)
    lines = [f"{'metric':<10}{'CACMI':>10}{'baseline':>10}{'ratio':>9}{'target':>12}"]
    met = True
    for name in ("F1", "Precision", "Recall", "METEOR", "CIDEr", "SODA_c", "Bleu_4", "ROUGE_L"):
        if name not in ours:
            continue
        ratio = ours[name] / base[name] if base.get(name) else float("inf")
        target = ""  # in the units of its column: percent beside the scores, "x" beside the ratios
        if name == "F1":
            target = f">= {100 * TARGET_F1:.2f}"
            met &= ours[name] >= TARGET_F1
        elif name in RATIO_METRICS:
            target = f">= {TARGET_RATIO:.1f}x"
            met &= ratio >= TARGET_RATIO
        # a baseline that prints as 0.00 % gives no meaningful ratio (BLEU-4 of one-word captions: ~1e-6)
        shown = f"{ratio:>8.1f}x" if base.get(name, 0.0) >= 5e-5 else f"{'-':>9}"
        lines.append(f"{name:<10}{100 * ours[name]:>10.2f}{100 * base.get(name, 0.0):>10.2f}{shown}{target:>12}")
    if any(name not in ours for name in RATIO_METRICS):
        met = False
    verdict = "targets met" if met else "targets NOT met" + (" (expected with --quick)" if quick else "")
    lines.append(f"Scores in %; {verdict}: F1 >= {100 * TARGET_F1:.0f}% (mean over tIoU 0.3-0.9) and METEOR, CIDEr, "
                 f"SODA_c >= {TARGET_RATIO:.0f}x the baseline.")
    return lines, met


def _caption_held_out(model_dir: Path, video_path: Path, reference: dict[str, Any], out_dir: Path) -> list[dict]:
    """Caption one mp4 with the saved model through the pipeline; print its events, write SRT and timeline PNG."""
    from transformers import pipeline

    from ..exports import plot_timeline, to_srt

    captioner = pipeline("dense-video-captioning", model=str(model_dir))
    events = captioner(str(video_path))
    print(f"\nEvents of the held-out video {video_path.name} ({reference['duration']:.0f} s):")
    for event in events:
        start, end = event["timestamp"]
        print(f"  {start:6.1f}s - {end:6.1f}s  {event['caption']}  (score {event['score']:.2f})")
    print("Ground truth:")
    for (start, end), sentence in zip(reference["timestamps"], reference["sentences"]):
        print(f"  {start:6.1f}s - {end:6.1f}s  {sentence}")
    srt = out_dir / f"{video_path.stem}.srt"
    png = out_dir / f"{video_path.stem}_timeline.png"
    to_srt(events, srt)
    plot_timeline(events, reference["duration"], png, ground_truth=reference, thumbnails=str(video_path),
                  title=f"{video_path.stem}: predicted (top) vs ground truth")
    print(f"Wrote {srt} and {png}")
    return events


def run(args: argparse.Namespace) -> int:
    """Run every stage of the demo; returns 0 (also when the targets are missed: the table says so)."""
    import torch

    from ..evaluation import format_scores
    from .tiny_clip import get_or_train_tiny_clip
    from .world import generate_world

    started = time.perf_counter()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # The tiny CLIP and the synthetic CACMI multiply small matrices: a second intra-op thread costs more in
    # synchronisation than it computes (a training step is ~25 % slower with 2 threads than with 1 here);
    # feature extraction still keeps two cores busy, its decoding runs in a thread of its own.
    torch.set_num_threads(max(1, args.threads))
    torch.set_flush_denormal(True)
    _keep_freed_memory()
    settings = QUICK if args.quick else FULL
    work = Path(args.work_dir) / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)

    world = generate_world(work / "world", settings["videos"], seed=args.seed)
    _stage(f"world: {sum(settings['videos'].values())} videos in {world.root}", started)
    clip_dir = get_or_train_tiny_clip(
        world.root, args.clip_cache, steps=args.clip_steps or settings["clip_steps"]
    )
    _stage(f"tiny CLIP: {clip_dir}", started)
    features_dir = work / "features" / clip_dir.name
    _extract(world, clip_dir, features_dir)
    _stage(f"features: {features_dir}", started)
    bank_dir = work / "memory" / clip_dir.name
    _memory_bank(world, clip_dir, bank_dir)
    _stage(f"memory bank: {bank_dir}", started)

    model_dir = work / f"model-{args.variant}"
    budget_s = training_budget_seconds(args.time_budget, time.perf_counter() - started)
    run_ = _train(args, world, clip_dir, features_dir, bank_dir, model_dir, budget_s)
    train_metrics = run_.metrics["train"]
    epochs_run = train_metrics.get("epoch", 0.0)
    note = (f"; the {args.time_budget:g}-minute budget ended training (--time-budget 0 trains every epoch)"
            if train_metrics.get("stopped_by_time_budget") else "")
    _stage(f"trained {epochs_run:g} epochs{note}; saved {model_dir}", started)

    annotations = {split: json.loads(path.read_text()) for split, path in world.annotations.items()}
    baseline = trivial_baseline(annotations["train"], annotations["test"])
    test_scores, baseline_scores = _score_test(run_.trainer.last_predictions, baseline, annotations["test"], args.no_java)
    print("\nCACMI on the test split:")
    print(format_scores(test_scores))
    print("\nTrivial baseline on the test split:")
    print(format_scores(baseline_scores))
    lines, met = _report(test_scores, baseline_scores, args.quick)
    print("\n" + "\n".join(lines))
    _stage("evaluated", started)

    held_out = world.video_ids["test"][0]
    events = _caption_held_out(model_dir, world.video_path(held_out), annotations["test"][held_out], work)
    summary = {
        "variant": args.variant,
        "quick": args.quick,
        "seconds": time.perf_counter() - started,
        "targets_met": met,
        "epochs": epochs_run,
        "stopped_by_time_budget": bool(train_metrics.get("stopped_by_time_budget")),
        "test": test_scores,
        "baseline": baseline_scores,
        "held_out": {"video": held_out, "events": events},
        "model_dir": str(model_dir),
    }
    (work / f"demo_results_{args.variant}.json").write_text(json.dumps(summary, indent=1, default=float))
    _stage(f"done; results in {work / f'demo_results_{args.variant}.json'}", started)
    return 0


__all__ = ["add_arguments", "run", "training_budget_seconds", "trivial_baseline"]
