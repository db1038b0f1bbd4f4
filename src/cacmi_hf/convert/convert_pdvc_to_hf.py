"""PDVC checkpoints (ttengwang/PDVC `model-best.pth` + `info.json`) as `CACMIForDenseCaptioning` folders.

The configuration comes from the training options (every size), the tensors from the state dict: reference
keys are mapped one by one (q/k/v split out of `nn.MultiheadAttention`, the LSTM's input matrix split by input
part, the vocabulary re-ordered to ours), and every reference key is accounted for. CM2's converter reuses
`pdvc_config_fields` and `map_pdvc_modules`, as CM2 is PDVC plus its retrieval and text path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..configuration_cacmi import CACMIConfig
from .common import (
    ConversionError,
    TensorMap,
    convert_logit,
    convert_word_embedding,
    option,
    require,
    split_in_proj,
)

SOURCE = "pdvc"
# CM2 checkpoints carry these; PDVC's never do
CM2_MARKERS = ("clip_model.", "down_proj.", "text_transformer_layers.")
# light captioner: PDVC feeds the mean of one "clip" (the query) over a mask of ones, i.e. query / (1 + 1e-5)
LIGHT_QUERY_SCALE = 1.0 / (1.0 + 1e-5)


def is_cm2_state_dict(state: dict) -> bool:
    """True when the state dict has CM2's modules (CLIP, text projection, text transformer)."""
    return any(key.startswith(CM2_MARKERS) for key in state)


