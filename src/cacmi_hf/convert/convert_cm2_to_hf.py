"""CM2 checkpoints (ailab-kyunghee/CM2_DVC `model-best.pth` + `info.json` + its memory bank) as
`CACMIForDenseCaptioning` folders: PDVC's modules (see `convert_pdvc_to_hf`) plus CM2's windowed retrieval over
its float16 bank, its text path and the decoder's text cross-attention, and the CLIP ViT-L/14 image tower its
checkpoint carries (`clip_model.visual.*`), so the converted folder captions an mp4 by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..configuration_cacmi import CACMIConfig
from .common import ConversionError, TensorMap, option, require
from .convert_pdvc_to_hf import is_cm2_state_dict, map_pdvc_modules, pdvc_config_fields

SOURCE = "cm2"
# the flags of CM2's published runs (train_anet.sh / train_yc2.sh, eval_*.sh); anything else is another variant
SUPPORTED = {
    "able_ret": (True,),
    "sim_match": ("window_cos",),
    "ret_encoder": ("avg",),
    "down_proj": ("deep",),
    "text_crossAttn": (True,),
    "text_crossAttn_loc": ("after",),
    "combined_encoder": (False,),
    "retrieval_ablation": ("None", "none"),
    "ideal_test": (False,),
}
UNUSED = "built by CM2 but never read by its forward with --ret_encoder avg"

# CM2's published runs (cfgs/anet_clip_cm2.yml, cfgs/yc2_clip_cm2.yml, the flags of train_*.sh, opts.py defaults),
# for a model-best.pth downloaded without its info.json; picked by the vocabulary size of the checkpoint
_CM2_COMMON = dict(
    hidden_dim=512, nheads=8, enc_layers=2, dec_layers=2, transformer_ff_dim=512, transformer_dropout_prob=0.1,
    num_feature_levels=4, dec_n_points=4, enc_n_points=4, max_eseq_length=20, with_box_refine=1, num_classes=1,
    aux_loss=True, share_caption_head=1, caption_decoder_type="standard", rnn_size=512, input_encoding_size=512,
    att_hid_size=512, drop_prob=0.5, max_caption_len=30, num_layers=1, cap_nheads=1, cap_dec_n_points=4,
    cap_num_feature_levels=4, feature_dim=768, frame_embedding_num=200, visual_feature_type=["clip"], ec_alpha=1.0,
    focal_alpha=0.25, focal_gamma=2.0, set_cost_class=2, set_cost_giou=4, set_cost_bbox=0, cls_loss_coef=2,
    giou_loss_coef=4, bbox_loss_coef=0, count_loss_coef=0.5, caption_loss_coef=2, able_ret=True,
    sim_match="window_cos", ret_encoder="avg", down_proj="deep", text_crossAttn=True, text_crossAttn_loc="after",
    combined_encoder=False,
)
CM2_PUBLISHED_OPTIONS = {
    8517: dict(_CM2_COMMON, num_queries=10, vocab_size=8517, window_size=20, soft_k=100, bank_type=["anet"],
               gt_proposal_sample_num=30, dict_file="data/anet/vocabulary_activitynet_thres2.json"),
    1607: dict(_CM2_COMMON, num_queries=100, vocab_size=1607, window_size=50, soft_k=80, bank_type=["yc2"],
               gt_proposal_sample_num=30, dict_file="data/yc2/vocabulary_youcook2.json"),
}


def published_options(state: dict) -> dict:
    """CM2's published options for a checkpoint without its info.json (ActivityNet or YouCook2, by vocabulary size)."""
    embed = state.get("caption_head.0.embed.weight")
    rows = None if embed is None else int(embed.shape[0]) - 1
    if rows not in CM2_PUBLISHED_OPTIONS:
        raise ConversionError(
            f"no training options beside the checkpoint and its vocabulary ({rows} words) is neither CM2's ActivityNet "
            "(8517) nor YouCook2 (1607) model; pass the run's info.json with --options."
        )
    return dict(CM2_PUBLISHED_OPTIONS[rows])


def cm2_config_fields(opt: dict, state: dict, vocab_rows: int, bank_size: int) -> dict[str, Any]:
    """CACMIConfig fields of a CM2 model: PDVC's, plus retrieval windows, the text path and the float16 bank."""
    for name, allowed in SUPPORTED.items():
        value = opt.get(name, allowed[0])
        require(value in allowed, f"unsupported variant: {name}={value!r} (the converter supports CM2's published "
                f"configuration, {name}={allowed[0]!r}).")
    fields = pdvc_config_fields(opt, state, vocab_rows)
    text_norm = state.get("down_proj.0.LayerNorm.weight")
    if text_norm is None:
        raise ConversionError("missing key 'down_proj.0.LayerNorm.weight' (CM2's text projection).")
    visual_types = opt.get("visual_feature_type", ["clip"])
    clip_features = "clip" in (visual_types if isinstance(visual_types, list) else [visual_types])
    fields.update(
        use_cfa=True,
        use_cfe=False,
        decoder_text_cross_attention=True,
        retrieval_mode="windows",
        retrieval_num_windows=int(option(opt, "window_size")),
        retrieval_top_k=int(option(opt, "soft_k")),
        retrieval_exclude="top1",  # while training CM2 sets each window's best match to -1
        text_path="cm2",
        memory_format="cm2_fp16",
        memory_dim=int(text_norm.shape[0]),
        memory_size=bank_size,
        # CM2 reads its CLIP features at their native length (its loader skips the resize for "clip")
        feature_resize="none" if clip_features else fields["feature_resize"],
    )
    return fields


