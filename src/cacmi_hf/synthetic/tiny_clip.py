"""A tiny open_clip model trained on the synthetic world, standing in for CLIP where none can be downloaded.

Architecture (``TINY_CLIP_MODEL_CFG``, about 3.9M parameters, 3.2M of them the BPE token table):
a ViT on 32 px images with 8 px patches (16 patches + class token), width 128, 3 layers, 4 heads;
a text transformer of width 64, 2 layers, 2 heads over a 16-token context (the synthetic captions
are at most 9 BPE tokens with start and end); a shared 128-d embedding space. 128 dimensions give
the feature extractor and the memory bank room to keep position and size cues beyond colour and
shape, at no noticeable cost for a model this size.

Training is contrastive on (frame, caption) pairs of the train split: every decoded frame in
which exactly one event's object is visible, paired with that event's caption. A frame cannot
show the action, so several captions fit one frame; the loss therefore contrasts each frame
against every distinct caption of the split (image->text) and each caption against the frames of
the batch with all its frames as positives (text->image), instead of treating copies of the same
caption as negatives. Seeded and deterministic for a fixed ``steps`` on one machine and thread
count; ``seconds`` caps wall time instead and then the result depends on the machine.

The model is saved in open_clip's ``local-dir`` format (``open_clip_config.json`` with
``model_cfg`` and ``preprocess_cfg``, plus ``open_clip_model.safetensors``), so that
``open_clip.create_model_and_transforms("local-dir:" + path)`` and
``open_clip.get_tokenizer("local-dir:" + path)`` load it offline (open_clip >= 3.0, where the
``local-dir:`` schema appeared). ``load_tiny_clip`` does both, and on older open_clip builds the
same model, preprocess and tokenizer from the folder's config itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .world import parse_caption, read_mp4

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

TINY_CLIP_MODEL_CFG: dict = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 128, "layers": 3, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_CLIP_PREPROCESS_CFG: dict = {
    "size": 32,
    "mode": "RGB",
    "mean": list(OPENAI_MEAN),
    "std": list(OPENAI_STD),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
TRAINING_NAME = "training.json"
CACHE_FORMAT = 1


@dataclass(frozen=True)
class TinyClipTrainingConfig:
    """Optimisation settings; ``steps`` fixes the run (deterministic), ``seconds`` caps it by wall time."""

    steps: int = 300
    seconds: float | None = None
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 30
    seed: int = 0


@dataclass
class LabelledFrames:
    """Frames showing exactly one event's object, with that event's caption."""

    frames: np.ndarray  # (N, H, W, 3) uint8
    captions: list[str]  # N captions
    video_ids: list[str]  # N ids, the video each frame comes from


def build_tiny_clip(model_cfg: dict | None = None):
    """A freshly initialised ``open_clip.CLIP`` from ``model_cfg`` (default ``TINY_CLIP_MODEL_CFG``)."""
    import open_clip

    cfg = json.loads(json.dumps(model_cfg or TINY_CLIP_MODEL_CFG))  # deep copy; open_clip edits dicts
    return open_clip.CLIP(**cfg)


def save_tiny_clip(model, path: str | os.PathLike, model_cfg: dict | None = None, preprocess_cfg: dict | None = None) -> Path:
    """Write ``model`` in open_clip's local-dir format (config JSON + safetensors) and return the folder."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg or TINY_CLIP_MODEL_CFG, "preprocess_cfg": preprocess_cfg or TINY_CLIP_PREPROCESS_CFG}
    (path / CONFIG_NAME).write_text(json.dumps(config, indent=1))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / WEIGHTS_NAME))
    return path


