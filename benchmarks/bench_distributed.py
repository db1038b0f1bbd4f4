#!/usr/bin/env python
"""Training steps per second with 1 and 2 processes (gloo on CPU, or NCCL on GPUs), through the real Trainer.

    python benchmarks/bench_distributed.py [--steps 30] [--repeats 3] [--batch 4] [--backend ddp|fsdp2]

Each run is a fresh `torch.distributed.run` launch of this file in worker mode, training a small CACMI
(the synthetic preset, hidden 64) on generated features with the same per-process batch, so 2 processes
take twice the videos per step (weak scaling). Steps/s are timed from the end of warm-up step 3 to the
last step, inside the run (launch and set-up excluded); runs alternate 1, 2, 1, 2, ... and the medians are
reported. `--backend fsdp2` shards the parameters with Accelerate's FSDP2 preparation (as the FSDP test
does on CPU, where `accelerate launch --use_fsdp` would silently run DDP).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OVERRIDES = (
    "num_frames=32,hidden_size=64,num_attention_heads=4,ffn_dim=64,num_feature_levels=2,num_queries=8,"
    "max_event_count=6,num_clusters=4,retrieval_top_k=4,caption_hidden_size=64,max_caption_len=8"
)
WARMUP = 3


def make_data(root: Path, videos: int, dim: int = 64, seed: int = 0) -> dict[str, str]:
    """Annotations, one .npy of features per video and a memory bank of the training captions."""
    import torch

    from cacmi_hf.data import MemoryBankData, save_memory_bank

    rng = np.random.default_rng(seed)
    (root / "features").mkdir(parents=True, exist_ok=True)
    words = ("red", "blue", "green", "circle", "square", "moves", "grows", "left", "right")
    pairs, splits = [], {}
    for split, count in (("train", videos), ("val", 4)):
        table = {}
        for i in range(count):
            vid, duration = f"v_{split}{i:04d}", float(rng.integers(30, 90))
            cuts = np.sort(rng.choice(np.arange(1, int(duration)), size=6, replace=False)).reshape(3, 2)
            sentences = [" ".join(rng.choice(words, size=5)) for _ in range(3)]
            table[vid] = {"duration": duration, "timestamps": cuts.astype(float).tolist(), "sentences": sentences}
            np.save(root / "features" / f"{vid}.npy", rng.standard_normal((int(duration), dim)).astype(np.float32))
            if split == "train":
                pairs += [(vid, s) for s in sentences]
        (root / f"{split}.json").write_text(json.dumps(table))
        splits[split] = str(root / f"{split}.json")
    ids = list(dict.fromkeys(v for v, _ in pairs))
    bank = MemoryBankData(
        torch.nn.functional.normalize(torch.randn(len(pairs), dim, generator=torch.Generator().manual_seed(seed)), dim=-1),
        torch.tensor([ids.index(v) for v, _ in pairs]), ids, [s for _, s in pairs],
    )
    return {**splits, "features": str(root / "features"), "memory_bank": str(save_memory_bank(bank, root / "bank"))}


def worker(args: argparse.Namespace) -> None:
    """One process of a launch: train `--steps` steps, rank 0 writes the timing to `--result`."""
    import torch
    from transformers import TrainerCallback

    from cacmi_hf.training import parse_args, train

    torch.set_num_threads(args.threads)
    if args.backend == "fsdp2":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from distributed_driver import _switch_to_fsdp2

        _switch_to_fsdp2()
    data = json.loads(args.data)

    class Clock(TrainerCallback):
        marks: dict[int, float] = {}

        def on_step_end(self, a, state, control, **kwargs):
            self.marks[state.global_step] = time.perf_counter()

    clock = Clock()
    argv = [
        "--preset", "synthetic", "--annotations", data["train"], data["val"], "--features", data["features"],
        "--memory_bank", data["memory_bank"], "--output_dir", args.output, "--config_overrides", OVERRIDES,
        "--use_cpu", str(not torch.cuda.is_available()).lower(), "--max_steps", str(args.steps),
        "--per_device_train_batch_size", str(args.batch), "--eval_strategy", "no", "--save_strategy", "no",
        "--load_best_model_at_end", "false", "--eval_split", "validation", "--test_splits", "validation",
        "--eval_no_java", "true", "--metric_for_best_model", "CIDEr", "--logging_steps", "1000",
        "--disable_tqdm", "true", "--report_to", "none", "--dataloader_num_workers", "0", "--seed", "0",
    ]
    train(*parse_args(argv), callbacks=[clock])
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        steps = args.steps - WARMUP
        seconds = clock.marks[args.steps] - clock.marks[WARMUP]
        Path(args.result).write_text(json.dumps({"steps_per_s": steps / seconds}))


def launch(processes: int, args: argparse.Namespace, data: dict, scratch: Path) -> float:
    """Steps/s of one fresh launch with `processes` processes."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = scratch / f"result_{processes}_{time.time_ns()}.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", str(port),
        __file__, "--worker", "--data", json.dumps(data), "--output", str(scratch / "out"), "--result", str(result),
        "--steps", str(args.steps), "--batch", str(args.batch), "--threads", str(args.threads), "--backend", args.backend,
    ]
    env = {
        **os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
        # DESIGN §8: glibc malloc otherwise runs the same process at one of two speeds
        "MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "68719476736",
    }
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{processes}-process run failed:\n{proc.stderr[-4000:]}")
    return json.loads(result.read_text())["steps_per_s"]


def main() -> None:
    """Parse, then either run as a worker or alternate 1- and 2-process launches and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="videos per process and step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--videos", type=int, default=256)
    parser.add_argument("--backend", choices=("ddp", "fsdp2"), default="ddp")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.steps <= WARMUP:
        parser.error(f"--steps must exceed the {WARMUP} warm-up steps")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        data = make_data(scratch / "data", args.videos)
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.repeats):
            for processes in (1, 2):
                times[processes].append(launch(processes, args, data, scratch))
    print(f"backend {args.backend}, {args.batch} videos per process and step, {args.threads} thread(s) per process, "
          f"{args.steps} steps ({WARMUP} warm-up), median of {args.repeats} alternated launches")
    print("| processes | steps/s | videos/s | runs (steps/s) |")
    print("|---|---|---|---|")
    for processes, values in times.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {processes} | {median:.2f} | {median * processes * args.batch:.1f} | {runs} |")


if __name__ == "__main__":
    main()
