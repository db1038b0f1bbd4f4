#!/usr/bin/env python
"""When do CACMI's modules help? PDVC, CM2 and CACMI (with and without CFE / CFA) against retrieval quality.

Every variant trains on the same synthetic world, features, seeds, batches and number of steps, once per memory
bank setting of the retrieval-quality dial (`cacmi_hf.synthetic.banks`: oracle, swap p, the tiny CLIP bank of
`cacmi demo`, random vectors), in two worlds (`cacmi_hf.synthetic.WORLD_SETTINGS`: the present one, and one whose
pixels leave colour and shape ambiguous so that only a sentence carries them). The final model of each run (no
checkpoint selection) captions the test split; the table gives mean ± sd over seeds of F1, METEOR, CIDEr and
SODA_c, the top-1 retrieval accuracy of the pseudo-events (clusters or windows) on the test split, and the
diagnostics: CFE's update of the features and the text's share of it, the boundary F1 of the pseudo-events
against the events, the gradient norm reaching CFE and the decoder's text attention, and the CIDEr lost when each
test video is given another video's retrieved text.

Variants: `pdvc` (no retrieval), `cm2` (CM2: windows, top-1 exclusion, decoder text attention, no CFE), `cacmi`
(clusters + CFE + text attention), `cacmi_no_cfe` (clusters + text attention), `cacmi_no_cfa` (CM2's windows in
place of the clusters, CFE and text attention). PDVC does not read the bank, so it trains once per world and seed.

    python benchmarks/bench_mechanism.py --work-dir /tmp/mechanism --jobs 2        # the study (~1 h on 2 cores)
    python benchmarks/bench_mechanism.py --quick --work-dir /tmp/mechanism-quick   # plumbing check (CI, ~2 min)

Writes `mechanism.json` (every run and the aggregates), `mechanism.md` (the tables) and `mechanism.png` (each
metric against retrieval accuracy, one line per variant) into `--out` (default `benchmarks/results`; `--quick`:
WORK_DIR/results).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, dict[str, Any]] = {
    "pdvc": dict(use_cfa=False, use_cfe=False, decoder_text_cross_attention=False),
    "cm2": dict(use_cfa=True, use_cfe=False, decoder_text_cross_attention=True, retrieval_mode="windows",
                retrieval_exclude="top1"),
    "cacmi": dict(use_cfa=True, use_cfe=True, decoder_text_cross_attention=True, retrieval_mode="clusters"),
    "cacmi_no_cfe": dict(use_cfa=True, use_cfe=False, decoder_text_cross_attention=True, retrieval_mode="clusters"),
    "cacmi_no_cfa": dict(use_cfa=True, use_cfe=True, decoder_text_cross_attention=True, retrieval_mode="windows"),
}
LABELS = {"pdvc": "PDVC", "cm2": "CM2", "cacmi": "CACMI", "cacmi_no_cfe": "CACMI w/o CFE", "cacmi_no_cfa": "CACMI w/o CFA"}
METRICS = ("F1", "METEOR", "CIDEr", "SODA_c")
# Study-scale world: the demo's shapes and actions in 30-60 s videos of 2-4 events (1 fps, so L = 60 keeps every frame).
STUDY_WORLD = dict(min_duration_s=30.0, max_duration_s=60.0, max_events=4)
# The synthetic preset's model at 60 frames and half its width (what 2 CPU cores train ~100 times in an hour).
STUDY_MODEL = dict(num_frames=60, max_duration_bins=64, hidden_size=64, ffn_dim=128, caption_hidden_size=64,
                   num_clusters=8, retrieval_num_windows=8, retrieval_top_k=10)
FULL = dict(videos={"train": 160, "test": 40}, steps=200, seeds=[0, 1, 2], worlds=["present", "ambiguous"],
            banks=["oracle", "swap 0.5", "oracle (CLIP text)", "clip", "random"], clip_steps=50)
QUICK = dict(videos={"train": 12, "test": 4}, steps=3, seeds=[0], worlds=["ambiguous"],
             banks=["oracle", "swap 0.5", "clip", "random"], clip_steps=5)
BATCH = 8
LEARNING_RATE = 1e-3  # the synthetic preset's


def _slug(bank: str) -> str:
    """Folder name of a bank setting ("oracle (CLIP text)" -> "oracle_CLIP_text")."""
    return "_".join(bank.replace("(", " ").replace(")", " ").split())


# ------------------------------------------------------------------------------------------------------------------
# data: worlds, tiny CLIP, features, banks (built once, in the main process)


def prepare_world(name: str, work: Path, settings: dict) -> dict[str, str]:
    """World, tiny CLIP, features and every bank of one world setting under work/name; returns their paths."""
    import torch

    from cacmi_hf.data import build_memory_bank, save_memory_bank
    from cacmi_hf.data.extract import extract_features, find_videos
    from cacmi_hf.open_clip_tower import encode_texts, get_text_tokenizer, load_open_clip
    from cacmi_hf.synthetic import WORLD_SETTINGS, generate_world, get_or_train_tiny_clip
    from cacmi_hf.synthetic.banks import event_bank, random_bank, word_encoder

    root = work / name
    config = dataclasses.replace(WORLD_SETTINGS[name], **STUDY_WORLD)
    world = generate_world(root / "world", settings["videos"], seed=0, config=config, progress=False)
    clip_dir = get_or_train_tiny_clip(world.root, work / "clip_cache", steps=settings["clip_steps"], progress=False)
    features = root / "features"
    report = extract_features(find_videos(world.videos_dir), features, *load_open_clip(str(clip_dir)), fps=1.0,
                              batch_size=256, progress=False)
    if report.failed:
        raise RuntimeError(f"feature extraction failed for {len(report.failed)} videos of {world.root}")
    annotations = {s: json.loads(world.annotations[s].read_text()) for s in settings["videos"]}
    paths = {"world": str(world.root), "features": str(features)}
    model, spec = load_open_clip(str(clip_dir))
    tokenizer = get_text_tokenizer(spec)

    def clip_text(sentences):
        with torch.no_grad():
            return encode_texts(model, sentences, tokenizer)

    for bank in settings["banks"]:
        folder = root / "banks" / _slug(bank)
        paths[bank] = str(folder)
        if (folder / "memory_bank.safetensors").is_file():
            continue
        if bank in ("clip", "random"):
            pairs = [(vid, s) for vid, entry in annotations["train"].items() for s in entry["sentences"]]
            data = build_memory_bank(pairs, model, tokenizer, clip=spec.to_dict())
            data = random_bank(data, seed=0) if bank == "random" else data
            save_memory_bank(data, folder)
        else:
            # "oracle" / "swap p": every word kept (word_encoder); "... (CLIP text)": the tiny CLIP's text tower
            fraction = float(bank.split()[1]) if bank.startswith("swap") else 0.0
            encode = clip_text if bank.endswith("(CLIP text)") else word_encoder(spec.embed_dim, seed=0)
            everything = {vid: e for split in annotations.values() for vid, e in split.items()}
            data, table = event_bank(everything, encode, swap_fraction=fraction, seed=0)
            save_memory_bank(data, folder)
            torch.save(dataclasses.asdict(table), folder / "event_table.pt")
    return paths


# ------------------------------------------------------------------------------------------------------------------
# one run (in a worker process: one torch thread)

_CACHE: dict[str, Any] = {}


def _world_data(paths: dict[str, str]) -> dict[str, Any]:
    """Annotations, feature rows and caption tokenizer of a world (cached per process)."""
    import numpy as np

    from cacmi_hf.data.vocab import build_caption_tokenizer

    key = paths["world"]
    if key not in _CACHE:
        world = Path(paths["world"])
        annotations = {s: json.loads((world / f"{s}.json").read_text()) for s in ("train", "test")}
        rows = {
            split: [{"video_id": vid, "duration": e["duration"], "timestamps": e["timestamps"], "sentences": e["sentences"],
                     "video_features": np.load(Path(paths["features"]) / f"{vid}.npy")} for vid, e in notes.items()]
            for split, notes in annotations.items()
        }
        sentences = [s for e in annotations["train"].values() for s in e["sentences"]]
        tokenizer = build_caption_tokenizer(sentences, min_count=1, max_caption_len=10)
        _CACHE[key] = {"annotations": annotations, "rows": rows, "tokenizer": tokenizer}
    return _CACHE[key]


def _config(variant: str, tokenizer, memory_size: int, count_prior):
    """The study's CACMIConfig of a variant."""
    from cacmi_hf import CACMIConfig
    from cacmi_hf.training.presets import SYNTHETIC_CONFIG

    values = {**SYNTHETIC_CONFIG, **STUDY_MODEL, **VARIANTS[variant], "vocab_size": len(tokenizer),
              "memory_size": memory_size, "count_prior": count_prior}
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id"):
        values[name] = getattr(tokenizer, name)
    return CACMIConfig(**values)


