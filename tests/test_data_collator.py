"""DenseCaptioningCollator: padded model inputs and labels, event sampling, bank indices, real-annotation shapes."""

import numpy as np
import pytest
import torch

from cacmi_hf import CACMIConfig
from cacmi_hf.data.collator import DenseCaptioningCollator
from cacmi_hf.data.vocab import build_caption_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_caption_tokenizer(["a man runs", "a dog runs", "the man jumps", "the dog jumps"], min_count=1, max_caption_len=4)


def row(video_id, frames, duration, timestamps, sentences, dim=3, offset=0.0):
    features = np.repeat(np.arange(frames, dtype=np.float32)[:, None] + offset, dim, axis=1)
    return {"video_id": video_id, "video_features": features, "duration": duration, "timestamps": timestamps, "sentences": sentences}


def test_hand_worked_batch(tokenizer):
    rows = [
        row("v_a", 10, 20.0, [[2.0, 10.0], [15.0, 25.0]], ["a man runs", "the dog jumps"]),
        row("v_b", 3, 4.0, [[1.0, 3.0]], ["a dog flies away fast now"], offset=100),
    ]
    vocab = tokenizer.get_vocab()
    collate = DenseCaptioningCollator(tokenizer, num_frames=4, max_caption_len=4, memory_video_lookup={"v_b": 7}, training=False)
    batch = collate(rows)
    assert batch["video_features"].shape == (2, 4, 3) and batch["video_features"].dtype == torch.float32
    assert batch["video_features"][0, :, 0].tolist() == [1, 3, 6, 8]
    assert batch["video_features"][1, :, 0].tolist() == [100, 101, 101, 102]
    assert batch["video_mask"].all()
    assert batch["durations"].tolist() == [20.0, 4.0]
    assert batch["video_ids"].tolist() == [-1, 7]
    # (start, end) / duration, clamped to [0, 1]: 25 s of a 20 s video ends at 1.0
    expected = torch.tensor([[[0.1, 0.5], [0.75, 1.0]], [[0.25, 0.75], [0.0, 0.0]]])
    torch.testing.assert_close(batch["event_segments"], expected, atol=0, rtol=0)
    assert batch["event_mask"].tolist() == [[True, True], [True, False]]
    w = lambda word: vocab[word]  # noqa: E731
    unk = tokenizer.unk_token_id
    assert batch["caption_ids"].tolist() == [
        [[1, w("a"), w("man"), w("runs"), 2, 0], [1, w("the"), w("dog"), w("jumps"), 2, 0]],
        [[1, w("a"), w("dog"), unk, unk, 2], [0, 0, 0, 0, 0, 0]],  # 6 words truncated to 4
    ]
    assert batch["caption_ids"].dtype == torch.long


def test_event_sampling_train_vs_eval(tokenizer):
    timestamps = [[float(i), float(i + 1)] for i in range(40)]
    sentences = ["a man runs"] * 40
    rows = [row("v", 5, 50.0, timestamps, sentences)]
    train = DenseCaptioningCollator(tokenizer, num_frames=5, max_train_events=30, seed=3)
    first = train(rows)["event_segments"][0, :, 0] * 50
    assert first.shape == (30,)
    starts = first.round().long().tolist()
    assert len(set(starts)) == 30 and starts == sorted(starts)  # a subset, kept in annotation order
    second = train(rows)["event_segments"][0, :, 0] * 50
    assert not torch.equal(first, second)  # a new subset each call
    again = DenseCaptioningCollator(tokenizer, num_frames=5, max_train_events=30, seed=3)(rows)["event_segments"][0, :, 0] * 50
    torch.testing.assert_close(again, first)  # same seed, same first draw
    evaluation = DenseCaptioningCollator(tokenizer, num_frames=5, max_train_events=30, training=False)(rows)
    assert (evaluation["event_segments"][0, :, 0] * 50).round().long().tolist() == list(range(40))


