"""Write dense captions out: SubRip and WebVTT subtitles, the ActivityNet submission JSON, a timeline PNG.

Every function takes the events of one video as the pipeline returns them, a list of
`{"timestamp": [start, end] seconds, "caption": str, "score": float}`, or the pipeline's
`{"events": [...], ...}` form (`return_retrieved=True`); `to_densevid_json` takes one such list
per video id.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# ActivityNet Captions challenge submission format ("densevid_eval"); the evaluator reads `results`.
DENSEVID_VERSION = "VERSION 1.0"

# Timeline layout, in pixels (the PNG size follows from these; see `timeline_size`).
_TITLE_PX = 36
_THUMB_PX = 112
_ROW_PX = 26
_SECTION_PAD_PX = 30
_AXIS_PX = 46
_MAX_LABEL_CHARS = 90


def _events_of(events: Any, what: str = "events") -> list[dict[str, Any]]:
    """The event list of one video: a list of dicts, or the `events` entry of the pipeline's dict output."""
    if isinstance(events, Mapping) and "events" in events:
        events = events["events"]
    if isinstance(events, Mapping) and "error" in events:
        raise ValueError(f"{what} is a failed video ({events['error']}); it has no events to export.")
    if not isinstance(events, Sequence) or isinstance(events, (str, bytes)):
        raise ValueError(
            f"{what} must be a list of {{'timestamp': [s, e], 'caption': str}} dicts, got {type(events).__name__}."
        )
    checked = []
    for i, event in enumerate(events):
        if not isinstance(event, Mapping) or "timestamp" not in event:
            raise ValueError(f"{what}[{i}] must be a dict with a 'timestamp' [start, end]; got {event!r}.")
        stamp = event["timestamp"]
        if len(stamp) != 2 or not all(math.isfinite(float(t)) for t in stamp):
            raise ValueError(f"{what}[{i}]['timestamp'] must be two finite numbers [start, end]; got {stamp!r}.")
        checked.append(event)
    return checked


def _caption_of(event: Mapping[str, Any], placeholder: str = "...") -> str:
    """One-line caption text (subtitle formats end a cue at a blank line, so newlines become spaces).

    An empty caption becomes `placeholder` (a cue needs a text line).
    """
    text = " ".join(str(event.get("caption", event.get("sentence", ""))).split())
    return text or placeholder


def _time_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events sorted by (start, end); subtitle players expect cues in start order."""
    return sorted(events, key=lambda e: (float(e["timestamp"][0]), float(e["timestamp"][1])))


def _cue_times(event: Mapping[str, Any]) -> tuple[int, int]:
    """(start, end) in whole milliseconds, clamped at 0 and with end >= start."""
    start, end = (float(t) for t in event["timestamp"])
    start_ms = max(0, round(start * 1000))
    return start_ms, max(start_ms, round(end * 1000))


def _clock(ms: int, separator: str) -> str:
    """HH:MM:SS<sep>mmm; hours grow past two digits rather than wrap."""
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def _write(text: str, path: str | os.PathLike | None) -> str:
    """Write `text` (UTF-8) to `path` when given; return the text either way."""
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def to_srt(events: Any, path: str | os.PathLike | None = None, *, with_scores: bool = False) -> str:
    """SubRip subtitles of one video's events (time order, cues numbered from 1); written to `path` if given."""
    blocks = []
    for number, event in enumerate(_time_order(_events_of(events)), start=1):
        start, end = _cue_times(event)
        text = _caption_of(event).replace("-->", "->")  # "-->" would read as a timing line
        if with_scores and "score" in event:
            text = f"{text} ({float(event['score']):.2f})"
        blocks.append(f"{number}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n")
    return _write("\n".join(blocks), path)


def to_webvtt(events: Any, path: str | os.PathLike | None = None, *, with_scores: bool = False) -> str:
    """WebVTT subtitles of one video's events (time order, cue ids "event-1", ...); written to `path` if given."""
    blocks = ["WEBVTT\n"]
    for number, event in enumerate(_time_order(_events_of(events)), start=1):
        start, end = _cue_times(event)
        # cue text is HTML-like: escape markup characters; "-->" is not allowed in a cue payload
        text = _caption_of(event).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        if with_scores and "score" in event:
            text = f"{text} ({float(event['score']):.2f})"
        blocks.append(f"event-{number}\n{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n")
    return _write("\n".join(blocks), path)


