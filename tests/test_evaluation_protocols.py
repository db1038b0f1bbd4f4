"""The densevid protocols 2018, 2021 and 2018_cider, and paragraph metrics as para_evaluate.py computes them.

Expected values come from the reference scripts themselves (densevid_eval3 of CM2_DVC @01a6558),
written by tests/fixtures/evaluation/make_reference_fixtures.py; never from this package.
"""

import argparse
import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest

from cacmi_hf.evaluation import (
    PROTOCOLS,
    cli,
    evaluate_dense_captions,
    format_scores,
    shared_meteor,
    summary_line,
)
from cacmi_hf.evaluation.protocols import check_protocol, protocol_label, unmatched_reference

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "evaluation" / "reference_protocols.json").read_text())
CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
TOLERANCE = 1e-9  # the issue asks for 1e-4; ours agrees with the reference to rounding


@pytest.fixture(scope="module")
def meteor():
    return shared_meteor()  # one METEOR process for the module (its start-up takes seconds)


def _ours(case: dict, protocol: str, meteor) -> dict:
    """Our result on a fixture case; each (case, protocol) is evaluated once per module (Java start-ups)."""
    key = (json.dumps(case["predictions"], sort_keys=True), json.dumps(case["references"], sort_keys=True), protocol)
    if key not in _RESULTS:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "1 predicted videos are not in the references")  # v_unknown
            _RESULTS[key] = evaluate_dense_captions(case["predictions"], case["references"], protocol=protocol,
                                                    meteor=meteor, soda=False, per_video=True)
    return _RESULTS[key]


_RESULTS: dict = {}


def _per_tiou(result: dict, metric: str) -> list[float]:
    return [row[metric] for row in result["per_tiou"].values()]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", sorted(FIXTURE["dense"]))
def test_every_metric_equals_the_reference_script(name, protocol, meteor):
    case = FIXTURE["dense"][name]
    expected = case["reference_outputs"][protocol]
    out = _ours(case, protocol, meteor)
    assert out["protocol"] == protocol
    assert list(out["per_tiou"]) == [f"{t:g}" for t in FIXTURE["tious"]]
    for metric in (*CAPTION_METRICS, "Precision", "Recall"):
        np.testing.assert_allclose(_per_tiou(out, metric), expected[metric], rtol=0, atol=TOLERANCE, err_msg=metric)
        assert out["average"][metric] == pytest.approx(np.mean(expected[metric]), abs=TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_own_meteor_process_equals_the_reference_script(protocol):
    """The run's own METEOR: started before the files are read and tokenised, its paraphrase table cut afterwards
    to the phrases of the run's normalised sentences."""
    for name in sorted(FIXTURE["dense"]):
        case = FIXTURE["dense"][name]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "1 predicted videos are not in the references")
            out = evaluate_dense_captions(case["predictions"], case["references"], protocol=protocol, soda=False)
        for metric in (*CAPTION_METRICS, "Precision", "Recall"):
            np.testing.assert_allclose(_per_tiou(out, metric), case["reference_outputs"][protocol][metric], rtol=0,
                                       atol=TOLERANCE, err_msg=f"{name} {metric}")


def test_2021_meteor_is_higher_with_an_unmatched_prediction(meteor):
    # One video: "a man plays a guitar" overlaps a reference at tIoU 0.3-0.7 (9 / (10 + 1e-8) < 0.9),
    # "people are dancing in the street" overlaps none. METEOR sums statistics over the video, and its
    # normalisation splits "abc123!@#" into several reference words where 2021's word is one.
    case = FIXTURE["dense"]["matched_and_unmatched"]
    ref = case["reference_outputs"]
    at = {p: _ours(case, p, meteor)["per_tiou"] for p in ("2018", "2021")}
    for t in ("0.3", "0.5", "0.7"):
        assert at["2018"][t]["METEOR"] == pytest.approx(ref["2018"]["METEOR"][0], abs=TOLERANCE)
        assert at["2021"][t]["METEOR"] == pytest.approx(ref["2021"]["METEOR"][0], abs=TOLERANCE)
        assert at["2021"][t]["METEOR"] > at["2018"][t]["METEOR"] + 0.05  # 0.2395 against 0.1741
        for metric in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"):
            assert at["2021"][t][metric] == at["2018"][t][metric]
    assert at["2018"]["0.9"]["METEOR"] == at["2021"]["0.9"]["METEOR"] == 0.0  # only unmatched pairs


