"""The optional CLIP image tower: same features as extraction, frozen, meta-device loading, from_clip."""

import copy

import pytest
import torch

from cacmi_hf import CACMIConfig, CACMIForDenseCaptioning
from cacmi_hf.open_clip_tower import (
    TINY_OPEN_CLIP_CONFIG,
    build_open_clip_model,
    encode_images,
    resolve_open_clip,
    save_open_clip_local_dir,
)
from cacmi_hf.vision_tower import CACMIVisionTower


def tiny_config(**overrides) -> CACMIConfig:
    base = dict(
        feature_dim=32, num_frames=6, hidden_size=32, num_attention_heads=4, ffn_dim=32, num_encoder_layers=1,
        num_decoder_layers=1, num_feature_levels=2, num_queries=4, max_event_count=3, vocab_size=12,
        max_caption_len=4, caption_hidden_size=16, num_clusters=2, retrieval_top_k=2, memory_size=4,
    )
    base.update(overrides)
    return CACMIConfig(**base)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    torch.manual_seed(0)
    spec = resolve_open_clip(TINY_OPEN_CLIP_CONFIG)
    clip = build_open_clip_model(spec).eval()
    folder = save_open_clip_local_dir(clip, spec, tmp_path_factory.mktemp("clip") / "tiny")
    return folder, clip


@pytest.fixture(scope="module")
def model(clip_dir):
    torch.manual_seed(1)
    net = CACMIForDenseCaptioning.from_clip(clip_dir[0], clip_dir[0], config=tiny_config()).eval()
    net.set_memory_bank(torch.randn(4, 32), torch.arange(4))
    return net


def test_from_clip_sets_config_and_copies_weights(model, clip_dir):
    assert model.config.feature_dim == 32 and model.config.vision_config["model_cfg"]["embed_dim"] == 32
    for name, tensor in clip_dir[1].visual.state_dict().items():
        torch.testing.assert_close(model.vision_tower.visual.state_dict()[name], tensor, atol=0, rtol=0, msg=name)
    with pytest.raises(ValueError, match="contradicts the CLIP embedding size 32"):
        CACMIForDenseCaptioning.from_clip(clip_dir[0], feature_dim=64)


def test_features_equal_extraction_and_skip_padding(model, clip_dir):
    pixels = torch.randn(2, 3, 3, 32, 32)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    features = model.vision_tower(pixels, mask)  # (2, 3, 32)
    expected = encode_images(clip_dir[1], pixels.flatten(0, 1)).view(2, 3, 32)
    torch.testing.assert_close(features[mask], expected[mask], atol=1e-6, rtol=0)
    assert torch.equal(features[~mask], torch.zeros(2, 32))
    torch.testing.assert_close(features.norm(dim=-1)[mask], torch.ones(4))
    small_chunks = copy.deepcopy(model.vision_tower)
    small_chunks.chunk_size = 1
    torch.testing.assert_close(small_chunks(pixels, mask), features, atol=1e-5, rtol=0)


def test_tower_is_frozen_and_stays_in_eval(model):
    assert not any(p.requires_grad for p in model.vision_tower.parameters())
    model.train()
    try:
        assert model.training and not model.vision_tower.training and not model.vision_tower.visual.training
    finally:
        model.eval()


def test_pixel_path_equals_feature_path_in_generate(model):
    pixels = torch.randn(2, 6, 3, 32, 32)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    durations = torch.tensor([12.0, 7.0])
    with torch.no_grad():
        from_pixels = model.generate(pixel_values_videos=pixels, video_mask=mask, durations=durations)
        from_features = model.generate(
            video_features=model.vision_tower(pixels, mask), video_mask=mask, durations=durations
        )
    for name in ("logits", "pred_segments", "pred_counts", "caption_log_probs"):
        torch.testing.assert_close(getattr(from_pixels, name), getattr(from_features, name), atol=0, rtol=0, msg=name)
    assert torch.equal(from_pixels.caption_ids, from_features.caption_ids)


def test_save_load_keeps_the_tower(model, tmp_path):
    model.save_pretrained(tmp_path)
    loaded = CACMIForDenseCaptioning.from_pretrained(tmp_path).eval()
    assert not any(p.requires_grad for p in loaded.vision_tower.parameters())  # still frozen after loading
    ours = dict(model.vision_tower.named_parameters()) | dict(model.vision_tower.named_buffers())
    theirs = dict(loaded.vision_tower.named_parameters()) | dict(loaded.vision_tower.named_buffers())
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        torch.testing.assert_close(theirs[name], tensor, atol=0, rtol=0, msg=name)


