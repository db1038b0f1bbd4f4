"""CACMIProcessor: frame sampling, decoding of files/bytes/arrays, features pass-through, bad input, save/load."""

import json
import tracemalloc
import warnings

import av
import numpy as np
import pytest
import torch
from transformers import AutoProcessor

import cacmi_hf  # noqa: F401  (registers the auto classes)
from cacmi_hf.data.vocab import build_caption_tokenizer
from cacmi_hf.open_clip_tower import TINY_OPEN_CLIP_CONFIG, preprocess_frames, resolve_open_clip
from cacmi_hf.processing_cacmi import (
    CACMIProcessor,
    CACMIVideoProcessor,
    frames_at_seeking,
    prepare_video_features,
    register,
)
from cacmi_hf.video_decoding import VideoDecodingError, VideoReader, sample_times

from video_fixtures import write_audio_only, write_mp4

register()  # idempotent; `import cacmi_hf` does it too


def write_video(path, seconds=6.0, fps=10, size=(64, 48), gop=None):
    """An mp4 whose red channel is 20 × the second and blue 4 × the frame number (mod 256)."""

    def draw(i, second):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[..., 0] = (second * 20) % 256
        img[..., 1] = 128
        img[..., 2] = (i * 4) % 256
        return img

    return write_mp4(path, draw, seconds, fps, size, gop=gop)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {
        "clip": write_video(folder / "clip.mp4", seconds=6.0, fps=10),
        "gops": write_video(folder / "gops.mp4", seconds=12.0, fps=10, gop=10),
        "one": write_video(folder / "one.mp4", seconds=0.1, fps=10),
    }


@pytest.fixture(scope="module")
def tokenizer():
    return build_caption_tokenizer(["a red circle moves", "a blue square grows", "a red square blinks"], min_count=1)


@pytest.fixture()
def processor(tokenizer):
    video = CACMIVideoProcessor.from_open_clip(resolve_open_clip(TINY_OPEN_CLIP_CONFIG), num_frames=4)
    return CACMIProcessor(video, tokenizer, memory_sentences=["a red circle moves", "a blue square grows"])


def test_sample_times_hand_worked():
    vp = CACMIVideoProcessor(num_frames=4, max_fps=1.0)
    # 10 s at 1 fps -> 10 bin centres 0.5..9.5; resized to 4 by bin centres -> items 1, 3, 6, 8
    np.testing.assert_allclose(vp.sample_times(10.0), [1.5, 3.5, 6.5, 8.5])
    # 2.5 s -> 3 grid frames (round(2.5)); 4 samples repeat frames like the resized training features
    np.testing.assert_allclose(vp.sample_times(2.5), np.array([0.5, 1.5, 1.5, 2.5]) * 2.5 / 3)
    # a 10-minute video still costs L = 100 frames, each on the 1 fps grid, never closer than 1 s
    times = CACMIVideoProcessor(num_frames=100).sample_times(600.0)
    assert times.shape == (100,) and np.all(np.diff(times) >= 1.0) and np.allclose(times % 1, 0.5)
    assert CACMIVideoProcessor(num_frames=None, max_fps=2.0).sample_times(3.0).shape == (6,)


def test_frames_array_picks_the_frame_on_screen():
    frames = np.zeros((20, 8, 8, 3), np.uint8)
    frames[..., 0] = np.arange(20)[:, None, None]  # frame index in red
    sampled = CACMIVideoProcessor(num_frames=4).sample_video(frames, fps=2.0)
    # 10 s: times 1.5, 3.5, 6.5, 8.5 s -> frames floor(t · 2) = 3, 7, 13, 17
    assert sampled.frames[:, 0, 0, 0].tolist() == [3, 7, 13, 17]
    assert sampled.duration == 10.0
    as_dict = CACMIVideoProcessor(num_frames=4).sample_video({"frames": torch.from_numpy(frames), "fps": 2.0})
    np.testing.assert_array_equal(as_dict.frames, sampled.frames)


