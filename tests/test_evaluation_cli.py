"""`cacmi evaluate` (cacmi_hf.evaluation.cli)."""

import argparse
import json

import pytest

from cacmi_hf.evaluation import cli

REFERENCES = {"v1": {"timestamps": [[0, 10], [20, 30]], "sentences": ["a man runs", "a dog sits"]}}
PREDICTIONS = {"version": "VERSION 1.0", "results": {"v1": [{"timestamp": [0, 10], "sentence": "a man runs"}]}}


def _run(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


@pytest.fixture
def files(tmp_path):
    pred, ref = tmp_path / "pred.json", tmp_path / "val_1.json"
    pred.write_text(json.dumps(PREDICTIONS))
    ref.write_text(json.dumps(REFERENCES))
    return tmp_path, str(pred), str(ref)


def test_prints_a_table_and_writes_json(files, capsys):
    tmp_path, pred, ref = files
    out = tmp_path / "scores" / "out.json"
    assert _run([pred, "--references", ref, "--no-java", "--quiet", "--output", str(out), "--tious", "0.5", "0.7"]) == 0
    printed = capsys.readouterr().out
    assert "ROUGE_L" in printed and "mean" in printed and "not comparable" in printed
    scores = json.loads(out.read_text())
    assert scores["tious"] == [0.5, 0.7]
    assert scores["average"]["Precision"] == 1.0 and scores["average"]["Recall"] == 0.5
    assert "per_video" not in scores


def test_per_video_flag(files, tmp_path):
    _, pred, ref = files
    out = tmp_path / "o.json"
    assert _run([pred, "-r", ref, "--no-java", "-q", "--per-video", "-o", str(out)]) == 0
    assert set(json.loads(out.read_text())["per_video"]) == {"v1"}


def test_bad_input_is_a_one_line_error_not_a_traceback(files, tmp_path, capsys):
    _, _, ref = files
    broken = tmp_path / "broken.json"
    broken.write_text('{"results": {"v1": [{"timestamp": [3, 1], "sentence": "x"}]}}')
    assert _run([str(broken), "-r", ref, "--no-java", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cacmi evaluate: error:") and "start > end" in err and "Traceback" not in err
    broken.write_text("{not json")
    assert _run([str(broken), "-r", ref, "--no-java", "-q"]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    assert _run([str(tmp_path / "missing.json"), "-r", ref, "--no-java", "-q"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert _run([str(broken), "-r", ref, "-q", "--meteor-threads", "0"]) == 1
    assert "meteor_threads must be >= 1, got 0" in capsys.readouterr().err


def test_missing_java_tells_how_to_install(files, capsys):
    _, pred, ref = files
    assert _run([pred, "-r", ref, "-q", "--java", "no-such-java-binary"]) == 1
    assert "apt-get install default-jre-headless" in capsys.readouterr().err


def test_unknown_videos_are_reported_as_a_warning_line(files, tmp_path, capsys):
    _, _, ref = files
    pred = tmp_path / "p.json"
    pred.write_text(json.dumps({"results": {**PREDICTIONS["results"], "v_extra": []}}))
    assert _run([str(pred), "-r", ref, "--no-java", "-q"]) == 0
    captured = capsys.readouterr()
    assert "warning: 1 predicted videos are not in the references" in captured.err
    assert "1 predicted videos not in the references" in captured.out