def pdvc_config_fields(opt: dict, state: dict, vocab_rows: int) -> dict[str, Any]:
    """CACMIConfig fields of the PDVC part of a PDVC/CM2 model, checked for variants we do not support."""
    decoder_type = option(opt, "caption_decoder_type")
    require(
        decoder_type in ("standard", "light"),
        f"unsupported variant: caption_decoder_type={decoder_type!r} (a GPT-2 or caption-free head); the converter "
        "supports PDVC's 'standard' (LSTM-DSA) and 'light' captioners.",
    )
    require(bool(option(opt, "with_box_refine", False)),
            "unsupported variant: with_box_refine=0 (the published PDVC/CM2 models refine segments across layers).")
    require(int(option(opt, "num_classes", 1)) == 1, f"unsupported variant: num_classes={opt.get('num_classes')} (PDVC uses 1).")
    require(int(option(opt, "num_layers", 1)) == 1, f"unsupported variant: caption LSTM num_layers={opt.get('num_layers')} (1 supported).")
    require(bool(option(opt, "share_caption_head", 1)),
            "unsupported variant: share_caption_head=0 (one captioner per decoder layer); 1 is supported.")
    require(option(opt, "dec_n_points", 4) == option(opt, "enc_n_points", 4),
            f"unsupported variant: enc_n_points={opt.get('enc_n_points')} != dec_n_points={opt.get('dec_n_points')}.")
    hidden = int(option(opt, "hidden_dim"))
    levels = int(option(opt, "num_feature_levels"))
    fields: dict[str, Any] = dict(
        feature_dim=int(option(opt, "feature_dim")),
        num_frames=int(option(opt, "frame_embedding_num", 100)),
        hidden_size=hidden,
        num_attention_heads=int(option(opt, "nheads")),
        num_encoder_layers=int(option(opt, "enc_layers")),
        num_decoder_layers=int(option(opt, "dec_layers")),
        ffn_dim=int(option(opt, "transformer_ff_dim")),
        dropout=float(option(opt, "transformer_dropout_prob", 0.1)),
        num_feature_levels=levels,
        num_sampling_points=int(option(opt, "dec_n_points", 4)),
        num_queries=int(option(opt, "num_queries")),
        max_event_count=int(option(opt, "max_eseq_length")),
        with_segment_refine=True,
        aux_loss=bool(option(opt, "aux_loss", True)),
        vocab_size=vocab_rows + 2,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, unk_token_id=3,
        max_caption_len=int(option(opt, "max_caption_len", 30)),
        caption_hidden_size=int(option(opt, "rnn_size")),
        caption_embedding_size=int(option(opt, "input_encoding_size")),
        caption_dropout=float(option(opt, "drop_prob", 0.5)),
        caption_decoder="deformable" if decoder_type == "standard" else "light",
        caption_reference="decoder_input",
        caption_padding="border",
        caption_embedding_dropout=False,
        focal_alpha=float(option(opt, "focal_alpha", 0.25)),
        focal_gamma=float(option(opt, "focal_gamma", 2.0)),
        matcher_class_cost=float(option(opt, "set_cost_class", 2.0)),
        matcher_giou_cost=float(option(opt, "set_cost_giou", 4.0)),
        matcher_l1_cost=float(option(opt, "set_cost_bbox", 0.0)),
        class_loss_coef=float(option(opt, "cls_loss_coef", 2.0)),
        giou_loss_coef=float(option(opt, "giou_loss_coef", 4.0)),
        l1_loss_coef=float(option(opt, "bbox_loss_coef", 0.0)),
        counter_loss_coef=float(option(opt, "count_loss_coef", 0.5)),
        caption_loss_coef=float(option(opt, "caption_loss_coef", 2.0)),
        max_train_events=int(option(opt, "gt_proposal_sample_num", 30)),
        rerank_alpha=float(option(opt, "ec_alpha", 0.3)),
        use_cfa=False, use_cfe=False, decoder_text_cross_attention=False,
    )
    # PDVC resizes every video to frame_embedding_num (data_rescale, nearest index); CM2's CLIP features skip it
    fields["feature_resize"] = "pdvc" if int(option(opt, "data_rescale", 1)) else "none"
    # the duration thermometer: PDVC hard-codes 256 bins -> hidden/2 channels
    duration = state.get("base_encoder.pos_embed.duration_embed_layer.weight")
    if duration is None:
        raise ConversionError("missing key 'base_encoder.pos_embed.duration_embed_layer.weight' (PDVC's duration embedding).")
    require(duration.shape[0] == hidden // 2,
            f"base_encoder.pos_embed.duration_embed_layer.weight has shape {tuple(duration.shape)}: its output must "
            f"be hidden_dim/2 = {hidden // 2} to sit beside the sine channels.")
    fields["max_duration_bins"] = int(duration.shape[1])
    if decoder_type == "standard":
        require(int(option(opt, "cap_nheads")) == 1,
                f"unsupported variant: cap_nheads={opt.get('cap_nheads')} (the published configs use 1 captioner head).")
        require(int(option(opt, "cap_num_feature_levels")) == levels,
                f"unsupported variant: cap_num_feature_levels={opt.get('cap_num_feature_levels')} != num_feature_levels={levels}.")
        require(int(option(opt, "rnn_size")) == hidden,
                f"rnn_size={opt.get('rnn_size')} must equal hidden_dim={hidden} in PDVC's LSTM-DSA ([h; query] query).")
        require(int(option(opt, "att_hid_size")) > 0, "unsupported variant: att_hid_size=0 with the standard captioner.")
        fields["caption_num_points"] = int(option(opt, "cap_dec_n_points"))
        fields["caption_attention_size"] = int(option(opt, "att_hid_size"))
    return fields


def _num_layers(tm: TensorMap, prefix: str) -> int:
    indices = {int(k[len(prefix):].split(".")[0]) for k in tm.keys_under(prefix)}
    return max(indices) + 1 if indices else 0


