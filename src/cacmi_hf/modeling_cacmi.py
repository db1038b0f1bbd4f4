"""CACMI dense video captioning models: CFA + CFE + deformable transformer, heads, LSTM-DSA captioner."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import transformers.initialization as init
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .captioner import build_captioner, caption_references
from .configuration_cacmi import CACMIConfig
from .criterion import CACMICriterion, caption_loss, layer_suffix
from .deformable_transformer import (
    CM2TextProjection,
    DeformableDecoder,
    DeformableEncoder,
    MultiScaleBaseEncoder,
    PositionEmbedding,
    length_mask,
    sine_position,
)
from .feature_enhancement import ContextAwareFeatureEnhancement
from .frame_aggregation import CrossModalFrameAggregation
from .matcher import MatchIndices
from .memory_bank import MemoryBank
from .vision_tower import CACMIVisionTower, from_clip


@dataclass
class CACMIModelOutput(ModelOutput):
    r"""
    Output of [`CACMIModel`] (B videos, N event queries, C hidden size, S flattened pyramid positions,
    Lv levels, c text queries, k retrieved entries per text query).

    Args:
        last_hidden_state (`(B, N, C)`): event-query states after the last decoder layer.
        decoder_hidden_states (`(layers, B, N, C)`): event-query states after every decoder layer.
        pred_segments (`(layers, B, N, 2)`): (centre, length) segment of every query after every layer, normalised
            to the valid video (the segment head is part of the decoder's iterative refinement).
        init_reference (`(B, N, 1)`): the learned initial centre of every query.
        memory (`(B, S, C)`): encoder output over the flattened pyramid, zero on padding.
        memory_mask (`(B, S)` bool): valid pyramid positions.
        level_lengths (`(Lv,)` long), level_start (`(Lv,)` long): length and offset of each level in S.
        valid_ratios (`(B, Lv)`): valid fraction of each level.
        enhanced_features (`(B, L, D)`): the frame features entering the base encoder (after CFE when on), zero on padding.
        text_queries (`(B, c, Dt)`, *optional*): retrieved text vectors F_q (CFA on).
        text_mask (`(B, c)` bool, *optional*): real text queries.
        text_spans (`(B, c, 2)` long, *optional*): inclusive frame span of each cluster / window.
        retrieved_indices (`(B, c, k)` long, *optional*), retrieved_scores (`(B, c, k)`, *optional*): memory hits.
    """

    last_hidden_state: torch.Tensor | None = None
    decoder_hidden_states: torch.Tensor | None = None
    pred_segments: torch.Tensor | None = None
    init_reference: torch.Tensor | None = None
    memory: torch.Tensor | None = None
    memory_mask: torch.Tensor | None = None
    level_lengths: torch.Tensor | None = None
    level_start: torch.Tensor | None = None
    valid_ratios: torch.Tensor | None = None
    enhanced_features: torch.Tensor | None = None
    text_queries: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    text_spans: torch.Tensor | None = None
    retrieved_indices: torch.Tensor | None = None
    retrieved_scores: torch.Tensor | None = None


@dataclass
class CACMIDenseCaptioningOutput(ModelOutput):
    r"""
    Output of [`CACMIForDenseCaptioning`] (B videos, N queries, K = max_event_count, T caption length).

    Args:
        loss (`()`, *optional*): Σ weight_dict[key] · loss_dict[key], when `event_segments` is given.
        loss_dict (`dict[str, ()]`, *optional*): unweighted losses: `loss_ce`, `loss_giou`, `loss_l1`,
            `loss_counter`, `loss_caption` of the last layer and `..._{i}` of auxiliary layer i.
        logits (`(B, N)`): event confidence logits of the last layer (score = sigmoid).
        pred_segments (`(B, N, 2)`): (centre, length) normalised segments of the last layer.
        pred_counts (`(B, K+1)`): event-count logits (counts 0..K) of the last layer.
        caption_ids (`(B, N, T)` long, *optional*, generate only): greedy captions `[BOS, .., EOS, PAD, ..]`.
        caption_log_probs (`(B, N, T)`, *optional*, generate only): log-probability of each emitted token, 0 at
            BOS and PAD.
        aux_outputs (`list[dict]`, *optional*): `logits`, `pred_segments`, `pred_counts` of each earlier layer.
        last_hidden_state (`(B, N, C)`): last decoder layer states.
        text_mask (`(B, c)` bool, *optional*): real retrieved text queries (CFA on).
        text_spans (`(B, c, 2)` long, *optional*): inclusive frame span of each pseudo-event (cluster / window).
        retrieved_indices (`(B, c, k)` long, *optional*): memory-bank rows retrieved per text query.
        retrieved_scores (`(B, c, k)`, *optional*): their similarity to the pseudo-event's frames.
    """

    loss: torch.Tensor | None = None
    loss_dict: dict | None = None
    logits: torch.Tensor | None = None
    pred_segments: torch.Tensor | None = None
    pred_counts: torch.Tensor | None = None
    caption_ids: torch.Tensor | None = None
    caption_log_probs: torch.Tensor | None = None
    aux_outputs: list | None = None
    last_hidden_state: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    text_spans: torch.Tensor | None = None
    retrieved_indices: torch.Tensor | None = None
    retrieved_scores: torch.Tensor | None = None


class CACMIPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading glue shared by the CACMI models."""

    config_class = CACMIConfig
    base_model_prefix = "cacmi"
    main_input_name = "video_features"
    accepts_loss_kwargs = False

    def get_input_embeddings(self):
        """None: frame features, not token ids, enter the model (Accelerate's FSDP2 wrapping asks for this)."""
        return None

    def _init_weights(self, module: nn.Module):
        """transformers' default initialisation, then the module's own `init_special_weights()` when it has one."""
        super()._init_weights(module)
        special = getattr(module, "init_special_weights", None)
        if callable(special):
            special()


def _check_switches(config: CACMIConfig):
    """CFE and the decoder's text cross-attention consume CFA's retrieved text: refuse them without it."""
    if config.use_cfa:
        return
    needs = [name for name in ("use_cfe", "decoder_text_cross_attention") if getattr(config, name)]
    if needs:
        raise ValueError(
            f"CACMIConfig has use_cfa=False but {' and '.join(f'{n}=True' for n in needs)}: these read the text that "
            "CFA retrieves, so there is nothing to feed them. Set them to False too (all three off is PDVC) or set "
            "use_cfa=True."
        )


def pdvc_resize_index(valid_lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    r"""
    PDVC's feature resize (`resizeFeature`: scipy `interp1d(kind="nearest")` at x_i = i·(n−1)/(L−1)) as frame
    indices, `(B,)` valid lengths n -> `(B, L)` long. A half-way x goes to the lower frame, as scipy's "nearest";
    x is computed in float64 in the reference's order, so the index is ⌈x − ½⌉ exactly.
    """
    n = valid_lengths.to(torch.float64)[:, None]  # (B, 1)
    i = torch.arange(num_frames, device=valid_lengths.device, dtype=torch.float64)[None, :]  # (1, L)
    x = i * (n - 1) / max(num_frames - 1, 1)  # (B, L)
    index = torch.ceil(x - 0.5).clamp(min=0)
    return torch.minimum(index, n - 1).long()


def pdvc_resize(features: torch.Tensor, video_mask: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every video's valid frames resampled to `num_frames` [`pdvc_resize_index`]: `(B, L', D)` -> `(B, L, D)`, all-valid mask."""
    index = pdvc_resize_index(video_mask.sum(1), num_frames)  # (B, L)
    resized = features.gather(1, index[..., None].expand(-1, -1, features.shape[-1]))
    return resized, torch.ones(index.shape, dtype=torch.bool, device=features.device)


def _validate_video_inputs(config, video_features, video_mask, durations, video_ids):
    """Check shapes and values of the video inputs; returns the bool mask (B, L)."""
    if not torch.is_tensor(video_features) or video_features.dim() != 3:
        shape = tuple(video_features.shape) if torch.is_tensor(video_features) else type(video_features).__name__
        raise ValueError(f"video_features must be a (batch, frames, feature_dim) tensor, got {shape}.")
    batch, frames, dim = video_features.shape
    if dim != config.feature_dim:
        raise ValueError(
            f"video_features has feature size {dim} but the model expects config.feature_dim={config.feature_dim}; "
            "extract the features with the backbone the model was trained on."
        )
    if batch == 0 or frames == 0:
        raise ValueError(f"video_features is empty: shape {tuple(video_features.shape)}.")
    if video_mask is None:
        video_mask = torch.ones(batch, frames, dtype=torch.bool, device=video_features.device)
    if tuple(video_mask.shape) != (batch, frames):
        raise ValueError(f"video_mask must have shape {(batch, frames)} like video_features, got {tuple(video_mask.shape)}.")
    video_mask = video_mask.to(device=video_features.device, dtype=torch.bool)
    lengths = video_mask.sum(1)  # (B,)
    empty = torch.nonzero(lengths == 0).flatten()
    if empty.numel():
        raise ValueError(
            f"video {int(empty[0])} of the batch has no valid frame (video_mask all False); drop it from the batch."
        )
    not_prefix = torch.nonzero((video_mask != length_mask(lengths, frames)).any(1)).flatten()
    if not_prefix.numel():
        raise ValueError(
            f"video_mask of video {int(not_prefix[0])} is not a prefix of valid frames; pad videos at the end "
            "(True for the first n frames, False after)."
        )
    finite = torch.isfinite(video_features).all(-1) | ~video_mask  # (B, L)
    bad = torch.nonzero(~finite)
    if bad.numel():
        b, t = (int(v) for v in bad[0])
        raise ValueError(f"video_features of video {b} has NaN/inf at frame {t}; fix the feature file.")
    if durations is None:
        raise ValueError("durations (B,) in seconds is required: it feeds the duration embedding.")
    durations = torch.as_tensor(durations, device=video_features.device)
    if tuple(durations.shape) != (batch,):
        raise ValueError(f"durations must have shape ({batch},), one per video, got {tuple(durations.shape)}.")
    bad = torch.nonzero(~(torch.isfinite(durations) & (durations > 0))).flatten()
    if bad.numel():
        raise ValueError(f"durations[{int(bad[0])}] = {float(durations[bad[0]])}: durations must be finite seconds > 0.")
    if video_ids is not None and tuple(video_ids.shape) != (batch,):
        raise ValueError(f"video_ids must have shape ({batch},) (memory-bank video index, -1 if absent), got {tuple(video_ids.shape)}.")
    return video_mask, durations.float()


class CACMIModel(CACMIPreTrainedModel):
    r"""
    CACMI without task heads: CFA retrieval → CFE enhancement → multi-scale base encoder → deformable encoder →
    event-query decoder with iterative segment refinement (and text cross-attention to F_q).

    Switches (config): `use_cfa`, `use_cfe`, `decoder_text_cross_attention`, `retrieval_mode`. CFE and the text
    cross-attention need CFA's retrieved text, so turning either on with `use_cfa=False` is a ValueError (all three
    off is PDVC).
    """

    def __init__(self, config: CACMIConfig):
        super().__init__(config)
        _check_switches(config)
        self.memory_bank = self.frame_aggregation = self.feature_enhancement = None
        if config.use_cfa:
            self.memory_bank = MemoryBank(config.memory_size, config.text_dim, config.memory_format)
            self.frame_aggregation = CrossModalFrameAggregation(config)
        if config.use_cfe:
            self.feature_enhancement = ContextAwareFeatureEnhancement(config)
        self.base_encoder = MultiScaleBaseEncoder(config)
        self.position_embedding = PositionEmbedding(config)
        self.encoder = DeformableEncoder(config)
        self.decoder = DeformableDecoder(config)
        self.text_projection = None
        if config.decoder_text_cross_attention and config.text_path == "cm2":
            self.text_projection = CM2TextProjection(config.text_dim, config.hidden_size)
        self.post_init()

    def encode_text(self, text_queries: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        r"""
        CM2's text path: project the retrieved vectors, add a sine position over the slots, and pass them through
        the video's deformable encoder (same weights) as Lv copies, one per level (each with its level embedding);
        the first level's output is the text the decoder attends to.

        Args:
            text_queries (`(B, c, Dt)`), text_mask (`(B, c)` bool): retrieved text vectors F_q and the real slots.

        Returns:
            `(B, c, C)` text states, zero on masked slots.
        """
        text = self.text_projection(text_queries.to(self.dtype))  # (B, c, C)
        batch, slots, hidden = text.shape
        levels = self.config.num_feature_levels
        pos = sine_position(text_mask, hidden).to(text.dtype)  # (B, c, C)
        src = text.repeat(1, levels, 1)  # (B, Lv·c, C)
        pos = torch.cat([pos + self.encoder.level_embed[level] for level in range(levels)], dim=1)
        mask = text_mask.repeat(1, levels)  # (B, Lv·c)
        level_lengths = torch.full((levels,), slots, dtype=torch.long, device=text.device)
        level_start = torch.arange(levels, device=text.device) * slots
        valid_counts = text_mask.sum(1, keepdim=True).expand(-1, levels)  # (B, Lv)
        reference = DeformableEncoder.reference_points([slots] * levels, valid_counts)  # (B, Lv·c, Lv, 1)
        return self.encoder(src, pos, mask, level_lengths, level_start, reference)[:, :slots]

    def forward(
        self,
        video_features: torch.Tensor,
        video_mask: torch.Tensor | None = None,
        durations: torch.Tensor | None = None,
        video_ids: torch.Tensor | None = None,
    ) -> CACMIModelOutput:
        r"""
        Args:
            video_features (`(B, L, D)` float): frame features (D = config.feature_dim).
            video_mask (`(B, L)` bool, *optional*): True for the valid frames, a prefix of each row (default all).
            durations (`(B,)` float): video durations in seconds.
            video_ids (`(B,)` long, *optional*): memory-bank video index of each video (-1 = not in the bank), for the
                training-time retrieval exclusion.

        Returns:
            [`CACMIModelOutput`].
        """
        video_mask, durations = _validate_video_inputs(self.config, video_features, video_mask, durations, video_ids)
        if self.config.feature_resize == "pdvc":
            video_features, video_mask = pdvc_resize(video_features, video_mask, self.config.num_frames)
        features = torch.where(video_mask[..., None], video_features.to(self.dtype), 0)  # (B, L, D)
        retrieval = None
        if self.frame_aggregation is not None:
            retrieval = self.frame_aggregation(features, video_mask, self.memory_bank, video_ids)
            if self.feature_enhancement is not None:
                features = self.feature_enhancement(features, video_mask, retrieval.text_queries, retrieval.text_mask)
                features = features.masked_fill(~video_mask[..., None], 0)

        levels, valid_lengths = self.base_encoder(features, video_mask.sum(1))  # Lv × (B, T_l, C), Lv × (B,)
        sizes = [level.shape[1] for level in levels]
        level_masks = [length_mask(n, t) for n, t in zip(valid_lengths, sizes)]
        duration = self.position_embedding.duration_embedding(durations.to(self.dtype))  # (B, C/2)
        pos = torch.cat(
            [self.position_embedding(m, duration) + self.encoder.level_embed[i] for i, m in enumerate(level_masks)], 1
        )  # (B, S, C)
        src = torch.cat(levels, 1)  # (B, S, C)
        memory_mask = torch.cat(level_masks, 1)  # (B, S)
        level_lengths = torch.tensor(sizes, dtype=torch.long, device=src.device)  # (Lv,)
        level_start = F.pad(level_lengths.cumsum(0)[:-1], (1, 0))  # (Lv,)
        valid_counts = torch.stack(valid_lengths, 1)  # (B, Lv)
        # sampling positions stay float32 whatever the model dtype: bf16 would misplace them by fractions of a frame
        valid_ratios = valid_counts.float() / level_lengths.float()  # (B, Lv)
        reference = DeformableEncoder.reference_points(sizes, valid_counts)  # (B, S, Lv, 1) float32
        memory = self.encoder(src, pos, memory_mask, level_lengths, level_start, reference)  # (B, S, C)

        text_states = retrieval.text_queries if retrieval is not None else None
        if self.text_projection is not None and retrieval is not None:
            text_states = self.encode_text(retrieval.text_queries, retrieval.text_mask)  # (B, c, C)
        decoded = self.decoder(
            memory,
            memory_mask,
            level_lengths,
            level_start,
            valid_ratios,
            text_states,
            retrieval.text_mask if retrieval is not None else None,
        )
        return CACMIModelOutput(
            last_hidden_state=decoded.hidden_states[-1],
            decoder_hidden_states=decoded.hidden_states,
            pred_segments=decoded.pred_segments,
            init_reference=decoded.init_reference,
            memory=memory,
            memory_mask=memory_mask,
            level_lengths=level_lengths,
            level_start=level_start,
            valid_ratios=valid_ratios,
            enhanced_features=features,
            text_queries=retrieval.text_queries if retrieval is not None else None,
            text_mask=retrieval.text_mask if retrieval is not None else None,
            text_spans=retrieval.spans if retrieval is not None else None,
            retrieved_indices=retrieval.retrieved_indices if retrieval is not None else None,
            retrieved_scores=retrieval.retrieved_scores if retrieval is not None else None,
        )


class ConfidenceHead(nn.Linear):
    """Event confidence logit per query, bias at the focal-loss prior 0.01 [PDVC]."""

    prior: float = 0.01

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size, 1)

    def init_special_weights(self):
        """Bias = −log((1 − prior) / prior), so every query starts as "no event" with probability 0.99."""
        init.constant_(self.bias, -math.log((1 - self.prior) / self.prior))


class CACMIForDenseCaptioning(CACMIPreTrainedModel):
    r"""
    CACMI dense video captioner: [`CACMIModel`] + per-layer confidence and event-counter heads (the segment heads
    live in the decoder) + one shared captioner ([`DeformableCaptioner`], or [`LightCaptioner`]) + the PDVC set
    criterion.

    Training (`event_segments` given): Hungarian matching per decoder layer, focal/GIoU/L1/counter losses, and the
    caption NLL of the matched (query, event) pairs of every layer (`config.aux_loss`) or of the last one, each
    captioned around [`~CACMIForDenseCaptioning.caption_reference`] (by default the reference its layer started
    from, as PDVC). Videos with more than K = `max_event_count`
    events keep all of them in matching and the caption loss; only the counter's target is clamped to K [PDVC].
    """

    def __init__(self, config: CACMIConfig):
        super().__init__(config)
        self.cacmi = CACMIModel(config)
        hidden, layers = config.hidden_size, config.num_decoder_layers
        self.confidence_heads = nn.ModuleList(ConfidenceHead(hidden) for _ in range(layers))
        self.counter_heads = nn.ModuleList(nn.Linear(hidden, config.max_event_count + 1) for _ in range(layers))
        self.captioner = build_captioner(config)
        self.criterion = CACMICriterion(config)
        # frozen CLIP image tower, so one checkpoint takes raw frames (`pixel_values_videos`); off by default
        self.vision_tower = CACMIVisionTower(config) if config.vision_config else None
        self.post_init()

    @classmethod
    def from_clip(cls, clip_model="ViT-L-14", pretrained=None, config=None, **kwargs) -> "CACMIForDenseCaptioning":
        """A model with an open_clip image tower (`config.vision_config`), CLIP weights copied in when `pretrained` is a local file/folder."""
        return from_clip(cls, clip_model, pretrained, config=config, **kwargs)

    def _features(self, video_features, pixel_values_videos, video_mask):
        """`video_features (B, L, D)` as given, or embedded from `pixel_values_videos (B, L, 3, S, S)` by the tower."""
        if (video_features is None) == (pixel_values_videos is None):
            raise ValueError("Pass exactly one of video_features (B, L, D) and pixel_values_videos (B, L, 3, S, S).")
        if pixel_values_videos is None:
            return video_features
        if self.vision_tower is None:
            raise ValueError(
                "pixel_values_videos needs a model with a vision tower (config.vision_config); build one with "
                "CACMIForDenseCaptioning.from_clip(...) or pass CLIP video_features."
            )
        return self.vision_tower(pixel_values_videos, video_mask)  # (B, L, D)

    @property
    def memory_bank(self) -> MemoryBank | None:
        """The text memory bank of CFA (None when `use_cfa` is off)."""
        return self.cacmi.memory_bank

    def set_memory_bank(self, embeddings, video_index=None) -> int:
        """Replace the CFA memory bank (M, text_dim) and its video index (M,); updates `config.memory_size`."""
        if self.cacmi.memory_bank is None:
            raise ValueError("This model has use_cfa=False: it has no memory bank to set.")
        size = self.cacmi.memory_bank.set(embeddings, video_index)
        self.config.memory_size = size
        return size

    def caption_reference(self, model_out: CACMIModelOutput, layer: int) -> torch.Tensor:
        r"""
        Where the captioner samples for the queries of decoder layer `layer` (`config.caption_reference`):
        "decoder_input" [PDVC] the reference that layer started from: the learned centres `(B, N, 1)` for layer 0
        (every layer without refinement), the previous layer's segments `(B, N, 2)` after it; "predicted" [ours]
        the layer's own segments `(B, N, 2)`. Detached: the caption loss does not move the segments.
        """
        if self.config.caption_reference == "predicted":
            return model_out.pred_segments[layer].detach()
        if layer == 0 or not self.config.with_segment_refine:
            return model_out.init_reference.detach()
        return model_out.pred_segments[layer - 1].detach()

    def _heads(self, model_out: CACMIModelOutput) -> list[dict]:
        """Confidence, segments and counts of every decoder layer."""
        outputs = []
        for layer, (confidence, counter) in enumerate(zip(self.confidence_heads, self.counter_heads)):
            states = model_out.decoder_hidden_states[layer]  # (B, N, C)
            outputs.append(
                {
                    "logits": confidence(states)[..., 0],  # (B, N)
                    "pred_segments": model_out.pred_segments[layer],  # (B, N, 2)
                    "pred_counts": counter(states.max(dim=1).values),  # (B, K+1)
                }
            )
        return outputs

    def _validate_labels(self, event_segments, event_mask, caption_ids, batch):
        """Check the padded labels; returns (segments, mask, caption_ids) with at most K events per video."""
        if event_segments.dim() != 3 or event_segments.shape[0] != batch or event_segments.shape[-1] != 2:
            raise ValueError(f"event_segments must have shape ({batch}, E, 2) (start, end), got {tuple(event_segments.shape)}.")
        num_events = event_segments.shape[1]
        if event_mask is None:
            event_mask = torch.ones(batch, num_events, dtype=torch.bool, device=event_segments.device)
        if tuple(event_mask.shape) != (batch, num_events):
            raise ValueError(f"event_mask must have shape {(batch, num_events)}, got {tuple(event_mask.shape)}.")
        event_mask = event_mask.bool()
        start, end = event_segments[..., 0], event_segments[..., 1]
        bad = event_mask & ~(torch.isfinite(start) & torch.isfinite(end) & (start >= 0) & (end <= 1) & (start <= end))
        where = torch.nonzero(bad)
        if where.numel():
            b, e = (int(v) for v in where[0])
            raise ValueError(
                f"event_segments[{b}, {e}] = {event_segments[b, e].tolist()}: segments must be normalised "
                "(start, end) with 0 <= start <= end <= 1 (divide the times by the duration)."
            )
        if caption_ids is not None:
            if caption_ids.dim() != 3 or tuple(caption_ids.shape[:2]) != (batch, num_events):
                raise ValueError(
                    f"caption_ids must have shape ({batch}, {num_events}, T) like event_segments, got {tuple(caption_ids.shape)}."
                )
            out_of_range = (caption_ids < 0) | (caption_ids >= self.config.vocab_size)
            if bool(out_of_range.any()):
                b, e, t = (int(v) for v in torch.nonzero(out_of_range)[0])
                raise ValueError(
                    f"caption_ids[{b}, {e}, {t}] = {int(caption_ids[b, e, t])} is outside the vocabulary "
                    f"[0, {self.config.vocab_size}); set config.vocab_size from the caption tokenizer."
                )
        return event_segments, event_mask, caption_ids

    def _caption_losses(self, model_out, layer_outputs, indices: list[MatchIndices], caption_ids) -> dict:
        """Teacher-forced caption NLL of the matched pairs of each layer that got a matching, in one captioner run."""
        num_layers = len(layer_outputs)
        layers = list(range(num_layers))[-len(indices):]
        caption_ids = caption_ids.long()
        words = caption_ids != self.config.pad_token_id  # (B, E, T)
        length = int(torch.nonzero(words.any(0).any(0)).max()) + 1 if bool(words.any()) else 1
        caption_ids = caption_ids[..., : max(length, 2)]  # drop all-padding columns
        batch = caption_ids.shape[0]
        counts = [torch.bincount(m.batch, minlength=batch) for m in indices]  # per layer (B,)
        slots = max(1, max(int(c.max()) for c in counts) if counts else 1)
        total = slots * len(layers)
        hidden = model_out.last_hidden_state
        queries = hidden.new_zeros(batch, total, hidden.shape[-1])
        levels = self.config.num_feature_levels
        segments = hidden.new_full((batch, total, levels, 2), 0.5, dtype=torch.float32)  # per-level references
        targets = caption_ids.new_full((batch, total, caption_ids.shape[-1]), self.config.pad_token_id)
        columns = []
        for j, (layer, match, count) in enumerate(zip(layers, indices, counts)):
            first = count.cumsum(0) - count  # (B,) first pair of each video
            column = j * slots + torch.arange(match.batch.numel(), device=count.device) - first[match.batch]  # (P,)
            queries[match.batch, column] = model_out.decoder_hidden_states[layer][match.batch, match.query]
            reference = caption_references(
                self.caption_reference(model_out, layer), model_out.valid_ratios, model_out.level_lengths,
                self.config.caption_num_points,
            )  # (B, N, Lv, 2)
            segments[match.batch, column] = reference[match.batch, match.query]
            targets[match.batch, column] = caption_ids[match.batch, match.target]
            columns.append(column)
        log_probs = self.captioner(
            model_out.memory,
            model_out.memory_mask,
            model_out.level_lengths,
            model_out.level_start,
            queries,
            segments,
            targets,
            model_out.valid_ratios,
        )  # (B, total, T-1, V)
        losses = {}
        for layer, match, column in zip(layers, indices, columns):
            key = "loss_caption" + layer_suffix(layer, num_layers)
            losses[key] = caption_loss(
                log_probs[match.batch, column], targets[match.batch, column], self.config.pad_token_id
            )
        return losses

    def forward(
        self,
        video_features: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        durations: torch.Tensor | None = None,
        video_ids: torch.Tensor | None = None,
        event_segments: torch.Tensor | None = None,
        event_mask: torch.Tensor | None = None,
        caption_ids: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
    ) -> CACMIDenseCaptioningOutput:
        r"""
        Args:
            video_features (`(B, L, D)` float): frame features (D = config.feature_dim).
            video_mask (`(B, L)` bool, *optional*): True for the valid frames, a prefix of each row (default all).
            durations (`(B,)` float): durations in seconds.
            video_ids (`(B,)` long, *optional*): memory-bank video index per video (-1 = absent), for the
                training-time retrieval exclusion.
            event_segments (`(B, E, 2)` float, *optional*): ground-truth (start, end) / duration, in [0, 1]; the loss
                is computed when given.
            event_mask (`(B, E)` bool, *optional*): real events (default all).
            caption_ids (`(B, E, T)` long, *optional*): `[BOS, w1, .., EOS, PAD, ..]` per event; adds the caption loss.
            pixel_values_videos (`(B, L, 3, S, S)` float, *optional*): CLIP-preprocessed frames instead of
                `video_features`, for a model with a vision tower.

        Returns:
            [`CACMIDenseCaptioningOutput`] with loss/loss_dict when labels are given, logits `(B, N)`,
            pred_segments `(B, N, 2)`, pred_counts `(B, K+1)`, aux_outputs.
        """
        video_features = self._features(video_features, pixel_values_videos, video_mask)
        batch = video_features.shape[0] if torch.is_tensor(video_features) else 0
        if event_segments is not None:
            event_segments, event_mask, caption_ids = self._validate_labels(event_segments, event_mask, caption_ids, batch)
        model_out = self.cacmi(video_features, video_mask, durations, video_ids)
        layer_outputs = self._heads(model_out)
        loss = loss_dict = None
        if event_segments is not None:
            targets = {"segments": event_segments.to(model_out.memory.dtype), "mask": event_mask}
            loss_dict, indices = self.criterion(layer_outputs, targets)
            if caption_ids is not None:
                loss_dict.update(self._caption_losses(model_out, layer_outputs, indices, caption_ids))
            loss = self.criterion.total_loss(loss_dict)
        last = layer_outputs[-1]
        return CACMIDenseCaptioningOutput(
            loss=loss,
            loss_dict=loss_dict,
            logits=last["logits"],
            pred_segments=last["pred_segments"],
            pred_counts=last["pred_counts"],
            aux_outputs=layer_outputs[:-1],
            last_hidden_state=model_out.last_hidden_state,
            text_mask=model_out.text_mask,
            text_spans=model_out.text_spans,
            retrieved_indices=model_out.retrieved_indices,
            retrieved_scores=model_out.retrieved_scores,
        )

    @torch.no_grad()
    def generate(
        self,
        video_features: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        durations: torch.Tensor | None = None,
        video_ids: torch.Tensor | None = None,
        max_caption_len: int | None = None,
        pixel_values_videos: torch.Tensor | None = None,
    ) -> CACMIDenseCaptioningOutput:
        r"""
        Detect events and caption every query greedily (no gradient; call `.eval()` first for deterministic output).

        Args:
            video_features (`(B, L, D)`), video_mask (`(B, L)`), durations (`(B,)`), video_ids (`(B,)`): as in `forward`.
            max_caption_len (`int`, *optional*): most words per caption (default `config.max_caption_len`).
            pixel_values_videos (`(B, L, 3, S, S)`, *optional*): frames instead of `video_features` (vision tower).

        Returns:
            [`CACMIDenseCaptioningOutput`] with logits `(B, N)`, pred_segments `(B, N, 2)`, pred_counts `(B, K+1)`,
            caption_ids `(B, N, T)` and caption_log_probs `(B, N, T)` (T <= max_caption_len + 2). Feed it to
            `post_process_dense_video_captioning` for timed sentences.
        """
        video_features = self._features(video_features, pixel_values_videos, video_mask)
        model_out = self.cacmi(video_features, video_mask, durations, video_ids)
        layer_outputs = self._heads(model_out)
        last = layer_outputs[-1]
        caption_ids, caption_log_probs = self.captioner.generate(
            model_out.memory,
            model_out.memory_mask,
            model_out.level_lengths,
            model_out.level_start,
            model_out.last_hidden_state,
            self.caption_reference(model_out, len(layer_outputs) - 1),
            max_caption_len,
            model_out.valid_ratios,
        )
        return CACMIDenseCaptioningOutput(
            logits=last["logits"],
            pred_segments=last["pred_segments"],
            pred_counts=last["pred_counts"],
            caption_ids=caption_ids,
            caption_log_probs=caption_log_probs,
            aux_outputs=layer_outputs[:-1],
            last_hidden_state=model_out.last_hidden_state,
            text_mask=model_out.text_mask,
            text_spans=model_out.text_spans,
            retrieved_indices=model_out.retrieved_indices,
            retrieved_scores=model_out.retrieved_scores,
        )


__all__ = [
    "CACMIDenseCaptioningOutput",
    "CACMIForDenseCaptioning",
    "CACMIModel",
    "CACMIModelOutput",
    "CACMIPreTrainedModel",
]
