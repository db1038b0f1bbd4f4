"""Bad configurations fail in `prepare_training`, before any step, with a message that says what to fix."""

import json

import numpy as np
import pytest

from cacmi_hf.training import TrainingSetupError, parse_args, prepare_training
from cacmi_hf.training.checks import check_splits

from training_fixtures import single_thread, make_dataset, train_argv


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture()
def data(tmp_path):
    return make_dataset(tmp_path / "data")


def _prepare(paths, out, *extra):
    return prepare_training(*parse_args(train_argv(paths, out, *extra)))


def test_good_setup_prepares(data, tmp_path):
    setup = _prepare(data, tmp_path / "out")
    assert setup.config.feature_dim == 16  # sized from the features
    assert setup.config.vocab_size == len(setup.tokenizer)
    assert setup.config.memory_size == setup.memory_bank.num_entries
    assert len(setup.train_dataset) == 8 and len(setup.eval_dataset) == 4
    assert [t.name for t in setup.test_sets] == ["test"]
    assert sum(setup.config.count_prior) == pytest.approx(1.0)
    assert setup.processor.event_count == "expected"  # the synthetic preset's rule


def test_event_count_rule_reaches_the_processor_and_a_bad_one_fails(data, tmp_path):
    assert _prepare(data, tmp_path / "out", "--event_count", "argmax").processor.event_count == "argmax"
    # the benchmark presets keep PDVC's argmax and PDVC's selection rule; the synthetic one selects by F1
    for preset, rule, metric in (("activitynet", "argmax", "score"), ("youcook2", "argmax", "score"),
                                 ("synthetic", "expected", "F1")):
        _, model_args, training_args = parse_args(["--preset", preset, "--output_dir", str(tmp_path / preset)])
        assert (model_args.event_count, training_args.metric_for_best_model) == (rule, metric)
    with pytest.raises(ValueError, match="event_count must be one of"):
        _prepare(data, tmp_path / "out2", "--event_count", "mode")


def test_missing_features_name_the_video(data, tmp_path):
    (data["features"] / "v_train003.npy").unlink()
    with pytest.raises(FileNotFoundError, match="v_train003") as err:
        _prepare(data, tmp_path / "out")
    assert "Extract them" in str(err.value)


def test_empty_split(data, tmp_path):
    data["val"].write_text("{}")
    with pytest.raises(TrainingSetupError, match="eval split .* has no videos"):
        _prepare(data, tmp_path / "out")


def test_empty_train_split_by_filter(data, tmp_path):
    with pytest.raises(TrainingSetupError, match="train split .* has no videos"):
        _prepare(data, tmp_path / "out", "--max_train_videos", "0")


def test_train_split_without_events():
    from datasets import Dataset

    dataset = Dataset.from_dict({"video_id": ["a"], "duration": [3.0], "timestamps": [[]], "sentences": [[]]})
    with pytest.raises(TrainingSetupError, match="no annotated event"):
        check_splits({"train": dataset})


def test_memory_bank_of_another_clip_dim(tmp_path):
    paths = make_dataset(tmp_path / "data", bank_dim=24)
    with pytest.raises(TrainingSetupError, match=r"24-d embeddings .* 16-d queries") as err:
        _prepare(paths, tmp_path / "out")
    assert "cacmi build-memory" in str(err.value)


def test_missing_memory_bank_with_cfa(data, tmp_path):
    argv = train_argv(data, tmp_path / "out")
    i = argv.index("--memory_bank")
    del argv[i : i + 2]
    with pytest.raises(TrainingSetupError, match="no memory bank was given"):
        prepare_training(*parse_args(argv))
    setup = prepare_training(*parse_args(argv + ["--variant", "pdvc"]))  # PDVC needs none
    assert setup.memory_bank is None and not setup.config.use_cfa


