"""The persistent, pipelined METEOR 1.5 process (cacmi_hf.evaluation.meteor).

Starting METEOR costs tens of CPU-seconds (paraphrase table), so these tests share one process
with the rest of the session and are marked slow.
"""

import shutil

import pytest

from cacmi_hf.evaluation.meteor import Meteor, shared_meteor

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed")]

HYPOTHESES = ["a man runs on the street", "a dog sits on grass", "a man runs", ""]
REFERENCES = [["a man is running down the street"], ["the dog sits", "a dog is sitting on the grass"],
              ["abc123!@#"], ["a woman plays a guitar"]]
# pycocoevalcap's Meteor().compute_score on the same four (hypothesis, references) items.
COCO_AGGREGATE = 0.2012283761543656
COCO_SEGMENTS = [0.30035924950581844, 0.41426071704089296, 0.0, 0.0]


@pytest.fixture(scope="module")
def meteor():
    return shared_meteor()


def test_equals_pycocoevalcap(meteor):
    stats = meteor.statistics(list(zip(HYPOTHESES, REFERENCES)))
    assert meteor.segment_scores(stats) == pytest.approx(COCO_SEGMENTS, abs=1e-12)
    assert meteor.aggregate([stats]) == pytest.approx([COCO_AGGREGATE], abs=1e-12)
    # Groups are aggregated independently inside one pipelined exchange; an empty group scores 0.
    assert meteor.aggregate([stats[:1], [], stats]) == pytest.approx([COCO_SEGMENTS[0], 0.0, COCO_AGGREGATE], abs=1e-12)


def test_identical_text_scores_one_and_statistics_are_cached(meteor):
    assert meteor.score("a man is running", ["a man is running"]) == pytest.approx(1.0)
    before = len(meteor._stats)
    meteor.statistics([("a man is running", ["a man is running"])] * 3)
    assert len(meteor._stats) == before


def test_many_requests_stream_through_one_process(meteor):
    pairs = [(f"a man runs {i} times", [f"a man runs {i % 7} times"]) for i in range(3000)]
    scores = meteor.segment_scores(meteor.statistics(pairs))
    assert len(scores) == 3000
    assert scores[0] == pytest.approx(1.0) and scores[6] == pytest.approx(1.0)  # identical text
    assert scores[7] < 1.0 and scores[7] == pytest.approx(scores[8])  # "7" vs "0", "8" vs "1"


def test_separator_in_hypothesis_is_removed_like_coco_caption(meteor):
    assert meteor.score("a man ||| runs", ["a man runs"]) == pytest.approx(meteor.score("a man runs", ["a man runs"]))


def test_dead_process_gives_a_clear_error():
    dying = Meteor()
    dying._process.kill()
    dying._process.wait()
    with pytest.raises(RuntimeError, match="METEOR .*stopped"):
        dying.statistics([("a", ["b"])])
