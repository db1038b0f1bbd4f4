"""SODA_c (Fujita et al., "SODA: Story Oriented Dense Video Captioning Evaluation Framework", ECCV 2020).

Per video, the reference events and the predicted events are each put in start-time order, and
an order-preserving one-to-one matching (a monotone alignment, as in sequence alignment) is
chosen to maximise the summed ``tIoU x METEOR`` of the matched pairs. With that maximum ``S``,
precision is ``S / #predictions``, recall ``S / #references`` and the video scores their F1.
SODA_c is the mean F1 over the videos present in both the predictions and the reference file;
ActivityNet reports its mean over the two reference files.

Conventions of the toolkit the field reports with, kept here so numbers agree: the METEOR of a
pair is computed with the reference caption as the hypothesis and the predicted caption as the
reference (scores are not symmetric); tIoU includes the 1e-8 union term; events with equal start
keep their given order. A predicted video with an empty event list scores 0 (the toolkit fails).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
from ..progress import progress as progress_bar

from .io import ReferenceSet, VideoEvents
from .localization import tiou_matrix
from .meteor import Meteor, meteor_from_statistics


def soda_alignment_score(scores: np.ndarray) -> float:
    """Best total of an order-preserving one-to-one matching of rows to columns of ``scores`` (R, P).

    dp[i, j] = max(dp[i-1, j], dp[i, j-1], dp[i-1, j-1] + scores[i, j]); scores are >= 0.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return 0.0
    previous = np.zeros(scores.shape[1] + 1)  # dp of the row above, with a zero column in front
    for row in scores:
        candidates = np.maximum(previous[1:], previous[:-1] + row)  # (P,) skip the row / match (i, j)
        previous = np.concatenate(([0.0], np.maximum.accumulate(candidates)))  # or skip the column
    return float(previous[-1])


def soda_prf(total: float, num_predictions: int, num_references: int) -> tuple[float, float, float]:
    """Precision, recall and F1 of one video from its best alignment total."""
    if num_predictions == 0 or num_references == 0:
        return 0.0, 0.0, 0.0
    precision, recall = total / num_predictions, total / num_references
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def soda_requests(
    predictions: Mapping[str, VideoEvents], reference: ReferenceSet, tokens: Mapping[str, str]
) -> tuple[list[str], list[tuple], list[tuple[str, list[str]]]]:
    """Videos scored, per-video (tIoU (R, P), rows, cols, first request) and the METEOR requests of SODA_c."""
    video_ids = [vid for vid in reference.videos if vid in predictions]
    layouts = []
    requests: list[tuple[str, list[str]]] = []
    for vid in video_ids:
        pred = predictions[vid].sorted_by_start()
        gold = reference.videos[vid].sorted_by_start()
        overlap = tiou_matrix(gold.segments, pred.segments)  # (R, P), toolkit's argument order
        rows, cols = np.nonzero(overlap > 0)
        layouts.append((overlap, rows, cols, len(requests)))
        requests.extend((tokens[gold.sentences[r]], [tokens[pred.sentences[c]]]) for r, c in zip(rows, cols))
    return video_ids, layouts, requests


def soda_c(
    predictions: Mapping[str, VideoEvents],
    reference: ReferenceSet,
    tokens: Mapping[str, str],
    meteor: Meteor,
    progress: bool = False,
    prepared: tuple[list[str], list[tuple], list[tuple[str, list[str]]]] | None = None,
) -> dict[str, object]:
    """SODA_c of the predictions against one reference file.

    Returns ``{"precision", "recall", "f1", "videos", "per_video": {video_id: f1}}``; only pairs
    that overlap in time are sent to METEOR, since the others contribute tIoU 0. ``prepared`` may
    pass ``soda_requests`` of the same arguments, computed earlier.
    """
    video_ids, layouts, requests = prepared if prepared is not None else soda_requests(predictions, reference, tokens)
    meteor_scores = meteor_from_statistics(meteor.statistics_array(requests, progress))  # (len(requests),)
    per_video, totals = {}, np.zeros((len(video_ids), 3))
    for k, vid in enumerate(progress_bar(video_ids, desc=f"SODA_c {reference.name}", enabled=progress, leave=False)):
        overlap, rows, cols, start = layouts[k]
        weighted = np.zeros_like(overlap)  # (R, P)
        weighted[rows, cols] = overlap[rows, cols] * meteor_scores[start:start + len(rows)]
        totals[k] = soda_prf(soda_alignment_score(weighted), overlap.shape[1], overlap.shape[0])
        per_video[vid] = float(totals[k, 2])
    means = totals.mean(axis=0) if len(video_ids) else np.zeros(3)
    return {
        "precision": float(means[0]),
        "recall": float(means[1]),
        "f1": float(means[2]),
        "videos": len(video_ids),
        "per_video": per_video,
    }
