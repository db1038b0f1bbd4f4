"""`cacmi extract-features`: CLIP frame features of a folder (or list) of videos, one `<video_id>.npy` each.

Frames are sampled with PyAV at `--fps` (bin centres, `video_decoding.sample_times`) or at exactly
`--num-frames` times, by seeking to the keyframe before each far target and decoding forward (the
same pictures as decoding every frame, `video_decoding.frames_at_seeking`), in `--decode-workers`
threads; preprocessed like open_clip's eval transform and embedded by the image tower (weights in
`--dtype`, "auto" = bf16 where the CPU or GPU has it natively) in per-video batches under
`torch.inference_mode`. Each video's `(T, D)` float32 L2-normalised array is written to a temporary
name and renamed, so an interrupted run never leaves half a file.

The manifest (`manifest.json`, one record per video: status, frames, fps, duration, stated duration,
decode span, truncation, feature checksum, error, attempts) makes runs resumable: a rerun skips done
videos and retries a failed one once. Sharding: `--num-shards N --shard K` (or `accelerate launch` /
`torchrun`, which set WORLD_SIZE and RANK) gives shard K the videos K, K + N, ... of the sorted list;
each shard appends its records to its own journal `shards/<K>-of-<N>.jsonl` as videos finish, and the
merge (rank 0 after a barrier, or the last shard to finish) folds the journals into `manifest.json`
after checking every feature file against its checksum. Each video's features depend on its frames
only (batches never mix videos), so any number of shards writes the same bytes as one process.

A broken video (unreadable, no video stream, zero frames) is recorded and skipped; a truncated one
(packets ending before the stated duration) is sampled over its decodable span with a warning, or
fails with `--strict`. The command fails when no video ends up with features (any failure with
`--strict`).

Implementation: a plain loop fed by decode threads (PyAV and torch release the GIL, so decoding the
next videos overlaps the tower). `datasets.map` was measured against it (benchmarks/bench_data.py) and
is slower: it adds Arrow serialisation of every feature matrix and cannot overlap decoding with the
tower without extra processes, which fight the tower for the cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import queue
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
INFO_NAME = "extraction_info.json"
MANIFEST_NAME = "manifest.json"
JOURNAL_FOLDER = "shards"
MAX_ATTEMPTS = 2  # a failed video is retried once by a rerun, then left failed


@dataclass
class ExtractionReport:
    """Outcome of an extraction run: written, already present (skipped) and failed videos with the reason."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    truncated: dict[str, str] = field(default_factory=dict)
    frames: int = 0

    def summary(self) -> str:
        """One paragraph for the console."""
        lines = [
            f"{len(self.written)} written ({self.frames} frames), {len(self.skipped)} already done, "
            f"{len(self.failed)} failed, {len(self.truncated)} truncated."
        ]
        lines += [f"  FAILED {vid}: {why}" for vid, why in self.failed.items()]
        lines += [f"  TRUNCATED {vid}: {why}" for vid, why in self.truncated.items() if vid not in self.failed]
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


def shard_videos(videos: Sequence[tuple[str, Path]], shard: int, num_shards: int) -> list[tuple[str, Path]]:
    """The videos shard `shard` of `num_shards` extracts: every `num_shards`-th of the list, from `shard`."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise ValueError(f"--shard must be in [0, --num-shards) and --num-shards >= 1, got shard {shard} of {num_shards}.")
    return list(videos[shard::num_shards])


def file_checksum(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_atomic(array: np.ndarray, target: Path) -> None:
    """Write `target` via a temporary file in the same folder, then rename (no half-written files)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
    os.replace(tmp, target)


