"""Event-count rules on a trained model: how many events post-processing keeps, and what that does to the scores.

    python benchmarks/bench_post_processing.py --work-dir cacmi-demo/full

On the demo world's val and test splits (the features and memory bank `cacmi demo` extracted, the model
it saved), the model generates once per split with the same collator as the Trainer's evaluation; the
outputs are then post-processed with each rule — the counter's argmax (PDVC's rule, the default), its
expected count (`event_count="expected"`) and fixed counts (`max_events`) — and scored with
`evaluate_dense_captions` (with Java: METEOR and SODA_c as well). Prints one markdown table per split.
Choose a rule on val; test is reported beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from cacmi_hf import CACMIForDenseCaptioning, CACMIProcessor
from cacmi_hf.evaluation import evaluate_dense_captions, shared_meteor
from cacmi_hf.training import parse_args
from cacmi_hf.training.run import prepare_training
from cacmi_hf.training.trainer import references_from_dataset

RULES = (("argmax (default)", dict(event_count="argmax")), ("expected", dict(event_count="expected")),
         ("fixed 3", dict(max_events=3)), ("fixed 4", dict(max_events=4)))


def generate_split(model, dataset, collator, batch_size: int = 32):
    """[(generate output, batch)] over a split, in the evaluation collator's batches."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collator)
    with torch.no_grad():
        return [(model.generate(**{k: b[k] for k in ("video_features", "video_mask", "durations")}), b) for b in loader]


def score(processor, generated, references, options: dict, meteor) -> tuple[dict, float]:
    """Scores of the split post-processed with `options`, and the mean number of events kept per video."""
    predictions = {}
    for out, batch in generated:
        events = processor.post_process_dense_video_captioning(out, batch["durations"], **options)
        for vid, video_events in zip(batch["video_names"], events):
            predictions[vid] = [{"timestamp": e["timestamp"], "sentence": e["caption"]} for e in video_events]
    result = evaluate_dense_captions(predictions, references, no_java=meteor is None, meteor=meteor)
    return result, statistics.mean(len(v) for v in predictions.values())


def main() -> int:
    """Generate once per split, post-process with every rule, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="a `cacmi demo` folder (world/, features/, memory/)")
    parser.add_argument("--model", type=Path, default=None, help="saved model folder (default WORK_DIR/model-cacmi)")
    parser.add_argument("--no-java", action="store_true", help="skip METEOR and SODA_c")
    args = parser.parse_args()
    work, model_dir = args.work_dir, args.model or args.work_dir / "model-cacmi"
    clips = sorted(p.name for p in (work / "features").iterdir() if p.is_dir()) if (work / "features").is_dir() else []
    if len(clips) != 1 or not (model_dir / "config.json").is_file():
        raise SystemExit(f"{work} is not a finished `cacmi demo` folder (features/<clip>/ and {model_dir.name}/ expected).")
    torch.set_num_threads(1)
    world = work / "world"
    argv = ["--preset", "synthetic", "--annotations", *(str(world / f"{s}.json") for s in ("train", "val", "test")),
            "--features", str(work / "features" / clips[0]), "--memory_bank", str(work / "memory" / clips[0]),
            "--output_dir", tempfile.mkdtemp(prefix="cacmi_post_"), "--use_cpu", "true"]
    setup = prepare_training(*parse_args(argv))
    model = CACMIForDenseCaptioning.from_pretrained(model_dir).eval()
    processor = CACMIProcessor.from_pretrained(model_dir)
    meteor = None if args.no_java else shared_meteor()
    print(f"model {model_dir}; {'no Java (no METEOR, SODA_c)' if meteor is None else 'METEOR 1.5 and SODA_c with Java'}\n")
    for split, dataset in (("val", setup.eval_dataset), ("test", setup.test_sets[0].dataset)):
        references = references_from_dataset(dataset)
        generated = generate_split(model, dataset, setup.eval_collator)
        true_count = statistics.mean(len(r["timestamps"]) for r in references.values())
        print(f"### {split} ({len(references)} videos, {true_count:.2f} reference events per video)\n")
        print("| count rule | events / video | F1 0.3 | F1 0.5 | F1 0.7 | F1 0.9 | F1 mean | METEOR | CIDEr | SODA_c |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name, options in RULES:
            result, kept = score(processor, generated, references, options, meteor)
            f1 = [100 * v["F1"] for v in result["per_tiou"].values()]
            avg = result["average"]
            meteor_text = f"{100 * avg['METEOR']:.2f}" if avg.get("METEOR") is not None else "—"
            soda = f"{100 * result['SODA_c']:.2f}" if result.get("SODA_c") is not None else "—"
            print(f"| {name} | {kept:.2f} | " + " | ".join(f"{v:.1f}" for v in f1)
                  + f" | {100 * avg['F1']:.2f} | {meteor_text} | {100 * avg['CIDEr']:.2f} | {soda} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
