"""Measurements that explain what the retrieval branches do to a trained model (the retrieval study's diagnostics).

- `cfe_text_share`: how far CFE moves the frame features, and how much of that move comes from the retrieved
  text (the same CFE run again with the text queries zeroed: what changes is the text's part).
- `boundary_f1`: how well the pseudo-events' boundaries (CFA clusters or CM2 windows) fall on the ground-truth
  event boundaries, within a tolerance in frames.
- `gradient_norms`: the gradient norm reaching CFE's parameters and the decoder's text cross-attention, beside
  the whole model's, after a backward pass.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def cfe_text_share(
    cfe: nn.Module,
    video_features: torch.Tensor,
    video_mask: torch.Tensor,
    text_queries: torch.Tensor,
    text_mask: torch.Tensor,
) -> dict[str, float]:
    """CFE's update of the frame features and the text's part of it, as norm ratios averaged over valid frames.

    Args:
        cfe: a `ContextAwareFeatureEnhancement`.
        video_features (`(B, L, D)`), video_mask (`(B, L)` bool), text_queries (`(B, c, D)`), text_mask (`(B, c)`).

    Returns:
        `update`: mean ||F_enh − F_v|| / ||F_v||; `text_update`: mean ||F_enh − F_enh(F_q = 0)|| / ||F_v||, the part
        of the update that the retrieved text causes; `text_share`: text_update / update (0 when CFE ignores the
        text, about 1 when the text makes all of its update).
    """
    mask = video_mask.to(torch.bool)
    enhanced = cfe(video_features, mask, text_queries, text_mask)  # (B, L, D)
    without_text = cfe(video_features, mask, torch.zeros_like(text_queries), text_mask)  # (B, L, D)
    norm = video_features.norm(dim=-1).clamp(min=1e-12)  # (B, L)
    update = ((enhanced - video_features).norm(dim=-1) / norm)[mask]
    text_update = ((enhanced - without_text).norm(dim=-1) / norm)[mask]
    total = float(update.mean())
    return {"update": total, "text_update": float(text_update.mean()),
            "text_share": float(text_update.mean()) / total if total > 0 else 0.0}


def boundary_f1(
    spans: torch.Tensor,
    num_frames: Sequence[int] | torch.Tensor,
    references: Sequence[Mapping[str, Any]],
    tolerance: float = 1.0,
) -> dict[str, float]:
    """Precision, recall and F1 of pseudo-event boundaries against event boundaries, pooled over videos.

    A pseudo-event boundary is the first frame of every real span after the first; an event boundary is every event
    start and end strictly inside the video, on the same frame grid (time / duration · frames). Each event boundary
    matches at most one pseudo-event boundary within ``tolerance`` frames (closest pairs first).

    Args:
        spans (`(B, c, 2)` long): inclusive frame spans, time-ordered, -1 where masked.
        num_frames (`(B,)`): valid frames of each video.
        references: per video, its annotation entry (duration, timestamps).
    """
    matched = predicted = truth = 0
    for b, reference in enumerate(references):
        frames = float(num_frames[b])
        starts = spans[b, :, 0]
        cuts = np.sort(starts[starts >= 0].double().numpy())[1:]  # (p,) boundaries between pseudo-events
        times = np.asarray(reference["timestamps"], dtype=np.float64).reshape(-1) / float(reference["duration"]) * frames
        bounds = np.unique(times[(times > 0) & (times < frames)])  # (t,)
        predicted += len(cuts)
        truth += len(bounds)
        if not len(cuts) or not len(bounds):
            continue
        distance = np.abs(cuts[:, None] - bounds[None, :])  # (p, t)
        pairs = np.argwhere(distance <= tolerance)
        order = np.argsort(distance[pairs[:, 0], pairs[:, 1]], kind="stable")
        used_cut, used_bound = set(), set()
        for i, j in pairs[order].tolist():
            if i not in used_cut and j not in used_bound:
                used_cut.add(i)
                used_bound.add(j)
        matched += len(used_cut)
    precision = matched / predicted if predicted else 0.0
    recall = matched / truth if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _norm(parameters) -> float:
    """L2 norm over the gradients of `parameters` (0 without any)."""
    grads = [p.grad.detach().float().pow(2).sum() for p in parameters if p.grad is not None]
    return float(torch.stack(grads).sum().sqrt()) if grads else 0.0


def gradient_norms(model: nn.Module) -> dict[str, float]:
    """Gradient norms after `backward()`: `cfe` (CFE's parameters), `text_attention` (the decoder's text
    cross-attention and text projection), `total` (every parameter); 0 for a part the model does not have."""
    cacmi = model.cacmi
    cfe = list(cacmi.feature_enhancement.parameters()) if cacmi.feature_enhancement is not None else []
    text = []
    decoder = cacmi.decoder
    if getattr(decoder, "text_projection", None) is not None:
        text += list(decoder.text_projection.parameters())
    for layer in getattr(decoder, "layers", []):
        for name in ("text_attn", "text_norm"):
            part = getattr(layer, name, None)
            if part is not None:
                text += list(part.parameters())
    return {"cfe": _norm(cfe), "text_attention": _norm(text), "total": _norm(model.parameters())}


__all__ = ["boundary_f1", "cfe_text_share", "gradient_norms"]