def openai_clip_vision_config(state: dict, prefix: str = "clip_model.") -> dict[str, Any] | None:
    """An open_clip `vision_config` for the OpenAI-layout CLIP image tower in `state` (None when absent)."""
    conv = state.get(f"{prefix}visual.conv1.weight")
    if conv is None:
        return None
    width, _, patch, _ = conv.shape
    layers = len({k.split(".")[4] for k in state if k.startswith(f"{prefix}visual.transformer.resblocks.")})
    grid = round((state[f"{prefix}visual.positional_embedding"].shape[0] - 1) ** 0.5)
    embed_dim = int(state[f"{prefix}visual.proj"].shape[1])
    image_size = int(patch * grid)
    return {
        "name": f"openai-clip-vit-w{width}-l{layers}-p{patch}",
        # OpenAI's ViTs use 64-wide heads and QuickGELU (open_clip's `-quickgelu` configs)
        "model_cfg": {
            "embed_dim": embed_dim,
            "quick_gelu": True,
            "vision_cfg": {"image_size": image_size, "layers": layers, "width": int(width), "patch_size": int(patch),
                           "head_width": 64},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 1},
        },
        "preprocess_cfg": {"size": image_size, "mean": [0.48145466, 0.4578275, 0.40821073],
                           "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic",
                           "resize_mode": "shortest"},
    }


