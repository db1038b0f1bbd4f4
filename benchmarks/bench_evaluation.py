"""Time `evaluate_dense_captions` on the real validation sets (optionally against the reference toolkit).

Workloads (all metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr, P/R/F1 over 4 tIoUs, SODA_c, paragraphs):
  anet: ActivityNet Captions val; val_2 events (start-sorted) as predictions for the videos of
        val_1, val_1 + val_2 as references, para_val_1 + para_val_2 as paragraph references.
  yc2:  YouCook2 val; its own events as predictions, yc2_val as reference, para_yc2_val paragraphs.

Each run is a fresh subprocess, so its CPU time (user + system, Java children included) and wall
time are its own. With ``--toolkit DIR`` (a folder holding densevid_eval's ``evaluate2018.py`` and
``para_evaluate.py`` from PDVC's ``densevid_eval3`` and SODA's ``soda.py``/``dataset.py``/``utils.py``
under ``DIR/SODA``) the same workload is also run through the reference toolkit, timed the same
way, and the largest absolute score difference is reported.

    python benchmarks/bench_evaluation.py --datasets anet yc2 --repeats 3
    python benchmarks/bench_evaluation.py --datasets anet --subset 500 --toolkit /path/to/toolkit
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMING_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def prepare(data: Path, dataset: str, subset: int | None, out: Path) -> dict:
    """Write the workload's prediction / reference files into ``out``; returns their paths."""
    if dataset == "anet":
        root = data / "activitynet"
        refs = [json.loads((root / f"val_{k}.json").read_text()) for k in (1, 2)]
        paras = [json.loads((root / f"para_val_{k}.json").read_text()) for k in (1, 2)]
        source = refs[1]
    else:
        root = data / "youcook2"
        refs = [json.loads((root / "yc2_val.json").read_text())]
        paras = [json.loads((root / "para_yc2_val.json").read_text())]
        source = refs[0]
    keys = list(refs[0])[:subset] if subset else list(refs[0])
    results = {}
    for k in keys:
        if k in source:
            events = sorted(zip(source[k]["timestamps"], source[k]["sentences"]), key=lambda e: e[0][0])
            results[k] = [{"timestamp": t, "sentence": s} for t, s in events]
    files = {"pred": out / f"{dataset}_pred.json", "refs": [], "paras": []}
    files["pred"].write_text(json.dumps({"version": "VERSION 1.0", "external_data": {"used": False}, "results": results}))
    for i, ref in enumerate(refs):
        path = out / f"{dataset}_ref{i}.json"
        path.write_text(json.dumps({k: ref[k] for k in keys if k in ref}))
        files["refs"].append(path)
    for i, para in enumerate(paras):
        path = out / f"{dataset}_para{i}.json"
        path.write_text(json.dumps({k: para[k] for k in keys if k in para}))
        files["paras"].append(path)
    files["videos"] = len(keys)
    return {k: [str(p) for p in v] if isinstance(v, list) else (str(v) if isinstance(v, Path) else v)
            for k, v in files.items()}


