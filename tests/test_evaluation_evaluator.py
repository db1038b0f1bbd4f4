"""`evaluate_dense_captions`: protocol averaging, robustness, and equality with the reference toolkit."""

import json
import shutil

import numpy as np
import pytest

from cacmi_hf.evaluation import (
    GARBAGE_REFERENCE,
    JavaNotFoundError,
    evaluate_dense_captions,
    format_scores,
    shared_meteor,
)
from cacmi_hf.evaluation.localization import f1_score

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed")

REFERENCES = {
    "v1": {"timestamps": [[0, 10], [20, 30]], "sentences": ["a man runs", "a dog sits"]},
    "v2": {"timestamps": [[0, 5]], "sentences": ["the end"]},
}


def _pred(*events):
    return [{"timestamp": list(t), "sentence": s} for t, s in events]


def test_per_video_then_per_threshold_averaging_without_java():
    preds = {"v1": _pred(((0, 10), "a man runs"), ((40, 50), "a cat"))}  # v2: no predictions
    out = evaluate_dense_captions(preds, REFERENCES, no_java=True)
    # v1: the exact pair scores ROUGE-L 1, "a cat" meets the "abc123!@#" reference (0) -> 0.5;
    # v2 scores 0; mean over the 2 videos = 0.25 at every threshold.
    for row in out["per_tiou"].values():
        assert row["ROUGE_L"] == pytest.approx(0.25)
        assert row["METEOR"] is None
        assert row["Precision"] == pytest.approx(0.25)  # v1 1/2, v2 0
        assert row["Recall"] == pytest.approx(0.25)  # v1 1/2, v2 0
    assert out["average"]["ROUGE_L"] == pytest.approx(0.25)
    assert out["videos"] == {"references": 2, "evaluated": 1, "missing": 1, "unknown": 0}
    assert out["SODA_c"] is None and out["comparable_to_papers"] is False
    json.dumps(out)  # serialisable


def test_f1_comes_from_the_averaged_precision_and_recall():
    # tIoU with the references: ~1, 0.7, 0.7, 0.6 (each minus the 1e-8 union term).
    preds = {"v1": _pred(((0, 10), "a"), ((0, 7), "b"), ((20, 27), "c"), ((20, 26), "d"))}
    out = evaluate_dense_captions(preds, {"v1": REFERENCES["v1"]}, tious=[0.5, 0.8], no_java=True)
    low, high = out["per_tiou"]["0.5"], out["per_tiou"]["0.8"]
    assert (low["Precision"], low["Recall"], low["F1"]) == (1.0, 1.0, 1.0)
    assert (high["Precision"], high["Recall"]) == (0.25, 0.5) and high["F1"] == pytest.approx(1 / 3)
    avg = out["average"]
    assert (avg["Precision"], avg["Recall"]) == (0.625, 0.75)
    assert avg["F1"] == pytest.approx(15 / 22)  # from the averaged P and R, not the mean F1 (2/3)


def test_unmatched_prediction_meets_the_garbage_reference():
    out = evaluate_dense_captions({"v2": _pred(((30, 40), GARBAGE_REFERENCE))}, {"v2": REFERENCES["v2"]}, no_java=True)
    # Scored against "abc123!@#" itself, the caption gets full ROUGE-L although it overlaps nothing.
    assert out["average"]["ROUGE_L"] == pytest.approx(1.0)
    assert out["average"]["Precision"] == 0.0


def test_max_proposals_keeps_the_first_events():
    preds = {"v2": _pred(((20, 30), "x"), ((0, 5), "the end"))}
    full = evaluate_dense_captions(preds, {"v2": REFERENCES["v2"]}, no_java=True)
    capped = evaluate_dense_captions(preds, {"v2": REFERENCES["v2"]}, max_proposals_per_video=1, no_java=True)
    assert full["average"]["Precision"] == 0.5 and capped["average"]["Precision"] == 0.0


