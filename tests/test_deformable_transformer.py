"""Base encoder, positions, deformable encoder and decoder: exact values and padding invariance."""

import math

import pytest
import torch

from cacmi_hf.configuration_cacmi import CACMIConfig
from cacmi_hf.deformable_transformer import (
    DeformableDecoder,
    DeformableEncoder,
    MaskedGroupNorm,
    MultiHeadAttention,
    MultiScaleBaseEncoder,
    PositionEmbedding,
    SegmentHead,
    inverse_sigmoid,
    length_mask,
    pyramid_lengths,
)


def config(**overrides):
    base = dict(
        feature_dim=6, num_frames=10, hidden_size=8, num_attention_heads=2, ffn_dim=8, num_encoder_layers=1,
        num_decoder_layers=3, num_feature_levels=3, num_sampling_points=2, num_queries=4, max_duration_bins=16,
        dropout=0.0, num_clusters=2, retrieval_top_k=1,
    )
    base.update(overrides)
    return CACMIConfig(**base)


def special_init(module):
    """Run every init_special_weights (children first), as post_init does."""
    for sub in reversed(list(module.modules())):
        if hasattr(sub, "init_special_weights"):
            sub.init_special_weights()
    return module


def test_pyramid_lengths_follow_stride_two_convolutions():
    assert pyramid_lengths(10, 4) == [10, 5, 3, 2]
    assert pyramid_lengths(1, 3) == [1, 1, 1]
    lengths = pyramid_lengths(torch.tensor([7, 1]), 3)
    assert [t.tolist() for t in lengths] == [[7, 1], [4, 1], [2, 1]]
    conv = torch.nn.Conv1d(1, 1, 3, stride=2, padding=1)
    for n in range(1, 12):
        assert conv(torch.zeros(1, 1, n)).shape[-1] == pyramid_lengths(n, 2)[1]


def test_masked_group_norm_equals_group_norm_of_the_valid_part():
    torch.manual_seed(0)
    norm = MaskedGroupNorm(2, 4)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(1, 4, 9)
    mask = length_mask(torch.tensor([6]), 9)
    expected = torch.nn.functional.group_norm(x[..., :6], 2, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(norm(x, mask)[..., :6], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(norm(x, torch.ones(1, 9, dtype=torch.bool)), torch.nn.GroupNorm(2, 4)(x) * norm.weight[:, None] + norm.bias[:, None], atol=1e-5, rtol=1e-5)


def test_base_encoder_padded_equals_alone():
    torch.manual_seed(0)
    encoder = special_init(MultiScaleBaseEncoder(config()))
    alone = torch.randn(1, 7, 6)
    padded = torch.cat([alone, torch.zeros(1, 3, 6)], 1)
    levels_a, lengths_a = encoder(alone, torch.tensor([7]))
    levels_p, lengths_p = encoder(padded, torch.tensor([7]))
    assert [lv.shape[1] for lv in levels_a] == [7, 4, 2] and [lv.shape[1] for lv in levels_p] == [10, 5, 3]
    for a, p, n in zip(levels_a, levels_p, lengths_p):
        assert int(n) == a.shape[1]
        torch.testing.assert_close(p[:, : a.shape[1]], a, atol=1e-5, rtol=1e-5)
        assert p[:, a.shape[1] :].abs().sum() == 0  # padding zeroed


def test_position_embedding_hand_values():
    emb = PositionEmbedding(config(hidden_size=8, max_duration_bins=5))
    torch.nn.init.eye_(emb.duration_proj.weight[:, :4])  # channel j reads bin j
    torch.nn.init.zeros_(emb.duration_proj.bias)
    mask = length_mask(torch.tensor([4]), 6)
    duration = emb.duration_embedding(torch.tensor([2.7]))
    torch.testing.assert_close(duration, torch.tensor([[1.0, 1.0, 0.0, 0.0]]))  # floor(2.7) = 2 bins on
    pos = emb(mask, duration)  # (1, 6, 8)
    angle = (torch.arange(4) + 0.5) / 4 * 2 * math.pi  # valid index (i + 0.5)/n · 2π
    torch.testing.assert_close(pos[0, :4, 0], angle.sin())
    torch.testing.assert_close(pos[0, :4, 1], angle.cos())
    torch.testing.assert_close(pos[0, :4, 2], (angle / 100).sin())  # 10000^(2·1/4) = 100
    torch.testing.assert_close(pos[0, :, 4:], duration.expand(6, 4))
    # the duration thermometer is capped at max_duration_bins
    torch.testing.assert_close(emb.duration_embedding(torch.tensor([999.0])), emb.duration_embedding(torch.tensor([5.0])))


def test_encoder_reference_points_are_valid_centres_in_every_level():
    ref = DeformableEncoder.reference_points([4, 2], torch.tensor([[2, 1]]))[0, :, :, 0]  # (S, Lv)
    # level 0 valid length 2 of 4: centres 0.25, 0.75 of the valid part -> ×0.5 in level 0, ×0.5 in level 1
    torch.testing.assert_close(ref[0], torch.tensor([0.125, 0.125]))
    torch.testing.assert_close(ref[1], torch.tensor([0.375, 0.375]))
    torch.testing.assert_close(ref[4], torch.tensor([0.25, 0.25]))  # level 1 position 0 of 1 valid


def test_multi_head_attention_ignores_masked_keys_and_zeroes_empty_rows():
    torch.manual_seed(0)
    attn = special_init(MultiHeadAttention(8, 2)).eval()
    q, k = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[True, True, False, False, False], [False] * 5])
    out = attn(q, k, k, mask)
    changed = k.clone()
    changed[0, 2:] = 100.0
    torch.testing.assert_close(attn(q, changed, changed, mask)[0], out[0])
    torch.testing.assert_close(attn(q[:1], k[:1, :2], k[:1, :2]), out[:1], atol=1e-6, rtol=1e-5)
    assert out[1].abs().sum() == 0


