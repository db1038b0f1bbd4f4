"""The three densevid protocols and the paragraph metrics: ours against the reference scripts, side by side.

For one ActivityNet Captions and one YouCook2 prediction file, runs every protocol (2018, 2021,
2018_cider) through the reference script (``densevid_eval3/evaluate{2018,2021,2018_cider}.py``)
and through ``evaluate_dense_captions(protocol=...)``, and the paragraph metrics through
``para_evaluate.py`` and ours; each run is a fresh subprocess, timed from before the evaluator is
built to its scores (imports excluded on both sides). Prints BLEU-4 / METEOR / ROUGE-L / CIDEr /
Precision / Recall (means over tIoU 0.3/0.5/0.7/0.9) of both, their largest difference over every
per-tIoU score, and the times.

Prediction files are made from the real validation annotations, seeded: for each video (of a seeded
subset on ActivityNet, where the reference scripts would take hours for the whole val on a shared
two-core box) the reference events, with 20 % dropped, the rest's boundaries jittered by up to 20 %
of their length, one in three captions swapped for another video's, one extra event of random span
and caption per video, and the events shuffled (so paragraphs differ from start order). References:
``val_1.json`` / ``para_val_1.json`` and ``yc2_val.json`` / ``para_yc2_val.json``.

The reference folder is a copy of densevid_eval3 (CM2_DVC @01a6558) with the jars its bundled
pycocoevalcap lacks linked in (see tests/fixtures/evaluation/make_reference_fixtures.py). In
``evaluate2018_cider.py`` SPICE (which downloads models) is replaced by a stand-in and dropped, and
``evaluate2021.py`` runs with ``random.seed(0)``.

    python benchmarks/bench_evaluation_protocols.py --reference /path/to/densevid_eval3 --anet-videos 300
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTOCOLS = ("2018", "2021", "2018_cider")
MODULES = {"2018": "evaluate2018", "2021": "evaluate2021", "2018_cider": "evaluate2018_cider"}
SHOWN = (("Bleu_4", "BLEU-4"), ("METEOR", "METEOR"), ("ROUGE_L", "ROUGE-L"), ("CIDEr", "CIDEr"),
         ("Precision", "P"), ("Recall", "R"))
PARAGRAPH = ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
TIOUS = [0.3, 0.5, 0.7, 0.9]


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def make_predictions(references: dict, videos: list[str], seed: int) -> dict:
    """A seeded, imperfect prediction file for ``videos`` from their reference events (see module docs)."""
    rng = random.Random(seed)
    pool = [s for vid in videos for s in references[vid]["sentences"]]
    results = {}
    for vid in videos:
        ref = references[vid]
        duration = float(ref.get("duration") or max(e for _, e in ref["timestamps"]))
        events = []
        for (start, end), sentence in zip(ref["timestamps"], ref["sentences"]):
            if rng.random() < 0.2:
                continue
            length = max(end - start, 1e-3)
            start = min(max(0.0, start + rng.uniform(-0.2, 0.2) * length), duration)
            end = min(max(start, end + rng.uniform(-0.2, 0.2) * length), duration)
            if rng.random() < 1 / 3:
                sentence = rng.choice(pool)
            events.append({"timestamp": [round(start, 2), round(end, 2)], "sentence": sentence})
        start = rng.uniform(0, duration)
        events.append({"timestamp": [round(start, 2), round(min(duration, start + rng.uniform(1, 30)), 2)],
                       "sentence": rng.choice(pool)})
        rng.shuffle(events)
        results[vid] = events
    return {"version": "VERSION 1.0", "external_data": {"used": False}, "results": results}


def prepare(data: Path, dataset: str, anet_videos: int | None, seed: int, out: Path) -> dict:
    """Write the dataset's prediction, reference and paragraph files into ``out``; returns their paths."""
    if dataset == "anet":
        ref_path, para_path = data / "activitynet" / "val_1.json", data / "activitynet" / "para_val_1.json"
    else:
        ref_path, para_path = data / "youcook2" / "yc2_val.json", data / "youcook2" / "para_yc2_val.json"
    references, paragraphs = json.loads(ref_path.read_text()), json.loads(para_path.read_text())
    videos = list(references)
    if dataset == "anet" and anet_videos:
        videos = sorted(random.Random(seed).sample(videos, anet_videos))
    files = {"pred": out / f"{dataset}_pred.json", "ref": out / f"{dataset}_ref.json", "para": out / f"{dataset}_para.json"}
    files["pred"].write_text(json.dumps(make_predictions(references, videos, seed)))
    files["ref"].write_text(json.dumps({v: references[v] for v in videos}))
    files["para"].write_text(json.dumps({v: paragraphs[v] for v in videos if v in paragraphs}))
    return {"videos": len(videos), "paragraph_videos": sum(v in paragraphs for v in videos),
            **{k: str(p) for k, p in files.items()}}


def run_reference(files: dict, protocol: str | None, folder: Path) -> dict:
    """One reference-script run; ``protocol`` None runs para_evaluate.py."""
    sys.path.insert(0, str(folder))
    import importlib

    random.seed(0)
    start_wall, start_cpu = time.perf_counter(), _cpu()
    with contextlib.redirect_stdout(io.StringIO()):
        if protocol is None:
            module = importlib.import_module("para_evaluate")
            evaluator = module.ANETcaptions(ground_truth_filenames=[files["para"]], prediction_filename=files["pred"],
                                            verbose=False, all_scorer=True)
            evaluator.evaluate()
            scores = {k: float(v) for k, v in evaluator.scores.items()}
        else:
            module = importlib.import_module(MODULES[protocol])
            if hasattr(module, "Spice"):
                module.Spice = type("NoSpice", (), {"method": lambda self: "SPICE"})
            evaluator = module.ANETcaptions(ground_truth_filenames=[files["ref"]], prediction_filename=files["pred"],
                                            tious=TIOUS, max_proposals=1000, verbose=True)
            evaluator.scorers = [(s, m) for s, m in evaluator.scorers if m != "SPICE"]
            evaluator.evaluate()
            scores = {k: [float(x) for x in v] for k, v in evaluator.scores.items()}
        del evaluator
        import gc

        gc.collect()  # stops the METEOR processes, so their CPU time is counted
    return {"wall": time.perf_counter() - start_wall, "cpu": _cpu() - start_cpu, "scores": scores}


