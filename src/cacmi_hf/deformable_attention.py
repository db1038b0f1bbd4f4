"""Pure-PyTorch 1-D multi-scale deformable attention (PDVC's temporal variant of Deformable DETR's)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import transformers.initialization as init

# Scratch budget (elements) of the chunked backward; below glibc's mmap threshold so the chunks reuse heap pages.
_BACKWARD_CHUNK_ELEMENTS = 1 << 22


class _WeightedRowSum(torch.autograd.Function):
    """out[n] = Σ_k weights[n, k] · table[index[n, k]], with a backward that never builds the (N, K, d) gather."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(table, index, weights)
        return F.embedding_bag(index, table, per_sample_weights=weights, mode="sum")  # (N, d)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        table, index, weights = ctx.saved_tensors
        grad_table = grad_weights = None
        num_bags, num_samples = index.shape
        if ctx.needs_input_grad[0]:
            # Transposed sparse product: group the (bag, sample) pairs by table row, then one fused bag-sum
            # per row over the output gradients.
            flat_index = index.reshape(-1)  # (N*K,)
            order = torch.sort(flat_index, stable=True).indices  # (N*K,) stable sort is the faster one on CPU
            bag_of_sample = torch.div(order, num_samples, rounding_mode="floor")  # (N*K,)
            counts = torch.bincount(flat_index, minlength=table.shape[0])  # (R,)
            offsets = torch.cumsum(counts, 0) - counts  # (R,) start of each row's group
            grad_table = F.embedding_bag(
                bag_of_sample,
                grad_out.contiguous(),
                offsets,
                mode="sum",
                per_sample_weights=weights.reshape(-1)[order].to(grad_out.dtype),
                include_last_offset=False,
            )  # (R, d)
        if ctx.needs_input_grad[2]:
            # d out[n] / d weights[n, k] = table[index[n, k]]: dot products taken a chunk of samples at a time.
            grad_weights = torch.empty_like(weights)
            step = max(1, _BACKWARD_CHUNK_ELEMENTS // max(1, num_bags * table.shape[1]))
            for start in range(0, num_samples, step):
                rows = F.embedding(index[:, start : start + step], table)  # (N, k, d)
                grad_weights[:, start : start + step] = (rows * grad_out[:, None, :]).sum(-1).to(weights.dtype)
        return grad_table, None, grad_weights


def level_valid_ratios(mask: torch.Tensor, level_lengths: torch.Tensor, level_start: torch.Tensor) -> torch.Tensor:
    """Fraction of valid positions per level, (B, S) bool flattened pyramid mask -> (B, Lv) float."""
    counts = F.pad(mask.long().cumsum(1), (1, 0))  # (B, S+1) prefix counts
    ends = level_start + level_lengths  # (Lv,)
    valid = counts[:, ends] - counts[:, level_start]  # (B, Lv)
    return valid.float() / level_lengths.float()


def deformable_sampling_locations(
    reference_points: torch.Tensor, offsets: torch.Tensor, level_lengths: torch.Tensor
) -> torch.Tensor:
    r"""
    Normalised sampling locations of every head, level and point.

    Args:
        reference_points (`(B, Q, Lv, 1)` or `(B, Q, Lv, 2)`): centres, or (centre, length) segments, in the
            padded coordinates of each level (already multiplied by the level's valid ratio).
        offsets (`(B, Q, H, Lv, P)`): raw offsets predicted from the query.
        level_lengths (`(Lv,)` long): padded length T_l of each level.

    Returns:
        `(B, Q, H, Lv, P)`: centre + offset / T_l for centre references (offsets in frames of the level),
        centre + offset / P · length · 0.5 for segment references (offsets in half-segments).
    """
    center = reference_points[:, :, None, :, None, 0]  # (B, Q, 1, Lv, 1)
    if reference_points.shape[-1] == 1:
        return center + offsets / level_lengths.to(offsets.dtype)[:, None]
    if reference_points.shape[-1] == 2:
        length = reference_points[:, :, None, :, None, 1]  # (B, Q, 1, Lv, 1)
        return center + offsets / offsets.shape[-1] * length * 0.5
    raise ValueError(
        f"reference_points must end in 1 (centres) or 2 (centre, length), got shape {tuple(reference_points.shape)}."
    )


def sampling_corners(
    locations: torch.Tensor,
    level_lengths: torch.Tensor,
    level_start: torch.Tensor,
    total: int,
    batch_index: torch.Tensor | None = None,
    border_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    The two interpolation neighbours of every sampling location, as rows of a `(B·H·S, d)` value table.

    Location x ∈ [0, 1] of a level of length T sits at position x·T − 0.5 (frame centres at (i + 0.5)/T, as
    `grid_sample(align_corners=False)`); neighbours outside the level get weight zero, so a sample fades to zero
    over the half frame beyond either end (the CUDA kernel of PDVC's deformable attention). With
    `border_lengths`, positions are first clamped into the row's valid frames [0, n − 1] of each level, so a
    sample beyond the video repeats its first/last valid position (`grid_sample(padding_mode="border")` on the
    unpadded video, PDVC's captioner).

    Args:
        locations (`(B, Q, H, Lv, P)`): normalised sampling locations.
        level_lengths (`(Lv,)` long), level_start (`(Lv,)` long): layout of the S positions.
        total (`int`): S.
        batch_index (`(B,)` long, *optional*): video of each row of `locations` in the table when rows are a
            subset of the videos (default: row b is video b).
        border_lengths (`(B, Lv)` long, *optional*): valid positions of each row's video on every level; turns on
            border padding.

    Returns:
        rows (`(B, Q, H, Lv, P, 2)` long) into the table of [`value_table`] and their linear weights (same shape).
    """
    batch, _, heads = locations.shape[:3]
    lengths = level_lengths.to(locations.device)
    position = locations * lengths.to(locations.dtype)[:, None] - 0.5  # (B, Q, H, Lv, P)
    if border_lengths is not None:
        top = (border_lengths - 1).clamp(min=0).to(position.dtype)[:, None, None, :, None]  # (B, 1, 1, Lv, 1)
        position = position.clamp(min=0).minimum(top)
    left = position.floor()
    right_weight = position - left  # (B, Q, H, Lv, P)
    left = left.long()
    corner = torch.stack([left, left + 1], dim=-1)  # (B, Q, H, Lv, P, 2)
    weight = torch.stack([1 - right_weight, right_weight], dim=-1)  # (B, Q, H, Lv, P, 2)
    last = (lengths - 1)[:, None, None]  # (Lv, 1, 1)
    weight = weight * ((corner >= 0) & (corner <= last))
    # videos and heads own disjoint blocks of the table, so samples never cross them
    video = torch.arange(batch, device=locations.device) if batch_index is None else batch_index
    block = (video[:, None] * heads + torch.arange(heads, device=locations.device)).view(batch, 1, heads, 1, 1, 1) * total
    rows = corner.clamp(min=0).minimum(last) + level_start.to(locations.device)[:, None, None] + block
    return rows, weight


def value_table(value: torch.Tensor) -> torch.Tensor:
    """(B, S, H, d) per-head values -> (B·H·S, d) table addressed by [`sampling_corners`]."""
    batch, total, heads, dim = value.shape
    return value.permute(0, 2, 1, 3).reshape(batch * heads * total, dim)


def weighted_row_sum(table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_k weights[n, k] · table[rows[n, k]] for (N, K) rows/weights -> (N, d), fused (no (N, K, d) tensor)."""
    return _WeightedRowSum.apply(table, rows, weights.to(table.dtype))


def deformable_sample_1d(
    value: torch.Tensor,
    level_lengths: torch.Tensor,
    level_start: torch.Tensor,
    locations: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""
    Linearly interpolated samples of a flattened multi-level sequence at normalised locations (zero padding
    outside each level, see [`sampling_corners`]).

    Args:
        value (`(B, S, H, d)`): per-head values, the levels concatenated along S.
        level_lengths (`(Lv,)` long): length T_l of each level.
        level_start (`(Lv,)` long): offset of each level in S.
        locations (`(B, Q, H, Lv, P)`): normalised sampling locations.
        weights (`(B, Q, H, Lv, P)`, *optional*): attention weights of the samples.

    Returns:
        `(B, Q, H*d)` the weighted sum of the samples when `weights` is given, else every sample
        `(B, Q, H, Lv, P, d)`.
    """
    batch, total, heads, dim = value.shape
    _, queries, _, levels, points = locations.shape
    rows, corner_weight = sampling_corners(locations, level_lengths, level_start, total)
    table = value_table(value)  # (B·H·S, d)
    if weights is not None:
        corner_weight = corner_weight * weights[..., None]
        order = (0, 2, 1, 3, 4, 5)  # one bag per (video, head, query)
        bag_rows = rows.permute(order).reshape(batch * heads * queries, levels * points * 2)
        bag_weights = corner_weight.permute(order).reshape(bag_rows.shape)
        out = weighted_row_sum(table, bag_rows, bag_weights)  # (B·H·Q, d)
        return out.view(batch, heads, queries, dim).transpose(1, 2).reshape(batch, queries, heads * dim)
    out = weighted_row_sum(table, rows.reshape(-1, 2), corner_weight.reshape(-1, 2))  # one bag per sample
    return out.view(batch, queries, heads, levels, points, dim)


def offset_bias_grid(num_heads: int, num_levels: int, num_points: int, centered: bool = False) -> torch.Tensor:
    r"""
    PDVC's initial sampling offsets, `(H, Lv, P)`: head h looks along cos(2πh/H) (scaled so the larger of
    |cos|, |sin| is 1, as the 2-D grid it comes from), point p at (p + 1) times that step; `centered`
    subtracts the mean over points (PDVC's captioner variant, samples on both sides of the reference).
    """
    thetas = torch.arange(num_heads, dtype=torch.float32) * (2.0 * math.pi / num_heads)
    direction = thetas.cos() / torch.maximum(thetas.cos().abs(), thetas.sin().abs())  # (H,)
    steps = torch.arange(1, num_points + 1, dtype=torch.float32)  # (P,)
    grid = direction[:, None, None] * steps[None, None, :]  # (H, 1, P)
    grid = grid.expand(num_heads, num_levels, num_points)
    if centered:
        grid = grid - grid.mean(-1, keepdim=True)
    return grid.contiguous()


class XavierLinear(nn.Linear):
    """Linear layer initialised Xavier-uniform with zero bias (PDVC's transformer matrices)."""

    def init_special_weights(self):
        """Xavier-uniform weight, zero bias."""
        init.xavier_uniform_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)


class ZeroLinear(nn.Linear):
    """Linear layer starting at exactly zero (uniform deformable attention weights at the start)."""

    def init_special_weights(self):
        """Zero weight and bias."""
        init.zeros_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)


class SamplingOffsetLinear(nn.Linear):
    """Offset predictor: zero weight, bias = [`offset_bias_grid`], so initial samples spread along each head's direction."""

    def __init__(self, in_features: int, num_heads: int, num_levels: int, num_points: int, centered: bool = False):
        super().__init__(in_features, num_heads * num_levels * num_points)
        self.grid_shape = (num_heads, num_levels, num_points)
        self.centered = centered

    def init_special_weights(self):
        """Zero weight, PDVC's grid as bias."""
        init.zeros_(self.weight)
        init.copy_(self.bias, offset_bias_grid(*self.grid_shape, centered=self.centered).view(-1))


class MultiScaleDeformableAttention1D(nn.Module):
    r"""
    1-D multi-scale deformable attention [PDVC]: each query attends to `num_points` interpolated samples per
    head and level around its reference, at offsets and with softmax weights predicted from the query.

    Args:
        hidden_size: width C of values and output.
        num_heads: heads H (C must be divisible by H).
        num_levels: pyramid levels Lv.
        num_points: samples P per head and level.
        query_size: width of the query when it differs from C (PDVC's captioner queries with [h; q]).
    """

    def __init__(self, hidden_size: int, num_heads: int, num_levels: int, num_points: int, query_size: int | None = None):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}).")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        query_size = query_size or hidden_size
        # PDVC's initialisation: offsets on the head-direction grid, uniform weights, Xavier projections
        self.sampling_offsets = SamplingOffsetLinear(query_size, num_heads, num_levels, num_points)
        self.attention_weights = ZeroLinear(query_size, num_heads * num_levels * num_points)
        self.value_proj = XavierLinear(hidden_size, hidden_size)
        self.output_proj = XavierLinear(hidden_size, hidden_size)

    def project_value(self, value: torch.Tensor, value_mask: torch.Tensor | None) -> torch.Tensor:
        """Per-head values with padding zeroed, (B, S, C) -> (B, S, H, C/H)."""
        projected = self.value_proj(value)  # (B, S, C)
        if value_mask is not None:
            projected = projected.masked_fill(~value_mask[..., None], 0)
        return projected.view(*value.shape[:2], self.num_heads, self.hidden_size // self.num_heads)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        value_mask: torch.Tensor | None,
        level_lengths: torch.Tensor,
        level_start: torch.Tensor,
    ) -> torch.Tensor:
        r"""
        Args:
            query (`(B, Q, query_size)`): queries (position embedding already added).
            reference_points (`(B, Q, Lv, 1)` centres or `(B, Q, Lv, 2)` (centre, length) segments): normalised
                to each level's padded length (valid ratio applied).
            value (`(B, S, C)`): the levels concatenated along S.
            value_mask (`(B, S)` bool or None): True for valid positions; padding contributes zeros.
            level_lengths (`(Lv,)` long), level_start (`(Lv,)` long): layout of S.

        Returns:
            `(B, Q, C)`.
        """
        batch, queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        per_head = self.project_value(value, value_mask)  # (B, S, H, d)
        offsets = self.sampling_offsets(query).view(batch, queries, heads, levels, points)
        weights = self.attention_weights(query).view(batch, queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, queries, heads, levels, points)
        locations = deformable_sampling_locations(reference_points, offsets, level_lengths)  # (B, Q, H, Lv, P)
        sampled = deformable_sample_1d(per_head, level_lengths, level_start, locations, weights)  # (B, Q, C)
        return self.output_proj(sampled)


__all__ = [
    "MultiScaleDeformableAttention1D",
    "SamplingOffsetLinear",
    "XavierLinear",
    "ZeroLinear",
    "sampling_corners",
    "value_table",
    "weighted_row_sum",
    "deformable_sample_1d",
    "deformable_sampling_locations",
    "level_valid_ratios",
    "offset_bias_grid",
]
