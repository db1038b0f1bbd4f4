#!/usr/bin/env python
"""What the memory bank gives back on the synthetic world: how often the sentences retrieved for a test video's
pseudo-events name the right colour, shape and action.

For each test video of a `cacmi demo` run, the trained model's CFA (Ward clusters) and CM2-style windows
retrieve from its memory bank; every span that lies mostly inside one ground-truth event is compared with that
event's caption, for the best match and for all top-k (chance: colour 1/6, shape 1/4, action 1/7).

    cacmi demo --work-dir /tmp/demo
    python benchmarks/bench_retrieval.py --work-dir /tmp/demo
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch

from cacmi_hf import CACMIForDenseCaptioning
from cacmi_hf.frame_aggregation import CrossModalFrameAggregation
from cacmi_hf.synthetic import parse_caption
from cacmi_hf.video_decoding import nearest_indices

PARTS = ("colour", "shape", "action", "all three")


def span_hits(spans, indices, parsed, reference, num_frames):
    """Per span mostly inside one event: (top-1 hits, mean top-k hits), each a 4-vector over PARTS."""
    duration = float(reference["duration"])
    events = [(s, e, parse_caption(c)) for (s, e), c in zip(reference["timestamps"], reference["sentences"])]
    rows = []
    for (first, last), retrieved in zip(spans.tolist(), indices.tolist()):
        if first < 0:
            continue
        start, end = first * duration / num_frames, (last + 1) * duration / num_frames
        overlap = [max(0.0, min(end, e) - max(start, s)) for s, e, _ in events]
        best = int(np.argmax(overlap))
        if overlap[best] < 0.5 * (end - start):
            continue  # mostly background or split between events
        truth = events[best][2]
        top = [parsed[i] for i in retrieved if i >= 0]

        def hits(group):
            return [np.mean([p[j] == truth[j] for p in group]) for j in range(3)] + [np.mean([p == truth for p in group])]

        rows.append((hits(top[:1]), hits(top)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("cacmi-demo"), help="a `cacmi demo --work-dir` folder")
    parser.add_argument("--variant", default="cacmi", help="whose model-<variant> folder to load (needs CFA)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    full = args.work_dir / "full"
    model_dir = full / f"model-{args.variant}"
    model = CACMIForDenseCaptioning.from_pretrained(str(model_dir)).eval()
    if model.memory_bank is None:
        raise SystemExit(f"{model_dir} has no memory bank (variant without CFA); use a cacmi or cm2 model.")
    parsed = [parse_caption(s) for s in json.loads((model_dir / "memory_sentences.json").read_text())]
    references = json.loads((full / "world" / "test.json").read_text())
    features_dir = sorted((full / "features").glob("*/"))[0]
    videos = sorted(references)
    length = model.config.num_frames
    features = []
    for vid in videos:
        x = torch.from_numpy(np.load(features_dir / f"{vid}.npy")).float()  # (T, D)
        features.append(x[torch.as_tensor(nearest_indices(x.shape[0], length))])  # (L, D), as the collator
    features = torch.stack(features)  # (B, L, D)
    mask = torch.ones(features.shape[:2], dtype=torch.bool)
    print(f"Test split ({len(videos)} videos), retrieval from {model_dir}'s memory bank ({len(parsed)} sentences):")
    print("| spans | mostly inside an event | retrieved | " + " | ".join(PARTS) + " |")
    print("| --- | ---: | --- |" + " ---: |" * len(PARTS))
    for mode in ("clusters", "windows"):
        config = copy.deepcopy(model.config)
        config.retrieval_mode = mode
        cfa = CrossModalFrameAggregation(config).eval()
        with torch.no_grad():
            out = cfa(features, mask, model.memory_bank)
        rows = [r for b, vid in enumerate(videos)
                for r in span_hits(out.spans[b], out.retrieved_indices[b], parsed, references[vid], length)]
        total = int((out.spans[..., 0] >= 0).sum())
        for label, k in (("top-1", 0), (f"top-{cfa.top_k}", 1)):
            cells = " | ".join(f"{100 * np.mean([r[k][j] for r in rows]):.1f}%" for j in range(len(PARTS)))
            print(f"| {mode} ({total}) | {len(rows)} | {label} | {cells} |")
    print("chance: colour 16.7%, shape 25.0%, action 14.3%, all three 0.6%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