def _other_videos_text(inner):
    """Counterfactual CFA: each video of the batch gets the retrieved text of the previous one (its own spans)."""
    from torch import nn

    class OtherVideosText(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            """CFA's output with text_queries / text_mask rolled by one video along the batch."""
            out = self.inner(*args, **kwargs)
            out.text_queries = out.text_queries.roll(1, dims=0)
            out.text_mask = out.text_mask.roll(1, dims=0)
            return out

    return OtherVideosText()


def _caption(model, rows, collator, tokenizer, batch_size: int = 20):
    """Predictions {video: events} of the model on `rows` and the concatenated retrieval outputs."""
    import torch

    from cacmi_hf.post_processing import post_process_dense_video_captioning

    predictions, spans, indices, batches = {}, [], [], []
    for start in range(0, len(rows), batch_size):
        batch = collator(rows[start : start + batch_size])
        with torch.no_grad():
            out = model.generate(video_features=batch["video_features"], video_mask=batch["video_mask"],
                                 durations=batch["durations"], video_ids=batch["video_ids"])
        events = post_process_dense_video_captioning(
            out.logits, out.pred_segments, out.pred_counts, out.caption_ids, out.caption_log_probs, batch["durations"],
            tokenizer=tokenizer, event_count="expected", pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        for name, video in zip(batch["video_names"], events):
            predictions[name] = [{"timestamp": e["timestamp"], "sentence": e["caption"]} for e in video]
        if out.text_spans is not None:
            spans.append(out.text_spans)
            indices.append(out.retrieved_indices)
        batches.append(batch)
    retrieval = (torch.cat(spans), torch.cat(indices)) if spans else None
    return predictions, retrieval, batches


def _score(predictions, references, no_java: bool) -> dict[str, float]:
    """F1 (mean over tIoU 0.3-0.9), METEOR, CIDEr, SODA_c of a prediction set (METEOR / SODA_c only with Java)."""
    from cacmi_hf.evaluation import evaluate_dense_captions
    from cacmi_hf.evaluation.meteor import shared_meteor

    result = evaluate_dense_captions(predictions, references, no_java=no_java, meteor=None if no_java else shared_meteor())
    scores = {m: result["average"].get(m) for m in METRICS if m != "SODA_c"}
    scores["SODA_c"] = result.get("SODA_c")
    return {k: (float(v) if v is not None else None) for k, v in scores.items()}


def run_one(job: dict) -> dict:
    """Train one (world, variant, bank, seed) for `steps` steps, caption the test split, measure; returns a record."""
    import numpy as np
    import torch

    from cacmi_hf import CACMIForDenseCaptioning
    from cacmi_hf.criterion import estimate_count_prior
    from cacmi_hf.data import DenseCaptioningCollator, load_memory_bank
    from cacmi_hf.synthetic.banks import EventTable, install_bank, retrieval_accuracy
    from cacmi_hf.synthetic.diagnostics import boundary_f1, cfe_text_share, gradient_norms
    from cacmi_hf.training.scheduler import get_step_halving_schedule

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    started = time.perf_counter()
    data = _world_data(job["paths"])
    tokenizer, train_rows, test_rows = data["tokenizer"], data["rows"]["train"], data["rows"]["test"]
    variant, seed, steps = job["variant"], job["seed"], job["steps"]
    bank = table = None
    if VARIANTS[variant]["use_cfa"]:
        folder = Path(job["paths"][job["bank"]])
        bank = load_memory_bank(folder)
        if (folder / "event_table.pt").is_file():
            table = EventTable(**torch.load(folder / "event_table.pt"))
    counts = [len(r["timestamps"]) for r in train_rows]
    probe = _config(variant, tokenizer, bank.num_entries if bank else 0, None)
    config = _config(variant, tokenizer, bank.num_entries if bank else 0, estimate_count_prior(counts, probe.max_event_count))
    torch.manual_seed(seed)
    model = CACMIForDenseCaptioning(config)
    if bank is not None:
        install_bank(model, bank, table)
    lookup = bank.video_lookup if bank is not None else None
    train_collator = DenseCaptioningCollator(tokenizer, config, memory_video_lookup=lookup, training=True, seed=seed)
    test_collator = DenseCaptioningCollator(tokenizer, config, memory_video_lookup=lookup, training=False,
                                            return_video_names=True)

    # the synthetic recipe's shape over `steps`: Adam with L2 decay, clip 100, constant for half the epochs, then
    # halved four times (the preset: 50 epochs, halved at 24, 30, 36, 42)
    per_epoch = math.ceil(len(train_rows) / BATCH)
    epochs = math.ceil(steps / per_epoch)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    start = max(1, epochs // 2)
    schedule = get_step_halving_schedule(optimizer, per_epoch, epochs, start, max(1, (epochs - start) // 4))
    order = np.random.default_rng(seed)
    model.train()
    losses, norms = [], []
    queue: list[int] = []
    for _ in range(steps):
        if len(queue) < BATCH:
            queue += order.permutation(len(train_rows)).tolist()
        picked, queue = queue[:BATCH], queue[BATCH:]
        batch = train_collator([train_rows[i] for i in picked])
        out = model(**{k: v for k, v in batch.items() if k != "video_names"})
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        norms.append(gradient_norms(model))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        optimizer.step()
        schedule.step()
        losses.append(float(out.loss.detach()))
    train_seconds = time.perf_counter() - started

    model.eval()
    references = data["annotations"]["test"]
    predictions, retrieval, batches = _caption(model, test_rows, test_collator, tokenizer)
    record = {k: job[k] for k in ("world", "variant", "bank", "seed", "steps")}
    record["scores"] = _score(predictions, references, job["no_java"])
    record["train_loss_last"] = float(np.mean(losses[-max(1, steps // 10):]))
    tail = norms[-max(1, steps // 2):]
    record["grad_norm"] = {k: float(np.mean([n[k] for n in tail])) for k in norms[0]}
    if retrieval is not None:
        spans, indices = retrieval
        frames = [config.num_frames] * len(test_rows)
        notes = [references[r["video_id"]] for r in test_rows]
        record["retrieval"] = retrieval_accuracy(spans, indices, frames, notes, bank.sentences)
        record["boundary"] = boundary_f1(spans, frames, notes, tolerance=1.0)
        # the same model with each test video given another video's retrieved text: what the text is worth
        cfa = model.cacmi.frame_aggregation
        model.cacmi.frame_aggregation = _other_videos_text(cfa)
        swapped, _, _ = _caption(model, test_rows, test_collator, tokenizer)
        model.cacmi.frame_aggregation = cfa
        record["other_text_scores"] = _score(swapped, references, True)
        if model.cacmi.feature_enhancement is not None:
            shares = []
            for batch in batches:
                features = batch["video_features"].masked_fill(~batch["video_mask"][..., None], 0)
                with torch.no_grad():
                    text = cfa(features, batch["video_mask"], model.memory_bank, batch["video_ids"])
                shares.append(cfe_text_share(model.cacmi.feature_enhancement, features, batch["video_mask"],
                                             text.text_queries, text.text_mask))
            record["cfe"] = {k: float(np.mean([s[k] for s in shares])) for k in shares[0]}
    record["seconds"] = time.perf_counter() - started
    record["train_seconds"] = train_seconds
    out_dir = Path(job["run_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "predictions.json").write_text(json.dumps({"results": predictions}))
    (out_dir / "record.json").write_text(json.dumps(record, indent=1))
    return record


# ------------------------------------------------------------------------------------------------------------------
# aggregation, tables, plot


def _mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(records: list[dict]) -> list[dict]:
    """Mean ± sd over seeds per (world, bank, variant); PDVC's runs (bank "none") stand for every bank."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["world"], r["bank"], r["variant"]), []).append(r)
    rows = []
    for (world, bank, variant), runs in groups.items():
        row = {"world": world, "bank": bank, "variant": variant, "seeds": len(runs)}
        for metric in METRICS:
            values = [100 * r["scores"][metric] for r in runs if r["scores"].get(metric) is not None]
            row[metric] = _mean_sd(values) if values else None
        if "retrieval" in runs[0]:
            row["acc@1"] = 100 * statistics.mean(r["retrieval"]["acc@1"] for r in runs)
            row["boundary_f1"] = 100 * statistics.mean(r["boundary"]["f1"] for r in runs)
            row["cider_other_text"] = _mean_sd([100 * (r["scores"]["CIDEr"] - r["other_text_scores"]["CIDEr"]) for r in runs])
        if "cfe" in runs[0]:
            row["cfe_update"] = statistics.mean(r["cfe"]["update"] for r in runs)
            row["cfe_text_share"] = statistics.mean(r["cfe"]["text_share"] for r in runs)
        row["grad_cfe"] = statistics.mean(r["grad_norm"]["cfe"] for r in runs)
        row["grad_text"] = statistics.mean(r["grad_norm"]["text_attention"] for r in runs)
        row["grad_total"] = statistics.mean(r["grad_norm"]["total"] for r in runs)
        row["train_loss_last"] = statistics.mean(r["train_loss_last"] for r in runs)
        rows.append(row)
    return rows


def compare(a, b) -> str:
    """">" / "<" when the means differ by more than the larger seed sd, else "tie"."""
    if a is None or b is None:
        return "?"
    (ma, sa), (mb, sb) = a, b
    return "tie" if abs(ma - mb) <= max(sa, sb) else (">" if ma > mb else "<")


# two-sided 95 % quantiles of Student's t by degrees of freedom (seeds - 1)
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
PAIRS = (("cacmi", "cm2"), ("cm2", "pdvc"), ("cacmi", "pdvc"), ("cacmi", "cacmi_no_cfe"), ("cacmi", "cacmi_no_cfa"))


def paired(records: list[dict], banks: list[str] | None = None) -> list[dict]:
    """Same-seed differences a - b per (world, bank, metric) for each pair of variants in PAIRS.

    Runs with the same seed share the world, the batches and the initial weights of every module they have in
    common, so the per-seed difference removes the seed's own luck; the call is ">" / "<" where the 95 % t
    interval of the mean difference excludes 0, else "tie". PDVC's runs (bank "none") pair with every bank.
    """
    by_key = {(r["world"], r["bank"], r["variant"], r["seed"]): r for r in records}
    worlds = sorted({r["world"] for r in records})
    banks = banks or list(dict.fromkeys(r["bank"] for r in records if r["bank"] != "none"))
    rows = []
    for world in worlds:
        for bank in banks:
            for a, b in PAIRS:
                for metric in METRICS:
                    diffs = []
                    for seed in sorted({r["seed"] for r in records}):
                        ra = by_key.get((world, "none" if a == "pdvc" else bank, a, seed))
                        rb = by_key.get((world, "none" if b == "pdvc" else bank, b, seed))
                        if ra and rb and ra["scores"].get(metric) is not None and rb["scores"].get(metric) is not None:
                            diffs.append(100 * (ra["scores"][metric] - rb["scores"][metric]))
                    if len(diffs) < 2:
                        continue
                    mean, sd = _mean_sd(diffs)
                    half = T_975.get(len(diffs) - 1, 1.96) * sd / math.sqrt(len(diffs))
                    call = ">" if mean - half > 0 else ("<" if mean + half < 0 else "tie")
                    rows.append({"world": world, "bank": bank, "a": a, "b": b, "metric": metric, "seeds": len(diffs),
                                 "differences": diffs, "mean": mean, "sd": sd, "ci95": half, "call": call})
    return rows


def paired_table(rows: list[dict]) -> str:
    """Markdown: one line per (world, bank, pair), the mean same-seed difference ± sd and the call per metric."""
    lines = ["| world | bank | a − b | seeds | " + " | ".join(METRICS) + " |", "| --- | --- | --- | ---: |" + " --- |" * len(METRICS)]
    index = {(r["world"], r["bank"], r["a"], r["b"], r["metric"]): r for r in rows}
    for world, bank, a, b in dict.fromkeys((r["world"], r["bank"], r["a"], r["b"]) for r in rows):
        cells = []
        for metric in METRICS:
            r = index.get((world, bank, a, b, metric))
            cells.append("—" if r is None else f"{r['mean']:+.1f} ± {r['sd']:.1f} ({r['call']})")
        seeds = max(r["seeds"] for r in rows if (r["world"], r["bank"], r["a"], r["b"]) == (world, bank, a, b))
        lines.append(f"| {world} | {bank} | {LABELS[a]} − {LABELS[b]} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    return "—" if value is None else f"{value[0]:.1f} ± {value[1]:.1f}"


def tables(rows: list[dict], worlds: list[str], banks: list[str]) -> str:
    """Markdown: scores per world × bank × variant, the orderings, the diagnostics."""
    index = {(r["world"], r["bank"], r["variant"]): r for r in rows}
    lines = ["| world | bank | variant | seeds | F1 | METEOR | CIDEr | SODA_c | acc@1 |", "| --- | --- | --- | ---: |" + " ---: |" * 5]
    for world in worlds:
        if (world, "none", "pdvc") in index:
            r = index[(world, "none", "pdvc")]
            lines.append(f"| {world} | (none) | PDVC | {r['seeds']} | " + " | ".join(_cell(r[m]) for m in METRICS) + " | — |")
        for bank in banks:
            for variant in VARIANTS:
                r = index.get((world, bank, variant))
                if r is None:
                    continue
                lines.append(f"| {world} | {bank} | {LABELS[variant]} | {r['seeds']} | " + " | ".join(_cell(r[m]) for m in METRICS)
                             + f" | {r['acc@1']:.1f} |")
    lines += ["", "Orderings (`>` / `<`: the means differ by more than the larger seed sd; otherwise `tie`). The last column: "
              "`fails` when one of the three is `<`, `holds` when none is and one is `>`, `tie` when all three are:", "",
              "| world | bank | metric | CACMI vs CM2 | CM2 vs PDVC | CACMI vs PDVC | CACMI >= CM2 >= PDVC |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for world in worlds:
        pdvc = index.get((world, "none", "pdvc"))
        for bank in banks:
            cacmi, cm2 = index.get((world, bank, "cacmi")), index.get((world, bank, "cm2"))
            if not (pdvc and cacmi and cm2):
                continue
            for m in METRICS:
                ab, bc, ac = compare(cacmi[m], cm2[m]), compare(cm2[m], pdvc[m]), compare(cacmi[m], pdvc[m])
                marks = (ab, bc, ac)
                holds = "fails" if "<" in marks else ("holds" if ">" in marks else "tie")
                lines.append(f"| {world} | {bank} | {m} | {ab} | {bc} | {ac} | {holds} |")
    lines += ["", "Diagnostics (test split; gradient norms: mean over the second half of training, before clipping):", "",
              "| world | bank | variant | pseudo-event boundary F1 | CFE update / feature norm | text share of CFE's update | "
              "CIDEr lost with another video's text | grad norm CFE | grad norm text attention | grad norm total | final train loss |",
              "| --- | --- | --- |" + " ---: |" * 8]
    for world in worlds:
        for bank in ["none", *banks]:
            for variant in VARIANTS:
                r = index.get((world, bank, variant))
                if r is None:
                    continue
                cfe = (f"{r['cfe_update']:.3f} | {r['cfe_text_share']:.2f}" if "cfe_update" in r else "— | —")
                boundary = f"{r['boundary_f1']:.1f}" if "boundary_f1" in r else "—"
                lost = _cell(r["cider_other_text"]) if "cider_other_text" in r else "—"
                lines.append(f"| {world} | {bank} | {LABELS[variant]} | {boundary} | {cfe} | {lost} | {r['grad_cfe']:.3f} | "
                             f"{r['grad_text']:.3f} | {r['grad_total']:.2f} | {r['train_loss_last']:.2f} |")
    return "\n".join(lines)


def plot(rows: list[dict], worlds: list[str], path: Path) -> None:
    """Each metric against the pseudo-events' retrieval acc@1, one line per variant (PDVC: a band), one row per world;
    the oracle through the tiny CLIP's text tower is a hollow square beside the line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if any(r.get(m) for r in rows)]
    fig, axes = plt.subplots(len(worlds), len(metrics), figsize=(4 * len(metrics), 3.3 * len(worlds)), squeeze=False)
    colours = {"cm2": "tab:orange", "cacmi": "tab:blue", "cacmi_no_cfe": "tab:green", "cacmi_no_cfa": "tab:purple"}
    for i, world in enumerate(worlds):
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            pdvc = next((r for r in rows if r["world"] == world and r["variant"] == "pdvc"), None)
            if pdvc and pdvc.get(metric):
                mean, sd = pdvc[metric]
                ax.axhline(mean, color="grey", label="PDVC")
                ax.axhspan(mean - sd, mean + sd, color="grey", alpha=0.2)
            for variant, colour in colours.items():
                mine = [r for r in rows if r["world"] == world and r["variant"] == variant and r.get(metric)]
                points = sorted((r["acc@1"], r[metric], r["bank"]) for r in mine if "CLIP text" not in r["bank"])
                for r in mine:
                    if "CLIP text" in r["bank"]:  # the oracle through the tiny CLIP's text tower: off the line
                        ax.errorbar([r["acc@1"]], [r[metric][0]], yerr=[r[metric][1]], marker="s", mfc="none",
                                    capsize=3, color=colour, linestyle="none")
                if not points:
                    continue
                ax.errorbar([p[0] for p in points], [p[1][0] for p in points], yerr=[p[1][1] for p in points],
                            marker="o", capsize=3, color=colour, label=LABELS[variant])
                if variant == "cacmi":
                    for x, (y, _), bank in points:
                        ax.annotate(bank, (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
            ax.set_title(f"{world} world: {metric}", fontsize=9)
            ax.set_xlabel("retrieval acc@1 of the pseudo-events (%)", fontsize=8)
            ax.grid(alpha=0.3)
    legend = {}
    for ax in fig.axes:  # one legend for the figure: every variant drawn anywhere
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend), fontsize=8,
               title="hollow square: the oracle through the tiny CLIP's text tower", title_fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------------------


def _priority(world: str, variant: str, bank: str) -> tuple:
    """Run order: the question first (PDVC, CM2 and CACMI at the CLIP bank in both worlds and at the oracle in the
    ambiguous one), then the ablations at the ambiguous oracle, then the other oracle / swap / CLIP-text settings,
    then random vectors, then the ablations elsewhere."""
    main_variant = variant in ("pdvc", "cm2", "cacmi")
    if main_variant and (bank in ("none", "clip") or (bank == "oracle" and world == "ambiguous")):
        tier = 0
    elif variant != "pdvc" and bank == "oracle" and world == "ambiguous":
        tier = 1
    elif main_variant and bank != "random":
        tier = 2
    elif main_variant or bank == "oracle":
        tier = 3
    else:
        tier = 4
    return (tier, world != "ambiguous", list(VARIANTS).index(variant), bank)


def jobs_for(settings: dict, worlds: dict[str, dict], work: Path, no_java: bool) -> list[dict]:
    """Every run of the study (PDVC once per world and seed, the retrieval variants once per bank too), in priority
    order with a configuration's seeds together, so that a study cut short by --deadline-minutes leaves whole
    configurations."""
    configs = [(world, variant, bank) for world in settings["worlds"] for variant in VARIANTS
               for bank in (["none"] if variant == "pdvc" else settings["banks"])]
    jobs = []
    for world, variant, bank in sorted(configs, key=lambda c: _priority(*c)):
        for seed in settings["seeds"]:
            run_dir = work / "runs" / world / _slug(bank) / f"{variant}_{seed}"
            jobs.append({"world": world, "variant": variant, "bank": bank, "seed": seed, "steps": settings["steps"],
                         "paths": worlds[world], "no_java": no_java, "run_dir": str(run_dir)})
    return jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("mechanism-study"))
    parser.add_argument("--out", type=Path, default=None, help="where the JSON, tables and plot go")
    parser.add_argument("--quick", action="store_true", help="a tiny world, 3 steps, 1 seed, one world: the plumbing")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (one torch thread each)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--worlds", nargs="+", default=None, choices=["present", "ambiguous"])
    parser.add_argument("--banks", nargs="+", default=None, help='e.g. oracle "swap 0.5" clip random')
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS))
    parser.add_argument("--no-java", action="store_true", help="no METEOR / SODA_c")
    parser.add_argument("--resume", action="store_true", help="reuse runs that already wrote record.json")
    parser.add_argument("--deadline-minutes", type=float, default=None,
                        help="start no run after this many minutes; the tables then hold the configurations that finished")
    args = parser.parse_args()
    settings = dict(QUICK if args.quick else FULL)
    for key in ("seeds", "steps", "worlds", "banks"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    out = args.out or (args.work_dir / "results" if args.quick else REPO / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    worlds = {w: prepare_world(w, args.work_dir, settings) for w in settings["worlds"]}
    print(f"[{time.perf_counter() - started:6.0f}s] worlds, tiny CLIPs, features and banks ready", flush=True)
    jobs = jobs_for(settings, worlds, args.work_dir, args.no_java)
    if args.variants:
        jobs = [j for j in jobs if j["variant"] in args.variants]
    records, pending = [], []
    for job in jobs:
        done = Path(job["run_dir"]) / "record.json"
        if args.resume and done.is_file():
            records.append(json.loads(done.read_text()))
        else:
            pending.append(job)
    reused = len(records)

    def report(record):
        """Keep a finished run's record and print one line about it."""
        records.append(record)
        print(f"[{time.perf_counter() - started:6.0f}s] {len(records)}/{len(jobs)} {record['world']} {record['bank']} "
              f"{record['variant']} seed {record['seed']}: F1 {100 * record['scores']['F1']:.1f} CIDEr "
              f"{100 * record['scores']['CIDEr']:.1f} ({record['seconds']:.0f} s)", flush=True)

    def in_time() -> bool:
        """Whether a new run may still start."""
        return args.deadline_minutes is None or time.perf_counter() - started < 60 * args.deadline_minutes

    if args.jobs <= 1:
        for job in pending:
            if not in_time():
                break
            report(run_one(job))
    else:
        context = multiprocessing.get_context("spawn")  # fresh interpreters: no OpenMP state inherited through fork
        with context.Pool(args.jobs) as pool:
            running = []
            while pending or running:
                while pending and len(running) < args.jobs and in_time():
                    running.append(pool.apply_async(run_one, (pending.pop(0),)))
                if not running:
                    break
                done = [r for r in running if r.ready()]
                for result in done:
                    running.remove(result)
                    report(result.get())
                if not done:
                    time.sleep(2)
    skipped = len(jobs) - len(records)
    if skipped:
        print(f"Deadline: {skipped} runs not started; configurations with fewer seeds than asked are left out of the "
              "tables and listed in the JSON", flush=True)
    complete = {}
    for r in records:
        complete.setdefault((r["world"], r["variant"], r["bank"]), []).append(r)
    dropped = sorted({(j["world"], j["variant"], j["bank"]) for j in jobs} - {k for k, v in complete.items()
                                                                          if len(v) == len(settings["seeds"])})
    records = [r for r in records if (r["world"], r["variant"], r["bank"]) not in dropped]
    rows = aggregate(records)
    text = tables(rows, settings["worlds"], settings["banks"])
    header = (f"Retrieval study: {settings['steps']} steps of batch {BATCH}, seeds {settings['seeds']}, "
              f"{settings['videos']['train']} train / {settings['videos']['test']} test videos per world, "
              f"{os.cpu_count()} CPUs, {len(records)} runs of {statistics.mean(r['seconds'] for r in records):.0f} s wall each "
              f"on average (train + test + diagnostics, one torch thread); this invocation: "
              f"{(time.perf_counter() - started) / 60:.1f} min wall, {len(records) - reused} runs made, {reused} reused. Scores in %.\n\n") if records else "No runs.\n\n"
    pairs = paired(records, settings["banks"])
    if pairs:
        text += ("\n\nSame-seed differences (a − b, in points; mean ± sd over seeds; `>` / `<` where the 95 % t interval "
                 "of the mean difference excludes 0, else `tie`):\n\n" + paired_table(pairs))
    if dropped:
        text += "\n\nNot run (deadline): " + "; ".join(f"{w} / {b} / {LABELS[v]}" for w, v, b in dropped)
    (out / "mechanism.md").write_text(header + text + "\n")
    (out / "mechanism.json").write_text(json.dumps({"settings": {k: v for k, v in settings.items()}, "model": STUDY_MODEL,
                                                    "world": STUDY_WORLD, "aggregates": rows, "paired": pairs, "runs": records,
                                                    "wall_seconds": time.perf_counter() - started,
                                                    "runs_reused": reused,
                                                    "dropped": [list(d) for d in dropped]}, indent=1))
    plot(rows, settings["worlds"], out / "mechanism.png")
    print(header + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
