"""TimeBudgetCallback: which epoch a wall-clock budget ends training after, by hand and inside a real run."""

import json

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from cacmi_hf.training import TimeBudgetCallback, parse_args, train

from training_fixtures import make_dataset, single_thread, train_argv


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _simulate(budget, epoch_s, eval_s, max_epochs=20):
    """Drive the callback through epochs of `epoch_s` seconds followed by evaluations of `eval_s`; returns
    (epochs run, clock when the last evaluation ended, callback)."""
    clock = FakeClock()
    callback = TimeBudgetCallback(budget, clock=clock)
    args, state, control = TrainingArguments(output_dir="unused", report_to="none"), TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control)
    epochs = 0
    for _ in range(max_epochs):
        callback.on_epoch_begin(args, state, control)
        clock.now += epoch_s
        epochs += 1
        callback.on_epoch_end(args, state, control)
        clock.now += eval_s  # the evaluation and save that follow every epoch end
        if control.should_training_stop:
            break
    return epochs, clock.now, callback


def test_stops_after_the_last_epoch_that_fits_hand_worked():
    # epochs of 10 s, evaluations of 2 s, 50 s: after epoch 4 (ends at t=46) continuing would end at
    # 46 + 2 + 10 + 2 = 60 > 50, while after epoch 3 (t=34) it ends at 48 <= 50
    epochs, ended, callback = _simulate(50.0, 10.0, 2.0)
    assert epochs == 4 and callback.stopped_after == 4
    assert ended == pytest.approx(48.0) and ended <= 50.0
    assert callback.epoch_seconds == [10.0] * 4 and callback.eval_seconds == pytest.approx(2.0)


def test_first_epoch_always_runs_and_a_large_budget_never_stops():
    epochs, _, callback = _simulate(1e-3, 10.0, 2.0)
    assert epochs == 1 and callback.stopped_after == 1
    epochs, _, callback = _simulate(1e6, 10.0, 2.0, max_epochs=5)
    assert epochs == 5 and callback.stopped_after is None


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="budget_seconds must be > 0"):
        TimeBudgetCallback(0)
    with pytest.raises(ValueError, match="--time_budget_minutes must be > 0"):
        parse_args(["--preset", "synthetic", "--time_budget_minutes", "-1", "--output_dir", "unused"])


def test_budget_ends_a_real_run_keeping_the_schedule_and_selection(tmp_path):
    paths = make_dataset(tmp_path / "data")
    # a budget far below one epoch: the first epoch runs, is evaluated and saved, and training stops there
    argv = train_argv(paths, tmp_path / "out", "--num_train_epochs", "3", "--eval_no_java", "true",
                      "--time_budget_minutes", "1e-6")
    with single_thread():
        run = train(*parse_args(argv))
    state = run.trainer.state
    assert state.epoch == pytest.approx(1.0)
    assert [e["epoch"] for e in state.log_history if "eval_F1" in e] == [1.0]
    assert state.best_model_checkpoint.endswith(f"checkpoint-{state.global_step}")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["train"]["stopped_by_time_budget"] is True
    # the schedule is the 3-epoch one (stopping does not stretch or shrink it)
    assert state.max_steps == 3 * state.global_step