def map_pdvc_modules(tm: TensorMap, config: CACMIConfig) -> None:
    """Map every PDVC module of the state dict (shared by PDVC and CM2) into our key names."""
    hidden, levels = config.hidden_size, config.num_feature_levels
    layers = config.num_decoder_layers
    # base encoder: input_proj.l = Sequential(Conv1d, GroupNorm)
    for level in range(levels):
        tm.move_prefix(f"base_encoder.input_proj.{level}.0", f"cacmi.base_encoder.convs.{level}")
        tm.move_prefix(f"base_encoder.input_proj.{level}.1", f"cacmi.base_encoder.norms.{level}")
    tm.move_prefix("base_encoder.pos_embed.duration_embed_layer", "cacmi.position_embedding.duration_proj")
    tm.move("transformer.level_embed", "cacmi.encoder.level_embed")
    require(_num_layers(tm, "transformer.encoder.layers.") == config.num_encoder_layers,
            f"the state dict has {_num_layers(tm, 'transformer.encoder.layers.')} encoder layers, the options say "
            f"{config.num_encoder_layers} (enc_layers).")
    for i in range(config.num_encoder_layers):
        src, dst = f"transformer.encoder.layers.{i}", f"cacmi.encoder.layers.{i}"
        for part in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            tm.move_prefix(f"{src}.self_attn.{part}", f"{dst}.self_attn.{part}")
        tm.move_prefix(f"{src}.norm1", f"{dst}.norm")
        tm.move_prefix(f"{src}.linear1", f"{dst}.ffn.linear1")
        tm.move_prefix(f"{src}.linear2", f"{dst}.ffn.linear2")
        tm.move_prefix(f"{src}.norm2", f"{dst}.ffn.norm")
    require(_num_layers(tm, "transformer.decoder.layers.") == layers,
            f"the state dict has {_num_layers(tm, 'transformer.decoder.layers.')} decoder layers, the options say {layers} (dec_layers).")
    for i in range(layers):
        src, dst = f"transformer.decoder.layers.{i}", f"cacmi.decoder.layers.{i}"
        for part in ("sampling_offsets", "attention_weights", "value_proj", "output_proj"):
            tm.move_prefix(f"{src}.cross_attn.{part}", f"{dst}.cross_attn.{part}")
        tm.move_prefix(f"{src}.norm1", f"{dst}.cross_norm")
        split_in_proj(tm, f"{src}.self_attn", f"{dst}.self_attn", hidden)
        tm.move_prefix(f"{src}.norm2", f"{dst}.self_norm")
        tm.move_prefix(f"{src}.linear1", f"{dst}.ffn.linear1")
        tm.move_prefix(f"{src}.linear2", f"{dst}.ffn.linear2")
        tm.move_prefix(f"{src}.norm3", f"{dst}.ffn.norm")
    # queries-mode decoder inputs; the proposal-input projection is unused
    tm.move("query_embed.weight", "cacmi.decoder.query_embed")
    tm.move_prefix("transformer.reference_points", "cacmi.decoder.reference_proj")
    tm.drop_prefix("transformer.pos_trans", "proposal-input projection, unused with learned queries")
    # per-layer heads (with_box_refine: one per layer; the decoder registers the box heads a second time)
    for i in range(layers):
        tm.move_prefix(f"class_head.{i}", f"confidence_heads.{i}")
        tm.move_prefix(f"count_head.{i}", f"counter_heads.{i}")
        for j in range(3):
            tm.move_prefix(f"bbox_head.{i}.layers.{j}", f"cacmi.decoder.segment_heads.{i}.layers.{j}")
            for n in ("weight", "bias"):
                tm.copy_of(f"transformer.decoder.bbox_head.{i}.layers.{j}.{n}", f"bbox_head.{i}.layers.{j}.{n}")
    map_captioner(tm, config)


def map_captioner(tm: TensorMap, config: CACMIConfig) -> None:
    """caption_head.0.* (LSTM-DSA or light) -> captioner.*; the other layers' entries repeat it (one shared head)."""
    src = "caption_head.0"
    embedding = tm.take(f"{src}.embed.weight")
    tm.put("captioner.embed.weight", convert_word_embedding(embedding))
    weight, bias = convert_logit(tm.take(f"{src}.logit.weight"), tm.take(f"{src}.logit.bias"))
    tm.put("captioner.logit.weight", weight)
    tm.put("captioner.logit.bias", bias)
    rows = embedding.shape[0]
    require(rows + 2 == config.vocab_size,
            f"{src}.embed.weight has {rows} rows but the vocabulary gives {config.vocab_size - 2} (vocab_size + 1); "
            "pass the vocabulary the model was trained with.")
    hidden, rnn = config.hidden_size, config.caption_hidden_size
    embed_size = config.caption_embedding_size or rnn
    light = config.caption_decoder == "light"
    inputs = embed_size + (hidden if light else 2 * hidden)
    w_ih = tm.take(f"{src}.core.rnn.weight_ih_l0", (4 * rnn, inputs))
    tm.put("captioner.word_gates.weight", w_ih[:, :embed_size])
    if light:
        tm.put("captioner.query_gates.weight", w_ih[:, embed_size:] * LIGHT_QUERY_SCALE)
    else:
        tm.put("captioner.context_gates.weight", w_ih[:, embed_size : embed_size + hidden])
        tm.put("captioner.query_gates.weight", w_ih[:, embed_size + hidden :])
    tm.move(f"{src}.core.rnn.weight_hh_l0", "captioner.hidden_gates.weight")
    if not light:
        attention = f"{src}.core.deformable_att"
        tm.move_prefix(f"{attention}.sampling_offsets", "captioner.sampling_offsets")
        tm.move_prefix(f"{attention}.value_proj", "captioner.value_proj")
        # PDVC's captioner reads the raw samples (return_value=True): its attention weights and output projection
        # are computed or built but never used
        tm.drop_prefix(f"{attention}.attention_weights", "captioner MSDeformAttnCap attention weights, unused (samples are soft-attended instead)")
        tm.drop_prefix(f"{attention}.output_proj", "captioner MSDeformAttnCap output projection, unused")
        tm.move_prefix(f"{src}.core.ctx2att", "captioner.context_key")
        tm.move_prefix(f"{src}.core.h2att", "captioner.hidden_key")
        tm.move_prefix(f"{src}.core.alpha_net", "captioner.attention_score")
    for i in range(1, config.num_decoder_layers):  # share_caption_head: the same module under every layer index
        for key in tm.keys_under(f"caption_head.{i}."):
            tm.copy_of(key, src + key[len(f"caption_head.{i}") :])


