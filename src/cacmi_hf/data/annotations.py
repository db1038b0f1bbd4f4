"""Dense-captioning annotations -> `datasets.DatasetDict` with one row per video.

Every loader returns rows `{video_id: str, duration: float64, timestamps: [[start, end], ...] float64,
sentences: [str, ...]}` (sentences stripped of surrounding spaces, timestamps in seconds as written),
plus a lazily loaded `video_features` column when `features=` is given (see `features.py`).

Accepted sources (`load_dense_captions`):
- the standard JSON file `{video_id: {"duration": s, "timestamps": [[s, e], ...], "sentences": [...]}}`
  (ActivityNet Captions `train.json`/`val_1.json`, PDVC's `yc2_train.json`, ...);
- YouCook2's original `youcookii_annotations_trainval.json` (`{"database": {youtube_id: {"duration",
  "subset", "annotations": [{"segment", "sentence"}, ...]}}}`), split by its `subset` field;
- record files (`.jsonl`, a JSON list, `.parquet`, read with `datasets`) with one row per video
  (`video_id`, `duration`, `timestamps`, `sentences`) or one row per segment (`segment`, `sentence`
  and a video id column such as `youtube_id`, as in lmms-lab/YouCook2), regrouped per video;
- a folder holding such files (a local hub snapshot: `data/train-00000-of-00001.parquet`, ...), a
  `{split: file(s)}` dict, a hub dataset id (downloaded only when the hub is reachable), or an
  existing `datasets.Dataset`/`DatasetDict`.
Split names come from file names: `train*` -> "train", `val_1`/`val_2` -> "val_1"/"val_2",
`val*`/`valid*`/`dev*` -> "validation", `test*` -> "test"; paragraph reference files are skipped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

VIDEO_ID_COLUMNS = ("video_id", "youtube_id", "video", "vid", "video_name", "id")
PER_VIDEO_COLUMNS = (("timestamps", "segments"), ("sentences", "captions"))
PER_SEGMENT_COLUMNS = (("segment", "timestamp"), ("sentence", "caption"))
SUBSET_SPLITS = {"training": "train", "validation": "validation", "testing": "test"}
RECORD_SUFFIXES = (".parquet", ".jsonl", ".json")
_SPLIT_ORDER = ("train", "validation", "val_1", "val_2", "test")

Source = Any  # path, list of paths, {split: path(s)}, hub id, Dataset or DatasetDict


def dataset_features():
    """The `datasets.Features` of a per-video annotation table."""
    from datasets import Features, List, Value

    return Features(
        {
            "video_id": Value("string"),
            "duration": Value("float64"),
            "timestamps": List(List(Value("float64"), length=2)),
            "sentences": List(Value("string")),
        }
    )


def infer_split_name(path: str | os.PathLike) -> str:
    """Split name of an annotation file from its name (`train_modified.json` -> "train", `val_1.json` -> "val_1")."""
    text = re.sub(r"\.(json|jsonl|parquet)$", "", os.fspath(path).replace("\\", "/").lower())
    name = text.rsplit("/", 1)[-1]
    for candidate in (name, text):  # the file name first, then its folders (`train/0000.parquet`)
        if m := re.search(r"(?:^|[^a-z])val(?:idation)?[_-]?([12])(?:$|[^0-9])", candidate):
            return f"val_{m.group(1)}"
        if re.search(r"(?:^|[^a-z])(train|training)(?:$|[^a-z])", candidate):
            return "train"
        if re.search(r"(?:^|[^a-z])(val|valid|validation|dev)(?:$|[^a-z])", candidate):
            return "validation"
        if re.search(r"(?:^|[^a-z])(test|testing)(?:$|[^a-z])", candidate):
            return "test"
    return re.sub(r"[^a-z0-9_]+", "_", name).strip("_") or "train"


def _as_float(value: Any, what: Any) -> float:
    """float64 of a JSON/Arrow number; float32 inputs keep their shortest decimal form (17.37, not 17.3700008).

    `what` (a string or a zero-argument callable giving one) names the value in the error message.
    """
    if isinstance(value, np.floating) and value.dtype == np.float32:
        value = float(str(value))
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what() if callable(what) else what} must be a number, got {value!r}.") from None
    if not math.isfinite(out):
        raise ValueError(f"{what() if callable(what) else what} must be finite, got {value!r}.")
    return out


def _clean_video(video_id: str, duration: Any, timestamps: Any, sentences: Any, source: str) -> dict[str, Any]:
    """Validate and normalise one video's annotation (stripped sentences, float64 times)."""

    def where() -> str:  # formatted only for an error: this runs once per video of 10k-video files
        return f"video {video_id!r} in {source}"

    if duration is None:
        raise ValueError(f"{where()} has no duration; add a 'duration' (seconds) or pass durations=.")
    duration = _as_float(duration, lambda: f"duration of {where()}")
    if duration <= 0:
        raise ValueError(f"{where()} has duration {duration}; it must be > 0 seconds.")
    timestamps = [] if timestamps is None else list(timestamps)
    sentences = [] if sentences is None else list(sentences)
    if len(timestamps) != len(sentences):
        raise ValueError(
            f"{where()} has {len(timestamps)} timestamps but {len(sentences)} sentences; they must pair up one to one."
        )
    pairs = []
    for k, segment in enumerate(timestamps):
        if segment is None or len(segment) != 2:
            raise ValueError(f"timestamp {k} of {where()} must be [start, end], got {segment!r}.")
        start = _as_float(segment[0], lambda: f"timestamp {k} of {where()}")
        end = _as_float(segment[1], lambda: f"timestamp {k} of {where()}")
        if start > end:
            raise ValueError(f"timestamp {k} of {where()} has start {start} > end {end}; fix or drop that event.")
        pairs.append([start, end])
    texts = []
    for k, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise ValueError(f"sentence {k} of {where()} must be a string, got {sentence!r}.")
        texts.append(sentence.strip())
    return {"video_id": str(video_id), "duration": duration, "timestamps": pairs, "sentences": texts}


