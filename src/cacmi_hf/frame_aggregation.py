"""CFA (cross-modal frame aggregation): cluster frames into pseudo-events and retrieve text for each."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput, logging

from .memory_bank import MemoryBank

logger = logging.get_logger(__name__)


def _ward_cost(sum_a: torch.Tensor, n_a: torch.Tensor, sum_b: torch.Tensor, n_b: torch.Tensor) -> torch.Tensor:
    """Ward merge cost |A||B|/(|A|+|B|)·||μA−μB||² from cluster sums (..., D) and sizes (...)."""
    na = n_a.clamp(min=1).to(sum_a.dtype)
    nb = n_b.clamp(min=1).to(sum_a.dtype)
    diff = sum_a / na[..., None] - sum_b / nb[..., None]  # (..., D)
    return na * nb / (na + nb) * diff.pow(2).sum(-1)


def contiguous_ward_clustering(
    features: torch.Tensor, mask: torch.Tensor, num_clusters: int, max_span: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""
    Greedy agglomerative Ward clustering of each video's frames into `num_clusters` contiguous spans.

    Only temporally adjacent clusters may merge, and a merge may not create a cluster longer than `max_span`
    frames; each step merges the allowed pair with the smallest Ward cost (ties: the earliest pair). When no
    allowed merge is left but more than `num_clusters` clusters remain, the span limit is relaxed for that
    step and the cheapest adjacent pair merges, so exactly `num_clusters` clusters come out whenever a video
    has at least that many valid frames (such a cluster may exceed `max_span`). A video with fewer valid
    frames gets one cluster per frame and masked slots after them; one without valid frames gets none.
    Padded frames are skipped: clustering runs over the valid frames in time order (padding is normally a
    suffix; a hole inside a video joins the frames on either side).

    Args:
        features (`(B, L, D)`): frame features (no gradient is taken).
        mask (`(B, L)` bool): True for valid frames.
        num_clusters (`int`): clusters c per video.
        max_span (`int`): most valid frames one cluster may hold (before relaxation).

    Returns:
        assignment (`(B, L)` long): cluster of each frame in 0..c-1, -1 on padding.
        spans (`(B, c, 2)` long): inclusive [first, last] frame index of each cluster, -1 for masked slots.
        cluster_mask (`(B, c)` bool): True for real clusters; clusters are ordered in time.
    """
    if features.dim() != 3 or mask.shape != features.shape[:2]:
        raise ValueError(
            f"contiguous_ward_clustering: features must be (B, L, D) and mask (B, L); got {tuple(features.shape)} "
            f"and {tuple(mask.shape)}."
        )
    if num_clusters < 1 or max_span < 1:
        raise ValueError(
            f"contiguous_ward_clustering: num_clusters and max_span must be >= 1, got {num_clusters} and {max_span}."
        )
    batch, length, _ = features.shape
    device = features.device
    mask = mask.to(torch.bool)
    with torch.no_grad():
        # Work on the valid frames moved to the front in time order ("compact" positions).
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # (B, L) compact -> frame
        dtype = torch.promote_types(features.dtype, torch.float32)
        x = features.detach().to(dtype).gather(1, order[..., None].expand_as(features))  # (B, L, D)
        num_valid = mask.sum(1)  # (B,)
        pos = torch.arange(length, device=device)
        valid = pos[None, :] < num_valid[:, None]  # (B, L)

        # Slot i of a video holds the cluster starting at compact position i (size 0: none starts there).
        # Three scratch slots per video (L, L+1, L+2) absorb the writes of videos that are done and of
        # missing neighbours, so each step is one batched write per state with no duplicate targets; the
        # values written there are inf, so no scratch slot is ever chosen for a merge.
        slots = length + 3
        inf = torch.tensor(float("inf"), dtype=dtype, device=device)
        size = torch.zeros(batch, slots, dtype=torch.long, device=device)
        size[:, :length] = valid.long()
        sums = torch.zeros(batch, slots, x.shape[-1], dtype=dtype, device=device)
        sums[:, :length] = x * valid[..., None]
        prev = torch.full((batch, slots), -1, dtype=torch.long, device=device)  # slot of the previous cluster
        prev[:, :length] = pos - 1
        # cost: Ward cost of merging slot i with its successor; allowed: the same where the merge fits max_span.
        cost = torch.full((batch, slots), float("inf"), dtype=dtype, device=device)
        if length > 1:
            pair = _ward_cost(sums[:, : length - 1], size[:, : length - 1], sums[:, 1:length], size[:, 1:length])
            cost[:, : length - 1] = torch.where(pos[None, 1:] < num_valid[:, None], pair, inf)
        allowed = cost.clone() if max_span >= 2 else torch.full_like(cost, float("inf"))
        alive = num_valid.clone()  # (B,) clusters left

        size_f, prev_f, cost_f, allowed_f = size.view(-1), prev.view(-1), cost.view(-1), allowed.view(-1)
        sums_f = sums.view(batch * slots, -1)
        base = torch.arange(batch, device=device) * slots  # (B,) flat offset of each video
        scratch_i, scratch_j, scratch_p = base + length, base + length + 1, base + length + 2
        zeros = torch.zeros(batch, dtype=torch.long, device=device)
        steps = int((num_valid - num_clusters).clamp(min=0).max()) if batch else 0
        for _ in range(steps):
            active = alive > num_clusters  # (B,)
            # argmin returns the first minimum, so ties go to the earliest pair.
            best_allowed = base + allowed.argmin(1)  # (B,)
            relax = torch.isinf(allowed_f.index_select(0, best_allowed))  # no merge within max_span is left
            fi = torch.where(relax, base + cost.argmin(1), best_allowed)  # (B,) flat absorbing slot
            n_i = size_f.index_select(0, fi)
            fj = fi + n_i  # successor slot
            n_j = size_f.index_select(0, fj)
            k = fi - base + n_i + n_j  # slot after the merged cluster
            k_ok = active & (k < num_valid)
            fk = torch.where(k_ok, base + k, scratch_i)
            p = prev_f.index_select(0, fi)
            p_ok = active & (p >= 0)
            fp = torch.where(p_ok, base + p, scratch_p)
            rows = sums_f.index_select(0, torch.cat([fi, fj, fk, fp]))  # (4B, D)
            n_k, n_p = size_f.index_select(0, torch.cat([fk, fp])).split(batch)
            n_new = n_i + n_j
            sum_new = rows[:batch] + rows[batch : 2 * batch]  # (B, D)
            pair = _ward_cost(
                torch.cat([sum_new, rows[3 * batch :]]), torch.cat([n_new, n_p]),
                torch.cat([rows[2 * batch : 3 * batch], sum_new]), torch.cat([n_k, n_new]),
            )  # (2B,) merged cluster with its successor, predecessor with the merged cluster
            new_cost = torch.where(torch.cat([k_ok, p_ok]), pair, inf)  # (2B,)
            new_allowed = torch.where(torch.cat([n_new + n_k, n_p + n_new]) <= max_span, new_cost, inf)

            wi = torch.where(active, fi, scratch_i)
            targets = torch.cat([wi, torch.where(active, fj, scratch_j), fp])  # (3B,) absorbing, absorbed, previous
            size_f.index_copy_(0, targets[: 2 * batch], torch.cat([n_new, zeros]))
            sums_f.index_copy_(0, wi, sum_new)
            infs = inf.expand(batch)
            cost_f.index_copy_(0, targets, torch.cat([new_cost[:batch], infs, new_cost[batch:]]))
            allowed_f.index_copy_(0, targets, torch.cat([new_allowed[:batch], infs, new_allowed[batch:]]))
            prev_f.index_copy_(0, torch.where(k_ok, fk, scratch_j), fi - base)
            alive = alive - active.long()

        size = size[:, :length]
        starts = size > 0  # (B, L) compact slots where a cluster starts
        cluster_of = starts.long().cumsum(1) - 1  # (B, L) cluster id of each compact position
        cluster_mask = torch.arange(num_clusters, device=device)[None, :] < alive[:, None]  # (B, c)

        frame_assign = torch.where(valid, cluster_of, -1)  # (B, L) in compact order
        assignment = torch.full((batch, length), -1, dtype=torch.long, device=device)
        assignment.scatter_(1, order, frame_assign)

        first = order  # compact position -> frame index
        last = order.gather(1, (pos[None, :] + size - 1).clamp(min=0))  # (B, L) last frame of the cluster at slot i
        target = torch.where(starts, cluster_of, num_clusters)  # dead slots go to a dropped extra column
        spans = torch.full((batch, num_clusters + 1, 2), -1, dtype=torch.long, device=device)
        spans[..., 0].scatter_(1, target, first)
        spans[..., 1].scatter_(1, target, last)
        spans = spans[:, :num_clusters].contiguous()
    return assignment, spans, cluster_mask


