"""Temporal IoU and the toolkit's localisation precision / recall.

The formulas follow the ActivityNet-2018 evaluation protocol operation for operation (including
the 1e-8 added to the union), so that thresholds compare exactly as in the reference toolkit:
an event pair whose tIoU is 0.5 up to rounding falls on the same side of 0.5 here and there.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

UNION_EPS = 1e-8


def tiou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """tIoU of every segment of ``a`` (A, 2) with every segment of ``b`` (B, 2) -> (A, B).

    Union is ``min(hull, len_b + len_a)`` evaluated as ``((e_b - s_b) + e_a) - s_a``, which is
    the toolkit's order when ``a`` holds predictions and ``b`` references.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    sa, ea = a[:, None, 0], a[:, None, 1]  # (A, 1)
    sb, eb = b[None, :, 0], b[None, :, 1]  # (1, B)
    inter = np.maximum(0.0, np.minimum(eb, ea) - np.maximum(sb, sa))  # (A, B)
    union = np.minimum(np.maximum(eb, ea) - np.minimum(sb, sa), ((eb - sb) + ea) - sa)  # (A, B)
    return inter / (union + UNION_EPS)


def tiou(a: Sequence[float], b: Sequence[float]) -> float:
    """tIoU of two ``[start, end]`` segments."""
    return float(tiou_matrix(np.asarray([a]), np.asarray([b]))[0, 0])


def precision_recall(
    predicted: np.ndarray, references: Sequence[np.ndarray], tious: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-threshold precision and recall (T,) of one video.

    ``predicted`` (P, 2); ``references`` one (R_k, 2) array per reference file holding the video.
    A prediction (reference) counts when some reference (prediction) has tIoU strictly above the
    threshold; precision and recall are each maximised over the reference files. A video without
    predictions scores 0.
    """
    thresholds = np.asarray(tious, dtype=np.float64)[:, None, None]  # (T, 1, 1)
    precision = np.zeros(len(tious))
    recall = np.zeros(len(tious))
    if len(predicted) == 0:
        return precision, recall
    for ref in references:
        hit = tiou_matrix(predicted, ref)[None] > thresholds  # (T, P, R)
        precision = np.maximum(precision, hit.any(axis=2).sum(axis=1) / hit.shape[1])
        recall = np.maximum(recall, hit.any(axis=1).sum(axis=1) / hit.shape[2])
    return precision, recall


def f1_score(precision: float, recall: float) -> float:
    """Harmonic mean of precision and recall; 0 when both are 0."""
    return 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
