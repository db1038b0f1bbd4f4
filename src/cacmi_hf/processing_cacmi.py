"""CACMIProcessor: videos (files, bytes, frame arrays) or precomputed features in, model inputs out; events out.

The video side samples L frames spread over the whole video at no more than `max_fps` (1 fps, as the
features the model trains on): the 1 fps grid of the video is resized to `num_frames` = L items by
nearest index, so a long video costs L CLIP passes whatever its duration, and a short one repeats
frames exactly as the resized training features do (see `video_decoding`). Frames are decoded already
downscaled (shorter side `decode_short_side`) and CLIP-preprocessed as open_clip's eval transform.
Precomputed features pass through unchanged (give them resized to L, like the training features).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.video_processing_utils import VideoProcessorMixin

from .open_clip_tower import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, OpenCLIPSpec, preprocess_frames, resolve_open_clip
from .post_processing import check_event_count, post_process_dense_video_captioning
from .video_decoding import VideoDecodingError, VideoReader, frames_at_seeking, keyframe_pts, nearest_indices, sample_times  # noqa: F401 (re-exported)

MEMORY_SENTENCES_FILE = "memory_sentences.json"


class CACMIVideoProcessorKwargs(TypedDict, total=False):
    """Options of `CACMIVideoProcessor` that `from_pretrained(..., **kwargs)` may override."""

    num_frames: int | None
    max_fps: float
    image_size: int
    image_mean: list[float]
    image_std: list[float]
    resize_mode: str
    interpolation: str
    decode_short_side: int | None
    seek: bool


@dataclass
class SampledVideo:
    """The frames one video contributes: `frames (L, H, W, 3)` uint8 at `times (L,)` seconds of a `duration` s video."""

    frames: np.ndarray
    times: np.ndarray
    duration: float
    name: str


def _is_source(video: Any) -> bool:
    """A path, encoded bytes or a binary file object (something PyAV opens)."""
    return isinstance(video, (str, os.PathLike, bytes, bytearray)) or hasattr(video, "read")


def _video_name(video: Any, index: int) -> str:
    if isinstance(video, (str, os.PathLike)):
        return os.fspath(video)
    if isinstance(video, (bytes, bytearray)):
        return f"video {index} (<{len(video)} bytes>)"
    return f"video {index}"


def _check_frames(frames: Any, name: str) -> np.ndarray:
    """A `(T, H, W, 3)` uint8 RGB array from a numpy array or tensor, or a ValueError saying what is wrong."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"{name}: frames must be a numpy array or torch tensor, got {type(frames).__name__}.")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        hint = " (channels first? use frames.permute(0, 2, 3, 1))" if frames.ndim == 4 and frames.shape[1] == 3 else ""
        raise ValueError(
            f"{name}: frames must have shape (T, H, W, 3) RGB, got {tuple(frames.shape)}{hint}; "
            "a single image is a one-frame video of shape (1, H, W, 3)."
        )
    if frames.dtype != np.uint8:
        raise ValueError(
            f"{name}: frames must be uint8 (0-255) RGB, got dtype {frames.dtype}; convert floats in [0, 1] with "
            "(frames * 255).round().astype(np.uint8)."
        )
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"{name}: frames array {tuple(frames.shape)} is empty; a video needs at least one frame.")
    return frames


def _check_fps(fps: Any, name: str) -> float:
    if fps is None:
        raise ValueError(
            f"{name} is a frames array without fps: pass fps= (the array's frames per second) so its duration and "
            "frame times are known."
        )
    fps = float(fps)
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"{name}: fps must be a positive number, got {fps!r}.")
    return fps


