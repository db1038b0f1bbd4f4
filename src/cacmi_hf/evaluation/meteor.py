"""One METEOR 1.5 process for a whole evaluation run, fed in pipelined batches.

This runs the jar bundled with pycocoevalcap with coco-caption's options (``-l en -norm``) and
its text protocol: ``SCORE ||| ref ||| ... ||| hyp`` returns the sufficient statistics of one
segment. By default the lines are answered by the package's driver (``meteor_driver``), which
calls the same jar classes from several threads and normalises each distinct sentence once;
without a JDK to compile it, by the jar's own ``-stdio`` loop. The reference toolkit talks to the
process one line at a time; here a writer thread streams all requests while the reader collects
the answers, and statistics are cached per distinct (hypothesis, references) so a pair shared by
several tIoU thresholds is scored once. An evaluation starts the process before it has read its
files (``defer_texts=True``) and gives it its paraphrase table later (``set_texts``), cut to the
phrases of the run's sentences as the driver normalises them (``paraphrase_table``).

Only the alignment (``SCORE``) needs Java. Scores from statistics (what the jar's ``EVAL``
returns) are a closed formula, computed here with the jar's own arithmetic
(``meteor_from_statistics``): the jar parses every ``EVAL`` field with ``java.util.Scanner``,
which made the aggregates of a whole ActivityNet val cost more time than the alignments
themselves. The tests check the two agree.
"""

from __future__ import annotations

import atexit
import collections
import gzip
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ..progress import progress as progress_bar

from .meteor_driver import MAIN_CLASS, driver_classpath
from .paraphrase_table import write_paraphrase_subset
from .tokenization import find_java, pycocoevalcap_file

# METEOR 1.5's parameters for "-l en" (task "default"): alpha, beta, gamma, delta, and the weights
# of its four matching stages (exact, stem, synonym, paraphrase).
EN_PARAMETERS = (0.85, 0.2, 0.6, 0.75)
EN_STAGE_WEIGHTS = (1.0, 0.6, 0.8, 0.6)
NUM_STATISTICS = 23  # 4 lengths, (test, ref) x (content, function) matches per stage, chunks, 2 word-match counts


