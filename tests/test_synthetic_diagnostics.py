"""Diagnostics of the retrieval study: CFE's text share, pseudo-event boundary F1, gradient norms."""

import pytest
import torch

from cacmi_hf.configuration_cacmi import CACMIConfig
from cacmi_hf.feature_enhancement import ContextAwareFeatureEnhancement
from cacmi_hf.modeling_cacmi import CACMIForDenseCaptioning
from cacmi_hf.synthetic.diagnostics import boundary_f1, cfe_text_share, gradient_norms


def _config(**overrides):
    base = dict(feature_dim=8, num_frames=12, hidden_size=32, num_attention_heads=4, ffn_dim=32, num_encoder_layers=1,
                num_decoder_layers=2, num_feature_levels=2, num_queries=4, max_event_count=4, vocab_size=20,
                max_caption_len=6, caption_hidden_size=24, num_clusters=3, retrieval_top_k=2, memory_size=10)
    base.update(overrides)
    return CACMIConfig(**base)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 12, 8, generator=g), torch.ones(2, 12, dtype=torch.bool), torch.randn(2, 3, 8, generator=g), \
        torch.ones(2, 3, dtype=torch.bool)


def test_fresh_cfe_changes_nothing():
    cfe = ContextAwareFeatureEnhancement(_config())
    cfe.init_special_weights()
    share = cfe_text_share(cfe, *_inputs())
    assert share == {"update": 0.0, "text_update": 0.0, "text_share": 0.0}


def test_cfe_reading_only_the_text_has_share_one_and_the_hand_ratio():
    cfe = ContextAwareFeatureEnhancement(_config())
    with torch.no_grad():
        cfe.fuse.weight.zero_()
        cfe.fuse.bias.zero_()
        cfe.fuse.weight[:, 8:16] = torch.eye(8)  # X = A, the attended text
        cfe.conv.weight.zero_()
        cfe.conv.bias.zero_()
        cfe.conv.weight[:, :8, 1] = torch.eye(8)  # delta = X at the same frame (no neighbours, no g)
    video, mask, text, text_mask = _inputs()
    share = cfe_text_share(cfe, video, mask, text, text_mask)
    assert share["text_share"] == pytest.approx(1.0)
    with torch.no_grad():
        sim = cfe.video_key(video) @ cfe.text_key(text).transpose(1, 2) * cfe.scale
        attended = sim.softmax(-1) @ text  # (B, L, D)
    expected = (attended.norm(dim=-1) / video.norm(dim=-1)).mean()
    assert share["update"] == pytest.approx(float(expected), rel=1e-5)


def test_boundary_f1_hand_worked():
    spans = torch.tensor([[[0, 3], [4, 7], [8, 11]]])  # cuts at frames 4 and 8
    reference = {"duration": 24.0, "timestamps": [[0, 8], [18, 24]]}  # on 12 frames: boundaries 4 and 9 (0, 12 ignored)
    assert boundary_f1(spans, [12], [reference], tolerance=1) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert boundary_f1(spans, [12], [reference], tolerance=0) == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    # one cut may serve one boundary only; masked spans add nothing
    spans = torch.tensor([[[0, 4], [5, 11], [-1, -1]]])
    reference = {"duration": 12.0, "timestamps": [[0, 4], [6, 12]]}
    scores = boundary_f1(spans, [12], [reference], tolerance=1)
    assert scores["precision"] == 1.0 and scores["recall"] == 0.5


def test_gradient_norms_name_each_part():
    torch.manual_seed(0)
    model = CACMIForDenseCaptioning(_config())
    model.set_memory_bank(torch.randn(10, 8), torch.arange(10) % 5)
    out = model(video_features=torch.randn(2, 12, 8), durations=torch.tensor([10.0, 20.0]), video_ids=torch.tensor([0, 1]),
                event_segments=torch.tensor([[[0.1, 0.4]], [[0.5, 0.9]]]), caption_ids=torch.tensor([[[1, 5, 2]], [[1, 6, 2]]]))
    out.loss.backward()
    norms = gradient_norms(model)
    total = torch.stack([p.grad.pow(2).sum() for p in model.parameters() if p.grad is not None]).sum().sqrt()
    assert norms["total"] == pytest.approx(float(total), rel=1e-5)
    conv = model.cacmi.feature_enhancement.conv
    assert norms["cfe"] >= float(conv.weight.grad.norm()) > 0  # the zero-initialised conv learns from step one
    assert 0 < norms["text_attention"] < norms["total"]
    pdvc = CACMIForDenseCaptioning(_config(use_cfa=False, use_cfe=False, decoder_text_cross_attention=False))
    assert gradient_norms(pdvc) == {"cfe": 0.0, "text_attention": 0.0, "total": 0.0}
