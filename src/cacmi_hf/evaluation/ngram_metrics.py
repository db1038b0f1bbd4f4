"""BLEU-1..4, ROUGE-L and CIDEr-D on tokenised text, as coco-caption (pycocoevalcap) computes them.

Same formulas and constants as pycocoevalcap's ``Bleu(4)`` (corpus BLEU, "closest" reference
length, 1e-15 / 1e-9 smoothing), ``Rouge`` (LCS F-measure, beta 1.2, best precision and best
recall over references) and ``Cider`` (CIDEr-D: document frequencies over the references of
the scored set, clipped tf-idf cosine, Gaussian length penalty sigma 6, times 10). They are
split into a per-pair part that can be cached (n-gram counts, BLEU counts, ROUGE-L) and a
per-set aggregation, because the dense-captioning protocol scores the same caption pairs in
many sets (videos x thresholds). The tests check equality with pycocoevalcap itself.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Callable, NamedTuple, Sequence

import numpy as np

BLEU_TINY = 1e-15
BLEU_SMALL = 1e-9


def ngram_counts(text: str, n: int = 4) -> Counter:
    """Counts of all 1..n-grams (as word tuples) of a whitespace-split sentence."""
    words = text.split()
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i:i + k])] += 1
    return counts


class BleuCounts(NamedTuple):
    """Sufficient statistics of one hypothesis for corpus BLEU."""

    testlen: int
    reflen: int
    guess: tuple[int, ...]
    correct: tuple[int, ...]


def bleu_counts(
    hypothesis: str, references: Sequence[str], n: int = 4, counts: tuple[Counter, Sequence[Counter]] | None = None
) -> BleuCounts:
    """BLEU statistics of one hypothesis against its references ("closest" reference length).

    ``counts`` may pass ``ngram_counts`` of the hypothesis and of each reference, computed earlier.
    """
    hyp_counts, ref_counts = counts if counts is not None else (
        ngram_counts(hypothesis, n), [ngram_counts(ref, n) for ref in references])
    max_counts: dict = {}
    lengths = []
    for ref, grams in zip(references, ref_counts):
        lengths.append(len(ref.split()))
        for gram, count in grams.items():
            max_counts[gram] = max(max_counts.get(gram, 0), count)
    testlen = len(hypothesis.split())
    reflen = min((abs(length - testlen), length) for length in lengths)[1]
    correct = [0] * n
    for gram, count in hyp_counts.items():
        correct[len(gram) - 1] += min(max_counts.get(gram, 0), count)
    guess = tuple(max(0, testlen - k + 1) for k in range(1, n + 1))
    return BleuCounts(testlen, reflen, guess, tuple(correct))


def corpus_bleu(counts: Sequence[BleuCounts], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n of a set of hypotheses from their summed statistics."""
    testlen = sum(c.testlen for c in counts)
    reflen = sum(c.reflen for c in counts)
    scores, product = [], 1.0
    for k in range(n):
        correct = sum(c.correct[k] for c in counts)
        guess = sum(c.guess[k] for c in counts)
        product *= float(correct + BLEU_TINY) / (guess + BLEU_SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (testlen + BLEU_TINY) / (reflen + BLEU_SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two word lists (bit-parallel, exact).

    Bit i of ``row`` stands for word i of ``a``; each word of ``b`` updates all of them with a
    few integer operations (Crochemore et al., 2001), instead of a Python loop over ``a``.
    Same result as the textbook dynamic programme, a word list long as a paragraph at a time.
    """
    if not a or not b:
        return 0
    positions: dict[str, int] = {}
    for i, word in enumerate(a):
        positions[word] = positions.get(word, 0) | (1 << i)
    full = (1 << len(a)) - 1
    row = full
    for word in b:
        matched = row & positions.get(word, 0)
        row = ((row + matched) | (row - matched)) & full
    return len(a) - row.bit_count()


def rouge_l(hypothesis: str, references: Sequence[str], beta: float = 1.2) -> float:
    """ROUGE-L F-measure of one hypothesis against its references (split on single spaces)."""
    candidate = hypothesis.split(" ")
    precision, recall = [], []
    for ref in references:
        tokens = ref.split(" ")
        lcs = _lcs_length(tokens, candidate)
        precision.append(lcs / float(len(candidate)))
        recall.append(lcs / float(len(tokens)))
    p, r = max(precision), max(recall)
    if p != 0 and r != 0:
        return ((1 + beta**2) * p * r) / float(r + beta**2 * p)
    return 0.0


def cider_d(
    pairs: Sequence[tuple[Counter, Sequence[Counter]]], n: int = 4, sigma: float = 6.0
) -> tuple[float, list[float]]:
    """CIDEr-D of a set of (hypothesis counts, [reference counts]) -> (mean, per-pair scores).

    Document frequencies and the log set size come from this set's references only, which is
    why the dense-captioning protocol's per-video CIDEr differs from a corpus CIDEr.
    """
    if not pairs:
        return 0.0, []
    frequency: defaultdict = defaultdict(float)
    for _, refs in pairs:
        for gram in {g for ref in refs for g in ref}:
            frequency[gram] += 1
    log_size = math.log(float(len(pairs)))
    cache: dict[int, tuple[list[dict], list[float], int]] = {}

    def vectorise(counts: Counter) -> tuple[list[dict], list[float], int]:
        key = id(counts)
        if key not in cache:
            vec: list[dict] = [{} for _ in range(n)]
            norm = [0.0] * n
            length = 0
            for gram, tf in counts.items():
                order = len(gram) - 1
                weight = float(tf) * (log_size - math.log(max(1.0, frequency.get(gram, 0.0))))
                vec[order][gram] = weight
                norm[order] += pow(weight, 2)
                if order == 1:  # coco-caption measures length in bigrams
                    length += tf
            cache[key] = (vec, [math.sqrt(x) for x in norm], length)
        return cache[key]

    scores = []
    penalty_scale = 2 * sigma**2
    for hyp, refs in pairs:
        vec_h, norm_h, len_h = vectorise(hyp)
        total = [0.0] * n
        for ref in refs:
            vec_r, norm_r, len_r = vectorise(ref)
            delta = float(len_h - len_r)
            penalty = math.e ** (-(delta**2) / penalty_scale)
            for k in range(n):
                value = 0.0
                ref_k = vec_r[k]
                for gram, weight in vec_h[k].items():
                    other = ref_k.get(gram, 0.0)
                    value += min(weight, other) * other
                if norm_h[k] != 0 and norm_r[k] != 0:
                    value /= norm_h[k] * norm_r[k]
                total[k] += value * penalty
        scores.append(sum(total) / n / len(refs) * 10.0)
    return sum(scores) / len(scores), scores


def cider_d_sets(
    sets: Sequence[Sequence[tuple[str, str]]], counts: Callable[[str], Counter], sigma: float = 6.0
) -> np.ndarray:
    """CIDEr-D of many sets of (hypothesis, reference) pairs at once -> (S,) set means, 0 for an empty set.

    The same numbers as ``cider_d`` on each set (document frequencies per set, one reference per
    pair), computed over all pairs of all sets with array operations: the dense-captioning protocol
    scores ~20k small sets on ActivityNet, where a Python loop over n-grams per set dominated.
    ``counts`` returns the ``ngram_counts`` of a sentence (e.g. a cache).
    """
    n = 4
    scores = np.zeros(len(sets))
    set_of, hyp_of, ref_of = [], [], []
    sentence_id: dict[str, int] = {}
    for s, pairs in enumerate(sets):
        for hyp, ref in pairs:
            set_of.append(s)
            hyp_of.append(sentence_id.setdefault(hyp, len(sentence_id)))
            ref_of.append(sentence_id.setdefault(ref, len(sentence_id)))
    if not set_of:
        return scores
    # Every sentence's n-grams as CSR rows: gram id, term frequency, order (0-based).
    gram_id: dict[tuple, int] = {}
    grams, tfs, orders, row_ends, bigrams = [], [], [], [], []
    for sentence in sentence_id:
        length = 0
        for gram, tf in counts(sentence).items():
            grams.append(gram_id.setdefault(gram, len(gram_id)))
            tfs.append(tf)
            orders.append(len(gram) - 1)
            if len(gram) == 2:  # coco-caption measures length in bigrams
                length += tf
        row_ends.append(len(grams))
        bigrams.append(length)
    grams_a, tfs_a, orders_a = np.array(grams, np.int64), np.array(tfs, np.float64), np.array(orders, np.int64)
    row_ends_a = np.array(row_ends, np.int64)
    row_starts = np.concatenate(([0], row_ends_a[:-1]))
    set_of_a, hyp_of_a, ref_of_a = np.array(set_of), np.array(hyp_of), np.array(ref_of)
    num_pairs, num_grams = len(set_of_a), max(len(gram_id), 1)

    def entries(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pair index, position in the CSR arrays) of every n-gram of each pair's sentence ``rows[p]``."""
        sizes = row_ends_a[rows] - row_starts[rows]  # (P,)
        pair = np.repeat(np.arange(len(rows)), sizes)
        offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return pair, row_starts[rows][pair] + offsets

    ref_pair, ref_pos = entries(ref_of_a)
    hyp_pair, hyp_pos = entries(hyp_of_a)
    # Document frequency of (set, gram): pairs of the set whose reference holds the gram.
    ref_keys = set_of_a[ref_pair] * num_grams + grams_a[ref_pos]
    df_keys, df_counts = np.unique(ref_keys, return_counts=True)
    set_sizes = np.bincount(set_of_a, minlength=len(sets)).astype(np.float64)
    log_size = np.log(np.maximum(set_sizes, 1.0))

    def weights(pair: np.ndarray, pos: np.ndarray) -> np.ndarray:
        keys = set_of_a[pair] * num_grams + grams_a[pos]
        at = np.minimum(np.searchsorted(df_keys, keys), len(df_keys) - 1)
        df = np.where(df_keys[at] == keys, df_counts[at], 0).astype(np.float64)
        return tfs_a[pos] * (log_size[set_of_a[pair]] - np.log(np.maximum(1.0, df)))

    w_ref, w_hyp = weights(ref_pair, ref_pos), weights(hyp_pair, hyp_pos)
    slots = num_pairs * n
    norm_ref = np.sqrt(np.bincount(ref_pair * n + orders_a[ref_pos], w_ref**2, slots))  # (P * n,)
    norm_hyp = np.sqrt(np.bincount(hyp_pair * n + orders_a[hyp_pos], w_hyp**2, slots))
    # Clipped products over the n-grams a hypothesis shares with its reference (ids are unique per sentence).
    _, in_hyp, in_ref = np.intersect1d(hyp_pair * num_grams + grams_a[hyp_pos], ref_pair * num_grams + grams_a[ref_pos],
                                       assume_unique=True, return_indices=True)
    shared = np.minimum(w_hyp[in_hyp], w_ref[in_ref]) * w_ref[in_ref]
    dot = np.bincount(hyp_pair[in_hyp] * n + orders_a[hyp_pos[in_hyp]], shared, slots)
    both = (norm_hyp != 0) & (norm_ref != 0)
    value = np.where(both, dot / np.where(both, norm_hyp * norm_ref, 1.0), dot).reshape(num_pairs, n)
    delta = np.array(bigrams, np.float64)[hyp_of_a] - np.array(bigrams, np.float64)[ref_of_a]
    penalty = np.e ** (-(delta**2) / (2 * sigma**2))
    per_pair = (value * penalty[:, None]).sum(axis=1) / n * 10.0
    filled = set_sizes > 0
    scores[filled] = np.bincount(set_of_a, per_pair, len(sets))[filled] / set_sizes[filled]
    return scores
