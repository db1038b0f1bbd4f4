"""pipeline("dense-video-captioning"): paths, lists, frames and features; options; bad input; save/load."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import av
import numpy as np
import pytest
import torch
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from cacmi_hf import CACMIConfig, CACMIForDenseCaptioning
from cacmi_hf.data.vocab import build_caption_tokenizer
from cacmi_hf.open_clip_tower import (
    TINY_OPEN_CLIP_CONFIG,
    build_open_clip_model,
    encode_images,
    resolve_open_clip,
    save_open_clip_local_dir,
)
from cacmi_hf.pipeline_dense_video_captioning import DenseVideoCaptioningPipeline
from cacmi_hf.processing_cacmi import CACMIProcessor, CACMIVideoProcessor
from cacmi_hf.processing_cacmi import register as register_processor
from cacmi_hf.pipeline_dense_video_captioning import register as register_pipeline

from video_fixtures import write_mp4

register_processor()  # idempotent; `import cacmi_hf` does both
register_pipeline()

CAPTIONS = ["a red circle moves to the left", "a blue square grows", "a green cross blinks", "a red square shrinks"]


def write_video(path, seconds, fps=10, size=(64, 48), seed=0):
    """A small mp4 of colour blocks changing every two seconds."""
    colours = np.random.default_rng(seed).integers(0, 255, (int(seconds) // 2 + 1, 3))

    def draw(i, second):
        img = np.empty((size[1], size[0], 3), np.uint8)
        img[:] = colours[second // 2]
        img[: size[1] // 2, : size[0] // 2] = 255 - colours[second // 2]
        return img

    return write_mp4(path, draw, seconds, fps, size)


def read_frames(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def tiny_config(**overrides):
    base = dict(
        num_frames=12, hidden_size=32, num_attention_heads=4, ffn_dim=32, num_encoder_layers=1,
        num_decoder_layers=2, num_feature_levels=2, num_queries=5, max_event_count=3, max_caption_len=6,
        caption_hidden_size=24, num_clusters=3, retrieval_top_k=3, memory_size=len(CAPTIONS),
    )
    base.update(overrides)
    return CACMIConfig(**base)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny CLIP (local-dir), a tiny CACMI built on it, its processor, and three mp4 files."""
    root = tmp_path_factory.mktemp("dvc")
    torch.manual_seed(0)
    spec = resolve_open_clip(TINY_OPEN_CLIP_CONFIG)
    clip = build_open_clip_model(spec).eval()
    clip_dir = save_open_clip_local_dir(clip, spec, root / "clip")
    tokenizer = build_caption_tokenizer(CAPTIONS, min_count=1, max_caption_len=6)
    model = CACMIForDenseCaptioning.from_clip(clip_dir, clip_dir, config=tiny_config(vocab_size=len(tokenizer))).eval()
    model.set_memory_bank(torch.nn.functional.normalize(torch.randn(len(CAPTIONS), 32), dim=-1), torch.arange(4))
    video = CACMIVideoProcessor.from_open_clip(spec, num_frames=12, decode_short_side=48)
    processor = CACMIProcessor(video, tokenizer, memory_sentences=CAPTIONS)
    videos = [write_video(root / f"v{i}.mp4", seconds, seed=i) for i, seconds in enumerate((9.0, 16.0, 5.0))]
    return {"root": root, "clip": clip, "model": model, "processor": processor, "videos": videos}


@pytest.fixture(scope="module")
def pipe(world):
    return pipeline("dense-video-captioning", model=world["model"], processor=world["processor"], device="cpu")