def test_unknown_videos_are_ignored_with_a_warning_and_a_count():
    preds = {"v1": _pred(((0, 10), "a man runs")), "v_unknown": _pred(((0, 1), "x"))}
    with pytest.warns(UserWarning, match="1 predicted videos are not in the references"):
        out = evaluate_dense_captions(preds, REFERENCES, no_java=True)
    assert out["videos"]["unknown"] == 1 and out["videos"]["evaluated"] == 1


def test_no_matching_video_id_is_an_error_that_mentions_the_prefix():
    with pytest.raises(ValueError, match="start with 'v_'"):
        evaluate_dense_captions({"1": _pred(((0, 1), "x"))}, REFERENCES, no_java=True)


def test_empty_predictions_score_zero_everywhere():
    out = evaluate_dense_captions({"results": {}}, REFERENCES, no_java=True)
    assert out["videos"]["evaluated"] == 0
    assert all(v in (0.0, None) for v in out["average"].values())


def test_empty_sentence_and_non_ascii_text_are_scored_not_fatal():
    preds = {"v1": _pred(((0, 10), ""), ((20, 30), "a dög sits"))}
    out = evaluate_dense_captions(preds, REFERENCES, no_java=True)
    assert 0.0 < out["average"]["Bleu_1"] < 1.0 and out["average"]["Precision"] == 0.5


@pytest.mark.parametrize("tious, message", [([], "empty"), ([1.5], "outside"), ([float("nan")], "outside")])
def test_bad_thresholds(tious, message):
    with pytest.raises(ValueError, match=message):
        evaluate_dense_captions({"v1": []}, REFERENCES, tious=tious, no_java=True)


def test_missing_java_is_reported_before_any_work():
    with pytest.raises(JavaNotFoundError, match="default-jre-headless"):
        evaluate_dense_captions({"v1": []}, REFERENCES, java="no-such-java-binary")


def test_per_video_output_and_table():
    out = evaluate_dense_captions({"v1": _pred(((0, 10), "a man runs"))}, REFERENCES, no_java=True, per_video=True)
    assert out["per_video"]["v1"]["ROUGE_L"] == pytest.approx(1.0) and out["average"]["ROUGE_L"] == pytest.approx(0.5)
    assert out["per_video"]["v2"]["Precision"] == 0.0
    table = format_scores(out)
    assert "not comparable" in table and "mean" in table and "ROUGE_L" in table
    assert "1 evaluated, 1 without predictions" in table


# --- with Java: METEOR, SODA_c, and the real annotation files --------------------------------------

# Reference toolkit (densevid_eval 2018 as vendored by PDVC, SODA, PDVC's paragraph script) on the
# first 100 videos of val_1.json: val_2 events (start-sorted) as predictions, val_1 + val_2 as
# references, para_val_1 + para_val_2 as paragraph references.
TOOLKIT_SUB100 = {
    "Bleu_1": [0.5397788167117212, 0.6837623464208058, 0.8299754386758385, 0.9455904408675181],
    "Bleu_2": [0.49363246670391525, 0.6509492613856038, 0.8078841340267311, 0.9379303027808539],
    "Bleu_3": [0.47199649145272515, 0.6355151283429801, 0.7970735027434881, 0.9337629036015604],
    "Bleu_4": [0.4601670018240487, 0.6271459279267602, 0.7911155091372046, 0.9313749922151412],
    "METEOR": [0.34306051665819753, 0.49850094854744353, 0.6862813046657062, 0.891651073206945],
    "ROUGE_L": [0.5944241637049257, 0.7296324532757568, 0.8494572342580743, 0.9490549921756716],
    "CIDEr": [4.985677277710989, 6.616731877966174, 8.05073105355392, 9.317626853782462],
    "Recall": [1.0, 1.0, 1.0, 1.0],
    "Precision": [1.0, 1.0, 1.0, 1.0],
}
TOOLKIT_SUB100_SODA = [[0.057423225718875495, 0.06108913047436751, 0.057066940595753485],
                       [0.9999999991250782, 0.9999999991250782, 0.9999999991250782]]