def run_ours(files: dict, threads: int | None = None) -> dict:
    """One evaluation with cacmi_hf; scores in the toolkit's layout."""
    from cacmi_hf.evaluation import evaluate_dense_captions

    start_wall, start_cpu = time.perf_counter(), _cpu()
    out = evaluate_dense_captions(files["pred"], files["refs"], paragraph_references=files["paras"],
                                  meteor_threads=threads)
    wall, cpu = time.perf_counter() - start_wall, _cpu() - start_cpu
    keys = list(out["per_tiou"])
    dvc = {m: [out["per_tiou"][k][m] for k in keys] for m in out["per_tiou"][keys[0]] if m != "F1"}
    soda = [[r["precision"], r["recall"], r["f1"]] for r in out["SODA_c_per_reference"].values()]
    para = {m: out["paragraph"][m] for m in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")}
    return {"wall": wall, "cpu": cpu, "dvc": dvc, "soda": soda, "para": para}


def run_toolkit(files: dict, toolkit: Path) -> dict:
    """The same workload through the reference toolkit (densevid_eval 2018 + SODA + paragraph script)."""
    import gc

    sys.path[:0] = [str(toolkit), str(toolkit / "SODA")]
    from dataset import ANETCaptions as SodaData  # SODA
    from evaluate2018 import ANETcaptions  # densevid_eval, python-3 version
    from para_evaluate import ANETcaptions as ParagraphEval
    from soda import SODA

    start_wall, start_cpu = time.perf_counter(), _cpu()
    with contextlib.redirect_stdout(io.StringIO()):
        dense = ANETcaptions(ground_truth_filenames=files["refs"], prediction_filename=files["pred"],
                             tious=[0.3, 0.5, 0.7, 0.9], max_proposals=1000, verbose=True)
        dense.evaluate()
        dvc = {k: [float(x) for x in v] for k, v in dense.scores.items()}
        del dense
        soda = []
        for ref in files["refs"]:
            data = SodaData.from_load_files([ref], files["pred"], multi_reference=False, verbose=False)
            data.preprocess()
            soda.append([float(x) for x in SODA(data, soda_type="c", tious=None, scorer="Meteor").evaluate()["Meteor"]])
            del data
        para_eval = ParagraphEval(ground_truth_filenames=files["paras"], prediction_filename=files["pred"],
                                  verbose=False, all_scorer=True)
        para_eval.evaluate()
        para = {k: float(v) for k, v in para_eval.scores.items()}
        del para_eval
        gc.collect()  # stops the METEOR processes, so their CPU time is counted
    return {"wall": time.perf_counter() - start_wall, "cpu": _cpu() - start_cpu, "dvc": dvc, "soda": soda, "para": para}


def max_difference(a: dict, b: dict) -> float:
    """Largest absolute difference over every score the two runs share."""
    diffs = [abs(x - y) for m in a["dvc"] if m in b["dvc"] for x, y in zip(a["dvc"][m], b["dvc"][m])]
    diffs += [abs(x - y) for ra, rb in zip(a["soda"], b["soda"]) for x, y in zip(ra, rb)]
    diffs += [abs(a["para"][m] - b["para"][m]) for m in a["para"] if m in b["para"]]
    return max(diffs)


def _child(mode: str, files: dict, toolkit: str | None, threads: int | None = None) -> dict:
    command = [sys.executable, __file__, "--_child", mode, "--_files", json.dumps(files)]
    if toolkit:
        command += ["--toolkit", toolkit]
    if threads:
        command += ["--meteor-threads", str(threads)]
    env = {**os.environ, **TIMING_ENV}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--datasets", nargs="+", default=["anet", "yc2"], choices=["anet", "yc2"])
    parser.add_argument("--subset", type=int, default=None, help="first N videos of the (first) reference file")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--toolkit", default=None, help="folder of the reference toolkit scripts (see module docs)")
    parser.add_argument("--meteor-threads", type=int, default=None, help="METEOR aligner threads (default: per core, <= 4)")
    parser.add_argument("--json", type=Path, default=None, help="also write all measurements here")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_files", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._child:
        files = json.loads(args._files)
        result = run_ours(files, args.meteor_threads) if args._child == "ours" else run_toolkit(files, Path(args.toolkit))
        print(json.dumps(result))
        return

    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            files = prepare(args.data, dataset, args.subset, Path(tmp))
            ours = [_child("ours", files, None, args.meteor_threads) for _ in range(args.repeats)]
            toolkit = [_child("toolkit", files, args.toolkit) for _ in range(args.repeats)] if args.toolkit else []
            record = {"dataset": dataset, "videos": files["videos"], "ours": ours, "toolkit": toolkit}
            records.append(record)
            row = [dataset, files["videos"], statistics.median(r["wall"] for r in ours),
                   statistics.median(r["cpu"] for r in ours)]
            if toolkit:
                t_wall, t_cpu = statistics.median(r["wall"] for r in toolkit), statistics.median(r["cpu"] for r in toolkit)
                row += [t_wall, t_cpu, t_wall / row[2], t_cpu / row[3], max(max_difference(o, t) for o, t in zip(ours, toolkit))]
            rows.append(row)
    header = ["dataset", "videos", "ours wall s", "ours CPU s"]
    if args.toolkit:
        header += ["toolkit wall s", "toolkit CPU s", "wall ratio", "CPU ratio", "max |diff|"]
    print(f"median of {args.repeats} run(s); CPU = user + system incl. Java children")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(f"{v:.3g}" if isinstance(v, float) and v < 1e-3 else f"{v:.1f}" if isinstance(v, float) else str(v)
                         for v in row))
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
