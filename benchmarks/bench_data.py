"""Timings of the data path: annotation loading, collation, and feature extraction (decode vs CLIP tower).

Run with MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 (see DESIGN §8); prints
markdown tables of median wall times. Needs ../shared/data for the annotation parts.

Parts (each can be skipped):
- annotations: `load_activitynet_captions` / `load_youcook2` on the real files;
- collator: `DenseCaptioningCollator` on ActivityNet train rows, features from memory and from a folder
  of `.npy` files read lazily through the dataset;
- extraction: PyAV decoding + sampling at 1 fps, CLIP preprocessing, and ViT-L/14's image tower (its
  real architecture, random weights) in frames per second; then the extraction driver itself, the
  plain loop with a decode-ahead thread against `datasets.map`, with a small tower so the driver's
  own cost is visible.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def calibration() -> str:
    """How loaded the machine is: a tiny op and a 160x768x10k matmul (normally ~2 µs and ~40 ms)."""
    small, a, b = torch.arange(16), torch.randn(160, 768), torch.randn(768, 10_000)
    tiny = median_seconds(lambda: [small + 1 for _ in range(100)], 5) / 100
    return f"calibration: 16-element add {tiny * 1e6:.1f} µs, 160x768 @ 768x10k matmul {median_seconds(lambda: a @ b, 3) * 1e3:.0f} ms"


def bench_annotations(repeats: int) -> None:
    from cacmi_hf.data import load_activitynet_captions, load_youcook2

    print("\n| source | videos | sentences | median s |\n|---|---:|---:|---:|")
    cases = [
        ("ActivityNet train_modified.json", lambda: load_activitynet_captions(SHARED / "activitynet" / "train_modified.json")),
        ("ActivityNet folder (train, val_1, val_2)", lambda: load_activitynet_captions(SHARED / "activitynet")),
        ("YouCook2 folder (train, validation)", lambda: load_youcook2(SHARED / "youcook2")),
    ]
    for name, fn in cases:
        data = fn()
        videos = sum(split.num_rows for split in data.values())
        sentences = sum(sum(map(len, split["sentences"])) for split in data.values())
        print(f"| {name} | {videos:,} | {sentences:,} | {median_seconds(fn, repeats, warmup=0):.2f} |", flush=True)


def bench_collator(repeats: int, batch_size: int) -> None:
    from cacmi_hf import CACMIConfig
    from cacmi_hf.data import DenseCaptioningCollator, attach_features, build_caption_tokenizer, load_activitynet_captions

    config = CACMIConfig.from_preset("activitynet")
    train = load_activitynet_captions(SHARED / "activitynet" / "train_modified.json", split="train").select(range(256))
    tokenizer = build_caption_tokenizer(s for sentences in train["sentences"] for s in sentences)
    rng = np.random.default_rng(0)
    lengths = rng.integers(30, 400, train.num_rows)  # ActivityNet at 1 fps: 30 s to several minutes
    features = {vid: rng.standard_normal((int(n), 768)).astype(np.float32) for vid, n in zip(train["video_id"], lengths)}
    collate = DenseCaptioningCollator(tokenizer, config, training=True)
    print(f"\n| step (batch {batch_size}, L=100, D=768) | median ms per batch |\n|---|---:|")
    in_memory = attach_features(train, features, num_frames=config.num_frames)
    rows = [in_memory[i] for i in range(batch_size)]
    print(f"| collator only (rows ready) | {median_seconds(lambda: collate(rows), repeats) * 1e3:.1f} |", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for vid, array in features.items():
            np.save(Path(folder) / f"{vid}.npy", array)
        start = time.perf_counter()
        from_disk = attach_features(train, folder, num_frames=config.num_frames, feature_dim=768)
        print(f"| attach + header check of {train.num_rows} .npy files (once) | {(time.perf_counter() - start) * 1e3:.1f} |")
        offsets = iter(range(0, 10**9, batch_size))

        def disk_batch():
            first = next(offsets) % (train.num_rows - batch_size)
            return collate([from_disk[i] for i in range(first, first + batch_size)])  # row by row, as a DataLoader reads

        print(f"| read {batch_size} rows (.npy, lazy) + collate | {median_seconds(disk_batch, repeats) * 1e3:.1f} |", flush=True)


def write_test_video(path: Path, seconds: float, size=(640, 360), fps=25) -> Path:
    """A moving-gradient mp4 (libx264), so decoding does real work."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        x = np.linspace(0, 255, size[0], dtype=np.float32)[None, :, None]
        y = np.linspace(0, 255, size[1], dtype=np.float32)[:, None, None]
        for i in range(int(seconds * fps)):
            img = ((x + y * 0.5 + i * 3) % 256).repeat(3, axis=2).astype(np.uint8)
            img[..., 1] = (img[..., 1].astype(np.int64) + i) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def random_vit_l14_visual() -> torch.nn.Module:
    """ViT-L/14's image tower with random weights, built on the meta device then materialised (fast)."""
    from cacmi_hf.open_clip_tower import build_open_clip_model

    with torch.device("meta"):
        model = build_open_clip_model("ViT-L-14")
    visual = model.visual.to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in visual.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.02 if param.dim() > 1 else torch.zeros(param.shape))
        for module in visual.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1.0)
    return visual.eval()