RAW_ID_COLUMNS = ("youtube_id",)  # columns holding bare YouTube ids, which get `video_id_prefix`


def _pick(columns: Iterable[str], candidates: Sequence[str]) -> str | None:
    columns = set(columns)
    return next((c for c in candidates if c in columns), None)


def _videos_from_standard(data: Mapping[str, Any], source: str) -> list[dict[str, Any]]:
    out = []
    for video_id, item in data.items():
        if not isinstance(item, Mapping):
            raise ValueError(f"video {video_id!r} in {source} must map to an object with duration/timestamps/sentences.")
        out.append(
            _clean_video(str(video_id), item.get("duration"), item.get("timestamps"), item.get("sentences"), source)
        )
    return out


def _videos_from_youcook_database(data: Mapping[str, Any], source: str, prefix: str) -> dict[str, list[dict[str, Any]]]:
    splits: dict[str, list[dict[str, Any]]] = {}
    for video_id, item in data["database"].items():
        notes = item.get("annotations") or []
        split = SUBSET_SPLITS.get(item.get("subset", "training"), item.get("subset"))
        record = _clean_video(
            prefix + str(video_id),  # the database is keyed by bare YouTube ids (some start with "v_" themselves)
            item.get("duration"),
            [a["segment"] for a in notes],
            [a["sentence"] for a in notes],
            source,
        )
        splits.setdefault(split, []).append(record)
    return splits


def _lookup_duration(video_id: str, durations: Mapping[str, float] | None, video_paths: Mapping[str, str]) -> float | None:
    if durations is not None:
        for key in (video_id, video_id.removeprefix("v_"), "v_" + video_id):
            if key in durations:
                return durations[key]
    if video_id in video_paths:
        from ..video_decoding import probe_video

        return probe_video(video_paths[video_id]).duration
    return None


