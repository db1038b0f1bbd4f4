"""Text memory bank of CFA: L2-normalised caption embeddings searched by cosine top-k."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import transformers.initialization as init

EXCLUDE_MODES = ("same_video", "top1", "none")
MEMORY_FORMATS = ("normalized", "cm2_fp16")


class MemoryBank(nn.Module):
    r"""
    Caption embeddings of the training set (CLIP text tower), kept as persistent buffers so a saved model
    carries its bank.

    Buffers:
        embeddings (`(M, dim)` float): L2-normalised caption embeddings; all zeros until [`~MemoryBank.set`].
        video_index (`(M,)` long): index of the training video each caption came from, -1 when unknown;
            used by the "same_video" exclusion.

    Retrieval is chunked over M with a running top-k, so a bank of a million entries needs only
    `B·Q·chunk_size` scores at a time. The bank and its search are float32 in every mode: `model.to(torch.bfloat16)`
    leaves the embeddings float32 and retrieval runs with autocast off, so mixed-precision training retrieves
    exactly what float32 inference retrieves (bf16 scores would reorder close neighbours).
    """

    def __init__(self, num_entries: int, dim: int, memory_format: str = "normalized"):
        super().__init__()
        if num_entries < 0 or dim < 1:
            raise ValueError(f"MemoryBank needs num_entries >= 0 and dim >= 1, got num_entries={num_entries}, dim={dim}.")
        if memory_format not in MEMORY_FORMATS:
            raise ValueError(f"MemoryBank: memory_format must be one of {MEMORY_FORMATS}, got {memory_format!r}.")
        self.dim = dim
        # "normalized" [ours]: unit rows, the mean of unit hits; "cm2_fp16" [CM2]: raw float16 CLIP embeddings (held as
        # float32 values), cosine through rows normalised in float16, the mean of the raw hits rounded to float16
        self.memory_format = memory_format
        # float32 whatever torch's default dtype (from_pretrained(dtype=bf16) builds under a bf16 default)
        self.register_buffer("embeddings", torch.zeros(num_entries, dim, dtype=torch.float32), persistent=True)
        self.register_buffer("video_index", torch.full((num_entries,), -1, dtype=torch.long), persistent=True)

    def _apply(self, fn, recurse=True):
        """`Module._apply` (`.to`, `.half()`, `.cuda()`, ...), except that the embeddings keep float32: only their device moves."""
        embeddings = self.embeddings
        super()._apply(fn, recurse)
        if self.embeddings.dtype != torch.float32 and embeddings.dtype == torch.float32:
            self.embeddings = embeddings.to(device=self.embeddings.device)  # from the float32 original: no rounding
        return self

    def init_special_weights(self):
        """Give buffers missing from a checkpoint the empty-bank values (zeros, video -1) instead of garbage."""
        init.zeros_(self.embeddings)
        init.constant_(self.video_index, -1)

    @property
    def num_entries(self) -> int:
        """Number of entries M (the owning model mirrors it in `config.memory_size`)."""
        return self.embeddings.shape[0]

    def extra_repr(self) -> str:
        """Sizes shown by print(model)."""
        return f"num_entries={self.num_entries}, dim={self.dim}"

    @torch.no_grad()
    def set(self, embeddings, video_index=None) -> int:
        """
        Replace the bank; returns the new number of entries M (which may differ from the old one).

        Args:
            embeddings (`(M, dim)` tensor or array): caption embeddings, any positive norm; stored L2-normalised
                in float32 on the bank's current device ("cm2_fp16": stored as given, rounded to float16 values).
            video_index (`(M,)` integer tensor or array, *optional*): training-video index of each caption
                (>= 0), or -1 where unknown; None means all unknown.
        """
        emb = torch.as_tensor(np.asarray(embeddings) if not torch.is_tensor(embeddings) else embeddings)
        if emb.dim() != 2 or emb.shape[1] != self.dim:
            raise ValueError(
                f"MemoryBank.set: embeddings must have shape (M, {self.dim}), got {tuple(emb.shape)}; "
                f"embed the captions with the text tower whose size is {self.dim} (config.memory_dim)."
            )
        if emb.shape[0] == 0:
            raise ValueError("MemoryBank.set: embeddings is empty (M = 0); build the bank from at least one caption.")
        if not emb.is_floating_point():
            raise ValueError(f"MemoryBank.set: embeddings must be floating point, got dtype {emb.dtype}.")
        emb = emb.detach().float()
        finite = torch.isfinite(emb).all(dim=1)  # (M,)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten()[:5].tolist()
            raise ValueError(f"MemoryBank.set: embeddings has non-finite values (NaN/inf) in rows {bad}...; rebuild them.")
        norms = emb.norm(dim=1)  # (M,)
        if not bool((norms > 0).all()):
            bad = torch.nonzero(norms == 0).flatten()[:5].tolist()
            raise ValueError(f"MemoryBank.set: embeddings rows {bad}... are all zeros and cannot be normalised.")
        num = emb.shape[0]
        if video_index is None:
            vid = torch.full((num,), -1, dtype=torch.long)
        else:
            vid = torch.as_tensor(np.asarray(video_index) if not torch.is_tensor(video_index) else video_index)
            if vid.shape != (num,):
                raise ValueError(
                    f"MemoryBank.set: video_index must have shape ({num},) like the embeddings' rows, got {tuple(vid.shape)}."
                )
            if vid.is_floating_point() or vid.dtype == torch.bool:
                raise ValueError(f"MemoryBank.set: video_index must be integers (-1 = unknown), got dtype {vid.dtype}.")
            vid = vid.long()
            if num and int(vid.min()) < -1:
                raise ValueError(f"MemoryBank.set: video_index values must be >= -1, got minimum {int(vid.min())}.")
        device = self.embeddings.device if self.embeddings.device.type != "meta" else emb.device
        # Assigning to a registered buffer name replaces the buffer (shape may change).
        stored = emb.half().float() if self.memory_format == "cm2_fp16" else emb / norms[:, None]
        self.embeddings = stored.to(device)
        self.video_index = vid.to(device)
        return num

    @torch.no_grad()
    def retrieve(
        self,
        queries: torch.Tensor,
        top_k: int,
        exclude_video: torch.Tensor | None = None,
        exclude: str = "none",
        query_mask: torch.Tensor | None = None,
        chunk_size: int = 65536,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""
        Cosine top-k search of every query against the bank, and the mean of the k hits.

        Args:
            queries (`(B, Q, dim)`): query vectors (any norm; normalised here).
            top_k (`int`): entries kept per query; must not exceed the entries left after the exclusion
                (otherwise a ValueError names the video, no silent clamping).
            exclude_video (`(B,)` long, *optional*): bank video index of each query's video, -1 = not in the bank.
            exclude (`str`): "same_video" drops every entry whose `video_index` equals the query's video
                (needs `exclude_video`), "top1" drops the single best match (CM2's rule), "none" keeps all.
            query_mask (`(B, Q)` bool, *optional*): False queries get a zero mean, indices -1 and scores 0.
            chunk_size (`int`): bank rows scored at once.

        Returns:
            mean (`(B, Q, dim)`, dtype of `queries`), indices (`(B, Q, k)` long, best first),
            scores (`(B, Q, k)` float32 cosine similarities).
        """
        if exclude not in EXCLUDE_MODES:
            raise ValueError(f"MemoryBank.retrieve: exclude must be one of {EXCLUDE_MODES}, got {exclude!r}.")
        if queries.dim() != 3 or queries.shape[-1] != self.dim:
            raise ValueError(
                f"MemoryBank.retrieve: queries must have shape (B, Q, {self.dim}), got {tuple(queries.shape)}."
            )
        if top_k < 1 or chunk_size < 1:
            raise ValueError(f"MemoryBank.retrieve: top_k and chunk_size must be >= 1, got {top_k} and {chunk_size}.")
        num = self.num_entries
        if num == 0:
            raise ValueError(
                "MemoryBank.retrieve: the memory bank is empty (M = 0); load a model that has one or call "
                "`model.set_memory_bank(embeddings, video_index)` (built with `cacmi build-memory`)."
            )
        if not bool(self.embeddings[0].any()):
            raise ValueError(
                f"MemoryBank.retrieve: the memory bank ({num} entries) was never set (all zeros); call "
                "`model.set_memory_bank(embeddings, video_index)` or load a checkpoint that holds one."
            )
        batch, num_q, _ = queries.shape
        if query_mask is not None and query_mask.shape != (batch, num_q):
            raise ValueError(
                f"MemoryBank.retrieve: query_mask must have shape ({batch}, {num_q}), got {tuple(query_mask.shape)}."
            )
        if exclude == "same_video":
            if exclude_video is None:
                raise ValueError(
                    "MemoryBank.retrieve: exclude='same_video' needs exclude_video (B,) (the bank video index of each "
                    "query's video, -1 if absent); pass it or use exclude='top1' / 'none'."
                )
            if exclude_video.shape != (batch,):
                raise ValueError(
                    f"MemoryBank.retrieve: exclude_video must have shape ({batch},), got {tuple(exclude_video.shape)}."
                )
        extra = 1 if exclude == "top1" else 0
        keep = top_k + extra  # the running top-k also holds the best match "top1" drops at the end
        if keep > num:
            raise ValueError(
                f"MemoryBank.retrieve: top_k={top_k}{' (+1 for the top1 exclusion)' if extra else ''} exceeds the "
                f"{num} bank entries; lower config.retrieval_top_k or use a larger bank."
            )

        with torch.autocast(self.embeddings.device.type, enabled=False):  # float32 island (see the class docstring)
            return self._search(queries, top_k, exclude_video, exclude, query_mask, chunk_size)

    def _search(self, queries, top_k, exclude_video, exclude, query_mask, chunk_size):
        """The float32 body of `retrieve` (arguments checked there)."""
        batch, num_q, _ = queries.shape
        num = self.num_entries
        extra = 1 if exclude == "top1" else 0
        keep = top_k + extra
        device = self.embeddings.device
        flat = F.normalize(queries.reshape(batch * num_q, self.dim).to(device=device, dtype=torch.float32), dim=-1)  # (N, dim)
        best_scores = flat.new_full((batch * num_q, keep), float("-inf"))  # (N, keep)
        best_index = torch.full((batch * num_q, keep), -1, dtype=torch.long, device=device)  # (N, keep)
        if exclude == "same_video":
            excluded_video = exclude_video.to(device=device, dtype=torch.long)  # (B,)
        for start in range(0, num, chunk_size):
            chunk = self.embeddings[start : start + chunk_size].float()  # (C, dim)
            if self.memory_format == "cm2_fp16":
                # CM2 scores with torch.cosine_similarity on its float16 bank, which divides each row by its norm in float16
                half = chunk.half()
                chunk = (half / torch.linalg.vector_norm(half, dim=-1, keepdim=True).clamp_min(1e-8)).float()
            sims = flat @ chunk.T  # (N, C)
            if exclude == "same_video":
                own = (self.video_index[start : start + chunk_size][None, :] == excluded_video[:, None]) & (
                    excluded_video[:, None] >= 0
                )  # (B, C)
                sims = sims.view(batch, num_q, -1).masked_fill(own[:, None, :], float("-inf")).view(batch * num_q, -1)
            chunk_scores, chunk_index = sims.topk(min(keep, sims.shape[1]), dim=1)  # (N, <=keep)
            merged_scores = torch.cat([best_scores, chunk_scores], dim=1)  # (N, keep + <=keep)
            merged_index = torch.cat([best_index, chunk_index + start], dim=1)
            best_scores, pos = merged_scores.topk(keep, dim=1)  # (N, keep)
            best_index = merged_index.gather(1, pos)
        best_scores, best_index = best_scores[:, extra:], best_index[:, extra:]  # (N, k)

        valid = (
            torch.ones(batch * num_q, dtype=torch.bool, device=device)
            if query_mask is None
            else query_mask.reshape(-1).to(device=device, dtype=torch.bool)
        )  # (N,)
        short = torch.isneginf(best_scores).any(dim=1) & valid  # (N,) fewer than k eligible entries
        if bool(short.any()):
            row = int(torch.nonzero(short)[0])
            b = row // num_q
            eligible = int(torch.isfinite(best_scores[row]).sum())
            raise ValueError(
                f"MemoryBank.retrieve: query {row % num_q} of batch item {b} (bank video "
                f"{int(exclude_video[b]) if exclude_video is not None else -1}) has only {eligible} eligible entries after "
                f"the {exclude!r} exclusion, fewer than top_k={top_k}; lower config.retrieval_top_k or use a larger bank."
            )
        best_index = best_index.masked_fill(~valid[:, None], -1)
        best_scores = best_scores.masked_fill(~valid[:, None], 0.0)
        hits = self.embeddings[best_index.clamp(min=0)].float()  # (N, k, dim)
        mean = hits.mean(dim=1)  # (N, dim)
        if self.memory_format == "cm2_fp16":
            mean = mean.half().float()  # CM2 averages its float16 bank in float16
        mean = mean * valid[:, None]
        return (
            mean.view(batch, num_q, self.dim).to(queries.dtype),
            best_index.view(batch, num_q, top_k),
            best_scores.view(batch, num_q, top_k),
        )


__all__ = ["MemoryBank", "EXCLUDE_MODES", "MEMORY_FORMATS"]
