"""LSTM captioner with deformable soft attention over the multi-scale memory [PDVC "LSTM-DSA"]."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import transformers.initialization as init

from .deformable_attention import (
    SamplingOffsetLinear,
    XavierLinear,
    deformable_sampling_locations,
    level_valid_ratios,
    sampling_corners,
    value_table,
    weighted_row_sum,
)


class UniformEmbedding(nn.Embedding):
    """Word embedding initialised uniform(±0.1), as PDVC's captioner."""

    def init_special_weights(self):
        """uniform(−0.1, 0.1)."""
        init.uniform_(self.weight, -0.1, 0.1)


class UniformLinear(nn.Linear):
    """Vocabulary projection initialised uniform(±0.1) with zero bias, as PDVC's captioner."""

    def init_special_weights(self):
        """uniform(−0.1, 0.1) weight, zero bias."""
        init.uniform_(self.weight, -0.1, 0.1)
        init.zeros_(self.bias)


def caption_references(
    query_segments: torch.Tensor, valid_ratios: torch.Tensor, level_lengths: torch.Tensor, num_points: int
) -> torch.Tensor:
    r"""
    Per-level (centre, length) references of the captioner's sampling, in each level's padded coordinates.

    Args:
        query_segments (`(B, Q, 2)` (centre, length), `(B, Q, 1)` centres, or `(B, Q, Lv, 2)` already per level):
            normalised to the valid video.
        valid_ratios (`(B, Lv)`): valid fraction of each level. level_lengths (`(Lv,)` long): padded lengths T_l.
        num_points (`int`): samples P per level.

    Returns:
        `(B, Q, Lv, 2)` float32. A centre-only reference samples at offset / T_l (PDVC's centre mode); it is
        written as a segment of length 2P / T_l, whose half-segment offsets land on the same locations.
    """
    if query_segments.dim() == 4:
        return query_segments.float()
    ratios = valid_ratios.float()[:, None, :]  # (B, 1, Lv)
    centre = query_segments[..., :1].float() * ratios  # (B, Q, Lv)
    if query_segments.shape[-1] == 2:
        length = query_segments[..., 1:2].float() * ratios
    elif query_segments.shape[-1] == 1:
        length = (2.0 * num_points / level_lengths.float())[None, None, :].expand_as(centre)
    else:
        raise ValueError(f"query_segments must end in 1 (centres) or 2 (centre, length), got {tuple(query_segments.shape)}.")
    return torch.stack([centre, length], dim=-1)


@dataclass
class _CaptionContext:
    """Per-caption constants of the decoding loop (one row per (video, query)), computed once, not at every step."""

    video: torch.Tensor  # (A,) long: video of each row
    query_gates: torch.Tensor  # (A, 4R) LSTM gate contribution of the event query
    reference: torch.Tensor | None = None  # (A, 1, Lv, 2) segments in padded level coordinates
    query_offsets: torch.Tensor | None = None  # (A, Lv·P) offset contribution of the event query (+ bias)
    border: torch.Tensor | None = None  # (A, Lv) long valid positions per level (border padding), or None
    value_rows: torch.Tensor | None = None  # (B·S, C) projected memory, zero on padding
    key_rows: torch.Tensor | None = None  # (B·S, R) attention keys of the memory (ctx2att without bias)
    total: int = 0  # S

    def select(self, keep: torch.Tensor) -> "_CaptionContext":
        """The rows where `keep` (A,) bool is True; the memory tables are shared."""
        rows = {
            name: (getattr(self, name)[keep] if getattr(self, name) is not None else None)
            for name in ("video", "query_gates", "reference", "query_offsets", "border")
        }
        return _CaptionContext(**rows, value_rows=self.value_rows, key_rows=self.key_rows, total=self.total)


