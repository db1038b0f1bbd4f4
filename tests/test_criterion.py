"""Set-prediction losses: hand-computed focal/GIoU/L1/counter/caption values, normalisation, keys."""

import math

import pytest
import torch

import cacmi_hf.criterion as criterion_module
from cacmi_hf.configuration_cacmi import CACMIConfig
from cacmi_hf.criterion import (
    CACMICriterion,
    caption_loss,
    counter_soft_mask,
    estimate_count_prior,
    event_counter_loss,
)
from cacmi_hf.segment_ops import segment_se_to_cw

ALPHA = 0.25


def _config(**overrides):
    return CACMIConfig(max_event_count=3, num_decoder_layers=2, **overrides)


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _hand_case():
    """One video, 2 queries, 1 event [.4, .8]. q0 = [.3, .7] (GIoU .6) is matched; q1 = [.1, .3] is not."""
    outputs = {
        "logits": torch.tensor([[2.0, -1.0]], requires_grad=True),
        "pred_segments": torch.tensor([[[0.5, 0.4], [0.2, 0.2]]], requires_grad=True),
        "pred_counts": torch.zeros(1, 4, requires_grad=True),
    }
    targets = {"segments": torch.tensor([[[0.4, 0.8]]]), "mask": torch.tensor([[True]])}
    return outputs, targets


def test_hand_computed_losses_of_one_layer():
    criterion = CACMICriterion(_config(aux_loss=False))
    outputs, targets = _hand_case()
    losses, indices = criterion([outputs, outputs], targets)
    assert len(indices) == 1
    assert indices[0].query.tolist() == [0] and indices[0].target.tolist() == [0]

    p0, p1 = _sigmoid(2.0), _sigmoid(-1.0)
    focal = ALPHA * (1 - p0) ** 2 * -math.log(p0) + (1 - ALPHA) * p1**2 * -math.log(1 - p1)
    assert losses["loss_ce"].item() == pytest.approx(focal, rel=1e-5)
    assert losses["loss_ce"].item() == pytest.approx(0.00045089 + 0.01699354, rel=1e-4)  # q0 positive + q1 negative
    # inter [.4, .7] = .3, union .5 -> GIoU .6
    assert losses["loss_giou"].item() == pytest.approx(0.4, abs=1e-6)
    # cw (.5, .4) vs (.6, .4)
    assert losses["loss_l1"].item() == pytest.approx(0.1, abs=1e-6)
    # zero counter logits: BCE ln2 per bin, uniform prior weight 3/4, count 1, σ = 2
    coef = [1 - math.exp(-1 / 8), 1.0, 1 - math.exp(-1 / 8), 1 - math.exp(-4 / 8)]
    counter = sum(0.75 * math.log(2) * c for c in coef) / 4
    assert losses["loss_counter"].item() == pytest.approx(counter, rel=1e-5)

    criterion.total_loss(losses).backward()
    assert outputs["logits"].grad.abs().sum() > 0
    assert outputs["pred_segments"].grad[0, 0].abs().sum() > 0  # matched query gets a segment gradient
    assert outputs["pred_segments"].grad[0, 1].abs().sum() == 0  # unmatched one does not


