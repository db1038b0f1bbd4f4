"""A run killed mid-epoch and resumed with `resume_from_checkpoint` ends with the weights of an uninterrupted run."""

import pytest
import torch
from transformers import TrainerCallback

from cacmi_hf.training import build_trainer, parse_args, prepare_training

from training_fixtures import single_thread, TINY_OVERRIDES, make_dataset, train_argv

# dropout on, so that the resumed run must also restore the random state to match; at most 2 of the videos' 2-3
# events per step, so the collator's event sampling must also draw the same subsets after the resume
OVERRIDES = TINY_OVERRIDES.replace("dropout=0.0,caption_dropout=0.0", "dropout=0.1,caption_dropout=0.5") + ",max_train_events=2"


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


class Killed(Exception):
    """Stands for the process dying."""


class KillAt(TrainerCallback):
    """Dies at the end of optimizer step `step`, before anything of that step is saved; records the logged losses."""

    def __init__(self, step: int | None = None):
        self.step = step
        self.losses: dict[int, float] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses[state.global_step] = logs["loss"]

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed at step {state.global_step}")


def _trainer(paths, out, callbacks=()):
    argv = train_argv(
        paths, out, "--config_overrides", OVERRIDES, "--num_train_epochs", "2", "--eval_strategy", "no",
        "--save_strategy", "steps", "--save_steps", "3", "--load_best_model_at_end", "false", "--save_total_limit", "10",
        "--lr_decay_start", "1", "--lr_decay_every", "1",
    )
    data_args, model_args, training_args = parse_args(argv)
    setup = prepare_training(data_args, model_args, training_args)
    trainer = build_trainer(setup, training_args, callbacks=list(callbacks))
    return trainer


def test_resume_mid_epoch_equals_uninterrupted(tmp_path):
    torch.manual_seed(123)  # the trainer must not depend on the caller's random state
    paths = make_dataset(tmp_path / "data")
    # 8 videos, batch 2: 4 steps per epoch, checkpoints every 3 steps -> checkpoint-3 is inside epoch 0
    full_log = KillAt()
    full = _trainer(paths, tmp_path / "full", callbacks=[full_log])
    full.train()
    assert full.state.global_step == 8
    assert sum(len(t) > 2 for t in full.train_dataset["timestamps"]) >= 2  # videos with more events than the limit

    torch.manual_seed(456)
    first_log = KillAt(5)
    interrupted = _trainer(paths, tmp_path / "resumed", callbacks=[first_log])
    with pytest.raises(Killed):
        interrupted.train()
    checkpoint = tmp_path / "resumed" / "checkpoint-3"
    assert checkpoint.is_dir() and not (tmp_path / "resumed" / "checkpoint-6").exists()

    torch.manual_seed(789)
    second_log = KillAt()
    resumed = _trainer(paths, tmp_path / "resumed", callbacks=[second_log])
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 8
    # every step's loss (logged every step) is the uninterrupted run's, bit for bit
    losses = {**{k: v for k, v in first_log.losses.items() if k <= 3}, **second_log.losses}
    assert losses == full_log.losses and sorted(losses) == list(range(1, 9))

    expected, got = full.model.state_dict(), resumed.model.state_dict()
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    # and the schedule continued where it stopped: the last lr is the halved one of epoch 1
    assert resumed.lr_scheduler.get_last_lr() == full.lr_scheduler.get_last_lr()
