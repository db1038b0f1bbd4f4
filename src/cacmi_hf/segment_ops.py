"""1-D segment geometry: (center, length) <-> (start, end) and (generalised) IoU of temporal segments."""

from __future__ import annotations

import torch

# Guards the divisions of degenerate (zero-length) segments; far below any real segment size,
# so the IoU of non-degenerate segments is exact.
_EPS = 1e-7


def segment_cw_to_se(segments: torch.Tensor) -> torch.Tensor:
    """Convert (..., 2) segments from (center, length) to (start, end)."""
    center, length = segments.unbind(-1)
    return torch.stack((center - 0.5 * length, center + 0.5 * length), dim=-1)


def segment_se_to_cw(segments: torch.Tensor) -> torch.Tensor:
    """Convert (..., 2) segments from (start, end) to (center, length)."""
    start, end = segments.unbind(-1)
    return torch.stack((0.5 * (start + end), end - start), dim=-1)


def _intersection_union(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise intersection and union lengths of (..., N, 2) and (..., M, 2) se segments, each (..., N, M)."""
    a_start, a_end = a[..., :, None, 0], a[..., :, None, 1]  # (..., N, 1)
    b_start, b_end = b[..., None, :, 0], b[..., None, :, 1]  # (..., 1, M)
    inter = (torch.minimum(a_end, b_end) - torch.maximum(a_start, b_start)).clamp(min=0)  # (..., N, M)
    union = (a_end - a_start) + (b_end - b_start) - inter  # (..., N, M)
    return inter, union


def segment_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of se segments a (..., N, 2) and b (..., M, 2) -> (..., N, M); batch dims broadcast."""
    inter, union = _intersection_union(a, b)
    return inter / union.clamp(min=_EPS)


def generalized_segment_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise generalised IoU of se segments a (..., N, 2) and b (..., M, 2) -> (..., N, M), in [-1, 1].

    GIoU = IoU - (|C| - |A ∪ B|) / |C| with C the smallest interval enclosing both segments, so
    disjoint segments still get a gradient that pulls them together. Segments must have end >= start.
    """
    inter, union = _intersection_union(a, b)
    enclosing = (
        torch.maximum(a[..., :, None, 1], b[..., None, :, 1]) - torch.minimum(a[..., :, None, 0], b[..., None, :, 0])
    )  # (..., N, M)
    iou = inter / union.clamp(min=_EPS)
    return iou - (enclosing - union) / enclosing.clamp(min=_EPS)


def elementwise_generalized_segment_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of matched se segments a (..., 2) and b (..., 2) -> (...), without the pairwise matrix."""
    return generalized_segment_iou(a[..., None, :], b[..., None, :])[..., 0, 0]


__all__ = [
    "segment_cw_to_se",
    "segment_se_to_cw",
    "segment_iou",
    "generalized_segment_iou",
    "elementwise_generalized_segment_iou",
]