def test_perfect_predictions_have_zero_segment_losses():
    criterion = CACMICriterion(_config())
    segments = torch.tensor([[[0.1, 0.3], [0.5, 0.9], [0.0, 0.0]], [[0.2, 0.6], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    pred = segment_se_to_cw(segments)[:, [1, 0, 2]]  # queries hold the events in another order
    layer = {"logits": torch.zeros(2, 3), "pred_segments": pred, "pred_counts": torch.zeros(2, 4)}
    losses, indices = criterion([layer, layer], {"segments": segments, "mask": mask})
    for key in ("loss_giou", "loss_l1", "loss_giou_0", "loss_l1_0"):
        assert losses[key].item() == pytest.approx(0.0, abs=1e-6)
    assert indices[-1].query.tolist() == [1, 0, 1]
    assert indices[-1].target.tolist() == [0, 1, 0]


def test_normalised_by_number_of_events_not_matches():
    # one query, two events: only one pair is matched but the sums are divided by 2 events
    criterion = CACMICriterion(_config(aux_loss=False))
    layer = {"logits": torch.tensor([[0.0]]), "pred_segments": torch.tensor([[[0.5, 0.4]]]), "pred_counts": None}
    targets = {"segments": torch.tensor([[[0.3, 0.7], [0.0, 0.1]]]), "mask": torch.tensor([[True, True]])}
    losses, indices = criterion([layer], targets)
    assert indices[0].target.tolist() == [0]
    assert losses["loss_giou"].item() == pytest.approx(0.0, abs=1e-6)
    focal_one = ALPHA * 0.25 * math.log(2)  # p = .5, target 1
    assert losses["loss_ce"].item() == pytest.approx(focal_one / 2, rel=1e-5)
    assert "loss_counter" not in losses  # no counter head output, no counter loss

    # the same video twice: twice the sums over twice the events -> the same losses
    doubled = {k: torch.cat([v, v]) for k, v in targets.items()}
    layer2 = {"logits": torch.zeros(2, 1), "pred_segments": torch.tensor([[[0.5, 0.4]], [[0.5, 0.4]]])}
    losses2, _ = criterion([layer2], doubled)
    assert losses2["loss_ce"].item() == pytest.approx(losses["loss_ce"].item(), rel=1e-6)


def test_empty_targets_clamp_the_normaliser_to_one():
    criterion = CACMICriterion(_config(aux_loss=False))
    layer = {
        "logits": torch.zeros(1, 2, requires_grad=True),
        "pred_segments": torch.rand(1, 2, 2),
        "pred_counts": torch.zeros(1, 4),
    }
    targets = {"segments": torch.zeros(1, 3, 2), "mask": torch.zeros(1, 3, dtype=torch.bool)}
    losses, indices = criterion([layer], targets)
    assert indices[0].batch.numel() == 0
    negative = (1 - ALPHA) * 0.25 * math.log(2)  # p = .5, target 0
    assert losses["loss_ce"].item() == pytest.approx(2 * negative, rel=1e-5)
    assert losses["loss_giou"].item() == 0 and losses["loss_l1"].item() == 0
    losses["loss_ce"].backward()


def test_event_count_is_averaged_across_processes(monkeypatch):
    # pretend to be one of 2 processes whose other process holds 5 events: (1 + 5) / 2 = 3
    monkeypatch.setattr(criterion_module.dist, "is_available", lambda: True)
    monkeypatch.setattr(criterion_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(criterion_module.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(criterion_module.dist, "all_reduce", lambda tensor: tensor.add_(5))
    assert CACMICriterion.num_events(torch.tensor([[True, False]])).item() == 3.0
    criterion = CACMICriterion(_config(aux_loss=False))
    outputs, targets = _hand_case()
    losses, _ = criterion([outputs], targets)
    assert losses["loss_giou"].item() == pytest.approx(0.4 / 3, abs=1e-6)


def test_counter_soft_mask_and_target_clamping():
    mask = counter_soft_mask(torch.tensor([1, 7]), num_bins=4, sigma=2.0)
    assert mask.shape == (2, 4)
    expected_row0 = [math.exp(-1 / 8), 1.0, math.exp(-1 / 8), math.exp(-4 / 8)]
    assert mask[0].tolist() == pytest.approx(expected_row0, rel=1e-6)
    # count 7 with K = 3 is clamped to the last bin inside the loss
    logits = torch.tensor([[0.0, 0.0, 0.0, 3.0]])
    clamped = event_counter_loss(logits, torch.tensor([7]), torch.full((4,), 0.25), 2.0)
    exact = event_counter_loss(logits, torch.tensor([3]), torch.full((4,), 0.25), 2.0)
    assert clamped.item() == pytest.approx(exact.item())


def test_counter_prior_weights_each_bin():
    logits = torch.zeros(1, 4)
    prior = torch.tensor([0.1, 0.6, 0.2, 0.1])
    loss = event_counter_loss(logits, torch.tensor([1]), prior, 2.0)
    coef = [1 - math.exp(-1 / 8), 1.0, 1 - math.exp(-1 / 8), 1 - math.exp(-4 / 8)]
    weight = [0.9, 0.4, 0.8, 0.9]
    assert loss.item() == pytest.approx(sum(math.log(2) * w * c for w, c in zip(weight, coef)) / 4, rel=1e-5)
    # a nearer wrong count costs less than a farther one
    near = event_counter_loss(torch.tensor([[-5.0, -5.0, 5.0, -5.0]]), torch.tensor([1]), prior, 2.0)
    far = event_counter_loss(torch.tensor([[-5.0, -5.0, -5.0, 5.0]]), torch.tensor([1]), prior, 2.0)
    assert near < far
    with pytest.raises(ValueError, match="count_prior"):
        event_counter_loss(logits, torch.tensor([1]), torch.ones(3), 2.0)


def test_config_count_prior_is_used():
    prior = [0.1, 0.6, 0.2, 0.1]
    criterion = CACMICriterion(_config(aux_loss=False, count_prior=prior))
    outputs, targets = _hand_case()
    losses, _ = criterion([outputs], targets)
    expected = event_counter_loss(torch.zeros(1, 4), torch.tensor([1]), torch.tensor(prior), 2.0)
    assert losses["loss_counter"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_aux_keys_and_weight_dict():
    config = CACMIConfig(max_event_count=3, num_decoder_layers=3)
    criterion = CACMICriterion(config)
    outputs, targets = _hand_case()
    losses, indices = criterion([outputs, outputs, outputs], targets)
    base = ("loss_ce", "loss_giou", "loss_l1", "loss_counter")
    expected = {k + s for k in base for s in ("", "_0", "_1")}
    assert set(losses) == expected
    assert len(indices) == 3
    assert set(criterion.weight_dict) == expected | {"loss_caption", "loss_caption_0", "loss_caption_1"}
    assert criterion.weight_dict["loss_ce_1"] == config.class_loss_coef == 2
    assert criterion.weight_dict["loss_giou"] == 4 and criterion.weight_dict["loss_l1"] == 0
    assert criterion.weight_dict["loss_counter_0"] == 0.5 and criterion.weight_dict["loss_caption"] == 2
    # auxiliary layers see the same losses as the last one here, each weighted
    total = criterion.total_loss(losses)
    per_layer = sum(criterion.weight_dict[k] * losses[k] for k in base)
    assert total.item() == pytest.approx(3 * per_layer.item(), rel=1e-6)

    no_aux = CACMICriterion(CACMIConfig(max_event_count=3, num_decoder_layers=3, aux_loss=False))
    assert set(no_aux.weight_dict) == set(base) | {"loss_caption"}
    losses, indices = no_aux([outputs, outputs, outputs], targets)
    assert set(losses) == set(base) and len(indices) == 1


def test_caption_loss_is_token_mean_then_pair_mean():
    vocab = 6
    log_probs = torch.full((2, 4, vocab), math.log(1 / vocab))
    # pair 0: one word + EOS, every token at log 1/6; pair 1: three words + EOS, word tokens at log .5
    log_probs[1, :, 5] = math.log(0.5)
    ids = torch.tensor([[1, 4, 2, 0, 0], [1, 5, 5, 5, 2]])
    loss = caption_loss(log_probs, ids, pad_id=0)
    pair0 = math.log(vocab)
    pair1 = (3 * math.log(2) + math.log(vocab)) / 4
    assert loss.item() == pytest.approx((pair0 + pair1) / 2, rel=1e-6)
    empty = caption_loss(torch.zeros(0, 4, vocab, requires_grad=True), torch.zeros(0, 5, dtype=torch.long), 0)
    assert empty.item() == 0 and empty.requires_grad
    with pytest.raises(ValueError, match="T-1"):
        caption_loss(log_probs, ids[:, :4], pad_id=0)


def test_estimate_count_prior():
    prior = estimate_count_prior([2, 3, 3, 12], max_event_count=10)
    assert len(prior) == 11 and sum(prior) == pytest.approx(1.0)
    assert prior[2] == 0.25 and prior[3] == 0.5 and prior[10] == 0.25  # 12 events fall in bin K
    assert prior[0] == prior[1] == 0.0
    CACMIConfig(max_event_count=10, count_prior=prior)  # accepted by the config
    with pytest.raises(ValueError, match="no event counts"):
        estimate_count_prior([], 10)
    with pytest.raises(ValueError, match=">= 0"):
        estimate_count_prior([1, -1], 10)