def test_native_lengths_are_padded_and_masked(tokenizer):
    rows = [row("a", 2, 2.0, [[0, 1]], ["a man runs"], offset=1), row("b", 4, 4.0, [[0, 1]], ["a dog runs"], offset=1)]
    batch = DenseCaptioningCollator(tokenizer, num_frames=None, max_caption_len=4)(rows)
    assert batch["video_features"].shape == (2, 4, 3)
    assert batch["video_mask"].tolist() == [[True, True, False, False], [True] * 4]
    assert batch["video_features"][0, 2:].abs().sum() == 0


def test_rows_without_annotations_give_inputs_only(tokenizer):
    rows = [{"video_id": "x", "video_features": np.ones((3, 2), np.float32), "duration": 3.0}]
    batch = DenseCaptioningCollator(tokenizer, num_frames=3, return_video_names=True)(rows)
    assert set(batch) == {"video_features", "video_mask", "durations", "video_ids", "video_names"}
    assert batch["video_names"] == ["x"]
    with pytest.raises(ValueError, match="'y'.*video_features"):
        DenseCaptioningCollator(tokenizer)([{"video_id": "y", "duration": 1.0}])


def test_real_youcook2_batch_shapes(shared_data, tokenizer):
    from cacmi_hf.data.annotations import load_youcook2
    from cacmi_hf.data.features import attach_features

    config = CACMIConfig.from_preset("youcook2")
    dataset = load_youcook2(shared_data / "youcook2" / "yc2_val.json", split="validation").select(range(16))
    rng = np.random.default_rng(0)
    features = {vid: rng.standard_normal((int(rng.integers(20, 400)), 768)).astype(np.float32) for vid in dataset["video_id"]}
    dataset = attach_features(dataset, features, num_frames=config.num_frames, feature_dim=config.feature_dim)
    rows = [dataset[i] for i in range(16)]
    counts = [len(t) for t in dataset["timestamps"]]
    assert max(counts) > config.max_train_events  # some videos get subsampled while training

    batch = DenseCaptioningCollator(tokenizer, config, training=False)(rows)
    assert batch["video_features"].shape == (16, 200, 768) and batch["video_mask"].all()
    assert batch["event_segments"].shape == (16, max(counts), 2) and batch["event_mask"].sum(-1).tolist() == counts
    assert batch["caption_ids"].shape[:2] == (16, max(counts)) and batch["caption_ids"].shape[2] <= config.max_caption_len + 2
    assert 0 <= batch["event_segments"].min() and batch["event_segments"].max() <= 1
    assert (batch["event_segments"][..., 0] <= batch["event_segments"][..., 1]).all()
    real = batch["caption_ids"][batch["event_mask"]]
    assert (real[:, 0] == 1).all() and ((real == 2).sum(-1) == 1).all()  # BOS first, exactly one EOS

    train = DenseCaptioningCollator(tokenizer, config, training=True)(rows)
    assert train["event_segments"].shape == (16, config.max_train_events, 2)
    assert train["event_mask"].sum(-1).tolist() == [min(c, config.max_train_events) for c in counts]


def test_batch_feeds_the_model(tokenizer):
    from cacmi_hf import CACMIForDenseCaptioning

    config = CACMIConfig(
        feature_dim=3, num_frames=8, hidden_size=32, num_attention_heads=4, ffn_dim=32, num_encoder_layers=1,
        num_decoder_layers=1, num_feature_levels=2, num_queries=4, max_event_count=3, vocab_size=len(tokenizer),
        caption_hidden_size=16, num_clusters=2, retrieval_top_k=2, max_caption_len=4, max_train_events=2, memory_size=4,
    )
    torch.manual_seed(0)
    model = CACMIForDenseCaptioning(config)
    model.set_memory_bank(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]))
    rows = [
        row("v_a", 11, 20.0, [[2.0, 10.0], [15.0, 25.0], [1.0, 3.0]], ["a man runs", "the dog jumps", "a dog runs"]),
        row("v_b", 5, 4.0, [[1.0, 3.0]], ["the man jumps"], offset=1),
    ]
    batch = DenseCaptioningCollator(tokenizer, config, memory_video_lookup={"v_a": 0, "v_b": 1})(rows)
    assert batch["event_mask"].tolist() == [[True, True], [True, False]]  # max_train_events = 2
    output = model(**batch)
    assert torch.isfinite(output.loss)
    output.loss.backward()
