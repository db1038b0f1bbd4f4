"""Timings of CFA: memory-bank retrieval vs bank size, contiguous Ward clustering vs video length.

Run with MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 (see DESIGN §8); prints
markdown tables of median wall times.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cacmi_hf.frame_aggregation import contiguous_ward_clustering
from cacmi_hf.memory_bank import MemoryBank


def _median_seconds(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def calibration(repeats: int) -> tuple[float, float]:
    """Median ms of a tiny op and of a 160x768x10k matmul: shows how loaded the machine was during the run."""
    small, a, b = torch.arange(16), torch.randn(160, 768), torch.randn(768, 10_000)
    tiny = _median_seconds(lambda: [small + 1 for _ in range(100)], repeats) / 100
    return tiny * 1e3, _median_seconds(lambda: a @ b, repeats) * 1e3


def bench_retrieval(sizes, batch, queries, dim, top_k, chunk_sizes, repeats):
    """Median time of one `MemoryBank.retrieve` call per bank size, exclusion mode and chunk size."""
    rows = []
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(batch, queries, dim, generator=gen)
    videos = torch.randint(0, 1000, (batch,), generator=gen)
    for size in sizes:
        bank = MemoryBank(0, dim)
        bank.set(torch.randn(size, dim, generator=gen), torch.randint(0, max(size // 4, 1), (size,), generator=gen))
        for chunk in chunk_sizes:
            for exclude in ("none", "same_video"):
                seconds = _median_seconds(
                    lambda: bank.retrieve(q, top_k, exclude_video=videos, exclude=exclude, chunk_size=chunk),
                    repeats if size < 1_000_000 else max(1, repeats // 2),
                )
                rows.append((size, chunk, exclude, seconds))
                print(f"| {size:,} | {chunk:,} | {exclude} | {seconds * 1e3:.1f} |", flush=True)
        del bank
    return rows


def bench_clustering(lengths, batch, dim, repeats):
    """Median time of one batched `contiguous_ward_clustering` call per video length."""
    gen = torch.Generator().manual_seed(1)
    for length in lengths:
        num_clusters = max(1, length // 10)
        max_span = 3 * length // num_clusters
        features = torch.randn(batch, length, dim, generator=gen)
        mask = torch.ones(batch, length, dtype=torch.bool)
        seconds = _median_seconds(lambda: contiguous_ward_clustering(features, mask, num_clusters, max_span), repeats)
        print(f"| {length} | {num_clusters} | {max_span} | {length - num_clusters} | {seconds * 1e3:.1f} |", flush=True)


def main():
    """Parse the sizes and print both tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bank-sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[65536])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 200, 400, 800])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--top-k", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-retrieval", action="store_true")
    parser.add_argument("--skip-clustering", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    tiny_ms, matmul_ms = calibration(args.repeats)
    print(f"calibration: 16-element add {tiny_ms * 1e3:.1f} us, 160x768 @ 768x10k matmul {matmul_ms:.1f} ms")
    if not args.skip_retrieval:
        print(f"\nRetrieval: B={args.batch}, queries={args.queries}, dim={args.dim}, k={args.top_k}\n")
        print("| bank entries | chunk | exclude | median ms |\n|---:|---:|---|---:|")
        bench_retrieval(args.bank_sizes, args.batch, args.queries, args.dim, args.top_k, args.chunk_sizes, args.repeats)
    if not args.skip_clustering:
        print(f"\nClustering: B={args.batch}, dim={args.dim}\n")
        print("| L | c | max span | merge steps | median ms |\n|---:|---:|---:|---:|---:|")
        bench_clustering(args.lengths, args.batch, args.dim, args.repeats)


if __name__ == "__main__":
    main()