def test_file_bytes_and_seeking_agree(videos):
    vp = CACMIVideoProcessor(num_frames=6, decode_short_side=48)
    from_path = vp.sample_video(videos["gops"])
    from_bytes = vp.sample_video(videos["gops"].read_bytes())
    np.testing.assert_array_equal(from_path.frames, from_bytes.frames)
    assert from_path.duration == pytest.approx(12.0)
    # red = 20 × second: the sampled seconds are 1, 3, 5, 7, 9, 11 (12 s, 1 fps grid resized to 6)
    np.testing.assert_allclose(from_path.frames[:, 24, 32, 0], [20, 60, 100, 140, 180, 220], atol=6)
    # keyframe seeking decodes the same pictures as decoding every frame
    sequential = CACMIVideoProcessor(num_frames=6, decode_short_side=48, seek=False).sample_video(videos["gops"])
    np.testing.assert_array_equal(from_path.frames, sequential.frames)


def test_seeking_skips_frames_between_far_targets(videos, monkeypatch):
    times = sample_times(12.0, num_frames=3)  # 2, 6, 10 s with a keyframe every second
    decoded = []
    original = VideoReader.frames_at

    def counting(self, targets, **kwargs):
        decoded.append(len(targets))
        return original(self, targets, **kwargs)

    monkeypatch.setattr(VideoReader, "frames_at", counting)
    with VideoReader(videos["gops"]) as reader:
        frames = frames_at_seeking(reader, times)
    assert len(frames) == 3 and decoded == [1, 1, 1]  # one seek per target: none shares a GOP with the previous