def to_densevid_json(
    results: Mapping[str, Any],
    path: str | os.PathLike | None = None,
    *,
    with_scores: bool = False,
    external_data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """ActivityNet Captions submission dict `{"version", "results": {video_id: [{"sentence", "timestamp"}]}, "external_data"}`.

    `results` maps each video id to its events (a failed video, `{"error": ...}`, is left out: it
    scores as a video without predictions). `with_scores` adds each event's `score` (the evaluator
    ignores extra keys). Written to `path` as JSON when given.
    """
    if not isinstance(results, Mapping):
        raise ValueError(
            f"to_densevid_json needs a dict video_id -> events, got {type(results).__name__}; "
            "wrap a single video as {video_id: events}."
        )
    out: dict[str, list[dict[str, Any]]] = {}
    for video_id, events in results.items():
        if isinstance(events, Mapping) and "error" in events:
            continue
        entries = []
        for event in _time_order(_events_of(events, f"results[{video_id!r}]")):
            entry = {
                "sentence": _caption_of(event, placeholder=""),  # the evaluator scores an empty caption as such
                "timestamp": [float(event["timestamp"][0]), float(event["timestamp"][1])],
            }
            if with_scores and "score" in event:
                entry["score"] = float(event["score"])
            entries.append(entry)
        out[str(video_id)] = entries
    submission = {
        "version": DENSEVID_VERSION,
        "results": out,
        "external_data": dict(external_data)
        if external_data is not None
        else {"used": True, "details": "CLIP frame features (open_clip) and a CLIP text memory bank."},
    }
    if path is not None:
        Path(path).write_text(json.dumps(submission, indent=1), encoding="utf-8")
    return submission


def timeline_size(num_events: int, num_ground_truth: int | None = None, *, thumbnails: bool = False, width: int = 1280) -> tuple[int, int]:
    """(width, height) in pixels of the `plot_timeline` PNG: one row per event, a section per track."""
    height = _TITLE_PX + _AXIS_PX + _SECTION_PAD_PX + max(1, num_events) * _ROW_PX
    if num_ground_truth is not None:
        height += _SECTION_PAD_PX + max(1, num_ground_truth) * _ROW_PX
    if thumbnails:
        height += _THUMB_PX
    return width, height


def _thumbnail_frames(thumbnails: Any, duration: float, count: int) -> list[tuple[float, np.ndarray]]:
    """(time, RGB uint8 frame) pairs from a video source or from given pairs / a frames array."""
    if thumbnails is None or count < 1:
        return []
    if isinstance(thumbnails, (str, os.PathLike, bytes, bytearray)) or hasattr(thumbnails, "read"):
        from .video_decoding import decode_video

        decoded = decode_video(thumbnails, num_frames=count, max_short_side=_THUMB_PX)
        return [(float(t), f) for t, f in zip(decoded.timestamps, decoded.frames)]
    if isinstance(thumbnails, np.ndarray):
        if thumbnails.ndim != 4 or thumbnails.shape[-1] != 3:
            raise ValueError(f"thumbnail frames must be (T, H, W, 3) RGB, got shape {thumbnails.shape}.")
        picks = np.unique(np.linspace(0, len(thumbnails) - 1, num=min(count, len(thumbnails))).round().astype(int))
        return [((i + 0.5) * duration / len(thumbnails), thumbnails[i]) for i in picks]
    pairs = [(float(t), np.asarray(f)) for t, f in thumbnails]
    for t, frame in pairs:
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"thumbnail at {t:.1f}s must be an (H, W, 3) RGB frame, got shape {frame.shape}.")
    return pairs[:count]


def _draw_track(ax, events: list[dict[str, Any]], duration: float, colour: str, label: str) -> None:
    """One row per event: a bar over [start, end] with its caption beside (or inside) it."""
    from matplotlib import colors as mcolors

    rows = max(1, len(events))
    ax.set_xlim(0, duration)
    ax.set_ylim(rows - 0.5, -0.5)  # first event on top
    ax.set_yticks([])
    ax.set_title(label, loc="left", fontsize=9, pad=3, parse_math=False)
    for spine in ("top", "right"):
        ax.spines[spine].set_visible(False)
    base = np.array(mcolors.to_rgb(colour))
    for row, event in enumerate(events):
        start, end = (float(t) for t in event["timestamp"])
        score = event.get("score")
        # fainter bars for less confident events, never invisible
        alpha = 0.35 + 0.65 * float(np.clip(score, 0, 1)) if score is not None else 0.85
        ax.barh(row, max(end - start, duration * 1e-3), left=start, height=0.7, color=(*base, alpha), edgecolor=colour)
        text = _caption_of(event)
        if len(text) > _MAX_LABEL_CHARS:
            text = text[: _MAX_LABEL_CHARS - 1] + "…"
        if score is not None:
            text = f"{text}  ({float(score):.2f})"
        # beside the bar on the side with more room; inside it when the bar fills most of the axis
        pad = duration * 0.006
        if duration - end >= 0.4 * duration:
            ax.text(end + pad, row, text, va="center", ha="left", fontsize=8, clip_on=True, parse_math=False)
        elif start >= 0.4 * duration:
            ax.text(start - pad, row, text, va="center", ha="right", fontsize=8, clip_on=True, parse_math=False)
        else:
            ax.text(start + pad, row, text, va="center", ha="left", fontsize=8, clip_on=True, parse_math=False,
                    bbox=dict(boxstyle="square,pad=0.1", facecolor="white", alpha=0.7, linewidth=0))


