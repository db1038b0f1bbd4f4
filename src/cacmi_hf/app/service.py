"""What the app does with an upload, without any web framework: check it, caption it, write its downloads.

`CaptioningService` loads each model once (the pipeline of a saved cacmi folder or hub id), captions one
video at a time through that pipeline's own steps — decode, CLIP features, generation, post-processing,
so the page can show each stage and the result is exactly `pipeline(...)`'s — and writes the subtitles,
the JSON and the timeline PNG into a folder of its own under one temporary root. Everything a user can
get wrong (an unreadable or empty file, a video over the length limit, a folder that is not a cacmi
model, a frame count the model cannot take) is raised as an `AppError` whose message is meant for the page.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..video_decoding import VideoDecodingError

DEFAULT_MAX_DURATION_S = 600.0  # ten minutes: a long video costs L CLIP passes anyway, but decoding grows with it
EVENT_COUNTS = ("auto", "fixed")
TABLE_HEADERS = ["#", "start (s)", "end (s)", "caption", "score"]
RETRIEVED_HEADER = "retrieved memory sentences (CFA)"


class AppError(Exception):
    """A problem with what the user gave (video, model, settings), with a message written for the page."""


@dataclass
class CaptionOptions:
    """The page's controls: rerank alpha (None: the model config's), event count (auto: the model's counter; fixed:
    `num_events`), frames L (None: the processor's)."""

    rerank_alpha: float | None = None
    event_count: str = "auto"
    num_events: int = 3
    num_frames: int | None = None  # None: the processor's L
    show_retrieved: bool = True
    top_retrieved: int = 3

    def pipeline_options(self) -> dict[str, Any]:
        """The `pipeline(...)` call options these controls stand for (retrieval aside)."""
        if self.event_count not in EVENT_COUNTS:
            raise AppError(f"Event count must be one of {EVENT_COUNTS}, got {self.event_count!r}.")
        options: dict[str, Any] = {} if self.rerank_alpha is None else {"rerank_alpha": float(self.rerank_alpha)}
        if self.event_count == "fixed":
            if int(self.num_events) < 1:
                raise AppError(f"A fixed event count must be at least 1, got {self.num_events}.")
            options["max_events"] = int(self.num_events)
        return options


@dataclass
class CaptionResult:
    """One captioned video: the pipeline's events, the table rows, the files written and the stage times."""

    name: str
    duration: float
    events: list[dict[str, Any]]
    pseudo_events: list[dict[str, Any]] | None
    headers: list[str]
    rows: list[list[Any]]
    folder: Path
    files: dict[str, Path]  # "vtt", "srt", "json", "timeline"
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the page: how many events, in how long, per stage."""
        stages = ", ".join(f"{stage} {sec:.2f} s" for stage, sec in self.seconds.items() if stage != "total")
        count = f"{len(self.events)} event" + ("" if len(self.events) == 1 else "s")
        return f"{count} in {self.name} ({self.duration:.1f} s of video), found in {self.seconds['total']:.2f} s: {stages}."


def retrieved_for_events(events: list[dict[str, Any]], pseudo_events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """For each event, the retrieved sentences of the CFA pseudo-event it overlaps most (nearest centre if none)."""
    if not events or not pseudo_events:
        return [[] for _ in events]
    spans = np.array([e["timestamp"] for e in events], dtype=np.float64)  # (E, 2)
    pseudo = np.array([p.get("timestamp", [0.0, 0.0]) for p in pseudo_events], dtype=np.float64)  # (P, 2)
    overlap = np.minimum(spans[:, None, 1], pseudo[None, :, 1]) - np.maximum(spans[:, None, 0], pseudo[None, :, 0])  # (E, P)
    distance = np.abs(spans.mean(1)[:, None] - pseudo.mean(1)[None, :])  # (E, P)
    # most overlap first; among events overlapping nothing, the nearest pseudo-event
    best = np.where(overlap.max(1) > 0, overlap.argmax(1), distance.argmin(1))  # (E,)
    return [pseudo_events[j]["retrieved"] for j in best.tolist()]


def event_rows(
    events: list[dict[str, Any]], retrieved: list[list[dict[str, Any]]] | None = None, top: int = 3
) -> list[list[Any]]:
    """Table rows `[#, start, end, caption, score(, retrieved)]`, times and scores as fixed-point text.

    The retrieved column lists the `top` best distinct sentences (a memory bank built from training captions
    holds the same sentence many times; the first, best-scored copy stands for all).
    """
    rows = []
    for number, event in enumerate(events, start=1):
        start, end = event["timestamp"]
        row = [number, f"{start:.2f}", f"{end:.2f}", event["caption"], f"{event['score']:.3f}"]
        if retrieved is not None:
            distinct = list({h["sentence"]: h for h in reversed(retrieved[number - 1])}.values())[::-1][:top]
            row.append(" · ".join(f"{h['sentence']} ({h['score']:.2f})" if "score" in h else h["sentence"] for h in distinct))
        rows.append(row)
    return rows


class _WatchedStream:
    """The pipeline's frame stream with a progress report per chunk; every other attribute is the stream's own."""

    def __init__(self, stream, total: int, report: Callable[[float, str], None], lap: Callable[[str], None]):
        self._stream, self._total, self._report, self._lap = stream, total, report, lap

    def __iter__(self):
        done = 0
        for chunk in self._stream:  # (b, 3, S, S) frames, decoded while CLIP embeds the previous chunk
            yield chunk
            done += len(chunk)
            times = getattr(self._stream, "times", None)  # known once the stream's thread opened the file
            total = len(times) if times is not None else self._total
            self._report(0.1 + 0.6 * min(done / total, 1.0), f"decoding frames and CLIP features: {done}/{total}")
        self._lap("frames")
        self._report(0.7, "captioning")

    def __getattr__(self, name):
        return getattr(self._stream, name)  # e.g. the sample times the pipeline checks the features against


def _watch_frames(item: dict[str, Any], report: Callable[[float, str], None], lap: Callable[[str], None]) -> bool:
    """Wrap the pipeline item's frame stream so that each chunk reports progress and its end closes the "frames" lap."""
    item["stream"] = _WatchedStream(item["stream"], max(int(item.get("num_frames") or 0), 1), report, lap)
    return True


def _readable(err: BaseException, path: str, name: str) -> str:
    """The error's message with the server-side upload path replaced by the name the user knows."""
    return str(err).replace(path, name)


def _check_model_folder(model: str) -> None:
    """Raise an AppError unless `model` is a local cacmi folder or something that may be a hub id."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        config = folder / "config.json"
        if not config.is_file():
            raise AppError(
                f"The model folder {model} has no config.json, so it is not a saved model; give a folder written by "
                "`cacmi demo` (cacmi-demo/full/model-cacmi), examples/train.py or save_pretrained."
            )
        try:
            model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
            raise AppError(f"The model folder {model} has an unreadable config.json ({err}).") from err
        if model_type != "cacmi":
            raise AppError(
                f"The model folder {model} is not a cacmi model: its config.json says model_type {model_type!r} "
                "(expected 'cacmi'). Give a folder written by `cacmi demo`, examples/train.py or save_pretrained."
            )
        return
    if folder.exists() or model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise AppError(
            f"The model {model} is neither a model folder nor a hub id (owner/name); check the path (the default, "
            "cacmi-demo/full/model-cacmi, is what `cacmi demo` trains)."
        )


class CaptioningService:
    """Models loaded once, uploads captioned one at a time into their own folders under one temporary root.

    Args:
        model: the default model (folder or hub id), loaded on first use.
        max_duration_s: longest video accepted, in seconds (`None`: no limit).
        root: the folder for every file the service writes (default: a fresh temporary folder, removed by `close`).
        device: torch device (default: cuda when available).
        max_models: models kept loaded at once (least recently used dropped first).
        keep_results_s: result folders older than this are removed when the next video comes in.
    """

    def __init__(
        self,
        model: str,
        *,
        max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
        root: str | os.PathLike | None = None,
        device: str | None = None,
        max_models: int = 2,
        keep_results_s: float = 3600.0,
    ):
        self.default_model = str(model)
        self.max_duration_s = max_duration_s
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="cacmi-app-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.device = device
        self.max_models = max(1, int(max_models))
        self.keep_results_s = keep_results_s
        self._pipelines: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()  # one model load at a time; loaded pipelines are shared

    # ---------------------------------------------------------------------------------------------------------------
    # models

    def pipeline(self, model: str | None = None):
        """The dense-video-captioning pipeline of `model` (default: the service's), loaded once and kept."""
        model = (model or self.default_model).strip()
        with self._lock:
            if model in self._pipelines:
                self._pipelines.move_to_end(model)
                return self._pipelines[model]
            pipe = self._load(model)
            self._pipelines[model] = pipe
            while len(self._pipelines) > self.max_models:
                self._pipelines.popitem(last=False)
            return pipe

    def _load(self, model: str):
        """Load a pipeline, turning every way a model can be wrong into an AppError naming it."""
        import torch
        from transformers import pipeline

        from .. import _register

        _check_model_folder(model)
        _register()  # the task and the Auto classes, as `import cacmi_hf` does
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            return pipeline("dense-video-captioning", model=model, device=device)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise AppError(f"Could not load the model {model}: {err}") from err

    def default_num_frames(self, model: str | None = None) -> int:
        """L of the model's processor (frames sampled per video)."""
        pipe = self.pipeline(model)
        return int(pipe.processor.video_processor.num_frames or pipe.model.config.num_frames)

    def default_rerank_alpha(self, model: str | None = None) -> float:
        """The rerank alpha `pipeline(...)` uses for the model when none is given (its config's)."""
        return float(getattr(self.pipeline(model).model.config, "rerank_alpha", 1.0))

    def can_retrieve(self, model: str | None = None) -> bool:
        """Whether the model's CFA retrieves memory sentences the page can show."""
        pipe = self.pipeline(model)
        return getattr(pipe.model.config, "use_cfa", False) is True and pipe.processor.memory_sentences is not None

    def _with_frames(self, pipe, num_frames: int | None):
        """`pipe` itself, or a pipeline sharing its model whose processor samples `num_frames` frames."""
        if num_frames is None or int(num_frames) == pipe.processor.video_processor.num_frames:
            return pipe
        if int(num_frames) < 1:
            raise AppError(f"Frames L must be at least 1, got {num_frames}.")
        processor = copy.copy(pipe.processor)  # the shared one is never changed: other requests use it
        processor.video_processor = copy.copy(pipe.processor.video_processor)
        processor.video_processor.num_frames = int(num_frames)
        return type(pipe)(model=pipe.model, processor=processor, device=pipe.device, task=pipe.task)

    # ---------------------------------------------------------------------------------------------------------------
    # captioning

    def new_folder(self) -> Path:
        """A fresh folder for one request's files (older ones past `keep_results_s` are removed first)."""
        results = self.root / "results"
        results.mkdir(exist_ok=True)
        now = time.time()
        for old in results.iterdir():
            try:
                if now - old.stat().st_mtime > self.keep_results_s:
                    shutil.rmtree(old, ignore_errors=True)
            except FileNotFoundError:  # removed by a concurrent request
                continue
        return Path(tempfile.mkdtemp(dir=results))

    def check_video(self, path: str, name: str) -> float:
        """The video's duration in seconds; an AppError when it cannot be read or is over the limit."""
        from ..video_decoding import probe_video

        if not path or not Path(path).is_file():
            raise AppError("No video: upload a video file (mp4, webm, mkv, ...) or pick an example.")
        try:
            duration = float(probe_video(path).duration)
        except Exception as err:  # noqa: BLE001 - any failure to open the file is the file's problem
            raise AppError(f"{name} could not be read as a video: {_readable(err, path, name)}") from err
        if not duration > 0:
            raise AppError(f"{name} has no frames to caption (its duration is {duration:g} s).")
        if self.max_duration_s is not None and duration > self.max_duration_s:
            raise AppError(
                f"{name} is {duration:.0f} s long; this app captions videos up to {self.max_duration_s:.0f} s "
                "(start it with `cacmi app --max-duration SECONDS` for longer ones)."
            )
        return duration

    def caption(
        self,
        path: str,
        options: CaptionOptions | None = None,
        *,
        model: str | None = None,
        name: str | None = None,
        progress: Callable[[float, str], None] | None = None,
    ) -> CaptionResult:
        """Caption one video file through the pipeline's steps, reporting each; write VTT, SRT, JSON and timeline PNG."""
        from ..exports import plot_timeline, to_densevid_json, to_srt, to_webvtt

        options = options or CaptionOptions()
        name = name or Path(path).name
        report = progress or (lambda fraction, stage: None)
        seconds: dict[str, float] = {}
        started = clock = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            seconds[stage] = now - clock
            clock = now

        report(0.0, "loading the model")
        pipe = self._with_frames(self.pipeline(model), options.num_frames)
        call = options.pipeline_options()
        retrieve = bool(options.show_retrieved) and self.can_retrieve(model)
        if retrieve:
            call["return_retrieved"] = True  # all k: the table shows the best distinct ones
        preprocess, forward, postprocess = pipe._sanitize_parameters(**call)

        report(0.05, "reading the video")
        duration = self.check_video(path, name)
        try:
            inputs = pipe.preprocess(path, **preprocess)
        except Exception as err:  # noqa: BLE001 - a file that cannot be opened is the file's problem
            raise AppError(f"{name} could not be read as a video: {_readable(err, path, name)}") from err
        lap("read")

        # The pipeline's forward decodes the frames chunk by chunk while CLIP embeds the previous chunk, then
        # generates; watching its frame stream (when it has one) tells the page how far decoding and CLIP are,
        # and when captioning starts. The call itself is the pipeline's: the events are pipeline(...)'s.
        item = inputs["items"][0]
        watched = _watch_frames(item, report, lap) if isinstance(item.get("stream"), Iterable) else False
        report(0.1, "decoding frames and CLIP features" if watched else "decoding, CLIP features and captioning")
        try:
            outputs = pipe.forward(inputs, **forward)
            result = pipe.postprocess(outputs, **postprocess)
        except (VideoDecodingError, FileNotFoundError) as err:
            raise AppError(f"{name} could not be decoded: {_readable(err, path, name)}") from err
        except (RuntimeError, ValueError, IndexError) as err:
            raise AppError(
                f"The model could not caption {name} with these settings ({_readable(err, path, name)}); try another "
                "frames L or event count."
            ) from err
        events = result["events"] if retrieve else result
        pseudo = result["pseudo_events"] if retrieve else None
        lap("captioning" if watched else "frames and captioning")

        report(0.85, "writing subtitles and the timeline")
        folder = self.new_folder()
        stem = Path(name).stem or "video"
        files = {
            "vtt": folder / f"{stem}.vtt",
            "srt": folder / f"{stem}.srt",
            "json": folder / f"{stem}.json",
            "timeline": folder / f"{stem}_timeline.png",
        }
        to_webvtt(events, files["vtt"])
        to_srt(events, files["srt"])
        to_densevid_json({stem: events}, files["json"], with_scores=True)
        plot_timeline(events, duration, files["timeline"], thumbnails=path, title=f"{name}: {len(events)} events")
        lap("exports")
        seconds["total"] = time.perf_counter() - started
        headers = TABLE_HEADERS + ([RETRIEVED_HEADER] if retrieve else [])
        rows = event_rows(events, retrieved_for_events(events, pseudo) if retrieve else None, options.top_retrieved)
        report(1.0, "done")
        return CaptionResult(name, duration, events, pseudo, headers, rows, folder, files, seconds)

    def close(self) -> None:
        """Drop the models and remove the temporary root (when the service made it)."""
        self._pipelines.clear()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


__all__ = [
    "AppError",
    "CaptionOptions",
    "CaptionResult",
    "CaptioningService",
    "DEFAULT_MAX_DURATION_S",
    "event_rows",
    "retrieved_for_events",
]