def test_features_of_another_size_than_the_checkpoint(data, tmp_path):
    setup = _prepare(data, tmp_path / "out")
    setup.model.save_pretrained(tmp_path / "ckpt")
    setup.processor.save_pretrained(tmp_path / "ckpt")
    for path in data["features"].glob("*.npy"):
        np.save(path, np.zeros((20, 8), dtype=np.float32))
    with pytest.raises(TrainingSetupError, match="D=8 but the model expects feature_dim=16"):
        _prepare(data, tmp_path / "out", "--model_name_or_path", str(tmp_path / "ckpt"))


def test_tokenizer_that_does_not_match_the_checkpoint(data, tmp_path):
    setup = _prepare(data, tmp_path / "out")
    setup.model.save_pretrained(tmp_path / "ckpt")
    setup.processor.save_pretrained(tmp_path / "ckpt")
    # the checkpoint with its own tokenizer loads fine
    again = _prepare(data, tmp_path / "out", "--model_name_or_path", str(tmp_path / "ckpt"))
    assert again.config.vocab_size == setup.config.vocab_size
    # a vocabulary built from other captions does not
    from cacmi_hf.data import build_caption_tokenizer

    other = build_caption_tokenizer(["a purple cube spins slowly", "a purple cube jumps"], min_count=1)
    other.save_pretrained(tmp_path / "other_tok")
    with pytest.raises(TrainingSetupError, match="does not match the model") as err:
        _prepare(data, tmp_path / "out", "--model_name_or_path", str(tmp_path / "ckpt"), "--tokenizer", str(tmp_path / "other_tok"))
    assert "drop --tokenizer" in str(err.value)
    # same size, other word ids
    vocab = setup.tokenizer.get_vocab()
    words = sorted((w for w in vocab if not w.startswith("[")), key=vocab.get)
    shuffled = build_caption_tokenizer([" ".join(reversed(words))], min_count=1)
    shuffled.save_pretrained(tmp_path / "shuffled_tok")
    assert len(shuffled) == len(setup.tokenizer) and shuffled.get_vocab() != vocab
    with pytest.raises(TrainingSetupError, match="maps words to other ids"):
        _prepare(data, tmp_path / "out", "--model_name_or_path", str(tmp_path / "ckpt"), "--tokenizer", str(tmp_path / "shuffled_tok"))


def test_unknown_split_and_variant(data, tmp_path):
    with pytest.raises(TrainingSetupError, match="'nope' is not in the annotations"):
        _prepare(data, tmp_path / "out", "--eval_split", "nope")
    with pytest.raises(TrainingSetupError, match="Unknown --variant"):
        _prepare(data, tmp_path / "out", "--variant", "nope")


def test_arguments_are_checked_before_any_data_is_read(tmp_path):
    """A wrong variant or override fails at once, even with annotation files that do not exist (yet)."""
    paths = {k: tmp_path / f"missing_{k}" for k in ("train", "val", "test", "features", "memory_bank")}
    with pytest.raises(TrainingSetupError, match="Unknown --variant 'nope'"):
        prepare_training(*parse_args(train_argv(paths, tmp_path / "out", "--variant", "nope")))
    with pytest.raises(TrainingSetupError, match="is not key=value"):
        prepare_training(*parse_args(train_argv(paths, tmp_path / "out", "--config_overrides", "hidden_size")))


def test_holdout_carved_from_train_leaves_the_bank_without_those_videos(data, tmp_path):
    argv = train_argv(data, tmp_path / "out")
    i = argv.index("--annotations")
    argv[i + 1 : i + 4] = [str(data["train"])]
    setup = prepare_training(*parse_args(argv + ["--eval_split", "", "--holdout_videos", "3", "--test_splits", "train"]))
    held = set(setup.eval_dataset["video_id"])
    assert len(held) == 3 and len(setup.train_dataset) == 5
    bank_videos = {setup.memory_bank.video_ids[int(i)] for i in setup.memory_bank.video_index}
    assert not held & bank_videos
