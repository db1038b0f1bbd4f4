"""One METEOR 1.5 process for a whole evaluation run, fed in pipelined batches.

This drives the jar bundled with pycocoevalcap with the very command line coco-caption uses
(``-stdio -l en -norm``) and its text protocol: ``SCORE ||| ref ||| ... ||| hyp`` returns the
sufficient statistics of one segment; ``EVAL ||| stats ||| stats ...`` returns the score of each
segment and then the aggregate METEOR of the group (computed from the summed statistics, which
is what coco-caption reports for a set of captions). The reference toolkit talks to the process
one line at a time; here a writer thread streams all requests while the reader collects the
answers, and statistics are cached per distinct (hypothesis, references) so a pair shared by
several tIoU thresholds is scored once.
"""

from __future__ import annotations

import atexit
import collections
import os
import subprocess
import threading
from typing import Iterable, Sequence

from tqdm.auto import tqdm

from .tokenization import find_java, pycocoevalcap_file

EVAL_CHUNK = 500  # segments per EVAL line when only per-segment scores are needed


def _clean_hypothesis(text: str) -> str:
    # coco-caption strips the field separator from the hypothesis only, and halves double spaces.
    return text.replace("|||", "").replace("  ", " ").replace("\n", " ")


class Meteor:
    """A persistent METEOR 1.5 (English, normalised) Java process with cached statistics."""

    def __init__(self, java: str | os.PathLike = "java", memory: str = "2G"):
        java_path = find_java(java)
        jar = pycocoevalcap_file("meteor", "meteor-1.5.jar")
        # Serial GC: same scores, about a quarter less CPU to load the paraphrase table.
        command = [java_path, "-XX:+UseSerialGC", "-jar", f"-Xmx{memory}", str(jar),
                   "-", "-", "-stdio", "-l", "en", "-norm"]
        self._process = subprocess.Popen(
            command, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._stderr: collections.deque[str] = collections.deque(maxlen=40)
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, tuple[str, ...]], str] = {}
        self._segment: dict[str, float] = {}

    def _drain_stderr(self) -> None:
        for line in iter(self._process.stderr.readline, b""):
            self._stderr.append(line.decode(errors="replace").rstrip())

    def _failure(self, what: str) -> RuntimeError:
        code = self._process.poll()
        detail = "\n".join(self._stderr) or "no message"
        return RuntimeError(f"METEOR (Java) stopped while {what} (exit code {code}): {detail}")

    def _exchange(self, lines: Sequence[str], replies: Sequence[int], what: str, progress: bool) -> list[str]:
        """Send ``lines`` while reading ``replies[i]`` answer lines for each; returns all answers."""
        if self._process.poll() is not None:
            raise self._failure(what)
        errors: list[BaseException] = []

        def write() -> None:
            try:
                for line in lines:
                    self._process.stdin.write(line.encode() + b"\n")
                self._process.stdin.flush()
            except (BrokenPipeError, OSError) as err:  # reported by the reader below
                errors.append(err)

        writer = threading.Thread(target=write, daemon=True)
        answers: list[str] = []
        with self._lock:
            writer.start()
            bar = tqdm(total=len(lines), desc=what, unit="line", disable=not progress, leave=False)
            for count in replies:
                for _ in range(count):
                    answer = self._process.stdout.readline()
                    if not answer:
                        bar.close()
                        raise self._failure(what)
                    answers.append(answer.decode().strip())
                bar.update(1)
            bar.close()
            writer.join()
        if errors:
            raise self._failure(what)
        return answers

    def statistics(self, requests: Iterable[tuple[str, Sequence[str]]], progress: bool = False) -> list[str]:
        """METEOR sufficient statistics of each ``(hypothesis, references)`` (tokenised text)."""
        keys = [(_clean_hypothesis(hyp), tuple(r.replace("\n", " ") for r in refs)) for hyp, refs in requests]
        missing = list(dict.fromkeys(k for k in keys if k not in self._stats))
        if missing:
            lines = [" ||| ".join(("SCORE", " ||| ".join(refs), hyp)) for hyp, refs in missing]
            answers = self._exchange(lines, [1] * len(lines), "METEOR statistics", progress)
            self._stats.update(zip(missing, answers))
        return [self._stats[k] for k in keys]

    def aggregate(self, groups: Sequence[Sequence[str]], progress: bool = False) -> list[float]:
        """Aggregate METEOR of each group of statistics (0.0 for an empty group)."""
        filled = [g for g in groups if len(g)]
        lines = ["EVAL ||| " + " ||| ".join(g) for g in filled]
        answers = iter(self._exchange(lines, [len(g) + 1 for g in filled], "METEOR aggregates", progress))
        scores = []
        for group in groups:
            if len(group) == 0:
                scores.append(0.0)
                continue
            for stats in group:
                self._segment[stats] = float(next(answers))
            scores.append(float(next(answers)))
        return scores

    def segment_scores(self, stats: Sequence[str], progress: bool = False) -> list[float]:
        """METEOR score of each single segment's statistics."""
        missing = list(dict.fromkeys(s for s in stats if s not in self._segment))
        if missing:
            chunks = [missing[i:i + EVAL_CHUNK] for i in range(0, len(missing), EVAL_CHUNK)]
            self.aggregate(chunks, progress)
        return [self._segment[s] for s in stats]

    def score(self, hypothesis: str, references: Sequence[str]) -> float:
        """METEOR of one hypothesis against its references (tokenised text)."""
        return self.segment_scores(self.statistics([(hypothesis, references)]))[0]

    def close(self) -> None:
        """Stop the Java process."""
        process = getattr(self, "_process", None)
        if process is None or process.poll() is not None:
            return
        try:
            process.stdin.close()
            process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()

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