def parse_statistics(stats: Sequence[str]) -> np.ndarray:
    """The (N, 23) array of METEOR statistics lines as ``SCORE`` returns them."""
    if not len(stats):
        return np.zeros((0, NUM_STATISTICS))
    try:  # numpy's C parser: a list of lists of strings took 40 us a line
        values = np.loadtxt(stats, dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        values = None
    if values is None or values.shape != (len(stats), NUM_STATISTICS):
        raise ValueError(f"METEOR statistics must have {NUM_STATISTICS} numbers each, got {stats[0]!r}.")
    return values


def aggregate_statistics(rows: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Aggregate METEOR (G,) of consecutive groups of ``sizes`` rows of statistics (sum(sizes), 23); 0 for an empty group."""
    rows = np.array(rows, dtype=np.float64)  # a copy: the chunk column is edited
    # As the jar sums statistics: a segment matched whole, in one chunk, adds no chunk.
    rows[_matched_whole(rows), 20] = 0.0
    sizes = np.asarray(sizes, dtype=np.int64)
    sums = np.zeros((len(sizes), NUM_STATISTICS))
    np.add.at(sums, np.repeat(np.arange(len(sizes)), sizes), rows)  # integer counts: exact
    return np.where(sizes > 0, meteor_from_statistics(sums), 0.0)


def _matched_whole(stats: np.ndarray) -> np.ndarray:
    """(N,) True where every word of both sentences is matched, in one chunk."""
    stages = stats[:, 4:20].reshape(-1, 4, 4)
    test_total = stages[:, :, 0].sum(1) + stages[:, :, 2].sum(1)  # integer counts: exact in any order
    ref_total = stages[:, :, 1].sum(1) + stages[:, :, 3].sum(1)
    return (test_total == stats[:, 0]) & (ref_total == stats[:, 1]) & (stats[:, 20] == 1.0)


def meteor_from_statistics(stats: np.ndarray) -> np.ndarray:
    """METEOR of each row of (summed) statistics (N, 23) -> (N,), in the jar's order of operations.

    Precision and recall weight content words by delta and function words by 1 - delta and each
    stage by its weight; Fmean = 1 / ((1 - alpha) / P + alpha / R); the fragmentation penalty is
    gamma * (chunks / mean matched words) ** beta, zero for one chunk covering both sentences;
    the score is Fmean * (1 - penalty), 0 where undefined (no matches) and never negative.
    """
    alpha, beta, gamma, delta = EN_PARAMETERS
    stats = np.asarray(stats, dtype=np.float64)
    test_len, ref_len, test_function, ref_function = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    stages = stats[:, 4:20].reshape(-1, 4, 4)  # (N, stage, [test content, ref content, test function, ref function])
    chunks, test_words, ref_words = stats[:, 20], stats[:, 21], stats[:, 22]
    with np.errstate(divide="ignore", invalid="ignore"):
        test_weighted_len = delta * (test_len - test_function) + (1.0 - delta) * test_function
        ref_weighted_len = delta * (ref_len - ref_function) + (1.0 - delta) * ref_function
        test_matched, ref_matched = np.zeros(len(stats)), np.zeros(len(stats))
        for i, weight in enumerate(EN_STAGE_WEIGHTS):  # content words of every stage first, as the jar sums
            test_matched = test_matched + stages[:, i, 0] * weight * delta
            ref_matched = ref_matched + stages[:, i, 1] * weight * delta
        for i, weight in enumerate(EN_STAGE_WEIGHTS):
            test_matched = test_matched + stages[:, i, 2] * weight * (1.0 - delta)
            ref_matched = ref_matched + stages[:, i, 3] * weight * (1.0 - delta)
        precision, recall = test_matched / test_weighted_len, ref_matched / ref_weighted_len
        f_mean = 1.0 / ((1.0 - alpha) / precision + alpha / recall)
        fragmentation = np.where(_matched_whole(stats), 0.0, chunks / ((test_words + ref_words) / 2.0))
        score = f_mean * (1.0 - gamma * np.power(fragmentation, beta))
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))


def _clean_hypothesis(text: str) -> str:
    # coco-caption strips the field separator from the hypothesis only, and halves double spaces.
    return text.replace("|||", "").replace("  ", " ").replace("\n", " ")


class Meteor:
    """A persistent METEOR 1.5 (English, normalised) Java process with cached statistics."""

    def __init__(
        self,
        java: str | os.PathLike = "java",
        memory: str = "2G",
        texts: Iterable[str] | None = None,
        processes: int = 1,
        threads: int | None = None,
        driver: str = "auto",
        defer_texts: bool = False,
        _table_args: Sequence[str] = (),
    ):
        """Start METEOR; with ``texts`` (every sentence it will see) it loads only the paraphrase entries they can use.

        A process given ``texts`` must only score those sentences (else paraphrase matches could be
        missed); without, it loads the whole table (~45 s of CPU) and scores anything.
        ``defer_texts=True`` starts the JVM now, loading everything but the paraphrase table (about
        a second), and takes the sentences later with ``set_texts``, so that the caller can
        tokenise them meanwhile; where the process cannot take its table later (the jar's own
        loop, or ``processes`` > 1) it starts in ``set_texts`` instead.
        ``driver="auto"`` runs the package's driver (``meteor_driver``: ``threads`` aligner threads
        in one JVM, default one per CPU core up to 4, each distinct sentence normalised once)
        when a JDK can compile it, else the jar's own ``-stdio`` loop (``driver="jar"``); both
        give the same statistics. ``driver="threads"`` fails instead of falling back. With
        ``processes`` > 1, large batches are also split between that many Java processes.
        """
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}.")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}.")
        if driver not in ("auto", "threads", "jar"):
            raise ValueError(f"driver must be 'auto', 'threads' or 'jar', got {driver!r}.")
        if defer_texts and texts is not None:
            raise ValueError("Give texts either to Meteor(...) or, with defer_texts=True, to set_texts(...), not both.")
        java_path = find_java(java)
        self._jar = jar = pycocoevalcap_file("meteor", "meteor-1.5.jar")
        classes = None
        if driver != "jar":
            try:
                classes = driver_classpath(java_path, jar)
            except (OSError, RuntimeError) as err:
                if driver == "threads":
                    raise
                warnings.warn(f"Using the jar's single-threaded METEOR loop (same scores, slower): {err}", stacklevel=2)
            if classes is None and driver == "threads":
                raise RuntimeError("driver='threads' needs javac (a JDK), e.g. `apt-get install default-jdk-headless`.")
        self.threads = (threads or min(os.cpu_count() or 1, 4)) if classes is not None else 1
        # Serial GC: same scores, about a quarter less CPU to load the paraphrase table.
        if classes is None:
            command = [java_path, "-XX:+UseSerialGC", "-jar", f"-Xmx{memory}", str(jar), "-", "-", "-stdio"]
        else:
            command = [java_path, "-XX:+UseSerialGC", f"-Xmx{memory}", "-cp", f"{jar}{os.pathsep}{classes}",
                       MAIN_CLASS, str(self.threads)]
        self._command, self._helper_args = command, (java, memory, threads, driver)
        self._processes = processes
        self._table_dir: str | None = None
        self._helpers: list[Meteor] = []
        self._process: subprocess.Popen | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, tuple[str, ...]], str] = {}
        self._rows: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}  # _stats parsed, (23,) each
        self._prefetch = threading.Condition()  # guards _pending / _prefetch_error, signals new _stats
        self._pending = 0  # prefetch batches queued or running
        self._last_prefetch: threading.Thread | None = None
        self._prefetch_error: BaseException | None = None
        self._awaiting_texts = defer_texts
        self._scoring_started = False
        self._table_texts: set[str] | None = None  # texts the table in place was cut for
        self._tables_cut = 0
        if not defer_texts:
            self._start(self._paraphrase_subset(jar, texts) if texts is not None else list(_table_args))
        elif classes is not None and processes == 1:
            # the driver loads everything else now and reads "TABLE path" first; the table stays empty till then
            self._table_dir = tempfile.mkdtemp(prefix="cacmi_meteor_")
            empty = Path(self._table_dir) / "empty.gz"
            with gzip.open(empty, "wb"):
                pass
            self._start(["-a", str(empty)], table_on_stdin=True)

    def _start(self, table_args: Sequence[str], table_on_stdin: bool = False) -> None:
        """Launch the Java process (and the helper processes) with these paraphrase-table arguments."""
        command = list(self._command)
        if table_on_stdin:
            command.append("--table-on-stdin")
        command += ["-l", "en", "-norm", *table_args]
        self._process = subprocess.Popen(
            command, cwd=self._jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        java, memory, threads, driver = self._helper_args
        self._helpers = [Meteor(java, memory, processes=1, threads=threads, driver=driver, _table_args=table_args)
                         for _ in range(self._processes - 1)]

    @property
    def takes_table_later(self) -> bool:
        """True for a running process that reads its paraphrase table from its input (``defer_texts=True``)."""
        return self._process is not None and "--table-on-stdin" in self._process.args

    def set_texts(self, texts: Iterable[str]) -> None:
        """Give a process made with ``defer_texts=True`` every sentence it will see (see ``__init__``).

        A process that takes its table later asks the driver how it normalises the sentences and keeps
        only the paraphrase entries whose two phrases occur in them (``write_paraphrase_subset``); it may
        be given texts again until it scores its first line, its table then cut for all of them.
        """
        texts = list(dict.fromkeys(texts))
        if self._process is None:  # this set-up cannot take its table later: start it now
            if not self._awaiting_texts:
                raise RuntimeError("set_texts is for a Meteor made with defer_texts=True, and only once.")
            self._start(self._paraphrase_subset(self._jar, texts))
        else:
            if not self.takes_table_later or self._scoring_started:
                raise RuntimeError("set_texts is for a Meteor made with defer_texts=True, before it scores anything.")
            if self._table_texts is not None and self._table_texts.issuperset(texts):
                self._awaiting_texts = False
                return  # the table in place was cut for these texts already
            texts = list(dict.fromkeys([*(self._table_texts or ()), *texts]))
            sentences = self._normalized(texts)  # None: the word rule for the texts themselves
            table_args = self._paraphrase_subset(self._jar, texts, sentences=sentences)
            path = table_args[1] if table_args else str(self._jar.parent / "data" / "paraphrase-en.gz")
            with self._lock:
                try:
                    self._process.stdin.write(f"TABLE {path}\n".encode())
                    self._process.stdin.flush()
                except (BrokenPipeError, OSError) as err:
                    raise self._failure("taking its paraphrase table") from err
            self._table_texts = set(texts)
        self._awaiting_texts = False

    def _normalized(self, texts: Sequence[str]) -> list[str] | None:
        """Every sentence the process can see for ``texts`` (as hypothesis, as reference, a reference's pieces
        split at ``|||``), as its scorers normalise it; None where the driver cannot say."""
        variants = dict.fromkeys(v for t in texts for v in (t.replace("\n", " "), _clean_hypothesis(t),
                                                            *t.replace("\n", " ").split("|||")))
        lines = [f"NORMALIZE ||| {v}" for v in variants]
        answers = self._exchange(lines, [1] * len(lines), "normalising sentences", False, scoring=False)
        return None if any(a.startswith("Error:") for a in answers) else answers

    def _paraphrase_subset(self, jar: Path, texts: Iterable[str], sentences: Sequence[str] | None = None) -> list[str]:
        """``-a`` arguments for a paraphrase table cut to ``texts`` (and ``sentences``), or none when it cannot be made."""
        table = jar.parent / "data" / "paraphrase-en.gz"
        try:
            if not self._table_dir:
                self._table_dir = tempfile.mkdtemp(prefix="cacmi_meteor_")
            self._tables_cut += 1  # a new file each time: the process may still be reading the last one
            subset = Path(self._table_dir) / f"paraphrase-en-{self._tables_cut}.gz"
            texts = list(texts)
            write_paraphrase_subset(table, texts + [_clean_hypothesis(t) for t in texts], subset, sentences=sentences)
        except (OSError, ValueError) as err:  # e.g. a read-only cache: the whole table gives the same scores
            warnings.warn(f"Using METEOR's whole paraphrase table (slower start): {err}", stacklevel=3)
            return []
        return ["-a", str(subset)]

    def _drain_stderr(self) -> None:
        stream = self._process.stderr
        for line in iter(stream.readline, b""):
            self._stderr.append(line.decode(errors="replace").rstrip())
        stream.close()

    def _failure(self, what: str) -> RuntimeError:
        code = self._process.poll()
        detail = "\n".join(self._stderr) or "no message"
        return RuntimeError(f"METEOR (Java) stopped while {what} (exit code {code}): {detail}")

    def _exchange(
        self, lines: Sequence[str], replies: Sequence[int], what: str, progress: bool, scoring: bool = True
    ) -> list[str]:
        """Send ``lines`` while reading ``replies[i]`` answer lines for each; returns all answers."""
        if scoring:
            if self._awaiting_texts:
                raise RuntimeError("This METEOR process was made with defer_texts=True: call set_texts(...) before scoring.")
            self._scoring_started = True
        if self._process.poll() is not None:
            raise self._failure(what)
        errors: list[BaseException] = []

        def write() -> None:
            try:  # one call: the pipe is filled from C, without taking the GIL for every line
                self._process.stdin.write("".join(line + "\n" for line in lines).encode())
                self._process.stdin.flush()
            except (BrokenPipeError, OSError) as err:  # reported by the reader below
                errors.append(err)

        writer = threading.Thread(target=write, daemon=True)
        wanted = int(sum(replies))
        ends = np.cumsum(replies)  # answers received when each line is done
        answers: list[str] = []
        with self._lock:
            writer.start()
            bar = progress_bar(total=len(lines), desc=what, unit="line", enabled=progress, leave=False)
            partial = b""
            while len(answers) < wanted:
                chunk = self._process.stdout.read1(1 << 16)  # whatever has arrived, not line by line
                if not chunk:
                    bar.close()
                    raise self._failure(what)
                *complete, partial = (partial + chunk).split(b"\n")
                answers.extend(line.decode().strip() for line in complete)
                bar.update(int(np.searchsorted(ends, len(answers), side="right")) - bar.n)
            bar.close()
            writer.join()
        if errors or partial or len(answers) != wanted:
            raise self._failure(what)
        return answers

    @staticmethod
    def _keys(requests: Iterable[tuple[str, Sequence[str]]]) -> list[tuple[str, tuple[str, ...]]]:
        return [(_clean_hypothesis(hyp), tuple(r.replace("\n", " ") for r in refs)) for hyp, refs in requests]

    def _compute(self, keys: Sequence[tuple[str, tuple[str, ...]]], progress: bool) -> None:
        missing = list(dict.fromkeys(k for k in keys if k not in self._stats))
        if missing:
            lines = [" ||| ".join(("SCORE", " ||| ".join(refs), hyp)) for hyp, refs in missing]
            workers = [self, *self._helpers] if len(lines) >= 100 * (1 + len(self._helpers)) else [self]
            bounds = np.linspace(0, len(lines), len(workers) + 1).astype(int)
            with ThreadPoolExecutor(len(workers)) as pool:
                parts = pool.map(
                    lambda k: workers[k]._exchange(lines[bounds[k]:bounds[k + 1]], [1] * int(bounds[k + 1] - bounds[k]),
                                                   "METEOR statistics", progress and k == 0),
                    range(len(workers)),
                )
                answers = [answer for part in parts for answer in part]
            rows = parse_statistics(answers)  # once per distinct pair, not per request
            with self._prefetch:
                self._stats.update(zip(missing, answers))
                self._rows.update(zip(missing, rows))
                self._prefetch.notify_all()

    def prefetch(self, groups: Sequence[Iterable[tuple[str, Sequence[str]]]], progress: bool = False) -> None:
        """Start aligning these groups of ``(hypothesis, references)`` in the background, in order.

        ``statistics`` then waits only until the pairs it asks for are done, so the caller can
        compute other metrics while the Java process works through everything a run will need.
        """
        batches = [self._keys(group) for group in groups]
        previous = self._last_prefetch

        def run() -> None:
            try:
                if previous is not None:
                    previous.join()  # batches are aligned in the order they were queued
                for keys in batches:
                    self._compute(keys, progress)
            except BaseException as err:  # re-raised by the next statistics() call
                self._prefetch_error = err
            finally:
                with self._prefetch:
                    self._pending -= 1
                    self._prefetch.notify_all()

        with self._prefetch:
            self._pending += 1
        self._last_prefetch = threading.Thread(target=run, daemon=True)
        self._last_prefetch.start()

    def _ready(self, requests: Iterable[tuple[str, Sequence[str]]], progress: bool) -> list[tuple[str, tuple[str, ...]]]:
        """Keys of ``requests``, once all of them are aligned (waiting for prefetches that hold them)."""
        keys = self._keys(requests)
        with self._prefetch:
            self._prefetch.wait_for(lambda: not self._pending or all(k in self._stats for k in keys))
            error, self._prefetch_error = self._prefetch_error, None
        if error is not None:
            raise error
        self._compute(keys, progress)
        return keys

    def statistics(self, requests: Iterable[tuple[str, Sequence[str]]], progress: bool = False) -> list[str]:
        """METEOR sufficient statistics of each ``(hypothesis, references)`` (tokenised text), as the jar prints them."""
        return [self._stats[k] for k in self._ready(requests, progress)]

    def statistics_array(self, requests: Iterable[tuple[str, Sequence[str]]], progress: bool = False) -> np.ndarray:
        """The same statistics as an (N, 23) array (parsed once per distinct pair)."""
        keys = self._ready(requests, progress)
        return np.stack([self._rows[k] for k in keys]) if keys else np.zeros((0, NUM_STATISTICS))

    def aggregate(self, groups: Sequence[Sequence[str]]) -> list[float]:
        """Aggregate METEOR of each group of statistics: the score of their sum (0.0 for an empty group)."""
        rows = parse_statistics([s for g in groups for s in g])  # (sum(sizes), 23)
        return aggregate_statistics(rows, [len(g) for g in groups]).tolist()

    def segment_scores(self, stats: Sequence[str]) -> list[float]:
        """METEOR score of each single segment's statistics."""
        return meteor_from_statistics(parse_statistics(stats)).tolist()

    def score(self, hypothesis: str, references: Sequence[str]) -> float:
        """METEOR of one hypothesis against its references (tokenised text)."""
        return self.segment_scores(self.statistics([(hypothesis, references)]))[0]

    def close(self) -> None:
        """Stop the Java process."""
        for helper in getattr(self, "_helpers", []):
            helper.close()
        if getattr(self, "_table_dir", None):
            shutil.rmtree(self._table_dir, ignore_errors=True)
            self._table_dir = None
        process = getattr(self, "_process", None)
        if process is None:
            return
        if process.poll() is None:
            try:
                process.stdin.close()
                process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        for stream in (process.stdin, process.stdout):  # stderr closes in _drain_stderr, at its end
            try:
                stream.close()
            except OSError:  # unflushed input to a process that has gone
                pass

    def __enter__(self) -> "Meteor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


_SHARED: dict[str, Meteor] = {}


def shared_meteor(java: str | os.PathLike = "java") -> Meteor:
    """A METEOR process kept for the whole Python session (e.g. evaluating every epoch).

    Starting METEOR costs tens of CPU-seconds (it loads its paraphrase table), so repeated
    evaluations should pass this to ``evaluate_dense_captions(meteor=...)``.
    """
    key = find_java(java)
    meteor = _SHARED.get(key)
    if meteor is None or meteor._process.poll() is not None:
        meteor = _SHARED[key] = Meteor(java)
    return meteor


atexit.register(lambda: [m.close() for m in _SHARED.values()])
