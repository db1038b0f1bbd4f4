"""BLEU, ROUGE-L and CIDEr-D equal pycocoevalcap's (cacmi_hf.evaluation.ngram_metrics)."""

import math
import random

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from cacmi_hf.evaluation.ngram_metrics import (
    _lcs_length,
    bleu_counts,
    cider_d,
    corpus_bleu,
    ngram_counts,
    ngram_set_scores,
    ngram_table,
    rouge_l,
)

WORDS = "a man the woman is are dog runs running ball plays with on in and red".split()


def _sentence(rng, low=0, high=12):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def _random_sets(seed, n_sets=25):
    rng = random.Random(seed)
    sets = []
    for _ in range(n_sets):
        size = rng.randint(1, 6)
        gts = {i: [_sentence(rng, 1) for _ in range(rng.randint(1, 3))] for i in range(size)}
        res = {i: [_sentence(rng)] for i in range(size)}
        sets.append((gts, res))
    return sets


@pytest.mark.parametrize("seed", [0, 1])
def test_corpus_bleu_equals_pycocoevalcap(seed, capsys):
    for gts, res in _random_sets(seed):
        expected, _ = Bleu(4).compute_score(gts, res, verbose=0)
        ours = corpus_bleu([bleu_counts(res[i][0], gts[i]) for i in gts])
        assert ours == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_bleu_hand_worked():
    # hypothesis "a b c d" vs reference "a b c e": 3/4 unigrams, 2/3 bigrams, 1/2 trigrams, 0/1 4-grams.
    counts = bleu_counts("a b c d", ["a b c e"])
    assert counts == (4, 4, (4, 3, 2, 1), (3, 2, 1, 0))
    scores = corpus_bleu([counts])
    assert scores[0] == pytest.approx(3 / 4)
    assert scores[1] == pytest.approx(math.sqrt(3 / 4 * 2 / 3))
    assert scores[3] < 1e-3  # no 4-gram match: only the 1e-15 smoothing remains
    # brevity penalty: "a b" vs "a b c d" -> exp(1 - 4/2)
    assert corpus_bleu([bleu_counts("a b", ["a b c d"])])[0] == pytest.approx(math.exp(-1))
    # "closest" reference length picks 3 (|3-3| = 0) over 6
    assert bleu_counts("a b c", ["x y z w v u", "a b d"]).reflen == 3


@pytest.mark.parametrize("seed", [2, 3])
def test_rouge_l_equals_pycocoevalcap(seed):
    rouge = Rouge()
    for gts, res in _random_sets(seed):
        for i in gts:
            assert rouge_l(res[i][0], gts[i]) == pytest.approx(rouge.calc_score(res[i], gts[i]), rel=1e-12)


