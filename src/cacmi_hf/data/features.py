"""Per-frame video features attached lazily to an annotation dataset, never silently replaced by zeros.

Sources: a folder of `<video_id>.npy` arrays `(T, D)`, one `.pt`/`.pth` file holding a
`{video_id: Tensor (T, D)}` dict (read with `weights_only=True`, memory-mapped), a `datasets.Dataset`
with `video_id` and `video_features` columns, or any `{video_id: array}` mapping. Ids are matched
exactly, then with the "v_" prefix of ActivityNet/YouCook2 removed or added, so `v_abc.npy` and
`abc.npy` both serve `v_abc`. Features are resized to L frames by nearest-index sampling at bin
centres (`video_decoding.nearest_indices`), the rule used for extraction too.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..video_decoding import nearest_indices

logger = logging.getLogger(__name__)

FEATURE_COLUMN = "video_features"


def id_variants(video_id: str) -> tuple[str, ...]:
    """Names a video's features may be stored under: as is, then without / with the "v_" prefix."""
    return (video_id, video_id[2:]) if video_id.startswith("v_") else (video_id, "v_" + video_id)


def resize_features(features: np.ndarray, num_frames: int | None) -> np.ndarray:
    """`(T, D)` -> `(num_frames, D)` by nearest-index sampling at bin centres (identity when T == L or L is None)."""
    if num_frames is None or features.shape[0] == num_frames:
        return features
    return features[nearest_indices(features.shape[0], num_frames)]


class FeatureStore:
    """Base class: `resolve(video_id)` finds the stored key (or None), `load(key)` reads `(T, D)`."""

    def resolve(self, video_id: str) -> Any:
        """The stored key of a video, or None when the store has no features for it."""
        raise NotImplementedError

    def load(self, key: Any) -> Any:
        """The raw stored features of a resolved key."""
        raise NotImplementedError

    def describe(self, video_id: str) -> str:
        """Where the features of `video_id` are expected, for error messages."""
        raise NotImplementedError

    def check(self, key: Any) -> tuple[int, ...]:
        """Cheap validity check of a resolved key; returns its shape (default: a full load)."""
        return tuple(np.shape(self.load(key)))


class NpyDirectoryFeatures(FeatureStore):
    """A folder of `<video_id>.npy` arrays (T, D)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"Feature folder not found: {self.root}.")
        self._names = {p.stem for p in self.root.glob("*.npy")}  # one listing instead of a stat per video

    def resolve(self, video_id: str) -> Path | None:
        """Path of the video's `.npy` file, or None."""
        return next((self.root / f"{v}.npy" for v in id_variants(video_id) if v in self._names), None)

    def load(self, key: Path) -> np.ndarray:
        """Read the array (fully, so a truncated file fails here)."""
        return np.load(key, allow_pickle=False)

    def check(self, key: Path) -> tuple[int, ...]:
        """Header and size check without reading the data (memory map)."""
        return tuple(np.load(key, mmap_mode="r", allow_pickle=False).shape)

    def describe(self, video_id: str) -> str:
        """Expected file path."""
        return str(self.root / f"{video_id}.npy")

    def __repr__(self) -> str:
        return f"NpyDirectoryFeatures({str(self.root)!r})"


class MappingFeatures(FeatureStore):
    """A `{video_id: array or tensor (T, D)}` mapping (also what a `.pt`/`.pth` file holds)."""

    def __init__(self, mapping: Mapping[str, Any], origin: str = "the features mapping"):
        self.mapping = mapping
        self.origin = origin

    def resolve(self, video_id: str) -> str | None:
        """Key of the video in the mapping, or None."""
        return next((v for v in id_variants(video_id) if v in self.mapping), None)

    def load(self, key: str) -> Any:
        """The stored value."""
        return self.mapping[key]

    def describe(self, video_id: str) -> str:
        """Mapping and key."""
        return f"key {video_id!r} of {self.origin}"

    def __repr__(self) -> str:
        return f"MappingFeatures({self.origin})"