def load_tiny_clip(path: str | os.PathLike):
    """``(model in eval mode, preprocess, tokenizer)`` from a local-dir folder, offline."""
    import open_clip

    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{path / CONFIG_NAME} not found: {path} is not an open_clip local-dir model folder")
    if hasattr(open_clip.factory, "LOCAL_DIR_PREFIX"):
        model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
        tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
        return model.eval(), preprocess, tokenizer
    # open_clip < 3.0 has no local-dir schema: build the same three objects from the folder.
    from safetensors.torch import load_file

    config = json.loads((path / CONFIG_NAME).read_text())
    model = build_tiny_clip(config["model_cfg"])
    model.load_state_dict(load_file(str(path / WEIGHTS_NAME)))
    pre = {**TINY_CLIP_PREPROCESS_CFG, **config.get("preprocess_cfg", {})}
    preprocess = open_clip.image_transform(pre["size"], is_train=False, mean=pre["mean"], std=pre["std"])
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=config["model_cfg"]["text_cfg"]["context_length"])
    return model.eval(), preprocess, tokenizer


def frames_to_pixels(frames: np.ndarray, preprocess_cfg: dict | None = None) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) -> normalised pixel values (N, 3, S, S), as the saved preprocess does."""
    cfg = preprocess_cfg or TINY_CLIP_PREPROCESS_CFG
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W)
    if x.shape[-2:] != (size, size):
        # Square synthetic frames: resizing the shortest side is resizing the whole frame.
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


def labelled_frames(world_dir: str | os.PathLike, split: str = "train", *, max_videos: int | None = None) -> LabelledFrames:
    """Decode a split's videos and keep the frames where exactly one event's object can be seen.

    Frame ``t`` belongs to an event ``[s, e]`` when ``s <= t/fps < e``. Blinking objects are off in
    some of their frames; those are found by comparing with the video's background (the median of
    its frames outside every event) and dropped.
    """
    world_dir = Path(world_dir)
    annotation_path = world_dir / f"{split}.json"
    if not annotation_path.is_file():
        raise FileNotFoundError(f"{annotation_path} not found: no split {split!r} in world {world_dir}")
    annotations = json.loads(annotation_path.read_text())

    def one_video(video_id: str) -> tuple[np.ndarray, list[str]]:
        """The kept frames of one video and the caption of each."""
        entry = annotations[video_id]
        frames = read_mp4(world_dir / "videos" / f"{video_id}.mp4")  # (T, H, W, 3)
        fps = len(frames) / entry["duration"]
        t = np.arange(len(frames))
        spans = np.rint(np.asarray(entry["timestamps"], dtype=np.float64).reshape(-1, 2) * fps).astype(int)  # (E, 2)
        inside = (t[:, None] >= spans[None, :, 0]) & (t[:, None] < spans[None, :, 1])  # (T, E)
        single = inside.sum(1) == 1
        background_frames = ~inside.any(1)
        if background_frames.any():
            background = np.median(frames[background_frames], axis=0)  # (H, W, 3)
            changed = np.abs(frames.astype(np.int16) - background.astype(np.int16)).max(-1) > 40  # (T, H, W)
            single &= changed.sum((1, 2)) >= 3
        index = np.flatnonzero(single)
        return frames[index], [entry["sentences"][e] for e in inside[index].argmax(1)]

    from concurrent.futures import ThreadPoolExecutor

    kept_frames, captions, video_ids = [], [], []
    names = sorted(annotations)[:max_videos]
    # decoding releases the GIL: two threads keep both cores of a small machine busy, the order stays the same
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        for video_id, (frames, sentences) in zip(names, pool.map(one_video, names)):
            kept_frames.append(frames)
            captions += sentences
            video_ids += [video_id] * len(sentences)
    if not captions:
        raise ValueError(f"no frame of split {split!r} in {world_dir} shows a single event; check {annotation_path}")
    return LabelledFrames(np.concatenate(kept_frames), captions, video_ids)


def _contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss against distinct captions; image (B, D), text (U, D) normalised, target (B,) in [0, U)."""
    logits = scale * image_emb @ text_emb.T  # (B, U)
    image_to_text = F.cross_entropy(logits, target)
    positives = target[:, None] == torch.arange(text_emb.shape[0])[None, :]  # (B, U)
    present = positives.any(0)  # (U,) captions with a frame in the batch
    log_p = logits.log_softmax(0)  # (B, U): each caption's distribution over the batch's frames
    text_to_image = -torch.logsumexp(log_p.masked_fill(~positives, -torch.inf), 0)[present].mean()
    return (image_to_text + text_to_image) / 2


