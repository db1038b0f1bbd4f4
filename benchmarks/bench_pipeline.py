"""Seconds per minute of video of `pipeline("dense-video-captioning")` on CPU, split into decode / CLIP / CACMI.

A 10-minute 1280x720 30 fps H.264 video (2 s GOPs, a textured panning scene with a moving object) is
captioned with the real ViT-L-14 image tower (random weights) and the ActivityNet preset (L = 100 frames,
37,421-entry memory bank, 8.5k-word vocabulary), timing the three stages the pipeline runs:

- decode: open the file, sample L frames over the whole video (keyframe seeking), downscale while decoding,
  CLIP preprocessing (`CACMIVideoProcessor.sample_video` + `pack`); the same with `seek=False` (every frame
  decoded) is shown for comparison;
- CLIP: the frozen ViT-L-14 tower on the L frames (`CACMIVisionTower`);
- CACMI: `model.generate` (CFA clustering + retrieval, CFE, deformable transformer, captioner).

The target: decode + CACMI under 15 % of the total, i.e. the cost of a video is its L CLIP passes.

    python benchmarks/bench_pipeline.py [--minutes 10] [--repeats 3] [--clip-repeats 1] [--video PATH]
    python benchmarks/bench_pipeline.py --precision --minutes 60 --frames 48 --repeats 1 --speed-frames 4 --speed-repeats 3

`--precision` measures the tower's weight precision and the pipeline's overlap in one run: alternating rounds
of the ViT-L/14 tower alone in fp32 and in bf16 on the same `--speed-frames` frames (speed and cosine), then
alternating rounds of the bf16 tower alone on all L frames, the whole bf16 pipeline on the video
(`pipe(video)`: decode in a thread overlapping the tower, CACMI generate) and the decode alone.
Last, plain matrix products at the tower's linear-layer shapes in fp32 and bf16: their ratio is the ceiling of
the tower's bf16 speed-up on the CPU at hand (the tower is ~90 % matrix products).

The script re-executes itself with MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ set (glibc reads them
at start-up; without them the same CPU code runs at one of two speeds per process) and reports medians.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def _reexec_with_malloc_settings() -> None:
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})


def _scene(width: int, height: int, seed: int = 0):
    """A smooth random texture twice the frame width (panned across) and the colour of the moving object."""
    import numpy as np

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 16 + 1, 2 * width // 16 + 1, 3)).astype(np.float32)
    texture = coarse.repeat(16, 0).repeat(16, 1)[:height, : 2 * width]
    for axis in (0, 1):  # box blur: smooth gradients with some detail, like natural footage
        texture = (texture + np.roll(texture, 8, axis) + np.roll(texture, -8, axis)) / 3
    texture += rng.normal(0, 6, texture.shape)
    return np.clip(texture, 0, 255).astype(np.uint8)


def make_video(path: Path, minutes: float, fps: int = 30, size=(1280, 720), gop_seconds: int = 2, clip_seconds: int = 4) -> Path:
    """Encode a `clip_seconds` clip once and repeat its packets (closed GOPs) to `minutes` of H.264 without re-encoding."""
    import av
    import numpy as np

    width, height = size
    texture = _scene(width, height)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as clip:
        stream = clip.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"preset": "veryfast", "crf": "23", "g": str(gop_seconds * fps),
                                        "keyint_min": str(gop_seconds * fps), "sc_threshold": "0"}
        frames = clip_seconds * fps
        for i in range(frames):
            offset = int(i * width / frames)  # one texture width per clip: the loop point matches
            image = np.ascontiguousarray(texture[:, offset : offset + width])
            x, y = int((i * 9) % (width - 160)), int(height / 2 + 150 * np.sin(i / 20)) - 60
            image[y : y + 120, x : x + 160] = (230, 60, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                clip.mux(packet)
        for packet in stream.encode():
            clip.mux(packet)
    buffer.seek(0)
    with av.open(buffer) as source:
        src = source.streams.video[0]
        packets = [(bytes(p), p.pts, p.dts, p.is_keyframe, p.duration) for p in source.demux(src) if p.size]
        period = round(clip_seconds / src.time_base)
        repeats = int(round(minutes * 60 / clip_seconds))
        with av.open(str(path), "w", format="mp4") as out:
            dst = out.add_stream_from_template(src)
            for k in range(repeats):
                for data, pts, dts, key, duration in packets:
                    packet = av.Packet(data)
                    packet.stream = dst
                    packet.time_base = src.time_base
                    packet.pts, packet.dts, packet.duration = pts + k * period, dts + k * period, duration
                    packet.is_keyframe = key
                    out.mux(packet)
    return path


def median_time(fn, repeats: int):
    """(median seconds, last result) of `repeats` calls."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result, times


