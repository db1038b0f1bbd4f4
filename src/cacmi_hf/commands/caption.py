"""`cacmi caption`: dense captions of video files with a trained model, as text, subtitles, JSON and timelines.

    cacmi caption talk.mp4 cooking/ --model my-cacmi --srt --vtt --json results.json --plot timeline.png

Every video gets its events printed; `--srt` / `--vtt` write `<video_id>.srt` / `.vtt` (beside the video,
or in `--out-dir`), `--json` one ActivityNet-format file for all videos, `--plot` a timeline PNG (with
several videos, `timeline_<video_id>.png` beside the given name). A video that cannot be read is
reported (an "errors" entry of the JSON) and skipped; the exit status is 1 when any video failed, 2 when all did.
The vision tower runs in `--dtype` (default auto: bf16 where the hardware has it natively).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cacmi caption`."""
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="Video files or folders of videos (searched recursively).")
    parser.add_argument("--model", required=True, help="Model folder or hub id (model + processor, saved with save_pretrained).")
    parser.add_argument("--srt", action="store_true", help="Write <video_id>.srt subtitles.")
    parser.add_argument("--vtt", action="store_true", help="Write <video_id>.vtt (WebVTT) subtitles.")
    parser.add_argument("--json", metavar="OUT.json", help="Write all results in the ActivityNet Captions submission format.")
    parser.add_argument("--plot", metavar="OUT.png", help="Write a timeline PNG (events over time, a few thumbnails).")
    parser.add_argument("--out-dir", help="Folder for the .srt/.vtt files (default: beside each video).")
    parser.add_argument("--threshold", type=float, default=None, help="Drop events with a lower confidence score.")
    parser.add_argument("--max-events", type=int, default=None, help="Events per video (default: the model's event counter).")
    parser.add_argument("--rerank-alpha", type=float, default=None,
                        help="Weight of the caption score when ranking events (default: the model config's rerank_alpha).")
    parser.add_argument("--batch-size", type=int, default=1, help="Videos per model batch (default: 1).")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda when available).")
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
        help="Vision-tower weights (default auto: bf16 on GPU or a CPU with native bf16, else fp32).",
    )
    parser.add_argument("--strict", action="store_true",
                        help="A truncated video (frames ending before its stated duration) fails instead of a warning.")
    parser.add_argument("--memory-budget-mb", type=float, default=1024.0,
                        help="Activation memory of one vision-tower batch (default: 1024).")
    parser.add_argument("--scores", action="store_true", help="Show confidence scores in the subtitles.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes):02d}:{secs:05.2f}"


def _load_pipeline(model: str, device: str | None):
    """The dense-video-captioning pipeline of a saved model folder (this package's code, no remote code needed)."""
    import torch
    from transformers import AutoModel, AutoProcessor

    from .. import processing_cacmi
    from ..pipeline_dense_video_captioning import DenseVideoCaptioningPipeline

    processing_cacmi.register()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    processor = AutoProcessor.from_pretrained(model)
    net = AutoModel.from_pretrained(model)
    return DenseVideoCaptioningPipeline(model=net, processor=processor, device=torch.device(device), task="dense-video-captioning")


def _list_videos(sources: list[str]) -> list[tuple[str, Path]]:
    """(video_id, path) for each argument; folders are expanded, missing files are kept (and fail on their own)."""
    from ..data.extract import find_videos

    paths: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            paths.extend(p for _, p in find_videos(path))
        else:
            paths.append(path)
    return find_videos(paths)  # checks that ids are unique


def run(args: argparse.Namespace) -> int:
    """Caption every video; print the events and write the requested files."""
    from ..exports import plot_timeline, to_densevid_json, to_srt, to_webvtt
    from ..video_decoding import probe_video

    if args.batch_size < 1:
        raise SystemExit(f"--batch-size must be >= 1, got {args.batch_size}.")
    try:
        videos = _list_videos(args.videos)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(str(err)) from err
    pipe = _load_pipeline(args.model, args.device)
    pipe._set_tower_dtype(args.dtype)
    options = {"on_error": "return", "batch_size": args.batch_size, "strict": args.strict,
               "memory_budget_mb": args.memory_budget_mb}
    if args.threshold is not None:
        options["threshold"] = args.threshold
    if args.max_events is not None:
        options["max_events"] = args.max_events
    if args.rerank_alpha is not None:
        options["rerank_alpha"] = args.rerank_alpha

    bar = None
    if not args.no_progress:
        from ..progress import progress as progress_bar

        bar = progress_bar(total=len(videos), desc="caption", unit="video")
    results: dict[str, object] = {}
    # one streamed call: the next videos decode while the current batch is in the tower
    for (vid, _), out in zip(videos, pipe((str(path) for _, path in videos), **options)):
        results[vid] = out
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    out_dir = Path(args.out_dir) if args.out_dir else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    failed = {vid: out["error"] for vid, out in results.items() if isinstance(out, dict)}
    for vid, path in videos:
        events = results[vid]
        if vid in failed:
            print(f"{vid}: FAILED {failed[vid]}")
            continue
        print(f"{vid}: {len(events)} events")
        for event in events:
            start, end = event["timestamp"]
            print(f"  [{_clock(start)} - {_clock(end)}] {event['caption']}  ({event['score']:.2f})")
        folder = out_dir if out_dir is not None else path.parent
        if args.srt:
            to_srt(events, folder / f"{vid}.srt", with_scores=args.scores)
        if args.vtt:
            to_webvtt(events, folder / f"{vid}.vtt", with_scores=args.scores)
        if args.plot:
            target = Path(args.plot)
            if len(videos) > 1:
                target = target.with_name(f"{target.stem}_{vid}{target.suffix or '.png'}")
            plot_timeline(events, probe_video(path).duration, target, thumbnails=path, title=vid)
    if args.json:
        submission = to_densevid_json(results)
        if failed:
            submission["errors"] = failed  # a failed video is absent from "results" (no predictions), said why here
        Path(args.json).write_text(json.dumps(submission, indent=2))
    if failed:
        print(f"{len(failed)} of {len(videos)} videos failed.", file=sys.stderr)
        return 2 if len(failed) == len(videos) else 1
    return 0


__all__ = ["add_arguments", "run"]