def boundary_weighted_pooling(
    features: torch.Tensor, assignment: torch.Tensor, num_clusters: int, beta: float = 1.0
) -> torch.Tensor:
    r"""
    Weighted mean of each cluster's frames with weights rising toward the cluster's boundaries.

    w(u) = 1 + β·(2u − 1)², u = r / (n − 1) the relative position of a frame among the n frames of its cluster
    (rank r in time order), u = 0.5 for a one-frame cluster [ours: the "inverted bell" of CACMI].

    Args:
        features (`(B, L, D)`): frame features.
        assignment (`(B, L)` long): cluster id 0..c-1 of each frame, -1 for padding.
        num_clusters (`int`): c.
        beta (`float`): β; 0 gives the plain mean.

    Returns:
        `(B, c, D)`: pooled features (zeros for empty clusters), in the dtype of `features`.
    """
    if assignment.shape != features.shape[:2]:
        raise ValueError(
            f"boundary_weighted_pooling: assignment must be (B, L) = {tuple(features.shape[:2])}, got {tuple(assignment.shape)}."
        )
    dtype = torch.promote_types(features.dtype, torch.float32)
    member = (assignment[..., None] == torch.arange(num_clusters, device=assignment.device)).to(dtype)  # (B, L, c)
    count = member.sum(1, keepdim=True)  # (B, 1, c)
    rank = member.cumsum(1) - 1  # (B, L, c) rank of each member frame inside its cluster
    u = torch.where(count > 1, rank / (count - 1).clamp(min=1), torch.full_like(rank, 0.5))  # (B, L, c)
    weight = (1 + beta * (2 * u - 1).pow(2)) * member  # (B, L, c)
    total = weight.sum(1)  # (B, c)
    pooled = weight.transpose(1, 2) @ features.to(dtype)  # (B, c, D)
    return (pooled / total.clamp(min=1e-12)[..., None]).to(features.dtype)


