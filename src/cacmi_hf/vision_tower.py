"""The optional frozen CLIP image tower inside CACMI: raw frames in, the same frame features extraction writes out.

`config.vision_config` holds an open_clip model description, `{"name", "model_cfg", "preprocess_cfg"}` as
`OpenCLIPSpec.to_dict()` writes it (a bare open_clip `model_cfg` works too). Only the image tower is built,
from the config (never `create_model`: no download, no device move), so `from_pretrained` can build it on
the meta device and load its weights from the CACMI checkpoint. Real CLIP weights go in with
`CACMIVisionTower.load_clip_weights` or `from_clip(CACMIForDenseCaptioning, "ViT-L-14", "weights.bin")`.
"""

from __future__ import annotations

import copy
import functools
import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import transformers.initialization as init

from .open_clip_tower import (
    OpenCLIPSpec,
    build_open_clip_model,
    causal_text_mask,
    load_open_clip_weights,
    resolve_open_clip,
    resolve_tower_dtype,
)


def vision_spec(vision_config: dict[str, Any] | OpenCLIPSpec) -> OpenCLIPSpec:
    """The `OpenCLIPSpec` described by `config.vision_config` (no weights path: those live in the checkpoint)."""
    if isinstance(vision_config, OpenCLIPSpec):
        return vision_config
    if not isinstance(vision_config, dict) or "vision_cfg" not in vision_config.get("model_cfg", vision_config):
        raise ValueError(
            "config.vision_config must be an open_clip model description {'model_cfg': {..., 'vision_cfg': ...}, "
            f"'preprocess_cfg': ...}} (see OpenCLIPSpec.to_dict()), got {str(vision_config)[:200]}."
        )
    return resolve_open_clip(vision_config)


def build_open_clip_vision_tower(spec: OpenCLIPSpec) -> nn.Module:
    """open_clip's image tower alone (ViT or ModifiedResNet) from a spec, random weights, no download."""
    from open_clip.model import _build_vision_tower

    cfg = copy.deepcopy(spec.model_cfg)
    vision_cfg = dict(cfg["vision_cfg"])
    if vision_cfg.get("timm_model_name"):
        raise ValueError(
            f"vision_config uses the timm image tower {vision_cfg['timm_model_name']!r}; CACMI's built-in tower "
            "supports open_clip ViT and ModifiedResNet towers. Extract features with the open_clip model instead "
            "and pass `video_features`."
        )
    return _build_vision_tower(cfg["embed_dim"], vision_cfg, quick_gelu=bool(cfg.get("quick_gelu", False)))


def _open_clip_owner_types() -> tuple[type, ...]:
    """open_clip module classes whose own parameters transformers' default initialiser does not cover."""
    from open_clip.modified_resnet import AttentionPool2d
    from open_clip.transformer import Attention, AttentionalPooler, LayerScale, VisionTransformer

    return (VisionTransformer, LayerScale, Attention, AttentionalPooler, AttentionPool2d)


def init_open_clip_module(module: nn.Module, vision_cfg: dict[str, Any]) -> None:
    """Initialise the parameters an open_clip module owns directly, as open_clip does (and its causal mask).

    Linear/Conv/LayerNorm/MultiheadAttention are left to `_init_weights`; here: class and position embeddings
    and output projection (normal, std width^-0.5), LayerScale, open_clip's own attention, attentional poolers,
    the ResNet attention pool, and any non-persistent causal `attn_mask`. Only `transformers.initialization`
    functions are used, so tensors loaded from a checkpoint are left alone.
    """
    from open_clip.modified_resnet import AttentionPool2d
    from open_clip.transformer import Attention, AttentionalPooler, LayerScale, VisionTransformer

    if isinstance(module, VisionTransformer):
        width = module.class_embedding.shape[-1]
        init.normal_(module.class_embedding, std=width**-0.5)
        init.normal_(module.proj, std=width**-0.5)
        if vision_cfg.get("pos_embed_type", "learnable") == "sin_cos_2d":
            from open_clip.pos_embed import get_2d_sincos_pos_embed

            table = get_2d_sincos_pos_embed(width, module.grid_size[0], cls_token=True)
            init.copy_(module.positional_embedding, torch.as_tensor(table, dtype=torch.float32))
        else:
            init.normal_(module.positional_embedding, std=width**-0.5)
    elif isinstance(module, LayerScale):
        init.constant_(module.gamma, float(vision_cfg.get("ls_init_value") or 1e-5))
    elif isinstance(module, Attention):
        init.normal_(module.in_proj_weight, std=module.scale)
        if module.in_proj_bias is not None:
            init.zeros_(module.in_proj_bias)
        if module.logit_scale is not None:
            init.constant_(module.logit_scale, math.log(10.0))
        if module.head_scale is not None:
            init.ones_(module.head_scale)
    elif isinstance(module, AttentionalPooler):
        init.normal_(module.query, std=1.0)
    elif isinstance(module, AttentionPool2d):
        init.normal_(module.positional_embedding, std=module.positional_embedding.shape[-1] ** -0.5)
    mask = module._buffers.get("attn_mask")
    if mask is not None and mask.dim() == 2 and mask.shape[0] == mask.shape[1] and not mask.is_meta:
        init.copy_(mask, causal_text_mask(mask.shape[0], device=mask.device))


