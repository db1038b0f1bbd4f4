"""A retrieval-quality dial for the synthetic world: memory banks whose answers range from the truth to noise.

CACMI's retrieval branches can only help as much as the retrieved sentences describe the video. To measure
that dependence, the retrieval study (`benchmarks/bench_mechanism.py`) trains every variant with banks of
known quality, all of the size and space of the tiny CLIP text tower:

- "oracle": one entry per event of every video (train and test), the CLIP text embedding of its ground-truth
  sentence; each pseudo-event (cluster or window) gets the entry of the event it overlaps most, or the nearest
  one when it overlaps none (`EventLookupAggregation`). An upper bound: it also tells which pseudo-events lie
  in the same event.
- "swap p": the oracle bank with a fraction p of its entries (exactly round(p·M), chosen at random) replaced by
  the sentence of an event of another video; retrieval as the oracle's.
- "clip": the bank of `cacmi demo`: the training captions embedded by the tiny CLIP text tower, searched by
  cosine similarity with the video's own captions excluded while training.
- "random": the clip bank with every embedding replaced by a random unit vector; retrieval as the clip bank's.

What an entry can tell the model is bounded by its text encoder too. The tiny CLIP learns words only as far as
single frames tell them apart: sentences that differ only in the action (invisible in one frame) have text
embeddings at cosine ~0.98, and in the ambiguous world so do "a yellow circle ..." and "a red circle ..."
(`benchmarks/bench_mechanism.py`, BENCHMARKS.md). So the event banks come in two encodings: the tiny CLIP text
tower, and `word_encoder`, which keeps every word (a fixed random vector per word, summed): the oracle of the
study's question, where the sentence carries what the pixels do not.

`retrieval_accuracy` scores what any of them returns: for every pseudo-event that lies mostly inside one
ground-truth event, whether the top-1 entry's sentence equals that event's sentence (acc@1), and how often it
names the right colour, shape and action.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import re
import zlib

import numpy as np
import torch
from torch import nn

from ..data.memory import MemoryBankData
from ..frame_aggregation import CrossModalFrameAggregation, FrameAggregationOutput
from ..memory_bank import MemoryBank
from .world import parse_caption

BANK_KINDS = ("oracle", "swap", "clip", "random")


def bank_name(kind: str, swap_fraction: float = 0.0) -> str:
    """Label of a bank setting: "oracle", "swap 0.5", "clip", "random"."""
    if kind not in BANK_KINDS:
        raise ValueError(f"bank kind {kind!r}: choose one of {BANK_KINDS}")
    return f"swap {swap_fraction:g}" if kind == "swap" else kind


def word_encoder(dim: int, seed: int = 0) -> Callable[[list[str]], torch.Tensor]:
    """A text encoder that keeps every word: the L2-normalised sum of a fixed random unit vector per word.

    Each word's vector is drawn from a generator seeded by (seed, CRC-32 of the word), so the encoding of a sentence
    depends on nothing else; random vectors in `dim` dimensions are nearly orthogonal, so sentences that differ in
    one of n words stay apart (cosine about (n - 1) / n).
    """

    def vector(word: str) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(word.encode())])
        v = rng.standard_normal(dim)
        return v / np.linalg.norm(v)

    def encode(sentences: list[str]) -> torch.Tensor:
        """`(n, dim)` float32 unit vectors of `sentences`."""
        rows = []
        for sentence in sentences:
            words = re.findall(r"[a-z0-9]+", sentence.lower())
            if not words:
                raise ValueError(f"word_encoder: sentence {sentence!r} has no words to encode")
            total = np.sum([vector(w) for w in words], axis=0)
            rows.append(total / np.linalg.norm(total))
        return torch.from_numpy(np.stack(rows)).float()

    return encode


@dataclass
class EventTable:
    """Every event of the videos an event bank covers, per video: normalised span and bank row.

    spans (`(V, E, 2)` float): (start, end) / duration of each event, 0 where padded.
    rows (`(V, E)` long): bank row holding each event's (possibly swapped) sentence, -1 where padded.
    video_ids: the V video names, in the bank's `video_ids` order.
    """

    video_ids: list[str]
    spans: torch.Tensor
    rows: torch.Tensor


def event_bank(
    annotations: Mapping[str, Mapping[str, Any]],
    encode: Callable[[list[str]], torch.Tensor],
    swap_fraction: float = 0.0,
    seed: int = 0,
) -> tuple[MemoryBankData, EventTable]:
    """The oracle bank (``swap_fraction`` 0) or a swapped one over the videos of ``annotations`` ({video: entry}).

    ``encode(sentences) -> (n, D)`` embeds sentences (the CLIP text tower). A swapped entry takes the sentence of a
    random event of another video; its ``sentences`` entry is that sentence, so retrieval accuracy sees the swap.
    """
    if not 0.0 <= swap_fraction <= 1.0:
        raise ValueError(f"event_bank: swap_fraction must lie in [0, 1], got {swap_fraction}")
    video_ids = list(annotations)
    if len(video_ids) < 2 and swap_fraction > 0:
        raise ValueError("event_bank: swapping sentences needs events of at least two videos")
    owner, truth, spans = [], [], []
    for index, vid in enumerate(video_ids):
        entry = annotations[vid]
        duration = float(entry["duration"])
        times = np.asarray(entry["timestamps"], dtype=np.float64).reshape(-1, 2)
        if len(times) == 0 or duration <= 0:
            raise ValueError(f"event_bank: video {vid!r} needs events and a positive duration, got {entry!r}")
        owner += [index] * len(times)
        truth += [s.strip() for s in entry["sentences"]]
        spans.append(np.clip(np.sort(times, axis=1) / duration, 0.0, 1.0))
    owner_arr = np.asarray(owner)
    rng = np.random.default_rng(seed)
    sentences = list(truth)
    swapped = rng.choice(len(truth), size=int(round(swap_fraction * len(truth))), replace=False)
    for row in np.sort(swapped):
        donors = np.flatnonzero(owner_arr != owner_arr[row])
        sentences[row] = truth[int(rng.choice(donors))]
    distinct = sorted(set(sentences))
    table = encode(distinct).float()  # (U, D): each distinct sentence embedded once
    position = {s: i for i, s in enumerate(distinct)}
    embeddings = table[torch.tensor([position[s] for s in sentences])]  # (M, D)
    most = max(len(s) for s in spans)
    span_tensor = torch.zeros(len(video_ids), most, 2)
    rows = torch.full((len(video_ids), most), -1, dtype=torch.long)
    first = 0
    for index, s in enumerate(spans):
        span_tensor[index, : len(s)] = torch.from_numpy(s).float()
        rows[index, : len(s)] = torch.arange(first, first + len(s))
        first += len(s)
    bank = MemoryBankData(embeddings, torch.from_numpy(owner_arr).long(), video_ids, sentences, {"dial": bank_name(
        "swap" if swap_fraction else "oracle", swap_fraction)})
    return bank, EventTable(video_ids, span_tensor, rows)


def random_bank(bank: MemoryBankData, seed: int = 0) -> MemoryBankData:
    """``bank`` with every embedding replaced by a random unit vector (same rows, videos and sentence labels)."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(bank.embeddings.shape, generator=generator)
    noise = noise / noise.norm(dim=1, keepdim=True)
    return MemoryBankData(noise, bank.video_index.clone(), list(bank.video_ids), list(bank.sentences),
                          {**bank.clip, "dial": "random"})