def test_2021_changes_only_meteor_even_under_the_brevity_penalty(meteor):
    # "a man runs" (matched, 3 words against 12) and "dog" (unmatched): BLEU's brevity penalty applies,
    # but the PTB tokenizer keeps "abc123!@#" as one token, as long as 2021's word: BLEU is the same.
    case = FIXTURE["dense"]["short_predictions"]
    ref = case["reference_outputs"]
    out = {p: _ours(case, p, meteor) for p in ("2018", "2021")}
    for metric in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert ref["2021"][metric] == ref["2018"][metric]
        assert _per_tiou(out["2021"], metric) == _per_tiou(out["2018"], metric)
    assert ref["2018"]["Bleu_1"][0] == pytest.approx(0.5 * np.exp(1 - 13 / 4), rel=1e-6)  # 2 of 4 words, 4 against 13
    assert out["2021"]["average"]["METEOR"] > out["2018"]["average"]["METEOR"]
    for protocol in ("2018", "2021"):
        np.testing.assert_allclose(_per_tiou(out[protocol], "METEOR"), ref[protocol]["METEOR"], rtol=0, atol=TOLERANCE)


def test_2018_cider_pools_the_videos_of_each_threshold(meteor):
    case = FIXTURE["dense"]["two_videos"]
    per_video, pooled = _ours(case, "2018", meteor), _ours(case, "2018_cider", meteor)
    # 2018: the per-threshold CIDEr is the mean of the two videos' own CIDEr-D ...
    means = [np.mean([v["CIDEr"] for v in per_video["per_video"].values()])]
    assert per_video["average"]["CIDEr"] == pytest.approx(means[0], abs=1e-12)
    # ... 2018_cider scores one corpus per threshold, with document frequencies over both videos.
    for t in per_video["per_tiou"]:
        assert abs(pooled["per_tiou"][t]["CIDEr"] - per_video["per_tiou"][t]["CIDEr"]) > 0.04
    np.testing.assert_allclose(_per_tiou(pooled, "CIDEr"), case["reference_outputs"]["2018_cider"]["CIDEr"],
                               rtol=0, atol=TOLERANCE)
    # Localisation is the same in every protocol; the pooled protocol scores no video on its own.
    assert pooled["average"]["Precision"] == per_video["average"]["Precision"]
    assert all(v["CIDEr"] is None and v["Precision"] is not None for v in pooled["per_video"].values())


def test_a_video_without_predictions(meteor):
    case = FIXTURE["dense"]["video_without_predictions"]
    only_c1 = {"predictions": {"v_c1": case["predictions"]["v_c1"]},
               "references": [{"v_c1": case["references"][0]["v_c1"]}]}
    alone = {p: _ours(only_c1, p, meteor) for p in PROTOCOLS}
    for protocol in PROTOCOLS:
        out = _ours(case, protocol, meteor)
        assert out["videos"] == {"references": 2, "evaluated": 1, "missing": 1, "unknown": 1}
        for metric in CAPTION_METRICS:
            if protocol == "2018_cider":  # adds no pairs: the scores of v_c1 alone
                assert out["average"][metric] == pytest.approx(alone[protocol]["average"][metric], abs=1e-12)
            else:  # scores 0, which halves the mean over videos
                assert out["per_video"]["v_c2"][metric] == 0.0
                assert out["average"][metric] == pytest.approx(alone[protocol]["average"][metric] / 2, abs=1e-12)
        assert out["average"]["Recall"] == pytest.approx(alone[protocol]["average"]["Recall"] / 2, abs=1e-12)


def test_2021_is_deterministic_and_its_word_never_matches():
    word = unmatched_reference("2021", ["a", "man", "runs"])
    assert word.isalpha() and word.islower() and len(word) >= 10
    assert unmatched_reference("2018") is None and unmatched_reference("2018_cider") is None
    shifted = unmatched_reference("2021", ["a", word + "s"])  # a hypothesis holding the word: the next one
    assert shifted != word and not (word + "s").startswith(shifted[:-2])
    random.seed(1)
    np.random.seed(1)
    assert unmatched_reference("2021", ["a", "man", "runs"]) == word  # no random state involved


def test_unknown_protocol_fails_before_any_work(tmp_path):
    missing = tmp_path / "no_such_file.json"  # a ValueError, not a FileNotFoundError: checked first
    with pytest.raises(ValueError, match=r"'2019'.*'2018', '2021', '2018_cider'"):
        evaluate_dense_captions(missing, missing, protocol="2019")
    with pytest.raises(ValueError, match="2019"):
        check_protocol("2019")
    assert protocol_label("2018_cider") == "densevid 2018_cider"