def test_meta_device_build_initialises_every_open_clip_parameter(tmp_path):
    """A checkpoint without tower weights: from_pretrained builds on meta and init_special_weights fills them."""
    torch.manual_seed(2)
    plain = CACMIForDenseCaptioning(tiny_config())
    plain.save_pretrained(tmp_path)
    config = tiny_config(vision_config=resolve_open_clip(TINY_OPEN_CLIP_CONFIG).to_dict())
    loaded = CACMIForDenseCaptioning.from_pretrained(tmp_path, config=config)
    visual = loaded.vision_tower.visual
    for name, tensor in list(visual.named_parameters()) + list(visual.named_buffers()):
        assert not tensor.is_meta and torch.isfinite(tensor).all(), name
    width = visual.class_embedding.shape[-1]
    assert 0.5 * width**-0.5 < float(visual.positional_embedding.detach().std()) < 1.5 * width**-0.5
    assert float(visual.proj.abs().max()) > 0


def test_bad_inputs_and_configs(model, clip_dir):
    tower = model.vision_tower
    with pytest.raises(ValueError, match=r"\(batch, frames, 3, 32, 32\)"):
        tower(torch.randn(3, 3, 32, 32))
    with pytest.raises(ValueError, match="takes 32x32"):
        tower(torch.randn(1, 2, 3, 16, 16))
    with pytest.raises(ValueError, match="feature_dim is 768"):
        CACMIVisionTower(tiny_config(feature_dim=768, vision_config=resolve_open_clip(TINY_OPEN_CLIP_CONFIG).to_dict()))
    timm = resolve_open_clip(TINY_OPEN_CLIP_CONFIG).to_dict()
    timm["model_cfg"]["vision_cfg"]["timm_model_name"] = "vit_tiny_patch16_224"
    with pytest.raises(ValueError, match="timm image tower"):
        CACMIVisionTower(tiny_config(vision_config=timm))
    other = copy.deepcopy(TINY_OPEN_CLIP_CONFIG)
    other["vision_cfg"]["width"] = 32
    other_clip = build_open_clip_model(resolve_open_clip(other))
    with pytest.raises(ValueError, match="do not fit config.vision_config"):
        copy.deepcopy(tower).load_clip_weights(other_clip)


def test_bf16_weights_match_fp32_features_and_return_float32(clip_dir):
    config = tiny_config()
    config.vision_config = resolve_open_clip(TINY_OPEN_CLIP_CONFIG).to_dict()
    tower = CACMIVisionTower(config)
    tower.load_clip_weights(clip_dir[1])
    torch.manual_seed(2)
    # smooth pictures (a coarse grid upsampled), normalised like CLIP inputs
    pixels = torch.nn.functional.interpolate(torch.randn(8, 3, 4, 4), size=32, mode="bilinear").view(2, 4, 3, 32, 32)
    reference = tower(pixels)  # (2, 4, 32)
    assert tower.set_dtype("bf16") == torch.bfloat16 and tower.dtype == torch.bfloat16
    half = tower(pixels)
    assert half.dtype == torch.float32 and reference.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(half, reference, dim=-1)  # (2, 4)
    assert cosine.min() >= 0.999 and not torch.equal(half, reference)  # really computed in bf16
    assert tower.set_dtype("fp32") == torch.float32
    torch.testing.assert_close(tower(pixels), reference, atol=1e-2, rtol=0)  # bf16 round trip of the weights


def test_auto_dtype_follows_the_cpu_flags(tmp_path, monkeypatch):
    from cacmi_hf import open_clip_tower as oct

    with_bf16 = tmp_path / "with"
    with_bf16.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n")
    without = tmp_path / "without"
    without.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512_vnni\n")
    assert oct.cpu_has_native_bf16(with_bf16) and not oct.cpu_has_native_bf16(without)
    monkeypatch.setattr(oct, "cpu_has_native_bf16", lambda: True)
    assert oct.resolve_tower_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(oct, "cpu_has_native_bf16", lambda: False)
    assert oct.resolve_tower_dtype("auto", "cpu") == torch.float32
    assert oct.resolve_tower_dtype("fp16") == torch.float16 and oct.resolve_tower_dtype(None) == torch.float32
    assert oct.resolve_tower_dtype("bfloat16") == torch.bfloat16 and oct.dtype_name(torch.bfloat16) == "bf16"
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16.*'int8'"):
        oct.resolve_tower_dtype("int8")


def test_frames_per_batch_scales_with_the_budget_and_dtype(model):
    tower = copy.deepcopy(model.vision_tower)
    small, large = tower.frames_per_batch(1), tower.frames_per_batch(64)
    assert 1 <= small < large and tower.frames_per_batch(0) == 1
    tower.set_dtype("bf16")
    assert tower.frames_per_batch(64) >= 2 * large - 1  # half the bytes per activation
