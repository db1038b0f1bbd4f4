"""A training step with CFA's Ward clustering cached per video (`WardClusterCache`) against clustering every step.

    python benchmarks/bench_cluster_cache.py [--batch 8] [--repeats 5] [--device cpu]

ActivityNet preset (L = 100 frames, c = 10 clusters, 37,421-entry bank, 8.5k words), random features and
labels (4 events × 10 tokens per video), train mode: forward with the loss, backward, Adam step. With frozen
features the same batch comes back every epoch; "cached" steps find every video in the cache (as from the
second epoch on), "uncached" steps run the L − c Ward merges. The two alternate (DESIGN §8); medians. Also
timed: the clustering call alone, Ward vs the cache lookup.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_model import build, inputs

    from cacmi_hf.cluster_cache import WardClusterCache
    from cacmi_hf.frame_aggregation import contiguous_ward_clustering

    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    model = build("activitynet", device).train()
    cfa = model.cacmi.frame_aggregation
    data = inputs(model.config, args.batch, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
    cache = WardClusterCache()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step():
        loss = model(**data).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()

    features, mask = data["video_features"], data["video_mask"]
    c, span = cfa.num_clusters, cfa.max_span
    cases = {
        "training step, Ward every step": lambda: (setattr(cfa, "cluster_cache", None), step()),
        "training step, clustering cached": lambda: (setattr(cfa, "cluster_cache", cache), step()),
        "clustering alone, Ward": lambda: (contiguous_ward_clustering(features, mask, c, span), sync()),
        "clustering alone, cache lookup": lambda: (cache(features, mask, c, span), sync()),
    }
    cfa.cluster_cache = cache
    step()  # warm-up; fills the cache (the first epoch)
    runs = {name: [] for name in cases}
    for round_ in range(args.repeats):
        for name in (list(cases) if round_ % 2 == 0 else list(cases)[::-1]):
            start = time.perf_counter()
            cases[name]()
            runs[name].append(time.perf_counter() - start)
    med = {name: statistics.median(values) for name, values in runs.items()}
    print(f"ActivityNet preset, batch {args.batch}, L = {model.config.num_frames}, c = {c}, span limit {span}; "
          f"{device}, torch {torch.__version__}, {torch.get_num_threads()} threads; {args.repeats} alternating rounds, "
          f"medians; cache hits {cache.hits}, misses {cache.misses}\n")
    print("| case | median ms | runs (ms) |\n|---|---:|---|")
    for name, values in runs.items():
        print(f"| {name} | {med[name] * 1e3:.1f} | {', '.join(f'{t * 1e3:.0f}' for t in values)} |")
    steps = ("training step, Ward every step", "training step, clustering cached")
    print(f"\ncached / uncached step speed: {med[steps[0]] / med[steps[1]]:.2f}x; Ward is "
          f"{100 * med['clustering alone, Ward'] / med[steps[0]]:.1f} % of an uncached step")


if __name__ == "__main__":
    main()
