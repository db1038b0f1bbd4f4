"""Hungarian matcher: hand-worked assignments, optimality, empty targets, batching and permutation invariance."""

import itertools
import math

import pytest
import torch

from cacmi_hf.matcher import HungarianMatcher, MatchIndices, focal_matching_cost
from cacmi_hf.segment_ops import segment_cw_to_se


def _pairs(indices: MatchIndices, video: int = 0) -> dict[int, int]:
    """{target: query} of one video."""
    keep = indices.batch == video
    return dict(zip(indices.target[keep].tolist(), indices.query[keep].tolist()))


def test_focal_matching_cost_hand_value():
    # p = 0.5: pos = α·0.25·ln2, neg = (1−α)·0.25·ln2 -> (α − (1−α))·0.25·ln2 = −0.125·ln2
    cost = focal_matching_cost(torch.tensor([0.0]), alpha=0.25, gamma=2.0)
    assert cost.item() == pytest.approx(-0.125 * math.log(2), rel=1e-6)
    # a confident query is a cheaper positive than an unsure one
    costs = focal_matching_cost(torch.tensor([3.0, 0.0, -3.0]), 0.25, 2.0)
    assert costs[0] < costs[1] < costs[2]


def test_giou_only_swapped_assignment():
    matcher = HungarianMatcher(class_cost=0, giou_cost=1, l1_cost=0)
    logits = torch.zeros(1, 2)
    pred = torch.tensor([[[0.25, 0.5], [0.75, 0.5]]])  # q0 = [0, .5], q1 = [.5, 1]
    target = torch.tensor([[[0.5, 1.0], [0.0, 0.5]]])  # t0 = [.5, 1], t1 = [0, .5]
    out = matcher(logits, pred, target, torch.ones(1, 2, dtype=torch.bool))
    assert out.batch.tolist() == [0, 0]
    assert out.target.tolist() == [0, 1]  # sorted by target
    assert out.query.tolist() == [1, 0]
    assert out.batch.dtype == out.query.dtype == out.target.dtype == torch.long


def test_three_queries_two_targets_where_greedy_fails():
    # GIoU (rows q0..q2 = [0,.1], [0,1], [.45,.55]; cols t0 = [0,.4], t1 = [.4,1]):
    #   q0: .25, -.3   q1: .4, .6   q2: -.05/.55, 1/6
    # t0's best query is q1, but the optimum gives q1 to t1 (.25 + .6 = .85 > .4 + 1/6).
    matcher = HungarianMatcher(class_cost=0, giou_cost=1, l1_cost=0)
    pred = torch.tensor([[[0.05, 0.1], [0.5, 1.0], [0.5, 0.1]]])
    target = torch.tensor([[[0.0, 0.4], [0.4, 1.0]]])
    giou = -matcher.cost_matrix(torch.zeros(1, 3), pred, target)[0]
    torch.testing.assert_close(giou, torch.tensor([[0.25, -0.3], [0.4, 0.6], [-0.05 / 0.55, 1 / 6]]))
    out = matcher(torch.zeros(1, 3), pred, target, torch.ones(1, 2, dtype=torch.bool))
    assert _pairs(out) == {0: 0, 1: 1}


def test_class_cost_breaks_a_geometric_tie():
    matcher = HungarianMatcher(class_cost=2, giou_cost=4, l1_cost=0)
    pred = torch.tensor([[[0.5, 0.4], [0.5, 0.4]]])  # both queries exactly on the target
    target = torch.tensor([[[0.3, 0.7]]])
    out = matcher(torch.tensor([[-2.0, 2.0]]), pred, target, torch.ones(1, 1, dtype=torch.bool))
    assert _pairs(out) == {0: 1}


def test_l1_cost_uses_center_length():
    matcher = HungarianMatcher(class_cost=0, giou_cost=0, l1_cost=1)
    pred = torch.tensor([[[0.5, 0.2], [0.5, 0.6]]])
    target = torch.tensor([[[0.2, 0.8]]])  # cw (0.5, 0.6): L1 0.4 vs 0.0
    cost = matcher.cost_matrix(torch.zeros(1, 2), pred, target)
    torch.testing.assert_close(cost, torch.tensor([[[0.4], [0.0]]]))
    assert _pairs(matcher(torch.zeros(1, 2), pred, target, torch.ones(1, 1, dtype=torch.bool))) == {0: 1}


