"""tIoU pairing and per-video caption scoring of the 2018 protocol (cacmi_hf.evaluation.captioning)."""

import numpy as np
import pytest

from cacmi_hf.evaluation.captioning import (
    CAPTION_METRICS,
    GARBAGE_REFERENCE,
    CaptionSetScorer,
    caption_pairs,
    caption_scores,
)
from cacmi_hf.evaluation import captioning
from cacmi_hf.evaluation.io import load_predictions, load_references
from cacmi_hf.evaluation.meteor import aggregate_statistics, parse_statistics
from cacmi_hf.evaluation.ngram_metrics import rouge_l

REFS = load_references([
    {"v1": {"timestamps": [[0, 10], [5, 10]], "sentences": ["a", "b"]}},
    {"v1": {"timestamps": [[0, 9]], "sentences": ["c"]}, "v2": {"timestamps": [[0, 5]], "sentences": ["d"]}},
])
PREDS = load_predictions({"v1": [{"timestamp": [0, 10], "sentence": "x"}, {"timestamp": [50, 60], "sentence": "y"}]})


def test_pairs_hand_worked():
    refs = [r.videos["v1"] for r in REFS]
    at_03, at_07, at_09 = caption_pairs(PREDS["v1"], refs, [0.3, 0.7, 0.9])
    # tIoU of "x" with a, b, c: ~1, 0.5, 0.9 (all minus the 1e-8 union term); "y" overlaps nothing.
    assert at_03 == [("x", "a"), ("x", "b"), ("x", "c"), ("y", GARBAGE_REFERENCE)]
    assert at_07 == [("x", "a"), ("x", "c"), ("y", GARBAGE_REFERENCE)]
    assert at_09 == [("x", "a"), ("y", GARBAGE_REFERENCE)]  # 9 / (10 + 1e-8) < 0.9


def test_pairing_is_inclusive_at_the_threshold():
    refs = [r.videos["v1"] for r in REFS]
    exact = 9 / (10 + 1e-8)  # tIoU of x with c
    assert ("x", "c") in caption_pairs(PREDS["v1"], refs, [exact])[0]


def test_no_predictions_give_empty_sets():
    assert caption_pairs(None, [REFS[1].videos["v2"]], [0.3, 0.5]) == [[], []]
    assert caption_pairs(load_predictions({"v": []})["v"], [REFS[1].videos["v2"]], [0.3]) == [[]]


def test_scorer_without_meteor_scores_sets_and_zeroes_empty_ones():
    scorer = CaptionSetScorer(meteor=None)
    sets = [[("a man runs", "a man runs")], [], [("a man", "a dog"), ("a man", GARBAGE_REFERENCE)]]
    scores = scorer.score_sets(sets)
    assert scores.shape == (3, len(CAPTION_METRICS))
    assert np.isnan(scores[:, 4]).all()  # METEOR needs Java
    rouge = CAPTION_METRICS.index("ROUGE_L")
    assert scores[0, rouge] == pytest.approx(1.0)
    np.testing.assert_array_equal(np.delete(scores[1], 4), 0.0)
    assert scores[2, rouge] == pytest.approx((rouge_l("a man", ["a dog"]) + 0.0) / 2)
    assert scores[0, 0] == pytest.approx(1.0)  # BLEU-1 of an identical pair


def test_caption_scores_layout_is_thresholds_by_videos():
    tokens = {s: s for s in ["x", "y", "a", "b", "c", "d", GARBAGE_REFERENCE]}
    scores = caption_scores(PREDS, REFS, ["v1", "v2"], [0.3, 0.9], tokens, CaptionSetScorer(None))
    assert scores.shape == (2, 2, len(CAPTION_METRICS))
    np.testing.assert_array_equal(np.delete(scores[:, 1], 4, axis=1), 0.0)  # v2 has no predictions
    assert np.all(scores[:, 0, 0] < 1e-12)  # "x"/"y" share no word: only BLEU's 1e-15 smoothing


# Real METEOR statistics lines (the jar's answers for two caption pairs).
STATISTICS = {
    "a>b": "5.0 6.0 2.0 3.0 1.0 1.0 2.0 2.0 1.0 1.0 0.0 0.0 0.0 0.0 0.0 0.0 1.0 1.0 0.0 0.0 2.0 5.0 5.0",
    "c>d": "3.0 3.0 1.0 1.0 0.0 0.0 1.0 1.0 1.0 1.0 0.0 0.0 1.0 1.0 0.0 0.0 0.0 0.0 0.0 0.0 1.0 3.0 3.0",
}


def _meteor_of(*pairs):
    """Aggregate METEOR of the named pairs' statistics, computed directly."""
    return aggregate_statistics(parse_statistics([STATISTICS[p] for p in pairs]), [len(pairs)])[0]


class RecordingMeteor:
    """Java-free stand-in recording what a scorer asks METEOR for."""

    def __init__(self):
        self.requests = []

    def statistics_array(self, requests, progress=False):
        self.requests.extend(requests)
        return parse_statistics([STATISTICS[f"{h}>{r[0]}"] for h, r in requests])


def test_meteor_is_asked_once_per_distinct_pair_and_aggregated_per_set():
    meteor = RecordingMeteor()
    scores = CaptionSetScorer(meteor).score_sets([[("a", "b"), ("a", "b"), ("c", "d")], [], [("a", "b")]])
    assert meteor.requests == [("a", ["b"]), ("c", ["d"])]  # distinct pairs only
    # Duplicates stay in their set: its statistics are summed with "a>b" twice.
    np.testing.assert_allclose(scores[:, 4], [_meteor_of("a>b", "a>b", "c>d"), 0.0, _meteor_of("a>b")], rtol=1e-15)
    assert _meteor_of("a>b", "a>b", "c>d") != pytest.approx(_meteor_of("a>b", "c>d"))


def test_repeated_sets_are_scored_once_and_keep_their_place(monkeypatch):
    sizes = []

    def recording(rows, group_sizes):
        sizes.append(list(group_sizes))
        return aggregate_statistics(rows, group_sizes)

    monkeypatch.setattr(captioning, "aggregate_statistics", recording)
    first, second = [("a", "b"), ("c", "d")], [("c", "d")]
    sets = [first, second, [], list(first), second, []]
    scores = CaptionSetScorer(RecordingMeteor()).score_sets(sets)
    assert sizes == [[2, 1]]  # one METEOR aggregate per distinct non-empty set
    alone = np.concatenate([CaptionSetScorer(RecordingMeteor()).score_sets([s]) for s in sets])
    np.testing.assert_array_equal(scores, alone)  # same rows, in the given order
    np.testing.assert_array_equal(scores[0], scores[3])
    assert not np.array_equal(scores[0], scores[1])


class FailingMeteor(RecordingMeteor):
    def statistics_array(self, requests, progress=False):
        raise RuntimeError("METEOR (Java) stopped while METEOR statistics (exit code 1): boom")


def test_a_meteor_failure_in_its_worker_thread_reaches_the_caller():
    # METEOR is fed from a worker thread while the n-gram metrics run; its error must not be lost there.
    with pytest.raises(RuntimeError, match="METEOR \\(Java\\) stopped"):
        CaptionSetScorer(FailingMeteor()).score_sets([[("a", "b")]])
