"""open_clip towers built from a config (no download, no device moves), local weights, and torch preprocessing.

Shared by feature extraction, the memory-bank builder, the processor and the model's optional vision
tower. Building never downloads: a model name resolves to open_clip's bundled JSON config, and
weights come from a local file or `local-dir` folder unless the caller passes `allow_download=True`
(the `--pretrained openai` style tags and `hf-hub:` names need it).
"""

from __future__ import annotations

import copy
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# 32 px, patch 8, two layers per tower: for tests and the synthetic world (about 3.5M parameters,
# most of them the 49408-token embedding the bundled BPE tokenizer needs).
TINY_OPEN_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
_WEIGHT_NAMES = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin", "model.pth",
)


@dataclass
class OpenCLIPSpec:
    """A resolved open_clip model: its `model_cfg`, image `preprocess_cfg` and where its weights are."""

    name: str
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None  # local weights file, None = random initialisation

    @property
    def image_size(self) -> int:
        """Side of the square input image."""
        size = self.preprocess_cfg.get("size", self.model_cfg["vision_cfg"].get("image_size", 224))
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def embed_dim(self) -> int:
        """Size of the joint image/text embedding."""
        return int(self.model_cfg["embed_dim"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (name, model_cfg, preprocess_cfg), as stored beside features and banks."""
        return {"name": self.name, "model_cfg": self.model_cfg, "preprocess_cfg": self.preprocess_cfg}


def _default_preprocess(model_cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "size": model_cfg.get("vision_cfg", {}).get("image_size", 224),
        "mean": OPENAI_CLIP_MEAN,
        "std": OPENAI_CLIP_STD,
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    }


def _find_weights(folder: Path) -> str | None:
    for name in _WEIGHT_NAMES:
        if (folder / name).is_file():
            return str(folder / name)
    found = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) + sorted(folder.glob("*.pt*"))
    return str(found[0]) if found else None


def _read_local_dir(folder: Path) -> OpenCLIPSpec:
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {CONFIG_FILE}; an open_clip local-dir folder needs it beside the weights "
            f"(save one with save_open_clip_local_dir)."
        )
    data = json.loads(config_path.read_text())
    model_cfg = data.get("model_cfg", data)
    if "vision_cfg" not in model_cfg:
        raise ValueError(f"{config_path} has no model_cfg/vision_cfg; it is not an open_clip config.")
    preprocess = {**_default_preprocess(model_cfg), **data.get("preprocess_cfg", {})}
    return OpenCLIPSpec(f"local-dir:{folder}", model_cfg, preprocess, _find_weights(folder))


def _is_torchscript_archive(path: str) -> bool:
    """OpenAI's own CLIP release files are TorchScript archives (trained with QuickGELU)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def resolve_open_clip(
    model: str | os.PathLike | dict[str, Any] = "ViT-L-14",
    pretrained: str | os.PathLike | None = None,
    *,
    allow_download: bool = False,
    quick_gelu: bool | None = None,
) -> OpenCLIPSpec:
    """Resolve a model (bundled name, `local-dir:` folder, folder path, `hf-hub:` id or config dict) and its weights.

    `pretrained` is a local weights file, a `local-dir` folder, or an open_clip tag such as "openai"
    (tags and `hf-hub:` ids download, so they need `allow_download=True`). `quick_gelu` overrides the
    activation; by default it follows the tag, and OpenAI TorchScript files turn it on.
    """
    import open_clip

    if isinstance(model, dict):
        model_cfg = copy.deepcopy(model.get("model_cfg", model))
        preprocess = {**_default_preprocess(model_cfg), **model.get("preprocess_cfg", {})}
        spec = OpenCLIPSpec(model.get("name", "custom"), model_cfg, preprocess)
    else:
        text = os.fspath(model)
        if text.startswith("local-dir:") or Path(text).is_dir():
            spec = _read_local_dir(Path(text.removeprefix("local-dir:")))
        elif text.startswith("hf-hub:"):
            if not allow_download:
                raise ValueError(f"{text!r} needs a download; pass allow_download=True or give a local-dir folder.")
            from huggingface_hub import snapshot_download

            folder = snapshot_download(text.removeprefix("hf-hub:"), allow_patterns=[CONFIG_FILE, "*.safetensors", "*.bin"])
            spec = _read_local_dir(Path(folder))
            spec.name = text
        else:
            model_cfg = open_clip.get_model_config(text.replace("/", "-"))
            if model_cfg is None:
                raise ValueError(
                    f"Unknown open_clip model {text!r}; use a bundled name (e.g. ViT-L-14, ViT-B-32), a local-dir "
                    "folder with open_clip_config.json, or a config dict."
                )
            spec = OpenCLIPSpec(text, model_cfg, _default_preprocess(model_cfg))
    if pretrained is not None:
        weights = os.fspath(pretrained)
        if Path(weights).is_dir():
            folder_spec = _read_local_dir(Path(weights))
            spec = OpenCLIPSpec(folder_spec.name, folder_spec.model_cfg, folder_spec.preprocess_cfg, folder_spec.checkpoint)
        elif Path(weights).is_file():
            spec.checkpoint = weights
            if quick_gelu is None and _is_torchscript_archive(weights):
                spec.model_cfg["quick_gelu"] = True
        else:
            tag_cfg = open_clip.get_pretrained_cfg(spec.name, weights)
            if not tag_cfg:
                raise FileNotFoundError(
                    f"--pretrained {weights!r} is neither a file, a folder, nor an open_clip tag of {spec.name} "
                    f"(tags: {open_clip.list_pretrained_tags_by_model(spec.name)})."
                )
            if not allow_download:
                raise ValueError(f"Pretrained tag {weights!r} needs a download; pass allow_download=True or a local file.")
            from open_clip.pretrained import download_pretrained

            spec.checkpoint = download_pretrained(tag_cfg)
            spec.model_cfg["quick_gelu"] = bool(tag_cfg.get("quick_gelu", False))
            for key in ("mean", "std", "interpolation", "resize_mode"):
                if tag_cfg.get(key):
                    spec.preprocess_cfg[key] = tag_cfg[key]
            spec.name = f"{spec.name}:{weights}"
    if quick_gelu is not None:
        spec.model_cfg["quick_gelu"] = quick_gelu
    return spec


def build_open_clip_model(config: OpenCLIPSpec | dict[str, Any] | str) -> torch.nn.Module:
    """Instantiate the open_clip model of a spec/config/name with random weights (no download, no `.to()`)."""
    import open_clip

    spec = config if isinstance(config, OpenCLIPSpec) else resolve_open_clip(config)
    cfg = copy.deepcopy(spec.model_cfg)
    custom_text = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    if "hf_model_name" in cfg.get("text_cfg", {}):
        cfg["text_cfg"]["hf_model_pretrained"] = False  # never fetch text weights while building
    if "timm_model_name" in cfg.get("vision_cfg", {}):
        cfg["vision_cfg"]["timm_model_pretrained"] = False
    cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    cfg.pop("multimodal_cfg", None)
    return cls(**cfg)


def load_open_clip_weights(model: torch.nn.Module, checkpoint: str | os.PathLike) -> None:
    """Load a local weights file (.safetensors, .bin/.pt state dict, or OpenAI TorchScript) into `model`, strictly."""
    from open_clip.factory import load_checkpoint

    path = os.fspath(checkpoint)
    if not Path(path).is_file():
        raise FileNotFoundError(f"open_clip weights file not found: {path}.")
    load_checkpoint(model, path, strict=True, weights_only=True)


def load_open_clip(
    model: str | os.PathLike | dict[str, Any] = "ViT-L-14",
    pretrained: str | os.PathLike | None = None,
    *,
    allow_download: bool = False,
    quick_gelu: bool | None = None,
) -> tuple[torch.nn.Module, OpenCLIPSpec]:
    """Build, load weights (if any) and return `(model in eval mode, spec)`; see `resolve_open_clip`."""
    spec = resolve_open_clip(model, pretrained, allow_download=allow_download, quick_gelu=quick_gelu)
    clip = build_open_clip_model(spec)
    if spec.checkpoint is not None:
        load_open_clip_weights(clip, spec.checkpoint)
    return clip.eval().requires_grad_(False), spec


def save_open_clip_local_dir(model: torch.nn.Module, spec: OpenCLIPSpec, folder: str | os.PathLike) -> Path:
    """Write `open_clip_config.json` + `open_clip_model.safetensors` (open_clip's `local-dir:` format)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": spec.model_cfg, "preprocess_cfg": {**spec.preprocess_cfg}}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=list))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))
    return folder


def causal_text_mask(context_length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Additive causal mask `(n, n)` of open_clip text towers (-inf above the diagonal)."""
    return torch.full((context_length, context_length), float("-inf"), device=device).triu_(1)


def rebuild_text_attention_masks(model: torch.nn.Module) -> None:
    """Recompute open_clip's non-persistent causal `attn_mask` buffers (needed after a meta-device build)."""
    for module in model.modules():
        mask = module._buffers.get("attn_mask")
        if mask is not None and mask.dim() == 2 and mask.shape[0] == mask.shape[1]:
            device = None if mask.is_meta else mask.device
            module._buffers["attn_mask"] = causal_text_mask(mask.shape[0], device=device)


def resize_crop_frames(
    frames: torch.Tensor | np.ndarray,
    image_size: int = 224,
    *,
    resize_mode: str = "shortest",
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """Geometric half of CLIP preprocessing: uint8 RGB `(T, H, W, 3)` or `(T, 3, H, W)` -> uint8 `(T, 3, S, S)`.

    Resize (shorter side to S, antialiased, rounded to uint8 as PIL does), then centre crop; "squash"
    resizes to S x S, "longest" fits the longer side and pads with black.
    """
    if isinstance(frames, np.ndarray) and not frames.flags.writeable:
        frames = frames.copy()  # torch cannot wrap read-only numpy memory
    x = torch.as_tensor(frames)
    if x.dim() != 4:
        raise ValueError(f"CLIP preprocessing expects (T, H, W, 3) or (T, 3, H, W) frames, got shape {tuple(x.shape)}.")
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.permute(0, 3, 1, 2)  # (T,3,H,W)
    if x.shape[1] != 3:
        raise ValueError(f"CLIP preprocessing expects 3 RGB channels, got shape {tuple(x.shape)}.")
    if x.shape[0] == 0:
        return torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
    height, width = x.shape[-2:]
    mode = {"bicubic": "bicubic", "bilinear": "bilinear"}.get(interpolation)
    if mode is None:
        raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}.")
    if resize_mode == "squash":
        size = (image_size, image_size)
    elif resize_mode == "shortest":
        short, long = min(height, width), max(height, width)
        new_long = int(image_size * long / short)  # truncation, as torchvision's Resize
        size = (image_size, new_long) if height <= width else (new_long, image_size)
    elif resize_mode == "longest":
        scale = image_size / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
    else:
        raise ValueError(f"resize_mode must be 'shortest', 'longest' or 'squash', got {resize_mode!r}.")
    if tuple(size) != (height, width):
        x = F.interpolate(x.float(), size=size, mode=mode, antialias=True, align_corners=False)
        x = x.round_().clamp_(0, 255).to(torch.uint8)  # (T,3,h,w) back on the uint8 grid
    if resize_mode == "longest":
        pad_h, pad_w = image_size - x.shape[-2], image_size - x.shape[-1]
        return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0)
    top = int(round((x.shape[-2] - image_size) / 2.0))
    left = int(round((x.shape[-1] - image_size) / 2.0))
    return x[..., top : top + image_size, left : left + image_size].contiguous()  # (T,3,S,S)


