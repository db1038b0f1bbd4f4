"""The persistent, pipelined METEOR 1.5 process (cacmi_hf.evaluation.meteor).

Starting METEOR costs tens of CPU-seconds (paraphrase table), so these tests share one process
with the rest of the session and are marked slow.
"""

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from cacmi_hf.evaluation.meteor import Meteor, meteor_from_statistics, parse_statistics, shared_meteor

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


@pytest.fixture(scope="module")
def jar_meteor():
    """The jar's own -stdio loop (it also answers EVAL lines); no sentence needs its paraphrases."""
    with Meteor(texts=["a"], driver="jar") as process:
        yield process


def test_equals_pycocoevalcap(meteor):
    stats = meteor.statistics(list(zip(HYPOTHESES, REFERENCES)))
    np.testing.assert_array_equal(meteor.statistics_array(list(zip(HYPOTHESES, REFERENCES))), parse_statistics(stats))
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


def _java_eval(meteor, groups):
    """The jar's own EVAL answers: (per-segment scores, aggregate of each group)."""
    answers = iter(meteor._exchange(["EVAL ||| " + " ||| ".join(g) for g in groups],
                                    [len(g) + 1 for g in groups], "EVAL", False))
    segments, aggregates = [], []
    for group in groups:
        segments += [float(next(answers)) for _ in group]
        aggregates.append(float(next(answers)))
    return segments, aggregates


def test_scores_from_statistics_equal_the_jar(meteor, jar_meteor):
    rng = random.Random(0)
    words = "a man woman dog is are runs running plays playing the ball on in with guitar".split()
    pairs = [(" ".join(rng.choice(words) for _ in range(rng.randint(0, 9))),
              [" ".join(rng.choice(words) for _ in range(rng.randint(1, 9)))]) for _ in range(400)]
    pairs += [("a man runs", ["a man runs"]), ("a man runs", ["abc123!@#"]), ("", ["a dog"]),
              ("a man is running", ["the man runs"])]  # whole match, no match, empty, stem match
    stats = meteor.statistics(pairs)
    groups, start = [], 0
    while start < len(stats):
        size = rng.randint(1, 9)
        groups.append(stats[start:start + size])
        start += size
    groups.append([stats[-4]] * 3 + [stats[-1]])  # whole matches add no chunk to a sum
    java_segments, java_aggregates = _java_eval(jar_meteor, groups)
    ours = meteor_from_statistics(parse_statistics([s for g in groups for s in g]))
    assert np.abs(ours - np.array(java_segments)).max() <= 1e-15  # Math.pow may differ by one ulp
    assert np.abs(np.array(meteor.aggregate(groups)) - np.array(java_aggregates)).max() <= 1e-15
    assert meteor.segment_scores(stats[-4:]) == pytest.approx([1.0, 0.0, 0.0, java_segments[-1]], abs=1e-15)


def test_statistics_lines_are_checked():
    with pytest.raises(ValueError, match="23 numbers"):
        parse_statistics(["1.0 2.0"])


def test_prefetch_gives_the_same_statistics(meteor):
    first = [(f"a dog jumps {i} times", [f"a dog jumps {i % 5} times"]) for i in range(200)]
    second = [("a red ball rolls", ["a ball rolls"]), ("a cat sleeps", ["a cat is sleeping"])]
    meteor.prefetch([first, second])
    later = meteor.statistics(second)  # returns once its own group is done
    direct = meteor._exchange([f"SCORE ||| {refs[0]} ||| {hyp}" for hyp, refs in second + first[:7]], [1] * 9, "SCORE", False)
    assert later + meteor.statistics(first[:7]) == direct
    assert len(meteor.statistics(first)) == 200


def test_prefetch_failure_is_raised_by_the_next_request():
    dying = Meteor()
    dying._process.kill()
    dying._process.wait()
    dying.prefetch([[("a", ["b"])]])
    with pytest.raises(RuntimeError, match="METEOR .*stopped"):
        dying.statistics([("c", ["d"])])