def _videos_from_records(
    columns: Mapping[str, Sequence[Any]],
    source: str,
    *,
    prefix: str,
    video_id_column: str | None,
    durations: Mapping[str, float] | None,
    video_dir: str | os.PathLike | None,
) -> list[dict[str, Any]]:
    """Per-video rows pass through; per-segment rows (segment, sentence, video id) are regrouped per video."""
    names = list(columns)
    id_col = video_id_column or _pick(names, VIDEO_ID_COLUMNS)
    if id_col is None or id_col not in columns:
        raise ValueError(
            f"{source} has no video id column (looked for {video_id_column or VIDEO_ID_COLUMNS}); columns are {names}. "
            "Pass video_id_column=."
        )
    ts_col, sent_col = (_pick(names, c) for c in PER_VIDEO_COLUMNS)
    seg_col, one_col = (_pick(names, c) for c in PER_SEGMENT_COLUMNS)
    per_video = ts_col is not None and sent_col is not None
    if not per_video and (seg_col is None or one_col is None):
        raise ValueError(
            f"{source} has neither per-video columns (timestamps, sentences) nor per-segment columns (segment, sentence); "
            f"columns are {names}."
        )
    ids = [prefix + str(v) if id_col in RAW_ID_COLUMNS else str(v) for v in columns[id_col]]
    row_durations = columns.get("duration")
    video_paths: dict[str, str] = {}
    if video_dir is not None:
        video_dir = Path(video_dir)
        rel = columns.get("video_path")
        for k, vid in enumerate(ids):
            if rel is not None and rel[k]:
                video_paths.setdefault(vid, str(video_dir / rel[k]))
            else:
                found = sorted(video_dir.glob(f"{vid}.*")) or sorted(video_dir.glob(f"{vid.removeprefix('v_')}.*"))
                if found:
                    video_paths.setdefault(vid, str(found[0]))

    def duration_of(k: int, vid: str) -> float | None:
        value = row_durations[k] if row_durations is not None else None
        return value if value is not None else _lookup_duration(vid, durations, video_paths)

    if per_video:
        return [
            _clean_video(vid, duration_of(k, vid), columns[ts_col][k], columns[sent_col][k], source)
            for k, vid in enumerate(ids)
        ]
    grouped: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for k, vid in enumerate(ids):
        entry = grouped.setdefault(vid, {"duration": duration_of(k, vid), "events": []})
        segment, sentence = columns[seg_col][k], columns[one_col][k]
        if segment is not None and sentence is not None:  # test splits carry segments without text
            entry["events"].append(([*segment], sentence))
    videos = []
    for vid, entry in grouped.items():
        events = sorted(entry["events"], key=lambda e: (_as_float(e[0][0], f"segment of {vid}"), _as_float(e[0][1], f"segment of {vid}")))
        videos.append(_clean_video(vid, entry["duration"], [e[0] for e in events], [e[1] for e in events], source))
    return videos


def _has_float32(feature: Any) -> bool:
    inner = getattr(feature, "feature", None)
    if inner is not None:
        return _has_float32(inner)
    return getattr(feature, "dtype", None) == "float32"


def _shortest_float(value: Any) -> Any:
    if isinstance(value, list):
        return [_shortest_float(v) for v in value]
    return float(str(np.float32(value))) if isinstance(value, float) else value


def _table_columns(table: Any, extra: Sequence[str] = ()) -> dict[str, list[Any]]:
    """Columns of a `datasets.Dataset`; float32 columns (hub segments) keep their decimal form in float64."""
    known = {*VIDEO_ID_COLUMNS, *sum(PER_VIDEO_COLUMNS + PER_SEGMENT_COLUMNS, ()), "duration", "video_path", *extra}
    table = table.select_columns([c for c in table.column_names if c in known])  # never read feature columns here
    columns = table.to_dict()
    for name, feature in table.features.items():
        if _has_float32(feature):
            columns[name] = _shortest_float(columns[name])
    return columns


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            if path.suffix == ".jsonl":
                return [json.loads(line) for line in handle if line.strip()]
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}).") from err


