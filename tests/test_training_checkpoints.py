"""Lean checkpoints: the frozen CLIP tower is saved once (final folder), checkpoints keep the trainable state."""

import json

import pytest
import torch
from safetensors import safe_open

from cacmi_hf.modeling_cacmi import CACMIForDenseCaptioning
from cacmi_hf.open_clip_tower import TINY_OPEN_CLIP_CONFIG, build_open_clip_model, resolve_open_clip, save_open_clip_local_dir
from cacmi_hf.training import build_trainer, parse_args, prepare_training

from training_fixtures import make_dataset, single_thread, train_argv


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


def _keys(path) -> set[str]:
    with safe_open(str(path), "pt") as handle:
        return set(handle.keys())


def _trainer(paths, clip, out):
    argv = train_argv(
        paths, out, "--clip", str(clip), "--clip_pretrained", str(clip), "--eval_strategy", "no",
        "--load_best_model_at_end", "false", "--save_strategy", "steps", "--save_steps", "2", "--save_total_limit", "5",
    )
    data_args, model_args, training_args = parse_args(argv)
    return build_trainer(prepare_training(data_args, model_args, training_args), training_args)


def test_checkpoints_leave_out_the_frozen_tower_and_the_final_folder_has_it(tmp_path):
    torch.manual_seed(0)
    spec = resolve_open_clip(TINY_OPEN_CLIP_CONFIG)
    clip = save_open_clip_local_dir(build_open_clip_model(spec).eval(), spec, tmp_path / "clip")
    paths = make_dataset(tmp_path / "data", feature_dim=spec.embed_dim)
    trainer = _trainer(paths, clip, tmp_path / "run")
    tower = {f"vision_tower.{k}": v.clone() for k, v in trainer.model.vision_tower.state_dict().items()}
    tower_bytes = sum(v.numel() * v.element_size() for v in tower.values())
    trainer.train()  # 8 videos, batch 2: 4 steps, checkpoints at 2 and 4
    trainer.save_model(str(tmp_path / "run"))  # the final folder, as training.run.train writes it

    checkpoint = tmp_path / "run" / "checkpoint-2"
    saved = _keys(checkpoint / "model.safetensors")
    assert saved and not any(k.startswith("vision_tower.") for k in saved)
    assert json.loads((checkpoint / "omitted_weights.json").read_text())["omitted"] == "vision_tower"
    final = _keys(tmp_path / "run" / "model.safetensors")
    assert set(tower) <= final and saved == final - set(tower)
    size = lambda p: (p / "model.safetensors").stat().st_size  # noqa: E731
    assert size(tmp_path / "run") - size(checkpoint) >= tower_bytes  # the tower is what the checkpoint saves

    # the final folder alone rebuilds the whole model, tower included (HF_HUB_OFFLINE is set for the tests)
    loaded = CACMIForDenseCaptioning.from_pretrained(tmp_path / "run")
    state = trainer.model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    for key, value in tower.items():
        assert torch.equal(loaded.state_dict()[key], value), key

    # a lean checkpoint resumes to the uninterrupted weights
    resumed = _trainer(paths, clip, tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, state[key]), key