def plot_timeline(
    events: Any,
    duration: float,
    path: str | os.PathLike | None = None,
    *,
    ground_truth: Any = None,
    thumbnails: Any = None,
    num_thumbnails: int = 6,
    title: str | None = None,
    width: int = 1280,
    dpi: int = 100,
):
    """Draw one video's events as bars over time with their captions (Agg backend, no display needed).

    Args:
        events: the predicted events (pipeline output of one video).
        duration: the video's duration in seconds (the x axis spans [0, duration]).
        path: where to write the PNG; when None the matplotlib `Figure` is returned instead.
        ground_truth: optional reference events, drawn in a second track underneath; a dict in the
            annotation format `{"timestamps": [[s, e], ...], "sentences": [...]}` works too.
        thumbnails: optional video source (path or bytes: `num_thumbnails` frames are decoded),
            frames array `(T, H, W, 3)`, or a list of `(time, frame)` pairs, shown in a strip on top.
        num_thumbnails: how many thumbnails at most.
        title: figure title (default: none).
        width / dpi: PNG width in pixels and resolution; the height follows `timeline_size`.

    Returns:
        the `Path` written, or the `Figure` when `path` is None.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    duration = float(duration)
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"plot_timeline needs the video's positive duration in seconds, got {duration!r}.")
    predicted = _time_order(_events_of(events))
    reference = None
    if ground_truth is not None:
        if isinstance(ground_truth, Mapping) and "timestamps" in ground_truth:
            ground_truth = [
                {"timestamp": stamp, "caption": sentence}
                for stamp, sentence in zip(ground_truth["timestamps"], ground_truth.get("sentences", [""] * len(ground_truth["timestamps"])))
            ]
        reference = _time_order(_events_of(ground_truth, "ground_truth"))
    thumbs = _thumbnail_frames(thumbnails, duration, num_thumbnails)
    width, height = timeline_size(
        len(predicted), None if reference is None else len(reference), thumbnails=bool(thumbs), width=width
    )

    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    left, right = 0.015, 0.985

    def frac(px: float) -> float:
        return px / height

    top = height - _TITLE_PX
    if title:
        fig.text(0.5, 1 - frac(_TITLE_PX / 2), title, ha="center", va="center", fontsize=11, parse_math=False)
    if thumbs:
        slot = (right - left) / len(thumbs)
        for i, (t, frame) in enumerate(thumbs):
            ax = fig.add_axes((left + i * slot + 0.1 * slot, frac(top - _THUMB_PX + 16), 0.8 * slot, frac(_THUMB_PX - 20)))
            ax.imshow(frame, aspect="equal")
            ax.set_axis_off()
            ax.set_title(f"{t:.1f}s", fontsize=7, pad=2)
        top -= _THUMB_PX
    tracks = [(predicted, "tab:blue", "predicted")]
    if reference is not None:
        tracks.append((reference, "tab:green", "ground truth"))
    axes = []
    for i, (track, colour, label) in enumerate(tracks):
        rows_px = max(1, len(track)) * _ROW_PX
        top -= _SECTION_PAD_PX
        ax = fig.add_axes((left, frac(top - rows_px), right - left, frac(rows_px)))
        _draw_track(ax, track, duration, colour, label)
        if thumbs:
            for t, _ in thumbs:
                ax.axvline(t, color="0.75", linewidth=0.6, linestyle=":", zorder=0)
        axes.append(ax)
        top -= rows_px
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("time (s)", fontsize=9)
    if path is None:
        return fig
    path = Path(path)
    fig.savefig(path, dpi=dpi, format="png")  # no bbox="tight": the size stays exactly (width, height)
    return path


__all__ = ["to_srt", "to_webvtt", "to_densevid_json", "plot_timeline", "timeline_size", "DENSEVID_VERSION"]
