"""Caption scores of the densevid dense-captioning protocols (tIoU-paired, per video or pooled).

For each threshold and each reference video, every prediction is paired with every reference
sentence (of every reference file holding the video) whose tIoU with it is >= the threshold; a
prediction paired with none is paired with a reference that never matches instead ("abc123!@#",
or one unknown word under protocol 2021: see ``protocols``), so that unmatched captions lower the
scores. The pairs of one video form one scored set: BLEU and METEOR are corpus-level over the set,
ROUGE-L and CIDEr-D the mean over its pairs, and CIDEr-D's document frequencies come from the set's
references. A video without predictions scores 0. Per-threshold scores are means over all reference
videos; the reported score is the mean over thresholds. Protocol 2018_cider scores one set per
threshold instead, the union of every video's pairs (``pooled_sets``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Sequence

import numpy as np
from ..progress import progress as progress_bar

from .io import ReferenceSet, VideoEvents
from .localization import tiou_matrix
from .meteor import Meteor, aggregate_statistics
from .ngram_metrics import ngram_set_scores, rouge_l
from .protocols import GARBAGE_REFERENCE

CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def caption_pairs(
    predicted: VideoEvents | None,
    references: Sequence[VideoEvents],
    tious: Sequence[float],
    unmatched: str | None = GARBAGE_REFERENCE,
) -> list[list[tuple[str, str | None]]]:
    """(prediction, reference) sentence pairs of one video for each threshold (raw text).

    A prediction that overlaps no reference is paired with ``unmatched``.
    """
    if predicted is None or len(predicted) == 0:
        return [[] for _ in tious]
    ref_sentences = [s for ref in references for s in ref.sentences]
    overlap = np.concatenate([tiou_matrix(predicted.segments, ref.segments) for ref in references], axis=1)  # (P, R)
    sets = []
    for threshold in tious:
        matched = overlap >= threshold  # (P, R)
        pairs = []
        for i, sentence in enumerate(predicted.sentences):
            hits = np.flatnonzero(matched[i])
            if len(hits):
                pairs.extend((sentence, ref_sentences[j]) for j in hits)
            else:
                pairs.append((sentence, unmatched))
        sets.append(pairs)
    return sets


class CaptionSetScorer:
    """Scores sets of tokenised (hypothesis, reference) pairs; METEOR and ROUGE-L once per distinct pair."""

    def __init__(self, meteor: Meteor | None):
        self.meteor = meteor
        self._rouge: dict[tuple[str, str], float] = {}

    def _meteor_scores(self, sets: Sequence[Sequence[tuple[str, str]]], filled: list[int], progress: bool) -> list[float]:
        """Aggregate METEOR of each non-empty set (one statistics request per distinct pair)."""
        requests = meteor_requests([sets[i] for i in filled])
        rows = self.meteor.statistics_array(requests, progress)  # (D, 23), one row per distinct pair
        index = {(h, r[0]): k for k, (h, r) in enumerate(requests)}
        members = np.fromiter((index[p] for i in filled for p in sets[i]), np.int64)  # (sum of set sizes,)
        return aggregate_statistics(rows[members], [len(sets[i]) for i in filled]).tolist()

    def score_sets(self, sets: Sequence[Sequence[tuple[str, str]]], progress: bool = False) -> np.ndarray:
        """Scores (S, 7) in ``CAPTION_METRICS`` order; zeros for empty sets, METEOR NaN without Java."""
        # A set's scores depend only on its pairs, and thresholds often give a video the same set
        # (a quarter of ActivityNet val's sets repeat): score each distinct set once.
        distinct = {tuple(pairs): None for pairs in sets}
        position = {pairs: k for k, pairs in enumerate(distinct)}
        scores = self._score_distinct(list(distinct), progress)
        return scores[[position[tuple(pairs)] for pairs in sets]] if len(sets) else scores

    def _score_distinct(self, sets: Sequence[Sequence[tuple[str, str]]], progress: bool) -> np.ndarray:
        scores = np.zeros((len(sets), len(CAPTION_METRICS)))
        filled = [i for i, pairs in enumerate(sets) if pairs]
        # METEOR runs in its Java process; a thread feeds it while this one computes the pure-Python
        # metrics, so the two use both cores instead of taking turns (same numbers, less wall time).
        with ThreadPoolExecutor(max_workers=1) as pool:
            meteor = pool.submit(self._meteor_scores, sets, filled, progress) if self.meteor is not None else None
            ngram = ngram_set_scores([[(h, (r,)) for h, r in pairs] for pairs in sets])  # (S, 5), 0 for an empty set
            scores[:, :4], scores[:, 6] = ngram[:, :4], ngram[:, 4]
            pairs = [p for i in filled for p in sets[i]]
            for pair in progress_bar(dict.fromkeys(pairs), desc="ROUGE-L", unit="pair", enabled=progress, leave=False):
                if pair not in self._rouge:
                    self._rouge[pair] = rouge_l(pair[0], [pair[1]])
            owner = np.repeat(np.array(filled, np.int64), [len(sets[i]) for i in filled])
            rouge = np.fromiter((self._rouge[p] for p in pairs), np.float64, len(pairs))
            scores[filled, 5] = np.bincount(owner, rouge, len(sets))[filled] / np.bincount(owner, None, len(sets))[filled]
            if meteor is not None:
                scores[filled, 4] = meteor.result()
        if self.meteor is None:
            scores[:, 4] = np.nan
        return scores


def caption_sets(
    predictions: Mapping[str, VideoEvents],
    references: Sequence[ReferenceSet],
    video_ids: Sequence[str],
    tious: Sequence[float],
    tokens: Mapping[str, str],
    unmatched: str | None = None,
) -> list[list[tuple[str, str]]]:
    """The tokenised pair sets of the protocol, video-major: set ``v * T + t`` is video v at threshold t.

    ``unmatched`` is the tokenised reference of unmatched predictions; None: ``tokens[GARBAGE_REFERENCE]``.
    """
    garbage = tokens[GARBAGE_REFERENCE] if unmatched is None else unmatched
    sets: list[list[tuple[str, str]]] = []
    for vid in video_ids:
        refs = [ref.videos[vid] for ref in references if vid in ref.videos]
        for pairs in caption_pairs(predictions.get(vid), refs, tious, unmatched=None):
            sets.append([(tokens[h], garbage if r is None else tokens[r]) for h, r in pairs])
    return sets


def pooled_sets(sets: Sequence[Sequence[tuple[str, str]]], num_tious: int) -> list[list[tuple[str, str]]]:
    """Protocol 2018_cider's sets: for each threshold, the pairs of every video (video-major ``sets``) in one."""
    return [[pair for pairs in sets[t::num_tious] for pair in pairs] for t in range(num_tious)]


def meteor_requests(sets: Sequence[Sequence[tuple[str, str]]]) -> list[tuple[str, list[str]]]:
    """The distinct ``(hypothesis, [reference])`` METEOR requests of some pair sets."""
    return [(h, [r]) for h, r in dict.fromkeys(p for pairs in sets for p in pairs)]


def caption_scores(
    predictions: Mapping[str, VideoEvents],
    references: Sequence[ReferenceSet],
    video_ids: Sequence[str],
    tious: Sequence[float],
    tokens: Mapping[str, str],
    scorer: CaptionSetScorer,
    progress: bool = False,
    sets: Sequence[Sequence[tuple[str, str]]] | None = None,
    unmatched: str | None = None,
) -> np.ndarray:
    """Per-video caption scores (T, V, 7) of the protocol; ``tokens`` maps raw -> tokenised text.

    ``sets`` may pass the result of ``caption_sets`` for the same arguments, computed earlier;
    ``unmatched`` is as in ``caption_sets``.
    """
    if sets is None:
        sets = caption_sets(predictions, references, video_ids, tious, tokens, unmatched)
    scores = scorer.score_sets(sets, progress)  # (V * T, 7), video-major
    return scores.reshape(len(video_ids), len(tious), -1).transpose(1, 0, 2)
