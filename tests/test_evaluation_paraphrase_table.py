"""METEOR's paraphrase table cut to a run's words (cacmi_hf.evaluation.paraphrase_table)."""

import gzip
import json
import random
import shutil
from pathlib import Path

import pytest

from cacmi_hf.evaluation.meteor import Meteor, shared_meteor
from cacmi_hf.evaluation.paraphrase_table import paraphrase_index, table_words, write_paraphrase_subset

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "activitynet"
ENTRIES = [
    (b"0.5", b"a man", b"a guy"),
    (b"0.25", b"runs", b"is running"),
    (b"0.125", b"the dog", b"a puppy"),
    (b"0.0625", b"do n't", b"does not"),
]


def _table(folder: Path, entries=ENTRIES) -> Path:
    path = folder / "paraphrase-en.gz"
    path.write_bytes(gzip.compress(b"".join(b"\n".join(e) + b"\n" for e in entries)))
    return path


def test_table_words_cover_the_pieces_normalisation_can_make():
    words = table_words(["A man's dog don't run-away, ok?"])
    assert {"a", "man's", "man", "'s", "dog", "do", "n't", "run", "away", "-", ",", "?", "ok"} <= words


def test_subset_keeps_exactly_the_entries_whose_words_all_occur(tmp_path):
    table, cache = _table(tmp_path), tmp_path / "cache"
    out = tmp_path / "subset.gz"
    kept = write_paraphrase_subset(table, ["a man runs", "a guy is running", "i don't know", "what does it not"], out, cache)
    lines = gzip.decompress(out.read_bytes()).split(b"\n")
    assert kept == 3 and lines[:-1] == [w for e in (ENTRIES[0], ENTRIES[1], ENTRIES[3]) for w in e] and lines[-1] == b""
    # No entry applies: an empty but valid table.
    assert write_paraphrase_subset(table, ["nothing here"], out, cache) == 0 and gzip.decompress(out.read_bytes()) == b""


def test_sentences_keep_only_entries_whose_phrases_occur_word_for_word(tmp_path):
    table, cache = _table(tmp_path), tmp_path / "cache"
    out = tmp_path / "subset.gz"
    texts = ["a man runs", "a guy is running", "the dog sees a puppy"]

    def kept(sentences):
        count = write_paraphrase_subset(table, texts, out, cache, sentences=sentences)
        lines = gzip.decompress(out.read_bytes()).split(b"\n")[:-1]
        assert len(lines) == 3 * count
        return [tuple(lines[i + 1 : i + 3]) for i in range(0, len(lines), 3)]

    # every word of the first three entries occurs; as phrases: "a man"/"a guy", "runs"/"is running", "the dog"/"a puppy"
    assert kept(texts) == [(b"a man", b"a guy"), (b"runs", b"is running"), (b"the dog", b"a puppy")]
    # "guy a" holds the words of "a guy" but not the phrase; "running is" not "is running"
    assert kept(["a man runs", "guy a running is", "the dog sees a puppy"]) == [(b"the dog", b"a puppy")]
    # a phrase is matched within one sentence, never across two
    assert kept(["the", "dog a puppy a man runs", "a guy is running"]) == [(b"a man", b"a guy"), (b"runs", b"is running")]
    assert kept([]) == []


def test_index_is_built_once_and_rebuilt_when_the_table_changes(tmp_path):
    table, cache = _table(tmp_path), tmp_path / "cache"
    folder = paraphrase_index(table, cache)
    stamp = (folder / "word_ids.npy").stat().st_mtime_ns
    assert paraphrase_index(table, cache) == folder and (folder / "word_ids.npy").stat().st_mtime_ns == stamp
    _table(tmp_path, ENTRIES[:2] + [(b"0.1", b"a cat", b"a kitten")])
    rebuilt = paraphrase_index(table, cache)
    assert rebuilt != folder and not folder.exists()  # the stale index of the same table is removed
    assert [p.name for p in cache.iterdir()] == [rebuilt.name]
    assert write_paraphrase_subset(table, ["a cat and a kitten"], tmp_path / "s.gz", cache) == 1


def test_malformed_table_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"0.5\na man\n"))
    with pytest.raises(ValueError, match="3 lines per entry"):
        paraphrase_index(bad, tmp_path / "cache")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed")
@pytest.mark.skipif(not DATA.is_dir(), reason="needs ../shared/data (the real annotation files)")
def test_cut_table_gives_the_whole_tables_statistics_on_real_captions():
    v1, v2 = (json.loads((DATA / f"val_{k}.json").read_text()) for k in (1, 2))
    pairs = [(a.lower(), [b.lower()]) for k in list(v1)[:60] if k in v2
             for a in v2[k]["sentences"] for b in v1[k]["sentences"]]
    random.Random(0).shuffle(pairs)
    pairs = pairs[:1500]
    whole = shared_meteor()  # the whole table, already running for the other METEOR tests
    texts = [t for h, r in pairs for t in (h, *r)]
    with Meteor(texts=texts) as cut, Meteor(defer_texts=True) as phrases:
        assert cut._table_dir is not None  # really the cut table
        stats = cut.statistics(pairs)
        assert stats == whole.statistics(pairs)
        if phrases.takes_table_later:  # the driver's cut to the phrases of the normalised sentences
            phrases.set_texts(texts)
            assert phrases.statistics(pairs) == stats
        paraphrased = [s for s in stats if any(float(x) for x in s.split()[16:20])]  # stage 4 = paraphrase
        assert len(paraphrased) > 50  # the comparison exercises paraphrase matches
