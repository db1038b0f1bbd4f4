"""Reading and validating dense-captioning predictions and reference annotations.

Accepted predictions (each event needs a ``timestamp`` ``[start, end]`` in seconds and a
``sentence`` or ``caption`` string; other keys such as ``score`` are ignored):

* the ActivityNet submission JSON ``{"results": {video_id: [event, ...]}, ...}``, as a path or
  an already loaded mapping;
* a bare mapping ``{video_id: [event, ...]}`` (what the pipeline returns, keyed by video);
* a list of per-video records ``{"video_id": ..., "events": [event, ...]}`` or of flat rows
  ``{"video_id": ..., "timestamp": [s, e], "caption": ...}``.

References use the ActivityNet Captions / YouCook2 format
``{video_id: {"timestamps": [[s, e], ...], "sentences": [str, ...], "duration": ...}}``;
paragraph references map ``video_id`` to one paragraph string.

Handling of unusual values (documented so that results stay comparable with the standard
toolkit): negative times are kept as given (tIoU only uses differences, as the toolkit does);
an empty sentence is scored as an empty caption; non-ASCII characters are replaced by spaces
later, exactly like the toolkit. Start > end, NaN/inf, non-numeric times, missing fields and
empty reference videos raise a ``ValueError`` naming the file, video and value.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

SENTENCE_KEYS = ("sentence", "caption")


@dataclass
class VideoEvents:
    """Time-stamped sentences of one video: ``segments`` (N, 2) float64 seconds and N sentences."""

    segments: np.ndarray
    sentences: list[str]

    def __len__(self) -> int:
        return len(self.sentences)

    def sorted_by_start(self) -> "VideoEvents":
        """Return the events in stable start-time order (the order SODA and paragraphs use)."""
        order = sorted(range(len(self.sentences)), key=lambda i: self.segments[i, 0])
        return VideoEvents(self.segments[order].reshape(-1, 2), [self.sentences[i] for i in order])


@dataclass
class ReferenceSet:
    """One reference annotation file: its display ``name`` and the events of each video."""

    name: str
    videos: dict[str, VideoEvents] = field(default_factory=dict)


@dataclass
class ParagraphSet:
    """One paragraph reference file: its display ``name`` and one paragraph per video."""

    name: str
    paragraphs: dict[str, str] = field(default_factory=dict)


def read_json(path: str | Path, what: str) -> Any:
    """Load a JSON file, turning a missing file or a syntax error into a message that names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist; check the path.")
    try:
        with path.open("r", encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{what} file {str(path)!r} is not valid JSON ({err.msg} at line {err.lineno}, "
            f"column {err.colno}); fix or regenerate the file."
        ) from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} file {str(path)!r} is not UTF-8 text ({err.reason}).") from None


def parse_segment(value: Any, where: str) -> tuple[float, float]:
    """Validate one ``[start, end]`` pair and return it as floats; ``where`` names it in errors."""
    if hasattr(value, "tolist"):  # numpy arrays and similar
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{where}: timestamp must be a pair [start, end] in seconds, got {value!r}.")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, numbers.Real):
            raise ValueError(f"{where}: timestamp {value!r} holds a non-number {item!r}; use seconds.")
    start, end = float(value[0]), float(value[1])
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"{where}: timestamp {value!r} is not finite (NaN or inf); fix or drop the event.")
    if start > end:
        raise ValueError(
            f"{where}: timestamp {value!r} has start > end; swap the two values or drop the event."
        )
    return start, end


