"""Caption tokenisers: coco-caption's Stanford PTB tokenizer (Java) and a pure-Python stand-in.

The PTB tokenizer is the one every dense-captioning paper scores with: Stanford CoreNLP 3.4.1's
``PTBTokenizer -preserveLines -lowerCase`` followed by dropping punctuation tokens. It runs once
per evaluation on the de-duplicated sentences (one output line per input line, so a sentence is
tokenised the same whatever else is in the batch).

``SimpleTokenizer`` is for machines without Java: lower-case, split clitics the PTB way
("don't" -> "do n't", "man's" -> "man 's"), split punctuation off words, drop the same
punctuation tokens. It agrees with the PTB tokenizer on plain captions but not on every corner
(brackets, symbols, abbreviations), so scores computed with it are not comparable to papers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

# Tokens coco-caption removes after PTB tokenisation.
PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# Characters Java treats as line ends; a caption must stay on one line.
_LINE_BREAKS = str.maketrans({"\n": " ", "\r": " ", "\x0b": " ", "\x0c": " "})
INSTALL_HINT = (
    "Install a Java runtime (e.g. `apt-get install default-jre-headless`), or evaluate without Java "
    "(no_java=True / `cacmi evaluate --no-java`: BLEU, ROUGE-L, CIDEr and localisation only, with a "
    "pure-Python tokenizer whose scores are not comparable to published numbers)."
)


class JavaNotFoundError(RuntimeError):
    """Raised when the Java runtime needed by the PTB tokenizer and METEOR 1.5 is missing."""


def find_java(java: str | os.PathLike = "java") -> str:
    """Return the path of the ``java`` executable or raise ``JavaNotFoundError`` with install help."""
    found = shutil.which(str(java))
    if found is None:
        raise JavaNotFoundError(
            f"Java executable {str(java)!r} was not found; the PTB tokenizer and METEOR 1.5 used by "
            f"every dense-captioning paper run on Java. {INSTALL_HINT}"
        )
    return found


def pycocoevalcap_file(*parts: str) -> Path:
    """Path of a file shipped inside the installed ``pycocoevalcap`` package."""
    import pycocoevalcap  # only needed for its bundled jars

    for root in pycocoevalcap.__path__:
        candidate = Path(root, *parts)
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"pycocoevalcap has no {'/'.join(parts)}; reinstall it with `pip install pycocoevalcap`."
    )


def remove_nonascii(text: str) -> str:
    """Replace every non-ASCII character by a space (what the toolkit does before tokenising)."""
    return _NON_ASCII.sub(" ", text)


def _drop_punctuation(line: str) -> str:
    return " ".join(w for w in line.rstrip().split(" ") if w not in PTB_PUNCTUATION)


class PTBTokenizer:
    """coco-caption's PTB tokenisation (Java, CoreNLP 3.4.1 jar of pycocoevalcap), batched."""

    def __init__(self, java: str | os.PathLike = "java"):
        self.java = find_java(java)
        self.jar = pycocoevalcap_file("tokenizer", "stanford-corenlp-3.4.1.jar")

    def tokenize(self, sentences: Sequence[str]) -> list[str]:
        """Tokenise ``sentences`` with one Java call; returns one space-joined string per input."""
        lines = [s.translate(_LINE_BREAKS) for s in sentences]
        unique = list(dict.fromkeys(line for line in lines if line.strip()))
        tokens: dict[str, str] = {}
        if unique:
            command = [self.java, "-cp", str(self.jar), "edu.stanford.nlp.process.PTBTokenizer",
                       "-preserveLines", "-lowerCase"]
            done = subprocess.run(command, input="\n".join(unique).encode(), capture_output=True)
            if done.returncode != 0:
                raise RuntimeError(
                    f"The PTB tokenizer (Java) failed with exit code {done.returncode}: "
                    f"{done.stderr.decode(errors='replace')[-2000:]}"
                )
            output = done.stdout.decode(errors="replace").split("\n")
            if output and output[-1] == "" and len(output) == len(unique) + 1:
                output.pop()
            if len(output) != len(unique):
                raise RuntimeError(
                    f"The PTB tokenizer returned {len(output)} lines for {len(unique)} sentences; "
                    "a caption probably holds a control character. Remove it and retry."
                )
            tokens = {line: _drop_punctuation(out) for line, out in zip(unique, output)}
        return [tokens.get(line, "") for line in lines]


_CLITICS = re.compile(r"(?<=[a-z0-9])(n't|'s|'re|'ve|'ll|'d|'m)\b")
_WORDS = re.compile(
    r"n't|'(?:s|re|ve|ll|d|m)\b"  # clitics split off above
    r"|[a-z](?:\.[a-z])+\.?"  # abbreviations such as u.s.
    r"|[a-z0-9]+(?:[-./&':][a-z0-9]+)*"  # words, hyphenated words, numbers such as 3.5 or 1:10
    r"|\.\.\.|--|\S"
)
# PTB spells brackets as -LRB- etc.; after lower-casing they no longer match the filter list.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}


class SimpleTokenizer:
    """Pure-Python approximation of the PTB tokenisation; scores are not comparable to papers."""

    def tokenize(self, sentences: Sequence[str]) -> list[str]:
        """Tokenise each sentence; returns one space-joined lower-case string per input."""
        out = []
        for sentence in sentences:
            text = _CLITICS.sub(r" \1", sentence.lower().replace("can't", "ca n't"))
            words = [_BRACKETS.get(w, w) for w in _WORDS.findall(text)]
            out.append(" ".join(w for w in words if w not in PTB_PUNCTUATION and w != '"'))
        return out