class Manifest:
    """The per-video records of an output folder: the merged `manifest.json` plus the shards' append-only journals."""

    def __init__(self, out_dir: str | os.PathLike, shard: int = 0, num_shards: int = 1):
        self.out_dir = Path(out_dir)
        self.journal = self.out_dir / JOURNAL_FOLDER / f"{shard}-of-{num_shards}.jsonl"

    def load(self) -> dict[str, dict[str, Any]]:
        """Latest record of every video: the merged manifest, then every journal line (later lines win)."""
        records: dict[str, dict[str, Any]] = {}
        merged = self.out_dir / MANIFEST_NAME
        if merged.is_file():
            records.update(json.loads(merged.read_text())["videos"])
        for journal in sorted((self.out_dir / JOURNAL_FOLDER).glob("*.jsonl")):
            for line in journal.read_text().splitlines():
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by a crash: that video simply runs again
                    records[record["video_id"]] = record
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Add one video's record to this shard's journal (one line, flushed: it survives a crash)."""
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def merge(self, videos: Sequence[tuple[str, Path]]) -> Path:
        """Fold the journals into `manifest.json` (sorted by id, checksums verified) and delete them.

        Raises a ValueError naming the video when a done video's feature file is missing or does not match
        its checksum (a file changed after it was written: rerun with --overwrite for that folder).
        """
        records = self.load()
        missing = [vid for vid, _ in videos if vid not in records]
        if missing:
            raise ValueError(f"Cannot merge {self.out_dir}: {len(missing)} video(s) have no record yet, e.g. {missing[:3]}; "
                             "run every shard first.")
        for vid, _ in videos:
            record = records[vid]
            if record["status"] == "done":
                path = self.out_dir / f"{vid}.npy"
                if not path.is_file() or file_checksum(path) != record["sha256"]:
                    raise ValueError(f"{path} is missing or does not match its manifest checksum; rerun with --overwrite.")
        ordered = {vid: records[vid] for vid in sorted(vid for vid, _ in videos)}
        merged = self.out_dir / MANIFEST_NAME
        tmp = merged.with_name(f".{merged.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"videos": ordered}, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, merged)
        for journal in (self.out_dir / JOURNAL_FOLDER).glob("*.jsonl"):
            journal.unlink()
        return merged


class _Decoders:
    """Decode threads: each takes the next video and puts ("chunk", i, uint8 (b,3,S,S)), ("end", i, record) or
    ("error", i, record) on the queue; chunks of one video arrive in order."""

    def __init__(self, videos, out, *, workers, fps, num_frames, batch_size, max_short_side, image_size, resize_mode,
                 interpolation, seek, strict):
        self.videos, self.out = videos, out
        self.fps, self.num_frames, self.batch_size = fps, num_frames, batch_size
        self.max_short_side, self.image_size = max_short_side, image_size
        self.resize_mode, self.interpolation = resize_mode, interpolation
        self.seek, self.strict = seek, strict
        self.stop = threading.Event()
        self._next = iter(range(len(videos)))
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(max(1, workers))]

    def start(self) -> None:
        """Start the decode threads."""
        for thread in self.threads:
            thread.start()

    def _work(self) -> None:
        while not self.stop.is_set():
            with self._lock:
                i = next(self._next, None)
            if i is None:
                return
            self._decode(i)

    def _decode(self, i: int) -> None:
        from ..open_clip_tower import resize_crop_frames
        from ..video_decoding import VideoReader, iter_frames_at_seeking, sample_times

        path = self.videos[i][1]
        record: dict[str, Any] = {"path": str(path)}
        try:
            with VideoReader(path, strict=self.strict, warn=False) as reader:
                info = reader.info
                record.update(
                    source_fps=info.average_fps, duration=info.duration, stated_duration=info.stated_duration,
                    decode_span=list(info.decodable_span) if info.decodable_span else None, truncated=info.truncated,
                )
                if info.truncated:
                    record["warning"] = info.truncation_message()
                times = sample_times(info.duration, fps=self.fps if self.num_frames is None else None, num_frames=self.num_frames)
                frames = iter_frames_at_seeking(reader, times, max_short_side=self.max_short_side) if self.seek else \
                    reader.frames_at(times, max_short_side=self.max_short_side)
                chunk: list[np.ndarray] = []
                for frame in frames:
                    chunk.append(frame)
                    if len(chunk) == self.batch_size:
                        self._put(("chunk", i, self._prepare(chunk, resize_crop_frames)))
                        chunk = []
                if chunk:
                    self._put(("chunk", i, self._prepare(chunk, resize_crop_frames)))
                record["corrupt_packets"] = reader.num_corrupt_packets
            self._put(("end", i, record))
        except Exception as err:  # noqa: BLE001 - one broken video must not stop the others
            record["error"] = f"{type(err).__name__}: {err}"
            self._put(("error", i, record))

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
    seek: bool = True,
    decode_workers: int = 1,
    strict: bool = False,
    shard: int = 0,
    num_shards: int = 1,
) -> ExtractionReport:
    """Write `<out_dir>/<video_id>.npy` `(T, D)` float32 L2-normalised CLIP features for this shard's videos.

    `num_frames`, when given, samples exactly that many frames per video instead of `fps`. `videos` is the
    whole list; shard `shard` of `num_shards` takes every `num_shards`-th one. Done videos are skipped and a
    failed one is retried once (unless `overwrite`); every outcome is appended to the shard's manifest journal
    (merge with `Manifest(out_dir).merge(videos)`). Broken videos are recorded in the report, not raised.
    """
    from ..open_clip_tower import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, normalize_pixels
    from ..video_decoding import TruncatedVideoWarning

    if fps is None and num_frames is None:
        raise ValueError("extract_features needs fps= or num_frames=.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir, shard, num_shards)
    records = {} if overwrite else manifest.load()
    report = ExtractionReport()
    todo = []
    for vid, path in shard_videos(videos, shard, num_shards):
        record = records.get(vid)
        done = (out_dir / f"{vid}.npy").is_file() and (record is None or record["status"] == "done")
        if not overwrite and done:
            report.skipped.append(vid)
        elif record is not None and record["status"] == "failed" and record.get("attempts", 1) >= MAX_ATTEMPTS:
            report.failed[vid] = record["error"]  # already retried once: left failed
        else:
            attempts = record.get("attempts", 0) if record is not None and record["status"] == "failed" else 0
            todo.append((vid, path, attempts + 1))
    if not todo:
        return report
    cfg = spec.preprocess_cfg
    mean, std = cfg.get("mean", OPENAI_CLIP_MEAN), cfg.get("std", OPENAI_CLIP_STD)
    param = next(model.parameters())
    items: queue.Queue = queue.Queue(maxsize=prefetch_batches)
    decoders = _Decoders(
        todo, items, workers=decode_workers, fps=fps, num_frames=num_frames, batch_size=batch_size,
        max_short_side=max_short_side, image_size=spec.image_size, resize_mode=cfg.get("resize_mode", "shortest"),
        interpolation=cfg.get("interpolation", "bicubic"), seek=seek, strict=strict,
    )
    bar = None
    if progress:
        from ..progress import progress as progress_bar

        bar = progress_bar(total=len(todo), desc="extract-features", unit="video")
    decoders.start()
    parts: dict[int, list[torch.Tensor]] = {}
    finished = 0
    try:
        with torch.inference_mode():
            while finished < len(todo):
                kind, i, payload = items.get()
                vid, path, attempts = todo[i]
                if kind == "chunk":
                    pixels = normalize_pixels(payload.to(param.device), mean, std).to(param.dtype)  # (b,3,S,S)
                    embedded = model.encode_image(pixels).float()  # (b, D) float32 whatever the tower's dtype
                    parts.setdefault(i, []).append(torch.nn.functional.normalize(embedded, dim=-1).cpu())
                    continue
                finished += 1
                record = {"video_id": vid, "attempts": attempts, **payload}
                if record.get("warning"):
                    report.truncated[vid] = record["warning"]
                    warnings.warn(record["warning"], TruncatedVideoWarning, stacklevel=2)
                if kind == "end":
                    features = torch.cat(parts.pop(i)).numpy().astype(np.float32, copy=False)  # (T, D)
                    target = out_dir / f"{vid}.npy"
                    _save_atomic(features, target)
                    record.update(status="done", frames=int(features.shape[0]), feature_dim=int(features.shape[1]),
                                  sha256=file_checksum(target))
                    report.written.append(vid)
                    report.frames += features.shape[0]
                else:
                    parts.pop(i, None)
                    record["status"] = "failed"
                    report.failed[vid] = f"{path}: {record['error']}"
                    logger.warning("Skipping %s (%s): %s", vid, path, record["error"])
                record.update(sample_fps=None if num_frames else fps, num_frames=num_frames)
                manifest.append(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(failed=len(report.failed))
    finally:
        decoders.stop.set()
        if bar is not None:
            bar.close()
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cacmi extract-features`."""
    from ..open_clip_tower import TOWER_DTYPE_CHOICES

    parser.add_argument("videos", help="Folder of videos (searched recursively), a list file (path or id<TAB>path per line), or one video.")
    parser.add_argument("--out", required=True, help="Output folder for <video_id>.npy files and manifest.json.")
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
    parser.add_argument(
        "--dtype", default="auto", choices=(*TOWER_DTYPE_CHOICES, "float32", "float16", "bfloat16"),
        help="Tower weight precision (default auto: bf16 on GPU or a CPU with native bf16, else fp32); features are float32.",
    )
    parser.add_argument("--quick-gelu", action="store_true", default=None, help="Force QuickGELU (OpenAI weights).")
    parser.add_argument("--no-seek", action="store_true", help="Decode every frame instead of seeking to keyframes (same frames, slower).")
    parser.add_argument("--decode-workers", type=int, default=2, help="Videos decoded at once, in threads (default: 2).")
    parser.add_argument("--num-shards", type=int, default=None, help="Split the list into this many shards (default: WORLD_SIZE or 1).")
    parser.add_argument("--shard", type=int, default=None, help="This process's shard in [0, --num-shards) (default: RANK or 0).")
    parser.add_argument("--merge", action="store_true", help="Only merge the shards' journals into manifest.json.")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads of the tower (default: torch's). Shards on one CPU may split its cores; features are "
             "byte-identical across shard counts at the same thread count (a CPU matmul's sums depend on it).",
    )
    parser.add_argument("--overwrite", action="store_true", help="Re-extract videos whose .npy already exists.")
    parser.add_argument(
        "--strict", action="store_true",
        help="Truncated videos are errors, and any failure gives a non-zero exit (default: only when all fail).",
    )
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # shards write the same content at the same time
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, path)


