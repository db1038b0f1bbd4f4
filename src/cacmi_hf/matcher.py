"""Hungarian matching of event queries to ground-truth events (one-to-one, per video)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from .segment_ops import generalized_segment_iou, segment_cw_to_se, segment_se_to_cw


class MatchIndices(NamedTuple):
    """Matched (video, query, target) triples as flat LongTensors of length P, sorted by video then target."""

    batch: torch.Tensor
    query: torch.Tensor
    target: torch.Tensor


def focal_matching_cost(logits: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Focal cost of calling each query an event: positive minus negative focal term of sigmoid(logits), same shape."""
    prob = logits.sigmoid()
    # -log p and -log(1 - p) through softplus: finite for any logit, unlike log(p + eps)
    positive = alpha * (1 - prob) ** gamma * F.softplus(-logits)
    negative = (1 - alpha) * prob**gamma * F.softplus(logits)
    return positive - negative


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising class·focal − giou·GIoU + l1·L1(cw) per video (PDVC / Deformable DETR)."""

    def __init__(
        self,
        class_cost: float = 2.0,
        giou_cost: float = 4.0,
        l1_cost: float = 0.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        if class_cost == 0 and giou_cost == 0 and l1_cost == 0:
            raise ValueError("HungarianMatcher needs at least one non-zero cost (class_cost, giou_cost, l1_cost).")
        self.class_cost = class_cost
        self.giou_cost = giou_cost
        self.l1_cost = l1_cost
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @torch.no_grad()
    def cost_matrix(
        self, logits: torch.Tensor, pred_segments: torch.Tensor, target_segments: torch.Tensor
    ) -> torch.Tensor:
        """Matching cost (B, N, E) of every query against every (padded) target of the same video."""
        class_cost = focal_matching_cost(logits.float(), self.focal_alpha, self.focal_gamma)  # (B, N)
        pred_segments, target_segments = pred_segments.float(), target_segments.float()
        giou = generalized_segment_iou(segment_cw_to_se(pred_segments), target_segments)  # (B, N, E)
        l1 = torch.cdist(pred_segments, segment_se_to_cw(target_segments), p=1)  # (B, N, E)
        return self.class_cost * class_cost[..., None] - self.giou_cost * giou + self.l1_cost * l1

    @torch.no_grad()
    def forward(
        self,
        logits: torch.Tensor,
        pred_segments: torch.Tensor,
        target_segments: torch.Tensor,
        target_mask: torch.Tensor,
    ) -> MatchIndices:
        """Match queries to targets.

        Args:
            logits: (B, N) confidence logits.
            pred_segments: (B, N, 2) predicted (center, length), normalised.
            target_segments: (B, E, 2) ground-truth (start, end), normalised, padded.
            target_mask: (B, E) bool, True for real events (need not be a prefix).

        Returns:
            MatchIndices of P = Σ_b min(N, E_b) pairs; `target` indexes the padded E axis.
        """
        if logits.dim() == 3 and logits.shape[-1] == 1:
            logits = logits[..., 0]
        batch_size, num_queries = logits.shape
        if pred_segments.shape != (batch_size, num_queries, 2):
            raise ValueError(
                f"pred_segments has shape {tuple(pred_segments.shape)}; expected (B, N, 2) = "
                f"({batch_size}, {num_queries}, 2) to match logits."
            )
        if target_segments.dim() != 3 or target_segments.shape[0] != batch_size or target_segments.shape[-1] != 2:
            raise ValueError(
                f"target_segments has shape {tuple(target_segments.shape)}; expected (B={batch_size}, E, 2)."
            )
        if target_mask.shape != target_segments.shape[:2]:
            raise ValueError(
                f"target_mask has shape {tuple(target_mask.shape)}; "
                f"expected (B, E) = {tuple(target_segments.shape[:2])}."
            )

        cost = self.cost_matrix(logits, pred_segments, target_segments).cpu().numpy()  # (B, N, E)
        mask = target_mask.bool().cpu().numpy()  # (B, E)
        batches, queries, targets = [], [], []
        # The assignment itself is sequential (scipy); each video solves only its own small block.
        for b in range(batch_size):
            valid = np.flatnonzero(mask[b])
            if valid.size == 0:
                continue
            block = cost[b][:, valid].T  # (E_b, N): rows are targets, so rows come back sorted
            if not np.isfinite(block).all():
                raise ValueError(
                    f"Matching cost of video {b} in the batch is not finite: the predicted logits/segments "
                    "contain NaN or inf (check the learning rate and the model's inputs)."
                )
            rows, cols = linear_sum_assignment(block)
            batches.append(np.full(rows.size, b, dtype=np.int64))
            targets.append(valid[rows])
            queries.append(cols)

        device = logits.device
        if not batches:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return MatchIndices(empty, empty.clone(), empty.clone())
        as_long = lambda parts: torch.as_tensor(np.concatenate(parts).astype(np.int64), device=device)  # noqa: E731
        return MatchIndices(as_long(batches), as_long(queries), as_long(targets))


__all__ = ["HungarianMatcher", "MatchIndices", "focal_matching_cost"]
