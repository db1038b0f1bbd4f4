#!/usr/bin/env python
"""The demo's ablation: `cacmi demo` with CACMI, PDVC mode (no CFA/CFE/text) and CM2-style window retrieval.

Every variant trains on the same world, tiny CLIP, features and memory bank (built by the first run and
reused by the others) with the same seed, steps and schedule; only the model switches differ. The table
gives the test-split scores of each and the trivial baseline, from the `demo_results_<variant>.json`
files the demo writes.

    python benchmarks/bench_demo_ablation.py --work-dir /tmp/demo [--jobs 2] [--time-budget 0]

`--jobs 2` trains two variants at once (one torch thread each): the scores do not depend on it, the
wall times in the table then do. Other arguments go to `cacmi demo`; with `--jobs 2`, pass
`--time-budget 0` so that every variant trains all its epochs (a shared CPU would otherwise let the
demo's ten-minute budget end each one after a different number of epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

VARIANTS = ("cacmi", "pdvc", "cm2")
METRICS = ("F1", "Precision", "Recall", "METEOR", "CIDEr", "SODA_c", "Bleu_4")


def _run(variant: str, work_dir: Path, threads: int | None, extra: list[str]) -> float:
    """One `cacmi demo --variant` run; returns its wall seconds (its output goes to demo_<variant>.log)."""
    command = [sys.executable, "-m", "cacmi_hf.cli", "demo", "--work-dir", str(work_dir), "--variant", variant, *extra]
    if threads:
        command += ["--threads", str(threads)]
    started = time.perf_counter()
    with open(work_dir / f"demo_{variant}.log", "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - started


def _scores(result: dict) -> dict[str, float]:
    """Scalar metrics of one evaluation result (averages and SODA_c)."""
    scores = dict(result["average"])
    scores["SODA_c"] = result.get("SODA_c")
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("cacmi-demo"))
    parser.add_argument("--jobs", type=int, default=1, help="variants trained at once (default 1)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="variants to run now (the table also lists those already run in --work-dir)")
    args, extra = parser.parse_known_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    threads = 1 if args.jobs > 1 else None
    # the first run builds the shared world, CLIP, features and bank (unless an earlier one did); the rest reuse them
    pending, seconds = list(args.variants), {}
    if not (args.work_dir / "full" / "world" / "world.json").is_file():
        seconds[pending[0]] = _run(pending.pop(0), args.work_dir, threads, extra)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {v: pool.submit(_run, v, args.work_dir, threads, extra) for v in pending}
        seconds.update({v: f.result() for v, f in futures.items()})

    # every variant with results in the work dir (runs of earlier invocations included), in the usual order
    paths = {v: args.work_dir / "full" / f"demo_results_{v}.json" for v in VARIANTS}
    results = {v: json.loads(p.read_text()) for v, p in paths.items() if p.is_file()}
    baseline = _scores(results[args.variants[0]]["baseline"])
    print(f"Test split of the synthetic world, scores in % ({os.cpu_count()} CPUs, --jobs {args.jobs}):")
    print("| variant | epochs | " + " | ".join(METRICS) + " | wall s |")
    print("| --- | ---: |" + " ---: |" * (len(METRICS) + 1))
    for variant, result in results.items():
        scores = _scores(result["test"])
        cells = " | ".join(f"{100 * scores[m]:.2f}" if scores.get(m) is not None else "—" for m in METRICS)
        wall = f"{seconds[variant]:.0f}" if variant in seconds else f"{result['seconds']:.0f} (earlier run)"
        print(f"| {variant} | {result.get('epochs', '—')} | {cells} | {wall} |")
    cells = " | ".join(f"{100 * baseline[m]:.2f}" if baseline.get(m) is not None else "—" for m in METRICS)
    print(f"| trivial baseline | | {cells} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
