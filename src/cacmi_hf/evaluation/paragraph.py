"""Paragraph-level captioning scores (the "para" numbers of PDVC/CM2-style papers).

As CM2's ``densevid_eval3/para_evaluate.py`` computes them: each video's predicted sentences are
joined, in the order of the prediction file (not re-sorted; ``sort_by_start=True`` sorts them by
start time first), into one paragraph ("s1. s2. ...") and scored, corpus-level, against the
paragraph reference of that video in every paragraph file given (ActivityNet Entities
``para_val_{1,2}.json`` or YouCook2 ``para_yc2_val.json``). Text is normalised with that script's
rule: every character that is not an ASCII letter becomes a space, then lower-case and whitespace
split (no PTB tokenizer here). Video ids must match exactly: the script also prefixes "v_" to every
key of a file whose first key lacks it, which only matters when files disagree on the prefix. Videos with paragraph references but no prediction
are scored with an empty paragraph. BLEU and METEOR are corpus-level over all videos, ROUGE-L
the mean over videos, CIDEr-D with document frequencies over all videos' references.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Sequence

import numpy as np
from ..progress import progress as progress_bar

from .io import ParagraphSet, VideoEvents
from .meteor import Meteor, aggregate_statistics
from .ngram_metrics import ngram_set_scores, rouge_l

PARAGRAPH_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
_NOT_LETTER = re.compile(r"[^a-zA-Z]")


def normalize_paragraph(text: str) -> str:
    """Letters only, lower-cased, single-spaced."""
    return " ".join(_NOT_LETTER.sub(" ", text).lower().split())


def predicted_paragraph(events: VideoEvents | None, sort_by_start: bool = False) -> str:
    """The normalised paragraph of one video's predictions, in the given order (or start-time order)."""
    if events is None or len(events) == 0:
        return ""
    if sort_by_start:
        events = events.sorted_by_start()
    return normalize_paragraph(" ".join(s + ". " for s in events.sentences))


def paragraph_texts(
    predictions: Mapping[str, VideoEvents], references: Sequence[ParagraphSet], sort_by_start: bool = False
) -> tuple[list[str], list[str], list[list[str]]]:
    """Videos with a paragraph reference, their predicted paragraphs and their normalised references."""
    video_ids: dict[str, None] = {}
    for ref in references:
        video_ids.update(dict.fromkeys(ref.paragraphs))
    hyps, refs = [], []
    for vid in video_ids:
        hyps.append(predicted_paragraph(predictions.get(vid), sort_by_start))
        refs.append([normalize_paragraph(r.paragraphs[vid]) for r in references if vid in r.paragraphs])
    return list(video_ids), hyps, refs


def paragraph_scores(
    predictions: Mapping[str, VideoEvents],
    references: Sequence[ParagraphSet],
    meteor: Meteor | None,
    progress: bool = False,
    texts: tuple[list[str], list[str], list[list[str]]] | None = None,
    sort_by_start: bool = False,
) -> dict[str, object]:
    """Corpus paragraph scores ``{metric: value, ..., "videos": n}``; METEOR is None without Java.

    ``texts`` may pass ``paragraph_texts`` of the same arguments, computed earlier.
    """
    video_ids, hyps, refs = texts if texts is not None else paragraph_texts(predictions, references, sort_by_start)
    result: dict[str, object] = {name: 0.0 for name in PARAGRAPH_METRICS}
    result["videos"] = len(hyps)
    result["predicted_videos"] = sum(1 for vid in video_ids if vid in predictions)
    if not hyps:
        return result

    def meteor_score() -> float:
        return float(aggregate_statistics(meteor.statistics_array(list(zip(hyps, refs)), progress), [len(hyps)])[0])

    # As for the caption sets: METEOR's Java process works while this thread computes the n-gram metrics.
    with ThreadPoolExecutor(max_workers=1) as pool:
        meteor_future = pool.submit(meteor_score) if meteor is not None else None
        ngram = ngram_set_scores([list(zip(hyps, refs))])[0]  # BLEU-1..4, CIDEr-D of the one corpus-level set
        result.update(zip(PARAGRAPH_METRICS[:4], ngram[:4].tolist()))
        rouge = [rouge_l(h, r) for h, r in progress_bar(list(zip(hyps, refs)), desc="paragraph ROUGE-L",
                                              enabled=progress, leave=False)]
        result["ROUGE_L"] = float(np.mean(np.array(rouge)))
        result["CIDEr"] = float(ngram[4])
        result["METEOR"] = meteor_future.result() if meteor_future is not None else None
    return result
