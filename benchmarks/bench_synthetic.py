"""Cost and quality of the synthetic world: generation, mp4 writing/decoding, tiny-CLIP training and accuracy.

Run (timings need the malloc settings below):

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 \\
        python benchmarks/bench_synthetic.py --out /tmp/synthetic_bench

Prints one table: seconds for each stage, then zero-shot colour/shape accuracy of the tiny CLIP on
val frames along training, and a linear probe of the action on start/middle/end frame embeddings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cacmi_hf.synthetic import (
    ACTIONS,
    TINY_CLIP_PREPROCESS_CFG,
    TinyClipTrainingConfig,
    generate_world,
    iter_videos,
    labelled_frames,
    parse_caption,
    read_mp4,
    train_tiny_clip,
)
from cacmi_hf.synthetic.tiny_clip import frames_to_pixels, zero_shot_scores


def event_triplets(world_dir: Path, split: str, max_videos: int | None = None):
    """Start/middle/end frames (E, 3, H, W, 3) of events that overlap no other event, and their action ids."""
    annotations = json.loads((world_dir / f"{split}.json").read_text())
    triplets, labels = [], []
    for video_id in sorted(annotations)[:max_videos]:
        entry = annotations[video_id]
        frames = read_mp4(world_dir / "videos" / f"{video_id}.mp4")
        fps = len(frames) / entry["duration"]
        spans = [(round(s * fps), round(e * fps)) for s, e in entry["timestamps"]]
        for index, ((start, end), sentence) in enumerate(zip(spans, entry["sentences"])):
            others = [span for j, span in enumerate(spans) if j != index]
            if any(s < end and start < e for s, e in others):
                continue
            triplets.append(frames[[start, (start + end - 1) // 2, end - 1]])
            labels.append(ACTIONS.index(parse_caption(sentence)[2]))
    return np.stack(triplets), torch.tensor(labels)


@torch.no_grad()
def embed_triplets(model, triplets: np.ndarray) -> torch.Tensor:
    """Concatenated normalised image embeddings of each triplet, (E, 3*D)."""
    flat = frames_to_pixels(triplets.reshape(-1, *triplets.shape[2:]), TINY_CLIP_PREPROCESS_CFG)  # (3E, 3, S, S)
    emb = torch.cat([F.normalize(model.encode_image(c), dim=-1) for c in flat.split(1024)])  # (3E, D)
    return emb.reshape(len(triplets), -1)


def linear_probe(train_x, train_y, test_x, test_y, classes: int) -> float:
    """Accuracy of an L2-regularised softmax regression fitted with L-BFGS."""
    torch.manual_seed(0)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    layer = torch.nn.Linear(train_x.shape[1], classes)
    optimiser = torch.optim.LBFGS(layer.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = F.cross_entropy(layer(train_x), train_y) + 1e-3 * layer.weight.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        return float((layer(test_x).argmax(1) == test_y).float().mean())


def main() -> None:
    """Run every stage and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/synthetic_bench"))
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--val", type=int, default=50)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--steps", type=int, default=None, help="tiny-CLIP steps (default: the library default)")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1, help="repeats of the generation/write/decode timings")
    args = parser.parse_args()
    counts = {"train": args.train, "val": args.val, "test": args.test}
    total = sum(counts.values())
    rows = []

    for repeat in range(args.repeats):
        start = time.perf_counter()
        frames = sum(v.num_frames for v in iter_videos(counts))
        rows.append((f"generate {total} videos in memory ({frames} frames)", time.perf_counter() - start))
        start = time.perf_counter()
        world = generate_world(args.out / "world", counts, overwrite=True, progress=False)
        rows.append((f"generate + write {total} mp4s", time.perf_counter() - start))
        start = time.perf_counter()
        decoded = sum(len(read_mp4(world.video_path(v))) for ids in world.video_ids.values() for v in ids)
        assert decoded == frames
        rows.append((f"decode {total} mp4s", time.perf_counter() - start))

    start = time.perf_counter()
    train = labelled_frames(world.root, "train")
    val = labelled_frames(world.root, "val")
    rows.append((f"decode + label frames (train {len(train.captions)}, val {len(val.captions)})", time.perf_counter() - start))

    import open_clip

    config = TinyClipTrainingConfig() if args.steps is None else TinyClipTrainingConfig(steps=args.steps)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=16)
    curve, eval_seconds = [], [0.0]

    def evaluate(step, model):
        if step % args.eval_every and step != config.steps:
            return
        tick = time.perf_counter()
        curve.append((step, zero_shot_scores(model, tokenizer, val)))
        eval_seconds[0] += time.perf_counter() - tick

    model, history = train_tiny_clip(train, config, progress=False, callback=evaluate)
    rows.append((f"tiny-CLIP training, {history['steps']} steps x batch {config.batch_size}", history["seconds"] - eval_seconds[0]))

    start = time.perf_counter()
    train_x, train_y = event_triplets(world.root, "train")
    val_x, val_y = event_triplets(world.root, "val")
    probe = linear_probe(embed_triplets(model, train_x), train_y, embed_triplets(model, val_x), val_y, len(ACTIONS))
    rows.append((f"action probe ({len(train_y)} train / {len(val_y)} val events)", time.perf_counter() - start))

    print("| stage | seconds |\n|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} |")
    print("\n| tiny-CLIP step | loss (mean of last 10) | zero-shot colour | zero-shot shape |\n|---:|---:|---:|---:|")
    for step, scores in curve:
        loss = np.mean(history["loss"][max(0, step - 10) : step])
        print(f"| {step} | {loss:.3f} | {scores['colour']:.3f} | {scores['shape']:.3f} |")
    print(f"\nval frames scored: {curve[-1][1]['frames']}, prompts: {curve[-1][1]['prompts']}")
    print(f"action linear probe on start/middle/end frame embeddings (val events): {probe:.3f}")


if __name__ == "__main__":
    main()
