"""Parity at the published sizes: PDVC and CM2 built by their own code with random weights, against the same
checkpoints converted with `cacmi convert` (weights: each reference's initialisation plus the fixtures' noise,
scaled to each tensor's fan-in); max abs difference of every output, identical captions and events,
and the time of their batch 1 against our batched run.

    python benchmarks/bench_parity.py --pdvc PATH/TO/PDVC --cm2 PATH/TO/CM2_DVC [--videos 6] [--only cm2_anet]

Runs the references through benchmarks/make_parity_fixtures.py (the one file that imports them; same CPU
patches, see its docstring) with their config files' sizes: hidden 512, 2 + 2 layers, LSTM 512, captions of
30 words, their whole vocabularies; CM2 with 768-d CLIP-style features and a random float16 bank of its real
size (37,421 ActivityNet / 10,337 YouCook2 captions). Writes benchmarks/results/parity.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_parity_fixtures as mpf  # noqa: E402

from cacmi_hf.convert import convert  # noqa: E402

OUTPUTS = ("memory", "hs", "layer_boxes", "pred_boxes", "logits", "counts", "seq_log_probs", "window_embeds", "text_memory")


def reference_ids(ids: torch.Tensor, length: int, rows: int) -> torch.Tensor:
    """Our generated ids (N, T) in the reference's numbering: words then zeros; our UNK (3) as its last row."""
    words = ids[:, 1:]
    words = torch.nn.functional.pad(words, (0, max(0, length - words.shape[1])))[:, :length]
    mapped = torch.where(words >= 4, words - 3, torch.zeros_like(words))
    return torch.where(words == 3, torch.full_like(words, rows - 1), mapped)


def compare(name: str, conv, videos: list, records: list, batch: int) -> dict:
    """Our batched run against the reference's batch-1 records: max abs differences, identical captions/events, times."""
    model = conv.model.eval()
    length = max(v["features"].shape[0] for v in videos)
    features = torch.zeros(len(videos), length, videos[0]["features"].shape[1])
    mask = torch.zeros(len(videos), length, dtype=torch.bool)
    for i, v in enumerate(videos):
        features[i, : v["features"].shape[0]] = torch.from_numpy(v["features"])
        mask[i, : v["features"].shape[0]] = True
    durations = torch.tensor([v["duration"] for v in videos])
    with torch.no_grad():
        model_out = model.cacmi(features, mask, durations)
        start = time.perf_counter()
        outs = [
            model.generate(video_features=features[i : i + batch], video_mask=mask[i : i + batch],
                           durations=durations[i : i + batch])
            for i in range(0, len(videos), batch)
        ]
        ours_seconds = time.perf_counter() - start
    errors: dict[str, float] = {}
    captions_same = events_same = 0
    for index, record in enumerate(records):
        out, row = outs[index // batch], index % batch
        ours = {
            "memory": model_out.memory[index][model_out.memory_mask[index]],
            "hs": model_out.decoder_hidden_states[:, index],
            "layer_boxes": model_out.pred_segments[:, index],
            "pred_boxes": out.pred_segments[row],
            "logits": torch.stack([o["logits"][row] for o in out.aux_outputs] + [out.logits[row]]),
            "counts": torch.stack([o["pred_counts"][row] for o in out.aux_outputs] + [out.pred_counts[row]]),
        }
        if "window_embeds" in record:
            ours["window_embeds"] = model_out.text_queries[index]
            with torch.no_grad():
                text = model.cacmi.encode_text(model_out.text_queries[index : index + 1], model_out.text_mask[index : index + 1])
            ours["text_memory"] = text[0]
            record = dict(record, text_memory=record["text_memory"][: text.shape[1]])
        seq = record["seq"]
        ids = reference_ids(out.caption_ids[row], seq.shape[1], model.config.vocab_size - 2)
        same = torch.equal(ids, seq)
        captions_same += same
        words = seq > 0
        ours["seq_log_probs"] = torch.nn.functional.pad(out.caption_log_probs[row][:, 1:], (0, seq.shape[1]))[:, : seq.shape[1]][words]
        record = dict(record, seq_log_probs=record["seq_log_probs"][words])
        for key, value in ours.items():
            errors[key] = max(errors.get(key, 0.0), float((value.float() - record[key].float()).abs().max()) if value.numel() else 0.0)
        events = conv.processor.post_process_dense_video_captioning(
            out, durations[index : index + 1] if batch == 1 else durations[(index // batch) * batch : (index // batch) * batch + batch],
            rerank_alpha=model.config.rerank_alpha,
        )[row]
        reference = [(e["query_id"], e["sentence"][:-1] if e["sentence"].endswith(".") else e["sentence"]) for e in record["events"]]
        events_same += [(e["query_index"], e["caption"]) for e in events] == reference
    return {
        "config": name,
        "videos": len(records),
        "max_abs_diff": {k: errors[k] for k in OUTPUTS if k in errors},
        "captions_identical": f"{captions_same}/{len(records)}",
        "events_identical": f"{events_same}/{len(records)}",
        "reference_batch1_seconds": round(sum(r["seconds"] for r in records), 3),
        f"ours_batch{batch}_seconds": round(ours_seconds, 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdvc", type=Path)
    parser.add_argument("--cm2", type=Path)
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--batch", type=int, default=6, help="our batch size (theirs is 1)")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "parity.json")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    results = []
    jobs = [("pdvc", n, args.pdvc) for n in mpf.PDVC_CONFIGS if args.pdvc] + [("cm2", n, args.cm2) for n in mpf.CM2_CONFIGS if args.cm2]
    for seed, (source, name, root) in enumerate(jobs, start=101):
        if args.only and name not in args.only:
            continue
        lengths = [int(x) for x in rng.integers(60, 240, size=args.videos)]
        durations = [round(float(x), 2) for x in rng.uniform(20, 300, size=args.videos)]
        scale = mpf.Scale(sizes={}, vocab_words=None, text_dim=768, lengths=lengths, durations=durations,
                          bank_size=mpf.FULL_BANKS["yc2" if "yc2" in name else "anet"], noise_width=32)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / name
            run = mpf.pdvc_fixture if source == "pdvc" else mpf.cm2_fixture
            opt, videos, records = run(root.resolve(), name, folder, seed, scale)
            conv = convert(source, folder / "model-best.pth", memory_bank=folder / "bank" if source == "cm2" else None)
            row = compare(name, conv, videos, records, args.batch)
        row.update(hidden=opt.hidden_dim, queries=opt.num_queries, vocabulary=opt.vocab_size)
        print(json.dumps(row), flush=True)
        results.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": os.cpu_count()}
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