def normalize_pixels(
    pixels: torch.Tensor, mean: Sequence[float] = OPENAI_CLIP_MEAN, std: Sequence[float] = OPENAI_CLIP_STD
) -> torch.Tensor:
    """uint8 `(T, 3, S, S)` -> float32 scaled to [0, 1] and normalised with the model's mean/std."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(1, 3, 1, 1)
    return (pixels.float() / 255.0 - mean_t) / std_t


def preprocess_frames(
    frames: torch.Tensor | np.ndarray,
    image_size: int = 224,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
    *,
    resize_mode: str = "shortest",
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """CLIP eval preprocessing of uint8 RGB frames `(T, H, W, 3)` or `(T, 3, H, W)` -> `(T, 3, S, S)` float32.

    Same steps as open_clip's eval transform: resize (shorter side to S, antialiased, rounded back to
    uint8 values as PIL would), centre crop (or squash / letterbox pad), scale to [0, 1], normalise.
    """
    pixels = resize_crop_frames(frames, image_size, resize_mode=resize_mode, interpolation=interpolation)
    return normalize_pixels(pixels, mean, std)


def spec_preprocess(spec: OpenCLIPSpec) -> Callable[[torch.Tensor | np.ndarray], torch.Tensor]:
    """`preprocess_frames` bound to a spec's image size, mean, std and resize mode."""
    cfg = spec.preprocess_cfg

    def preprocess(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        return preprocess_frames(
            frames,
            spec.image_size,
            cfg.get("mean", OPENAI_CLIP_MEAN),
            cfg.get("std", OPENAI_CLIP_STD),
            resize_mode=cfg.get("resize_mode", "shortest"),
            interpolation=cfg.get("interpolation", "bicubic"),
        )

    return preprocess


# --- Tower precision. bf16 *weights* (not autocast: on CPU `torch.autocast` re-casts every weight at every
# --- call and ran 6x slower than fp32 here) use the CPU's native bf16 dot products where it has them.

TOWER_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}
TOWER_DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether this CPU has native bf16 dot products (x86 `avx512_bf16` / `amx_bf16`, Arm `bf16`)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.partition(":")[2].split())
            return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    # no cpuinfo (macOS, Windows): ask torch's own dispatch level, which names AMX / bf16 builds when present
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    return "AMX" in capability or "BF16" in capability