def convert_pdvc_state(state: dict, opt: dict, vocab_rows: int):
    """(model, config, tensor map) of a PDVC state dict and options."""
    from ..modeling_cacmi import CACMIForDenseCaptioning

    if is_cm2_state_dict(state):
        raise ConversionError(
            "this is a CM2 checkpoint (it has clip_model.* / down_proj.* tensors), not a PDVC one; "
            "run `cacmi convert cm2` instead."
        )
    config = CACMIConfig(**pdvc_config_fields(opt, state, vocab_rows))
    model = CACMIForDenseCaptioning(config)
    tm = TensorMap(state, "PDVC checkpoint")
    map_pdvc_modules(tm, config)
    tm.finish(model)
    return model.eval(), config, tm


def convert_pdvc(state: dict, opt: dict, checkpoint: Path, vocabulary=None):
    """A PDVC checkpoint as a `Converted` (model, processor with the reference's vocabulary, card fields)."""
    from ..processing_cacmi import CACMIProcessor, CACMIVideoProcessor
    from . import Converted
    from .common import find_vocabulary, reference_tokenizer, reference_vocabulary

    words = reference_vocabulary(find_vocabulary(opt, checkpoint, vocabulary))
    model, config, tm = convert_pdvc_state(state, opt, len(words) + 1)
    tokenizer = reference_tokenizer(words, config.max_caption_len)
    # frames are never decoded for PDVC (no image tower): the video processor only carries the frame count
    processor = CACMIProcessor(CACMIVideoProcessor(num_frames=config.num_frames), tokenizer)
    copies = sum(1 for how in tm.accounted.values() if how.startswith("copy of"))
    return Converted(model, processor, model_card_fields(opt, checkpoint), dict(tm.dropped), copies)


def model_card_fields(opt: dict, checkpoint: Path) -> dict[str, str]:
    """What the card says about a converted PDVC model."""
    features = opt.get("visual_feature_type", "c3d")
    return {
        "source": "PDVC (Wang et al., ICCV 2021)",
        "source_url": "https://github.com/ttengwang/PDVC",
        "checkpoint": checkpoint.name,
        "features": f"{features} features, {opt.get('feature_dim')}-d, resized to {opt.get('frame_embedding_num', 100)} frames",
        "feature_note": (
            "PDVC reads C3D / TSN / TSP clip features made by other toolchains; this package cannot compute them from "
            "a video, so pass them as `video_features` (any length: the model resizes them as PDVC did)."
        ),
        "reported": "see the PDVC README's model zoo (densevid 2018 protocol)",
        "example": 'captioner({"video_features": features, "duration": seconds})  # features (T, D), any T',
        "conversion": f"caption vocabulary of {opt.get('vocab_size')} words + the four specials; "
        f"re-ranking alpha {opt.get('ec_alpha')} (ec_alpha).",
    }


__all__ = ["convert_pdvc", "convert_pdvc_state", "is_cm2_state_dict", "map_pdvc_modules", "pdvc_config_fields"]
