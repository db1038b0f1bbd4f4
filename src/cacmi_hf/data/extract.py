"""`cacmi extract-features`: CLIP frame features of a folder (or list) of videos, one `<video_id>.npy` each.

Frames are sampled with PyAV at `--fps` (bin centres, `video_decoding.sample_times`) or at exactly
`--num-frames` times, preprocessed like open_clip's eval transform and embedded by the image tower in
batches under `torch.inference_mode`; each video's `(T, D)` float32 L2-normalised array is written to
a temporary name and renamed, so an interrupted run never leaves half a file and a rerun skips the
finished videos. A broken video (unreadable, no video stream, zero frames) is reported and skipped;
the command fails only when no video ends up with features (or on any failure with `--strict`).

Implementation: a plain loop with one decode-ahead thread (PyAV and torch both release the GIL, so
decoding the next video overlaps the tower on the current one). `datasets.map` was measured against
it (benchmarks/bench_data.py) and is slower: it adds Arrow serialisation of every feature matrix and
cannot overlap decoding with the tower without extra processes, which fight the tower for the cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
INFO_NAME = "extraction_info.json"


@dataclass
class ExtractionReport:
    """Outcome of an extraction run: written, already present (skipped) and failed videos with the reason."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    frames: int = 0

    def summary(self) -> str:
        """One paragraph for the console."""
        lines = [f"{len(self.written)} written ({self.frames} frames), {len(self.skipped)} already done, {len(self.failed)} failed."]
        lines += [f"  FAILED {vid}: {why}" for vid, why in self.failed.items()]
        return "\n".join(lines)


