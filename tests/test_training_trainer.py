"""DenseCaptioningTrainer: recipe optimiser and schedule, generation-based evaluation, the saved folder."""

import json
import math

import numpy as np
import pytest
import torch

from cacmi_hf.training import build_trainer, flatten_scores, parse_args, prepare_training, references_from_dataset, train

from training_fixtures import make_dataset, single_thread, train_argv

# without Java (fast tests): no METEOR / SODA_c; the slow test below covers those
METRIC_KEYS = ("eval_CIDEr", "eval_Bleu_4", "eval_ROUGE_L", "eval_F1", "eval_Precision", "eval_Recall", "eval_loss")
NO_JAVA = ("--eval_no_java", "true", "--metric_for_best_model", "CIDEr")


def _times(events):
    """All start and end times of an event list, flat."""
    return [t for e in events for t in e["timestamp"]]


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run: 2 epochs (4 steps each), evaluated every epoch, the best kept and saved."""
    root = tmp_path_factory.mktemp("train")
    paths = make_dataset(root / "data")
    argv = train_argv(paths, root / "out", "--num_train_epochs", "2", "--lr_decay_start", "1", "--lr_decay_every", "1", *NO_JAVA)
    with single_thread():
        run = train(*parse_args(argv))
        yield paths, root / "out", run


def test_eval_logs_the_dense_captioning_metrics(trained):
    _, _, run = trained
    evaluations = [e for e in run.trainer.state.log_history if "eval_CIDEr" in e]
    assert [e["epoch"] for e in evaluations] == [1.0, 2.0]
    for entry in evaluations:
        for key in METRIC_KEYS:
            assert key in entry and math.isfinite(entry[key]), key
        assert "eval_METEOR" not in entry and "eval_score" not in entry  # no Java, no METEOR
        assert entry["eval_num_videos"] == 4  # every val video captioned
    # the unweighted loss terms are logged beside the training loss
    steps = [e for e in run.trainer.state.log_history if "loss" in e and "eval_loss" not in e]
    assert steps and all({"loss_ce", "loss_giou", "loss_caption", "loss_counter"} <= set(e) for e in steps)


def test_best_checkpoint_selected_on_the_held_out_split(trained):
    _, out, run = trained
    state = run.trainer.state
    evaluations = [e for e in state.log_history if "eval_CIDEr" in e]
    best = max(evaluations, key=lambda e: e["eval_CIDEr"])  # first one on ties, as the Trainer's strict ">"
    assert state.best_metric == pytest.approx(best["eval_CIDEr"])
    assert state.best_model_checkpoint.endswith(f"checkpoint-{best['step']}")
    assert run.metrics["eval"]["eval_CIDEr"] == pytest.approx(best["eval_CIDEr"])
    # the test split is scored once at the end, with its own prefix
    test = run.metrics["test"]["test"]
    assert {"test_CIDEr", "test_F1", "test_num_videos"} <= set(test)
    saved = json.loads((out / "results.json").read_text())
    assert saved["test"]["test"]["test_F1"] == pytest.approx(test["test_F1"])
    predictions = json.loads((out / "predictions_test.json").read_text())["results"]
    assert sorted(predictions) == sorted(references_from_dataset(run.setup.test_sets[0].dataset))


def test_recipe_optimizer_and_halving_schedule(trained):
    _, _, run = trained
    trainer = run.trainer
    assert type(trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer) is torch.optim.Adam
    # PDVC/CM2: torch.optim.Adam(model.parameters(), weight_decay=1e-4), biases and norms included
    decayed = [p for g in trainer.optimizer.param_groups if g["weight_decay"] == 1e-4 for p in g["params"]]
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert len(decayed) == len(trainable) and sum(len(g["params"]) for g in trainer.optimizer.param_groups) == len(trainable)
    # the Trainer's rule is the switch: no decay on biases and norm layers
    trainer.args.weight_decay_scope = "weights"
    try:
        names = trainer.get_decay_parameter_names(trainer.model)
    finally:
        trainer.args.weight_decay_scope = "all"
    assert names and not any(n.endswith("bias") for n in names) and len(names) < len(trainable)
    schedule = trainer.lr_scheduler.lr_lambdas[0]
    assert schedule.steps_per_epoch == 4  # 8 videos, batch 2
    # lr_decay_start=1, every epoch, 2 epochs: int((2-1)/1) = 1 milestone at epoch 1
    lrs = [e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e]
    assert lrs[:4] == [pytest.approx(1e-3)] * 4 and lrs[4:8] == [pytest.approx(5e-4)] * 4


def test_saved_folder_loads_with_from_pretrained_and_pipeline(trained):
    from transformers import pipeline

    import cacmi_hf  # noqa: F401  registers the task
    from cacmi_hf.data import resize_features
    from cacmi_hf.modeling_cacmi import CACMIForDenseCaptioning

    paths, out, run = trained
    model = CACMIForDenseCaptioning.from_pretrained(out)
    bank = run.setup.memory_bank
    assert torch.equal(model.memory_bank.video_index, bank.video_index)
    assert torch.allclose(model.memory_bank.embeddings, bank.embeddings, atol=1e-6)
    trained_state = run.trainer.model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained_state[key]), key
    captioner = pipeline("dense-video-captioning", model=str(out))
    features = np.load(paths["features"] / "v_test000.npy")
    duration = json.loads(paths["test"].read_text())["v_test000"]["duration"]
    events = captioner({"video_features": resize_features(features, 16), "duration": duration})
    assert events and all(0 <= e["timestamp"][0] <= e["timestamp"][1] <= duration for e in events)
    # same events as the trainer's own evaluation of that video
    expected = run.trainer.last_predictions["v_test000"]
    assert [e["caption"] for e in events] == [e["caption"] for e in expected]
    assert _times(events) == pytest.approx(_times(expected), abs=1e-4)


def test_main_process_generation_equals_sharded(trained):
    _, _, run = trained
    trainer = run.trainer
    dataset = run.setup.eval_dataset
    sharded, loss_sharded = trainer.caption_dataset(dataset)
    trainer.args.eval_generation = "main"
    try:
        main, loss_main = trainer.caption_dataset(dataset)
    finally:
        trainer.args.eval_generation = "sharded"
    assert main == sharded and loss_main == pytest.approx(loss_sharded)
    assert sorted(main) == sorted(dataset["video_id"])


def test_main_mode_other_processes_caption_nothing_and_only_wait(trained, monkeypatch):
    """eval_generation="main" on a process other than the main one: no forward, no collective, one barrier."""
    from accelerate import Accelerator, PartialState

    _, _, run = trained
    trainer = run.trainer
    calls = []
    model = trainer.accelerator.unwrap_model(trainer.model)
    monkeypatch.setattr(PartialState, "is_main_process", property(lambda self: False))
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 2))
    monkeypatch.setattr(trainer.accelerator, "wait_for_everyone", lambda: calls.append("barrier"))
    monkeypatch.setattr(trainer.accelerator, "gather_for_metrics", lambda *a, **k: calls.append("gather"))
    monkeypatch.setattr(model, "generate", lambda *a, **k: calls.append("generate"))
    monkeypatch.setattr(model, "forward", lambda *a, **k: calls.append("forward"))
    trainer.args.eval_generation = "main"
    try:
        predictions, loss = trainer.caption_dataset(run.setup.eval_dataset)
    finally:
        trainer.args.eval_generation = "sharded"
    assert (predictions, loss, calls) == ({}, None, ["barrier"])


def test_any_batch_size_gives_the_same_evaluation(trained):
    _, _, run = trained
    trainer = run.trainer
    dataset = run.setup.eval_dataset
    reference, _ = trainer.caption_dataset(dataset, compute_loss=False)
    trainer.args.per_device_eval_batch_size = 1
    try:
        single, _ = trainer.caption_dataset(dataset, compute_loss=False)
    finally:
        trainer.args.per_device_eval_batch_size = 3
    for vid in reference:
        assert [e["caption"] for e in single[vid]] == [e["caption"] for e in reference[vid]]
        assert _times(single[vid]) == pytest.approx(_times(reference[vid]), abs=1e-4)


def test_flatten_scores_hand_worked():
    result = {
        "average": {"METEOR": 0.25, "CIDEr": 0.5, "F1": 0.8, "Bleu_4": None},
        "SODA_c": 0.125,
        "paragraph": {"METEOR": 0.3, "videos": 3},
        "videos": {"evaluated": 7},
    }
    assert flatten_scores(result) == {
        "METEOR": 0.25, "CIDEr": 0.5, "F1": 0.8, "SODA_c": 0.125, "para_METEOR": 0.3, "score": 0.375, "num_videos": 7.0,
    }
    no_java = {"average": {"METEOR": None, "CIDEr": 0.5}, "SODA_c": None, "videos": {"evaluated": 2}}
    assert flatten_scores(no_java) == {"CIDEr": 0.5, "num_videos": 2.0}


def test_references_from_dataset_round_trip(tmp_path):
    paths = make_dataset(tmp_path / "data", counts={"train": 3})
    setup_annotations = json.loads(paths["train"].read_text())
    from cacmi_hf.data import load_dense_captions

    dataset = load_dense_captions(str(paths["train"]), split="train", features=str(paths["features"]))
    assert references_from_dataset(dataset) == setup_annotations


def test_no_held_out_split_trains_without_evaluation(tmp_path):
    paths = make_dataset(tmp_path / "data", counts={"train": 4})
    argv = train_argv({**paths, "val": paths["train"], "test": paths["train"]}, tmp_path / "out")
    i = argv.index("--annotations")
    argv[i + 1 : i + 4] = [str(paths["train"])]
    data_args, model_args, training_args = parse_args(argv + ["--eval_split", "", "--holdout_videos", "0", "--test_splits", "train"])
    setup = prepare_training(data_args, model_args, training_args)
    trainer = build_trainer(setup, training_args)
    assert trainer.args.eval_strategy == "no" and not trainer.args.load_best_model_at_end


@pytest.mark.slow
def test_java_metrics_share_one_meteor_process(tmp_path, monkeypatch):
    """With Java: eval_METEOR / eval_SODA_c / eval_score are logged, and every evaluation of a run (and of the
    next one in the same Python process) is scored by the one shared METEOR process, which stays running."""
    from cacmi_hf.evaluation import meteor as meteor_module

    started, used = [], set()
    original, ready = meteor_module.Meteor, meteor_module.Meteor._ready  # every statistics request passes here

    def counting(*args, **kwargs):
        started.append(1)
        return original(*args, **kwargs)

    def recording(self, *args, **kwargs):
        used.add(id(self))
        return ready(self, *args, **kwargs)

    monkeypatch.setattr(meteor_module, "Meteor", counting)
    monkeypatch.setattr(original, "_ready", recording)
    paths = make_dataset(tmp_path / "data")
    # PDVC's selection rule (METEOR + SODA_c), which needs the Java metrics; the synthetic preset selects by F1
    run = train(*parse_args(train_argv(paths, tmp_path / "out", "--num_train_epochs", "2", "--metric_for_best_model", "score")))
    evaluations = [e for e in run.trainer.state.log_history if "eval_METEOR" in e]
    assert len(evaluations) == 2
    for entry in evaluations:
        assert {"eval_METEOR", "eval_SODA_c", "eval_score", "eval_CIDEr", "eval_F1"} <= set(entry)
        assert entry["eval_score"] == pytest.approx(entry["eval_METEOR"] + entry["eval_SODA_c"])
    assert run.trainer.state.best_metric == pytest.approx(max(e["eval_score"] for e in evaluations))
    assert "test_METEOR" in run.metrics["test"]["test"]
    shared = meteor_module.shared_meteor()
    assert used == {id(shared)}  # two evaluations and the test set: one process
    assert len(started) <= 1  # none when an earlier test of this session already started it
    assert shared._process.poll() is None  # still running for the next evaluation
    train(*parse_args(train_argv(paths, tmp_path / "again", "--num_train_epochs", "1")))
    assert used == {id(shared)} and len(started) <= 1  # a second run starts no new process
