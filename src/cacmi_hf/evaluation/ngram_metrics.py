"""BLEU-1..4, ROUGE-L and CIDEr-D on tokenised text, as coco-caption (pycocoevalcap) computes them.

Same formulas and constants as pycocoevalcap's ``Bleu(4)`` (corpus BLEU, "closest" reference
length, 1e-15 / 1e-9 smoothing), ``Rouge`` (LCS F-measure, beta 1.2, best precision and best
recall over references) and ``Cider`` (CIDEr-D: document frequencies over the references of
the scored set, clipped tf-idf cosine, Gaussian length penalty sigma 6, times 10).

``ngram_counts`` / ``bleu_counts`` / ``corpus_bleu`` / ``cider_d`` are the readable per-pair
definitions; the evaluator scores with ``ngram_set_scores``, their array form over many sets at
once (the dense-captioning protocol scores ~20k small sets on ActivityNet). The tests check the
definitions against pycocoevalcap itself and the array form against the definitions.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import NamedTuple, Sequence

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


class NgramTable(NamedTuple):
    """Every sentence's distinct 1..n-grams as CSR rows (gram ids sorted within a row)."""

    lengths: np.ndarray  # (N,) words per sentence
    row_starts: np.ndarray  # (N,) first entry of each sentence
    row_ends: np.ndarray  # (N,)
    grams: np.ndarray  # (E,) gram id, unique within a row
    tfs: np.ndarray  # (E,) term frequency, float64
    orders: np.ndarray  # (E,) n-gram order - 1
    num_grams: int