def _lcs_table(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def test_bit_parallel_lcs_equals_the_dynamic_programme():
    rng = random.Random(6)
    for _ in range(3000):
        vocabulary = WORDS[: rng.randint(1, 6)]  # few words: many repeats, the hard case for the bit trick
        a = [rng.choice(vocabulary) for _ in range(rng.randint(0, 90))]
        b = [rng.choice(vocabulary) for _ in range(rng.randint(0, 90))]
        assert _lcs_length(a, b) == _lcs_table(a, b) == _lcs_length(b, a)
    assert _lcs_length("a b c d".split(), "a c d e".split()) == 3
    assert _lcs_length(["", "a"], ["", "a"]) == 2  # empty tokens (double spaces) are words too


def test_bleu_counts_from_precomputed_ngram_counts():
    hyp, refs = "a man runs on the street", ["a man is running", "the man runs on a street"]
    given = (ngram_counts(hyp), [ngram_counts(r) for r in refs])
    assert bleu_counts(hyp, refs, counts=given) == bleu_counts(hyp, refs)


def test_rouge_l_hand_worked():
    # LCS("a b c d", "a c d e") = 3, P = R = 3/4 -> F_beta = 3/4
    assert rouge_l("a b c d", ["a c d e"]) == pytest.approx(0.75)
    assert rouge_l("x", ["a b"]) == 0.0


@pytest.mark.parametrize("seed", [4, 5])
def test_cider_d_equals_pycocoevalcap(seed):
    for gts, res in _random_sets(seed):
        expected, expected_each = Cider().compute_score(gts, res)
        ours, ours_each = cider_d([(ngram_counts(res[i][0]), [ngram_counts(r) for r in gts[i]]) for i in gts])
        assert ours == pytest.approx(expected, rel=1e-10, abs=1e-12)
        assert ours_each == pytest.approx(list(expected_each), rel=1e-10, abs=1e-12)


def test_cider_d_document_frequency_is_per_set():
    # One pair alone: log(1 set) = 0 weights every n-gram by 0, so the score is 0 even when identical.
    assert cider_d([(ngram_counts("a man runs"), [ngram_counts("a man runs")])]) == (0.0, [0.0])
    two = cider_d([(ngram_counts("a man runs"), [ngram_counts("a man runs")]),
                   (ngram_counts("a dog sits"), [ngram_counts("a dog sits")])])
    assert two[0] > 0 and cider_d([]) == (0.0, [])


def test_ngram_counts():
    counts = ngram_counts("a b a")
    assert counts[("a",)] == 2 and counts[("a", "b")] == 1 and counts[("a", "b", "a")] == 1
    assert sum(counts.values()) == 3 + 2 + 1


def _per_set_reference(sets):
    """BLEU-1..4 and CIDEr-D of each set with the per-pair Python definitions (0 for an empty set)."""
    rows = []
    for items in sets:
        if not items:
            rows.append([0.0] * 5)
            continue
        bleu = corpus_bleu([bleu_counts(h, refs) for h, refs in items])
        cider = cider_d([(ngram_counts(h), [ngram_counts(r) for r in refs]) for h, refs in items])[0]
        rows.append([*bleu, cider])
    return np.array(rows)


@pytest.mark.parametrize("max_refs", [1, 3])
def test_ngram_set_scores_equal_per_set_definitions(max_refs):
    rng = random.Random(7 + max_refs)
    sets = [[(_sentence(rng), [_sentence(rng, 1) for _ in range(rng.randint(1, max_refs))])
             for _ in range(rng.randint(0, 7))] for _ in range(200)]
    sets[3] = [("", ["a man"])]  # an empty hypothesis: CIDEr 0, BLEU from the smoothing terms only
    sets[4] = [("a man runs", ["a man runs"])]  # one pair: every idf is log(1) = 0
    sets[5] = [("a b a b a", ["a b", "a a a b x y"])]  # clipping by the most frequent reference use
    ours = ngram_set_scores(sets)
    assert ours.shape == (200, 5)
    np.testing.assert_allclose(ours, _per_set_reference(sets), rtol=1e-12, atol=1e-15)
    assert ours[3, 4] == ours[4, 4] == 0.0 and sum(1 for s in sets if not s) > 0
    assert (ours[[i for i, s in enumerate(sets) if not s]] == 0.0).all()
    assert ngram_set_scores([]).shape == (0, 5) and ngram_set_scores([[]]).tolist() == [[0.0] * 5]


@pytest.mark.parametrize("seed", [0, 1])
def test_ngram_set_scores_equal_pycocoevalcap(seed, capsys):
    pairs = _random_sets(seed)
    ours = ngram_set_scores([[(res[i][0], gts[i]) for i in gts] for gts, res in pairs])
    for (gts, res), row in zip(pairs, ours):
        assert row[:4].tolist() == pytest.approx(Bleu(4).compute_score(gts, res, verbose=0)[0], rel=1e-12, abs=1e-15)
        assert row[4] == pytest.approx(Cider().compute_score(gts, res)[0], rel=1e-12, abs=1e-15)


def test_ngram_table_counts_every_ngram_once_per_sentence():
    sentences = ["a b a b", "", "b", "a b a b"]
    table = ngram_table(sentences)
    assert table.lengths.tolist() == [4, 0, 1, 4]
    for k, sentence in enumerate(sentences):
        rows = slice(table.row_starts[k], table.row_ends[k])
        assert sorted(table.tfs[rows].tolist()) == sorted(ngram_counts(sentence).values())
        assert sorted((table.orders[rows] + 1).tolist()) == sorted(len(g) for g in ngram_counts(sentence))
    first, last = slice(table.row_starts[0], table.row_ends[0]), slice(table.row_starts[3], table.row_ends[3])
    assert table.grams[first].tolist() == table.grams[last].tolist()  # same sentence, same gram ids
    assert len(set(table.grams[first].tolist())) == len(ngram_counts("a b a b"))