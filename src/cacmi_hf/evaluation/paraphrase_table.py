"""A METEOR paraphrase table cut to one evaluation run's sentences, so METEOR starts in a fraction of a second.

METEOR 1.5 reads its whole English paraphrase table (5.3 M phrase pairs, 62 MB gzipped) every
time it starts: about 45 s of CPU here, the largest fixed cost of an evaluation. METEOR matches a
phrase of one sentence to a paraphrase of it in the other, so only entries whose two phrases both
occur in the run's sentences can take part; a table holding just those gives METEOR the same
candidates, the same alignments and the same statistics (the tests compare the two on real
captions). Two rules choose them:

- ``sentences`` (the run's sentences as METEOR normalises them, which the package's METEOR driver
  reports): entries whose two phrases each occur word for word in one of them, found by binary
  search in phrase hashes (``phrase_entries``); on 300 ActivityNet videos ~6 thousand entries.
- otherwise the words of raw ``texts``: entries whose words all occur among a superset of the
  words METEOR's ``-norm`` tokenisation can make of them (each lower-cased token, its alphanumeric
  runs, punctuation runs and characters, its clitic pieces "n't", "'s"); ~300 thousand entries.

Selecting entries must be cheaper than what it saves, so the table is indexed once per machine
(``paraphrase_index``, ~2 minutes, ~500 MB under ``$CACMI_HF_CACHE/meteor``): its raw text, each
entry's byte range, word ids and phrase hashes. A run then needs a few vectorised operations and one write.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import mmap
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

logger = logging.getLogger(__name__)
INDEX_FORMAT = 3  # 3: hashes of each entry's two phrases
_HASH_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: phrases hash as polynomials in it, mod 2**64
_PIECES = (
    re.compile(r"[a-z0-9]+|[^a-z0-9\s]+"),  # alphanumeric and punctuation runs
    re.compile(r"[^a-z0-9\s]"),  # single punctuation characters
    re.compile(r"[^\s']+|'[^\s']*"),  # clitics: "man's" -> "man", "'s"
)


def default_cache_dir() -> Path:
    """``$CACMI_HF_CACHE/meteor``, else ``~/.cache/cacmi_hf/meteor``."""
    return Path(os.environ.get("CACMI_HF_CACHE", Path.home() / ".cache" / "cacmi_hf")) / "meteor"


def _remove_stale_indexes(current: Path, table: Path) -> None:
    """Delete the other index folders of the same table (an older format or an older copy of it): ~0.5 GB each."""
    for other in current.parent.glob("paraphrase-*"):
        try:
            if other != current and (other / "complete").read_text() == str(table):
                shutil.rmtree(other, ignore_errors=True)
        except OSError:  # being built, or not an index
            continue


def table_words(texts: Iterable[str]) -> set[str]:
    """Every word METEOR's normalisation could make of ``texts`` (a superset: extra words keep extra entries)."""
    tokens: set[str] = set()
    for text in texts:
        tokens.update(text.lower().split())
    words = set(tokens)
    for token in tokens:
        for pattern in _PIECES:
            words.update(pattern.findall(token))
        if token.endswith("n't"):
            words.update((token[:-3], "n't"))
    return words