def find_videos(source: str | os.PathLike | Sequence[str | os.PathLike], extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[tuple[str, Path]]:
    """`(video_id, path)` pairs from a folder (recursive, sorted by id), a list file, one video, or a sequence of paths.

    A list file has one video per line: `path` (id = file stem) or `video_id<TAB>path`; relative
    paths are relative to the list file. Two videos with the same id are an error.
    """
    extensions = tuple(e.lower() for e in extensions)
    if isinstance(source, (list, tuple)):
        entries = [(Path(p).stem, Path(p)) for p in source]
    else:
        path = Path(source)
        if path.is_dir():
            found = (p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
            entries = sorted(((p.stem, p) for p in found), key=lambda e: (e[0], str(e[1])))  # by video id
            if not entries:
                raise FileNotFoundError(f"No videos ({', '.join(extensions)}) found under {path}.")
        elif path.is_file() and path.suffix.lower() in extensions:
            entries = [(path.stem, path)]
        elif path.is_file():
            entries = []
            for number, line in enumerate(path.read_text().splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                vid, _, rest = line.partition("\t")
                video = Path(rest.strip() if rest else vid)
                video = video if video.is_absolute() else path.parent / video
                entries.append(((vid if rest else video.stem).strip(), video))
        else:
            raise FileNotFoundError(f"{path} is neither a folder of videos, a video, nor a list file.")
    seen: dict[str, Path] = {}
    for vid, video in entries:
        if vid in seen:
            raise ValueError(f"Two videos share the id {vid!r}: {seen[vid]} and {video}; rename one or use a list file.")
        seen[vid] = video
    return entries


def _save_atomic(array: np.ndarray, target: Path) -> None:
    """Write `target` via a temporary file in the same folder, then rename (no half-written files)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, target)


class _Decoder(threading.Thread):
    """Decode-ahead thread: puts ("chunk", i, uint8 (b,3,S,S)), ("end", i, None) or ("error", i, msg) on a queue."""

    def __init__(self, videos, out, *, fps, num_frames, batch_size, max_short_side, image_size, resize_mode, interpolation):
        super().__init__(daemon=True)
        self.videos, self.out = videos, out
        self.fps, self.num_frames, self.batch_size = fps, num_frames, batch_size
        self.max_short_side, self.image_size = max_short_side, image_size
        self.resize_mode, self.interpolation = resize_mode, interpolation
        self.stop = threading.Event()

    def run(self) -> None:
        from ..open_clip_tower import resize_crop_frames
        from ..video_decoding import VideoReader, sample_times

        for i, (_, path) in enumerate(self.videos):
            if self.stop.is_set():
                return
            try:
                with VideoReader(path) as reader:
                    times = sample_times(reader.info.duration, fps=self.fps if self.num_frames is None else None, num_frames=self.num_frames)
                    chunk: list[np.ndarray] = []
                    for frame in reader.frames_at(times, max_short_side=self.max_short_side):
                        chunk.append(frame)
                        if len(chunk) == self.batch_size:
                            self._put(("chunk", i, self._prepare(chunk, resize_crop_frames)))
                            chunk = []
                    if chunk:
                        self._put(("chunk", i, self._prepare(chunk, resize_crop_frames)))
                self._put(("end", i, None))
            except Exception as err:  # one broken video must not stop the others
                self._put(("error", i, f"{type(err).__name__}: {err}"))

    def _prepare(self, frames: list[np.ndarray], resize_crop_frames) -> torch.Tensor:
        return resize_crop_frames(np.stack(frames), self.image_size, resize_mode=self.resize_mode, interpolation=self.interpolation)

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.5)
                return
            except queue.Full:
                continue


def extract_features(
    videos: Sequence[tuple[str, Path]],
    out_dir: str | os.PathLike,
    model: torch.nn.Module,
    spec: Any,
    *,
    fps: float | None = 1.0,
    num_frames: int | None = None,
    batch_size: int = 32,
    max_short_side: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    prefetch_batches: int = 8,
) -> ExtractionReport:
    """Write `<out_dir>/<video_id>.npy` `(T, D)` float32 L2-normalised CLIP features for each `(video_id, path)`.

    `num_frames`, when given, samples exactly that many frames per video instead of `fps`. Existing
    files are skipped unless `overwrite`; broken videos are recorded in the report, not raised.
    """
    from ..open_clip_tower import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, normalize_pixels

    if fps is None and num_frames is None:
        raise ValueError("extract_features needs fps= or num_frames=.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ExtractionReport()
    todo = []
    for vid, path in videos:
        if not overwrite and (out_dir / f"{vid}.npy").is_file():
            report.skipped.append(vid)
        else:
            todo.append((vid, path))
    if not todo:
        return report
    cfg = spec.preprocess_cfg
    mean, std = cfg.get("mean", OPENAI_CLIP_MEAN), cfg.get("std", OPENAI_CLIP_STD)
    param = next(model.parameters())
    items: queue.Queue = queue.Queue(maxsize=prefetch_batches)
    decoder = _Decoder(
        todo, items, fps=fps, num_frames=num_frames, batch_size=batch_size, max_short_side=max_short_side,
        image_size=spec.image_size, resize_mode=cfg.get("resize_mode", "shortest"), interpolation=cfg.get("interpolation", "bicubic"),
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="extract-features", unit="video")
    decoder.start()
    parts: list[torch.Tensor] = []
    finished = 0
    try:
        with torch.inference_mode():
            while finished < len(todo):
                kind, i, payload = items.get()
                vid = todo[i][0]
                if kind == "chunk":
                    pixels = normalize_pixels(payload.to(param.device), mean, std).to(param.dtype)  # (b,3,S,S)
                    parts.append(torch.nn.functional.normalize(model.encode_image(pixels).float(), dim=-1).cpu())
                    continue
                finished += 1
                if kind == "end":
                    features = torch.cat(parts).numpy().astype(np.float32, copy=False)  # (T, D)
                    _save_atomic(features, out_dir / f"{vid}.npy")
                    report.written.append(vid)
                    report.frames += features.shape[0]
                else:
                    report.failed[vid] = f"{todo[i][1]}: {payload}"
                    logger.warning("Skipping %s (%s): %s", vid, todo[i][1], payload)
                parts = []
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(failed=len(report.failed))
    finally:
        decoder.stop.set()
        if bar is not None:
            bar.close()
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cacmi extract-features`."""
    parser.add_argument("videos", help="Folder of videos (searched recursively), a list file (path or id<TAB>path per line), or one video.")
    parser.add_argument("--out", required=True, help="Output folder for <video_id>.npy files.")
    parser.add_argument("--clip", default="ViT-L-14", help="open_clip model name or local-dir folder (default: ViT-L-14).")
    parser.add_argument(
        "--pretrained", default=None,
        help="CLIP weights: a local file or local-dir folder, or an open_clip tag such as 'openai' (downloads).",
    )
    parser.add_argument("--fps", type=float, default=1.0, help="Frames sampled per second (default: 1).")
    parser.add_argument("--num-frames", type=int, default=None, help="Sample exactly this many frames per video instead of --fps.")
    parser.add_argument("--batch-size", type=int, default=32, help="Frames per image-tower batch (default: 32).")
    parser.add_argument("--max-short-side", type=int, default=None, help="Downscale larger frames while decoding (pixels).")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu).")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="Tower precision.")
    parser.add_argument("--quick-gelu", action="store_true", default=None, help="Force QuickGELU (OpenAI weights).")
    parser.add_argument("--overwrite", action="store_true", help="Re-extract videos whose .npy already exists.")
    parser.add_argument("--strict", action="store_true", help="Exit non-zero when any video fails (default: only when all fail).")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")


def _check_info(out_dir: Path, info: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix features made with other settings into an existing output folder."""
    path = out_dir / INFO_NAME
    if path.is_file() and not overwrite:
        previous = json.loads(path.read_text())
        if previous != info:
            changed = sorted(k for k in set(previous) | set(info) if previous.get(k) != info.get(k))
            raise SystemExit(
                f"{out_dir} holds features extracted with other settings ({', '.join(changed)} differ); "
                "use another --out folder or --overwrite."
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))


def run(args: argparse.Namespace) -> int:
    """Extract features for every video; returns 1 when no video has features (or, with --strict, any failed)."""
    from ..open_clip_tower import load_open_clip

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.pretrained is None and not (str(args.clip).startswith("local-dir:") or Path(args.clip).is_dir()):
        raise SystemExit("extract-features needs CLIP weights: pass --pretrained PATH|openai or a local-dir --clip folder.")
    videos = find_videos(args.videos)
    model, spec = load_open_clip(args.clip, args.pretrained, allow_download=True, quick_gelu=args.quick_gelu)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device=device, dtype=getattr(torch, args.dtype))
    info = {
        "clip": spec.to_dict(), "pretrained": None if args.pretrained is None else str(args.pretrained),
        "fps": None if args.num_frames else args.fps, "num_frames": args.num_frames,
        "max_short_side": args.max_short_side, "dtype": args.dtype,
    }
    out_dir = Path(args.out)
    _check_info(out_dir, json.loads(json.dumps(info, default=list)), args.overwrite)
    report = extract_features(
        videos, out_dir, model, spec, fps=args.fps, num_frames=args.num_frames, batch_size=args.batch_size,
        max_short_side=args.max_short_side, overwrite=args.overwrite, progress=not args.no_progress,
    )
    print(report.summary())
    if report.failed and (args.strict or not (report.written or report.skipped)):
        return 1
    return 0


__all__ = ["ExtractionReport", "extract_features", "find_videos"]
