"""CACMIConfig: every size and switch of the CACMI dense video captioner in one place."""

from __future__ import annotations

import warnings
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# DESIGN §3 defaults per benchmark; `CACMIConfig.from_preset(name)` applies them. K = 20 on both is CM2's
# max_eseq_length, which CACMI follows (PDVC used 10 on ActivityNet: its variant below keeps that).
PRESETS: dict[str, dict[str, Any]] = {
    "activitynet": dict(
        num_frames=100,
        num_queries=10,
        max_event_count=20,
        num_clusters=10,
        retrieval_top_k=40,
        retrieval_num_windows=20,
        max_train_events=30,
    ),
    "youcook2": dict(
        num_frames=200,
        num_queries=100,
        max_event_count=20,
        num_clusters=20,
        retrieval_top_k=40,
        retrieval_num_windows=50,
        max_train_events=10,
    ),
}

# The model variants: the switches that turn CACMI into its predecessors.
VARIANTS: dict[str, dict[str, Any]] = {
    # the paper's model
    "cacmi": dict(use_cfa=True, use_cfe=True, decoder_text_cross_attention=True, retrieval_mode="clusters"),
    # no retrieval, no text: the PDVC baseline
    "pdvc": dict(use_cfa=False, use_cfe=False, decoder_text_cross_attention=False),
    # CM2: fixed-window retrieval (dropping each window's best match while training) feeding the decoder's text
    # cross-attention, no CFE
    "cm2": dict(
        use_cfa=True, use_cfe=False, decoder_text_cross_attention=True, retrieval_mode="windows",
        retrieval_exclude="top1",
    ),
}

# Where the reference a variant reproduces used other values on a benchmark [PDVC cfgs/*_pdvc.yml,
# CM2 train_anet.sh / train_yc2.sh: --window_size 20 --soft_k 100, --window_size 50 --soft_k 80].
PRESET_VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "activitynet": {
        "pdvc": dict(max_event_count=10),
        "cm2": dict(retrieval_num_windows=20, retrieval_top_k=100),
    },
    "youcook2": {
        "cm2": dict(retrieval_num_windows=50, retrieval_top_k=80),
    },
}


def preset_values(name: str, variant: str = "cacmi") -> dict[str, Any]:
    """Config fields of a benchmark preset with a variant's switches and that benchmark's reference values."""
    if name not in PRESETS:
        raise ValueError(f"Unknown CACMI preset {name!r}; choose one of {sorted(PRESETS)}.")
    return {**PRESETS[name], **variant_values(variant), **PRESET_VARIANTS.get(name, {}).get(variant, {})}


