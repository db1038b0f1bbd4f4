"""The epoch-wise halving schedule of the CM2/PDVC recipe, stepped per optimizer step."""

import pytest
import torch

from cacmi_hf.training.scheduler import (
    StepHalvingLambda,
    get_step_halving_schedule,
    halving_factor,
    halving_milestones,
)


def test_milestones_match_the_recipe_for_30_epochs():
    # int((30 - 8) / 3) = 7 halvings at the start of epochs 8, 11, ..., 26.
    assert halving_milestones(30) == [8, 11, 14, 17, 20, 23, 26]
    assert halving_milestones(8) == []
    assert halving_milestones(11) == [8]
    assert halving_milestones(30, decay_start=-1) == []


def test_factor_per_epoch_hand_worked():
    expected = [1.0] * 8 + [0.5] * 3 + [0.25] * 3 + [0.125] * 3 + [2**-4] * 3 + [2**-5] * 3 + [2**-6] * 3 + [2**-7] * 4
    assert [halving_factor(e, 30) for e in range(30)] == expected
    # Without an epoch budget the halving goes on every 3 epochs.
    assert halving_factor(29, None) == 2**-8
    assert halving_factor(7, None) == 1.0
    assert halving_factor(100, 30, decay_start=-1) == 1.0


def test_scheduler_lr_per_optimizer_step():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=5e-5)
    steps_per_epoch = 4
    scheduler = get_step_halving_schedule(optimizer, steps_per_epoch, num_epochs=12, decay_start=2, decay_every=3)
    seen = []
    for _ in range(12 * steps_per_epoch):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # Milestones: int((12 - 2) / 3) = 3 at epochs 2, 5, 8.
    per_epoch = [5e-5] * 2 + [2.5e-5] * 3 + [1.25e-5] * 3 + [6.25e-6] * 4
    assert seen == pytest.approx([lr for lr in per_epoch for _ in range(steps_per_epoch)], rel=0, abs=1e-15)


def test_state_dict_round_trip_resumes_the_schedule():
    def make():
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.Adam([param], lr=1.0)
        return optimizer, get_step_halving_schedule(optimizer, 2, num_epochs=10, decay_start=1, decay_every=1)

    optimizer, scheduler = make()
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    assert state["lr_lambdas"][0]["steps_per_epoch"] == 2  # the schedule object itself is saved
    optimizer2, scheduler2 = make()
    scheduler2.load_state_dict(state)
    optimizer2.step()
    scheduler2.step()
    optimizer.step()
    scheduler.step()
    assert optimizer2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == 0.125  # epoch 3 (step 6)


def test_bad_values_raise():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        StepHalvingLambda(0, 30)
    with pytest.raises(ValueError, match="decay_rate"):
        StepHalvingLambda(1, 30, decay_rate=0.0)
    with pytest.raises(ValueError, match="decay_every"):
        StepHalvingLambda(1, 30, decay_every=0)