def resolve_tower_dtype(dtype: str | torch.dtype | None, device: torch.device | str = "cpu") -> torch.dtype:
    """The weight dtype of an image tower: "auto" is bf16 on GPU or on a CPU with native bf16, else fp32.

    Explicit "fp32" / "bf16" / "fp16" (or the long names, or a torch dtype) are taken as given; None is fp32.
    """
    if isinstance(dtype, torch.dtype):
        if dtype not in TOWER_DTYPES.values():
            raise ValueError(f"Tower dtype must be float32, bfloat16 or float16, got {dtype}.")
        return dtype
    if dtype is None:
        return torch.float32
    name = str(dtype).lower()
    if name == "auto":
        kind = torch.device(device).type
        if kind == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if kind == "cpu":
            return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
        return torch.float32
    if name not in TOWER_DTYPES:
        raise ValueError(f"Tower dtype must be one of {', '.join(TOWER_DTYPE_CHOICES)}, got {dtype!r}.")
    return TOWER_DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """Short name ("fp32", "bf16", "fp16") of a tower dtype, as recorded beside extracted features."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters())
    return param.device, param.dtype


@torch.inference_mode()
def encode_images(model: torch.nn.Module, pixel_values: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised image embeddings `(N, D)` float32 (on CPU) of preprocessed images `(N, 3, S, S)`."""
    device, dtype = _model_device_dtype(model)
    chunks = [
        model.encode_image(pixel_values[i : i + batch_size].to(device=device, dtype=dtype)).float()
        for i in range(0, pixel_values.shape[0], batch_size)
    ]
    if not chunks:
        return torch.zeros(0, model.visual.output_dim if hasattr(model.visual, "output_dim") else 0)
    return F.normalize(torch.cat(chunks), dim=-1).cpu()


