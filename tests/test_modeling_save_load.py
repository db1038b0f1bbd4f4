"""Saving and loading CACMIForDenseCaptioning the transformers way (the saved folder in a fresh process without
the package is checked in test_pipeline.py, together with the processor and the pipeline)."""

import json

import torch
from transformers import AutoConfig, AutoModel

from cacmi_hf import CACMIConfig, CACMIForDenseCaptioning


def tiny_config(**overrides) -> CACMIConfig:
    """A CACMI small enough for CPU tests, with every module switched on."""
    base = dict(
        feature_dim=16, num_frames=12, hidden_size=32, num_attention_heads=4, ffn_dim=32,
        num_encoder_layers=1, num_decoder_layers=2, num_feature_levels=2, num_queries=5,
        max_event_count=3, vocab_size=20, max_caption_len=6, caption_hidden_size=24,
        num_clusters=3, retrieval_top_k=2, retrieval_num_windows=3, memory_size=8,
    )
    base.update(overrides)
    return CACMIConfig(**base)


def make_model(seed: int = 0, **overrides) -> CACMIForDenseCaptioning:
    """A tiny model in eval mode with a random memory bank."""
    torch.manual_seed(seed)
    model = CACMIForDenseCaptioning(tiny_config(**overrides)).eval()
    cfg = model.config
    model.set_memory_bank(torch.randn(cfg.memory_size, cfg.text_dim), torch.arange(cfg.memory_size) % 4)
    return model


def make_inputs(batch: int = 2, seed: int = 1) -> dict:
    """Random features with one padded video."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, 12, 16, generator=g)
    mask = torch.ones(batch, 12, dtype=torch.bool)
    mask[-1, 9:] = False
    return dict(video_features=feats, video_mask=mask, durations=torch.tensor([30.0, 47.5][:batch]))


def assert_same_generation(a, b, atol=0.0):
    """Two generate() outputs agree on every tensor field."""
    for name in ("logits", "pred_segments", "pred_counts", "caption_ids", "caption_log_probs"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape, name
        if x.dtype.is_floating_point:
            torch.testing.assert_close(x, y, atol=atol, rtol=0, msg=name)
        else:
            assert torch.equal(x, y), name


def test_save_load_identical_outputs(tmp_path):
    model = make_model()
    inputs = make_inputs()
    with torch.no_grad():
        before = model.generate(**inputs)
    model.save_pretrained(tmp_path)
    loaded = CACMIForDenseCaptioning.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        after = loaded.generate(**inputs)
    assert_same_generation(before, after)
    # the memory bank travels with the weights
    torch.testing.assert_close(loaded.memory_bank.embeddings, model.memory_bank.embeddings, atol=0, rtol=0)
    assert torch.equal(loaded.memory_bank.video_index, model.memory_bank.video_index)


def test_every_tensor_survives_loading(tmp_path):
    """No buffer (persistent or not) may come back different: from_pretrained builds on meta."""
    model = make_model()
    model.save_pretrained(tmp_path)
    loaded = CACMIForDenseCaptioning.from_pretrained(tmp_path)
    ours = dict(model.named_parameters()) | dict(model.named_buffers())
    theirs = dict(loaded.named_parameters()) | dict(loaded.named_buffers())
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert not theirs[name].is_meta, name
        torch.testing.assert_close(theirs[name], tensor, atol=0, rtol=0, msg=name)


def test_auto_classes_resolve(tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is CACMIConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is CACMIForDenseCaptioning
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "cacmi"
    assert "AutoModel" in saved["auto_map"] and "AutoConfig" in saved["auto_map"]


def test_bf16_save_reloads_close_to_float32(tmp_path):
    model = make_model()
    inputs = make_inputs()
    with torch.no_grad():
        reference = model.generate(**inputs)
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    loaded = CACMIForDenseCaptioning.from_pretrained(tmp_path)
    assert loaded.dtype == torch.bfloat16
    bf16_inputs = dict(inputs, video_features=inputs["video_features"].to(torch.bfloat16))
    with torch.no_grad():
        out = loaded.generate(**bf16_inputs)
        other = make_model(seed=5).to(torch.bfloat16).generate(**bf16_inputs)
    # bf16 keeps 8 significant bits (relative rounding 2^-9 per operation); through two encoder and decoder
    # layers the outputs moved by at most 0.017 (logits, |max| 4.8), 0.0014 (segments) and 0.0025 (counts) in
    # runs of this test: the bounds are about 3x those, far below what another set of weights gives.
    tolerance = {"logits": 0.05, "pred_segments": 0.005, "pred_counts": 0.01}
    for key, atol in tolerance.items():
        torch.testing.assert_close(getattr(out, key).float(), getattr(reference, key), atol=atol, rtol=0)
        assert (getattr(other, key).float() - getattr(reference, key)).abs().max() > atol, key
    upcast = CACMIForDenseCaptioning.from_pretrained(tmp_path, dtype=torch.float32)
    assert upcast.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(upcast.generate(**inputs).logits, out.logits.float(), atol=0.05, rtol=0)