def _sentence(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: sentence must be a string, got {type(value).__name__} {value!r}.")
    return value


def _events_from_list(events: Any, where: str) -> VideoEvents:
    if not isinstance(events, (list, tuple)):
        raise ValueError(f"{where}: expected a list of events, got {type(events).__name__}.")
    segments, sentences = [], []
    for index, event in enumerate(events):
        here = f"{where}, event {index}"
        if not isinstance(event, Mapping):
            raise ValueError(f"{here}: expected a dict with 'timestamp' and 'sentence', got {event!r}.")
        if "timestamp" not in event:
            raise ValueError(f"{here}: missing 'timestamp' ([start, end] in seconds); keys are {sorted(event)}.")
        key = next((k for k in SENTENCE_KEYS if k in event), None)
        if key is None:
            raise ValueError(f"{here}: missing 'sentence' (or 'caption'); keys are {sorted(event)}.")
        segments.append(parse_segment(event["timestamp"], here))
        sentences.append(_sentence(event[key], here))
    return VideoEvents(np.asarray(segments, dtype=np.float64).reshape(-1, 2), sentences)


def _records_to_mapping(records: Sequence[Any], source: str) -> dict[str, list]:
    """Group a list of per-video records or flat per-event rows by ``video_id``."""
    grouped: dict[str, list] = {}
    whole_videos: set[str] = set()
    for index, record in enumerate(records):
        if not isinstance(record, Mapping) or "video_id" not in record:
            raise ValueError(f"{source}, item {index}: a list of predictions needs dicts with a 'video_id'.")
        vid = str(record["video_id"])
        events = next((record[k] for k in ("events", "predictions") if k in record), None)
        if events is not None:
            if vid in grouped:
                raise ValueError(f"{source}: video {vid!r} appears twice; give each video once.")
            grouped[vid] = list(events)
            whole_videos.add(vid)
        else:
            if vid in whole_videos:
                raise ValueError(f"{source}: video {vid!r} is given both as a record and as rows.")
            grouped.setdefault(vid, []).append(record)
    return grouped


def load_predictions(
    predictions: Any, max_per_video: int | None = None, source: str | None = None
) -> dict[str, VideoEvents]:
    """Return ``{video_id: VideoEvents}`` from any accepted prediction form (see module docs).

    ``max_per_video`` keeps the first events of each video in the given order, like the
    toolkit's ``--max-proposals-per-video``.
    """
    if isinstance(predictions, (str, Path)):
        source = source or str(predictions)
        predictions = read_json(predictions, "Prediction")
    source = source or "predictions"
    if isinstance(predictions, Mapping) and "results" in predictions:
        predictions = predictions["results"]
        if not isinstance(predictions, Mapping):
            raise ValueError(f"{source}: 'results' must map video ids to lists of events.")
    elif isinstance(predictions, (list, tuple)):
        predictions = _records_to_mapping(predictions, source)
    elif not isinstance(predictions, Mapping):
        raise ValueError(
            f"{source}: expected {{'results': {{video_id: [events]}}}}, a mapping of video ids to "
            f"events, or a list of records; got {type(predictions).__name__}."
        )
    if max_per_video is not None and max_per_video < 1:
        raise ValueError(f"max_per_video must be positive, got {max_per_video}.")
    out = {}
    for vid, events in predictions.items():
        video = _events_from_list(events, f"{source}, video {vid!r}")
        if max_per_video is not None and len(video) > max_per_video:
            video = VideoEvents(video.segments[:max_per_video], video.sentences[:max_per_video])
        out[str(vid)] = video
    return out


def _reference_video(entry: Any, where: str) -> VideoEvents:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected a dict with 'timestamps' and 'sentences', got {type(entry).__name__}.")
    for key in ("timestamps", "sentences"):
        if key not in entry:
            raise ValueError(
                f"{where}: missing the '{key}' field; every video needs 'timestamps' "
                f"([[start, end], ...]) and 'sentences' ([str, ...]) of equal length."
            )
        if not isinstance(entry[key], (list, tuple)):
            raise ValueError(f"{where}: '{key}' must be a list, got {type(entry[key]).__name__}.")
    stamps, sentences = entry["timestamps"], entry["sentences"]
    if len(stamps) != len(sentences):
        raise ValueError(f"{where}: {len(stamps)} timestamps but {len(sentences)} sentences; they must pair up.")
    if not stamps:
        raise ValueError(f"{where}: no events (recall is undefined); remove the video from the file.")
    segments = [parse_segment(s, f"{where}, event {i}") for i, s in enumerate(stamps)]
    texts = [_sentence(s, f"{where}, event {i}") for i, s in enumerate(sentences)]
    return VideoEvents(np.asarray(segments, dtype=np.float64).reshape(-1, 2), texts)


def _as_list(items: Any) -> list:
    if isinstance(items, (str, Path, Mapping)):
        return [items]
    return list(items)


def load_references(references: Any) -> list[ReferenceSet]:
    """Return one ``ReferenceSet`` per reference file (paths or loaded mappings, one or several)."""
    sets = []
    for index, item in enumerate(_as_list(references)):
        name = Path(item).name if isinstance(item, (str, Path)) else f"references[{index}]"
        data = read_json(item, "Reference") if isinstance(item, (str, Path)) else item
        if not isinstance(data, Mapping):
            raise ValueError(f"Reference {name}: expected {{video_id: {{'timestamps', 'sentences'}}}}, got {type(data).__name__}.")
        videos = {str(v): _reference_video(e, f"Reference {name}, video {v!r}") for v, e in data.items()}
        if not videos:
            raise ValueError(f"Reference {name} holds no videos.")
        sets.append(ReferenceSet(name, videos))
    if not sets:
        raise ValueError("No reference file given; pass at least one (e.g. val_1.json).")
    names = [s.name for s in sets]
    for i, name in enumerate(names):  # keep names unique so per-file results do not collide
        if name in names[:i]:
            sets[i].name = f"{name}#{names[:i].count(name) + 1}"
    return sets


def load_paragraphs(references: Any) -> list[ParagraphSet]:
    """Return one ``ParagraphSet`` per paragraph reference file (``{video_id: paragraph}``)."""
    sets = []
    for index, item in enumerate(_as_list(references)):
        name = Path(item).name if isinstance(item, (str, Path)) else f"paragraph_references[{index}]"
        data = read_json(item, "Paragraph reference") if isinstance(item, (str, Path)) else item
        if not isinstance(data, Mapping):
            raise ValueError(f"Paragraph reference {name}: expected {{video_id: paragraph}}, got {type(data).__name__}.")
        for vid, text in data.items():
            if not isinstance(text, str):
                raise ValueError(
                    f"Paragraph reference {name}, video {vid!r}: expected a string, got {type(text).__name__}."
                )
        sets.append(ParagraphSet(name, {str(v): t for v, t in data.items()}))
    return sets


def reference_video_ids(references: Iterable[ReferenceSet]) -> list[str]:
    """Union of the video ids of all reference files, in first-seen order."""
    seen: dict[str, None] = {}
    for ref in references:
        seen.update(dict.fromkeys(ref.videos))
    return list(seen)
