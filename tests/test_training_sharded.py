"""Two gloo processes on CPU: FSDP2-sharded training evaluates mid-training without dead-locking and scores what one
process scores; a DDP or FSDP2 run killed mid-way and resumed is bit-identical to the uninterrupted one.

Both run `tests/distributed_driver.py` under `torch.distributed.run` with a bounded timeout: a dead-lock fails the
test instead of hanging CI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cacmi_hf.training import build_trainer, parse_args, prepare_training

from training_fixtures import TINY_OVERRIDES, make_dataset, single_thread, train_argv

DRIVER = Path(__file__).resolve().parent / "distributed_driver.py"
EVAL = ("--per_device_eval_batch_size", "2", "--dataloader_num_workers", "0", "--eval_no_java", "true",
        "--metric_for_best_model", "CIDEr")
TIMEOUT = 600  # seconds for a whole launch; a dead-lock ends here


def _launch(scenario: str, out: Path, argv: list[str], processes: int = 2) -> None:
    """Run the driver's `scenario` in `processes` fresh processes; fail with their output if they fail or hang."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_port", str(port), str(DRIVER), scenario, str(out), "--", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{scenario} with {processes} processes did not finish in {TIMEOUT} s (dead-lock?):\n{str(err.stderr)[-4000:]}")
    assert proc.returncode == 0, f"{scenario} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"


@pytest.mark.slow
def test_fsdp2_two_processes_evaluate_mid_training_and_score_like_one_process(tmp_path):
    # 3 held-out videos: uneven shards (one process pads its last batch); 4 test videos: one batch of 2 per process,
    # the batches one process makes too, so even the batch-averaged test loss must agree
    paths = make_dataset(tmp_path / "data", counts={"train": 8, "val": 3, "test": 4})
    out = tmp_path / "fsdp"
    argv = train_argv(paths, out, *EVAL, "--num_train_epochs", "2", "--per_device_train_batch_size", "2")
    _launch("fsdp", out, argv)

    sharding = json.loads((out / "sharding.json").read_text())
    assert sharding["dtensor_parameters"] == sharding["parameters"] > 0  # every parameter was an FSDP2 shard
    results = json.loads((out / "results.json").read_text())
    history = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    evaluations = [e for e in history if "eval_F1" in e]
    assert [e["epoch"] for e in evaluations] == [1.0, 2.0]  # evaluated (and generated) mid-training and at the end
    assert all(e["eval_num_videos"] == 3 for e in evaluations)
    test = results["test"]["test"]
    assert test["test_num_videos"] == 4

    # one process, the saved model, the same test split: the same scores
    with single_thread():
        data_args, model_args, training_args = parse_args(
            train_argv(paths, tmp_path / "one", *EVAL, "--model_name_or_path", str(out))
        )
        setup = prepare_training(data_args, model_args, training_args)
        trainer = build_trainer(setup, training_args)
        one = trainer.evaluate(setup.test_sets[0].dataset, metric_key_prefix="test", references=setup.test_sets[0].references[0])
    for key in ("test_F1", "test_Precision", "test_Recall", "test_CIDEr", "test_Bleu_4", "test_METEOR"):
        assert one.get(key) == test.get(key), (key, one.get(key), test.get(key))
    assert one["test_loss"] == pytest.approx(test["test_loss"], rel=1e-5)
    predictions = json.loads((out / "predictions_test.json").read_text())["results"]
    assert predictions == json.loads(json.dumps(trainer.last_predictions))


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["resume", "fsdp_resume"])
def test_two_process_resume_is_bit_identical(tmp_path, scenario):
    paths = make_dataset(tmp_path / "data")  # 8 training videos of 2-3 events
    overrides = TINY_OVERRIDES.replace("dropout=0.0,caption_dropout=0.0", "dropout=0.1,caption_dropout=0.5") + ",max_train_events=2"
    argv = train_argv(
        paths, tmp_path / "unused", "--config_overrides", overrides, "--num_train_epochs", "2", "--eval_strategy", "no",
        "--save_strategy", "steps", "--save_steps", "2", "--load_best_model_at_end", "false", "--save_total_limit", "10",
        "--lr_decay_start", "1", "--lr_decay_every", "1", "--per_device_train_batch_size", "1",
    )
    out = tmp_path / "runs"
    _launch(scenario, out, argv)  # DDP or FSDP2; 8 videos / (2 x 1) = 4 steps an epoch, 8 steps; killed after 5, resumed from 4
    for rank in (0, 1):
        full = torch.load(out / f"full_rank{rank}.pt", weights_only=True)
        resumed = torch.load(out / f"resumed_rank{rank}.pt", weights_only=True)
        assert sorted(full["losses"]) == list(range(1, 9))
        assert resumed["losses"] == full["losses"]
        for key, value in full["weights"].items():
            assert torch.equal(resumed["weights"][key], value), (rank, key)