def paraphrase_index(table: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder indexing ``table`` (a gzipped METEOR paraphrase table), built on first use."""
    table = Path(table)
    stat = table.stat()
    key = hashlib.sha1(f"{INDEX_FORMAT}:{table.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = Path(cache_dir or default_cache_dir()) / f"paraphrase-{key}"
    if (folder / "complete").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    logger.warning("Indexing METEOR's paraphrase table %s once (about two minutes); cached in %s", table, folder)
    building = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        text = gzip.decompress(table.read_bytes())
        lines = text.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        if len(lines) % 3:
            raise ValueError(f"{table}: a METEOR paraphrase table has 3 lines per entry, found {len(lines)} lines.")
        # Iterations below run in C (map, join, split, dict.fromkeys): 5.3 M entries, 33 M words.
        line_ends = np.cumsum(np.fromiter(map(len, lines), np.int64, len(lines)) + 1)
        text_ends = line_ends[2::3]  # (E,) byte after each entry's third line
        del lines[0::3]  # drop the probabilities: (first phrase, second phrase) of each entry remain
        phrases = lines
        sizes = np.fromiter(map(len, map(bytes.split, phrases)), np.int64, len(phrases))  # (2E,) words per phrase
        word_ends = np.cumsum(sizes[0::2] + sizes[1::2])  # (E,) words of the entries so far
        vocabulary: dict[bytes, int] = {}
        id_chunks = []
        for start in range(0, len(phrases), 1 << 20):  # in chunks: a list of all 33 M words took 4 GB
            words_ = b" ".join(phrases[start:start + (1 << 20)]).split()
            for word in dict.fromkeys(words_):  # new words get ids in order of first appearance
                vocabulary.setdefault(word, len(vocabulary))
            id_chunks.append(np.fromiter(map(vocabulary.__getitem__, words_), np.int64, len(words_)))
        del phrases, lines, words_
        word_ids = np.concatenate(id_chunks) if id_chunks else np.zeros(0, np.int64)
        if len(word_ends) and (word_ends[0] == 0 or np.any(np.diff(word_ends) == 0)):
            raise ValueError(f"{table}: an entry has an empty phrase pair.")
        words = sorted(vocabulary, key=vocabulary.get)
        (building / "text.bin").write_bytes(text)
        np.save(building / "text_ends.npy", text_ends)
        np.save(building / "word_ends.npy", word_ends)
        # Each entry's phrases hashed as word-id polynomials: a run finds the entries whose first phrase is one of
        # its n-grams by binary search in the sorted first hashes, then checks the second (phrase_entries).
        word_starts = word_ends - sizes[0::2] - sizes[1::2]
        first_hashes, second_hashes = np.zeros(len(word_ends), np.uint64), np.zeros(len(word_ends), np.uint64)
        for start in range(0, len(word_ends), 1 << 20):  # in chunks: the gathers take 8 bytes a word
            part = slice(start, start + (1 << 20))
            for hashes, starts, lengths in ((first_hashes, word_starts[part], sizes[0::2][part]),
                                            (second_hashes, word_starts[part] + sizes[0::2][part], sizes[1::2][part])):
                filled = lengths > 0  # an empty phrase keeps hash 0 and matches no n-gram
                hashes[part][filled] = _phrase_hashes(word_ids, starts[filled], lengths[filled])
        order = np.argsort(first_hashes, kind="stable")
        np.save(building / "first_hash_order.npy", order.astype(np.int32 if len(order) < 2**31 else np.int64))
        np.save(building / "first_hashes_sorted.npy", first_hashes[order])
        np.save(building / "second_hashes.npy", second_hashes)
        (building / "longest_phrase.txt").write_text(str(int(sizes.max()) if len(sizes) else 1))
        np.save(building / "word_ids.npy", np.asarray(word_ids, np.uint16 if len(words) < 2**16 else np.uint32))
        (building / "words.txt").write_bytes(b"\n".join(words))
        (building / "complete").write_text(str(table))
        try:
            building.rename(folder)
        except OSError:  # built meanwhile by another process
            if not (folder / "complete").is_file():
                raise
        _remove_stale_indexes(folder, table)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


@functools.lru_cache(maxsize=2)
def _vocabulary(folder: Path) -> dict[str, int]:
    return {w.decode("utf-8", "replace"): i for i, w in enumerate((folder / "words.txt").read_bytes().split(b"\n"))}


def _powers(count: int) -> np.ndarray:
    """(count,) uint64: _HASH_BASE ** k mod 2**64."""
    powers = np.ones(max(count, 1), np.uint64)
    with np.errstate(over="ignore"):
        for k in range(1, count):
            powers[k] = powers[k - 1] * _HASH_BASE
    return powers


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy's hash-based unique took twice as long on millions of n-gram hashes)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def sentence_ngram_hashes(sentences: Iterable[str], vocabulary: dict[str, int], longest: int) -> np.ndarray:
    """Hashes of every n-gram (n <= ``longest``) of space-split ``sentences`` made only of ``vocabulary`` words."""
    ids = []
    for sentence in sentences:
        ids += [vocabulary.get(w, -1) for w in sentence.split()]
        ids.append(-1)  # n-grams do not cross sentences
    ids = np.asarray(ids, np.int64)
    values, valid = (ids + 1).astype(np.uint64), ids >= 0
    hashes, grams, ok = [], np.zeros(len(ids), np.uint64), np.ones(len(ids), bool)
    with np.errstate(over="ignore"):
        for n in range(1, min(longest, len(ids)) + 1):  # Horner: the n-gram at i from the (n-1)-gram at i
            grams = grams[: len(ids) - n + 1] * _HASH_BASE + values[n - 1 :]
            ok = ok[: len(ids) - n + 1] & valid[n - 1 :]
            hashes.append(grams[ok])
    return _sorted_unique(np.concatenate(hashes)) if hashes else np.zeros(0, np.uint64)


def _phrase_hashes(word_ids: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Hash of each phrase ``word_ids[starts[i]:starts[i] + lengths[i]]`` (lengths >= 1), as sentence_ngram_hashes."""
    offsets = np.cumsum(lengths) - lengths  # (P,) first element of each phrase in the flat gather
    within = np.arange(int(lengths.sum())) - np.repeat(offsets, lengths)  # position inside its phrase
    values = word_ids[np.repeat(starts, lengths) + within].astype(np.uint64) + np.uint64(1)
    powers = _powers(int(lengths.max()))[np.repeat(lengths, lengths) - 1 - within]
    with np.errstate(over="ignore"):
        return np.add.reduceat(values * powers, offsets)


def phrase_entries(
    table: str | os.PathLike, sentences: Iterable[str], cache_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """Sorted ids of the entries whose two phrases each occur word for word in one of ``sentences``."""
    folder = paraphrase_index(table, cache_dir)
    longest = int((folder / "longest_phrase.txt").read_text())
    grams = sentence_ngram_hashes(sentences, _vocabulary(folder), longest)  # (G,) sorted, unique
    first = np.load(folder / "first_hashes_sorted.npy", mmap_mode="r")
    low, high = np.searchsorted(first, grams, "left"), np.searchsorted(first, grams, "right")  # (G,)
    counts = high - low
    offsets = np.cumsum(counts) - counts
    rows = np.repeat(low, counts) + (np.arange(int(counts.sum())) - np.repeat(offsets, counts))  # into the sorted order
    candidates = np.load(folder / "first_hash_order.npy", mmap_mode="r")[rows]  # first phrase is an n-gram
    second = np.load(folder / "second_hashes.npy", mmap_mode="r")[candidates]
    at = np.minimum(np.searchsorted(grams, second), max(len(grams) - 1, 0))
    found = grams[at] == second if len(grams) else np.zeros(len(second), bool)
    return _sorted_unique(candidates[found])


def write_paraphrase_subset(
    table: str | os.PathLike,
    texts: Iterable[str],
    out: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    sentences: Iterable[str] | None = None,
) -> int:
    """Write to ``out`` (gzip) the entries of ``table`` whose words all occur in ``texts``; returns their number.

    ``sentences`` instead (the run's sentences as METEOR normalises them): the entries whose two phrases each
    occur word for word in one of them (``phrase_entries``). METEOR matches a phrase of one sentence to a
    paraphrase in the other, so no other entry can take part: on 300 ActivityNet videos, 6 thousand entries
    where the word rule keeps 300 thousand. A hash collision can only keep an entry too many.
    """
    folder = paraphrase_index(table, cache_dir)
    text_ends = np.load(folder / "text_ends.npy", mmap_mode="r")
    if sentences is not None:
        kept = phrase_entries(table, sentences, cache_dir)  # (K,) sorted entry ids
    else:
        index = _vocabulary(folder)
        present = np.zeros(len(index), bool)
        present[[index[w] for w in table_words(texts) if w in index]] = True
        word_ids = np.load(folder / "word_ids.npy", mmap_mode="r")
        word_ends = np.load(folder / "word_ends.npy")
        word_starts = np.concatenate(([0], word_ends[:-1]))  # every entry has words: strictly increasing
        kept = np.flatnonzero(np.logical_and.reduceat(present[word_ids], word_starts))  # every word of the entry present
    # Consecutive kept entries are one contiguous byte range: copy runs, not entries.
    breaks = np.flatnonzero(np.diff(kept) != 1) + 1  # (R - 1,) where a run of consecutive ids ends
    first_of_run = kept[np.concatenate(([0], breaks))] if len(kept) else kept  # (R,)
    last_of_run = kept[np.concatenate((breaks - 1, [len(kept) - 1]))] if len(kept) else kept
    run_ends = np.asarray(text_ends[last_of_run])
    run_starts = np.where(first_of_run > 0, np.asarray(text_ends[np.maximum(first_of_run - 1, 0)]), 0)
    with open(folder / "text.bin", "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as text:
        chosen = b"".join([text[start:end] for start, end in zip(run_starts.tolist(), run_ends.tolist())])
    # Stored, not deflated: the file lives for one run, and compressing it cost more than METEOR's read.
    with gzip.open(out, "wb", compresslevel=0) as sink:
        sink.write(chosen)
    return int(len(kept))


__all__ = [
    "default_cache_dir",
    "paraphrase_index",
    "phrase_entries",
    "sentence_ngram_hashes",
    "table_words",
    "write_paraphrase_subset",
]
