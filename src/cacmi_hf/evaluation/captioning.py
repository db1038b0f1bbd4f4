"""Caption scores of the ActivityNet-2018 dense-captioning protocol (tIoU-paired, per video).

For each threshold and each reference video, every prediction is paired with every reference
sentence (of every reference file holding the video) whose tIoU with it is >= the threshold; a
prediction paired with none is paired with the reference "abc123!@#" instead, so that unmatched
captions lower the scores. The pairs of one video form one scored set: BLEU and METEOR are
corpus-level over the set, ROUGE-L and CIDEr-D the mean over its pairs, and CIDEr-D's document
frequencies come from the set's references. A video without predictions scores 0. Per-threshold
scores are means over all reference videos; the reported score is the mean over thresholds.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from .io import ReferenceSet, VideoEvents
from .localization import tiou_matrix
from .meteor import Meteor
from .ngram_metrics import BleuCounts, bleu_counts, cider_d_sets, corpus_bleu, ngram_counts, rouge_l

GARBAGE_REFERENCE = "abc123!@#"
CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


def caption_pairs(
    predicted: VideoEvents | None, references: Sequence[VideoEvents], tious: Sequence[float]
) -> list[list[tuple[str, str]]]:
    """(prediction, reference) sentence pairs of one video for each threshold (raw text)."""
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
                pairs.append((sentence, GARBAGE_REFERENCE))
        sets.append(pairs)
    return sets


class CaptionSetScorer:
    """Scores sets of tokenised (hypothesis, reference) pairs, caching every per-pair quantity."""

    def __init__(self, meteor: Meteor | None):
        self.meteor = meteor
        self._counts: dict[str, object] = {}
        self._bleu: dict[tuple[str, str], BleuCounts] = {}
        self._rouge: dict[tuple[str, str], float] = {}

    def _ngrams(self, text: str):
        if text not in self._counts:
            self._counts[text] = ngram_counts(text)
        return self._counts[text]

    def _meteor_scores(self, sets: Sequence[Sequence[tuple[str, str]]], filled: list[int], progress: bool) -> list[float]:
        """Aggregate METEOR of each non-empty set (one statistics request per distinct pair)."""
        requests = meteor_requests([sets[i] for i in filled])
        stats = dict(zip(((h, r[0]) for h, r in requests), self.meteor.statistics(requests, progress)))
        return self.meteor.aggregate([[stats[p] for p in sets[i]] for i in filled], progress)

    def score_sets(self, sets: Sequence[Sequence[tuple[str, str]]], progress: bool = False) -> np.ndarray:
        """Scores (S, 7) in ``CAPTION_METRICS`` order; zeros for empty sets, METEOR NaN without Java."""
        scores = np.zeros((len(sets), len(CAPTION_METRICS)))
        filled = [i for i, pairs in enumerate(sets) if pairs]
        # METEOR runs in its Java process; a thread feeds it while this one computes the pure-Python
        # metrics, so the two use both cores instead of taking turns (same numbers, less wall time).
        with ThreadPoolExecutor(max_workers=1) as pool:
            meteor = pool.submit(self._meteor_scores, sets, filled, progress) if self.meteor is not None else None
            for i in tqdm(filled, desc="BLEU/ROUGE-L/CIDEr", unit="set", disable=not progress, leave=False):
                pairs = sets[i]
                for pair in pairs:
                    if pair not in self._bleu:
                        hyp, ref = pair
                        self._bleu[pair] = bleu_counts(hyp, [ref], counts=(self._ngrams(hyp), [self._ngrams(ref)]))
                        self._rouge[pair] = rouge_l(pair[0], [pair[1]])
                scores[i, :4] = corpus_bleu([self._bleu[p] for p in pairs])
                scores[i, 5] = np.mean(np.array([self._rouge[p] for p in pairs]))
            scores[:, 6] = cider_d_sets(sets, self._ngrams)  # all sets at once; 0 for an empty set
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
) -> list[list[tuple[str, str]]]:
    """The tokenised pair sets of the protocol, video-major: set ``v * T + t`` is video v at threshold t."""
    sets: list[list[tuple[str, str]]] = []
    for vid in video_ids:
        refs = [ref.videos[vid] for ref in references if vid in ref.videos]
        for pairs in caption_pairs(predictions.get(vid), refs, tious):
            sets.append([(tokens[h], tokens[r]) for h, r in pairs])
    return sets


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
) -> np.ndarray:
    """Per-video caption scores (T, V, 7) of the protocol; ``tokens`` maps raw -> tokenised text.

    ``sets`` may pass the result of ``caption_sets`` for the same arguments, computed earlier.
    """
    if sets is None:
        sets = caption_sets(predictions, references, video_ids, tious, tokens)
    scores = scorer.score_sets(sets, progress)  # (V * T, 7), video-major
    return scores.reshape(len(video_ids), len(tious), -1).transpose(1, 0, 2)