def train_tiny_clip(
    data: LabelledFrames,
    config: TinyClipTrainingConfig | None = None,
    *,
    model_cfg: dict | None = None,
    preprocess_cfg: dict | None = None,
    progress: bool = True,
    callback=None,
):
    """Train a fresh tiny CLIP on ``data``; returns ``(model in eval mode, history dict)``.

    ``callback(step, model)``, if given, runs after every optimiser step (e.g. to evaluate).
    """
    import open_clip

    from ..progress import progress as progress_bar

    config = config or TinyClipTrainingConfig()
    model_cfg = model_cfg or TINY_CLIP_MODEL_CFG
    torch.set_flush_denormal(True)  # a denormal underflow once made CPU steps 16x slower
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = build_tiny_clip(model_cfg).train()

    pixels = frames_to_pixels(data.frames, preprocess_cfg)  # (N, 3, S, S)
    vocabulary = sorted(set(data.captions))
    caption_index = {c: i for i, c in enumerate(vocabulary)}
    targets = torch.tensor([caption_index[c] for c in data.captions])  # (N,)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=model_cfg["text_cfg"]["context_length"])
    tokens = tokenizer(vocabulary)  # (U, context)

    # The BPE token table is 80% of the parameters but the captions use a few dozen of its rows:
    # sparse gradients and SparseAdam touch only those rows (the table gets no weight decay).
    table = model.token_embedding
    table.sparse = True
    dense = [(n, p) for n, p in model.named_parameters() if p is not table.weight]
    decay = [p for n, p in dense if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in dense if not (p.ndim >= 2 and "embedding" not in n)]
    optimizers = [
        torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.learning_rate,
            foreach=True,
        ),
        torch.optim.SparseAdam([table.weight], lr=config.learning_rate),
    ]

    def lr_factor(step: int) -> float:
        """Linear warm-up, then cosine decay to zero at ``config.steps``."""
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress_ = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress_)))

    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lr_factor) for o in optimizers]
    history: dict = {"loss": [], "steps": 0}
    start = time.perf_counter()
    bar = progress_bar(range(config.steps), desc="tiny CLIP", unit="step", enabled=progress)
    for step in bar:
        batch = torch.randint(len(targets), (config.batch_size,), generator=generator)  # (B,)
        image_emb = F.normalize(model.encode_image(pixels[batch]), dim=-1)  # (B, D)
        text_emb = F.normalize(model.encode_text(tokens), dim=-1)  # (U, D)
        loss = _contrastive_loss(image_emb, text_emb, targets[batch], model.logit_scale.exp().clamp(max=100))
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer, scheduler in zip(optimizers, schedulers):
            optimizer.step()
            scheduler.step()
        history["loss"].append(loss.item())
        history["steps"] = step + 1
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if callback is not None:
            callback(step + 1, model)
            model.train()
        if config.seconds is not None and time.perf_counter() - start >= config.seconds:
            break
    bar.close()
    table.sparse = False
    history["seconds"] = time.perf_counter() - start
    return model.eval(), history


def _file_digest(paths: list[Path]) -> str:
    """SHA-256 over the bytes of ``paths`` in order."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _world_digest(world_dir: Path, split: str) -> str:
    """Fingerprint of a split's data: its annotation file and every video it names."""
    annotation_path = world_dir / f"{split}.json"
    if not annotation_path.is_file():
        raise FileNotFoundError(f"{annotation_path} not found: generate the world first (cacmi_hf.synthetic.generate_world)")
    video_ids = sorted(json.loads(annotation_path.read_text()))
    videos = [world_dir / "videos" / f"{v}.mp4" for v in video_ids]
    missing = [str(v) for v in videos if not v.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} video(s) of {annotation_path} are missing, e.g. {missing[0]}; regenerate the world")
    return _file_digest([annotation_path, *videos])


def default_cache_dir() -> Path:
    """``$CACMI_HF_CACHE/tiny_clip``, else ``~/.cache/cacmi_hf/tiny_clip``."""
    return Path(os.environ.get("CACMI_HF_CACHE", Path.home() / ".cache" / "cacmi_hf")) / "tiny_clip"