class _LSTMCaptioner(nn.Module):
    r"""
    The word loop shared by the captioners: teacher forcing in `forward`, greedy decoding in `generate`. Every
    (video, query) pair is one row of the recurrent state, so the loop runs over steps only; while generating, a
    caption that has ended leaves the rows. Subclasses give `_context` (per-caption constants) and `_step`.
    """

    def __init__(self, config):
        super().__init__()
        hidden, rnn = config.hidden_size, config.caption_hidden_size
        embedding = config.caption_embedding_size or rnn
        self.rnn_size = rnn
        self.bos_token_id = config.bos_token_id
        self.eos_token_id = config.eos_token_id
        self.pad_token_id = config.pad_token_id
        self.max_caption_len = config.max_caption_len
        self.embed = UniformEmbedding(config.vocab_size, embedding)
        # LSTM input [word; (attended;) query] split by part so the query's share is computed once per caption;
        # Xavier, as transformers initialises LSTM matrices; no bias, as PDVC's nn.LSTM(bias=False)
        self.word_gates = XavierLinear(embedding, 4 * rnn, bias=False)
        self.query_gates = XavierLinear(hidden, 4 * rnn, bias=False)
        self.hidden_gates = XavierLinear(rnn, 4 * rnn, bias=False)
        self.dropout = nn.Dropout(config.caption_dropout)
        # PDVC drops the LSTM output only; dropping the word embeddings too is our option
        self.embedding_dropout = nn.Dropout(config.caption_dropout) if config.caption_embedding_dropout else nn.Identity()
        self.logit = UniformLinear(rnn, config.vocab_size)

    def _lstm(self, words, extra_gates, state):
        """LSTM cell (gates i, f, g, o as torch's LSTM) on the word and the precomputed other inputs -> log-probs, state."""
        h, c = state
        gates = self.word_gates(self.embedding_dropout(self.embed(words))) + extra_gates + self.hidden_gates(h)  # (A, 4R)
        in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=-1)
        c = forget_gate.sigmoid() * c + in_gate.sigmoid() * cell_gate.tanh()
        h = out_gate.sigmoid() * c.tanh()
        log_probs = F.log_softmax(self.logit(self.dropout(h)), dim=-1)  # (A, V)
        return log_probs, (h, c)

    def forward(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        level_lengths: torch.Tensor,
        level_start: torch.Tensor,
        queries: torch.Tensor,
        query_segments: torch.Tensor,
        caption_ids: torch.Tensor,
        valid_ratios: torch.Tensor | None = None,
    ) -> torch.Tensor:
        r"""
        Teacher-forced log-probabilities.

        Args:
            memory (`(B, S, C)`), memory_mask (`(B, S)` bool): encoder output over the flattened pyramid.
            level_lengths / level_start (`(Lv,)` long): pyramid layout.
            queries (`(B, Q, C)`): decoder states of the events to caption.
            query_segments (`(B, Q, 2)` segments, `(B, Q, 1)` centres, or `(B, Q, Lv, 2)` per level, see
                [`caption_references`]): where to sample the memory, normalised to the valid video.
            caption_ids (`(B, Q, T)` long): `[BOS, w1, .., EOS, PAD, ..]`, fed as inputs at steps 0..T-2.
            valid_ratios (`(B, Lv)`, *optional*): valid fraction of each level; derived from the mask when None.

        Returns:
            `(B, Q, T-1, V)`: log p(caption_ids[..., t+1] | caption_ids[..., :t+1]) over the vocabulary.
        """
        batch, num_queries, length = caption_ids.shape
        ctx = self._context(memory, memory_mask, level_lengths, level_start, queries, query_segments, valid_ratios)
        zeros = memory.new_zeros(batch * num_queries, self.rnn_size)
        state = (zeros, zeros)
        words = caption_ids.reshape(batch * num_queries, length)
        steps = []
        for t in range(length - 1):
            log_probs, state = self._step(words[:, t], state, ctx, level_lengths, level_start)
            steps.append(log_probs)
        if not steps:
            return memory.new_zeros(batch, num_queries, 0, self.logit.out_features)
        return torch.stack(steps, dim=1).view(batch, num_queries, length - 1, -1)

    @torch.no_grad()
    def generate(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        level_lengths: torch.Tensor,
        level_start: torch.Tensor,
        queries: torch.Tensor,
        query_segments: torch.Tensor,
        max_len: int | None = None,
        valid_ratios: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""
        Greedy captions of every query, stopping once all of them have emitted EOS.

        Args:
            memory, memory_mask, level_lengths, level_start, queries, query_segments, valid_ratios: as in `forward`.
            max_len (`int`, *optional*): most words per caption (default `config.max_caption_len`); a caption
                still open after them gets EOS.

        Returns:
            ids (`(B, Q, T)` long): `[BOS, w1, .., EOS, PAD, ..]`, T <= max_len + 2 (the longest caption);
            log_probs (`(B, Q, T)`): log-probability of each emitted token (words and EOS), 0 at BOS and PAD.
            PAD and BOS are never emitted.
        """
        max_len = self.max_caption_len if max_len is None else max_len
        batch, num_queries, _ = queries.shape
        ctx = self._context(memory, memory_mask, level_lengths, level_start, queries, query_segments, valid_ratios)
        rows = batch * num_queries
        caption_ids = torch.full((rows, max_len + 2), self.pad_token_id, dtype=torch.long, device=memory.device)
        caption_ids[:, 0] = self.bos_token_id
        token_log_probs = memory.new_zeros(rows, max_len + 2)
        active = torch.arange(rows, device=memory.device)  # rows still writing
        words = caption_ids[:, 0]
        h = c = memory.new_zeros(rows, self.rnn_size)
        for t in range(max_len + 1):
            log_probs, (h, c) = self._step(words, (h, c), ctx, level_lengths, level_start)  # (A, V)
            if t == max_len:
                chosen = torch.full_like(words, self.eos_token_id)
            else:
                allowed = log_probs.clone()
                allowed[:, [self.pad_token_id, self.bos_token_id]] = float("-inf")
                chosen = allowed.argmax(-1)  # (A,)
            caption_ids[active, t + 1] = chosen
            token_log_probs[active, t + 1] = log_probs.gather(1, chosen[:, None])[:, 0]
            going = chosen != self.eos_token_id  # (A,)
            if not bool(going.any()):
                break
            if not bool(going.all()):
                # finished captions leave the batch: later steps cost only what is still being written
                active, ctx, h, c, chosen = active[going], ctx.select(going), h[going], c[going], chosen[going]
            words = chosen
        length = t + 2
        return (
            caption_ids[:, :length].view(batch, num_queries, length),
            token_log_probs[:, :length].view(batch, num_queries, length),
        )


class DeformableCaptioner(_LSTMCaptioner):
    r"""
    One caption per event query, word by word [PDVC "LSTM-DSA"]. At step t, from [h_{t−1}; query]:

    1. deformable sampling: `caption_num_points` interpolated samples per level of the projected encoder memory
       around the query's reference (1 head, all levels; offsets in half-segments, PDVC's centred initial grid;
       `caption_padding` "border" repeats the video's end positions beyond it, as PDVC);
    2. additive soft attention over the Lv·P samples: α = softmax(w·tanh(W_c s + W_h h_{t−1}));
    3. LSTM step (no bias, as PDVC) on [word embedding; Σ α s; query]; log-softmax over the vocabulary.

    Which reference: the model passes the one its decoder layer started from (`caption_reference`
    "decoder_input", PDVC) or the query's own predicted segment ("predicted", ours).
    """

    def __init__(self, config):
        super().__init__(config)
        hidden, rnn = config.hidden_size, config.caption_hidden_size
        attention = config.caption_attention_size or rnn
        self.num_levels = config.num_feature_levels
        self.num_points = config.caption_num_points
        self.border = config.caption_padding == "border"
        self.value_proj = XavierLinear(hidden, hidden)
        # from [h; query]; PDVC's centred grid puts the initial samples on both sides of the segment centre
        self.sampling_offsets = SamplingOffsetLinear(rnn + hidden, 1, self.num_levels, self.num_points, centered=True)
        self.context_key = nn.Linear(hidden, attention)  # PDVC's ctx2att
        self.hidden_key = nn.Linear(rnn, attention)  # h2att
        self.attention_score = nn.Linear(attention, 1)  # alpha_net
        self.context_gates = XavierLinear(hidden, 4 * rnn, bias=False)

    def _context(self, memory, memory_mask, level_lengths, level_start, queries, query_segments, valid_ratios):
        """Everything the steps share: projected memory, its attention keys, the references, the query shares."""
        batch, total, _ = memory.shape
        num_queries = queries.shape[1]
        if valid_ratios is None:
            valid_ratios = level_valid_ratios(memory_mask, level_lengths, level_start)  # (B, Lv)
        value = self.value_proj(memory).masked_fill(~memory_mask[..., None], 0)  # (B, S, C)
        # attention keys are linear in the samples, so key the memory once and interpolate the keys
        keys = F.linear(value, self.context_key.weight)  # (B, S, A)
        reference = caption_references(query_segments, valid_ratios, level_lengths, self.num_points)  # (B, Q, Lv, 2)
        flat_queries = queries.reshape(batch * num_queries, -1)  # (B·Q, C)
        query_offsets = F.linear(flat_queries, self.sampling_offsets.weight[:, self.rnn_size :], self.sampling_offsets.bias)
        border = None
        if self.border:
            valid_counts = (valid_ratios.float() * level_lengths.float()).round().long()  # (B, Lv)
            border = valid_counts.repeat_interleave(num_queries, dim=0)  # (B·Q, Lv)
        return _CaptionContext(
            video=torch.arange(batch, device=memory.device).repeat_interleave(num_queries),
            query_gates=self.query_gates(flat_queries),
            reference=reference.reshape(batch * num_queries, 1, self.num_levels, 2),
            query_offsets=query_offsets,
            border=border,
            value_rows=value_table(value[:, :, None, :]),
            key_rows=value_table(keys[:, :, None, :]),
            total=total,
        )

    def _step(self, words, state, ctx: _CaptionContext, level_lengths, level_start):
        """One LSTM-DSA step over the A rows of `ctx`: words `(A,)`, state (h, c) `(A, R)` -> log-probs `(A, V)`, state."""
        h, _ = state
        rows = words.shape[0]
        samples = self.num_levels * self.num_points
        offsets = ctx.query_offsets + F.linear(h, self.sampling_offsets.weight[:, : self.rnn_size])  # (A, Lv·P)
        offsets = offsets.view(rows, 1, 1, self.num_levels, self.num_points)
        locations = deformable_sampling_locations(ctx.reference, offsets, level_lengths)  # (A, 1, 1, Lv, P)
        corners, corner_weight = sampling_corners(
            locations, level_lengths, level_start, ctx.total, ctx.video, border_lengths=ctx.border
        )
        corners = corners.reshape(rows, samples, 2)  # (A, K, 2) table rows of the two neighbours
        corner_weight = corner_weight.reshape(rows, samples, 2)
        keys = weighted_row_sum(ctx.key_rows, corners.reshape(-1, 2), corner_weight.reshape(-1, 2))  # (A·K, A')
        keys = keys.view(rows, samples, -1) + self.context_key.bias
        scores = self.attention_score(torch.tanh(keys + self.hidden_key(h)[:, None, :]))[..., 0]  # (A, K)
        alpha = scores.softmax(-1)  # (A, K)
        # Σ_k α_k · sample_k as one fused sum over all interpolation corners
        attended = weighted_row_sum(
            ctx.value_rows, corners.reshape(rows, samples * 2), (corner_weight * alpha[..., None]).reshape(rows, samples * 2)
        )  # (A, C)
        return self._lstm(words, self.context_gates(attended) + ctx.query_gates, state)


class LightCaptioner(_LSTMCaptioner):
    r"""
    PDVC's "light" captioner: an LSTM (no bias) on [word embedding; query] per step, no attention over the
    memory; log-softmax over the vocabulary. Same teacher forcing and greedy decoding as [`DeformableCaptioner`].
    """

    def _context(self, memory, memory_mask, level_lengths, level_start, queries, query_segments, valid_ratios):
        """The query's share of the LSTM gates, once per caption."""
        batch, num_queries, _ = queries.shape
        return _CaptionContext(
            video=torch.arange(batch, device=queries.device).repeat_interleave(num_queries),
            query_gates=self.query_gates(queries.reshape(batch * num_queries, -1)),
        )

    def _step(self, words, state, ctx: _CaptionContext, level_lengths, level_start):
        """One LSTM step over the A rows of `ctx`: words `(A,)`, state (h, c) `(A, R)` -> log-probs `(A, V)`, state."""
        return self._lstm(words, ctx.query_gates, state)


def build_captioner(config) -> _LSTMCaptioner:
    """The captioner `config.caption_decoder` names ("deformable" or "light")."""
    return LightCaptioner(config) if config.caption_decoder == "light" else DeformableCaptioner(config)


__all__ = ["DeformableCaptioner", "LightCaptioner", "UniformEmbedding", "UniformLinear", "build_captioner", "caption_references"]