def test_assignment_is_optimal_against_brute_force():
    torch.manual_seed(0)
    matcher = HungarianMatcher(class_cost=2, giou_cost=4, l1_cost=1)
    for num_queries, num_targets in [(4, 3), (5, 5), (3, 5)]:
        logits = torch.randn(1, num_queries)
        pred = torch.rand(1, num_queries, 2)
        target = segment_cw_to_se(torch.rand(1, num_targets, 2) * 0.5 + 0.25)
        out = matcher(logits, pred, target, torch.ones(1, num_targets, dtype=torch.bool))
        cost = matcher.cost_matrix(logits, pred, target)[0]
        got = cost[out.query, out.target].sum().item()
        assert len(out.query) == min(num_queries, num_targets)
        assert len(set(out.query.tolist())) == len(out.query)  # one-to-one
        if num_queries >= num_targets:
            best = min(
                sum(cost[q, t].item() for t, q in enumerate(perm))
                for perm in itertools.permutations(range(num_queries), num_targets)
            )
        else:
            best = min(
                sum(cost[q, t].item() for q, t in enumerate(perm))
                for perm in itertools.permutations(range(num_targets), num_queries)
            )
        assert got == pytest.approx(best, abs=1e-5)


def test_empty_targets_give_empty_matches():
    matcher = HungarianMatcher()
    out = matcher(torch.randn(2, 3), torch.rand(2, 3, 2), torch.zeros(2, 4, 2), torch.zeros(2, 4, dtype=torch.bool))
    assert out.batch.shape == out.query.shape == out.target.shape == (0,)
    assert out.batch.dtype == torch.long
    out = matcher(torch.randn(2, 3), torch.rand(2, 3, 2), torch.zeros(2, 0, 2), torch.zeros(2, 0, dtype=torch.bool))
    assert out.batch.numel() == 0


def test_batched_equals_single_with_padding_and_empty_video():
    torch.manual_seed(3)
    matcher = HungarianMatcher(class_cost=2, giou_cost=4, l1_cost=0.5)
    num_queries, max_events = 5, 4
    logits = torch.randn(3, num_queries)
    pred = torch.rand(3, num_queries, 2)
    target = segment_cw_to_se(torch.rand(3, max_events, 2) * 0.5 + 0.25)
    mask = torch.tensor([[True, True, True, False], [False, False, False, False], [True, False, True, True]])
    out = matcher(logits, pred, target, mask)
    assert out.batch.tolist() == sorted(out.batch.tolist())
    assert (~mask[out.batch, out.target]).sum() == 0  # only real events are matched
    for b in range(3):
        keep = out.batch == b
        targets = out.target[keep]
        assert targets.tolist() == sorted(targets.tolist())  # sorted by target within a video
        valid = mask[b].nonzero()[:, 0]
        alone = torch.ones(1, len(valid), dtype=torch.bool)
        single = matcher(logits[b : b + 1], pred[b : b + 1], target[b : b + 1, valid], alone)
        assert {valid[t].item(): q for t, q in _pairs(single).items()} == _pairs(out, b)


def test_invariant_to_target_order():
    torch.manual_seed(4)
    matcher = HungarianMatcher()
    logits = torch.randn(2, 6)
    pred = torch.rand(2, 6, 2)
    target = segment_cw_to_se(torch.rand(2, 4, 2) * 0.5 + 0.25)
    mask = torch.ones(2, 4, dtype=torch.bool)
    perm = torch.tensor([2, 0, 3, 1])
    out = matcher(logits, pred, target, mask)
    out_perm = matcher(logits, pred, target[:, perm], mask)
    for b in range(2):
        original = {perm[t].item(): q for t, q in _pairs(out_perm, b).items()}
        assert original == _pairs(out, b)


def test_bad_input_errors():
    matcher = HungarianMatcher()
    with pytest.raises(ValueError, match="pred_segments"):
        matcher(torch.zeros(2, 3), torch.zeros(2, 4, 2), torch.zeros(2, 1, 2), torch.ones(2, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="not finite"):
        pred = torch.full((1, 2, 2), float("nan"))
        matcher(torch.zeros(1, 2), pred, torch.tensor([[[0.1, 0.2]]]), torch.ones(1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="non-zero cost"):
        HungarianMatcher(0, 0, 0)
