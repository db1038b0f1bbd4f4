"""SODA_c: order-preserving alignment of IoU x METEOR (cacmi_hf.evaluation.soda)."""

import itertools

import numpy as np
import pytest

from cacmi_hf.evaluation.io import ReferenceSet, load_predictions, load_references
from cacmi_hf.evaluation.localization import UNION_EPS
from cacmi_hf.evaluation.soda import soda_alignment_score, soda_c, soda_prf


class ExactMatchMeteor:
    """Java-free stand-in for METEOR: a segment scores 1 when hypothesis equals reference, else 0."""

    def __init__(self):
        self.requests = []

    def statistics_array(self, requests, progress=False):
        self.requests.extend(requests)
        # One-word sentences: one exact content match, in one chunk (METEOR 1), or no match (0).
        rows = np.zeros((len(requests), 23))
        rows[:, :2] = 1.0
        rows[:, [4, 5, 20, 21, 22]] = np.array([[hyp == refs[0]] for hyp, refs in requests], dtype=float)
        return rows


def _brute_force(scores):
    """Best order-preserving one-to-one matching by enumerating increasing index pairs."""
    rows, cols = scores.shape
    best = 0.0
    for k in range(1, min(rows, cols) + 1):
        for r in itertools.combinations(range(rows), k):
            for c in itertools.combinations(range(cols), k):
                best = max(best, sum(scores[i, j] for i, j in zip(r, c)))
    return best


def test_alignment_hand_worked():
    assert soda_alignment_score(np.eye(3)) == 3.0
    # The crossing matching (0->1, 1->0) would give 2; order preservation allows only one of them.
    assert soda_alignment_score(np.array([[0.0, 1.0], [1.0, 0.0]])) == 1.0
    assert soda_alignment_score(np.array([[0.5, 0.9, 0.0], [0.0, 0.3, 0.8]])) == pytest.approx(1.7)
    assert soda_alignment_score(np.zeros((0, 3))) == 0.0


def test_alignment_equals_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(30):
        scores = rng.random((rng.integers(1, 5), rng.integers(1, 5))) * (rng.random() > 0.1)
        assert soda_alignment_score(scores) == pytest.approx(_brute_force(scores), abs=1e-12)


def test_prf():
    assert soda_prf(1.0, 2, 4) == pytest.approx((0.5, 0.25, 1 / 3))
    assert soda_prf(0.0, 2, 4) == (0.0, 0.0, 0.0)
    assert soda_prf(0.0, 0, 4) == (0.0, 0.0, 0.0)


def _reference():
    return load_references({"v1": {"timestamps": [[0, 10], [10, 20], [20, 30]], "sentences": ["a", "b", "c"]}})[0]


def _tokens(*sentences):
    return {s: s for s in sentences}


def test_ground_truth_against_itself_is_near_one():
    preds = {"v1": _reference().videos["v1"]}
    out = soda_c(preds, _reference(), _tokens("a", "b", "c"), ExactMatchMeteor())
    near_one = 10 / (10 + UNION_EPS)
    assert out["f1"] == pytest.approx(near_one, abs=1e-15) and out["videos"] == 1
    assert out["per_video"] == {"v1": pytest.approx(near_one, abs=1e-15)}


def test_wrong_order_scores_lower():
    # Every prediction spans the whole video, so tIoU is 1/3 for all pairs; only order differs.
    def run(captions):
        preds = load_predictions({"v1": [{"timestamp": [0, 30], "sentence": c} for c in captions]})
        return soda_c(preds, _reference(), _tokens("a", "b", "c"), ExactMatchMeteor())["f1"]

    in_order, reversed_order = run(["a", "b", "c"]), run(["c", "b", "a"])
    third = 10 / (30 + UNION_EPS)
    assert in_order == pytest.approx(3 * third / 3)  # total 3 * (1/3) over 3 predictions and 3 references
    assert reversed_order == pytest.approx(third / 3)  # only "b" can be matched in order
    assert reversed_order < in_order


def test_events_are_aligned_in_start_time_order_and_files_counted_separately():
    # Given out of time order, the predictions are sorted before alignment: a perfect set still scores ~1.
    preds = load_predictions({"v1": [{"timestamp": [20, 30], "sentence": "c"}, {"timestamp": [0, 10], "sentence": "a"},
                                     {"timestamp": [10, 20], "sentence": "b"}], "v_other": []})
    meteor = ExactMatchMeteor()
    out = soda_c(preds, _reference(), _tokens("a", "b", "c"), meteor)
    assert out["f1"] == pytest.approx(1.0, abs=1e-8)
    # Only time-overlapping pairs reach METEOR (3 diagonal pairs; the touching ones have tIoU 0).
    assert len(meteor.requests) == 3
    # The reference caption is METEOR's hypothesis, the prediction its reference (toolkit convention).
    assert all(hyp == refs[0] for hyp, refs in meteor.requests)


def test_videos_outside_the_reference_are_ignored_and_empty_predictions_score_zero():
    ref = ReferenceSet("r", {**_reference().videos, "v2": _reference().videos["v1"]})
    preds = {"v1": _reference().videos["v1"], **load_predictions({"v2": [], "v9": [{"timestamp": [0, 1], "sentence": "a"}]})}
    out = soda_c(preds, ref, _tokens("a", "b", "c"), ExactMatchMeteor())
    assert out["videos"] == 2 and out["per_video"]["v2"] == 0.0
    assert out["f1"] == pytest.approx(0.5, abs=1e-8)