class EventLookupAggregation(CrossModalFrameAggregation):
    r"""
    CFA whose retrieval is a lookup in an [`EventTable`]: clusters (or windows) exactly as CFA's, then each one gets
    the bank entry of the event of its own video it overlaps most (the nearest event when it overlaps none), as
    its top-k mean (k copies of one entry). For the oracle and swapped banks of the retrieval study only.
    """

    def __init__(self, config, table: EventTable):
        super().__init__(config)
        self.exclude = "none"  # the lookup reads the video's own events by design
        self.register_buffer("event_spans", table.spans.float(), persistent=False)  # (V, E, 2)
        self.register_buffer("event_rows", table.rows.long(), persistent=False)  # (V, E)

    def forward(
        self,
        video_features: torch.Tensor,
        video_mask: torch.Tensor,
        memory_bank: MemoryBank,
        video_ids: torch.Tensor | None = None,
    ) -> FrameAggregationOutput:
        r"""
        Args:
            video_features (`(B, L, D)`), video_mask (`(B, L)` bool), memory_bank: the event bank of the table.
            video_ids (`(B,)` long): each video's row in the table (its bank video index); required.

        Returns:
            [`FrameAggregationOutput`]: text_queries `(B, c, D)` the looked-up entries, spans `(B, c, 2)`,
            retrieved_indices `(B, c, k)` the entry's row k times, retrieved_scores `(B, c, k)` ones; masked
            slots as CFA's (zeros, -1).
        """
        if video_ids is None or bool((video_ids < 0).any()) or bool((video_ids >= self.event_rows.shape[0]).any()):
            raise ValueError(
                f"EventLookupAggregation: every video needs its row in the event table (0..{self.event_rows.shape[0] - 1}) "
                f"as video_ids, got {None if video_ids is None else video_ids.tolist()}; collate with the event bank's "
                "video lookup (DenseCaptioningCollator(memory_video_lookup=bank))."
            )
        out = super().forward(video_features, video_mask, memory_bank, video_ids)
        with torch.no_grad():
            valid = video_mask.sum(1).to(torch.float32)  # (B,)
            first = out.spans[..., 0].to(torch.float32) / valid[:, None]  # (B, c) normalised start
            last = (out.spans[..., 1] + 1).to(torch.float32) / valid[:, None]  # (B, c) normalised end
            spans = self.event_spans[video_ids]  # (B, E, 2)
            rows = self.event_rows[video_ids]  # (B, E)
            # overlap when positive, minus the gap when disjoint: its argmax is the most-overlapped or nearest event
            closeness = torch.minimum(last[..., None], spans[:, None, :, 1]) - torch.maximum(first[..., None], spans[:, None, :, 0])
            closeness = closeness.masked_fill(rows[:, None, :] < 0, float("-inf"))  # (B, c, E)
            row = rows.gather(1, closeness.argmax(-1))  # (B, c)
            row = torch.where(out.text_mask, row, -1)
            text = memory_bank.embeddings[row.clamp(min=0)] * out.text_mask[..., None]  # (B, c, D)
        k = out.retrieved_indices.shape[-1]
        return FrameAggregationOutput(
            text_queries=text.to(video_features.dtype),
            text_mask=out.text_mask,
            spans=out.spans,
            retrieved_indices=row[..., None].expand(-1, -1, k).contiguous(),
            retrieved_scores=out.text_mask[..., None].expand(-1, -1, k).to(torch.float32),
        )


