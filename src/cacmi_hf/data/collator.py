"""Batch collation: per-video rows -> the padded tensors `CACMIForDenseCaptioning` takes (inputs and labels).

Frames: every video is resized to exactly L = `num_frames` frames by nearest-index sampling (PDVC's
rule: short videos are repeated frame-wise, long ones subsampled), so `video_mask` is all True.
With `num_frames=None` the native lengths are kept and padded to the longest video of the batch,
`video_mask` marking the real frames. Events: at most `max_train_events` per video, a random subset
(kept in annotation order) while training, all of them in order otherwise; segments become (start,
end) / duration clamped to [0, 1]; captions are tokenised to `[BOS] words [EOS]` with at most
`max_caption_len` words and padded with PAD.
"""

from __future__ import annotations

import zlib
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..video_decoding import nearest_indices


# Endings a video id may carry when it was taken from a file name (the bank's or the annotations').
_FILE_ENDINGS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".npy", ".pt", ".pth")


def canonical_video_id(video_id: Any) -> str:
    """The id form the memory-bank lookup compares: no ActivityNet/YouCook2 "v_" prefix, no file ending ("v_abc.mp4" -> "abc")."""
    text = str(video_id)
    for ending in _FILE_ENDINGS:
        if text.lower().endswith(ending):
            text = text[: -len(ending)]
            break
    return text.removeprefix("v_")


def bank_video_lookup(lookup: Mapping[str, int]) -> dict[str, int]:
    """`{canonical id: bank video index}` of a bank's `{video id: index}`; ids of two different videos that reduce to one
    canonical form map to -2 (ambiguous), which `DenseCaptioningCollator` refuses by name."""
    canonical: dict[str, int] = {}
    for vid, index in lookup.items():
        key = canonical_video_id(vid)
        canonical[key] = index if canonical.get(key, index) == index else -2
    return canonical


