"""The CM2/PDVC learning-rate recipe: constant, then halved every few epochs from a given epoch."""

from __future__ import annotations

import torch


def halving_milestones(num_epochs: int | None, decay_start: int = 8, decay_every: int = 3) -> list[int] | None:
    """Epochs (0-based) at whose start the rate is multiplied by the decay rate; None means unbounded.

    As in PDVC's recipe, there are ``int((num_epochs - decay_start) / decay_every)`` milestones
    ``decay_start, decay_start + decay_every, ...``: 30 epochs give 8, 11, ..., 26 (seven halvings).
    """
    if decay_start < 0:
        return []
    if decay_every < 1:
        raise ValueError(f"decay_every must be >= 1 epoch, got {decay_every}.")
    if num_epochs is None:
        return None
    count = max(0, int((num_epochs - decay_start) / decay_every))
    return [decay_start + decay_every * i for i in range(count)]


def halving_factor(
    epoch: int, num_epochs: int | None = None, decay_start: int = 8, decay_every: int = 3, decay_rate: float = 0.5
) -> float:
    """Learning-rate multiplier in (0-based) ``epoch``: ``decay_rate ** (milestones reached)``."""
    milestones = halving_milestones(num_epochs, decay_start, decay_every)
    if milestones is None:  # no epoch budget: every decay_every epochs from decay_start, forever
        reached = 0 if epoch < decay_start else (epoch - decay_start) // decay_every + 1
    else:
        reached = sum(m <= epoch for m in milestones)
    return float(decay_rate**reached)


class StepHalvingLambda:
    """Per-optimizer-step multiplier: step ``s`` belongs to epoch ``s // steps_per_epoch``.

    A plain object (not a closure) so that ``LambdaLR.state_dict`` saves it and a resumed run
    continues on the same schedule.
    """

    def __init__(
        self, steps_per_epoch: int, num_epochs: int | None, decay_start: int = 8, decay_every: int = 3, decay_rate: float = 0.5
    ):
        if steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}.")
        if not 0.0 < decay_rate <= 1.0:
            raise ValueError(f"decay_rate must lie in (0, 1], got {decay_rate}.")
        self.steps_per_epoch = int(steps_per_epoch)
        self.num_epochs = None if num_epochs is None else int(num_epochs)
        self.decay_start = int(decay_start)
        self.decay_every = int(decay_every)
        self.decay_rate = float(decay_rate)
        halving_milestones(self.num_epochs, self.decay_start, self.decay_every)  # validates

    def __call__(self, step: int) -> float:
        """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
        epoch = step // self.steps_per_epoch
        return halving_factor(epoch, self.num_epochs, self.decay_start, self.decay_every, self.decay_rate)


def get_step_halving_schedule(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    num_epochs: int | None,
    decay_start: int = 8,
    decay_every: int = 3,
    decay_rate: float = 0.5,
    last_epoch: int = -1,
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR stepped once per optimizer step that follows the epoch-wise halving recipe [CM2/PDVC].

    ``decay_start < 0`` keeps the rate constant. Epochs are 0-based: with the defaults the rate is
    full in epochs 0-7, halved in 8-10, quartered in 11-13, and so on.
    """
    schedule = StepHalvingLambda(steps_per_epoch, num_epochs, decay_start, decay_every, decay_rate)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule, last_epoch=last_epoch)


__all__ = ["StepHalvingLambda", "get_step_halving_schedule", "halving_factor", "halving_milestones"]