def get_text_tokenizer(spec: OpenCLIPSpec) -> Callable[[list[str]], torch.Tensor]:
    """The spec's text tokenizer (open_clip's bundled BPE for CLIP text towers; offline)."""
    import open_clip

    text_cfg = spec.model_cfg.get("text_cfg", {})
    context_length = text_cfg.get("context_length", 77)
    if "hf_tokenizer_name" in text_cfg:
        return open_clip.tokenizer.HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=context_length)
    return open_clip.SimpleTokenizer(context_length=context_length, **text_cfg.get("tokenizer_kwargs", {}))


@torch.inference_mode()
def encode_texts(
    model: torch.nn.Module,
    sentences: Sequence[str],
    tokenizer: Callable[[list[str]], torch.Tensor],
    batch_size: int = 256,
) -> torch.Tensor:
    """L2-normalised text embeddings `(M, D)` float32 (on CPU) of `sentences`, in batches."""
    device, _ = _model_device_dtype(model)
    chunks = []
    for i in range(0, len(sentences), batch_size):
        tokens = tokenizer(list(sentences[i : i + batch_size])).to(device)  # (b, context_length)
        chunks.append(model.encode_text(tokens).float())
    if not chunks:
        return torch.zeros(0, 0)
    return F.normalize(torch.cat(chunks), dim=-1).cpu()


__all__ = [
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "TINY_OPEN_CLIP_CONFIG",
    "OpenCLIPSpec",
    "TOWER_DTYPES",
    "TOWER_DTYPE_CHOICES",
    "build_open_clip_model",
    "cpu_has_native_bf16",
    "dtype_name",
    "resolve_tower_dtype",
    "causal_text_mask",
    "encode_images",
    "encode_texts",
    "get_text_tokenizer",
    "load_open_clip",
    "load_open_clip_weights",
    "normalize_pixels",
    "preprocess_frames",
    "resize_crop_frames",
    "rebuild_text_attention_masks",
    "resolve_open_clip",
    "save_open_clip_local_dir",
    "spec_preprocess",
]