def load_cm2_bank(path: str | Path | None, opt: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CM2's bank files (its `ret_utils.load_clip_memory_bank`): embeddings `(M, D)` float16, sentences, video ids."""
    if path is None:
        raise ConversionError(
            "CM2 retrieves from a memory bank that is not in the checkpoint; pass its folder with --memory-bank "
            "(CM2's data/bank or bank/<anet|yc2>/clip holding <name>_clip_token_embeds.npy)."
        )
    path = Path(path)
    names = opt.get("bank_type") or ["anet"]
    names = names if isinstance(names, list) else [names]
    embeds, sentences, videos = [], [], []
    for name in names:
        folder = next((c for c in (path / name / "clip", path / "clip", path) if (c / f"{name}_clip_token_embeds.npy").is_file()), None)
        if folder is None:
            raise ConversionError(
                f"no {name}_clip_token_embeds.npy under {path} (looked in {path / name / 'clip'}, {path / 'clip'}, {path}); "
                f"the options name the bank(s) {names}."
            )
        embeds.append(np.load(folder / f"{name}_clip_token_embeds.npy"))
        sentences.append(np.load(folder / f"{name}_scene_sentences.npy"))
        videos.append(np.load(folder / f"{name}_scene_videoID.npy"))
    embeddings = np.concatenate(embeds)
    embeddings = embeddings.reshape(embeddings.shape[0], -1)  # (M, 1, D) -> (M, D)
    return embeddings, np.concatenate(sentences), np.concatenate(videos)


def map_cm2_modules(tm: TensorMap, config: CACMIConfig) -> None:
    """CM2's modules beyond PDVC's: text projection, text cross-attention, CLIP, and the ones its forward never reads."""
    map_pdvc_modules(tm, config)
    tm.move_prefix("down_proj.0.LayerNorm", "cacmi.text_projection.norm1")
    tm.move_prefix("down_proj.0.net.1", "cacmi.text_projection.linear1")
    tm.move_prefix("down_proj.1.LayerNorm", "cacmi.text_projection.norm2")
    tm.move_prefix("down_proj.1.net.1", "cacmi.text_projection.linear2")
    for i in range(config.num_decoder_layers):
        src, dst = f"transformer.decoder.layers.{i}.text_cross", f"cacmi.decoder.layers.{i}.text_attn"
        for name in ("q", "k", "v"):
            tm.move(f"{src}.{name}.weight", f"{dst}.{name}_proj.weight")  # no bias (qkv_bias=False)
        tm.move_prefix(f"{src}.proj", f"{dst}.out_proj")
        tm.drop_prefix(f"transformer.decoder.layers.{i}.norm_t", "CM2 builds norm_t but normalises the text attention with norm1")
    tm.drop_prefix("pos_embed.duration_embed_layer", "RetPositionEmbeddingSine's duration layer, never called")
    for prefix in ("text_transformer_layers.", "text_positional_encoding.", "cls_token", "token_transformer_layers.",
                   "token_positional_encoding.", "background_embed"):
        tm.drop_prefix(prefix, UNUSED)
    if config.vision_config is not None:
        for key in tm.keys_under("clip_model.visual."):
            tm.put("vision_tower.visual." + key[len("clip_model.visual."):], tm.take(key))
    tm.drop_prefix("clip_model.", "CLIP text tower (and logit scale): CM2 embeds its bank offline")


def convert_cm2_state(state: dict, opt: dict, vocab_rows: int, bank: tuple[np.ndarray, np.ndarray, np.ndarray]):
    """(model, config, tensor map) of a CM2 state dict, options and bank."""
    from ..modeling_cacmi import CACMIForDenseCaptioning

    if not is_cm2_state_dict(state):
        raise ConversionError(
            "this is not a CM2 checkpoint (no clip_model.* / down_proj.* tensors); a PDVC checkpoint converts with "
            "`cacmi convert pdvc`."
        )
    embeddings, _, _ = bank
    fields = cm2_config_fields(opt, state, vocab_rows, embeddings.shape[0])
    fields["vision_config"] = openai_clip_vision_config(state)
    if fields["vision_config"] is not None:
        require(fields["vision_config"]["model_cfg"]["embed_dim"] == fields["feature_dim"],
                f"the checkpoint's CLIP embeds images into {fields['vision_config']['model_cfg']['embed_dim']} dims but "
                f"feature_dim is {fields['feature_dim']}.")
        fields["vision_normalize"] = False  # CM2's features are raw CLIP image embeddings (FrozenBiLM's recipe)
    config = CACMIConfig(**fields)
    model = CACMIForDenseCaptioning(config)
    tm = TensorMap(state, "CM2 checkpoint")
    map_cm2_modules(tm, config)
    require(embeddings.shape[1] == config.text_dim,
            f"the memory bank's embeddings are {embeddings.shape[1]}-d but the text projection takes {config.text_dim}.")
    tm.put("cacmi.memory_bank.embeddings", torch.from_numpy(embeddings.astype(np.float32)))
    # CM2 excludes by top-1 while training, so the video of each entry is not needed; keep "unknown"
    tm.put("cacmi.memory_bank.video_index", torch.full((embeddings.shape[0],), -1, dtype=torch.long))
    tm.finish(model)
    return model.eval(), config, tm


def convert_cm2(state: dict, opt: dict, checkpoint: Path, vocabulary=None, memory_bank=None):
    """A CM2 checkpoint as a `Converted`: model (with its bank and CLIP image tower), processor, card fields."""
    from ..processing_cacmi import CACMIProcessor, CACMIVideoProcessor
    from . import Converted
    from .common import find_vocabulary, reference_tokenizer, reference_vocabulary

    words = reference_vocabulary(find_vocabulary(opt, checkpoint, vocabulary))
    bank = load_cm2_bank(memory_bank, opt)
    model, config, tm = convert_cm2_state(state, opt, len(words) + 1, bank)
    tokenizer = reference_tokenizer(words, config.max_caption_len)
    if config.vision_config is not None:
        # CM2's features: every frame at 1 fps, not resized (FrozenBiLM's extraction)
        video_processor = CACMIVideoProcessor.from_open_clip(config.vision_config, num_frames=None, max_fps=1.0)
    else:
        video_processor = CACMIVideoProcessor(num_frames=None, max_fps=1.0)
    processor = CACMIProcessor(video_processor, tokenizer, memory_sentences=[str(s) for s in bank[1]])
    copies = sum(1 for how in tm.accounted.values() if how.startswith("copy of"))
    card = {
        "source": "CM2 (Kim et al., CVPR 2024)",
        "source_url": "https://github.com/ailab-kyunghee/CM2_DVC",
        "checkpoint": checkpoint.name,
        "features": "CLIP ViT-L/14 image embeddings at 1 fps, native length (the image tower is part of this folder).",
        "feature_note": (
            "CM2 used FrozenBiLM's extraction: ffmpeg fps=1, shorter side to 224 (bicubic), centre crop, CLIP "
            "normalisation, OpenAI `encode_image` in float16 on a GPU, no L2 normalisation. The processor does the "
            "same sampling and preprocessing with PyAV; the frames' decoded pixels can differ slightly from ffmpeg's."
        ),
        "reported": "see the CM2 README (ActivityNet Captions and YouCook2, densevid 2018 protocol)",
        "example": 'captioner("video.mp4")',
        "conversion": f"memory bank of {bank[0].shape[0]} captions ({', '.join(map(str, opt.get('bank_type', [])))}); "
        f"{config.retrieval_num_windows} windows, top-{config.retrieval_top_k}; re-ranking alpha {config.rerank_alpha}.",
    }
    return Converted(model, processor, card, dict(tm.dropped), copies)


__all__ = ["convert_cm2", "convert_cm2_state", "cm2_config_fields", "load_cm2_bank", "openai_clip_vision_config"]
