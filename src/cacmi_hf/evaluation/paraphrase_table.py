"""A METEOR paraphrase table cut to one evaluation run's words, so METEOR starts in seconds.

METEOR 1.5 reads its whole English paraphrase table (5.3 M phrase pairs, 62 MB gzipped) every
time it starts: about 45 s of CPU here, the largest fixed cost of an evaluation. A paraphrase
entry can only take part in an alignment when every word of both its phrases occurs in the
sentences being aligned, so a table holding just the entries whose words all occur in the run's
sentences gives METEOR the same candidates, the same alignments and the same statistics
(the tests compare the two on real captions). The words taken for the run are a superset of the
ones METEOR's ``-norm`` tokenisation can produce from its text: each lower-cased token, its
alphanumeric runs, punctuation runs and characters, and its clitic pieces ("n't", "'s").

Selecting entries must be cheaper than what it saves, so the table is indexed once per machine
(``paraphrase_index``, ~2 minutes, ~400 MB under ``$CACMI_HF_CACHE/meteor``): its raw text, each
entry's byte range and word ids. A run then needs a few vectorised operations and one write.
"""

from __future__ import annotations

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
INDEX_FORMAT = 1
_PIECES = (
    re.compile(r"[a-z0-9]+|[^a-z0-9\s]+"),  # alphanumeric and punctuation runs
    re.compile(r"[^a-z0-9\s]"),  # single punctuation characters
    re.compile(r"[^\s']+|'[^\s']*"),  # clitics: "man's" -> "man", "'s"
)


def default_cache_dir() -> Path:
    """``$CACMI_HF_CACHE/meteor``, else ``~/.cache/cacmi_hf/meteor``."""
    return Path(os.environ.get("CACMI_HF_CACHE", Path.home() / ".cache" / "cacmi_hf")) / "meteor"


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
        np.save(building / "word_ids.npy", np.asarray(word_ids, np.uint16 if len(words) < 2**16 else np.uint32))
        (building / "words.txt").write_bytes(b"\n".join(words))
        (building / "complete").write_text(str(table))
        try:
            building.rename(folder)
        except OSError:  # built meanwhile by another process
            if not (folder / "complete").is_file():
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def write_paraphrase_subset(
    table: str | os.PathLike, texts: Iterable[str], out: str | os.PathLike, cache_dir: str | os.PathLike | None = None
) -> int:
    """Write to ``out`` (gzip) the entries of ``table`` whose words all occur in ``texts``; returns their number."""
    folder = paraphrase_index(table, cache_dir)
    words = (folder / "words.txt").read_bytes().split(b"\n")
    index = {w.decode("utf-8", "replace"): i for i, w in enumerate(words)}
    present = np.zeros(len(words), bool)
    present[[index[w] for w in table_words(texts) if w in index]] = True
    word_ids = np.load(folder / "word_ids.npy", mmap_mode="r")
    word_ends = np.load(folder / "word_ends.npy")
    word_starts = np.concatenate(([0], word_ends[:-1]))  # every entry has words: strictly increasing
    keep = np.logical_and.reduceat(present[word_ids], word_starts)  # (E,) every word of the entry present
    text_ends = np.load(folder / "text_ends.npy")
    text_starts = np.concatenate(([0], text_ends[:-1]))
    # Consecutive kept entries are one contiguous byte range: copy runs, not entries.
    edges = np.flatnonzero(np.diff(np.concatenate(([False], keep, [False])).astype(np.int8)))
    run_starts, run_ends = text_starts[edges[0::2]], text_ends[edges[1::2] - 1]
    with open(folder / "text.bin", "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as text:
        kept = b"".join([text[start:end] for start, end in zip(run_starts.tolist(), run_ends.tolist())])
    # Stored, not deflated: the file lives for one run, and compressing it cost more than METEOR's read.
    with gzip.open(out, "wb", compresslevel=0) as sink:
        sink.write(kept)
    return int(keep.sum())


__all__ = ["default_cache_dir", "paraphrase_index", "table_words", "write_paraphrase_subset"]
