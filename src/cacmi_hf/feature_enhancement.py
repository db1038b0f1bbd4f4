"""CFE (context-aware feature enhancement): enrich frame features with the retrieved text queries."""

from __future__ import annotations

import torch
from torch import nn

import transformers.initialization as init


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over `dim` restricted to `mask`; a slice with nothing valid gives all zeros, not NaN."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores.softmax(dim) * mask


class ContextAwareFeatureEnhancement(nn.Module):
    r"""
    CFE [paper, equations ours]: query-guided dual attention between frames F_v and retrieved text F_q,
    a global text vector, and a residual temporal convolution.

        S = (W_v F_v)(W_q F_q)ᵀ / √D                      (L × c)
        S_r = softmax over clusters, S_c = softmax over frames (both masked)
        A = S_r F_q,   B = S_r S_cᵀ F_v
        X = Linear([F_v; A; F_v⊙A; F_v⊙B])                (4D → D)
        g = Σ_c softmax_c(F_q · p / √D) F_q                (learned pooling query p)
        F_enh = F_v + Conv1d_k3([X; g])                   (2D → D)

    F_q is projected from `config.text_dim` to D when the sizes differ. Padded frames are zeroed before the
    convolution so they never leak into valid frames, and keep their input values in the output.
    [ours] The convolution starts at zero (see `init_special_weights`), so CFE is the identity at the start
    of training.
    """

    def __init__(self, config):
        super().__init__()
        dim, text_dim = config.feature_dim, config.text_dim
        self.scale = dim**-0.5
        self.init_std = config.init_std
        self.text_proj = nn.Linear(text_dim, dim) if text_dim != dim else nn.Identity()
        self.video_key = nn.Linear(dim, dim)  # W_v
        self.text_key = nn.Linear(dim, dim)  # W_q
        self.fuse = nn.Linear(4 * dim, dim)
        self.pool_query = nn.Parameter(torch.zeros(dim))
        self.conv = nn.Conv1d(2 * dim, dim, kernel_size=3, padding=1)

    def init_special_weights(self):
        """
        Zero the pooling query (g starts as the plain mean of the valid text queries) and the output convolution,
        so F_enh = F_v at the start: the CLIP frame features reach the encoder unchanged while the fusion learns.
        The convolution's weights get gradient from the first step (their input X is non-zero); the layers before
        it receive gradient once the convolution has moved away from zero.
        """
        init.zeros_(self.pool_query)
        init.zeros_(self.conv.weight)
        init.zeros_(self.conv.bias)

    def forward(
        self,
        video_features: torch.Tensor,
        video_mask: torch.Tensor,
        text_queries: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        r"""
        Args:
            video_features (`(B, L, D)`): frame features F_v.
            video_mask (`(B, L)` bool): True for valid frames.
            text_queries (`(B, c, Dt)`): retrieved text vectors F_q (CFA output).
            text_mask (`(B, c)` bool): True for real clusters; a video with none gets A = B = g = 0.

        Returns:
            `(B, L, D)`: enhanced features F_enh (padded frames equal their input).
        """
        vmask = video_mask.to(torch.bool)
        tmask = text_mask.to(torch.bool)
        fv = video_features.masked_fill(~vmask[..., None], 0)  # (B, L, D)
        fq = self.text_proj(text_queries).masked_fill(~tmask[..., None], 0)  # (B, c, D)
        sim = self.video_key(fv) @ self.text_key(fq).transpose(1, 2) * self.scale  # (B, L, c)
        s_r = _masked_softmax(sim, tmask[:, None, :], dim=2)  # (B, L, c) over clusters
        s_c = _masked_softmax(sim, vmask[:, :, None], dim=1)  # (B, L, c) over frames
        attended_text = s_r @ fq  # A: (B, L, D)
        attended_video = s_r @ (s_c.transpose(1, 2) @ fv)  # B: (B, c, D) -> (B, L, D)
        fused = self.fuse(torch.cat([fv, attended_text, fv * attended_text, fv * attended_video], dim=-1))  # (B, L, D)
        pool = _masked_softmax(fq @ self.pool_query * self.scale, tmask, dim=1)  # (B, c)
        global_text = (pool[..., None] * fq).sum(1)  # g: (B, D)
        stacked = torch.cat([fused, global_text[:, None, :].expand_as(fused)], dim=-1)  # (B, L, 2D)
        stacked = stacked.masked_fill(~vmask[..., None], 0)
        delta = self.conv(stacked.transpose(1, 2)).transpose(1, 2)  # (B, L, D)
        return video_features + delta.masked_fill(~vmask[..., None], 0)


__all__ = ["ContextAwareFeatureEnhancement"]