class DenseCaptioningCollator:
    """Collate rows `{video_id, duration, timestamps, sentences, video_features}` into model inputs and labels.

    Output keys: `video_features (B, L, D)` float32, `video_mask (B, L)` bool, `durations (B,)` float32,
    `video_ids (B,)` long (index in the memory bank's video list, -1 when absent), and, when the rows
    carry annotations, `event_segments (B, E, 2)` float32 (se, normalised), `event_mask (B, E)` bool,
    `caption_ids (B, E, T)` long. `return_video_names=True` adds `video_names` (list of str) for
    evaluation loops that call the model themselves.
    """

    def __init__(
        self,
        tokenizer: Any,
        config: Any = None,
        *,
        num_frames: int | None = None,
        max_train_events: int | None = None,
        max_caption_len: int | None = None,
        memory_video_lookup: Mapping[str, int] | Any = None,
        training: bool = True,
        seed: int = 0,
        feature_key: str = "video_features",
        return_video_names: bool = False,
    ):
        self.tokenizer = tokenizer
        self.num_frames = num_frames if num_frames is not None else getattr(config, "num_frames", None)
        self.max_train_events = max_train_events or getattr(config, "max_train_events", None)
        self.max_caption_len = max_caption_len or getattr(config, "max_caption_len", 30)
        lookup = getattr(memory_video_lookup, "video_lookup", memory_video_lookup)  # a MemoryBankData works too
        self.memory_video_lookup = dict(lookup) if lookup is not None else {}
        self._canonical_lookup = bank_video_lookup(self.memory_video_lookup)
        self.training = training
        self.seed = seed
        self.feature_key = feature_key
        self.return_video_names = return_video_names
        self.pad_token_id = tokenizer.pad_token_id if getattr(tokenizer, "pad_token_id", None) is not None else 0
        self.epoch = 0
        self._draws: dict[str, int] = {}  # event subsets drawn per video in this epoch

    def bank_index(self, video_id: Any) -> int:
        """Memory-bank video index of `video_id`: an exact match, else the same id up to the "v_" prefix / a file ending; -1 when absent."""
        index = self.memory_video_lookup.get(video_id)
        if index is None:
            index = self._canonical_lookup.get(canonical_video_id(video_id), -1)
        if index == -2:
            twins = sorted(v for v in self.memory_video_lookup if canonical_video_id(v) == canonical_video_id(video_id))
            raise ValueError(
                f"Video {video_id!r} matches several memory-bank videos {twins} up to the 'v_' prefix / file ending, so "
                "its own captions cannot be told apart for the same-video exclusion; rebuild the bank with one id per video."
            )
        return int(index)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` of the event sampling (`DenseCaptioningTrainer` calls it at every epoch start)."""
        self.epoch = int(epoch)
        self._draws = {}

    def _event_sampler(self, video_id: Any) -> np.random.Generator:
        """The generator of one video's event subset: a function of (seed, epoch, video, draws of it this epoch).

        Keyed by the video rather than by a running stream, so the subset a video gets does not depend on the
        process, the DataLoader worker, the batch it lands in or batches collated ahead of time: a run resumed
        from a checkpoint (and the same run on more processes) draws exactly the same subsets, with no collator
        state to save. A video collated twice in one epoch (outside the Trainer) gets a new subset each time.
        """
        key = str(video_id)
        draw = self._draws.get(key, 0)
        self._draws[key] = draw + 1
        return np.random.default_rng([self.seed, self.epoch, draw, zlib.crc32(key.encode())])

    # Per-video work is done in numpy and turned into tensors once per batch: tiny torch ops each wake
    # the intra-op thread pool, which costs more than the op itself (badly so on a shared CPU).
    def _frames(self, rows: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        features = []
        for row in rows:
            if row.get(self.feature_key) is None:
                raise ValueError(
                    f"Row of video {row.get('video_id')!r} has no {self.feature_key!r}; load the dataset with features=."
                )
            value = row[self.feature_key]
            x = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
            if x.ndim != 2 or x.shape[0] == 0:
                raise ValueError(f"{self.feature_key} of video {row.get('video_id')!r} must be (T>0, D), got {x.shape}.")
            if self.num_frames is not None and x.shape[0] != self.num_frames:
                x = x[nearest_indices(x.shape[0], self.num_frames)]  # (L, D)
            features.append(x)
        dims = {x.shape[1] for x in features}
        if len(dims) != 1:
            raise ValueError(f"Videos of one batch have different feature sizes {sorted(dims)}.")
        length = max(x.shape[0] for x in features)
        batch = np.zeros((len(features), length, dims.pop()), dtype=np.float32)  # (B, L, D)
        mask = np.zeros((len(features), length), dtype=bool)  # (B, L)
        for i, x in enumerate(features):
            batch[i, : x.shape[0]] = x
            mask[i, : x.shape[0]] = True
        return torch.from_numpy(batch), torch.from_numpy(mask)

    def _events(self, rows: Sequence[Mapping[str, Any]], durations: np.ndarray) -> dict[str, torch.Tensor] | None:
        if any(row.get("timestamps") is None or row.get("sentences") is None for row in rows):
            return None
        chosen: list[np.ndarray] = []
        for row in rows:
            count = len(row["timestamps"])
            keep = np.arange(count)
            if self.training and self.max_train_events is not None and count > self.max_train_events:
                keep = np.sort(self._event_sampler(row.get("video_id")).choice(count, self.max_train_events, replace=False))
            chosen.append(keep)
        num_events = max((len(k) for k in chosen), default=0)
        if num_events == 0:
            return None
        batch = len(rows)
        segments = np.zeros((batch, num_events, 2), dtype=np.float64)  # (B, E, 2)
        event_mask = np.zeros((batch, num_events), dtype=bool)  # (B, E)
        sentences, slots = [], []
        for i, (row, keep) in enumerate(zip(rows, chosen)):
            if len(keep) == 0:
                continue
            times = np.asarray(row["timestamps"], dtype=np.float64).reshape(-1, 2)[keep]  # (e, 2)
            segments[i, : len(keep)] = np.clip(np.sort(times, axis=1) / durations[i], 0.0, 1.0)  # sort guards reversed pairs
            event_mask[i, : len(keep)] = True
            sentences.extend(row["sentences"][k] for k in keep)
            slots.extend((i, j) for j in range(len(keep)))
        encoded = self.tokenizer(
            sentences, padding="longest", truncation=True, max_length=self.max_caption_len + 2, return_tensors="np"
        )["input_ids"]  # (P, T)
        captions = np.full((batch, num_events, encoded.shape[1]), self.pad_token_id, dtype=np.int64)  # (B, E, T)
        index = np.asarray(slots, dtype=np.int64)  # (P, 2)
        captions[index[:, 0], index[:, 1]] = encoded
        return {
            "event_segments": torch.from_numpy(segments.astype(np.float32)),
            "event_mask": torch.from_numpy(event_mask),
            "caption_ids": torch.from_numpy(captions),
        }

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if len(rows) == 0:
            raise ValueError("DenseCaptioningCollator got an empty batch.")
        features, mask = self._frames(rows)
        durations = np.asarray([float(row["duration"]) for row in rows], dtype=np.float64)  # (B,)
        if (durations <= 0).any():
            bad = [row.get("video_id") for row, d in zip(rows, durations) if d <= 0]
            raise ValueError(f"Videos {bad} have non-positive durations.")
        out: dict[str, Any] = {
            "video_features": features,
            "video_mask": mask,
            "durations": torch.from_numpy(durations.astype(np.float32)),
            "video_ids": torch.tensor([self.bank_index(row.get("video_id")) for row in rows], dtype=torch.long),
        }
        labels = self._events(rows, durations)
        if labels is not None:
            out.update(labels)
        if self.return_video_names:
            out["video_names"] = [row.get("video_id") for row in rows]
        return out


__all__ = ["DenseCaptioningCollator", "bank_video_lookup", "canonical_video_id"]