def variant_values(variant: str) -> dict[str, Any]:
    """The switches of a model variant ("cacmi", "pdvc" or "cm2")."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown CACMI variant {variant!r}; choose one of {sorted(VARIANTS)}.")
    return dict(VARIANTS[variant])


@strict
class CACMIConfig(PreTrainedConfig):
    r"""
    Configuration of [`CACMIForDenseCaptioning`] (model_type `"cacmi"`). The defaults are the
    ActivityNet Captions preset; `CACMIConfig.from_preset("youcook2")` gives the YouCook2 one.
    Tags: [paper] stated by CACMI, [PDVC]/[CM2] taken from those models, [ours] an open choice.

    Video input:
        feature_dim (`int`, defaults to 768): size D of the per-frame features (CLIP ViT-L/14 image
            embeddings) given as `video_features (B, L, D)`.
        num_frames (`int`, defaults to 100): frames L a video is resampled to (ANet 100, YC2 200) [paper].
        max_duration_bins (`int`, defaults to 256): cap, in whole seconds, of the thermometer
            duration embedding; longer videos share the last bin [ours].

    Deformable transformer [PDVC]:
        hidden_size (`int`, defaults to 512): transformer width.
        num_attention_heads (`int`, defaults to 8): heads of self- and deformable attention.
        num_encoder_layers / num_decoder_layers (`int`, defaults to 2): depth of each stack.
        ffn_dim (`int`, defaults to 512): feed-forward width in both stacks.
        dropout (`float`, defaults to 0.1): dropout in the transformer.
        num_feature_levels (`int`, defaults to 4): temporal pyramid levels of the base encoder.
        num_sampling_points (`int`, defaults to 4): sampled points per head and level.
        num_queries (`int`, defaults to 10): event queries N (ANet 10, YC2 100).
        max_event_count (`int`, defaults to 20): K; the event counter predicts 0..K (K+1 bins) [CM2
            max_eseq_length; PDVC 10 on ActivityNet]. Ground-truth events past K still take part in matching
            and the caption loss; only the counter's target is clamped to K.
        with_segment_refine (`bool`, defaults to True): iterative segment refinement across
            decoder layers (references detached between layers).
        aux_loss (`bool`, defaults to True): losses on every decoder layer, not only the last.
        init_std (`float`, defaults to 0.02): std of the normal initialiser of linear layers.

    Captioner [PDVC "LSTM-DSA"]:
        vocab_size (`int`, defaults to 8): size of the word-level caption vocabulary, including
            the four specials; set it from the tokenizer (`len(tokenizer)`).
        pad_token_id / bos_token_id / eos_token_id / unk_token_id (`int`, 0/1/2/3): special ids.
        max_caption_len (`int`, defaults to 30): most words in a generated caption (BOS/EOS excluded).
        caption_hidden_size (`int`, defaults to 512): LSTM width (also word embedding size).
        caption_dropout (`float`, defaults to 0.5): dropout on the LSTM output (and on the word embeddings
            with `caption_embedding_dropout`).
        caption_num_points (`int`, defaults to 4): deformable samples per level in the captioner.
        caption_decoder (`str`, defaults to "deformable"): "deformable" (LSTM-DSA, PDVC's "standard") or
            "light" (PDVC's "light": the LSTM reads [word; query] only, no attention over the memory) [PDVC].
        caption_embedding_size (`int` or `None`, defaults to None): word embedding size [PDVC
            `input_encoding_size`]; None means `caption_hidden_size`.
        caption_attention_size (`int` or `None`, defaults to None): hidden size of the captioner's additive
            soft attention [PDVC `att_hid_size`]; None means `caption_hidden_size`.
        caption_reference (`str`, defaults to "decoder_input"): where the captioner samples the memory:
            around the reference its decoder layer started from [PDVC] ("decoder_input": the learned
            initial centre for layer 0, the previous layer's segment after it), or around the segment the
            query itself predicts ("predicted") [ours].
        caption_padding (`str`, defaults to "border"): interpolation outside a level in the captioner's
            sampling: "border" repeats the video's first/last valid position [PDVC: its captioner samples
            with `grid_sample(padding_mode="border")`], "zeros" fades to zero like the transformer's
            deformable attention [ours].
        caption_embedding_dropout (`bool`, defaults to False): apply `caption_dropout` to the word
            embeddings as well as to the LSTM output [ours; PDVC drops only the output].

    CFA — cross-modal frame aggregation [paper]:
        use_cfa (`bool`, defaults to True): retrieve text context from the memory bank.
        retrieval_mode (`str`, defaults to "clusters"): "clusters" (CACMI: contiguous Ward
            clustering into `num_clusters` pseudo-events) or "windows" (CM2: `retrieval_num_windows`
            fixed windows).
        num_clusters (`int`, defaults to 10): pseudo-events c per video (ANet 10, YC2 20) [paper].
        cluster_max_frames (`int` or `None`, defaults to None): longest span a cluster may cover;
            None means 3·L/c [ours].
        cache_clusters (`bool`, defaults to True): remember each video's Ward clustering (keyed by a fingerprint
            of its features), so training on frozen features clusters a video once, not every epoch [ours].
        boundary_weight (`float`, defaults to 1.0): β of the inverted-bell pooling weights
            w(u) = 1 + β·(2u−1)² [ours].
        retrieval_top_k (`int`, defaults to 40): memory entries averaged per query [paper]; CM2's
            window setting used 100 (ANet) / 80 (YC2).
        retrieval_num_windows (`int`, defaults to 20): number of windows n in "windows" mode [CM2
            `--window_size`, "window number": ANet 20, YC2 50]. A video of l valid frames is cut into n
            windows of l // n frames each; the last l mod n frames belong to no window, as in CM2. (Older
            configs stored a window *length* `retrieval_window_size`; they load with a FutureWarning and
            the count of windows that length gave.)
        retrieval_exclude (`str`, defaults to "same_video"): while training, never retrieve the
            video's own captions: "same_video" drops every entry of the video, "top1" drops the
            best match (CM2's rule), "none" disables the exclusion [ours: same_video].
        memory_size (`int`, defaults to 0): entries M of the text memory bank buffers.
        memory_dim (`int` or `None`, defaults to None): size of the memory embeddings (CLIP text
            embedding size); None means `feature_dim`.

    CFE — context-aware feature enhancement [paper, equations ours]:
        use_cfe (`bool`, defaults to True): enhance frame features with the retrieved text.
        decoder_text_cross_attention (`bool`, defaults to True): decoder layers attend to the
            retrieved text vectors after deformable cross-attention [CM2].
        text_path (`str`, defaults to "cacmi"): how the retrieved text reaches that cross-attention:
            "cacmi" projects it (Linear + LayerNorm) [ours]; "cm2" is CM2's path: two LayerNorm-Linear
            layers (ReLU between) to the hidden size, a sine position over the text slots, one pass through
            the video's deformable encoder (its weights shared, the text repeated on every level, the first
            level's output kept), and a cross-attention that reuses the deformable cross-attention's
            LayerNorm [CM2].
        memory_format (`str`, defaults to "normalized"): "normalized" stores the bank L2-normalised and
            averages normalised hits [ours]; "cm2_fp16" is CM2's bank: raw float16 CLIP text embeddings, each
            normalised in float16 for the cosine (as `torch.cosine_similarity` does on them) and the mean of
            the k raw hits rounded to float16 [CM2].

    Input features:
        feature_resize (`str`, defaults to "none"): "none" takes the features at their given length [CM2:
            native 1 fps]; "pdvc" resamples each video's valid frames to `num_frames` by PDVC's nearest-index
            rule (scipy `interp1d(kind="nearest")` at i·(T−1)/(L−1), half-way points to the lower frame)
            [PDVC `data_rescale`].

    Matching and losses [PDVC]:
        focal_alpha / focal_gamma (`float`, 0.25 / 2.0): focal loss of the confidence head.
        matcher_class_cost / matcher_giou_cost / matcher_l1_cost (`float`, 2 / 4 / 0): Hungarian costs.
        class_loss_coef / giou_loss_coef / l1_loss_coef (`float`, 2 / 4 / 0): loss weights.
        counter_loss_coef (`float`, defaults to 0.5): weight of the event-counter loss.
        counter_sigma (`float`, defaults to 2.0): σ of the Gaussian soft target of the counter.
        count_prior (`list[float]` or `None`): K+1 event-count frequencies estimated from the
            training set; None means uniform [ours: PDVC hard-codes ActivityNet's histogram].
        caption_loss_coef (`float`, defaults to 2.0): weight of the caption NLL on matched pairs.
        max_train_events (`int`, defaults to 30): ground-truth events sampled per video while
            training (ANet 30, YC2 10) [CM2].

    Post-processing [PDVC]:
        rerank_alpha (`float`, defaults to 1.0): joint score = α·caption score + confidence.

    Optional vision tower:
        vision_config (`dict` or `None`): an open_clip model config; when set, the model embeds
            raw frames (`pixel_values_videos`) itself.
        vision_normalize (`bool`, defaults to True): L2-normalise the tower's image embeddings, as `cacmi
            extract-features` does [ours]; False keeps CLIP's raw `encode_image` output [CM2, FrozenBiLM's
            extraction].
    """

    model_type = "cacmi"

    # video input
    feature_dim: int = 768
    num_frames: int = 100
    max_duration_bins: int = 256
    # deformable transformer
    hidden_size: int = 512
    num_attention_heads: int = 8
    num_encoder_layers: int = 2
    num_decoder_layers: int = 2
    ffn_dim: int = 512
    dropout: float | int = 0.1
    num_feature_levels: int = 4
    num_sampling_points: int = 4
    num_queries: int = 10
    max_event_count: int = 20
    with_segment_refine: bool = True
    aux_loss: bool = True
    init_std: float | int = 0.02
    # captioner
    vocab_size: int = 8
    pad_token_id: int | None = 0
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    unk_token_id: int | None = 3
    max_caption_len: int = 30
    caption_hidden_size: int = 512
    caption_dropout: float | int = 0.5
    caption_num_points: int = 4
    caption_decoder: str = "deformable"
    caption_embedding_size: int | None = None
    caption_attention_size: int | None = None
    caption_reference: str = "decoder_input"
    caption_padding: str = "border"
    caption_embedding_dropout: bool = False
    # CFA
    use_cfa: bool = True
    retrieval_mode: str = "clusters"
    num_clusters: int = 10
    cluster_max_frames: int | None = None
    cache_clusters: bool = True
    boundary_weight: float | int = 1.0
    retrieval_top_k: int = 40
    retrieval_num_windows: int = 20
    retrieval_exclude: str = "same_video"
    memory_size: int = 0
    memory_dim: int | None = None
    # CFE
    use_cfe: bool = True
    decoder_text_cross_attention: bool = True
    text_path: str = "cacmi"
    memory_format: str = "normalized"
    feature_resize: str = "none"
    # matching and losses
    focal_alpha: float | int = 0.25
    focal_gamma: float | int = 2.0
    matcher_class_cost: float | int = 2.0
    matcher_giou_cost: float | int = 4.0
    matcher_l1_cost: float | int = 0.0
    class_loss_coef: float | int = 2.0
    giou_loss_coef: float | int = 4.0
    l1_loss_coef: float | int = 0.0
    counter_loss_coef: float | int = 0.5
    counter_sigma: float | int = 2.0
    count_prior: list[float] | None = None
    caption_loss_coef: float | int = 2.0
    max_train_events: int = 30
    # post-processing
    rerank_alpha: float | int = 1.0
    # optional vision tower
    vision_config: dict | None = None
    vision_normalize: bool = True

    def __post_init__(self, **kwargs):
        # A window *length* was stored before windows became a count; read it as the count it produced.
        length = kwargs.pop("retrieval_window_size", None)
        if length is not None:
            count = max(1, -(-self.num_frames // int(length)))
            warnings.warn(
                f"CACMIConfig.retrieval_window_size={length} (a window length) is deprecated: CM2's windows are a "
                f"count, `retrieval_num_windows`. Over num_frames={self.num_frames} it gave {count} windows, so this "
                f"config now uses retrieval_num_windows={count}; save the config again (or set "
                "retrieval_num_windows) to silence this warning.",
                FutureWarning,
                stacklevel=3,
            )
            self.retrieval_num_windows = count
        super().__post_init__(**kwargs)

    @classmethod
    def from_preset(cls, name: str, variant: str = "cacmi", **overrides: Any) -> "CACMIConfig":
        """Return the DESIGN §3 configuration of a benchmark ("activitynet" or "youcook2") for a variant."""
        return cls(**{**preset_values(name, variant), **overrides})

    @property
    def text_dim(self) -> int:
        """Size of the memory-bank (CLIP text) embeddings."""
        return self.memory_dim if self.memory_dim is not None else self.feature_dim

    @property
    def max_cluster_span(self) -> int:
        """Longest span, in frames, one CFA cluster may cover."""
        if self.cluster_max_frames is not None:
            return self.cluster_max_frames
        return max(1, (3 * self.num_frames) // self.num_clusters)

    def validate_architecture(self):
        """Reject inconsistent sizes and unknown switch values with a message that says what to fix."""
        super().validate_architecture()
        positive = (
            "feature_dim", "num_frames", "hidden_size", "num_attention_heads", "num_encoder_layers",
            "num_decoder_layers", "ffn_dim", "num_feature_levels", "num_sampling_points", "num_queries",
            "max_event_count", "vocab_size", "max_caption_len", "caption_hidden_size",
            "caption_num_points", "num_clusters", "retrieval_top_k", "retrieval_num_windows",
            "max_duration_bins", "max_train_events",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(
                    f"CACMIConfig.{name} must be >= 1, got {getattr(self, name)}; set it to a positive integer "
                    f"(the presets: CACMIConfig.from_preset('activitynet' | 'youcook2'))."
                )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"CACMIConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.hidden_size % 2:
            raise ValueError(f"CACMIConfig.hidden_size must be even (sine + duration halves), got {self.hidden_size}.")
        if self.num_clusters > self.num_frames:
            raise ValueError(
                f"CACMIConfig.num_clusters ({self.num_clusters}) cannot exceed num_frames ({self.num_frames}): "
                "each cluster needs at least one frame."
            )
        if self.cluster_max_frames is not None and self.cluster_max_frames * self.num_clusters < self.num_frames:
            raise ValueError(
                f"CACMIConfig.cluster_max_frames ({self.cluster_max_frames}) x num_clusters ({self.num_clusters}) "
                f"< num_frames ({self.num_frames}): the clusters could never cover the video."
            )
        if self.retrieval_mode not in ("clusters", "windows"):
            raise ValueError(f"CACMIConfig.retrieval_mode must be 'clusters' or 'windows', got {self.retrieval_mode!r}.")
        if self.use_cfa and self.retrieval_mode == "windows" and self.retrieval_num_windows > self.num_frames:
            raise ValueError(
                f"CACMIConfig.retrieval_num_windows ({self.retrieval_num_windows}) exceeds num_frames "
                f"({self.num_frames}): each window needs at least one frame; use at most {self.num_frames} windows."
            )
        # "top1" drops one more entry while training, so the bank must hold top_k + 1 entries
        needed = self.retrieval_top_k + (self.retrieval_exclude == "top1")
        if self.use_cfa and self.memory_size and needed > self.memory_size:
            raise ValueError(
                f"CACMIConfig.retrieval_top_k ({self.retrieval_top_k}) needs {needed} memory-bank entries "
                f"(retrieval_exclude={self.retrieval_exclude!r}) but memory_size is {self.memory_size}; lower "
                f"retrieval_top_k to at most {self.memory_size - (self.retrieval_exclude == 'top1')} or build a larger bank."
            )
        if self.retrieval_exclude not in ("same_video", "top1", "none"):
            raise ValueError(
                f"CACMIConfig.retrieval_exclude must be 'same_video', 'top1' or 'none', got {self.retrieval_exclude!r}."
            )
        if self.memory_size < 0:
            raise ValueError(f"CACMIConfig.memory_size must be >= 0, got {self.memory_size}.")
        if self.count_prior is not None and len(self.count_prior) != self.max_event_count + 1:
            raise ValueError(
                f"CACMIConfig.count_prior has {len(self.count_prior)} entries; it needs max_event_count + 1 = "
                f"{self.max_event_count + 1} (counts 0..K)."
            )
        choices = {
            "caption_decoder": ("deformable", "light"),
            "caption_reference": ("decoder_input", "predicted"),
            "caption_padding": ("border", "zeros"),
            "text_path": ("cacmi", "cm2"),
            "memory_format": ("normalized", "cm2_fp16"),
            "feature_resize": ("none", "pdvc"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"CACMIConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}.")
        for name in ("caption_embedding_size", "caption_attention_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"CACMIConfig.{name} must be >= 1 or None (= caption_hidden_size), got {getattr(self, name)}.")
        if self.text_path == "cm2" and not self.decoder_text_cross_attention:
            raise ValueError(
                "CACMIConfig.text_path='cm2' shapes the text the decoder's text cross-attention reads, but "
                "decoder_text_cross_attention=False; turn it on or use text_path='cacmi'."
            )
        specials = [self.pad_token_id, self.bos_token_id, self.eos_token_id, self.unk_token_id]
        if any(t is None or not 0 <= t < self.vocab_size for t in specials):
            raise ValueError(
                f"CACMIConfig special token ids {specials} must lie in [0, vocab_size={self.vocab_size}); "
                "set vocab_size from the caption tokenizer."
            )


__all__ = ["CACMIConfig", "PRESETS", "PRESET_VARIANTS", "VARIANTS", "preset_values", "variant_values"]
