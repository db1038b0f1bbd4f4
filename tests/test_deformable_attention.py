"""1-D multi-scale deformable attention: exact interpolation, zero padding, gradients, padding invariance."""

import pytest
import torch

from cacmi_hf.deformable_attention import (
    MultiScaleDeformableAttention1D,
    deformable_sample_1d,
    deformable_sampling_locations,
    level_valid_ratios,
    offset_bias_grid,
    weighted_row_sum,
)

# two levels: [1, 2, 3, 4] and [10, 20]
LENGTHS = torch.tensor([4, 2])
STARTS = torch.tensor([0, 4])
VALUES = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 20.0]).view(1, 6, 1, 1)


def sample(locations_level0, locations_level1, weights=None):
    """Sample the toy pyramid at P locations per level (one head, one query)."""
    loc = torch.tensor([locations_level0, locations_level1]).view(1, 1, 1, 2, -1)
    w = None if weights is None else torch.tensor(weights).view(1, 1, 1, 2, -1)
    return deformable_sample_1d(VALUES, LENGTHS, STARTS, loc, w)


def test_hand_worked_interpolation_and_zero_padding():
    # level 0 (T=4): x -> position 4x - 0.5 ; level 1 (T=2): position 2x - 0.5
    samples = sample([0.5, 0.125, 0.0, 1.0, 1.2, -0.2], [0.25, 0.6, 0.0, 1.0, 0.9, -1.0])[0, 0, 0, :, :, 0]
    expected = torch.tensor(
        [
            [2.5, 1.0, 0.5, 2.0, 0.0, 0.0],  # mid 2|3, frame 0 exactly, half frame off each edge, beyond
            [10.0, 17.0, 5.0, 10.0, 14.0, 0.0],  # 0.3·10 + 0.7·20 = 17 ; 0.5·20 = 10 ; 0.7·20 = 14 (pos 1.3)
        ]
    )
    torch.testing.assert_close(samples, expected, atol=1e-6, rtol=0)


def test_weighted_sum_is_the_weighted_samples():
    out = sample([0.5, 0.0], [0.6, 0.25], weights=[0.1, 0.2, 0.3, 0.4])
    assert out.shape == (1, 1, 1)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor(0.1 * 2.5 + 0.2 * 0.5 + 0.3 * 17.0 + 0.4 * 10.0))


def test_videos_and_heads_never_mix():
    """Each (video, head) samples its own block of values, even at locations past the end."""
    value = torch.zeros(2, 6, 2, 1)
    value[1, :, 1, 0] = 7.0  # only video 1, head 1 has non-zero values
    loc = torch.full((2, 1, 2, 2, 1), 0.5)
    loc[..., 0] = torch.tensor([0.5, 1.5])  # level 1 location past the end
    out = deformable_sample_1d(value, LENGTHS, STARTS, loc)[..., 0]  # (B, Q, H, Lv, P)
    assert out[0].abs().sum() == 0 and out[1, :, 0].abs().sum() == 0
    torch.testing.assert_close(out[1, 0, 1, :, 0], torch.tensor([7.0, 0.0]))


def test_sampling_locations_center_and_segment_references():
    offsets = torch.tensor([1.0, -2.0]).view(1, 1, 1, 1, 2).expand(1, 1, 1, 2, 2)  # (B, Q, H, Lv, P)
    centers = torch.tensor([0.5, 0.25]).view(1, 1, 2, 1)
    loc = deformable_sampling_locations(centers, offsets, torch.tensor([4, 2]))
    # centre + offset / T_l: offsets count frames of each level
    torch.testing.assert_close(loc[0, 0, 0], torch.tensor([[0.75, 0.0], [0.75, -0.75]]))
    segments = torch.tensor([[0.5, 0.4], [0.25, 0.2]]).view(1, 1, 2, 2)
    loc = deformable_sampling_locations(segments, offsets, torch.tensor([4, 2]))
    # centre + offset / P · length · 0.5
    torch.testing.assert_close(loc[0, 0, 0], torch.tensor([[0.6, 0.3], [0.3, 0.15]]))


def test_sampler_gradients_match_finite_differences():
    torch.manual_seed(0)
    value = torch.randn(2, 6, 2, 3, dtype=torch.double, requires_grad=True)
    # keep locations away from frame centres, where linear interpolation has kinks
    loc = (torch.rand(2, 3, 2, 2, 2, dtype=torch.double) * 1.2 - 0.1)
    loc = (loc + 0.013).requires_grad_(True)
    weights = torch.rand(2, 3, 2, 2, 2, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, x, w: deformable_sample_1d(v, LENGTHS, STARTS, x, w), (value, loc, weights)
    )
    assert torch.autograd.gradcheck(lambda v, x: deformable_sample_1d(v, LENGTHS, STARTS, x), (value, loc))