def install_bank(model: nn.Module, bank: MemoryBankData, table: EventTable | None = None) -> None:
    """Give ``model`` (with CFA) ``bank``; with an event ``table``, swap its CFA for the table lookup."""
    model.set_memory_bank(bank.embeddings, bank.video_index)
    if table is not None:
        if list(table.video_ids) != list(bank.video_ids):
            raise ValueError("install_bank: the event table and the bank must list the same videos in the same order")
        model.cacmi.frame_aggregation = EventLookupAggregation(model.config, table).to(bank.embeddings.device)


def retrieval_accuracy(
    spans: torch.Tensor,
    indices: torch.Tensor,
    num_frames: Sequence[int] | torch.Tensor,
    references: Sequence[Mapping[str, Any]],
    sentences: Sequence[str],
) -> dict[str, float]:
    """What the top-1 entry of every pseudo-event lying mostly inside one event says about that event.

    Args:
        spans (`(B, c, 2)` long): inclusive frame span of each pseudo-event, -1 where masked.
        indices (`(B, c, k)` long): retrieved bank rows, best first.
        num_frames (`(B,)`): valid frames of each video (the frame grid of `spans`).
        references: per video, its annotation entry (duration, timestamps, sentences).
        sentences: the bank's sentence of every row.

    Returns:
        `{"acc@1", "colour", "shape", "action", "spans", "inside"}`: fractions over the pseudo-events that lie at
        least half inside one event (`inside` of the `spans` real ones); acc@1 = the whole sentence is right.
    """
    parsed = [parse_caption(s) for s in sentences]
    hits, total = [], 0
    for b, reference in enumerate(references):
        duration = float(reference["duration"])
        events = np.asarray(reference["timestamps"], dtype=np.float64).reshape(-1, 2) / duration  # (E, 2)
        truth = [parse_caption(s) for s in reference["sentences"]]
        real = spans[b, :, 0] >= 0
        total += int(real.sum())
        frames = float(num_frames[b])
        start = spans[b, real, 0].double().numpy() / frames
        end = (spans[b, real, 1].double().numpy() + 1) / frames  # (c',)
        overlap = np.clip(np.minimum(end[:, None], events[None, :, 1]) - np.maximum(start[:, None], events[None, :, 0]), 0, None)
        best = overlap.argmax(1)  # (c',)
        inside = overlap[np.arange(len(best)), best] >= 0.5 * (end - start)
        top = indices[b, real, 0].tolist()
        for keep, event, row in zip(inside.tolist(), best.tolist(), top):
            if keep:
                said, right = parsed[row], truth[event]
                hits.append([said[j] == right[j] for j in range(3)] + [said == right])
    table = np.asarray(hits, dtype=np.float64).reshape(-1, 4)
    mean = table.mean(0) if len(table) else np.full(4, np.nan)
    return {"acc@1": float(mean[3]), "colour": float(mean[0]), "shape": float(mean[1]), "action": float(mean[2]),
            "spans": total, "inside": len(table)}


__all__ = [
    "BANK_KINDS",
    "EventLookupAggregation",
    "EventTable",
    "bank_name",
    "event_bank",
    "install_bank",
    "random_bank",
    "retrieval_accuracy",
    "word_encoder",
]