def test_the_result_and_its_printouts_name_the_protocol():
    case = FIXTURE["dense"]["two_videos"]
    for protocol in PROTOCOLS:
        out = evaluate_dense_captions(case["predictions"], case["references"], protocol=protocol, no_java=True)
        assert json.loads(json.dumps(out))["protocol"] == protocol
        assert f"densevid {protocol} protocol" in format_scores(out)
        assert summary_line(out).startswith(f"densevid {protocol} protocol, mean over tIoU 0.3/0.5/0.7/0.9, 2 of 2")
        assert ("SPICE" in out["not_computed"]) == (protocol == "2018_cider")
        assert ("SPICE" in format_scores(out)) == (protocol == "2018_cider")


def test_cli_protocol(tmp_path, capsys):
    case = FIXTURE["dense"]["matched_and_unmatched"]
    pred, ref, out = tmp_path / "pred.json", tmp_path / "ref.json", tmp_path / "out.json"
    pred.write_text(json.dumps({"results": case["predictions"]}))
    ref.write_text(json.dumps(case["references"][0]))
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args([str(pred), "-r", str(ref), "--no-java", "-q", "--protocol", "2021", "-o", str(out)])
    assert cli.run(args) == 0
    assert json.loads(out.read_text())["protocol"] == "2021"
    assert "densevid 2021 protocol" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args([str(pred), "-r", str(ref), "--protocol", "2019"])
    assert "invalid choice: '2019'" in capsys.readouterr().err


def test_training_argument():
    from cacmi_hf.training.arguments import DenseCaptioningTrainingArguments

    args = DenseCaptioningTrainingArguments(output_dir=None)
    assert args.eval_protocol == "2018"
    assert DenseCaptioningTrainingArguments(output_dir=None, eval_protocol="2018_cider").eval_protocol == "2018_cider"
    with pytest.raises(ValueError, match=r"--eval_protocol: .*'2021x'"):
        DenseCaptioningTrainingArguments(output_dir=None, eval_protocol="2021x")


def test_the_trainer_scores_with_its_eval_protocol():
    from types import SimpleNamespace

    from cacmi_hf.training.trainer import DenseCaptioningTrainer

    case = FIXTURE["dense"]["two_videos"]
    predictions = {vid: [{"timestamp": e["timestamp"], "caption": e["sentence"]} for e in events]
                   for vid, events in case["predictions"].items()}
    fake = SimpleNamespace(  # only what score_predictions reads
        accelerator=SimpleNamespace(is_main_process=True), _meteor=None,
        args=SimpleNamespace(eval_tious=[0.3, 0.5, 0.7, 0.9], eval_protocol="2018_cider", eval_soda=False, eval_no_java=True),
    )
    result = DenseCaptioningTrainer.score_predictions(fake, predictions, case["references"])
    assert result["protocol"] == "2018_cider"
    expected = evaluate_dense_captions(case["predictions"], case["references"], protocol="2018_cider", no_java=True)
    assert result["average"] == expected["average"]


# Paragraphs: para_evaluate.py joins a video's sentences in the prediction file's order.
PARA = FIXTURE["paragraph"]


def _paragraph(meteor, references, **kwargs) -> dict:
    dense_refs = {vid: {"timestamps": [e["timestamp"] for e in events], "sentences": [e["sentence"] for e in events]}
                  for vid, events in PARA["predictions"].items()}
    out = evaluate_dense_captions(PARA["predictions"], dense_refs, paragraph_references=references, meteor=meteor,
                                  soda=False, **kwargs)
    return out


@pytest.mark.parametrize("files", ["both_files", "first_file"])
def test_paragraph_metrics_equal_the_reference_script(files, meteor):
    references = PARA["paragraph_references"] if files == "both_files" else PARA["paragraph_references"][:1]
    out = _paragraph(meteor, references)
    expected = PARA["reference_outputs"][files]
    for metric in CAPTION_METRICS:
        assert out["paragraph"][metric] == pytest.approx(expected[metric], abs=TOLERANCE), metric
    assert out["paragraph"]["videos"] == 3 and out["paragraph"]["predicted_videos"] == 2
    assert out["paragraph_order"] == "prediction file"


def test_paragraph_sort_by_start_keeps_the_old_order(meteor):
    out = _paragraph(meteor, PARA["paragraph_references"], paragraph_sort_by_start=True)
    expected = PARA["reference_outputs"]["both_files"]
    assert out["paragraph_order"] == "start time"
    assert out["paragraph"]["Bleu_1"] == pytest.approx(expected["Bleu_1"], abs=TOLERANCE)  # same words
    for metric in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):  # another order
        assert abs(out["paragraph"][metric] - expected[metric]) > 1e-3, metric
