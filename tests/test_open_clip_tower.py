"""open_clip_tower: offline building, local weights, torch preprocessing equal to open_clip's, normalised encoders."""

import json

import numpy as np
import pytest
import torch

from cacmi_hf.open_clip_tower import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    TINY_OPEN_CLIP_CONFIG,
    build_open_clip_model,
    causal_text_mask,
    encode_images,
    encode_texts,
    get_text_tokenizer,
    load_open_clip,
    preprocess_frames,
    rebuild_text_attention_masks,
    resize_crop_frames,
    resolve_open_clip,
    save_open_clip_local_dir,
    spec_preprocess,
)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_open_clip(TINY_OPEN_CLIP_CONFIG)


@pytest.fixture(scope="module")
def smooth_frames():
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (3, 6, 8, 3)).astype(np.float32)
    # a smooth 240x320 picture (bilinear upsampling of a coarse grid), like real video content
    x = torch.nn.functional.interpolate(torch.from_numpy(coarse).permute(0, 3, 1, 2), size=(240, 320), mode="bilinear")
    return x.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


def test_resolve_bundled_name_without_download():
    spec = resolve_open_clip("ViT-L-14")
    assert spec.embed_dim == 768 and spec.image_size == 224 and spec.checkpoint is None
    assert tuple(spec.preprocess_cfg["mean"]) == OPENAI_CLIP_MEAN
    with pytest.raises(ValueError, match="Unknown open_clip model 'ViT-Q-99'"):
        resolve_open_clip("ViT-Q-99")
    with pytest.raises(ValueError, match="needs a download"):
        resolve_open_clip("ViT-L-14", "openai")  # a tag, but downloads were not allowed
    with pytest.raises(FileNotFoundError, match="neither a file"):
        resolve_open_clip("ViT-L-14", "/no/such/weights.bin")


def test_build_on_meta_device_and_rebuild_causal_mask():
    with torch.device("meta"):
        model = build_open_clip_model("ViT-L-14")  # ViT-L/14's real architecture, no memory, no download
    assert sum(p.numel() for p in model.parameters()) == 427_616_513
    assert model.attn_mask.is_meta
    rebuild_text_attention_masks(model)
    assert not model.attn_mask.is_meta
    torch.testing.assert_close(model.attn_mask, causal_text_mask(77))
    assert causal_text_mask(3).tolist() == [[0.0, float("-inf"), float("-inf")], [0.0, 0.0, float("-inf")], [0.0, 0.0, 0.0]]


def test_preprocess_matches_open_clip_transform(smooth_frames):
    import open_clip
    from PIL import Image

    reference = open_clip.image_transform(224, is_train=False)
    ours = preprocess_frames(smooth_frames, 224)  # (3,3,224,224)
    for frame, got in zip(smooth_frames, ours):
        want = reference(Image.fromarray(frame))
        diff = (want - got).abs()
        # PIL and torch bicubic round differently by at most one uint8 level: 1 / (255 * min std)
        assert diff.max() <= 1.0 / (255 * min(OPENAI_CLIP_STD)) + 1e-5
        assert (diff > 1e-4).float().mean() < 0.25  # most values agree exactly


def test_preprocess_hand_worked_constant_and_layouts():
    frame = np.full((2, 10, 20, 3), 51, np.uint8)  # 51 / 255 = 0.2
    out = preprocess_frames(frame, 8)
    expected = (0.2 - torch.tensor(OPENAI_CLIP_MEAN)) / torch.tensor(OPENAI_CLIP_STD)
    assert out.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out[:, :, 3, 3], expected.expand(2, 3), atol=1e-6, rtol=0)
    channels_first = torch.from_numpy(frame).permute(0, 3, 1, 2)
    torch.testing.assert_close(preprocess_frames(channels_first, 8), out)
    # the centre crop of a 8x16 resize keeps columns 4..11; a picture split left/right shows it
    split = np.zeros((1, 8, 16, 3), np.uint8)
    split[:, :, 8:] = 255
    crop = resize_crop_frames(split, 8)
    assert crop.dtype == torch.uint8 and crop[0, 0, 0, :4].tolist() == [0] * 4 and crop[0, 0, 0, 4:].tolist() == [255] * 4
    assert resize_crop_frames(split, 8, resize_mode="squash").shape == (1, 3, 8, 8)
    letterbox = resize_crop_frames(split, 8, resize_mode="longest")
    assert letterbox.shape == (1, 3, 8, 8) and letterbox[0, :, 0].sum() == 0 and letterbox[0, :, 7].sum() == 0
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        preprocess_frames(np.zeros((10, 20, 3), np.uint8))


def test_encoders_normalised_and_batch_independent(tiny, smooth_frames):
    model, spec = tiny
    pixels = spec_preprocess(spec)(smooth_frames)  # (3,3,32,32)
    together = encode_images(model, pixels, batch_size=8)
    one_by_one = encode_images(model, pixels, batch_size=1)
    assert together.shape == (3, 32)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=0)
    with torch.no_grad():
        direct = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
    torch.testing.assert_close(together, direct, atol=1e-5, rtol=0)
    tokenizer = get_text_tokenizer(spec)
    sentences = ["a red circle moves to the left", "a blue square grows", "cut the onion"]
    texts = encode_texts(model, sentences, tokenizer, batch_size=2)
    torch.testing.assert_close(texts.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(texts[1:2], encode_texts(model, sentences[1:2], tokenizer), atol=1e-5, rtol=0)


def test_local_dir_round_trip_and_weights_file(tiny, tmp_path, smooth_frames):
    model, spec = tiny
    folder = save_open_clip_local_dir(model, spec, tmp_path / "tiny")
    assert json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]["embed_dim"] == 32
    pixels = spec_preprocess(spec)(smooth_frames)
    want = encode_images(model, pixels)
    for name in (f"local-dir:{folder}", str(folder)):
        loaded, loaded_spec = load_open_clip(name)
        assert loaded_spec.checkpoint.endswith("open_clip_model.safetensors")
        torch.testing.assert_close(encode_images(loaded, pixels), want)
    # a bare weights file for a config dict
    from_file, _ = load_open_clip(TINY_OPEN_CLIP_CONFIG, folder / "open_clip_model.safetensors")
    torch.testing.assert_close(encode_images(from_file, pixels), want)
    # weights of another architecture are refused (strict load)
    other = dict(TINY_OPEN_CLIP_CONFIG, embed_dim=16)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_open_clip(other, folder / "open_clip_model.safetensors")
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        load_open_clip(f"local-dir:{tmp_path}")