class CACMIVisionTower(nn.Module):
    r"""
    Frozen open_clip image tower: preprocessed frames `(B, L, 3, S, S)` → L2-normalised image embeddings
    `(B, L, D)`, D = `config.feature_dim` (= the CLIP embedding size), exactly what `encode_images` gives
    feature extraction. Padded frames are skipped and come out as zeros.

    The tower never trains (`requires_grad` False, kept in eval mode so open_clip's patch dropout stays off);
    frames go through in chunks of `chunk_size` to bound activation memory.
    """

    def __init__(self, config, chunk_size: int = 64):
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"CACMIVisionTower chunk_size must be >= 1, got {chunk_size}.")
        spec = vision_spec(config.vision_config)
        if spec.embed_dim != config.feature_dim:
            raise ValueError(
                f"config.vision_config embeds images into {spec.embed_dim} dims but config.feature_dim is "
                f"{config.feature_dim}; set feature_dim={spec.embed_dim} (CACMIForDenseCaptioning.from_clip does)."
            )
        self.spec = spec
        self.image_size = spec.image_size
        self.chunk_size = chunk_size
        self.normalize = getattr(config, "vision_normalize", True)  # False: raw CLIP embeddings (CM2's features)
        self.visual = build_open_clip_vision_tower(spec)
        self.requires_grad_(False)
        # transformers initialises a missing parameter through the module that owns it, so the open_clip
        # modules with parameters of their own get an `init_special_weights` of their own
        owners = _open_clip_owner_types()
        for module in self.visual.modules():
            if isinstance(module, owners) or "attn_mask" in module._buffers:
                module.init_special_weights = functools.partial(init_open_clip_module, module, spec.model_cfg["vision_cfg"])

    def train(self, mode: bool = True) -> "CACMIVisionTower":
        """Stay in eval mode and frozen whatever the parent does (no patch dropout, fixed norms, no gradients)."""
        self.requires_grad_(False)  # loading re-creates parameters with requires_grad=True
        return super().train(False)

    @property
    def embed_dim(self) -> int:
        """Size D of the image embeddings."""
        return self.spec.embed_dim

    @property
    def dtype(self) -> torch.dtype:
        """Weight dtype of the tower (its outputs are float32 whatever it is)."""
        return next(self.visual.parameters()).dtype

    def set_dtype(self, dtype: str | torch.dtype | None = "auto") -> torch.dtype:
        """Cast the tower's weights to `dtype` ("auto", "fp32", "bf16", "fp16"; see `resolve_tower_dtype`); returns it.

        Only the weights change dtype (never autocast, which on CPU re-casts weights at every call); inputs are
        cast to it in `forward` and features come back float32.
        """
        weight = next(self.visual.parameters())
        resolved = resolve_tower_dtype(dtype, weight.device)
        if weight.dtype != resolved:
            self.visual.to(dtype=resolved)
        return resolved

    def frames_per_batch(self, memory_budget_mb: float) -> int:
        """Frames one tower batch may hold within `memory_budget_mb` of activations (>= 1).

        Estimate per frame for a ViT: ~12 width-sized tensors per token alive in a block plus two head x token x
        token attention maps, in the tower's dtype; a ResNet tower is costed like a ViT of its output width.
        """
        cfg = self.spec.model_cfg["vision_cfg"]
        width = int(cfg.get("width", 768))
        patch = int(cfg.get("patch_size", 32) or 32)
        tokens = (self.image_size // patch) ** 2 + 1
        heads = max(1, width // int(cfg.get("head_width", 64)))
        per_frame = (12 * tokens * width + 2 * heads * tokens * tokens) * self.dtype.itemsize
        return max(1, int(memory_budget_mb * 2**20 // per_frame))

    def forward(self, pixel_values_videos: torch.Tensor, video_mask: torch.Tensor | None = None) -> torch.Tensor:
        r"""
        Args:
            pixel_values_videos (`(B, L, 3, S, S)` float): CLIP-preprocessed frames (S = the tower's image size).
            video_mask (`(B, L)` bool, *optional*): True for real frames (default all); padding is skipped.

        Returns:
            `(B, L, D)` float32 frame embeddings, L2-normalised unless `config.vision_normalize` is False (whatever the
            tower's dtype), zero on padded frames.
        """
        if pixel_values_videos.dim() != 5 or pixel_values_videos.shape[2] != 3:
            raise ValueError(
                f"pixel_values_videos must be (batch, frames, 3, {self.image_size}, {self.image_size}), got "
                f"{tuple(pixel_values_videos.shape)}; build it with CACMIProcessor(videos=...)."
            )
        batch, frames = pixel_values_videos.shape[:2]
        if tuple(pixel_values_videos.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"pixel_values_videos frames are {tuple(pixel_values_videos.shape[-2:])} pixels but the vision tower "
                f"takes {self.image_size}x{self.image_size}; preprocess with the processor saved with this model."
            )
        if video_mask is None:
            video_mask = torch.ones(batch, frames, dtype=torch.bool, device=pixel_values_videos.device)
        if tuple(video_mask.shape) != (batch, frames):
            raise ValueError(f"video_mask must be {(batch, frames)} like pixel_values_videos, got {tuple(video_mask.shape)}.")
        weight = next(self.visual.parameters())
        flat = pixel_values_videos.flatten(0, 1)  # (B·L, 3, S, S)
        valid = torch.nonzero(video_mask.flatten().to(torch.bool)).squeeze(1)  # (V,)
        out = torch.zeros(batch * frames, self.embed_dim, device=weight.device)  # (B·L, D) float32
        with torch.no_grad():
            for chunk in valid.split(self.chunk_size):
                embedded = self.visual(flat[chunk].to(device=weight.device, dtype=weight.dtype))  # (c, D)
                if isinstance(embedded, tuple):  # towers built with output_tokens return (pooled, tokens)
                    embedded = embedded[0]
                out[chunk] = F.normalize(embedded.float(), dim=-1) if self.normalize else embedded.float()
        return out.view(batch, frames, self.embed_dim)

    def load_clip_weights(self, source: str | os.PathLike | nn.Module | dict[str, torch.Tensor]) -> None:
        """Copy CLIP image-tower weights in: a local weights file / `local-dir` folder, an open_clip model, or its state dict.

        Files go through open_clip's own checkpoint loader (safetensors, .bin/.pt, OpenAI TorchScript) into the
        full model of `config.vision_config`, whose image tower is then copied (strictly). Call it after the
        CACMI model is built (`post_init` re-initialises everything).
        """
        if isinstance(source, dict):
            state = {k.removeprefix("visual."): v for k, v in source.items() if k.startswith("visual.")} or source
        elif isinstance(source, nn.Module):
            state = (source.visual if hasattr(source, "visual") else source).state_dict()
        else:
            path = os.fspath(source)
            if os.path.isdir(path):
                path = resolve_open_clip(self.spec.to_dict(), path).checkpoint
                if path is None:
                    raise FileNotFoundError(f"No open_clip weights file in the folder {os.fspath(source)}.")
            clip = build_open_clip_model(self.spec)
            load_open_clip_weights(clip, path)
            state = clip.visual.state_dict()
        try:
            self.visual.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"The CLIP weights do not fit config.vision_config ({self.spec.name}): {str(err)[:500]}. Build the "
                "model with from_clip(...) for the same open_clip architecture as the weights."
            ) from err


def from_clip(
    model_class,
    clip_model: str | os.PathLike | dict[str, Any] = "ViT-L-14",
    pretrained: str | os.PathLike | None = None,
    config=None,
    *,
    allow_download: bool = False,
    **config_kwargs: Any,
):
    """A CACMI model of `model_class` with an open_clip image tower, and its weights when `pretrained` is given.

    `clip_model` is an open_clip name (bundled config, e.g. "ViT-L-14"), a `local-dir` folder or a config
    dict; `pretrained` a local weights file or folder (open_clip tags like "openai" need
    `allow_download=True`). The CACMI config is (a copy of) `config` or `CACMIConfig(**config_kwargs)`;
    its `vision_config` and `feature_dim` are set from the CLIP model.
    """
    from .configuration_cacmi import CACMIConfig

    spec = resolve_open_clip(clip_model, pretrained, allow_download=allow_download)
    if config is not None and config_kwargs:
        raise ValueError("from_clip takes either config= or config keyword arguments, not both.")
    if config_kwargs.get("feature_dim", spec.embed_dim) != spec.embed_dim:
        raise ValueError(
            f"feature_dim={config_kwargs['feature_dim']} contradicts the CLIP embedding size {spec.embed_dim} of {spec.name}."
        )
    config = copy.deepcopy(config) if config is not None else CACMIConfig(**config_kwargs)
    config.feature_dim = spec.embed_dim
    config.vision_config = spec.to_dict()
    model = model_class(config)
    tower = getattr(model, "vision_tower", None)
    if tower is None:
        raise ValueError(f"{model_class.__name__} built no vision tower from config.vision_config.")
    if spec.checkpoint is not None:
        tower.load_clip_weights(spec.checkpoint)
    return model


__all__ = ["CACMIVisionTower", "build_open_clip_vision_tower", "from_clip", "vision_spec"]
