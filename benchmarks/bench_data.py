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
  own cost is visible;
- seeking: extraction's decode stage, keyframe seeking vs decoding every frame, on a 720p 30 fps video;
- shards: `cacmi extract-features` in 1 process vs 2 gloo processes, output compared byte for byte.
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


def bench_seeking(repeats: int, minutes: float, sparse_minutes: float = 10.0) -> None:
    """Extraction's decode stage on 1280x720 30 fps H.264 videos (2 s GOPs): keyframe seeking vs every frame decoded.

    Same frames (checked), frames per second of the sampled frames: 1 fps on a `minutes`-long video, and
    sparse sampling (100 frames per video, PDVC-style `--num-frames`) on a `sparse_minutes`-long one; the two decoders
    alternate within each round.
    """
    import importlib.util

    from cacmi_hf.video_decoding import decode_video

    spec = importlib.util.spec_from_file_location("bench_pipeline", Path(__file__).with_name("bench_pipeline.py"))
    bench_pipeline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_pipeline)
    print("\n1280x720 30 fps H.264 (keyframe every 2 s, B-frames), decode + sampling only (frames downscaled to 224)\n")
    print("| video, sampling | decoder | median s | sampled frames per second | runs (s) |\n|---|---|---:|---:|---|")
    for length, label, options in ((minutes, "1 fps", {"fps": 1.0}), (sparse_minutes, "100 frames", {"num_frames": 100})):
        video = Path(tempfile.gettempdir()) / f"cacmi_bench_{length:g}min_720p30.mp4"
        if not video.is_file():
            bench_pipeline.make_video(video, length)
        runs = {False: [], True: []}
        results = {}
        for round_ in range(repeats):
            for seek in ((False, True) if round_ % 2 == 0 else (True, False)):
                start = time.perf_counter()
                results[seek] = decode_video(video, max_short_side=224, seek=seek, **options)
                runs[seek].append(time.perf_counter() - start)
        assert np.array_equal(results[True].frames, results[False].frames), "seeking changed the frames"
        frames = results[True].frames.shape[0]
        med = {seek: statistics.median(values) for seek, values in runs.items()}
        for seek, name in ((False, "every frame"), (True, "keyframe seeking")):
            print(f"| {length:g} min, {label} ({frames} frames) | {name} | {med[seek]:.2f} | {frames / med[seek]:.1f} | "
                  f"{', '.join(f'{t:.2f}' for t in runs[seek])} |")
        print(f"| {length:g} min, {label} | **seeking / every frame** | | **{med[False] / med[True]:.1f}x** | identical frames |",
              flush=True)


def bench_shards(repeats: int, videos: int, seconds: float) -> None:
    """`cacmi extract-features` in 1 process vs 2 gloo processes (RANK / WORLD_SIZE, as torchrun or accelerate launch
    set them) on the same list, alternating; the output folders are compared byte for byte."""
    import os
    import socket
    import subprocess
    import sys

    from cacmi_hf.open_clip_tower import TINY_OPEN_CLIP_CONFIG, load_open_clip, save_open_clip_local_dir

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        clip_dir = save_open_clip_local_dir(*load_open_clip(TINY_OPEN_CLIP_CONFIG), root / "clip")
        (root / "videos").mkdir()
        for i in range(videos):
            write_test_video(root / "videos" / f"v{i:03d}.mp4", seconds, size=(640, 360), fps=30)
        command = [sys.executable, "-m", "cacmi_hf.cli", "extract-features", str(root / "videos"), "--clip", str(clip_dir),
                   "--dtype", "fp32", "--no-progress", "--fps", "1"]

        def one(out):
            subprocess.run([*command, "--out", str(out)], check=True, capture_output=True)

        def two(out):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = str(sock.getsockname()[1])
            procs = [subprocess.Popen([*command, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      env={**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}) for r in range(2)]
            assert [p.wait() for p in procs] == [0, 0]

        runs = {"1 process": [], "2 processes (gloo)": []}
        identical = True
        for round_ in range(repeats):
            order = [("1 process", one), ("2 processes (gloo)", two)]
            for name, fn in (order if round_ % 2 == 0 else order[::-1]):
                start = time.perf_counter()
                fn(root / f"{name[0]}_{round_}")
                runs[name].append(time.perf_counter() - start)
            a, b = root / f"1_{round_}", root / f"2_{round_}"
            files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
            identical &= files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
                (a / f).read_bytes() == (b / f).read_bytes() for f in files)
    frames = videos * round(seconds)
    print(f"\n{videos} videos of {seconds:g} s (640x360, 30 fps) at 1 fps = {frames} frames; tiny tower (32 px), fp32; "
          "whole command lines (process start, model load, merge)\n")
    print("| run | median s | frames per second | runs (s) |\n|---|---:|---:|---|")
    med = {name: statistics.median(values) for name, values in runs.items()}
    for name, values in runs.items():
        print(f"| {name} | {med[name]:.2f} | {frames / med[name]:.1f} | {', '.join(f'{t:.1f}' for t in values)} |")
    print(f"\n2 processes / 1 process speed: {med['1 process'] / med['2 processes (gloo)']:.2f}x; output folders "
          f"byte-identical in every round: {identical}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--video-seconds", type=float, default=60.0)
    parser.add_argument("--tower-batch", type=int, default=8)
    parser.add_argument("--driver-videos", type=int, default=8)
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["annotations", "collator", "extraction", "driver", "seeking", "shards"])
    parser.add_argument("--seeking-minutes", type=float, default=2.0, help="Length of the 720p30 video of the seeking part.")
    parser.add_argument("--seeking-sparse-minutes", type=float, default=10.0,
                        help="Length of the 720p30 video sampled at 100 frames in the seeking part.")
    parser.add_argument("--shard-videos", type=int, default=8, help="Videos of the sharded-extraction part.")
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
    if "seeking" not in args.skip:
        bench_seeking(args.repeats, args.seeking_minutes, args.seeking_sparse_minutes)
    if "shards" not in args.skip:
        bench_shards(args.repeats, args.shard_videos, 20.0)
    print(calibration())


if __name__ == "__main__":
    main()