def _columns_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    names: list[str] = []
    for row in rows:
        names.extend(k for k in row if k not in names)
    return {name: [row.get(name) for row in rows] for name in names}


def _json_kind(data: Any) -> str:
    """'standard', 'youcook_database', 'records', 'paragraphs' or 'unknown'."""
    if isinstance(data, list):
        return "records"
    if isinstance(data, Mapping):
        if isinstance(data.get("database"), Mapping):
            return "youcook_database"
        first = next(iter(data.values()), None)
        if isinstance(first, Mapping) and ("timestamps" in first or "sentences" in first):
            return "standard"
        if isinstance(first, str):
            return "paragraphs"
        if first is None:
            return "standard"
    return "unknown"


def _read_file(path: Path, split: str | None, options: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Videos per split of one annotation file (YouCook2's trainval file gives several splits)."""
    if not path.is_file():
        raise FileNotFoundError(f"Annotation file not found: {path}.")
    split = split or infer_split_name(path)
    prefix = options["video_id_prefix"]
    if path.suffix == ".parquet":
        from datasets import load_dataset

        table = load_dataset("parquet", data_files={split: str(path)}, split=split)
        return {split: _videos_from_table(table, str(path), options)}
    if path.suffix not in (".json", ".jsonl"):
        raise ValueError(f"{path}: annotation files must be .json, .jsonl or .parquet.")
    data = _read_json(path)
    kind = _json_kind(data)
    if kind == "standard":
        return {split: _videos_from_standard(data, str(path))}
    if kind == "youcook_database":
        return _videos_from_youcook_database(data, str(path), prefix)
    if kind == "records":
        return {split: _videos_from_records(_columns_of(data), str(path), prefix=prefix, **_record_options(options))}
    if kind == "paragraphs":
        raise ValueError(
            f"{path} is a paragraph reference file ({{video_id: paragraph}}), used for evaluation only; "
            "give the dense annotation file (timestamps + sentences) instead."
        )
    raise ValueError(
        f"{path} is not a dense-captioning annotation file: expected {{video_id: {{duration, timestamps, sentences}}}}, "
        "YouCook2's {'database': ...}, or a list of records."
    )


def _record_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in ("video_id_column", "durations", "video_dir")}


def _videos_from_table(table: Any, source: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Videos of a `datasets.Dataset` in a per-video or per-segment layout."""
    columns = _table_columns(table, [options["video_id_column"] or ""])
    return _videos_from_records(columns, source, prefix=options["video_id_prefix"], **_record_options(options))


def _scan_folder(folder: Path) -> dict[str, list[Path]]:
    """Annotation files of a folder grouped by split; record formats win over loose JSON (hub snapshots)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in RECORD_SUFFIXES and ".cache" not in p.parts)
    for suffix in (".parquet", ".jsonl"):
        chosen = [p for p in files if p.suffix == suffix]
        if chosen:
            files = chosen
            break
    grouped: dict[str, list[Path]] = {}
    for path in files:
        if path.suffix == ".json" and _json_kind(_read_json(path)) in ("paragraphs", "unknown"):
            logger.info("Skipping %s: not a dense annotation file (paragraph references or other JSON).", path)
            continue
        grouped.setdefault(infer_split_name(path.relative_to(folder)), []).append(path)
    if not grouped:
        raise FileNotFoundError(f"No annotation files (.json, .jsonl, .parquet) found in {folder}.")
    return grouped


def _merge(into: dict[str, list[dict[str, Any]]], split: str, videos: list[dict[str, Any]], source: str) -> None:
    bucket = into.setdefault(split, [])
    seen = {v["video_id"] for v in bucket}
    for video in videos:
        if video["video_id"] in seen:
            raise ValueError(f"video {video['video_id']!r} appears twice in split {split!r} (again in {source}).")
        seen.add(video["video_id"])
        bucket.append(video)


def _load_hub(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                repo_id, repo_type="dataset", revision=revision, allow_patterns=["*.json", "*.jsonl", "*.parquet", "*.md"]
            )
        )
    except Exception as err:  # offline, unknown repo, gated ...
        raise FileNotFoundError(
            f"{repo_id!r} is neither a local path nor a reachable hub dataset ({type(err).__name__}: {err}). "
            "Download it first (huggingface-cli download --repo-type dataset ...) and pass the folder."
        ) from err


