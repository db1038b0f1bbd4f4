"""Deformable transformer of CACMI [PDVC]: multi-scale base encoder, positions, deformable encoder and decoder."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import transformers.initialization as init

from .deformable_attention import MultiScaleDeformableAttention1D, XavierLinear


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x) with x clamped into [eps, 1 - eps] so references at 0 or 1 stay finite."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def pyramid_lengths(length: int | torch.Tensor, num_levels: int) -> list:
    """Length of every pyramid level: level 0 keeps `length`, each next one is a k=3, s=2, p=1 convolution of it."""
    lengths = [length]
    for _ in range(num_levels - 1):
        lengths.append((lengths[-1] - 1) // 2 + 1)
    return lengths


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """(B,) valid lengths -> (B, size) bool mask of the leading valid positions."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def sine_position(mask: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    r"""
    DETR/PDVC sine embedding of the valid-position index, `(B, T)` bool -> `(B, T, num_feats)` float32: the cumsum
    of the mask normalised to (i + 0.5)/n · 2π, channel 2j = sin(x / T^(2j/F)), 2j + 1 = cos(x / T^(2j/F)).
    """
    index = mask.float().cumsum(1)  # (B, T)
    index = (index - 0.5) / (index[:, -1:] + 1e-6) * (2 * math.pi)
    channel = torch.arange(num_feats, device=mask.device)
    freq = temperature ** (2 * torch.div(channel, 2, rounding_mode="floor").float() / num_feats)  # (F,)
    angle = index[..., None] / freq  # (B, T, F)
    return torch.where(channel % 2 == 0, angle.sin(), angle.cos())


class MaskedGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics come from the valid positions only, so padding never shifts a video's features."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x `(B, C, T)`, mask `(B, T)` bool -> `(B, C, T)` (padding positions normalised with the same statistics)."""
        batch, channels, length = x.shape
        groups = x.float().view(batch, self.num_groups, channels // self.num_groups, length)  # (B, G, C/G, T)
        weight = mask[:, None, None, :].float()  # (B, 1, 1, T)
        count = weight.sum(-1, keepdim=True).clamp(min=1) * (channels // self.num_groups)  # (B, 1, 1, 1)
        mean = (groups * weight).sum((2, 3), keepdim=True) / count  # (B, G, 1, 1)
        var = (((groups - mean) * weight) ** 2).sum((2, 3), keepdim=True) / count
        normed = ((groups - mean) * torch.rsqrt(var + self.eps)).view(batch, channels, length).to(x.dtype)
        if self.affine:
            normed = normed * self.weight[None, :, None] + self.bias[None, :, None]
        return normed


class XavierConv1d(nn.Conv1d):
    """Conv1d initialised Xavier-uniform with zero bias (PDVC's input projections)."""

    def init_special_weights(self):
        """Xavier-uniform weight, zero bias."""
        init.xavier_uniform_(self.weight)
        init.zeros_(self.bias)


class MultiScaleBaseEncoder(nn.Module):
    r"""
    Temporal feature pyramid [PDVC]: level 0 is a k=1 convolution of the frames, level 1 a k=3 stride-2
    convolution of the frames, each further level a k=3 stride-2 convolution of the previous level; each
    followed by GroupNorm (32 groups, or gcd(32, hidden) when hidden is not a multiple of 32) over valid positions.
    Padding is zeroed at every level, so a padded video gives the same valid features as the video alone.
    """

    def __init__(self, config):
        super().__init__()
        hidden, feature_dim = config.hidden_size, config.feature_dim
        groups = math.gcd(32, hidden)
        convs = [XavierConv1d(feature_dim, hidden, kernel_size=1)]
        for level in range(1, config.num_feature_levels):
            source = feature_dim if level == 1 else hidden
            convs.append(XavierConv1d(source, hidden, kernel_size=3, stride=2, padding=1))
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(MaskedGroupNorm(groups, hidden) for _ in convs)

    def forward(self, features: torch.Tensor, valid_lengths: torch.Tensor) -> tuple[list, list]:
        r"""
        Args:
            features (`(B, L, D)`): frame features, zero on padding.
            valid_lengths (`(B,)` long): valid frames of each video (a prefix).

        Returns:
            levels: list of Lv tensors `(B, T_l, C)`, zero on padding; lengths: list of Lv `(B,)` valid lengths.
        """
        frames = features.transpose(1, 2)  # (B, D, L)
        lengths = pyramid_lengths(valid_lengths, len(self.convs))
        levels = []
        source = frames
        for level, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = conv(frames if level <= 1 else source)  # (B, C, T_l)
            mask = length_mask(lengths[level], x.shape[-1])  # (B, T_l)
            x = norm(x, mask).masked_fill(~mask[:, None, :], 0)
            source = x
            levels.append(x.transpose(1, 2))  # (B, T_l, C)
        return levels, lengths


class PositionEmbedding(nn.Module):
    r"""
    Frame position [PDVC, generalised]: sine/cosine of the valid-frame index (cumsum of the mask, normalised by the
    valid length to (i + 0.5)/n · 2π) on hidden/2 channels, concatenated with a duration embedding: a
    thermometer code of the duration in whole seconds (capped at `max_duration_bins`) through a Linear to the
    other hidden/2 channels.
    """

    def __init__(self, config, temperature: float = 10000.0):
        super().__init__()
        self.num_sine = config.hidden_size // 2
        self.temperature = temperature
        self.max_duration_bins = config.max_duration_bins
        self.duration_proj = nn.Linear(config.max_duration_bins, config.hidden_size - self.num_sine)

    def duration_embedding(self, durations: torch.Tensor) -> torch.Tensor:
        """(B,) seconds -> (B, hidden - hidden/2)."""
        bins = torch.arange(self.max_duration_bins, device=durations.device)  # (nb,)
        thermometer = (bins[None, :] < durations.floor()[:, None]).to(self.duration_proj.weight.dtype)  # (B, nb)
        return self.duration_proj(thermometer)

    def sine(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) bool -> (B, T, hidden/2) float32 sine embedding of the valid-frame index."""
        return sine_position(mask, self.num_sine, self.temperature)

    def forward(self, mask: torch.Tensor, duration_embedding: torch.Tensor) -> torch.Tensor:
        """mask `(B, T)` bool, duration_embedding `(B, hidden - hidden/2)` -> `(B, T, hidden)`."""
        sine = self.sine(mask).to(duration_embedding.dtype)  # (B, T, hidden/2)
        return torch.cat([sine, duration_embedding[:, None, :].expand(-1, mask.shape[1], -1)], dim=-1)


class MultiHeadAttention(nn.Module):
    """Scaled dot-product multi-head attention with a key mask; a query with no valid key gets zeros."""

    def __init__(
        self, hidden_size: int, num_heads: int, dropout: float = 0.0, key_size: int | None = None, qkv_bias: bool = True
    ):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        key_size = key_size or hidden_size
        # Xavier-uniform projections with zero bias, as torch's nn.MultiheadAttention used by PDVC (CM2's text
        # cross-attention has no q/k/v bias: qkv_bias=False)
        self.q_proj = XavierLinear(hidden_size, hidden_size, bias=qkv_bias)
        self.k_proj = XavierLinear(key_size, hidden_size, bias=qkv_bias)
        self.v_proj = XavierLinear(key_size, hidden_size, bias=qkv_bias)
        self.out_proj = XavierLinear(hidden_size, hidden_size)

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """query `(B, Q, C)`, key/value `(B, K, Ck)`, key_mask `(B, K)` bool (True = attend) -> `(B, Q, C)`."""
        batch, queries, hidden = query.shape
        heads = self.num_heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, heads, hidden // heads).transpose(1, 2)  # (B, H, *, d)

        attn_mask = has_key = None
        if key_mask is not None:
            has_key = key_mask.any(-1)  # (B,)
            # rows without any key attend everywhere (finite) and are zeroed below
            attn_mask = (key_mask | ~has_key[:, None])[:, None, None, :]  # (B, 1, 1, K)
        out = F.scaled_dot_product_attention(
            split(self.q_proj(query)),
            split(self.k_proj(key)),
            split(self.v_proj(value)),
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, Q, d)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, queries, hidden))
        if has_key is not None:
            out = out * has_key[:, None, None].to(out.dtype)
        return out


class FeedForward(nn.Module):
    """Post-norm residual FFN block: norm(x + dropout(W2 dropout(relu(W1 x))))."""

    def __init__(self, hidden_size: int, ffn_dim: int, dropout: float):
        super().__init__()
        # Xavier-uniform, as PDVC initialises every transformer matrix
        self.linear1 = XavierLinear(hidden_size, ffn_dim)
        self.linear2 = XavierLinear(ffn_dim, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, Q, C)` -> `(B, Q, C)`."""
        return self.norm(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention over all levels, then FFN."""

    def __init__(self, config):
        super().__init__()
        hidden = config.hidden_size
        self.self_attn = MultiScaleDeformableAttention1D(
            hidden, config.num_attention_heads, config.num_feature_levels, config.num_sampling_points
        )
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(hidden)
        self.ffn = FeedForward(hidden, config.ffn_dim, config.dropout)

    def forward(self, src, pos, reference_points, mask, level_lengths, level_start) -> torch.Tensor:
        """src/pos `(B, S, C)`, reference_points `(B, S, Lv, 1)`, mask `(B, S)` -> `(B, S, C)`."""
        attended = self.self_attn(src + pos, reference_points, src, mask, level_lengths, level_start)
        return self.ffn(self.norm(src + self.dropout(attended)))


class DeformableEncoder(nn.Module):
    """Deformable encoder over the flattened pyramid, with the learned level embedding added to the positions."""

    def __init__(self, config):
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(config.num_feature_levels, config.hidden_size))
        self.layers = nn.ModuleList(DeformableEncoderLayer(config) for _ in range(config.num_encoder_layers))

    def init_special_weights(self):
        """PDVC: standard normal level embedding."""
        init.normal_(self.level_embed)

    @staticmethod
    def reference_points(level_lengths: list[int], valid_counts: torch.Tensor) -> torch.Tensor:
        r"""
        Centre of every position as a fraction of its level's valid length, mapped into every level's padded
        coordinates: `(B, S, Lv, 1)` from the padded lengths T_l and valid counts `(B, Lv)`.
        """
        device = valid_counts.device
        centers = torch.cat([torch.arange(t, device=device, dtype=torch.float32) + 0.5 for t in level_lengths])  # (S,)
        level_of = torch.cat([torch.full((t,), i, device=device) for i, t in enumerate(level_lengths)])  # (S,)
        relative = centers[None, :] / valid_counts[:, level_of].float()  # (B, S)
        ratios = valid_counts.float() / torch.tensor(level_lengths, device=device, dtype=torch.float32)  # (B, Lv)
        return (relative[:, :, None] * ratios[:, None, :])[..., None]  # (B, S, Lv, 1)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor,
        level_lengths: torch.Tensor,
        level_start: torch.Tensor,
        reference_points: torch.Tensor,
    ) -> torch.Tensor:
        r"""
        Args:
            src (`(B, S, C)`): flattened pyramid; pos (`(B, S, C)`): position + level embedding.
            mask (`(B, S)` bool): valid positions. level_lengths / level_start (`(Lv,)` long): layout of S.
            reference_points (`(B, S, Lv, 1)`): from [`DeformableEncoder.reference_points`].

        Returns:
            memory `(B, S, C)`, zero on padding.
        """
        out = src
        for layer in self.layers:
            out = layer(out, pos, reference_points, mask, level_lengths, level_start)
        return out.masked_fill(~mask[..., None], 0)


class CM2TextProjection(nn.Module):
    r"""
    CM2's `down_proj` ("deep", two layers) from the text embedding size to the hidden size: LayerNorm → dropout →
    Linear → ReLU, then LayerNorm → dropout → Linear [CM2; its dropout is 0.5].
    """

    def __init__(self, text_dim: int, hidden_size: int, dropout: float = 0.5):
        super().__init__()
        self.norm1 = nn.LayerNorm(text_dim)
        self.linear1 = nn.Linear(text_dim, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.linear2 = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """`(B, c, Dt)` -> `(B, c, C)`."""
        text = F.relu(self.linear1(self.dropout(self.norm1(text))))
        return self.linear2(self.dropout(self.norm2(text)))


class SegmentOutputLinear(nn.Linear):
    """Last segment-head layer: starts at a zero update with the length logit at `length_bias`."""

    def __init__(self, in_features: int, length_bias: float):
        super().__init__(in_features, 2)
        self.length_bias = length_bias

    def init_special_weights(self):
        """Zero weight, bias (0, length_bias)."""
        init.zeros_(self.weight)
        init.copy_(self.bias, torch.tensor([0.0, self.length_bias]))


class SegmentHead(nn.Module):
    r"""
    Segment MLP [PDVC] (hidden → hidden → hidden → 2, ReLU) predicting a (centre, length) update in logit space.
    The last layer starts at zero; `length_bias` (−2 where the reference carries no length, 0 where it does)
    starts the length logit so fresh segments cover sigmoid(−2) ≈ 12 % of the video.
    """

    def __init__(self, hidden_size: int, length_bias: float = 0.0, num_layers: int = 3):
        super().__init__()
        hidden = [nn.Linear(hidden_size, hidden_size) for _ in range(num_layers - 1)]
        self.layers = nn.ModuleList([*hidden, SegmentOutputLinear(hidden_size, length_bias)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, N, C)` -> `(B, N, 2)` logit-space update."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class DeformableDecoderLayer(nn.Module):
    r"""
    Post-norm decoder layer [PDVC + CM2]: self-attention over the event queries → deformable cross-attention to
    the memory → (optional) multi-head attention to the projected retrieved text vectors F_q → FFN.
    """

    def __init__(self, config):
        super().__init__()
        hidden, heads = config.hidden_size, config.num_attention_heads
        self.self_attn = MultiHeadAttention(hidden, heads, config.dropout)
        self.self_norm = nn.LayerNorm(hidden)
        self.cross_attn = MultiScaleDeformableAttention1D(
            hidden, heads, config.num_feature_levels, config.num_sampling_points
        )
        self.cross_norm = nn.LayerNorm(hidden)
        self.text_attn = self.text_norm = None
        if config.decoder_text_cross_attention:
            cm2 = config.text_path == "cm2"
            self.text_attn = MultiHeadAttention(hidden, heads, config.dropout, qkv_bias=not cm2)
            # CM2 normalises the text attention's residual with the deformable cross-attention's LayerNorm
            self.text_norm = None if cm2 else nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(config.dropout)
        self.ffn = FeedForward(hidden, config.ffn_dim, config.dropout)

    def forward(
        self,
        tgt: torch.Tensor,
        query_pos: torch.Tensor,
        reference_points: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        level_lengths: torch.Tensor,
        level_start: torch.Tensor,
        text_states: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""
        tgt/query_pos `(B, N, C)`, reference_points `(B, N, Lv, 1|2)`, memory `(B, S, C)`, memory_mask `(B, S)`,
        text_states `(B, c, C)` with text_mask `(B, c)` -> `(B, N, C)`.
        """
        q = tgt + query_pos
        tgt = self.self_norm(tgt + self.dropout(self.self_attn(q, q, tgt)))
        attended = self.cross_attn(tgt + query_pos, reference_points, memory, memory_mask, level_lengths, level_start)
        tgt = self.cross_norm(tgt + self.dropout(attended))
        if self.text_attn is not None and text_states is not None:
            # CM2 queries the text with the content part only
            norm = self.text_norm if self.text_norm is not None else self.cross_norm
            tgt = norm(tgt + self.dropout(self.text_attn(tgt, text_states, text_states, text_mask)))
        return self.ffn(tgt)


@dataclass
class DecoderOutput:
    """Per-layer decoder results: hidden_states `(layers, B, N, C)`, pred_segments `(layers, B, N, 2)` cw,
    init_reference `(B, N, 1)` (the learned initial centres)."""

    hidden_states: torch.Tensor
    pred_segments: torch.Tensor
    init_reference: torch.Tensor


class DeformableDecoder(nn.Module):
    r"""
    Event-query decoder with iterative segment refinement [PDVC]. Owns the learned queries (content + position),
    the initial-centre projection, the optional text projection, and one segment head per layer: layer l
    predicts sigmoid(head_l(h_l) + logit(reference_l)); with `with_segment_refine` the (detached) prediction is
    the next layer's reference (layer 0 starts from a centre only, later layers from full segments).
    """

    def __init__(self, config):
        super().__init__()
        hidden = config.hidden_size
        self.refine = config.with_segment_refine
        self.query_embed = nn.Parameter(torch.empty(config.num_queries, 2 * hidden))  # (N, [position; content])
        self.reference_proj = XavierLinear(hidden, 1)  # Xavier spreads the initial centres, as PDVC
        self.layers = nn.ModuleList(DeformableDecoderLayer(config) for _ in range(config.num_decoder_layers))
        # a layer whose reference has no length (layer 0, or every layer without refinement) starts lengths at −2
        self.segment_heads = nn.ModuleList(
            SegmentHead(hidden, length_bias=-2.0 if (i == 0 or not self.refine) else 0.0)
            for i in range(config.num_decoder_layers)
        )
        self.text_projection = None
        if config.decoder_text_cross_attention and config.text_path == "cacmi":
            # [ours] retrieved CLIP text vectors to the decoder width (text_path "cm2": the model encodes them first)
            self.text_projection = nn.Sequential(nn.Linear(config.text_dim, hidden), nn.LayerNorm(hidden))

    def init_special_weights(self):
        """Standard normal queries (distinct initial centres), as PDVC."""
        init.normal_(self.query_embed)

    def forward(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        level_lengths: torch.Tensor,
        level_start: torch.Tensor,
        valid_ratios: torch.Tensor,
        text_queries: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> DecoderOutput:
        r"""
        Args:
            memory (`(B, S, C)`), memory_mask (`(B, S)` bool): encoder output.
            level_lengths / level_start (`(Lv,)` long): pyramid layout. valid_ratios (`(B, Lv)`): valid fraction per level.
            text_queries (`(B, c, Dt)`, *optional*) and text_mask (`(B, c)`): retrieved text vectors F_q; used when
                the decoder has text cross-attention (`(B, c, C)` text states already at the hidden size when the
                decoder has no text projection, `text_path="cm2"`).

        Returns:
            [`DecoderOutput`].
        """
        batch = memory.shape[0]
        query_pos, tgt = self.query_embed.chunk(2, dim=-1)  # (N, C) each
        query_pos = query_pos[None].expand(batch, -1, -1)  # (B, N, C)
        tgt = tgt[None].expand(batch, -1, -1)
        reference = self.reference_proj(query_pos).sigmoid()  # (B, N, 1)
        init_reference = reference
        text_states = text_queries
        if self.text_projection is not None and text_queries is not None:
            text_states = self.text_projection(text_queries.to(memory.dtype))  # (B, c, C)
        hidden_states, segments = [], []
        for layer, head in zip(self.layers, self.segment_heads):
            reference_input = reference[:, :, None, :] * valid_ratios[:, None, :, None]  # (B, N, Lv, 1|2)
            tgt = layer(
                tgt, query_pos, reference_input, memory, memory_mask, level_lengths, level_start, text_states, text_mask
            )
            logits = head(tgt)  # (B, N, 2)
            base = inverse_sigmoid(reference)
            if base.shape[-1] == 1:
                base = F.pad(base, (0, 1))  # no length yet: the head predicts it outright
            segment = (logits + base).sigmoid()  # (B, N, 2) cw
            hidden_states.append(tgt)
            segments.append(segment)
            if self.refine:
                reference = segment.detach()
        return DecoderOutput(torch.stack(hidden_states), torch.stack(segments), init_reference)


__all__ = [
    "CM2TextProjection",
    "DecoderOutput",
    "DeformableDecoder",
    "DeformableDecoderLayer",
    "DeformableEncoder",
    "DeformableEncoderLayer",
    "FeedForward",
    "MaskedGroupNorm",
    "MultiHeadAttention",
    "MultiScaleBaseEncoder",
    "PositionEmbedding",
    "SegmentHead",
    "SegmentOutputLinear",
    "XavierConv1d",
    "inverse_sigmoid",
    "length_mask",
    "pyramid_lengths",
    "sine_position",
]
