"""The package's multi-threaded METEOR driver (cacmi_hf.evaluation.meteor_driver) against the jar's own loop."""

import json
import shutil
from pathlib import Path

import pytest

import cacmi_hf.evaluation.meteor_driver as meteor_driver
from cacmi_hf.evaluation.meteor import Meteor
from cacmi_hf.evaluation.tokenization import find_java, pycocoevalcap_file

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed")]
needs_javac = pytest.mark.skipif(meteor_driver.find_javac(shutil.which("java") or "java") is None,
                                 reason="no javac to compile the driver")
ANET = Path(__file__).resolve().parents[2] / "shared" / "data" / "activitynet"

# Cases that exercise METEOR's normaliser and its multi-reference rule (best reference wins).
HAND = [
    ("A man is running down the street.", ["a man runs on the street", "The man ran."]),
    ("the dog's ball isn't red -- it's blue!", ["A dog's ball is not red; it is blue."]),
    ("", ["a woman plays a guitar"]),
    ("a woman plays a guitar", ["", "a woman is playing guitar"]),
    ("people are dancing , jumping and clapping", ["abc123!@#"]),
    ("Two men (in red) play 3-on-3 basketball...", ["two men play basketball", "men in red play", "3 on 3"]),
]


def _real_pairs(videos: int = 40) -> list[tuple[str, list[str]]]:
    """Every val_2 caption of the first videos against each val_1 caption of its video, and against all of them."""
    first = json.loads((ANET / "val_1.json").read_text())
    second = json.loads((ANET / "val_2.json").read_text())
    pairs = []
    for vid in [v for v in first if v in second][:videos]:
        refs = [s.strip() for s in first[vid]["sentences"]]
        for hyp in second[vid]["sentences"]:
            pairs += [(hyp.strip(), [ref]) for ref in refs] + [(hyp.strip(), refs)]
    return pairs


@needs_javac
def test_driver_gives_the_jars_statistics():
    pairs = list(HAND)
    if ANET.is_dir():
        pairs += _real_pairs()
    texts = [t for hyp, refs in pairs for t in (hyp, *refs)]
    with Meteor(texts=texts, driver="jar") as jar, Meteor(texts=texts, driver="threads", threads=3) as driver:
        assert driver.threads == 3 and "MeteorThreads" in driver._process.args
        expected = jar.statistics(pairs)
        assert driver.statistics(pairs) == expected  # same text, line by line, in order
    assert len(set(expected)) > len(pairs) // 10  # the cases differ: a mix-up of lines would show


@needs_javac
def test_deferred_table_gives_the_statistics_of_a_table_given_at_start(tmp_path):
    """The JVM started before the sentences are known, its paraphrase table sent later, scores as one started with it."""
    import gzip

    pairs = list(HAND)
    if ANET.is_dir():
        pairs += _real_pairs(20)
    texts = [t for hyp, refs in pairs for t in (hyp, *refs)]
    empty = tmp_path / "empty.gz"
    with gzip.open(empty, "wb"):
        pass
    with Meteor(texts=texts, driver="jar") as jar, Meteor(driver="threads", threads=2, defer_texts=True) as deferred, \
            Meteor(driver="threads", threads=2, _table_args=["-a", str(empty)]) as no_paraphrases:
        assert "--table-on-stdin" in deferred._process.args
        with pytest.raises(RuntimeError, match="set_texts"):
            deferred.statistics(pairs[:1])  # no table yet: refused, not scored without paraphrases
        deferred.set_texts(texts[: len(texts) // 2])  # a first cut for half the sentences ...
        deferred.set_texts(texts)  # ... then all of them: cut again, before any line is scored
        deferred.set_texts(texts[:3])  # words the table already holds: no new cut
        assert deferred._tables_cut == 2
        expected = jar.statistics(pairs)
        assert deferred.statistics(pairs) == expected
        if ANET.is_dir():  # the check can fail: without the table some of these pairs score differently
            assert no_paraphrases.statistics(pairs) != expected
        with pytest.raises(RuntimeError, match="before it scores"):
            deferred.set_texts(texts)


@needs_javac
def test_deferred_jar_loop_starts_when_given_its_texts():
    texts = [t for hyp, refs in HAND for t in (hyp, *refs)]
    with Meteor(texts=texts, driver="jar") as started, Meteor(driver="jar", defer_texts=True) as deferred:
        assert deferred._process is None  # the jar's own loop cannot take its table later
        deferred.set_texts(texts)
        assert deferred.statistics(HAND) == started.statistics(HAND)
    with pytest.raises(ValueError, match="not both"):
        Meteor(texts=texts, defer_texts=True)


@needs_javac
def test_driver_is_compiled_once(tmp_path, monkeypatch):
    java, jar = find_java(), pycocoevalcap_file("meteor", "meteor-1.5.jar")
    first = meteor_driver.driver_classpath(java, jar, tmp_path)
    assert (first / f"{meteor_driver.MAIN_CLASS}.class").is_file() and first.parent == tmp_path

    def fail(*args):
        raise AssertionError("compiled again")

    monkeypatch.setattr(meteor_driver, "_compile", fail)
    assert meteor_driver.driver_classpath(java, jar, tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no build folder left behind


@needs_javac
def test_unwritable_cache_builds_for_this_process(tmp_path):
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    folder = meteor_driver.driver_classpath(find_java(), pycocoevalcap_file("meteor", "meteor-1.5.jar"), blocked / "cache")
    assert (folder / f"{meteor_driver.MAIN_CLASS}.class").is_file() and not folder.is_relative_to(tmp_path)
    shutil.rmtree(folder)


def test_without_javac_the_jar_loop_is_used(monkeypatch):
    monkeypatch.setattr(meteor_driver, "find_javac", lambda java: None)
    with Meteor(texts=["a man runs"], driver="auto") as meteor:
        assert meteor.threads == 1 and "-jar" in meteor._process.args
        assert meteor.score("a man runs", ["a man runs"]) == pytest.approx(1.0)
    with pytest.raises(RuntimeError, match="javac"):
        Meteor(texts=["a"], driver="threads")


@needs_javac
def test_a_driver_that_does_not_compile_falls_back_with_a_warning(tmp_path, monkeypatch):
    broken = tmp_path / "MeteorThreads.java"
    broken.write_text("public final class MeteorThreads { this is not java }")
    monkeypatch.setattr(meteor_driver, "SOURCE", broken)
    with pytest.raises(RuntimeError, match="javac could not compile MeteorThreads.java") as failure:
        meteor_driver.driver_classpath(find_java(), pycocoevalcap_file("meteor", "meteor-1.5.jar"), tmp_path)
    assert not list(tmp_path.glob("driver-*"))  # the failed build is not left behind

    def failing(*args):
        raise failure.value

    monkeypatch.setattr("cacmi_hf.evaluation.meteor.driver_classpath", failing)  # no second javac run
    with pytest.warns(UserWarning, match="single-threaded"):
        meteor = Meteor(texts=["a"], driver="auto")
    with meteor:
        assert "-jar" in meteor._process.args


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        Meteor(threads=0)
    with pytest.raises(ValueError, match="driver must be 'auto', 'threads' or 'jar', got 'fast'"):
        Meteor(driver="fast")
