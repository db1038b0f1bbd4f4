"""`pipeline("dense-video-captioning")`: caption a video file, a list of files, frames or precomputed features.

    pipe = pipeline("dense-video-captioning", model="path/to/cacmi")   # after `import cacmi_hf`
    pipe("cooking.mp4")  # [{"timestamp": [12.0, 31.5], "caption": "...", "score": 0.87}, ...]

A folder written by `pipe.save_pretrained(dir)` carries this module, the processor and the model code, so
`pipeline(model=dir, trust_remote_code=True)` works where `cacmi_hf` is not installed.
"""

from __future__ import annotations

import copy
import os
import queue
import threading
import warnings
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from transformers import Pipeline
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .post_processing import check_event_count
from .processing_cacmi import prepare_video_features

TASK = "dense-video-captioning"
ON_ERROR = ("raise", "warn", "return")
MAX_CHUNK_FRAMES = 8  # decode hand-over granularity: the first chunk (not overlapped) stays a small wait


class _FrameStream:
    """A video opened and its sampled frames decoded in a thread, CLIP-resized (uint8 `(b, 3, S, S)` chunks) into a
    bounded queue.

    The tower embeds chunk k while the thread decodes chunk k + 1 (and a list's next video opens, reads its packet
    index and decodes its first chunks during this one's tower); at most `depth` chunks wait, so memory is bounded
    by the chunk size whatever the video's length. `duration` and `times` are set once the file is open.
    """

    def __init__(self, source, processor, chunk: int, strict: bool = False, depth: int = 2):
        self.source, self.processor, self.chunk, self.strict = source, processor, chunk, strict
        self.reader = self.duration = self.times = None
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from .open_clip_tower import resize_crop_frames
        from .video_decoding import VideoReader, iter_frames_at_seeking

        vp = self.processor
        try:
            self.reader = VideoReader(self.source, strict=self.strict)
            self.duration = self.reader.info.duration
            self.times = vp.sample_times(self.duration)  # (L,)
            with self.reader:
                if vp.seek:
                    frames = iter_frames_at_seeking(self.reader, self.times, max_short_side=vp.decode_short_side)
                else:
                    frames = self.reader.frames_at(self.times, max_short_side=vp.decode_short_side)
                batch: list[np.ndarray] = []
                for frame in frames:
                    batch.append(frame)
                    if len(batch) == self.chunk:
                        self._put(("chunk", resize_crop_frames(np.stack(batch), vp.image_size, resize_mode=vp.resize_mode,
                                                                interpolation=vp.interpolation)))
                        batch = []
                if batch:
                    self._put(("chunk", resize_crop_frames(np.stack(batch), vp.image_size, resize_mode=vp.resize_mode,
                                                            interpolation=vp.interpolation)))
            self._put(("end", None))
        except Exception as err:  # noqa: BLE001 - reported as this video's error by the consumer
            self._put(("error", err))

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def __iter__(self):
        """uint8 `(b, 3, S, S)` chunks in time order; re-raises a decoding error of the thread."""
        try:
            while True:
                kind, payload = self.queue.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise payload
                yield payload
        finally:
            self.stop.set()


def _lookahead(iterable):
    """Yield each item after fetching the next one, so the next video's decoding starts before this one's tower."""
    iterator = iter(iterable)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for upcoming in iterator:
        yield current
        current = upcoming
    yield current


def _input_name(item: Any, index: int | None = None) -> str:
    """How a pipeline input is named in errors and warnings."""
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if isinstance(item, Mapping):
        for key in ("name", "id", "video_id", "video"):
            if isinstance(item.get(key), (str, os.PathLike)):
                return os.fspath(item[key])
    kind = "features" if isinstance(item, Mapping) and "video_features" in item else type(item).__name__
    return f"input {index} ({kind})" if index is not None else f"input ({kind})"


def _pad_stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack `(L_i, ...)` tensors into `(B, max L, ...)`, zero-padded at the end."""
    length = max(t.shape[0] for t in tensors)
    out = tensors[0].new_zeros((len(tensors), length, *tensors[0].shape[1:]))  # (B, L, ...)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out


def _is_file_source(item: Any) -> bool:
    """A path, encoded bytes or a binary file object (decoded by PyAV), as opposed to frames or features."""
    return isinstance(item, (str, os.PathLike, bytes, bytearray)) or hasattr(item, "read")


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch pipeline items as a list: videos are padded together in `_forward`, failed ones kept in place."""
    return {"items": [entry for item in items for entry in item["items"]]}