def window_pooling(
    features: torch.Tensor, mask: torch.Tensor, num_windows: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""
    Mean of `num_windows` consecutive fixed windows per video (CM2's retrieval queries).

    As CM2's `window_size` ("window number"): a video of l valid frames is cut into windows of l // n frames,
    window i covering frames [i·(l // n), (i+1)·(l // n)); the last l mod n frames belong to no window. A video
    with fewer valid frames than windows (where CM2 would average an empty window) gets one-frame windows and
    the rest masked.

    Args:
        features (`(B, L, D)`), mask (`(B, L)` bool, valid frames first), num_windows (`int`): windows n.

    Returns:
        pooled (`(B, n, D)`, zeros where masked), window_mask (`(B, n)` bool: the window has a frame),
        spans (`(B, n, 2)` long inclusive [first, last] frame of the window, -1 where masked).
    """
    if features.dim() != 3 or mask.shape != features.shape[:2]:
        raise ValueError(
            f"window_pooling: features must be (B, L, D) and mask (B, L); got {tuple(features.shape)} and {tuple(mask.shape)}."
        )
    if num_windows < 1:
        raise ValueError(f"window_pooling: num_windows must be >= 1, got {num_windows}.")
    length = features.shape[1]
    dtype = torch.promote_types(features.dtype, torch.float32)
    frames = mask.sum(1)  # (B,)
    span_length = (frames // num_windows).clamp(min=1)  # (B,) frames per window
    frame = torch.arange(length, device=features.device)
    window_of = frame[None] // span_length[:, None]  # (B, L)
    member = (window_of[:, None, :] == torch.arange(num_windows, device=features.device)[None, :, None]) & mask[:, None]
    weight = member.to(dtype)  # (B, n, L)
    count = weight.sum(-1)  # (B, n)
    pooled = (weight @ features.to(dtype)) / count.clamp(min=1)[..., None]  # (B, n, D)
    window_mask = count > 0
    first = torch.arange(num_windows, device=features.device)[None] * span_length[:, None]  # (B, n)
    spans = torch.stack([first, first + span_length[:, None] - 1], -1)  # (B, n, 2)
    spans = torch.where(window_mask[..., None], spans, -1)
    return pooled.to(features.dtype), window_mask, spans


@dataclass
class FrameAggregationOutput(ModelOutput):
    r"""
    Output of [`CrossModalFrameAggregation`] (c = num_clusters, or num_windows).

    Args:
        text_queries (`(B, c, Dt)`): mean of the top-k retrieved caption embeddings per cluster (F_q), zeros where masked.
        text_mask (`(B, c)` bool): True for real clusters / windows.
        spans (`(B, c, 2)` long): inclusive [first, last] frame of each cluster, -1 where masked.
        retrieved_indices (`(B, c, k)` long): bank rows retrieved, best first, -1 where masked.
        retrieved_scores (`(B, c, k)` float): their cosine similarities, 0 where masked.
    """

    text_queries: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    spans: torch.Tensor | None = None
    retrieved_indices: torch.Tensor | None = None
    retrieved_scores: torch.Tensor | None = None


class CrossModalFrameAggregation(nn.Module):
    r"""
    CFA [paper]: contiguous Ward clustering into pseudo-events, boundary-weighted pooling, and cosine top-k
    retrieval of caption embeddings; or CM2's fixed windows with `retrieval_mode="windows"`. No parameters and no
    gradient. While training, the video's own captions are excluded (`config.retrieval_exclude`); "same_video"
    needs `video_ids` then and raises without them (a silent fallback would train on the video's own captions
    whenever the ids went missing).
    """

    def __init__(self, config):
        super().__init__()
        if config.text_dim != config.feature_dim:
            raise ValueError(
                f"CrossModalFrameAggregation compares frame features (feature_dim={config.feature_dim}) with memory "
                f"embeddings (memory_dim={config.text_dim}) by cosine similarity, so both must come from one joint "
                "space of one size; set memory_dim to None or to feature_dim."
            )
        self.mode = config.retrieval_mode
        self.num_clusters = config.num_clusters
        self.max_span = config.max_cluster_span
        self.beta = float(config.boundary_weight)
        self.top_k = config.retrieval_top_k
        self.num_windows = config.retrieval_num_windows
        self.exclude = config.retrieval_exclude
        # frozen features: a video's clustering never changes, so it is computed once (None: Ward at every call)
        from .cluster_cache import WardClusterCache

        self.cluster_cache = WardClusterCache() if config.cache_clusters else None

    def num_text_queries(self, num_frames: int) -> int:
        """Number of text queries c produced for videos of `num_frames` frames."""
        return self.num_clusters if self.mode == "clusters" else self.num_windows

    def forward(
        self,
        video_features: torch.Tensor,
        video_mask: torch.Tensor,
        memory_bank: MemoryBank,
        video_ids: torch.Tensor | None = None,
    ) -> FrameAggregationOutput:
        r"""
        Args:
            video_features (`(B, L, D)`): frame features F_v.
            video_mask (`(B, L)` bool): True for valid frames.
            memory_bank ([`MemoryBank`]): bank of dimension D.
            video_ids (`(B,)` long, *optional*): bank video index of each video (-1 = not in the bank), used only
                by the training-time "same_video" exclusion.

        Returns:
            [`FrameAggregationOutput`] with text_queries `(B, c, D)`, text_mask `(B, c)`, spans `(B, c, 2)`,
            retrieved_indices / retrieved_scores `(B, c, k)`.
        """
        if memory_bank.dim != video_features.shape[-1]:
            raise ValueError(
                f"CrossModalFrameAggregation: memory bank dimension {memory_bank.dim} differs from the frame feature "
                f"size {video_features.shape[-1]}; rebuild the bank with the matching CLIP text tower."
            )
        # float32 island: under autocast the pooling matmuls (and the bank's search) would run in bf16 while
        # training and in float32 at inference, and retrieve different neighbours; no gradient flows here anyway
        with torch.no_grad(), torch.autocast(video_features.device.type, enabled=False):
            features = video_features.detach().to(torch.promote_types(video_features.dtype, torch.float32))
            if self.mode == "clusters":
                cluster = self.cluster_cache if self.cluster_cache is not None else contiguous_ward_clustering
                assignment, spans, query_mask = cluster(features, video_mask, self.num_clusters, self.max_span)
                queries = boundary_weighted_pooling(features, assignment, self.num_clusters, self.beta)  # (B, c, D)
            else:
                queries, query_mask, spans = window_pooling(features, video_mask, self.num_windows)
            exclude = self.exclude if self.training else "none"
            if exclude == "same_video" and video_ids is None:
                raise ValueError(
                    "CFA: retrieval_exclude='same_video' needs video_ids (B,) while training (the memory-bank index of "
                    "each video, -1 when absent), so that a video never retrieves its own captions; none were given. "
                    "Collate with DenseCaptioningCollator(memory_video_lookup=bank), pass video_ids to the forward, "
                    "or set config.retrieval_exclude to 'top1' (CM2's rule) or 'none'."
                )
            mean, indices, scores = memory_bank.retrieve(
                queries, self.top_k, exclude_video=video_ids, exclude=exclude, query_mask=query_mask
            )
        return FrameAggregationOutput(
            text_queries=mean.to(video_features.dtype),
            text_mask=query_mask,
            spans=spans,
            retrieved_indices=indices,
            retrieved_scores=scores,
        )


__all__ = [
    "contiguous_ward_clustering",
    "boundary_weighted_pooling",
    "window_pooling",
    "FrameAggregationOutput",
    "CrossModalFrameAggregation",
]
