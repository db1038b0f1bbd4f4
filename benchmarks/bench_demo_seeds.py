#!/usr/bin/env python
"""The demo's ablation over training seeds: CACMI and PDVC mode trained N times on the same synthetic world.

One demo run is one seed, and on 30 test videos one seed's F1 moves by several points. This trains each
variant with `examples/train.py --preset synthetic` (the demo's training: batch 8, checkpoint by val F1
under the expected event count, scored without Java) for each seed on the world, features and memory
bank a `cacmi demo --work-dir DIR` run left in DIR, several runs at once with one torch thread each, and
prints per-seed test scores and their mean ± standard deviation (localisation and CIDEr; no Java, so no
METEOR / SODA_c).

    cacmi demo --work-dir /tmp/demo                     # builds the world, tiny CLIP, features, bank
    python benchmarks/bench_demo_seeds.py --work-dir /tmp/demo --seeds 0 1 2 3 4 5 --epochs 50 --jobs 14
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("cacmi", "pdvc", "cm2")
METRICS = ("F1", "Precision", "Recall", "CIDEr")


def _inputs(work_dir: Path, clip_cache: Path) -> dict[str, Path]:
    """The world's annotation files and the features, bank and tiny CLIP a demo run built."""
    full = work_dir / "full"
    features = sorted((full / "features").glob("*/"))
    if not features:
        raise SystemExit(f"No features under {full / 'features'}: run `cacmi demo --work-dir {work_dir}` first.")
    name = features[0].name
    clip = clip_cache / name
    if not (clip / "open_clip_config.json").is_file():
        raise SystemExit(f"Tiny CLIP {name} not found in {clip_cache}; pass the demo's --clip-cache.")
    return {"world": full / "world", "features": features[0], "bank": full / "memory" / name, "clip": clip}


def _train(variant: str, seed: int, epochs: float, inputs: dict[str, Path], out: Path, extra: list[str]) -> dict:
    """One training run (`extra`: further train.py arguments); returns its results.json plus the wall seconds."""
    run_dir = out / f"{variant}_{seed}"
    command = [
        sys.executable, str(REPO / "examples" / "train.py"), "--preset", "synthetic",
        "--annotations", *(str(inputs["world"] / f"{s}.json") for s in ("train", "val", "test")),
        "--features", str(inputs["features"]), "--memory_bank", str(inputs["bank"]), "--clip", str(inputs["clip"]),
        "--variant", variant, "--output_dir", str(run_dir), "--save_total_limit", "1", "--seed", str(seed),
        "--use_cpu", "true", "--num_train_epochs", str(epochs), "--eval_no_java", "true",
        "--disable_tqdm", "true", "--report_to", "none", *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir.with_suffix(".log"), "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    result = json.loads((run_dir / "results.json").read_text())
    return {"seconds": time.perf_counter() - started, "eval_F1": result["eval"]["eval_F1"],
            "epoch": result["eval"]["epoch"], **result["test"]["test"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("cacmi-demo"), help="a `cacmi demo --work-dir` folder")
    parser.add_argument("--clip-cache", type=Path, default=Path.home() / ".cache" / "cacmi_hf" / "tiny_clip")
    parser.add_argument("--variants", nargs="+", default=["cacmi", "pdvc"], choices=VARIANTS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=float, default=50, help="the synthetic preset's 50 (the demo's most)")
    parser.add_argument("--train-args", default="",
                        help="further examples/train.py arguments for every run, one string, e.g. "
                             "'--lr_decay_start 24 --config_overrides caption_loss_coef=1'")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one torch thread each)")
    parser.add_argument("--out", type=Path, default=None, help="run folders (default WORK_DIR/seeds)")
    parser.add_argument("--json", type=Path, default=None, help="also write every run's scores here")
    args = parser.parse_args()
    inputs = _inputs(args.work_dir, args.clip_cache)
    out = args.out or args.work_dir / "seeds"
    runs = [(v, s) for v in args.variants for s in args.seeds]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = dict(zip(runs, pool.map(lambda r: _train(*r, args.epochs, inputs, out, shlex.split(args.train_args)), runs)))
    print(f"Test split, {args.epochs:g} epochs {args.train_args}, scores in % ({os.cpu_count()} CPUs, --jobs {args.jobs}):")
    print("| variant | seed | kept epoch (val F1) | " + " | ".join(METRICS) + " | wall s |")
    print("| --- | ---: | ---: |" + " ---: |" * (len(METRICS) + 1))
    for (variant, seed), r in results.items():
        cells = " | ".join(f"{100 * r[f'test_{m}']:.2f}" for m in METRICS)
        print(f"| {variant} | {seed} | {r['epoch']:g} ({100 * r['eval_F1']:.2f}) | {cells} | {r['seconds']:.0f} |")
    for variant in args.variants:
        rows = [r for (v, _), r in results.items() if v == variant]
        cells = []
        for m in METRICS:
            values = [100 * r[f"test_{m}"] for r in rows]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {spread:.2f}")
        print(f"| {variant} | mean ± sd of {len(rows)} | | " + " | ".join(cells) + " | |")
    if args.json:
        args.json.write_text(json.dumps({f"{v}_{s}": r for (v, s), r in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