def _collect(source: Source, options: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Videos per split from any accepted source."""
    from datasets import Dataset, DatasetDict

    splits: dict[str, list[dict[str, Any]]] = {}
    if isinstance(source, DatasetDict):
        for name, table in source.items():
            _merge(splits, name, _videos_from_table(table, f"split {name}", options), name)
        return splits
    if isinstance(source, Dataset):
        return {"train": _videos_from_table(source, "dataset", options)}
    if isinstance(source, Mapping):
        for name, files in source.items():
            for path in [files] if isinstance(files, (str, os.PathLike)) else files:
                for got, videos in _read_file(Path(path), name, options).items():
                    _merge(splits, name if got == name else got, videos, str(path))
        return splits
    if isinstance(source, (list, tuple)):
        for path in source:
            for name, videos in _read_file(Path(path), None, options).items():
                _merge(splits, name, videos, str(path))
        return splits
    path = Path(os.fspath(source))
    if not path.exists():
        text = os.fspath(source)
        if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.endswith((".json", ".jsonl", ".parquet")):
            path = _load_hub(text, options.get("revision"))
        else:
            raise FileNotFoundError(f"Annotation source not found: {path}.")
    if path.is_file():
        return _read_file(path, None, options)
    for name, files in _scan_folder(path).items():
        if files[0].suffix == ".parquet":
            from datasets import load_dataset

            table = load_dataset("parquet", data_files={name: [str(f) for f in files]}, split=name)
            _merge(splits, name, _videos_from_table(table, f"{path} ({name})", options), str(path))
            continue
        for file in files:
            for got, videos in _read_file(file, None if file.suffix == ".json" else name, options).items():
                _merge(splits, got, videos, str(file))
    return splits


def _read_durations(durations: Any) -> Mapping[str, float] | None:
    if durations is None or isinstance(durations, Mapping):
        return durations
    data = _read_json(Path(durations))
    if _json_kind(data) == "youcook_database":
        data = data["database"]
    return {vid: item["duration"] for vid, item in data.items() if isinstance(item, Mapping) and "duration" in item}


def load_dense_captions(
    source: Source,
    *,
    split: str | None = None,
    features: Any = None,
    num_frames: int | None = None,
    config: Any = None,
    missing: str = "error",
    feature_dim: int | None = None,
    video_id_prefix: str = "",
    video_id_column: str | None = None,
    durations: Mapping[str, float] | str | os.PathLike | None = None,
    video_dir: str | os.PathLike | None = None,
    revision: str | None = None,
):
    """Load dense-captioning annotations into a `DatasetDict` (or one `Dataset` when `split=` is given).

    Args:
        source: annotation file, list of files, `{split: file(s)}`, folder / hub snapshot, hub dataset id,
            or a `datasets.Dataset`/`DatasetDict` (see the module docstring for the layouts).
        features: optional per-frame features, attached lazily as `video_features`: a folder of
            `<video_id>.npy`, a `.pt`/`.pth` dict, a `datasets.Dataset` with `video_id` + `video_features`
            columns, or a `{video_id: array}` mapping (see `attach_features`).
        num_frames: resize features to this many frames (nearest index); `config` gives `config.num_frames`.
        missing: "error" (default: a missing or unreadable feature raises, naming the video) or "skip"
            (drop those videos and log how many).
        feature_dim: expected feature size D (default `config.feature_dim` when a config is given).
        video_id_prefix: prepended to bare YouTube ids (keys of YouCook2's original file, `youtube_id`
            columns); ids of standard files and `video_id` columns are used as written. YouCook2 uses "v_"
            so all its sources give the ids of the standard files and feature files.
        video_id_column: video id column of record files (default: first of video_id, youtube_id, ...).
        durations: `{video_id: seconds}` or a standard annotation file to read durations from, for
            per-segment layouts without a `duration` column; `video_dir` probes the videos instead.
        revision: hub revision when `source` is a hub id.
    """
    import pyarrow as pa
    from datasets import Dataset, DatasetDict
    from datasets.table import InMemoryTable

    options = {
        "video_id_prefix": video_id_prefix,
        "video_id_column": video_id_column,
        "durations": _read_durations(durations),
        "video_dir": video_dir,
        "revision": revision,
    }
    collected = _collect(source, options)
    order = sorted(collected, key=lambda s: (_SPLIT_ORDER.index(s) if s in _SPLIT_ORDER else len(_SPLIT_ORDER), s))
    schema = dataset_features()
    result = DatasetDict()
    for name in order:
        videos = collected[name]
        columns = {key: [v[key] for v in videos] for key in schema}
        # straight to Arrow with the schema: Dataset.from_dict would re-encode every nested value in Python
        result[name] = Dataset(InMemoryTable(pa.Table.from_pydict(columns, schema=schema.arrow_schema)))
        logger.info("%s: %d videos, %d sentences", name, len(videos), sum(len(v["sentences"]) for v in videos))
    if split is not None:
        if split not in result:
            raise KeyError(f"Split {split!r} not found in {source!r}; available: {list(result)}.")
        result = DatasetDict({split: result[split]})
    if features is not None:
        from .features import attach_features

        if config is not None:
            num_frames = num_frames or config.num_frames
            feature_dim = feature_dim or config.feature_dim
        result = attach_features(result, features, num_frames=num_frames, missing=missing, feature_dim=feature_dim)
    return result[split] if split is not None else result


def load_activitynet_captions(source: Source, **kwargs: Any):
    """ActivityNet Captions (train / val_1 / val_2 from `train.json`, `val_1.json`, `val_2.json` or any source).

    Features default to the paper's L = 100 frames (pass `num_frames=` or `config=` to change).
    """
    if kwargs.get("features") is not None and kwargs.get("config") is None:
        kwargs.setdefault("num_frames", 100)
    return load_dense_captions(source, **kwargs)


def load_youcook2(source: Source, **kwargs: Any):
    """YouCook2 (train / validation) from `yc2_*.json`, `youcookii_annotations_trainval.json` or a hub layout.

    Bare YouTube ids (original layout, hub `youtube_id` columns) get the "v_" prefix of the standard
    files, so every source gives the same ids and matches feature files named `v_<youtube_id>.npy`;
    features default to the paper's L = 200 frames.
    """
    kwargs.setdefault("video_id_prefix", "v_")
    if kwargs.get("features") is not None and kwargs.get("config") is None:
        kwargs.setdefault("num_frames", 200)
    return load_dense_captions(source, **kwargs)


def training_sentences(dataset: Any, split: str = "train") -> list[tuple[str, str]]:
    """`(video_id, sentence)` pairs of a split (or a single `Dataset`), in dataset order."""
    from datasets import DatasetDict

    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            if len(dataset) != 1:
                raise KeyError(f"Split {split!r} not found; available: {list(dataset)}. Pass --split.")
            split = next(iter(dataset))
        dataset = dataset[split]
    table = dataset.select_columns(["video_id", "sentences"]).to_dict()
    return [(vid, s) for vid, sentences in zip(table["video_id"], table["sentences"]) for s in sentences]


__all__ = [
    "dataset_features",
    "infer_split_name",
    "load_activitynet_captions",
    "load_dense_captions",
    "load_youcook2",
    "training_sentences",
]