class DenseVideoCaptioningPipeline(Pipeline):
    r"""
    Dense video captioning: find the events of a video and write one sentence for each.

    Inputs (one, or a list processed in batches of `batch_size`):
        - a video file path, encoded bytes or a binary file object (decoded with PyAV);
        - a frames array `(T, H, W, 3)` uint8 with `fps=` (or `{"frames": array, "fps": float}`);
        - precomputed features `{"video_features": (L, D), "duration": seconds}`.
    Files and frames need a model with a vision tower (`config.vision_config`, see `from_clip`).

    Options (at construction or per call):
        threshold (`float`): drop kept events whose confidence is below it.
        max_events (`int`): keep this many events per video instead of the event counter's count.
        event_count (`str`): how the counter gives that count, "argmax" (PDVC) or "expected" (the mean count);
            defaults to the processor's `event_count`.
        return_retrieved (`bool` or `int`): also return, per pseudo-event of CFA, the memory-bank sentences it
            retrieved (all k, or the top n) — the output of each video is then `{"events": [...],
            "pseudo_events": [{"timestamp": [s, e], "retrieved": [{"sentence", "score", "index"}, ...]}]}`.
        fps (`float`): frame rate of frames-array inputs.
        on_error (`str`): "raise" (default for one input), "warn" (default for a list: a video that cannot be
            read gives `{"error": message, "input": name}` and a warning, the others are unaffected) or "return"
            (the same entry without the warning). Never `[]`, which means "no events".
        strict (`bool`): a truncated file (frames ending before its stated duration) is an error instead of a
            warning and its decodable span as the duration.
        tower_dtype (`str`): weights of the vision tower, "auto" (bf16 on GPU or a CPU with native bf16, else
            fp32), "fp32", "bf16" or "fp16"; features stay float32. Default: the tower as loaded.
        memory_budget_mb (`float`): activation memory of one tower batch (default 1024); frames of a file are
            decoded in a thread, chunk by chunk, while the tower embeds the previous chunk.
        rerank_alpha (`float`): weight of the caption score when ranking queries (default: the model config's).
        max_caption_len (`int`): most words per caption.

    Returns:
        per video, `[{"timestamp": [start, end], "caption": str, "score": float}, ...]` in time order, with times in
        seconds within [0, duration]; JSON-serialisable.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None or not hasattr(self.processor, "post_process_dense_video_captioning"):
            raise ValueError(
                "The dense-video-captioning pipeline needs a CACMIProcessor: pass processor=, or save one beside the "
                "model with processor.save_pretrained(model_dir)."
            )
        if not hasattr(self.model, "generate") or not hasattr(self.model, "captioner"):
            raise ValueError(
                f"The dense-video-captioning pipeline needs a CACMIForDenseCaptioning model, got {type(self.model).__name__}."
            )
        self.model.eval()

    # ----------------------------------------------------------------------------------------------------------------
    # parameters

    def _sanitize_parameters(
        self,
        threshold: float | None = None,
        max_events: int | None = None,
        return_retrieved: bool | int | None = None,
        fps: float | None = None,
        on_error: str | None = None,
        rerank_alpha: float | None = None,
        max_caption_len: int | None = None,
        event_count: str | None = None,
        strict: bool | None = None,
        tower_dtype: str | None = None,
        memory_budget_mb: float | None = None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(f"dense-video-captioning pipeline got unknown options {sorted(kwargs)}.")
        preprocess, forward, postprocess = {}, {}, {}
        if fps is not None:
            preprocess["fps"] = fps
        if strict is not None:
            preprocess["strict"] = bool(strict)
        if memory_budget_mb is not None:
            if not memory_budget_mb > 0:
                raise ValueError(f"memory_budget_mb must be > 0, got {memory_budget_mb}.")
            preprocess["memory_budget_mb"] = float(memory_budget_mb)
        if tower_dtype is not None:
            self._set_tower_dtype(tower_dtype)
        if on_error is not None:
            if on_error not in ON_ERROR:
                raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}.")
            preprocess["on_error"] = postprocess["on_error"] = on_error
        if max_caption_len is not None:
            forward["max_caption_len"] = max_caption_len
        if threshold is not None:
            postprocess["threshold"] = float(threshold)
        if max_events is not None:
            if int(max_events) < 1:
                raise ValueError(f"max_events must be >= 1, got {max_events}.")
            postprocess["max_events"] = int(max_events)
        if rerank_alpha is not None:
            postprocess["rerank_alpha"] = float(rerank_alpha)
        if event_count is not None:
            postprocess["event_count"] = check_event_count(event_count)
        if return_retrieved is not None and return_retrieved is not False:
            if getattr(self.model.config, "use_cfa", False) is not True:
                raise ValueError("return_retrieved needs a model with CFA (config.use_cfa=True): this one retrieves nothing.")
            if getattr(self.processor, "memory_sentences", None) is None:
                raise ValueError(
                    "return_retrieved needs the memory-bank sentences: set processor.memory_sentences (the captions the "
                    "bank was built from, in bank order) and save the processor again."
                )
            postprocess["return_retrieved"] = return_retrieved
        return preprocess, forward, postprocess

    def __call__(self, inputs: Any, **kwargs):
        """Caption one video (a list of events) or a list of videos (a list of event lists); see the class docstring."""
        if isinstance(inputs, (np.ndarray, torch.Tensor)) and inputs.ndim == 5:
            inputs = list(inputs)  # a batch of frame arrays
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list) and "on_error" not in kwargs and "on_error" not in self._preprocess_params:
            kwargs["on_error"] = "warn"  # one unreadable file must not cost the others their results
        return super().__call__(inputs, **kwargs)

    # ----------------------------------------------------------------------------------------------------------------
    # the three steps

    def _vision_tower(self):
        tower = getattr(self.model, "vision_tower", None)
        if tower is None:
            raise ValueError(
                "This model has no vision tower (config.vision_config is None), so it cannot read videos or frames: "
                "give precomputed features {'video_features': (L, D), 'duration': seconds}, or build the model with "
                "CACMIForDenseCaptioning.from_clip(...)."
            )
        size = self.processor.video_processor.image_size
        if tower.image_size != size:
            raise ValueError(
                f"The processor makes {size}px frames but the model's vision tower takes {tower.image_size}px; use the "
                "processor saved with this model (CACMIVideoProcessor.from_open_clip(model.config.vision_config))."
            )
        return tower

    def _set_tower_dtype(self, dtype: str) -> None:
        """Cast the vision tower's weights ("auto", "fp32", "bf16", "fp16"); a model without a tower has nothing to cast."""
        tower = getattr(self.model, "vision_tower", None)
        if tower is not None:
            tower.set_dtype(dtype)
        else:
            from .open_clip_tower import resolve_tower_dtype

            resolve_tower_dtype(dtype)  # still reject a bad name

    def preprocess(
        self,
        inputs: Any,
        fps: float | None = None,
        on_error: str = "raise",
        strict: bool = False,
        memory_budget_mb: float = 1024.0,
    ) -> dict[str, Any]:
        """Sample and preprocess one video (or check one feature input); failures become error items unless raising.

        A file is opened here and its frames decoded by a `_FrameStream` thread that `_forward` consumes.
        """
        name = _input_name(inputs)
        is_features = isinstance(inputs, Mapping) and "video_features" in inputs
        if not is_features:
            tower = self._vision_tower()  # a model without a tower is a setup error, raised whatever on_error says
        try:
            if is_features:
                duration = inputs.get("duration", inputs.get("durations"))
                batch = prepare_video_features(inputs["video_features"], duration, inputs.get("video_mask"))
                if batch["video_features"].shape[0] != 1:
                    raise ValueError(
                        f"{name}: one video per input; give a list of {{'video_features', 'duration'}} dicts for several."
                    )
                item = {
                    "kind": "features",
                    "video_features": batch["video_features"][0],  # (L, D)
                    "video_mask": batch["video_mask"][0],  # (L,)
                    "durations": batch["durations"],  # (1,)
                }
            elif _is_file_source(inputs):
                chunk = min(tower.frames_per_batch(memory_budget_mb), MAX_CHUNK_FRAMES)
                stream = _FrameStream(inputs, self.processor.video_processor, chunk, strict=strict)
                item = {"kind": "stream", "stream": stream, "on_error": on_error}  # opened by the stream's thread
            else:
                processor = self.processor.video_processor
                sampled = processor.sample_video(inputs, fps)
                batch = processor.pack([sampled])
                name = sampled.name
                item = {
                    "kind": "pixels",
                    "pixel_values_videos": batch["pixel_values_videos"][0],  # (L, 3, S, S)
                    "video_mask": batch["video_mask"][0],  # (L,)
                    "durations": batch["durations"],  # (1,)
                }
        except Exception as err:  # noqa: BLE001 - any failure of one video is reported for that video only
            if on_error == "raise":
                raise
            return {"items": [{"error": f"{type(err).__name__}: {err}", "name": name}]}
        item["name"] = name
        return {"items": [item]}

    def _forward(self, model_inputs: dict[str, Any], max_caption_len: int | None = None) -> dict[str, Any]:
        """Embed frames with the vision tower, pad every good video of the batch together, generate."""
        items = model_inputs["items"]
        good = [i for i, item in enumerate(items) if "error" not in item]
        outputs: list[dict[str, Any]] = [dict(item) for item in items]  # error items pass through
        if not good:
            return {"outputs": outputs}
        features: dict[int, torch.Tensor] = {}
        for i in [i for i in good if items[i]["kind"] == "stream"]:
            try:
                features[i] = self._embed_stream(items[i])  # (L, D)
            except Exception as err:  # noqa: BLE001 - a file that breaks while decoding fails alone
                if items[i]["on_error"] == "raise":
                    raise
                outputs[i] = {"error": f"{type(err).__name__}: {err}", "name": items[i]["name"]}
        good = [i for i in good if "error" not in outputs[i]]
        if not good:
            return {"outputs": outputs}
        pixels = [i for i in good if items[i]["kind"] == "pixels"]
        if pixels:
            tower = self._vision_tower()
            frames = _pad_stack([items[i]["pixel_values_videos"] for i in pixels])  # (P, L, 3, S, S)
            masks = _pad_stack([items[i]["video_mask"] for i in pixels])  # (P, L)
            embedded = tower(frames, masks)  # (P, L, D)
            for j, i in enumerate(pixels):
                features[i] = embedded[j, : items[i]["video_mask"].shape[0]]
        for i in good:
            if items[i]["kind"] == "features":
                features[i] = items[i]["video_features"].to(self.model.dtype)
        video_features = _pad_stack([features[i] for i in good])  # (B, L, D)
        video_mask = _pad_stack([
            items[i]["video_mask"] if "video_mask" in items[i] else torch.ones(items[i]["num_frames"], dtype=torch.bool)
            for i in good
        ])  # (B, L)
        durations = torch.cat([items[i]["durations"] for i in good])  # (B,)
        generated = self.model.generate(
            video_features=video_features, video_mask=video_mask, durations=durations, max_caption_len=max_caption_len
        )
        fields = ("logits", "pred_segments", "pred_counts", "caption_ids", "caption_log_probs", "text_mask",
                  "text_spans", "retrieved_indices", "retrieved_scores")
        for b, i in enumerate(good):
            out = {"name": items[i]["name"], "durations": durations[b : b + 1], "num_frames": video_mask[b].sum()}
            for field in fields:
                value = getattr(generated, field, None)
                if value is not None:
                    out[field] = value[b : b + 1]
            outputs[i] = out
        return {"outputs": outputs}

    def _embed_stream(self, item: dict[str, Any]) -> torch.Tensor:
        """float32 `(L, D)` features of a streamed file: each decoded chunk through the tower as it arrives."""
        from .open_clip_tower import normalize_pixels

        tower = self._vision_tower()
        vp = self.processor.video_processor
        parts = []
        for chunk in item["stream"]:  # uint8 (b, 3, S, S), decoded while the previous chunk was embedded
            pixels = normalize_pixels(chunk.to(self.device), vp.image_mean, vp.image_std)  # (b, 3, S, S)
            parts.append(tower(pixels[None])[0])  # (b, D)
        stream = item["stream"]
        features = torch.cat(parts)
        if features.shape[0] != len(stream.times):
            raise ValueError(f"{item['name']}: decoded {features.shape[0]} frames for {len(stream.times)} sample times.")
        item["num_frames"] = len(stream.times)
        item["durations"] = torch.tensor([stream.duration], dtype=torch.float32)  # (1,)
        return features.to(self.model.dtype)

    def postprocess(
        self,
        model_outputs: dict[str, Any],
        threshold: float | None = None,
        max_events: int | None = None,
        return_retrieved: bool | int = False,
        rerank_alpha: float | None = None,
        on_error: str = "raise",
        event_count: str | None = None,
    ):
        """Events of one video in time order (and its pseudo-events' retrieved sentences when asked)."""
        entry = model_outputs["outputs"]
        if isinstance(entry, list):  # unbatched call: a list of one
            entry = entry[0]
        if "error" in entry:
            if on_error != "return":
                warnings.warn(f"dense-video-captioning: skipped {entry['name']}: {entry['error']}", RuntimeWarning, stacklevel=2)
            return {"error": entry["error"], "input": entry["name"]}  # never [], which means "no events"
        outputs = SimpleNamespace(**{k: entry.get(k) for k in ("logits", "pred_segments", "pred_counts", "caption_ids", "caption_log_probs")})
        events = self.processor.post_process_dense_video_captioning(
            outputs, entry["durations"], threshold=threshold, max_events=max_events,
            rerank_alpha=float(self.model.config.rerank_alpha) if rerank_alpha is None else rerank_alpha,
            event_count=event_count,
        )[0]
        events = [{"timestamp": e["timestamp"], "caption": e["caption"], "score": e["score"]} for e in events]
        if not return_retrieved:
            return events
        return {"events": events, "pseudo_events": self._pseudo_events(entry, return_retrieved)}

    def _pseudo_events(self, entry: dict[str, Any], top: bool | int) -> list[dict[str, Any]]:
        """CFA's pseudo-events of one video: their time span and the memory sentences each retrieved, best first."""
        indices = entry.get("retrieved_indices")
        if indices is None:
            return []
        indices = indices[0]  # (c, k)
        scores = entry.get("retrieved_scores")
        spans = entry.get("text_spans")
        mask = entry.get("text_mask")
        mask = mask[0] if mask is not None else torch.ones(indices.shape[0], dtype=torch.bool)
        duration = float(entry["durations"][0])
        frames = max(int(entry["num_frames"]), 1)
        keep = indices.shape[-1] if top is True else max(1, int(top))
        sentences = self.processor.retrieved_sentences(indices)
        pseudo = []
        for j in torch.nonzero(mask).flatten().tolist():
            hits = [{"sentence": sentences[j][r], "index": int(indices[j, r])} for r in range(indices.shape[-1])]
            if scores is not None:
                for r, hit in enumerate(hits):
                    hit["score"] = float(scores[0, j, r])
                hits.sort(key=lambda h: -h["score"])
            event: dict[str, Any] = {"retrieved": hits[:keep]}
            if spans is not None:
                first, last = (int(v) for v in spans[0, j])
                # frame f stands for the bin [f, f + 1) · duration / frames of the model's time axis
                event["timestamp"] = [first * duration / frames, min(duration, (last + 1) * duration / frames)]
            pseudo.append(event)
        if pseudo and "timestamp" in pseudo[0]:
            pseudo.sort(key=lambda e: e["timestamp"][0])
        return pseudo

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        """Batches keep failed videos in place (their own error) and pad videos of any kind together."""
        if not isinstance(inputs, (list, tuple)):
            inputs = list(inputs)
        dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        loader = torch.utils.data.DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=_collate)
        # one batch ahead: the next videos' decode threads run while this batch is in the tower
        model_iterator = PipelineIterator(_lookahead(loader), self.forward, forward_params, loader_batch_size=batch_size)
        return PipelineIterator(model_iterator, self.postprocess, postprocess_params)

    # ----------------------------------------------------------------------------------------------------------------
    # saving

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any):
        """Save model, processor and this pipeline's code; the config names the pipeline for `trust_remote_code`.

        Unlike the base class, the processor (tokenizer, video processor, memory sentences) is saved too.
        """
        os.makedirs(save_directory, exist_ok=True)
        config = self.model.config
        previous = copy.deepcopy(config.__dict__.get("custom_pipelines"))
        module = self.__class__.__module__.split(".")[-1]
        config.custom_pipelines = {
            TASK: {"impl": f"{module}.{self.__class__.__name__}", "pt": ["AutoModel"], "type": "multimodal"}
        }
        try:
            custom_object_save(self, save_directory)
            self.model.save_pretrained(save_directory, **kwargs)
        finally:
            # the live config keeps no pipeline entry: a later model.save_pretrained folder has no pipeline code
            if previous is None:
                del config.custom_pipelines
            else:
                config.custom_pipelines = previous
        self.processor.save_pretrained(save_directory)


def register() -> None:
    """Register the "dense-video-captioning" task with transformers' pipeline factory."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    if TASK not in PIPELINE_REGISTRY.supported_tasks or PIPELINE_REGISTRY.supported_tasks[TASK]["impl"] is not DenseVideoCaptioningPipeline:
        PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=DenseVideoCaptioningPipeline, pt_model=AutoModel, type="multimodal")


__all__ = ["DenseVideoCaptioningPipeline", "TASK", "register"]
