"""Multi-process training scenarios for the slow tests, run under `torch.distributed.run` (gloo on CPU).

    python -m torch.distributed.run --nproc_per_node 2 tests/distributed_driver.py SCENARIO OUT_DIR -- TRAIN_ARGS...

Scenarios:
- `fsdp`: train with the Trainer's parameters sharded by FSDP2 (`fully_shard`, through Accelerate's own FSDP2
  preparation), evaluating mid-training and scoring the test split at the end (`training.run.train`).
  `accelerate launch --use_fsdp` cannot test this on CPU: its MULTI_CPU state never turns FSDP on (DESIGN §7),
  so the accelerator is switched to FSDP2 right after the Trainer built it.
- `resume`: train N steps; train again, die after step N/2 + 1 with a checkpoint at N/2, resume from it and
  finish; write the per-step losses and the final weights of both runs for the test to compare.
- `fsdp_resume`: `resume` with the parameters sharded by FSDP2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def _switch_to_fsdp2() -> None:
    """Make every DenseCaptioningTrainer built from here on shard its model with Accelerate's FSDP2 path."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    from cacmi_hf.training.trainer import DenseCaptioningTrainer

    build = DenseCaptioningTrainer.create_accelerator_and_postprocess

    def create_accelerator_and_postprocess(self):
        build(self)
        plugin = FullyShardedDataParallelPlugin(fsdp_version=2, reshard_after_forward=True, state_dict_type="FULL_STATE_DICT")
        self.accelerator.state.fsdp_plugin = plugin
        self.accelerator.state.distributed_type = DistributedType.FSDP
        self.is_fsdp_enabled = True

    DenseCaptioningTrainer.create_accelerator_and_postprocess = create_accelerator_and_postprocess


def _fsdp(out: Path, argv: list[str]) -> None:
    """Train under FSDP2 with evaluations; record whether the parameters really were DTensor shards."""
    from torch.distributed.tensor import DTensor

    from cacmi_hf.training import parse_args, train

    _switch_to_fsdp2()
    run = train(*parse_args(argv))
    sharded = [isinstance(p, DTensor) for p in run.trainer.model.parameters()]
    if dist.get_rank() == 0:
        (out / "sharding.json").write_text(json.dumps({"dtensor_parameters": sum(sharded), "parameters": len(sharded)}))


class Killed(Exception):
    """Stands for the processes dying."""


def _resume(out: Path, argv: list[str]) -> None:
    """Uninterrupted run vs. a run killed after its mid-way checkpoint and resumed; both write losses and weights."""
    from transformers import TrainerCallback

    from cacmi_hf.training import build_trainer, parse_args, prepare_training

    class Record(TrainerCallback):
        def __init__(self, kill_at: int | None = None):
            self.losses: dict[int, float] = {}
            self.kill_at = kill_at

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses[state.global_step] = logs["loss"]

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == self.kill_at:
                raise Killed(f"killed after step {state.global_step}")

    def trainer(output_dir: Path, callback: Record):
        data_args, model_args, training_args = parse_args([*argv, "--output_dir", str(output_dir)])
        setup = prepare_training(data_args, model_args, training_args)
        return build_trainer(setup, training_args, callbacks=[callback])

    def dump(name: str, trainer, callback: Record) -> None:
        rank = dist.get_rank() if dist.is_initialized() else 0
        weights = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu()
                   for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}
        torch.save({"losses": callback.losses, "weights": weights}, out / f"{name}_rank{rank}.pt")

    full = Record()
    uninterrupted = trainer(out / "full", full)
    uninterrupted.train()
    dump("full", uninterrupted, full)
    steps = uninterrupted.state.global_step
    half = steps // 2

    first = Record(kill_at=half + 1)
    interrupted = trainer(out / "resumed", first)
    try:
        interrupted.train()
    except Killed:
        pass
    checkpoint = out / "resumed" / f"checkpoint-{half}"
    if not checkpoint.is_dir():
        raise RuntimeError(f"no checkpoint at step {half} in {checkpoint.parent}: save every {half} steps")
    second = Record()
    resumed = trainer(out / "resumed", second)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    second.losses = {**{s: v for s, v in first.losses.items() if s <= half}, **second.losses}
    dump("resumed", resumed, second)


def main(argv: list[str]) -> int:
    """Dispatch `SCENARIO OUT_DIR -- TRAIN_ARGS...`."""
    scenario, out = argv[0], Path(argv[1])
    train_args = argv[argv.index("--") + 1 :]
    out.mkdir(parents=True, exist_ok=True)
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where a stuck process waits
    torch.set_num_threads(1)
    if scenario == "fsdp_resume":
        _switch_to_fsdp2()
    {"fsdp": _fsdp, "resume": _resume, "fsdp_resume": _resume}[scenario](out, train_args)
    if dist.is_initialized():
        dist.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