class CACMIVideoProcessor(VideoProcessorMixin):
    r"""
    Turns videos into `pixel_values_videos (B, L, 3, S, S)`, `video_mask (B, L)` and `durations (B,)`.

    A video is a path, encoded bytes, a binary file object, a frames array `(T, H, W, 3)` uint8 with its
    `fps`, or a dict `{"frames": array, "fps": float}`.

    Args:
        num_frames (`int` or `None`, defaults to 100): L, frames per video (the model's `config.num_frames`);
            None keeps every frame of the `max_fps` grid (cost then grows with the duration).
        max_fps (`float`, defaults to 1.0): rate of the sampling grid (the rate of the training features).
        image_size (`int`, defaults to 224): CLIP input side S.
        image_mean / image_std (`list[float]`): CLIP normalisation (OpenAI CLIP's by default).
        resize_mode (`str`, defaults to "shortest"): open_clip's resize mode ("shortest" + centre crop,
            "longest" + pad, "squash").
        interpolation (`str`, defaults to "bicubic"): "bicubic" or "bilinear".
        decode_short_side (`int` or `None`, defaults to `image_size`): frames whose shorter side is larger are
            downscaled while decoding, so memory stays bounded whatever the resolution.
        seek (`bool`, defaults to True): decode files from the keyframe before each sampled time instead of
            decoding every frame (same frames; see `frames_at_seeking`).
    """

    model_input_names = ["pixel_values_videos", "video_mask", "durations"]
    valid_kwargs = CACMIVideoProcessorKwargs

    def __init__(
        self,
        num_frames: int | None = 100,
        max_fps: float = 1.0,
        image_size: int = 224,
        image_mean: Sequence[float] = OPENAI_CLIP_MEAN,
        image_std: Sequence[float] = OPENAI_CLIP_STD,
        resize_mode: str = "shortest",
        interpolation: str = "bicubic",
        decode_short_side: int | None = None,
        seek: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be >= 1 (or None for every frame at max_fps), got {num_frames}.")
        if not max_fps > 0:
            raise ValueError(f"max_fps must be > 0, got {max_fps}.")
        if resize_mode not in ("shortest", "longest", "squash"):
            raise ValueError(f"resize_mode must be 'shortest', 'longest' or 'squash', got {resize_mode!r}.")
        if interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}.")
        self.num_frames = num_frames
        self.max_fps = float(max_fps)
        self.image_size = int(image_size)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        self.resize_mode = resize_mode
        self.interpolation = interpolation
        self.decode_short_side = int(decode_short_side) if decode_short_side is not None else self.image_size
        self.seek = bool(seek)

    @classmethod
    def from_open_clip(
        cls, clip: OpenCLIPSpec | dict[str, Any] | str, num_frames: int | None = 100, max_fps: float = 1.0, **kwargs
    ) -> "CACMIVideoProcessor":
        """A processor with the image size and normalisation of an open_clip model (spec, `vision_config` dict or name)."""
        spec = clip if isinstance(clip, OpenCLIPSpec) else resolve_open_clip(clip)
        cfg = spec.preprocess_cfg
        return cls(
            num_frames=num_frames,
            max_fps=max_fps,
            image_size=spec.image_size,
            image_mean=cfg.get("mean", OPENAI_CLIP_MEAN),
            image_std=cfg.get("std", OPENAI_CLIP_STD),
            resize_mode=cfg.get("resize_mode", "shortest"),
            interpolation=cfg.get("interpolation", "bicubic"),
            **kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        """The config, `num_frames` kept when None (every frame at `max_fps`), which the base class would drop."""
        output = super().to_dict()
        output["num_frames"] = self.num_frames
        return output

    def sample_times(self, duration: float) -> np.ndarray:
        """Times `(L,)` in seconds of the frames a `duration` s video contributes (bin centres, ascending)."""
        grid = sample_times(duration, fps=self.max_fps)  # (T,) at most max_fps
        if self.num_frames is None:
            return grid
        return grid[nearest_indices(len(grid), self.num_frames)]  # (L,)

    def sample_video(self, video: Any, fps: float | None = None, index: int = 0) -> SampledVideo:
        """Decode or index the frames of one video at `sample_times`; raises a ValueError/FileNotFoundError naming it."""
        name = _video_name(video, index)
        if isinstance(video, Mapping):
            if "frames" not in video:
                raise ValueError(f"{name}: a dict video needs 'frames' (T, H, W, 3) and 'fps'; got keys {sorted(video)}.")
            fps = video.get("fps", fps)
            name = str(video.get("name", name))
            video = video["frames"]
        if _is_source(video):
            with VideoReader(video) as reader:
                duration = reader.info.duration
                times = self.sample_times(duration)
                if self.seek:
                    frames = frames_at_seeking(reader, times, max_short_side=self.decode_short_side)
                else:
                    frames = list(reader.frames_at(times, max_short_side=self.decode_short_side))
                frames = np.stack(frames)
            return SampledVideo(frames, times, duration, name)
        if isinstance(video, (np.ndarray, torch.Tensor)):
            frames = _check_frames(video, name)
            fps = _check_fps(fps, name)
            duration = frames.shape[0] / fps
            times = self.sample_times(duration)
            # frame k is on screen during [k / fps, (k + 1) / fps)
            index_of = np.minimum(np.floor(times * fps).astype(np.int64), frames.shape[0] - 1)  # (L,)
            return SampledVideo(frames[index_of], times, duration, name)
        if isinstance(video, (list, tuple)):
            raise ValueError(
                f"{name} is a {type(video).__name__} of {len(video)} items; stack a video's frames into one "
                "(T, H, W, 3) uint8 array (np.stack(frames)) and pass fps=."
            )
        raise ValueError(
            f"{name}: unsupported video input {type(video).__name__}; give a file path, bytes, a file object, a "
            "(T, H, W, 3) uint8 frames array with fps=, or {'frames': ..., 'fps': ...}."
        )

    def preprocess_frames(self, frames: np.ndarray) -> torch.Tensor:
        """CLIP eval preprocessing of `(L, H, W, 3)` uint8 frames -> `(L, 3, S, S)` float32."""
        return preprocess_frames(
            frames,
            self.image_size,
            self.image_mean,
            self.image_std,
            resize_mode=self.resize_mode,
            interpolation=self.interpolation,
        )

    def __call__(self, videos: Any, fps: float | Sequence[float] | None = None, **kwargs) -> BatchFeature:
        """Same as `preprocess`."""
        return self.preprocess(videos, fps=fps, **kwargs)

    def preprocess(
        self, videos: Any, fps: float | Sequence[float] | None = None, return_tensors: str | None = "pt", **kwargs
    ) -> BatchFeature:
        r"""
        Sample and preprocess one video or a batch of them.

        Args:
            videos: one video or a list of videos (see the class docstring); a 5-D array is a batch of frame arrays.
            fps: frame rate of frame-array videos, one value for all or one per video.

        Returns:
            `BatchFeature` with `pixel_values_videos (B, L, 3, S, S)` float32, `video_mask (B, L)` bool (padding only
            when `num_frames` is None), `durations (B,)` float32 and `frame_times (B, L)` float32 seconds.
        """
        if kwargs:
            raise TypeError(f"CACMIVideoProcessor got unexpected arguments {sorted(kwargs)}.")
        batch = self.as_video_list(videos)
        fps_list = list(fps) if isinstance(fps, (list, tuple, np.ndarray)) else [fps] * len(batch)
        if len(fps_list) != len(batch):
            raise ValueError(f"fps has {len(fps_list)} values for {len(batch)} videos; give one or one per video.")
        sampled = [self.sample_video(video, f, i) for i, (video, f) in enumerate(zip(batch, fps_list))]
        return self.pack(sampled, return_tensors=return_tensors)

    @staticmethod
    def as_video_list(videos: Any) -> list[Any]:
        """One video or a batch of videos -> a list of videos (a 5-D array is a batch of frame arrays)."""
        if isinstance(videos, (np.ndarray, torch.Tensor)):
            if videos.ndim == 5:
                return list(videos)
            return [videos]
        if isinstance(videos, (list, tuple)):
            if not videos:
                raise ValueError("videos is an empty list; give at least one video.")
            return list(videos)
        return [videos]

    def pack(self, sampled: Sequence[SampledVideo], return_tensors: str | None = "pt") -> BatchFeature:
        """Preprocess and pad sampled videos into one batch (padding at the end, `video_mask` False there)."""
        pixels = [self.preprocess_frames(video.frames) for video in sampled]  # B × (L_i, 3, S, S)
        length = max(p.shape[0] for p in pixels)
        batch = len(pixels)
        pixel_values = torch.zeros(batch, length, 3, self.image_size, self.image_size)  # (B, L, 3, S, S)
        mask = torch.zeros(batch, length, dtype=torch.bool)  # (B, L)
        times = torch.zeros(batch, length)  # (B, L)
        for i, (p, video) in enumerate(zip(pixels, sampled)):
            pixel_values[i, : p.shape[0]] = p
            mask[i, : p.shape[0]] = True
            times[i, : p.shape[0]] = torch.as_tensor(video.times, dtype=torch.float32)
        durations = torch.tensor([video.duration for video in sampled], dtype=torch.float32)  # (B,)
        data = {"pixel_values_videos": pixel_values, "video_mask": mask, "durations": durations, "frame_times": times}
        return BatchFeature(data=data, tensor_type=return_tensors)


def prepare_video_features(
    video_features: Any, durations: Any, video_mask: Any = None, return_tensors: str | None = "pt"
) -> BatchFeature:
    """Precomputed features `(L, D)`, `(B, L, D)` or a list of `(L_i, D)` -> padded `video_features`, `video_mask`, `durations`.

    Values pass through unchanged (float32); shorter videos are zero-padded at the end.
    """
    if isinstance(video_features, (np.ndarray, torch.Tensor)):
        tensor = torch.as_tensor(video_features)
        if tensor.dim() == 2:
            items = [tensor]
        elif tensor.dim() == 3:
            items = list(tensor)
        else:
            raise ValueError(f"video_features must be (L, D), (B, L, D) or a list of (L, D); got shape {tuple(tensor.shape)}.")
    elif isinstance(video_features, (list, tuple)) and video_features:
        items = [torch.as_tensor(f) for f in video_features]
    else:
        raise ValueError(f"video_features must be an array, a tensor or a non-empty list of them, got {type(video_features).__name__}.")
    dims = {f.shape[-1] if f.dim() == 2 else None for f in items}
    if None in dims or len(dims) != 1:
        raise ValueError(
            f"every video's features must be (L, D) with one D; got shapes {[tuple(f.shape) for f in items]}."
        )
    for i, f in enumerate(items):
        if f.shape[0] == 0:
            raise ValueError(f"video_features of video {i} has no frames (shape {tuple(f.shape)}).")
        if not torch.isfinite(f.float()).all():
            raise ValueError(f"video_features of video {i} has NaN/inf values; fix the feature file.")
    if durations is None:
        raise ValueError("durations are required with video_features: the video lengths in seconds, one per video.")
    durations = torch.as_tensor(durations, dtype=torch.float32).reshape(-1)  # (B,)
    if durations.numel() != len(items):
        raise ValueError(f"{durations.numel()} durations for {len(items)} videos; give one duration per video.")
    if not bool((torch.isfinite(durations) & (durations > 0)).all()):
        raise ValueError(f"durations must be positive seconds, got {durations.tolist()}.")
    length = max(f.shape[0] for f in items)
    features = torch.zeros(len(items), length, items[0].shape[-1])  # (B, L, D)
    mask = torch.zeros(len(items), length, dtype=torch.bool)  # (B, L)
    for i, f in enumerate(items):
        features[i, : f.shape[0]] = f.float()
        mask[i, : f.shape[0]] = True
    if video_mask is not None:
        given = torch.as_tensor(video_mask, dtype=torch.bool)
        given = given[None] if given.dim() == 1 else given
        if tuple(given.shape) != tuple(mask.shape):
            raise ValueError(f"video_mask has shape {tuple(given.shape)}; expected {tuple(mask.shape)} like video_features.")
        mask &= given
    data = {"video_features": features, "video_mask": mask, "durations": durations}
    return BatchFeature(data=data, tensor_type=return_tensors)


class CACMIProcessor(ProcessorMixin):
    r"""
    The CACMI processor: a [`CACMIVideoProcessor`], the word-level caption tokenizer, and the sentences of the
    model's memory bank (in bank order, for showing what each pseudo-event retrieved).

    `processor(videos=...)` gives the inputs of the model's vision tower, `processor(video_features=...,
    durations=...)` those of the feature path; `post_process_dense_video_captioning(outputs, durations)` turns
    `model.generate(...)` into timed sentences. `event_count` ("argmax", PDVC's rule, or "expected") is how
    the event counter's logits become the number of events kept; it is saved in `processor_config.json`, so
    the pipeline and the Trainer's evaluation of a saved folder use it. `rerank_alpha` is the model config's
    `rerank_alpha`, copied when the model and processor are saved together (training, conversion) so that
    post-processing without the model ranks as the pipeline does; the pipeline reads the model's config.
    """

    def __init__(self, video_processor, tokenizer, memory_sentences: Sequence[str] | None = None,
                 event_count: str = "argmax", rerank_alpha: float = 1.0, **kwargs):
        check_event_count(event_count)
        super().__init__(video_processor, tokenizer, **kwargs)
        self.memory_sentences = list(memory_sentences) if memory_sentences is not None else None
        # the post-processing count rule the pipeline and the Trainer's evaluation use; saved with the processor
        self.event_count = event_count
        self.rerank_alpha = float(rerank_alpha)

    def to_dict(self) -> dict[str, Any]:
        """The processor config; the memory sentences go to their own file, not into `processor_config.json`."""
        output = super().to_dict()
        output.pop("memory_sentences", None)
        return output

    def __call__(
        self,
        videos: Any = None,
        video_features: Any = None,
        durations: Any = None,
        fps: float | Sequence[float] | None = None,
        video_mask: Any = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        r"""
        Model inputs for videos (decoded, sampled, CLIP-preprocessed) or for precomputed features.

        Args:
            videos: a path, bytes, file object, frames array `(T, H, W, 3)` uint8 (with `fps`), or a list of them.
            video_features: `(L, D)`, `(B, L, D)` or a list of `(L_i, D)` features, passed through unchanged.
            durations: seconds per video (required with `video_features`; read from the video otherwise).
            fps: frame rate of frames-array videos.
            video_mask: optional `(B, L)` mask of the given features.

        Returns:
            `BatchFeature` with `pixel_values_videos`, `video_mask`, `durations`, `frame_times` (videos) or
            `video_features`, `video_mask`, `durations` (features).
        """
        if (videos is None) == (video_features is None):
            raise ValueError("Give exactly one of videos= (files, bytes or frames) or video_features= (precomputed).")
        if videos is not None:
            return self.video_processor(videos, fps=fps, return_tensors=return_tensors, **kwargs)
        if kwargs:
            raise TypeError(f"CACMIProcessor got unexpected arguments {sorted(kwargs)}.")
        return prepare_video_features(video_features, durations, video_mask, return_tensors=return_tensors)

    def post_process_dense_video_captioning(
        self,
        outputs: Any,
        durations: Any,
        threshold: float | None = None,
        max_events: int | None = None,
        rerank_alpha: float | None = None,
        event_count: str | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Per video, `[{"timestamp": [s, e], "caption", "score", "query_index"}]` sorted by start (see `post_processing`).

        `event_count` ("argmax" | "expected") and `rerank_alpha` default to the processor's own (saved) values.
        """
        tok = self.tokenizer
        return post_process_dense_video_captioning(
            outputs.logits,
            outputs.pred_segments,
            outputs.pred_counts,
            getattr(outputs, "caption_ids", None),
            getattr(outputs, "caption_log_probs", None),
            durations,
            tokenizer=tok,
            rerank_alpha=self.rerank_alpha if rerank_alpha is None else float(rerank_alpha),
            threshold=threshold,
            max_events=max_events,
            event_count=event_count or self.event_count,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
            bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else 1,
            eos_token_id=tok.eos_token_id if tok.eos_token_id is not None else 2,
        )

    def retrieved_sentences(self, indices: Any) -> list:
        """Memory-bank sentences of retrieval indices (any nesting of ints, e.g. a `(c, k)` tensor) -> same nesting of str."""
        if self.memory_sentences is None:
            raise ValueError(
                "This processor has no memory-bank sentences: set processor.memory_sentences to the captions the "
                "model's memory bank was built from (in bank order) and save it again."
            )
        sentences = self.memory_sentences

        def lookup(value):
            if isinstance(value, list):
                return [lookup(v) for v in value]
            if not 0 <= value < len(sentences):
                raise ValueError(f"memory index {value} is outside the {len(sentences)} memory sentences of this processor.")
            return sentences[value]

        return lookup(torch.as_tensor(indices).tolist())

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save the processor (config, tokenizer, video processor, code) and the memory sentences."""
        files = super().save_pretrained(save_directory, push_to_hub=False, **kwargs)
        if self.memory_sentences is not None:
            path = os.path.join(save_directory, MEMORY_SENTENCES_FILE)
            with open(path, "w", encoding="utf-8") as f:
                json.dump(self.memory_sentences, f, ensure_ascii=False)
            files.append(path)
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            self.push_to_hub(repo_id, **kwargs)
        return files

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load a saved processor (and its memory sentences when the folder has them)."""
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        from transformers.utils import cached_file

        hub = {k: kwargs[k] for k in ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder") if k in kwargs}
        path = cached_file(
            pretrained_model_name_or_path,
            MEMORY_SENTENCES_FILE,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub,
        )
        if path is not None:
            with open(path, encoding="utf-8") as f:
                processor.memory_sentences = json.load(f)
        return processor


# Saved processors carry this file and an auto_map, so AutoProcessor loads them without the package.
CACMIProcessor.register_for_auto_class("AutoProcessor")
CACMIVideoProcessor.register_for_auto_class("AutoVideoProcessor")


def register() -> None:
    """Map `model_type="cacmi"` to CACMIProcessor / CACMIVideoProcessor in AutoProcessor / AutoVideoProcessor."""
    from transformers import AutoProcessor, AutoVideoProcessor

    from .configuration_cacmi import CACMIConfig

    AutoVideoProcessor.register(CACMIConfig, CACMIVideoProcessor, exist_ok=True)
    AutoProcessor.register(CACMIConfig, CACMIProcessor, exist_ok=True)


__all__ = [
    "CACMIProcessor",
    "CACMIVideoProcessor",
    "SampledVideo",
    "VideoDecodingError",
    "prepare_video_features",
    "register",
]