def bench_extraction(repeats: int, seconds: float, tower_batch: int) -> None:
    from cacmi_hf.open_clip_tower import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, normalize_pixels, resize_crop_frames
    from cacmi_hf.video_decoding import VideoReader, sample_times

    with tempfile.TemporaryDirectory() as folder:
        video = write_test_video(Path(folder) / "clip.mp4", seconds)
        with VideoReader(video) as reader:
            sampled = len(sample_times(reader.info.duration, fps=1.0))

        def decode_all():
            with VideoReader(video) as reader:
                return np.stack(list(reader.frames_at(sample_times(reader.info.duration, fps=1.0))))

        decode_s = median_seconds(decode_all, repeats)
        frames = decode_all()
        prep_s = median_seconds(lambda: resize_crop_frames(frames, 224), repeats)
        visual = random_vit_l14_visual()
        pixels = normalize_pixels(resize_crop_frames(frames[:tower_batch], 224), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        with torch.inference_mode():
            tower_s = median_seconds(lambda: visual(pixels), max(1, repeats - 1))
    decoded_fps = sampled / decode_s
    print(f"\n{seconds:.0f} s 640x360 25 fps H.264 clip sampled at 1 fps ({sampled} frames); ViT-L/14 batch {tower_batch}, {torch.get_num_threads()} threads\n")
    print("| stage | frames per second | ms per frame |\n|---|---:|---:|")
    print(f"| PyAV decode + 1 fps sampling (all {int(seconds * 25)} frames decoded) | {decoded_fps:.1f} | {decode_s / sampled * 1e3:.1f} |")
    print(f"| CLIP resize + centre crop (torch) | {sampled / prep_s:.1f} | {prep_s / sampled * 1e3:.2f} |")
    print(f"| ViT-L/14 image tower (random weights, float32) | {tower_batch / tower_s:.2f} | {tower_s / tower_batch * 1e3:.0f} |", flush=True)


def bench_driver(repeats: int, videos: int, seconds: float) -> None:
    """Plain loop with decode-ahead thread vs datasets.map, tiny tower: the driver's overhead, not the tower's."""
    from datasets import Dataset

    from cacmi_hf.data.extract import extract_features, find_videos
    from cacmi_hf.open_clip_tower import TINY_OPEN_CLIP_CONFIG, encode_images, load_open_clip, spec_preprocess
    from cacmi_hf.video_decoding import decode_video

    torch.manual_seed(0)
    model, spec = load_open_clip(TINY_OPEN_CLIP_CONFIG)
    preprocess = spec_preprocess(spec)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "videos").mkdir()
        for i in range(videos):
            write_test_video(root / "videos" / f"v{i:03d}.mp4", seconds, size=(320, 240))
        listing = find_videos(root / "videos")
        counter = iter(range(10**6))

        def plain_loop():
            extract_features(listing, root / f"loop{next(counter)}", model, spec, fps=1.0, progress=False)

        def with_map(write_inside: bool):
            out = root / f"map{next(counter)}"
            out.mkdir()
            table = Dataset.from_dict({"video_id": [v for v, _ in listing], "path": [str(p) for _, p in listing]})

            def embed(row):
                features = encode_images(model, preprocess(decode_video(row["path"], fps=1.0).frames)).numpy()
                if write_inside:
                    np.save(out / f"{row['video_id']}.npy", features)
                    return {"frames": features.shape[0]}
                return {"features": features}

            result = table.map(embed, keep_in_memory=True, remove_columns=["path"])
            if not write_inside:
                for row in result.with_format("numpy"):
                    np.save(out / f"{row['video_id']}.npy", row["features"])

        cases = [("plain loop + decode-ahead thread (extract_features)", plain_loop),
                 ("datasets.map, features returned into Arrow, then saved", lambda: with_map(False)),
                 ("datasets.map, .npy written inside the map function", lambda: with_map(True))]
        times = {name: [] for name, _ in cases}
        for _ in range(repeats):  # alternate the compared runs (DESIGN §8)
            for name, fn in cases:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    frames = videos * round(seconds)
    print(f"\n{videos} videos of {seconds:.0f} s (320x240, 25 fps) at 1 fps = {frames} frames; tiny tower (32 px)\n")
    print("| driver | median s | frames per second |\n|---|---:|---:|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.2f} | {frames / med:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--video-seconds", type=float, default=60.0)
    parser.add_argument("--tower-batch", type=int, default=8)
    parser.add_argument("--driver-videos", type=int, default=8)
    parser.add_argument("--skip", nargs="*", default=[], choices=["annotations", "collator", "extraction", "driver"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(calibration())
    if "annotations" not in args.skip:
        bench_annotations(args.repeats)
    if "collator" not in args.skip:
        bench_collator(args.repeats * 3, args.batch_size)
    if "extraction" not in args.skip:
        bench_extraction(args.repeats, args.video_seconds, args.tower_batch)
    if "driver" not in args.skip:
        bench_driver(args.repeats, args.driver_videos, 20.0)
    print(calibration())


if __name__ == "__main__":
    main()