def load_torch_feature_dict(path: str | os.PathLike) -> MappingFeatures:
    """A `.pt`/`.pth` `{video_id: Tensor (T, D)}` file, loaded with `weights_only=True` (memory-mapped when possible)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Feature file not found: {path}.")
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True) ({type(err).__name__}: {err}); it must hold "
            "a dict {video_id: Tensor (T, D)} of plain tensors."
        ) from err
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} holds a {type(data).__name__}; expected a dict {{video_id: Tensor (T, D)}}.")
    return MappingFeatures(data, origin=str(path))


class DatasetColumnFeatures(FeatureStore):
    """Features stored in a `datasets.Dataset` column (one row per video)."""

    def __init__(self, dataset: Any, column: str = FEATURE_COLUMN, id_column: str = "video_id"):
        for name in (column, id_column):
            if name not in dataset.column_names:
                raise ValueError(f"The features dataset has no {name!r} column (columns: {dataset.column_names}).")
        self.dataset = dataset.with_format("numpy", columns=[column])
        self.column = column
        self.rows = {str(v): i for i, v in enumerate(dataset[id_column])}

    def resolve(self, video_id: str) -> int | None:
        """Row index of the video, or None."""
        return next((self.rows[v] for v in id_variants(video_id) if v in self.rows), None)

    def load(self, key: int) -> np.ndarray:
        """The row's feature array."""
        value = self.dataset[key][self.column]
        if isinstance(value, np.ndarray) and value.dtype == object:  # ragged rows come back as arrays of arrays
            value = np.stack(list(value))
        return value

    def describe(self, video_id: str) -> str:
        """Column and row."""
        return f"column {self.column!r} of the features dataset (video {video_id!r})"

    def __repr__(self) -> str:
        return f"DatasetColumnFeatures({self.column!r}, {len(self.rows)} rows)"


def open_feature_store(features: Any, column: str = FEATURE_COLUMN) -> FeatureStore:
    """Wrap a folder, `.pt`/`.pth` file, `datasets.Dataset`, mapping or store as a `FeatureStore`."""
    if isinstance(features, FeatureStore):
        return features
    if isinstance(features, (str, os.PathLike)):
        path = Path(features)
        if path.is_dir():
            return NpyDirectoryFeatures(path)
        if path.suffix in (".pt", ".pth"):
            return load_torch_feature_dict(path)
        if not path.exists():
            raise FileNotFoundError(f"Features not found: {path} (give a folder of .npy files or a .pt/.pth dict).")
        raise ValueError(f"Unsupported features file {path}: use a folder of <video_id>.npy or a .pt/.pth dict.")
    if hasattr(features, "column_names") and hasattr(features, "with_format"):
        return DatasetColumnFeatures(features, column=column)
    if isinstance(features, Mapping):
        return MappingFeatures(features)
    raise TypeError(f"Unsupported features source {type(features).__name__}.")


def validate_features(value: Any, video_id: str, where: str, feature_dim: int | None) -> np.ndarray:
    """`(T, D)` float32 array, or a ValueError naming the video, its location and the problem."""
    try:
        array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    except Exception as err:
        raise ValueError(f"Features of video {video_id!r} ({where}) are unreadable: {err}.") from err
    if array.ndim != 2:
        raise ValueError(f"Features of video {video_id!r} ({where}) must be (T, D); got shape {array.shape}.")
    if array.shape[0] == 0:
        raise ValueError(f"Features of video {video_id!r} ({where}) have zero frames; re-extract that video.")
    if feature_dim is not None and array.shape[1] != feature_dim:
        raise ValueError(
            f"Features of video {video_id!r} ({where}) have D={array.shape[1]}, expected {feature_dim} "
            "(config.feature_dim); were they extracted with another CLIP model?"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"Features of video {video_id!r} ({where}) have dtype {array.dtype}; expected floats.")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"Features of video {video_id!r} ({where}) contain NaN or inf; re-extract that video.")
    return array