def test_processor_outputs(videos, processor):
    out = processor(videos=[videos["clip"], np.zeros((30, 48, 64, 3), np.uint8)], fps=[None, 10.0])
    assert out["pixel_values_videos"].shape == (2, 4, 3, 32, 32) and out["pixel_values_videos"].dtype == torch.float32
    assert out["video_mask"].dtype == torch.bool and bool(out["video_mask"].all())
    np.testing.assert_allclose(out["durations"].numpy(), [6.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(out["frame_times"][1].numpy(), np.array([0.5, 1.5, 1.5, 2.5]) * 3.0 / 3, rtol=1e-6)
    # pixels are exactly the CLIP preprocessing of the sampled frames
    sampled = processor.video_processor.sample_video(videos["clip"])
    torch.testing.assert_close(out["pixel_values_videos"][0], preprocess_frames(sampled.frames, 32), atol=0, rtol=0)


def test_features_pass_through_unchanged(processor):
    a, b = torch.randn(5, 7), torch.randn(3, 7)
    out = processor(video_features=[a, b], durations=[10.0, 4.0])
    assert out["video_features"].shape == (2, 5, 7)
    torch.testing.assert_close(out["video_features"][0], a, atol=0, rtol=0)
    torch.testing.assert_close(out["video_features"][1, :3], b, atol=0, rtol=0)
    assert out["video_mask"].tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    single = prepare_video_features(np.ones((4, 7), np.float32), 2.5)
    assert single["video_features"].shape == (1, 4, 7) and single["durations"].tolist() == [2.5]


@pytest.mark.parametrize(
    "features, durations, match",
    [
        (torch.randn(4, 7), None, "durations are required"),
        (torch.randn(4, 7), [1.0, 2.0], "2 durations for 1 videos"),
        (torch.randn(4, 7), [0.0], "positive seconds"),
        (torch.randn(2, 3, 4, 7), [1.0], r"\(L, D\), \(B, L, D\)"),
        ([torch.randn(4, 7), torch.randn(4, 6)], [1.0, 1.0], "one D"),
        (torch.full((4, 7), float("nan")), [1.0], "NaN"),
        (torch.zeros(0, 7), [1.0], "no frames"),
    ],
)
def test_bad_features(processor, features, durations, match):
    with pytest.raises(ValueError, match=match):
        processor(video_features=features, durations=durations)


def test_missing_not_a_video_empty_and_audio_only(tmp_path, processor):
    vp = processor.video_processor
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        vp.sample_video(tmp_path / "nope.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"this is not a video" * 40)
    with pytest.raises(VideoDecodingError, match="junk.mp4 is not a readable video"):
        vp.sample_video(tmp_path / "junk.mp4")
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(VideoDecodingError, match="zero.mp4"):
        vp.sample_video(tmp_path / "zero.mp4")
    with pytest.raises(VideoDecodingError, match="no video stream"):
        vp.sample_video(write_audio_only(tmp_path / "audio.mp4"))
    with pytest.raises(ValueError, match="exactly one of videos"):
        processor()


def test_one_frame_video_repeats_its_frame(videos):
    """Documented: a 1-frame video gives L copies of its frame and the container's duration."""
    sampled = CACMIVideoProcessor(num_frames=5).sample_video(videos["one"])
    assert sampled.frames.shape[0] == 5 and sampled.duration == pytest.approx(0.1)
    assert all(np.array_equal(f, sampled.frames[0]) for f in sampled.frames)
    one = CACMIVideoProcessor(num_frames=3).sample_video(np.full((1, 4, 4, 3), 9, np.uint8), fps=25.0)
    assert one.frames.shape == (3, 4, 4, 3) and one.duration == pytest.approx(0.04)


def test_corrupt_middle_decodes_the_rest_with_a_warning(tmp_path):
    path = write_video(tmp_path / "c.mp4", seconds=4.0, fps=25, size=(128, 96))
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 1500] = np.random.default_rng(0).integers(0, 256, 1500, dtype=np.uint8).tobytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampled = CACMIVideoProcessor(num_frames=4, seek=False).sample_video(bytes(data))
    assert sampled.frames.shape == (4, 96, 128, 3)
    assert any("corrupt packet" in str(w.message) for w in caught)


@pytest.mark.parametrize(
    "frames, fps, match",
    [
        (np.zeros((4, 8, 8), np.uint8), 1.0, r"\(T, H, W, 3\)"),
        (np.zeros((4, 3, 8, 8), np.uint8), 1.0, "channels first"),
        (np.zeros((4, 8, 8, 3), np.float32), 1.0, "uint8"),
        (np.zeros((0, 8, 8, 3), np.uint8), 1.0, "empty"),
        (np.zeros((4, 8, 8, 3), np.uint8), None, "without fps"),
        (np.zeros((4, 8, 8, 3), np.uint8), -2.0, "positive"),
        ([np.zeros((8, 8, 3), np.uint8)] * 3, 1.0, "stack"),
        (3.5, None, "unsupported video input"),
    ],
)
def test_bad_frames(frames, fps, match):
    with pytest.raises(ValueError, match=match):
        CACMIVideoProcessor(num_frames=2).sample_video(frames, fps)


def test_huge_resolution_is_downscaled_while_decoding(tmp_path):
    path = write_video(tmp_path / "big.mp4", seconds=0.4, fps=10, size=(1920, 1080))
    vp = CACMIVideoProcessor(num_frames=8, image_size=32)  # decode_short_side defaults to the CLIP size
    tracemalloc.start()
    sampled = vp.sample_video(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sampled.frames.shape == (8, 32, 56, 3)  # shorter side 32, aspect kept (even width)
    full_frames = 8 * 1080 * 1920 * 3
    assert peak < full_frames / 20  # never held at full resolution


def test_post_process_decodes_captions(processor, tokenizer):
    ids = tokenizer(["a red circle moves", "a blue square grows"])["input_ids"]  # [BOS .. EOS]
    width = max(map(len, ids))
    caption_ids = torch.tensor([[row + [0] * (width - len(row)) for row in ids]])  # (1, 2, T)
    outputs = type("Out", (), {})()
    outputs.logits = torch.tensor([[2.0, 0.0]])
    outputs.pred_segments = torch.tensor([[[0.5, 0.2], [0.25, 0.5]]])
    outputs.pred_counts = torch.tensor([[0.0, 0.0, 5.0]])  # two events
    outputs.caption_ids = caption_ids
    outputs.caption_log_probs = torch.zeros(caption_ids.shape)
    events = processor.post_process_dense_video_captioning(outputs, torch.tensor([20.0]))[0]
    assert [e["caption"] for e in events] == ["a blue square grows", "a red circle moves"]  # by start: 0 s, 8 s
    assert events[0]["timestamp"] == pytest.approx([0.0, 10.0]) and events[1]["timestamp"] == pytest.approx([8.0, 12.0])


def test_retrieved_sentences(processor):
    assert processor.retrieved_sentences(torch.tensor([[1, 0], [0, 0]])) == [
        ["a blue square grows", "a red circle moves"],
        ["a red circle moves", "a red circle moves"],
    ]
    with pytest.raises(ValueError, match="outside the 2 memory sentences"):
        processor.retrieved_sentences([5])
    processor.memory_sentences = None
    with pytest.raises(ValueError, match="no memory-bank sentences"):
        processor.retrieved_sentences([0])


def test_save_and_auto_load_round_trip(tmp_path, processor):
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"]["AutoProcessor"] == "processing_cacmi.CACMIProcessor"
    assert "memory_sentences" not in saved and (tmp_path / "memory_sentences.json").is_file()
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is CACMIProcessor
    assert loaded.video_processor.to_dict() == processor.video_processor.to_dict()
    assert loaded.memory_sentences == processor.memory_sentences
    assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    frames = np.random.default_rng(0).integers(0, 255, (12, 40, 50, 3), dtype=np.uint8)
    torch.testing.assert_close(loaded(videos=frames, fps=3.0)["pixel_values_videos"],
                               processor(videos=frames, fps=3.0)["pixel_values_videos"], atol=0, rtol=0)
    assert AutoProcessor.from_pretrained(tmp_path, num_frames=7).video_processor.num_frames == 7
    assert saved["event_count"] == loaded.event_count == "argmax"


def test_event_count_rule_is_saved_and_used(tmp_path, processor):
    outputs = type("Out", (), {})()
    outputs.logits = torch.tensor([[2.0, 1.0, 0.0]])
    outputs.pred_segments = torch.tensor([[[0.2, 0.2], [0.5, 0.2], [0.8, 0.2]]])
    outputs.pred_counts = torch.tensor([[-1e4, 2.0, 0.0, 0.0]])  # argmax 1 event, expected 1.8 -> 2
    outputs.caption_ids, outputs.caption_log_probs = None, None
    assert len(processor.post_process_dense_video_captioning(outputs, [10.0])[0]) == 1
    assert len(processor.post_process_dense_video_captioning(outputs, [10.0], event_count="expected")[0]) == 2
    processor.event_count = "expected"
    try:
        processor.save_pretrained(tmp_path)
    finally:
        processor.event_count = "argmax"
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert loaded.event_count == "expected"
    assert len(loaded.post_process_dense_video_captioning(outputs, [10.0])[0]) == 2
    with pytest.raises(ValueError, match="event_count"):
        CACMIProcessor(processor.video_processor, processor.tokenizer, event_count="mode")


def test_rerank_alpha_is_saved_and_used(tmp_path, processor):
    outputs = type("Out", (), {})()
    outputs.logits = torch.tensor([[2.0, 0.0]])  # q0 confident
    outputs.pred_segments = torch.tensor([[[0.25, 0.2], [0.75, 0.2]]])
    outputs.pred_counts = torch.tensor([[0.0, 5.0, 0.0]])  # one event
    outputs.caption_ids = torch.tensor([[[1, 4, 5, 2], [1, 6, 7, 2]]])
    outputs.caption_log_probs = torch.tensor([[[0.0, -3.0, -3.0, 0.0], [0.0, -0.1, -0.1, 0.0]]])  # q1 fluent
    starts = lambda **kw: [e["query_index"] for e in processor.post_process_dense_video_captioning(outputs, [10.0], **kw)[0]]
    assert processor.rerank_alpha == 1.0 and starts() == [1]  # 1·(-6/4) + .88 < 1·(-.2/4) + .5
    assert starts(rerank_alpha=0.0) == [0]
    processor.rerank_alpha = 0.0
    try:
        processor.save_pretrained(tmp_path)
        assert starts() == [0]
    finally:
        processor.rerank_alpha = 1.0
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert loaded.rerank_alpha == 0.0
    assert [e["query_index"] for e in loaded.post_process_dense_video_captioning(outputs, [10.0])[0]] == [0]