def get_or_train_tiny_clip(
    world_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    *,
    seconds: float | None = None,
    steps: int | None = None,
    config: TinyClipTrainingConfig | None = None,
    model_cfg: dict | None = None,
    progress: bool = True,
) -> Path:
    """Path of a tiny CLIP trained on ``world_dir``'s train split, reusing a cached one with the same key.

    The key covers the model and preprocess configs, the training settings (seed included) and the
    bytes of the train annotations and videos. ``steps``/``seconds`` override ``config``; a few
    steps (e.g. ``steps=5``) give a quick model for tests.
    """
    world_dir = Path(world_dir)
    config = config or TinyClipTrainingConfig()
    overrides = {k: v for k, v in (("steps", steps), ("seconds", seconds)) if v is not None}
    config = dataclasses.replace(config, **overrides)
    model_cfg = model_cfg or TINY_CLIP_MODEL_CFG
    key_source = {
        "format": CACHE_FORMAT,
        "model_cfg": model_cfg,
        "preprocess_cfg": TINY_CLIP_PREPROCESS_CFG,
        "training": dataclasses.asdict(config),
        "data": _world_digest(world_dir, "train"),
    }
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / f"tiny-clip-{key[:16]}"
    if (target / WEIGHTS_NAME).is_file() and (target / TRAINING_NAME).is_file():
        if json.loads((target / TRAINING_NAME).read_text()).get("key") == key:
            return target

    data = labelled_frames(world_dir, "train")
    model, history = train_tiny_clip(data, config, model_cfg=model_cfg, progress=progress)
    # Save beside the target and rename, so a crash never leaves a half-written cached model.
    staging = cache_dir / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    save_tiny_clip(model, staging, model_cfg, TINY_CLIP_PREPROCESS_CFG)
    record = {
        "key": key,
        "key_source": key_source,
        "frames": len(data.captions),
        "steps": history["steps"],
        "seconds": history["seconds"],
        "final_loss": float(np.mean(history["loss"][-20:])),
        "first_loss": history["loss"][0],
    }
    (staging / TRAINING_NAME).write_text(json.dumps(record, indent=1))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


@torch.no_grad()
def evaluate_zero_shot(model_path: str | os.PathLike, world_dir: str | os.PathLike, split: str = "val") -> dict:
    """Zero-shot colour and shape accuracy on a split's single-event frames, prompts "a red circle" etc.

    Every (colour, shape) pair seen in the split's captions is one prompt; a frame's prediction
    is the prompt nearest its image embedding, scored separately for colour and shape.
    """
    model, _, tokenizer = load_tiny_clip(model_path)
    preprocess_cfg = json.loads((Path(model_path) / CONFIG_NAME).read_text())["preprocess_cfg"]
    return zero_shot_scores(model, tokenizer, labelled_frames(world_dir, split), preprocess_cfg)


@torch.no_grad()
def zero_shot_scores(model, tokenizer, data: LabelledFrames, preprocess_cfg: dict | None = None) -> dict:
    """``evaluate_zero_shot`` on a model and frames already in memory."""
    model.eval()
    truth = [parse_caption(c) for c in data.captions]
    pairs = sorted({(colour, shape) for colour, shape, _ in truth})
    text = F.normalize(model.encode_text(tokenizer([f"a {c} {s}" for c, s in pairs])), dim=-1)  # (P, D)
    pixels = frames_to_pixels(data.frames, preprocess_cfg)  # (N, 3, S, S)
    image = torch.cat([F.normalize(model.encode_image(chunk), dim=-1) for chunk in pixels.split(1024)])  # (N, D)
    predicted = [pairs[i] for i in (image @ text.T).argmax(1).tolist()]
    colour = np.mean([p[0] == t[0] for p, t in zip(predicted, truth)])
    shape = np.mean([p[1] == t[1] for p, t in zip(predicted, truth)])
    return {"colour": float(colour), "shape": float(shape), "frames": len(truth), "prompts": len(pairs)}