def run_ours(files: dict, protocol: str | None) -> dict:
    """The same with cacmi_hf; ``protocol`` None scores the paragraphs only."""
    from cacmi_hf.evaluation import evaluate_dense_captions
    from cacmi_hf.evaluation.io import load_paragraphs, load_predictions
    from cacmi_hf.evaluation.meteor import Meteor
    from cacmi_hf.evaluation.paragraph import paragraph_scores, paragraph_texts

    start_wall, start_cpu = time.perf_counter(), _cpu()
    if protocol is None:
        preds, paras = load_predictions(files["pred"]), load_paragraphs([files["para"]])
        texts = paragraph_texts(preds, paras)
        meteor = Meteor(texts=[*texts[1], *(r for refs in texts[2] for r in refs)])
        try:
            para = paragraph_scores(preds, paras, meteor, texts=texts)
        finally:
            meteor.close()
        scores = {k: float(para[k]) for k in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")}
    else:
        out = evaluate_dense_captions(files["pred"], [files["ref"]], protocol=protocol, soda=False)
        keys = list(out["per_tiou"])
        scores = {m: [out["per_tiou"][k][m] for k in keys] for m in out["per_tiou"][keys[0]] if m != "F1"}
    return {"wall": time.perf_counter() - start_wall, "cpu": _cpu() - start_cpu, "scores": scores}


def _child(side: str, files: dict, protocol: str | None, reference: str) -> dict:
    command = [sys.executable, __file__, "--_child", side, "--_files", json.dumps(files),
               "--_protocol", protocol or "paragraph", "--reference", reference]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        raise RuntimeError(f"{side} {protocol} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _max_difference(a: dict, b: dict) -> float:
    diffs = []
    for metric, values in a.items():
        if metric in b:
            x, y = (values, b[metric]) if isinstance(values, list) else ([values], [b[metric]])
            diffs += [abs(float(p) - float(q)) for p, q in zip(x, y)]
    return max(diffs)


def _mean(values) -> float:
    return sum(values) / len(values) if isinstance(values, list) else values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--reference", required=True, help="prepared copy of densevid_eval3 (see module docs)")
    parser.add_argument("--datasets", nargs="+", default=["anet", "yc2"], choices=["anet", "yc2"])
    parser.add_argument("--anet-videos", type=int, default=300, help="seeded subset of val_1 (0: all 4,917)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocols", nargs="+", default=[*PROTOCOLS, "paragraph"], choices=[*PROTOCOLS, "paragraph"])
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_files", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_protocol", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._child:
        files, protocol = json.loads(args._files), None if args._protocol == "paragraph" else args._protocol
        result = run_ours(files, protocol) if args._child == "ours" else run_reference(files, protocol, Path(args.reference))
        print(json.dumps(result))
        return

    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in args.datasets:
            files = prepare(args.data, dataset, args.anet_videos, args.seed, Path(tmp))
            _child("ours", files, "2018", args.reference)  # warm-up: paraphrase index, METEOR driver, OS caches
            for protocol in [None if p == "paragraph" else p for p in args.protocols]:
                reference = _child("reference", files, protocol, args.reference)
                ours = _child("ours", files, protocol, args.reference)
                records.append({"dataset": dataset, "videos": files["videos"], "paragraph_videos": files["paragraph_videos"],
                                "protocol": protocol or "paragraph", "reference": reference, "ours": ours,
                                "max_difference": _max_difference(reference["scores"], ours["scores"])})
                print(f"# {dataset} {protocol or 'paragraph'}: reference {reference['wall']:.1f} s, ours "
                      f"{ours['wall']:.1f} s, max |diff| {records[-1]['max_difference']:.2g}", file=sys.stderr, flush=True)

    print("Scores in % (means over tIoU 0.3/0.5/0.7/0.9; paragraphs corpus-level); ref = reference script.")
    print("| dataset | videos | protocol | " + " | ".join(f"{label} ref / ours" for _, label in SHOWN)
          + " | max abs diff | ref wall s | ours wall s | wall ratio | ref CPU s | ours CPU s |")
    print("| --- | ---: | --- |" + " ---: |" * (len(SHOWN) + 6))
    for r in records:
        ref, ours = r["reference"]["scores"], r["ours"]["scores"]
        metrics = SHOWN if r["protocol"] != "paragraph" else [(m, m) for m in PARAGRAPH] + [(None, None)] * 2
        cells = [f"{100 * _mean(ref[m]):.2f} / {100 * _mean(ours[m]):.2f}" if m else "" for m, _ in metrics]
        videos = r["videos"] if r["protocol"] != "paragraph" else r["paragraph_videos"]
        print(f"| {r['dataset']} | {videos} | {r['protocol']} | " + " | ".join(cells)
              + f" | {r['max_difference']:.1e} | {r['reference']['wall']:.1f} | {r['ours']['wall']:.1f} | "
              f"**{r['reference']['wall'] / r['ours']['wall']:.1f}×** | {r['reference']['cpu']:.1f} | {r['ours']['cpu']:.1f} |")
    print("(paragraph rows: BLEU-4 / METEOR / ROUGE-L / CIDEr in the first four score columns)")
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
