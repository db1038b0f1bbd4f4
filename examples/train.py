#!/usr/bin/env python
"""Train CACMI with the transformers Trainer; runs unchanged under `accelerate launch` (CPU, DDP, FSDP, DeepSpeed).

Examples:
    # ActivityNet Captions, the paper's recipe (features and bank from `cacmi extract-features` / `build-memory`)
    accelerate launch examples/train.py --preset activitynet \
        --annotations data/anet/train.json data/anet/val_1.json data/anet/val_2.json \
        --features features/anet_clip_l14 --memory_bank memory/anet_train --output_dir runs/anet

    # YouCook2 with 4 GPUs and a global batch of 32
    accelerate launch --multi_gpu --num_processes 4 examples/train.py --preset youcook2 \
        --annotations data/yc2 --features features/yc2 --memory_bank memory/yc2 --per_device_train_batch_size 8

    # the PDVC ablation (no retrieval, no text), resuming the last checkpoint
    python examples/train.py --preset activitynet --variant pdvc ... --resume_from_checkpoint true

Every option: `python examples/train.py --help` (the Trainer's TrainingArguments are all accepted).
A JSON/YAML file with the same keys can replace the command line: `python examples/train.py run.json`.
"""

import json
import logging
import sys

from cacmi_hf.training import TrainingSetupError, parse_args, train


def main(argv=None) -> int:
    """Parse, train, print the final metrics; a set-up problem exits with its message before training."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    data_args, model_args, training_args = parse_args(argv)
    try:
        run = train(data_args, model_args, training_args)
    except TrainingSetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if run.trainer.is_world_process_zero():
        print(json.dumps({k: v for k, v in run.metrics.items()}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