def test_segment_head_starts_at_zero_update_with_length_bias():
    head = special_init(SegmentHead(8, length_bias=-2.0))
    out = head(torch.randn(3, 5, 8))
    torch.testing.assert_close(out, torch.tensor([0.0, -2.0]).expand(3, 5, 2))
    torch.testing.assert_close(inverse_sigmoid(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-11.5129, 0.0, 11.5129]), atol=1e-4, rtol=0)


def decoder_inputs(cfg, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = pyramid_lengths(10, cfg.num_feature_levels)
    level_lengths = torch.tensor(lengths)
    level_start = torch.nn.functional.pad(level_lengths.cumsum(0)[:-1], (1, 0))
    memory = torch.randn(batch, sum(lengths), cfg.hidden_size, generator=g)
    mask = torch.ones(batch, sum(lengths), dtype=torch.bool)
    ratios = torch.ones(batch, cfg.num_feature_levels)
    return memory, mask, level_lengths, level_start, ratios


@pytest.mark.parametrize("refine", [True, False])
def test_decoder_refinement_and_initial_lengths(refine):
    cfg = config(with_segment_refine=refine, decoder_text_cross_attention=False)
    torch.manual_seed(0)
    decoder = special_init(DeformableDecoder(cfg)).eval()
    out = decoder(*decoder_inputs(cfg))
    layers, batch, queries = cfg.num_decoder_layers, 2, cfg.num_queries
    assert out.hidden_states.shape == (layers, batch, queries, cfg.hidden_size)
    assert out.pred_segments.shape == (layers, batch, queries, 2)
    # fresh heads predict the reference itself: centre = initial centre, length sigmoid(−2) for every layer
    torch.testing.assert_close(out.pred_segments[..., 0], out.init_reference[None, ..., 0].expand(layers, -1, -1))
    torch.testing.assert_close(out.pred_segments[..., 1], torch.full((layers, batch, queries), 1 / (1 + math.e**2)))
    # the initial centres differ across queries (standard-normal queries)
    assert out.init_reference[0, :, 0].std() > 0.05


def test_references_are_detached_between_layers():
    cfg = config(decoder_text_cross_attention=False)
    torch.manual_seed(0)
    decoder = special_init(DeformableDecoder(cfg))
    for p in decoder.segment_heads.parameters():
        torch.nn.init.normal_(p, std=0.3)
    out = decoder(*decoder_inputs(cfg))
    out.pred_segments[-1].sum().backward()
    # the last layer's segments reach earlier segment heads only through (detached) references
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in decoder.segment_heads[:-1].parameters())
    assert all(p.grad.abs().sum() > 0 for p in decoder.segment_heads[-1].parameters())
    assert decoder.layers[0].ffn.linear1.weight.grad is not None  # the content path is not detached


def test_decoder_text_cross_attention_respects_text_mask():
    cfg = config(decoder_text_cross_attention=True)
    torch.manual_seed(0)
    decoder = special_init(DeformableDecoder(cfg)).eval()
    inputs = decoder_inputs(cfg)
    text = torch.randn(2, 3, cfg.text_dim)
    text_mask = torch.tensor([[True, True, False], [True, False, False]])
    out = decoder(*inputs, text, text_mask)
    changed = text.clone()
    changed[0, 2] = 50.0
    changed[1, 1:] = -50.0
    torch.testing.assert_close(decoder(*inputs, changed, text_mask).hidden_states, out.hidden_states)
    # and the text matters where it is valid
    changed[0, 0] = 50.0
    assert not torch.allclose(decoder(*inputs, changed, text_mask).hidden_states[:, 0], out.hidden_states[:, 0])