TOOLKIT_SUB100_PARA = {"Bleu_1": 0.9999999999992403, "Bleu_2": 0.9996127783003047, "Bleu_3": 0.9992153091272868,
                       "Bleu_4": 0.9988071238603444, "METEOR": 0.8453017754087734, "ROUGE_L": 0.996,
                       "CIDEr": 5.204903497151225}


def _subset(shared_data, count):
    anet = shared_data / "activitynet"
    val_1, val_2 = (json.loads((anet / f"val_{k}.json").read_text()) for k in (1, 2))
    keys = list(val_1)[:count]
    preds = {k: [{"timestamp": t, "sentence": s} for t, s in sorted(zip(val_2[k]["timestamps"], val_2[k]["sentences"]),
                                                                    key=lambda e: e[0][0])]
             for k in keys if k in val_2}
    refs = [{k: v[k] for k in keys if k in v} for v in (val_1, val_2)]
    paras = [{k: p[k] for k in keys if k in p}
             for p in (json.loads((anet / f"para_val_{k}.json").read_text()) for k in (1, 2))]
    return preds, refs, paras, val_1


@needs_java
@pytest.mark.slow
def test_equals_reference_toolkit_on_real_files(shared_data):
    preds, refs, paras, _ = _subset(shared_data, 100)
    out = evaluate_dense_captions(preds, refs, paragraph_references=paras, meteor=shared_meteor())
    for metric, values in TOOLKIT_SUB100.items():
        ours = [out["per_tiou"][k][metric] for k in ("0.3", "0.5", "0.7", "0.9")]
        assert ours == pytest.approx(values, abs=1e-9), metric
    for ours, (p, r, f) in zip(out["SODA_c_per_reference"].values(), TOOLKIT_SUB100_SODA):
        assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx((p, r, f), abs=1e-9)
    assert out["SODA_c"] == pytest.approx(np.mean([s[2] for s in TOOLKIT_SUB100_SODA]), abs=1e-9)
    for metric, value in TOOLKIT_SUB100_PARA.items():
        assert out["paragraph"][metric] == pytest.approx(value, abs=1e-9), metric
    assert out["videos"] == {"references": 100, "evaluated": 100, "missing": 0, "unknown": 0}


@needs_java
@pytest.mark.slow
def test_ground_truth_against_itself(shared_data):
    _, _, _, val_1 = _subset(shared_data, 0)
    keys = list(val_1)[100:160]
    ref = {k: val_1[k] for k in keys}
    preds = {k: [{"timestamp": t, "sentence": s} for t, s in zip(v["timestamps"], v["sentences"])] for k, v in ref.items()}
    out = evaluate_dense_captions(preds, ref, meteor=shared_meteor())
    assert out["average"]["Precision"] == 1.0 and out["average"]["Recall"] == 1.0
    assert out["per_tiou"]["0.9"]["METEOR"] > 0.9
    # Each reference matches itself (tIoU 1 - eps, METEOR of identical text ~1); SODA_c is bounded by 1.
    assert 0.95 < out["SODA_c"] <= 1.0


@needs_java
@pytest.mark.slow
def test_awkward_text_runs_through_java():
    refs = {"v1": {"timestamps": [[0, 10], [10, 20], [20, 30]], "sentences": ["...", "Ein Mann läuft ||| schnell", ""]}}
    preds = {"v1": _pred(((0, 10), ""), ((10, 20), "ein mann lauft | schnell"), ((20, 30), "!!!"), ((50, 60), "x\ny\rz"))}
    out = evaluate_dense_captions(preds, refs, meteor=shared_meteor(), per_video=True)
    assert out["average"]["Precision"] == 0.75 and out["average"]["Recall"] == 1.0
    assert 0.0 < out["average"]["METEOR"] < 1.0 and 0.0 <= out["SODA_c"] < 1.0
    json.dumps(out)
