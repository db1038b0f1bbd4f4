"""Segment conversions and 1-D (generalised) IoU on hand-worked cases."""

import pytest
import torch

from cacmi_hf.segment_ops import (
    elementwise_generalized_segment_iou,
    generalized_segment_iou,
    segment_cw_to_se,
    segment_iou,
    segment_se_to_cw,
)


def _pair(a, b):
    """IoU and GIoU of two single se segments as Python floats."""
    a, b = torch.tensor([a]), torch.tensor([b])
    return segment_iou(a, b).item(), generalized_segment_iou(a, b).item()


def test_cw_se_conversion_values_and_round_trip():
    cw = torch.tensor([[0.5, 0.2], [0.1, 0.4]])
    se = segment_cw_to_se(cw)
    torch.testing.assert_close(se, torch.tensor([[0.4, 0.6], [-0.1, 0.3]]))
    torch.testing.assert_close(segment_se_to_cw(se), cw)
    batched = torch.rand(3, 5, 2)
    torch.testing.assert_close(segment_cw_to_se(segment_se_to_cw(batched)), batched)


@pytest.mark.parametrize(
    "a, b, iou, giou",
    [
        ([0.2, 0.6], [0.2, 0.6], 1.0, 1.0),  # identical
        ([0.0, 1.0], [0.25, 0.5], 0.25, 0.25),  # nested: enclosing == union
        ([0.0, 0.3], [0.3, 0.5], 0.0, 0.0),  # touching: no gap to penalise
        ([0.0, 0.2], [0.6, 1.0], 0.0, -0.4),  # disjoint: gap 0.4 over enclosing 1.0
        ([0.1, 0.4], [0.3, 0.6], 0.2, 0.2),  # partial overlap 0.1 / union 0.5
        ([0.1, 0.2], [0.5, 0.6], 0.0, -0.6),  # gap 0.3, union 0.2, enclosing 0.5
    ],
)
def test_hand_worked_iou_and_giou(a, b, iou, giou):
    got_iou, got_giou = _pair(a, b)
    assert got_iou == pytest.approx(iou, abs=1e-6)
    assert got_giou == pytest.approx(giou, abs=1e-6)
    # symmetric
    assert _pair(b, a) == pytest.approx((got_iou, got_giou), abs=1e-7)


def test_pairwise_shape_and_entries():
    a = torch.tensor([[0.0, 0.5], [0.5, 1.0], [0.2, 0.4]])
    b = torch.tensor([[0.0, 0.5], [0.25, 0.75]])
    giou = generalized_segment_iou(a, b)
    assert giou.shape == (3, 2)
    expected = torch.tensor(
        [
            [1.0, 0.25 / 0.75],
            [0.0, 0.25 / 0.75],
            [0.2 / 0.5, 0.15 / 0.55],
        ]
    )
    torch.testing.assert_close(giou, expected)
    torch.testing.assert_close(segment_iou(b, a), segment_iou(a, b).T)


def test_batched_equals_per_video_and_elementwise_equals_diagonal():
    torch.manual_seed(0)
    a = segment_cw_to_se(torch.rand(4, 6, 2))
    b = segment_cw_to_se(torch.rand(4, 3, 2))
    batched = generalized_segment_iou(a, b)
    assert batched.shape == (4, 6, 3)
    for i in range(4):
        torch.testing.assert_close(batched[i], generalized_segment_iou(a[i], b[i]))
    c = segment_cw_to_se(torch.rand(5, 2))
    d = segment_cw_to_se(torch.rand(5, 2))
    torch.testing.assert_close(elementwise_generalized_segment_iou(c, d), generalized_segment_iou(c, d).diagonal())


def test_giou_bounds_and_degenerate_segments_stay_finite():
    torch.manual_seed(1)
    a = segment_cw_to_se(torch.rand(50, 2))
    b = segment_cw_to_se(torch.rand(40, 2))
    giou = generalized_segment_iou(a, b)
    assert (giou <= segment_iou(a, b) + 1e-6).all()
    assert giou.min() >= -1 and giou.max() <= 1
    point = torch.tensor([[0.3, 0.3]])
    assert torch.isfinite(generalized_segment_iou(point, point)).all()
    assert generalized_segment_iou(point, torch.tensor([[0.5, 0.7]])).item() == pytest.approx(-0.2 / 0.4)