def vit_shape(tower) -> tuple[int, int, int, float]:
    """(width, tokens per frame, layers, MLP ratio) of an open_clip ViT tower."""
    cfg = tower.spec.model_cfg["vision_cfg"]
    tokens = (tower.image_size // int(cfg["patch_size"])) ** 2 + 1
    return int(cfg["width"]), tokens, int(cfg["layers"]), float(cfg.get("mlp_ratio", 4.0))


def vit_macs_per_frame(tower) -> float:
    """Multiply-adds of one frame through a ViT: patch embedding, then per layer QKV + output projection, MLP, attention."""
    width, tokens, layers, mlp_ratio = vit_shape(tower)
    patch = int(tower.spec.model_cfg["vision_cfg"]["patch_size"])
    per_layer = 4 * tokens * width**2 + 2 * mlp_ratio * tokens * width**2 + 2 * tokens**2 * width
    return (tokens - 1) * 3 * patch**2 * width + layers * per_layer


def gemm_rates(width: int, tokens: int, repeats: int = 7) -> list[tuple[str, float, float]]:
    """(shape, fp32 GFLOP/s, bf16 GFLOP/s) of plain matrix products at a ViT's linear-layer shapes (median of runs).

    The tower is ~90 % matrix products, so the bf16 / fp32 ratio of these products is the ceiling of the tower's
    bf16 / fp32 speed-up on this CPU.
    """
    import torch

    shapes = {"qkv": (tokens, width, 3 * width), "mlp up": (tokens, width, 4 * width), "mlp down": (tokens, 4 * width, width)}
    rates = []
    for name, (m, k, n) in shapes.items():
        gflops = {}
        for dtype in (torch.float32, torch.bfloat16):
            a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
            a @ b  # warm-up: oneDNN picks and packs its kernel
            _, _, times = median_time(lambda: a @ b, repeats)
            gflops[dtype] = 2 * m * k * n / statistics.median(times) / 1e9
        rates.append((f"{name} {m}x{k} @ {k}x{n}", gflops[torch.float32], gflops[torch.bfloat16]))
    return rates


def precision_rounds(args) -> None:
    """One run, rounds alternating: the tower alone in fp32 and in bf16 on the same L frames, and the whole bf16
    pipeline on the video; prints medians, the ratios, and the bf16-vs-fp32 cosine of the features."""
    import copy

    import torch

    from cacmi_hf import CACMIConfig, CACMIForDenseCaptioning
    from cacmi_hf.data.vocab import build_caption_tokenizer
    from cacmi_hf.open_clip_tower import cpu_has_native_bf16, resolve_open_clip
    from cacmi_hf.pipeline_dense_video_captioning import DenseVideoCaptioningPipeline
    from cacmi_hf.processing_cacmi import CACMIProcessor, CACMIVideoProcessor
    from cacmi_hf.video_decoding import probe_video

    torch.manual_seed(0)
    video = args.video or Path(tempfile.gettempdir()) / f"cacmi_bench_{args.minutes:g}min_720p30.mp4"
    if not video.is_file():
        start = time.perf_counter()
        make_video(video, args.minutes)
        print(f"wrote {video} in {time.perf_counter() - start:.0f} s")
    info = probe_video(video)
    spec = resolve_open_clip(args.clip_model)
    words = [f"w{i}" for i in range(args.vocab_size - 4)]
    tokenizer = build_caption_tokenizer([" ".join(words[i : i + 10]) for i in range(0, len(words), 10)], min_count=1)
    config = CACMIConfig.from_preset("activitynet", memory_size=args.memory_size, vocab_size=len(tokenizer),
                                     num_frames=args.frames)
    model = CACMIForDenseCaptioning.from_clip(spec.to_dict(), config=config).eval()
    model.set_memory_bank(torch.nn.functional.normalize(torch.randn(args.memory_size, model.config.text_dim), dim=-1),
                          torch.arange(args.memory_size) // 4)
    fp32_tower = copy.deepcopy(model.vision_tower)
    model.vision_tower.set_dtype("bf16")
    video_processor = CACMIVideoProcessor.from_open_clip(spec, num_frames=args.frames)
    pipe = DenseVideoCaptioningPipeline(model=model, processor=CACMIProcessor(video_processor, tokenizer),
                                        device=torch.device("cpu"), task="dense-video-captioning")
    batch = video_processor.pack([video_processor.sample_video(str(video))])
    pixels = batch["pixel_values_videos"]  # (1, L, 3, S, S)
    few = pixels[:, : args.speed_frames]  # the fp32 / bf16 pair runs on fewer frames, more rounds
    with torch.inference_mode():
        cosine = torch.nn.functional.cosine_similarity(model.vision_tower(few), fp32_tower(few), dim=-1)[0]  # (n,)

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def decode():
        video_processor.pack([video_processor.sample_video(str(video))])

    speed_cases = {"tower fp32": lambda: fp32_tower(few), "tower bf16": lambda: model.vision_tower(few)}
    # the tower alone in the batches the pipeline gives it (its best size here: big batches spill the caches)
    from cacmi_hf.pipeline_dense_video_captioning import MAX_CHUNK_FRAMES

    chunk = min(model.vision_tower.frames_per_batch(1024.0), MAX_CHUNK_FRAMES)
    model.vision_tower.chunk_size = fp32_tower.chunk_size = chunk
    cases = {
        f"tower bf16, all L frames (batches of {chunk})": lambda: model.vision_tower(pixels),
        "pipeline bf16 (decode + tower + CACMI)": lambda: pipe(str(video)),
        "decode + preprocess alone (keyframe seeking)": decode,
    }
    runs = {name: [] for name in [*speed_cases, *cases]}
    with torch.inference_mode():
        for group, repeats in ((speed_cases, args.speed_repeats), (cases, args.repeats)):
            names = list(group)
            for round_ in range(repeats):
                order = names if round_ % 2 == 0 else names[::-1]  # alternate: load drifts hit every case alike
                for name in order:
                    runs[name].append(timed(group[name]))
                    print(f"round {round_ + 1}: {name} {runs[name][-1]:.1f} s", flush=True)
    med = {name: statistics.median(values) for name, values in runs.items()}
    frames = pixels.shape[1]
    print()
    print(f"video: {info.width}x{info.height} {info.average_fps:g} fps, {info.duration:.0f} s; L = {frames} frames sampled "
          f"over it; {args.clip_model} (random weights), ActivityNet preset (memory {args.memory_size}, vocab "
          f"{len(tokenizer)}); torch {torch.__version__}, {torch.get_num_threads()} threads; native bf16: "
          f"{cpu_has_native_bf16()}; {args.repeats} rounds, medians")
    print()
    print("| case | frames | median s | s per frame | runs (s) |")
    print("|---|---:|---:|---:|---|")
    for name in runs:
        n = few.shape[1] if name in speed_cases else frames
        print(f"| {name} | {n} | {med[name]:.2f} | {med[name] / n:.3f} | {', '.join(f'{t:.1f}' for t in runs[name])} |")
    print()
    print("Matrix products at the tower's linear shapes (batch of the speed pair), same run: the ceiling of the bf16 speed-up")
    print()
    print("| product | fp32 GFLOP/s | bf16 GFLOP/s | bf16 / fp32 |")
    print("|---|---:|---:|---:|")
    width, tokens, _, _ = vit_shape(model.vision_tower)
    for name, fp32_rate, bf16_rate in gemm_rates(width, few.shape[1] * tokens):
        print(f"| {name} | {fp32_rate:.0f} | {bf16_rate:.0f} | {bf16_rate / fp32_rate:.2f} |")
    flops = 2 * vit_macs_per_frame(model.vision_tower) * few.shape[1]
    print(f"tower: fp32 {flops / med['tower fp32'] / 1e9:.0f} GFLOP/s, bf16 {flops / med['tower bf16'] / 1e9:.0f} GFLOP/s "
          "(its multiply-adds counted from the architecture)")
    speed = med["tower fp32"] / med["tower bf16"]
    overhead = med["pipeline bf16 (decode + tower + CACMI)"] / med[f"tower bf16, all L frames (batches of {chunk})"]
    print()
    print(f"bf16 / fp32 tower speed: {speed:.2f}x (target >= 2.5x); cosine bf16 vs fp32 features: min "
          f"{float(cosine.min()):.5f}, mean {float(cosine.mean()):.5f} (target >= 0.999)")
    print(f"bf16 pipeline total / bf16 tower alone: {overhead:.3f} (target <= 1.1)")
    per_round = [p / t for p, t in zip(runs["pipeline bf16 (decode + tower + CACMI)"],
                                       runs[f"tower bf16, all L frames (batches of {chunk})"])]
    print(f"per round: speed {', '.join(f'{a / b:.2f}' for a, b in zip(runs['tower fp32'], runs['tower bf16']))}; "
          f"pipeline/tower {', '.join(f'{r:.3f}' for r in per_round)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="Video length (default: 10).")
    parser.add_argument("--video", type=Path, default=None, help="Use this video instead of generating one.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of the decode and CACMI stages (median).")
    parser.add_argument("--clip-repeats", type=int, default=1, help="Runs of the CLIP stage (median; each is L ViT-L passes).")
    parser.add_argument("--sequential-repeats", type=int, default=1,
                        help="Runs of the every-frame decoder shown for comparison (0 = skip; it is slow).")
    parser.add_argument("--clip-model", default="ViT-L-14", help="open_clip architecture of the tower (random weights).")
    parser.add_argument(
        "--clip-frames", type=int, default=None,
        help="Time the tower on this many of the L frames and scale to L (its cost is linear in frames; default: all L).",
    )
    parser.add_argument("--memory-size", type=int, default=37421, help="Memory-bank entries (ActivityNet train captions).")
    parser.add_argument("--vocab-size", type=int, default=8500, help="Caption vocabulary size (ActivityNet ~8.5k).")
    parser.add_argument("--precision", action="store_true",
                        help="Instead: tower fp32 vs bf16 and the whole bf16 pipeline, alternating rounds (see precision_rounds).")
    parser.add_argument("--frames", type=int, default=100, help="L frames sampled over the video in --precision (default 100).")
    parser.add_argument("--speed-frames", type=int, default=4, help="Frames of the fp32 / bf16 tower pair in --precision.")
    parser.add_argument("--speed-repeats", type=int, default=3, help="Rounds of the fp32 / bf16 tower pair in --precision.")
    args = parser.parse_args()
    _reexec_with_malloc_settings()
    if args.precision:
        precision_rounds(args)
        return

    import torch

    from cacmi_hf import CACMIConfig, CACMIForDenseCaptioning
    from cacmi_hf.open_clip_tower import resolve_open_clip
    from cacmi_hf.processing_cacmi import CACMIVideoProcessor
    from cacmi_hf.video_decoding import probe_video

    torch.manual_seed(0)
    video = args.video
    if video is None:
        video = Path(tempfile.gettempdir()) / f"cacmi_bench_{args.minutes:g}min_720p30.mp4"
        if not video.is_file():
            start = time.perf_counter()
            make_video(video, args.minutes)
            print(f"wrote {video} in {time.perf_counter() - start:.0f} s")
    info = probe_video(video)
    minutes = info.duration / 60

    spec = resolve_open_clip(args.clip_model)
    config = CACMIConfig.from_preset("activitynet", memory_size=args.memory_size, vocab_size=args.vocab_size)
    build = time.perf_counter()
    model = CACMIForDenseCaptioning.from_clip(spec.to_dict(), config=config).eval()
    model.set_memory_bank(torch.nn.functional.normalize(torch.randn(args.memory_size, model.config.text_dim), dim=-1),
                          torch.arange(args.memory_size) // 4)
    build = time.perf_counter() - build
    processor = CACMIVideoProcessor.from_open_clip(spec, num_frames=config.num_frames)
    sequential = CACMIVideoProcessor.from_open_clip(spec, num_frames=config.num_frames, seek=False)

    def decode(vp):
        return vp.pack([vp.sample_video(video)])

    # alternate the compared decoders so machine load drifts hit both alike
    seek_times, seq_times = [], []
    for i in range(max(args.repeats, args.sequential_repeats)):
        if i < args.repeats:
            seconds, batch, _ = median_time(lambda: decode(processor), 1)
            seek_times.append(seconds)
        if i < args.sequential_repeats:
            seq_times.append(median_time(lambda: decode(sequential), 1)[0])
    t_decode = statistics.median(seek_times)
    t_sequential = statistics.median(seq_times) if seq_times else None

    pixels, mask = batch["pixel_values_videos"], batch["video_mask"]
    frames = int(mask.sum())
    timed = min(args.clip_frames or frames, frames)
    with torch.inference_mode():
        t_clip, part, clip_runs = median_time(
            lambda: model.vision_tower(pixels[:, :timed], mask[:, :timed]), args.clip_repeats
        )
        t_clip *= frames / timed
        if timed < frames:  # the CACMI stage needs L features: random unit vectors (its cost does not depend on them)
            part = torch.nn.functional.normalize(torch.randn(1, frames, model.config.feature_dim), dim=-1)
        features = part
        t_cacmi, _, cacmi_runs = median_time(
            lambda: model.generate(video_features=features, video_mask=mask, durations=batch["durations"]), args.repeats
        )

    total = t_decode + t_clip + t_cacmi
    print()
    print(f"video: {info.width}x{info.height} {info.average_fps:g} fps, {info.duration:.0f} s; L = {frames} frames; "
          f"{args.clip_model} (random weights), ActivityNet preset, memory {args.memory_size}, vocab {args.vocab_size}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; model built in {build:.1f} s")
    print()
    print("| stage | s / video | s / minute of video | share of total |")
    print("|---|---|---|---|")
    clip_name = f"CLIP {args.clip_model}, {frames} frames" + (f" (timed on {timed}, scaled)" if timed < frames else "")
    for name, seconds in (("decode + preprocess (keyframe seeking)", t_decode), (clip_name, t_clip),
                          ("CACMI generate", t_cacmi)):
        print(f"| {name} | {seconds:.2f} | {seconds / minutes:.3f} | {100 * seconds / total:.1f} % |")
    print(f"| **total** | **{total:.2f}** | **{total / minutes:.3f}** | 100 % |")
    if t_sequential is not None:
        print(f"| (decode every frame instead, seek=False) | {t_sequential:.2f} | {t_sequential / minutes:.3f} | "
              f"{100 * t_sequential / (t_sequential + t_clip + t_cacmi):.1f} % of that total |")
    share = 100 * (t_decode + t_cacmi) / total
    print()
    print(f"decode + CACMI = {share:.1f} % of the total (target < 15 %): {'OK' if share < 15 else 'MISSED'}")
    print(f"runs (s): decode {', '.join(f'{t:.2f}' for t in seek_times)}; sequential {', '.join(f'{t:.2f}' for t in seq_times) or '-'}; "
          f"CLIP {', '.join(f'{t:.1f}' for t in clip_runs)}; CACMI {', '.join(f'{t:.2f}' for t in cacmi_runs)}")


if __name__ == "__main__":
    main()
