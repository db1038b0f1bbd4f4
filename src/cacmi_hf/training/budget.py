"""A wall-clock budget for training: stop at an epoch end when one more epoch would not fit.

The learning-rate schedule is still laid out over `num_train_epochs`, so a run that stops early has
followed exactly the schedule of the full run up to that point; only the number of epochs depends on
how fast the machine is. `cacmi demo` uses it to fit its ten minutes on any CPU, and
`examples/train.py --time_budget_minutes N` exposes it.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import torch
import torch.distributed as dist
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

# Before the first evaluation has been timed, assume it costs this fraction of a training epoch.
FIRST_EVAL_GUESS = 0.25


class TimeBudgetCallback(TrainerCallback):
    """Ends training after the epoch whose successor (training + evaluation) would end past `budget_seconds`.

    The clock starts at `on_train_begin`. At each epoch end the callback estimates what continuing
    costs — this epoch's pending evaluation and save, then one more epoch and its evaluation — from the
    mean training epoch and the last measured evaluation, and sets `control.should_training_stop`
    when that would overrun. The current epoch is still evaluated and saved, so best-checkpoint
    selection sees it. Under torch.distributed every process stops when any process would overrun,
    so they never disagree. `stopped_after` is the number of epochs run when the budget ended
    training (None when every epoch fitted).
    """

    def __init__(self, budget_seconds: float, clock: Callable[[], float] = time.perf_counter):
        if not budget_seconds > 0:
            raise ValueError(f"TimeBudgetCallback: budget_seconds must be > 0, got {budget_seconds}.")
        self.budget_seconds = float(budget_seconds)
        self.clock = clock
        self.deadline: float | None = None
        self.epoch_seconds: list[float] = []
        self.eval_seconds: float | None = None
        self.stopped_after: int | None = None
        self._epoch_began: float | None = None
        self._epoch_ended: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        """Start the clock."""
        self.deadline = self.clock() + self.budget_seconds

    def on_epoch_begin(self, args, state, control, **kwargs):
        """Time the previous epoch's evaluation (everything between its end and this start)."""
        now = self.clock()
        if self._epoch_ended is not None:
            self.eval_seconds = now - self._epoch_ended
        self._epoch_began = now

    def on_epoch_end(self, args, state, control, **kwargs):
        """Stop after this epoch when another one would not finish in time."""
        now = self.clock()
        if self._epoch_began is None or self.deadline is None:
            return control
        self.epoch_seconds.append(now - self._epoch_began)
        self._epoch_ended = now
        epoch_cost = sum(self.epoch_seconds) / len(self.epoch_seconds)
        eval_cost = self.eval_seconds if self.eval_seconds is not None else FIRST_EVAL_GUESS * epoch_cost
        # this epoch's evaluation, then the next epoch and its evaluation
        stop = now + 2 * eval_cost + epoch_cost > self.deadline
        stop = _any_process(stop, args)
        if stop and not control.should_training_stop:
            done = len(self.epoch_seconds)
            self.stopped_after = done
            control.should_training_stop = True
            logger.warning(
                "Time budget of %.0f s: stopping after epoch %d (an epoch takes ~%.0f s, its evaluation ~%.0f s).",
                self.budget_seconds, done, epoch_cost, eval_cost,
            )
        return control


def _any_process(flag: bool, args) -> bool:
    """`flag` OR-ed over the processes of a torch.distributed run (the flag itself otherwise)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([float(flag)], device=args.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


__all__ = ["TimeBudgetCallback"]
