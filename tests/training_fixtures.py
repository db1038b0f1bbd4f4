"""A tiny on-disk dense-captioning set (annotations, .npy features, memory bank) for the training tests."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

FEATURE_DIM = 16
COLOURS = ("red", "blue", "green")
ACTIONS = ("moves left", "moves right", "grows")
# small enough to train a step in milliseconds, every switch of the full model still exercised
TINY_OVERRIDES = (
    "num_frames=16,hidden_size=32,num_attention_heads=2,ffn_dim=32,num_feature_levels=2,num_queries=4,"
    "max_event_count=4,num_clusters=4,retrieval_top_k=2,retrieval_num_windows=3,caption_hidden_size=32,"
    "max_caption_len=6,dropout=0.0,caption_dropout=0.0"
)


def _video(rng: np.random.Generator) -> dict:
    """One video: 2-3 events with template captions."""
    duration = float(rng.integers(16, 32))
    count = int(rng.integers(2, 4))
    cuts = np.sort(rng.choice(np.arange(1, int(duration)), size=2 * count, replace=False)).astype(float)
    timestamps = cuts.reshape(count, 2).tolist()
    sentences = [f"a {rng.choice(COLOURS)} ball {rng.choice(ACTIONS)}" for _ in range(count)]
    return {"duration": duration, "timestamps": timestamps, "sentences": sentences}


def make_dataset(root: Path, counts: dict[str, int] | None = None, seed: int = 0, feature_dim: int = FEATURE_DIM,
                 bank_dim: int | None = None) -> dict[str, Path]:
    """Write `{split}.json`, `features/<id>.npy` (T = duration frames) and a memory bank; returns the paths."""
    from cacmi_hf.data import MemoryBankData, save_memory_bank

    counts = counts or {"train": 8, "val": 4, "test": 4}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    features = root / "features"
    features.mkdir(exist_ok=True)
    paths: dict[str, Path] = {"features": features}
    pairs = []
    for split, count in counts.items():
        videos = {f"v_{split}{i:03d}": _video(rng) for i in range(count)}
        for vid, video in videos.items():
            frames = rng.standard_normal((int(video["duration"]), feature_dim)).astype(np.float32)
            np.save(features / f"{vid}.npy", frames)
            if split == "train":
                pairs += [(vid, s) for s in video["sentences"]]
        path = root / f"{split}.json"
        path.write_text(json.dumps(videos))
        paths[split] = path
    dim = bank_dim or feature_dim
    generator = torch.Generator().manual_seed(seed)
    video_ids = list(dict.fromkeys(v for v, _ in pairs))
    bank = MemoryBankData(
        torch.nn.functional.normalize(torch.randn(len(pairs), dim, generator=generator), dim=-1),
        torch.tensor([video_ids.index(v) for v, _ in pairs]),
        video_ids,
        [s for _, s in pairs],
    )
    paths["memory_bank"] = save_memory_bank(bank, root / "memory_bank")
    return paths


def train_argv(paths: dict[str, Path], output_dir: Path, *extra: str) -> list[str]:
    """Command line of a tiny synthetic-preset run on `make_dataset`'s files (no Java, 1 epoch)."""
    return [
        "--preset", "synthetic",
        "--annotations", str(paths["train"]), str(paths["val"]), str(paths["test"]),
        "--features", str(paths["features"]),
        "--memory_bank", str(paths["memory_bank"]),
        "--output_dir", str(output_dir),
        "--config_overrides", TINY_OVERRIDES,
        "--use_cpu", "true",
        "--num_train_epochs", "1",
        "--per_device_train_batch_size", "2",
        "--per_device_eval_batch_size", "3",
        "--learning_rate", "1e-3",
        "--logging_steps", "1",
        "--disable_tqdm", "true",
        "--seed", "0",
        *extra,
    ]


@contextmanager
def single_thread():
    """One torch thread: the tiny models gain nothing from more, and on a shared machine more threads wait on each other."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