def _distributed() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) under `accelerate launch` / `torchrun` (WORLD_SIZE > 1), else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def _merge_when_complete(out_dir: Path, videos, shard: int, num_shards: int, launched: bool) -> Path | None:
    """Merge the journals: rank 0 after a barrier when launched, else whichever shard sees every video recorded."""
    manifest = Manifest(out_dir, shard, num_shards)
    if launched:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        dist.barrier()
        merged = manifest.merge(videos) if shard == 0 else None
        dist.barrier()
        return merged
    if any(vid not in manifest.load() for vid, _ in videos):
        return None  # other shards still running: the last one merges
    lock = out_dir / ".merge.lock"
    try:
        handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return None  # another shard is merging
    try:
        return manifest.merge(videos)
    finally:
        os.close(handle)
        lock.unlink()


def run(args: argparse.Namespace) -> int:
    """Extract this shard's features and merge when all are done; returns 1 when no video has features
    (or, with --strict, any failed)."""
    from ..open_clip_tower import dtype_name, load_open_clip, resolve_tower_dtype

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    videos = find_videos(args.videos)
    out_dir = Path(args.out)
    launched = _distributed()
    shard = args.shard if args.shard is not None else (launched[0] if launched else 0)
    num_shards = args.num_shards if args.num_shards is not None else (launched[1] if launched else 1)
    try:
        shard_videos(videos, shard, num_shards)  # checks the shard arguments before any work
    except ValueError as err:
        raise SystemExit(str(err)) from err
    if args.merge:
        print(f"merged: {Manifest(out_dir).merge(videos)}")
        return 0
    if args.pretrained is None and not (str(args.clip).startswith("local-dir:") or Path(args.clip).is_dir()):
        raise SystemExit("extract-features needs CLIP weights: pass --pretrained PATH|openai or a local-dir --clip folder.")
    model, spec = load_open_clip(args.clip, args.pretrained, allow_download=True, quick_gelu=args.quick_gelu)
    if args.device:
        device = args.device
    elif torch.cuda.is_available():
        device = f"cuda:{launched[2]}" if launched else "cuda"
    else:
        device = "cpu"
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = resolve_tower_dtype(args.dtype, device)
    model = model.to(device=device, dtype=dtype)
    info = {
        "clip": spec.to_dict(), "pretrained": None if args.pretrained is None else str(args.pretrained),
        "fps": None if args.num_frames else args.fps, "num_frames": args.num_frames,
        "max_short_side": args.max_short_side, "dtype": dtype_name(dtype),
    }
    _check_info(out_dir, json.loads(json.dumps(info, default=list)), args.overwrite)
    report = extract_features(
        videos, out_dir, model, spec, fps=args.fps, num_frames=args.num_frames, batch_size=args.batch_size,
        max_short_side=args.max_short_side, overwrite=args.overwrite, progress=not args.no_progress,
        seek=not args.no_seek, decode_workers=args.decode_workers, strict=args.strict, shard=shard, num_shards=num_shards,
    )
    print(report.summary())
    merged = _merge_when_complete(out_dir, videos, shard, num_shards, launched is not None)
    if merged is not None:
        print(f"manifest: {merged}")
    if report.failed and (args.strict or not (report.written or report.skipped)):
        return 1
    return 0


__all__ = ["ExtractionReport", "Manifest", "extract_features", "file_checksum", "find_videos", "shard_videos"]