def assert_same_events(a, b, atol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["caption"] == y["caption"]
        assert x["timestamp"] == pytest.approx(y["timestamp"], abs=atol)
        assert x["score"] == pytest.approx(y["score"], abs=atol)


def test_registered_on_import():
    assert "dense-video-captioning" in PIPELINE_REGISTRY.get_supported_tasks()
    assert PIPELINE_REGISTRY.supported_tasks["dense-video-captioning"]["impl"] is DenseVideoCaptioningPipeline


def test_path_gives_sorted_events_in_range(pipe, world):
    events = pipe(str(world["videos"][0]))
    assert isinstance(events, list) and events
    json.dumps(events)  # JSON-serialisable as is
    for event in events:
        assert set(event) == {"timestamp", "caption", "score"}
        start, end = event["timestamp"]
        assert 0.0 <= start <= end <= 9.0 + 1e-6
        assert isinstance(event["caption"], str) and 0.0 <= event["score"] <= 1.0
    starts = [(e["timestamp"][0], e["timestamp"][1]) for e in events]
    assert starts == sorted(starts)


def test_list_batched_equals_one_by_one(pipe, world):
    paths = [str(p) for p in world["videos"]]
    batched = pipe(paths, batch_size=2)
    assert len(batched) == 3
    for path, events in zip(paths, batched):
        assert_same_events(events, pipe(path))


def test_frames_and_features_give_the_same_events(pipe, world):
    frames = read_frames(world["videos"][1])  # (160, 48, 64, 3), 10 fps
    from_frames = pipe(frames, fps=10.0)
    assert all(0.0 <= e["timestamp"][0] <= e["timestamp"][1] <= 16.0 + 1e-6 for e in from_frames)
    assert_same_events(pipe({"frames": frames, "fps": 10.0}), from_frames)
    # the features path with the CLIP features of exactly the frames the pixel path sampled
    video_processor = world["processor"].video_processor
    sampled = video_processor.sample_video(frames, fps=10.0)
    features = encode_images(world["clip"], video_processor.preprocess_frames(sampled.frames))  # (12, 32)
    from_features = pipe({"video_features": features, "duration": sampled.duration})
    assert_same_events(from_features, from_frames)
    assert_same_events(pipe({"video_features": features.numpy(), "duration": 16.0}), from_frames)


def test_options_max_events_threshold_retrieved(pipe, world, monkeypatch):
    path = str(world["videos"][0])
    assert len(pipe(path, max_events=4)) == 4
    assert pipe(path, threshold=1.01) == []
    seen, post_process = [], pipe.processor.post_process_dense_video_captioning
    monkeypatch.setattr(pipe.processor, "post_process_dense_video_captioning",
                        lambda *args, **kwargs: seen.append(kwargs.get("event_count")) or post_process(*args, **kwargs))
    by_mean = pipe(path, event_count="expected")
    assert seen == ["expected"]  # reaches the processor, which falls back to its own rule when None
    assert by_mean == pipe(path, max_events=len(by_mean))  # the rule only sets how many of the ranked events stay
    monkeypatch.undo()
    with pytest.raises(ValueError, match="event_count"):
        pipe(path, event_count="mode")
    scored = pipe(path, max_events=5)
    cut = sorted(e["score"] for e in scored)[2]  # the threshold drops exactly the two least confident events
    kept = pipe(path, max_events=5, threshold=cut)
    assert len(kept) == 3 and kept == [e for e in scored if e["score"] >= cut]
    out = pipe(path, return_retrieved=2)
    assert_same_events(out["events"], pipe(path))
    pseudo = out["pseudo_events"]
    assert len(pseudo) == 3  # config.num_clusters
    for event in pseudo:
        assert len(event["retrieved"]) == 2
        assert all(hit["sentence"] == CAPTIONS[hit["index"]] for hit in event["retrieved"])
        assert event["retrieved"][0]["score"] >= event["retrieved"][1]["score"]
        assert 0.0 <= event["timestamp"][0] < event["timestamp"][1] <= 9.0 + 1e-6
    # the pseudo-events tile the video in time order (contiguous clusters of the 12 frames)
    assert pseudo[0]["timestamp"][0] == 0.0 and pseudo[-1]["timestamp"][1] == pytest.approx(9.0)
    assert all(a["timestamp"][1] == pytest.approx(b["timestamp"][0]) for a, b in zip(pseudo, pseudo[1:]))
    json.dumps(out)


def test_failing_video_in_a_list_keeps_the_others(pipe, world, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 64)
    good = [str(p) for p in world["videos"][:2]]
    inputs = [good[0], str(tmp_path / "missing.mp4"), str(junk), good[1]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = pipe(inputs, batch_size=2)
    # an unreadable video gives an error entry, never [] (which means "no events"), and a warning naming it
    assert results[1]["input"].endswith("missing.mp4") and "FileNotFoundError" in results[1]["error"]
    assert results[2]["input"].endswith("junk.mp4") and set(results[2]) == {"error", "input"}
    messages = " ".join(str(w.message) for w in caught)
    assert "missing.mp4" in messages and "junk.mp4" in messages
    assert_same_events(results[0], pipe(good[0]))
    assert_same_events(results[3], pipe(good[1]))
    returned = pipe(inputs, on_error="return")
    assert returned[1]["input"].endswith("missing.mp4") and "FileNotFoundError" in returned[1]["error"]
    assert "not a readable video" in returned[2]["error"]
    assert_same_events(returned[3], results[3])


def test_single_bad_input_raises_clearly(pipe, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        pipe(str(tmp_path / "missing.mp4"))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        pipe(np.zeros((4, 8, 8), np.uint8), fps=1.0)
    with pytest.raises(ValueError, match="without fps"):
        pipe(np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="durations are required"):
        pipe({"video_features": torch.randn(12, 32)})
    with pytest.raises(ValueError, match="on_error"):
        pipe(np.zeros((4, 8, 8, 3), np.uint8), fps=1.0, on_error="ignore")


def test_model_without_vision_tower_takes_features_only(world):
    torch.manual_seed(3)
    plain = CACMIForDenseCaptioning(tiny_config(feature_dim=32, vocab_size=len(world["processor"].tokenizer))).eval()
    plain.set_memory_bank(torch.randn(len(CAPTIONS), 32), torch.arange(len(CAPTIONS)))
    pipe = DenseVideoCaptioningPipeline(model=plain, processor=world["processor"], device="cpu")
    assert pipe({"video_features": torch.randn(12, 32), "duration": 30.0})
    with pytest.raises(ValueError, match="no vision tower"):
        pipe(str(world["videos"][0]))
    with pytest.raises(ValueError, match="no vision tower"):  # a setup error is raised even in a list
        pipe([str(world["videos"][0])])


def test_save_pretrained_round_trip(pipe, world, tmp_path):
    pipe.save_pretrained(tmp_path / "saved")
    saved = tmp_path / "saved"
    for name in ("pipeline_dense_video_captioning.py", "processing_cacmi.py", "vision_tower.py", "processor_config.json",
                 "memory_sentences.json", "tokenizer.json", "config.json"):
        assert (saved / name).is_file(), name
    config = json.loads((saved / "config.json").read_text())
    assert config["custom_pipelines"]["dense-video-captioning"]["impl"] == (
        "pipeline_dense_video_captioning.DenseVideoCaptioningPipeline"
    )
    assert "custom_pipelines" not in world["model"].config.to_dict()  # the live config is left as it was
    path = str(world["videos"][0])
    reloaded = pipeline("dense-video-captioning", model=str(saved), trust_remote_code=True, device="cpu")
    assert_same_events(reloaded(path), pipe(path))
    # model + processor saved the usual way: the registered task needs no remote code
    world["model"].save_pretrained(tmp_path / "plain")
    world["processor"].save_pretrained(tmp_path / "plain")
    plain = pipeline("dense-video-captioning", model=str(tmp_path / "plain"), device="cpu")
    assert type(plain) is DenseVideoCaptioningPipeline
    assert_same_events(plain(path), pipe(path))


def test_saved_folder_runs_in_a_fresh_process_without_the_package(pipe, world, tmp_path):
    """The saved folder carries its own code: the pipeline, AutoModel and AutoProcessor all load and give the
    same outputs where cacmi_hf cannot be imported (one fresh process for the three: each start costs ~20 s)."""
    saved = tmp_path / "saved"
    pipe.save_pretrained(saved)
    assert (saved / "modeling_cacmi.py").exists() and (saved / "processing_cacmi.py").exists()
    path = str(world["videos"][2])
    (tmp_path / "expected.json").write_text(json.dumps(pipe(path, max_events=2)))
    model, processor = world["model"], world["processor"]
    g = torch.Generator().manual_seed(1)
    inputs = dict(video_features=torch.randn(2, 12, model.config.feature_dim, generator=g),
                  video_mask=torch.ones(2, 12, dtype=torch.bool), durations=torch.tensor([30.0, 47.5]))
    inputs["video_mask"][-1, 9:] = False
    frames = np.random.default_rng(1).integers(0, 255, (9, 30, 40, 3), dtype=np.uint8)
    with torch.no_grad():
        generated = model.generate(**inputs)
    torch.save({"inputs": inputs, "logits": generated.logits, "caption_ids": generated.caption_ids, "frames": frames,
                "pixels": processor(videos=frames, fps=3.0)["pixel_values_videos"]}, tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["cacmi_hf"] = None  # any import of the package now fails
        import torch
        from transformers import AutoModel, AutoProcessor, pipeline
        saved = {str(saved)!r}
        pipe = pipeline(model=saved, trust_remote_code=True, device="cpu")
        assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
        got = pipe({path!r}, max_events=2)
        expected = json.load(open({str(tmp_path / "expected.json")!r}))
        assert [e["caption"] for e in got] == [e["caption"] for e in expected], (got, expected)
        for g, e in zip(got, expected):
            assert max(abs(a - b) for a, b in zip(g["timestamp"], e["timestamp"])) < 1e-4, (g, e)
        io = torch.load({str(tmp_path / "io.pt")!r}, weights_only=False)
        model = AutoModel.from_pretrained(saved, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            out = model.generate(**io["inputs"])
        torch.testing.assert_close(out.logits, io["logits"], atol=0, rtol=0)
        assert torch.equal(out.caption_ids, io["caption_ids"])
        proc = AutoProcessor.from_pretrained(saved, trust_remote_code=True)
        assert type(proc).__module__.startswith("transformers_modules"), type(proc).__module__
        torch.testing.assert_close(proc(videos=io["frames"], fps=3.0)["pixel_values_videos"], io["pixels"], atol=0, rtol=0)
        assert proc.memory_sentences == {CAPTIONS!r}, proc.memory_sentences
        print("REMOTE-OK")
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0 and "REMOTE-OK" in result.stdout, result.stderr[-3000:]


def _video_where_alpha_matters(pipe, videos):
    """(path, alpha) whose single kept event differs from the confidence-only (alpha 0) choice."""
    for path in map(str, videos):
        by_confidence = pipe(path, max_events=1, rerank_alpha=0.0)
        for alpha in (1e4, -1e4):
            if pipe(path, max_events=1, rerank_alpha=alpha) != by_confidence:
                return path, alpha
    raise AssertionError("on no test video does the caption score change the kept event")


def test_rerank_alpha_comes_from_the_model_config_unless_given(pipe, world):
    path, alpha = _video_where_alpha_matters(pipe, world["videos"])
    by_confidence = pipe(path, max_events=1, rerank_alpha=0.0)
    by_caption = pipe(path, max_events=1, rerank_alpha=alpha)
    saved = world["model"].config.rerank_alpha
    try:
        for config_alpha, expected in ((0.0, by_confidence), (alpha, by_caption)):
            world["model"].config.rerank_alpha = config_alpha
            assert pipe(path, max_events=1) == expected
        assert pipe(path, max_events=1, rerank_alpha=0.0) == by_confidence  # an explicit value wins
    finally:
        world["model"].config.rerank_alpha = saved


def test_streamed_file_equals_the_processor_frames_whatever_the_chunk(pipe, world):
    path = world["videos"][1]
    video_processor = world["processor"].video_processor
    sampled = video_processor.sample_video(str(path))  # all frames at once, through the processor
    features = encode_images(world["clip"], video_processor.preprocess_frames(sampled.frames))  # (12, 32)
    expected = pipe({"video_features": features, "duration": sampled.duration})
    assert_same_events(pipe(str(path)), expected)
    assert_same_events(pipe(str(path), memory_budget_mb=1e-6), expected)  # one frame per chunk
    with pytest.raises(ValueError, match="memory_budget_mb"):
        pipe(str(path), memory_budget_mb=0)


def test_tower_dtype_option_casts_the_weights_only(world):
    import copy

    model = copy.deepcopy(world["model"])
    bf16 = pipeline("dense-video-captioning", model=model, processor=world["processor"], device="cpu", tower_dtype="bf16")
    assert model.vision_tower.dtype == torch.bfloat16 and model.dtype == torch.float32  # CACMI itself stays fp32
    events = bf16(str(world["videos"][0]))
    assert events and all(isinstance(e["score"], float) for e in events)
    bf16(str(world["videos"][0]), tower_dtype="fp32")
    assert model.vision_tower.dtype == torch.float32
    with pytest.raises(ValueError, match="Tower dtype"):
        bf16(str(world["videos"][0]), tower_dtype="int4")


def test_truncated_file_warns_or_fails_with_strict(pipe, world, tmp_path):
    from cacmi_hf.video_decoding import TruncatedVideoError, TruncatedVideoWarning

    rng = np.random.default_rng(0)
    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as out:  # index first, like a download
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(120):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.warns(TruncatedVideoWarning, match="cut.mp4 is truncated: the container states 12.00 s"):
        events = pipe(str(cut))
    assert events and max(e["timestamp"][1] for e in events) < 8.0  # times live in the decodable span
    with pytest.raises(TruncatedVideoError, match="cut.mp4"):
        pipe(str(cut), strict=True)
    listed = pipe([str(cut), str(world["videos"][2])], strict=True, on_error="return")
    assert "TruncatedVideoError" in listed[0]["error"] and isinstance(listed[1], list)