def test_weighted_row_sum_backward_matches_plain_autograd():
    torch.manual_seed(1)
    table = torch.randn(50, 8, requires_grad=True)
    rows = torch.randint(0, 50, (30, 6))
    rows[0] = 3  # repeated rows inside one bag
    weights = torch.rand(30, 6, requires_grad=True)
    grad = torch.randn(30, 8)
    fused = torch.autograd.grad(weighted_row_sum(table, rows, weights), (table, weights), grad)
    plain = torch.autograd.grad((table[rows] * weights[..., None]).sum(1), (table, weights), grad)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_level_valid_ratios():
    mask = torch.tensor([[True] * 4 + [True, True], [True, True, False, False, True, False]])
    torch.testing.assert_close(level_valid_ratios(mask, LENGTHS, STARTS), torch.tensor([[1.0, 1.0], [0.5, 0.5]]))


def test_offset_bias_grid_matches_pdvc_directions():
    grid = offset_bias_grid(8, 2, 3)
    assert grid.shape == (8, 2, 3)
    # head 0 looks right (cos 0 = 1), head 4 left, heads 2 and 6 straight up/down in 2-D: no temporal step
    torch.testing.assert_close(grid[0, 0], torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(grid[4, 1], torch.tensor([-1.0, -2.0, -3.0]))
    torch.testing.assert_close(grid[2, 0], torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(grid[1, 0], torch.tensor([1.0, 2.0, 3.0]))  # 45°: cos/max(|cos|,|sin|) = 1
    centred = offset_bias_grid(1, 2, 4, centered=True)
    torch.testing.assert_close(centred[0, 0], torch.tensor([-1.5, -0.5, 0.5, 1.5]))


def make_attention(seed=0):
    torch.manual_seed(seed)
    attn = MultiScaleDeformableAttention1D(hidden_size=8, num_heads=2, num_levels=2, num_points=3)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return attn.eval()


@pytest.mark.parametrize("reference_dim", [1, 2])
def test_padded_batch_equals_each_video_alone(reference_dim):
    """A video padded inside a batch (levels 6 and 3) gives the output it gives alone (levels 4 and 2)."""
    attn = make_attention()
    torch.manual_seed(3)
    alone_value = torch.randn(1, 6, 8)  # levels 4 + 2, all valid
    query = torch.randn(1, 5, 8)
    reference = torch.rand(1, 5, 1, reference_dim).expand(1, 5, 2, reference_dim)
    alone = attn(query, reference, alone_value, None, LENGTHS, STARTS)

    padded_lengths, padded_starts = torch.tensor([6, 3]), torch.tensor([0, 6])
    value = torch.randn(2, 9, 8) * 100  # garbage in padding must not leak
    value[0, 0:4] = alone_value[0, 0:4]
    value[0, 6:8] = alone_value[0, 4:6]
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, 0:4] = mask[0, 6:8] = True
    mask[1] = True
    ratios = level_valid_ratios(mask, padded_lengths, padded_starts)  # (B, Lv)
    torch.testing.assert_close(ratios[0], torch.tensor([4 / 6, 2 / 3]))
    batch_reference = torch.cat([reference, torch.rand(1, 5, 2, reference_dim)]) * ratios[:, None, :, None]
    batched = attn(torch.cat([query, torch.randn(1, 5, 8)]), batch_reference, value, mask, padded_lengths, padded_starts)
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)


def test_initial_module_samples_pdvc_grid_with_uniform_weights():
    """With init_special_weights, head h samples reference + (p+1)·direction_h frames, all weighted equally."""
    attn = MultiScaleDeformableAttention1D(hidden_size=4, num_heads=2, num_levels=1, num_points=2)
    for module in attn.modules():
        if hasattr(module, "init_special_weights"):
            module.init_special_weights()
    torch.nn.init.eye_(attn.value_proj.weight)
    torch.nn.init.eye_(attn.output_proj.weight)
    value = torch.arange(10, dtype=torch.float32)[None, :, None].expand(1, 10, 4).contiguous()  # position i -> i
    reference = torch.full((1, 1, 1, 1), 0.45)  # position 0.45·10 − 0.5 = 4
    out = attn(torch.randn(1, 1, 4), reference, value, None, torch.tensor([10]), torch.tensor([0]))
    # head 0 (direction +1): positions 5, 6 -> mean 5.5 ; head 1 (direction −1): positions 3, 2 -> 2.5
    torch.testing.assert_close(out[0, 0], torch.tensor([5.5, 5.5, 2.5, 2.5]), atol=1e-5, rtol=0)
    assert attn.sampling_offsets.weight.abs().sum() == 0 and attn.attention_weights.weight.abs().sum() == 0