def ngram_table(sentences: Sequence[str], n: int = 4) -> NgramTable:
    """The n-grams of whitespace-split sentences, built with array operations (no loop over n-grams)."""
    vocabulary: dict[str, int] = {}
    split = [s.split() for s in sentences]
    lengths = np.fromiter((len(w) for w in split), np.int64, len(split))
    words = np.fromiter((vocabulary.setdefault(w, len(vocabulary)) for ws in split for w in ws), np.int64,
                        int(lengths.sum()))
    sentence = np.repeat(np.arange(len(split)), lengths)  # (W,) sentence of each word
    position = np.arange(len(words)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # (W,) index in its sentence
    remaining = lengths[sentence] - position  # (W,) words from here to the sentence end
    # A k-gram starting at word i gets an id from the (k-1)-gram at i and word i+k-1: ids stay below
    # (#grams x vocabulary), so no order overflows int64 however long the n-grams.
    gram_at = words.copy()  # (W,) id of the k-gram starting at each word (valid where remaining >= k)
    offset, starts, ids, orders = len(vocabulary), [np.flatnonzero(remaining >= 1)], [words], [np.zeros(len(words), np.int64)]
    for k in range(2, n + 1):
        at = np.flatnonzero(remaining >= k)  # (W_k,)
        keys = gram_at[at] * max(len(vocabulary), 1) + words[at + k - 1]
        unique, inverse = np.unique(keys, return_inverse=True)
        gram_at[at] = inverse
        starts.append(at)
        ids.append(inverse + offset)
        orders.append(np.full(len(at), k - 1, np.int64))
        offset += len(unique)
    num_grams = max(offset, 1)
    entry_sentence = np.concatenate([sentence[a] for a in starts])
    entry_gram = np.concatenate(ids)
    entry_order = np.concatenate(orders)
    keys, first, counts = np.unique(entry_sentence * num_grams + entry_gram, return_index=True, return_counts=True)
    row_sizes = np.bincount(keys // num_grams, minlength=len(split))
    row_ends = np.cumsum(row_sizes)
    return NgramTable(
        lengths=lengths,
        row_starts=row_ends - row_sizes,
        row_ends=row_ends,
        grams=keys % num_grams,
        tfs=counts.astype(np.float64),
        orders=entry_order[first],
        num_grams=num_grams,
    )


def _entries(table: NgramTable, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner index, table entry) of every n-gram of the sentences ``rows[i]``, owner i."""
    sizes = table.row_ends[rows] - table.row_starts[rows]  # (R,)
    owner = np.repeat(np.arange(len(rows)), sizes)
    offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return owner, table.row_starts[rows][owner] + offsets


def _run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Index of the first of each run of equal values in ``sorted_keys``."""
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if len(sorted_keys) else np.zeros(0, np.int64)


def _counted(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of ``keys`` and how often each occurs.

    By sorting: numpy 2.4's hash-based ``np.unique`` took 20 s on 4.4 M int64 keys here, a sort 0.5 s.
    """
    keys = np.sort(keys)
    firsts = _run_starts(keys)
    return keys[firsts], np.diff(np.r_[firsts, len(keys)])


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index into ``sorted_keys`` of each of ``keys`` and whether it is there."""
    if not len(sorted_keys):
        return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return at, sorted_keys[at] == keys


def ngram_set_scores(
    sets: Sequence[Sequence[tuple[str, Sequence[str]]]], n: int = 4, sigma: float = 6.0
) -> np.ndarray:
    """Corpus BLEU-1..n and CIDEr-D of many sets of (hypothesis, [references]) at once -> (S, n + 1).

    Each set is what one pycocoevalcap ``Bleu(4)`` / ``Cider`` call scores: BLEU from the set's summed
    statistics ("closest" reference length), CIDEr-D the mean over its hypotheses with document
    frequencies from the set's references. The same numbers as ``corpus_bleu``/``bleu_counts`` and
    ``cider_d`` per set (tested), computed over all sets with array operations: Python loops over
    n-grams dominated the evaluation. An empty set scores 0.
    """
    scores = np.zeros((len(sets), n + 1))
    index: dict[str, int] = {}
    item_set, item_hyp, ref_item, ref_sentence = [], [], [], []
    for s, items in enumerate(sets):
        for hyp, refs in items:
            item = len(item_set)
            item_set.append(s)
            item_hyp.append(index.setdefault(hyp, len(index)))
            for ref in refs:
                ref_item.append(item)
                ref_sentence.append(index.setdefault(ref, len(index)))
    if not item_set:
        return scores
    table = ngram_table(list(index), n)
    grams_total = table.num_grams
    item_set_a, item_hyp_a = np.array(item_set), np.array(item_hyp)
    ref_item_a, ref_sentence_a = np.array(ref_item, np.int64), np.array(ref_sentence, np.int64)
    num_items, num_refs = len(item_set_a), len(ref_item_a)
    refs_per_item = np.bincount(ref_item_a, minlength=num_items).astype(np.float64)  # (I,)
    set_sizes = np.bincount(item_set_a, minlength=len(sets)).astype(np.float64)  # (S,)
    filled = set_sizes > 0

    hyp_item, hyp_pos = _entries(table, item_hyp_a)  # hypothesis n-grams, owned by items
    ref_row, ref_pos = _entries(table, ref_sentence_a)  # reference n-grams, owned by reference rows
    hyp_keys = hyp_item * grams_total + table.grams[hyp_pos]  # sorted: rows ascend, grams sorted within
    ref_keys = ref_item_a[ref_row] * grams_total + table.grams[ref_pos]  # (item, gram); repeats across refs
    hyp_orders, ref_orders = table.orders[hyp_pos], table.orders[ref_pos]

    # BLEU: clipped matches against the most frequent use of each gram among an item's references.
    order = np.argsort(ref_keys)
    sorted_ref_keys = ref_keys[order]
    firsts = _run_starts(sorted_ref_keys)
    best_keys = sorted_ref_keys[firsts]
    best_tf = np.maximum.reduceat(table.tfs[ref_pos][order], firsts)
    at, found = _lookup(best_keys, hyp_keys)
    clipped = np.where(found, np.minimum(table.tfs[hyp_pos], best_tf[at]), 0.0)
    correct = np.bincount(hyp_item * n + hyp_orders, clipped, num_items * n).reshape(num_items, n)
    test_len = table.lengths[item_hyp_a]  # (I,)
    ref_len = table.lengths[ref_sentence_a]  # (R,)
    scale = int(ref_len.max(initial=0)) + 1
    closest = np.full(num_items, np.iinfo(np.int64).max)  # "closest": smallest |difference|, then shortest
    np.minimum.at(closest, ref_item_a, np.abs(ref_len - test_len[ref_item_a]) * scale + ref_len)
    item_ref_len = np.where(refs_per_item > 0, closest % scale, 0)
    guess = np.maximum(0, test_len[:, None] - np.arange(n)[None, :])  # (I, n)
    per_set = lambda values: np.bincount(item_set_a, values, len(sets))  # noqa: E731
    set_test, set_ref = per_set(test_len.astype(np.float64)), per_set(item_ref_len.astype(np.float64))
    product = np.ones(len(sets))
    for k in range(n):
        product = product * ((per_set(correct[:, k]) + BLEU_TINY) / (per_set(guess[:, k].astype(np.float64)) + BLEU_SMALL))
        scores[:, k] = product ** (1.0 / (k + 1))
    ratio = (set_test + BLEU_TINY) / (set_ref + BLEU_SMALL)
    brevity = np.where(ratio < 1, np.exp(1 - 1 / np.where(ratio < 1, ratio, 1.0)), 1.0)
    scores[:, :n] *= brevity[:, None]

    # CIDEr-D. Document frequency of (set, gram): items of the set whose references hold the gram.
    item_grams = best_keys  # (item, gram) pairs, each once
    df_keys, df_counts = _counted(item_set_a[item_grams // grams_total] * grams_total + item_grams % grams_total)
    log_size = np.log(np.maximum(set_sizes, 1.0))

    def weights(sets_of: np.ndarray, pos: np.ndarray) -> np.ndarray:
        at, found = _lookup(df_keys, sets_of * grams_total + table.grams[pos])
        df = np.where(found, df_counts[at], 0).astype(np.float64)
        return table.tfs[pos] * (log_size[sets_of] - np.log(np.maximum(1.0, df)))

    w_hyp = weights(item_set_a[hyp_item], hyp_pos)
    w_ref = weights(item_set_a[ref_item_a[ref_row]], ref_pos)
    norm_hyp = np.sqrt(np.bincount(hyp_item * n + hyp_orders, w_hyp**2, num_items * n))  # (I * n,)
    norm_ref = np.sqrt(np.bincount(ref_row * n + ref_orders, w_ref**2, num_refs * n))  # (R * n,)
    at, found = _lookup(hyp_keys, ref_keys)  # the hypothesis entry of each reference n-gram, if shared
    shared = np.minimum(w_hyp[at[found]], w_ref[found]) * w_ref[found]
    dot = np.bincount(ref_row[found] * n + ref_orders[found], shared, num_refs * n)  # (R * n,)
    norm_pair = norm_hyp.reshape(num_items, n)[ref_item_a].ravel() * norm_ref  # (R * n,)
    both = norm_pair != 0
    value = np.where(both, dot / np.where(both, norm_pair, 1.0), dot).reshape(num_refs, n)
    bigram_len = np.maximum(table.lengths - 1, 0).astype(np.float64)  # coco-caption measures length in bigrams
    delta = bigram_len[item_hyp_a][ref_item_a] - bigram_len[ref_sentence_a]
    penalty = np.e ** (-(delta**2) / (2 * sigma**2))
    per_ref = (value * penalty[:, None]).sum(axis=1)  # (R,)
    per_item = np.bincount(ref_item_a, per_ref, num_items) / n / np.maximum(refs_per_item, 1.0) * 10.0
    scores[:, n] = per_set(per_item) / np.maximum(set_sizes, 1.0)
    scores[~filled] = 0.0  # BLEU's smoothing terms would give an empty set a score
    return scores