class FeatureLoader:
    """Loads, validates and resizes the features of a video id: `loader(video_id) -> (L, D)` float32."""

    def __init__(self, store: FeatureStore, num_frames: int | None = None, feature_dim: int | None = None):
        self.store = store
        self.num_frames = num_frames
        self.feature_dim = feature_dim

    def __call__(self, video_id: str) -> np.ndarray:
        key = self.store.resolve(video_id)
        if key is None:
            raise FileNotFoundError(
                f"No features for video {video_id!r}: expected {self.store.describe(video_id)}. "
                "Extract them (cacmi extract-features) or load with missing='skip'."
            )
        where = self.store.describe(video_id) if not isinstance(key, Path) else str(key)
        try:
            raw = self.store.load(key)
        except Exception as err:
            raise ValueError(f"Features of video {video_id!r} ({where}) are unreadable: {type(err).__name__}: {err}.") from err
        return resize_features(validate_features(raw, video_id, where, self.feature_dim), self.num_frames)

    def problem(self, video_id: str) -> str | None:
        """Why the video's features cannot be used (missing, unreadable, wrong shape), or None if fine."""
        key = self.store.resolve(video_id)
        if key is None:
            return f"missing ({self.store.describe(video_id)})"
        try:
            shape = self.store.check(key)
        except Exception as err:
            return f"unreadable ({key}: {type(err).__name__}: {err})"
        if len(shape) != 2 or shape[0] == 0:
            return f"bad shape {shape} ({key}); expected (T, D) with T > 0"
        if self.feature_dim is not None and shape[1] != self.feature_dim:
            return f"D={shape[1]}, expected {self.feature_dim} ({key})"
        return None


class _AddFeatures:
    """`datasets` transform adding the loaded `video_features` of each row of a batch (picklable for workers)."""

    def __init__(self, loader: FeatureLoader, column: str):
        self.loader = loader
        self.column = column

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        batch[self.column] = [self.loader(vid) for vid in batch["video_id"]]
        return batch


def attach_features(
    dataset: Any,
    features: Any,
    *,
    num_frames: int | None = None,
    missing: str = "error",
    feature_dim: int | None = None,
    column: str = FEATURE_COLUMN,
    check: bool = True,
):
    """Return `dataset` (a `Dataset` or `DatasetDict`) whose rows gain `column` = features `(L, D)` float32 on access.

    Every video is checked up front (file present, header readable, shape (T, D) with the expected D;
    .npy files are memory-mapped, not read). With `missing="error"` any problem raises, naming the
    videos and where their features should be; with `missing="skip"` those videos are dropped and the
    count is logged. A file that breaks after the check still raises when its row is read.
    """
    from datasets import DatasetDict

    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}.")
    loader = FeatureLoader(open_feature_store(features), num_frames=num_frames, feature_dim=feature_dim)
    if isinstance(dataset, DatasetDict):
        return DatasetDict(
            {
                name: attach_features(split, loader.store, num_frames=num_frames, missing=missing, feature_dim=feature_dim, column=column, check=check)
                for name, split in dataset.items()
            }
        )
    if check:
        ids = dataset["video_id"]
        problems = {vid: p for vid in ids if (p := loader.problem(vid)) is not None}
        if problems:
            listing = "; ".join(f"{vid}: {why}" for vid, why in list(problems.items())[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            if missing == "error":
                raise FileNotFoundError(
                    f"{len(problems)} of {len(ids)} videos have no usable features in {loader.store}: {listing}{more}. "
                    "Extract them, or pass missing='skip' to drop those videos."
                )
            logger.warning(
                "Dropped %d of %d videos without usable features in %s: %s%s", len(problems), len(ids), loader.store, listing, more
            )
            dataset = dataset.select([i for i, vid in enumerate(ids) if vid not in problems])
    return dataset.with_transform(_AddFeatures(loader, column))


__all__ = [
    "FEATURE_COLUMN",
    "DatasetColumnFeatures",
    "FeatureLoader",
    "FeatureStore",
    "MappingFeatures",
    "NpyDirectoryFeatures",
    "attach_features",
    "id_variants",
    "load_torch_feature_dict",
    "open_feature_store",
    "resize_features",
    "validate_features",
]
