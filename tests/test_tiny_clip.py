"""The tiny open_clip model: config, local-dir round trip, contrastive loss, training, caching, evaluation."""

import json
import math

import numpy as np
import pytest
import torch

open_clip = pytest.importorskip("open_clip")

from cacmi_hf.synthetic import tiny_clip as T  # noqa: E402
from cacmi_hf.synthetic import (  # noqa: E402
    TINY_CLIP_MODEL_CFG,
    TinyClipTrainingConfig,
    build_tiny_clip,
    evaluate_zero_shot,
    generate_video,
    generate_world,
    get_or_train_tiny_clip,
    labelled_frames,
    load_tiny_clip,
    parse_caption,
    save_tiny_clip,
    train_tiny_clip,
)

COUNTS = {"train": 5, "val": 2}
FAST = TinyClipTrainingConfig(steps=3, batch_size=32, warmup_steps=1)
# An even smaller model for the tests that only exercise the training machinery.
MICRO_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 1, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small world on disk (7 videos)."""
    return generate_world(tmp_path_factory.mktemp("clipworld") / "world", COUNTS, seed=1, progress=False)


def test_embedding_dims_and_size_as_configured():
    torch.manual_seed(0)
    model = build_tiny_clip().eval()
    tokens = open_clip.tokenizer.SimpleTokenizer(context_length=16)(["a red circle", "a blue square grows"])
    with torch.no_grad():
        image = model.encode_image(torch.randn(3, 3, 32, 32))
        text = model.encode_text(tokens)
    assert image.shape == (3, TINY_CLIP_MODEL_CFG["embed_dim"]) and text.shape == (2, 128)
    parameters = sum(p.numel() for p in model.parameters())
    assert 3.5e6 < parameters < 4.5e6
    assert model.context_length == 16 and model.visual.image_size == (32, 32)


def test_local_dir_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_tiny_clip().eval()
    path = save_tiny_clip(model, tmp_path / "clip")
    assert sorted(p.name for p in path.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]
    assert set(json.loads((path / "open_clip_config.json").read_text())) == {"model_cfg", "preprocess_cfg"}
    loaded, preprocess, tokenizer = load_tiny_clip(path)
    direct, _, _ = open_clip.create_model_and_transforms(f"local-dir:{path}")
    frames = generate_video("val", 0, seed=1).frames[:4]  # (4, 32, 32, 3) uint8
    pixels = T.frames_to_pixels(frames)
    from PIL import Image

    via_preprocess = torch.stack([preprocess(Image.fromarray(f)) for f in frames])
    assert torch.allclose(pixels, via_preprocess, atol=1e-5)
    tokens = tokenizer(["a red circle moves up", "a green cross blinks"])
    assert tokens.shape == (2, 16)
    with torch.no_grad():
        for other in (loaded, direct.eval()):
            assert torch.equal(model.encode_image(pixels), other.encode_image(pixels))
            assert torch.equal(model.encode_text(tokens), other.encode_text(tokens))


def test_fallback_loader_for_open_clip_without_local_dir(tmp_path, monkeypatch):
    torch.manual_seed(1)
    model = build_tiny_clip(MICRO_CFG).eval()
    path = save_tiny_clip(model, tmp_path / "clip", MICRO_CFG)
    monkeypatch.delattr(open_clip.factory, "LOCAL_DIR_PREFIX")
    loaded, preprocess, tokenizer = load_tiny_clip(path)
    from PIL import Image

    frame = generate_video("val", 0, seed=1).frames[5]
    pixels = preprocess(Image.fromarray(frame))[None]  # (1, 3, 32, 32)
    assert torch.allclose(pixels, T.frames_to_pixels(frame[None]), atol=1e-5)
    tokens = tokenizer(["a red circle"])
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(pixels), model.encode_image(pixels))
        assert torch.equal(loaded.encode_text(tokens), model.encode_text(tokens))


def test_load_tiny_clip_names_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        load_tiny_clip(tmp_path)


def test_contrastive_loss_hand_values():
    s = torch.tensor(3.0)
    e = torch.eye(2)
    loss = T._contrastive_loss(e, e, torch.tensor([0, 1]), s)
    assert math.isclose(float(loss), math.log(1 + math.exp(-3.0)), rel_tol=1e-6)
    # two frames share caption 0: both are positives for it, neither counts as its negative
    loss = T._contrastive_loss(e[[0, 0, 1]], e, torch.tensor([0, 0, 1]), s)
    text_to_image = (math.log(1 + math.exp(-3.0) / 2) + math.log(1 + 2 * math.exp(-3.0))) / 2
    assert math.isclose(float(loss), (math.log(1 + math.exp(-3.0)) + text_to_image) / 2, rel_tol=1e-6)
    # a caption absent from the batch is a negative for image->text only
    loss = T._contrastive_loss(e[[0]], torch.eye(3)[:, :2], torch.tensor([0]), s)
    assert math.isclose(float(loss), math.log(1 + 2 * math.exp(-3.0)) / 2, rel_tol=1e-6)


def test_labelled_frames_keep_exactly_the_frames_showing_one_object(world):
    data = labelled_frames(world.root, "train")
    expected_captions = []
    for index in range(COUNTS["train"]):
        video = generate_video("train", index, seed=1)
        inside = np.zeros_like(video.visible)
        for e, event in enumerate(video.events):
            inside[event.start_frame : event.end_frame, e] = True
        shown = (inside.sum(1) == 1) & (video.visible & inside).any(1)
        expected_captions += [video.events[inside[t].argmax()].caption for t in np.flatnonzero(shown)]
    assert data.captions == expected_captions
    assert data.frames.shape == (len(expected_captions), 32, 32, 3) and data.frames.dtype == np.uint8
    assert all(parse_caption(c) for c in data.captions)


def test_labelled_frames_missing_split_names_it(world):
    with pytest.raises(FileNotFoundError, match="nosuch.json"):
        labelled_frames(world.root, "nosuch")


def test_short_training_lowers_the_loss(world):
    data = labelled_frames(world.root, "train")
    config = TinyClipTrainingConfig(steps=30, batch_size=32, warmup_steps=3, learning_rate=3e-3)
    model, history = train_tiny_clip(data, config, model_cfg=MICRO_CFG, progress=False)
    assert history["steps"] == 30 and len(history["loss"]) == 30
    assert np.mean(history["loss"][-5:]) < history["loss"][0] - 0.3
    assert not model.token_embedding.sparse  # sparse gradients are a training-time setting only


def test_training_is_deterministic(world):
    data = labelled_frames(world.root, "train")
    first, h1 = train_tiny_clip(data, FAST, model_cfg=MICRO_CFG, progress=False)
    second, h2 = train_tiny_clip(data, FAST, model_cfg=MICRO_CFG, progress=False)
    assert h1["loss"] == h2["loss"]
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_get_or_train_caches_by_key(world, tmp_path):
    train = dict(config=FAST, model_cfg=MICRO_CFG, progress=False)
    path = get_or_train_tiny_clip(world.root, tmp_path, **train)
    record = json.loads((path / "training.json").read_text())
    assert record["steps"] == 3 and record["key_source"]["training"]["seed"] == 0
    stamp = (path / "open_clip_model.safetensors").stat().st_mtime_ns
    assert get_or_train_tiny_clip(world.root, tmp_path, **train) == path
    assert (path / "open_clip_model.safetensors").stat().st_mtime_ns == stamp
    other_seed = get_or_train_tiny_clip(
        world.root, tmp_path, config=TinyClipTrainingConfig(steps=3, batch_size=32, seed=1), model_cfg=MICRO_CFG, progress=False
    )
    more_steps = get_or_train_tiny_clip(world.root, tmp_path, steps=4, **train)
    assert len({path, other_seed, more_steps}) == 3
    assert not list(tmp_path.glob(".*partial*"))
    model, _, _ = load_tiny_clip(path)
    with torch.no_grad():
        assert model.encode_image(torch.zeros(1, 3, 32, 32)).shape == (1, 32)


def test_get_or_train_requires_a_world(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.json"):
        get_or_train_tiny_clip(tmp_path, tmp_path / "cache", config=FAST, progress=False)


def test_evaluate_zero_shot_scores_val_frames(world, tmp_path):
    path = get_or_train_tiny_clip(world.root, tmp_path, config=FAST, model_cfg=MICRO_CFG, progress=False)
    scores = evaluate_zero_shot(path, world.root, "val")
    data = labelled_frames(world.root, "val")
    assert scores["frames"] == len(data.captions)
    assert scores["prompts"] == len({parse_caption(c)[:2] for c in data.captions})
    for key in ("colour", "shape"):
        # accuracies are means over frames, so multiples of 1/frames
        assert 0.0 <= scores[key] <= 1.0
        assert math.isclose(scores[key] * scores["frames"], round(scores[key] * scores["frames"]), abs_tol=1e-6)
