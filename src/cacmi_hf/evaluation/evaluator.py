"""`evaluate_dense_captions`: the field's dense-captioning numbers in one call.

One evaluation run tokenises every distinct sentence with one PTB tokenizer call, keeps one
METEOR process for all of its metrics, and scores per video or pooled as the chosen densevid
protocol demands (see ``protocols``, ``captioning``, ``localization``, ``soda`` and ``paragraph``
for the definitions).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from .captioning import (
    CAPTION_METRICS,
    GARBAGE_REFERENCE,
    CaptionSetScorer,
    caption_scores,
    caption_sets,
    meteor_requests,
    pooled_sets,
)
from .io import VideoEvents, load_paragraphs, load_predictions, load_references, reference_video_ids
from .localization import f1_score, precision_recall
from .meteor import Meteor
from .paragraph import PARAGRAPH_METRICS, paragraph_scores, paragraph_texts
from .protocols import DEFAULT_PROTOCOL, NOT_COMPUTED, check_protocol, pools_videos, protocol_label, unmatched_reference
from .soda import soda_c, soda_requests
from .tokenization import PTBTokenizer, SimpleTokenizer, remove_nonascii

DEFAULT_TIOUS = (0.3, 0.5, 0.7, 0.9)
LOCALIZATION_METRICS = ("Precision", "Recall", "F1")


def _check_tious(tious: Sequence[float]) -> list[float]:
    values = [float(t) for t in tious]
    if not values:
        raise ValueError("tious is empty; pass thresholds such as (0.3, 0.5, 0.7, 0.9).")
    for t in values:
        if not (math.isfinite(t) and 0.0 <= t <= 1.0):
            raise ValueError(f"tIoU threshold {t!r} is outside [0, 1].")
    return values


def _tiou_key(threshold: float) -> str:
    return f"{threshold:g}"


def evaluate_dense_captions(
    predictions: Any,
    references: Any,
    tious: Sequence[float] = DEFAULT_TIOUS,
    paragraph_references: Any = None,
    *,
    protocol: str = DEFAULT_PROTOCOL,
    paragraph_sort_by_start: bool = False,
    max_proposals_per_video: int = 1000,
    soda: bool = True,
    no_java: bool = False,
    java: str = "java",
    meteor: Meteor | None = None,
    meteor_processes: int = 1,
    meteor_threads: int | None = None,
    per_video: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Score dense captions with a densevid protocol (2018 by default), SODA_c and paragraph metrics.

    Args:
        predictions: a submission JSON path or dict (``{"results": {video: [event]}}``), a mapping
            ``{video: [event]}`` or a list of records; events carry ``timestamp`` and ``sentence``
            (or ``caption``).
        references: one or several reference files (paths or loaded dicts) in the ActivityNet
            Captions format; scores use the union of their videos.
        tious: tIoU thresholds averaged over.
        paragraph_references: optional paragraph reference file(s) ``{video: paragraph}``.
        protocol: ``"2018"`` (default), ``"2021"`` or ``"2018_cider"``: which of densevid_eval3's
            evaluate2018.py / evaluate2021.py / evaluate2018_cider.py the caption metrics follow
            (see ``protocols``); localisation, SODA_c and paragraphs are the same under all three.
        paragraph_sort_by_start: join each video's predicted sentences in start-time order for the
            paragraph metrics; by default they keep the prediction file's order, as CM2's
            ``para_evaluate.py`` does.
        max_proposals_per_video: events kept per video (first ones, in the given order) for the
            tIoU-paired metrics, as the toolkit does; SODA_c and paragraphs use all events.
        soda: compute SODA_c (needs METEOR).
        no_java: use the pure-Python tokenizer and skip METEOR and SODA_c; the result is flagged
            ``comparable_to_papers = False``.
        java: the Java executable.
        meteor: a running ``Meteor`` to use (and leave running), e.g. ``shared_meteor()`` when
            evaluating repeatedly; by default a process is started and stopped for this call.
        meteor_processes: Java processes sharing this call's alignments when it starts its own
            METEOR (each loads only the paraphrases of this run's sentences, in seconds). One by
            default: on two cores a second process competes with the n-gram metrics and was slower.
        meteor_threads: aligner threads in that process (default: one per CPU core, at most 4;
            see ``Meteor``).
        per_video: also return each video's scores (mean over thresholds); under 2018_cider, which
            scores no video on its own, a video's caption metrics are None.
        progress: show progress bars.

    Returns:
        A JSON-serialisable dict: ``average`` and ``per_tiou`` (``Bleu_1..4``, ``METEOR``,
        ``ROUGE_L``, ``CIDEr``, ``Precision``, ``Recall``, ``F1``; fractions, not percentages),
        ``SODA_c`` (mean F1 over reference files) and ``SODA_c_per_reference``, ``paragraph``
        (or None), ``videos`` (counts of reference, evaluated, missing and unknown videos),
        ``protocol``, ``not_computed`` (metrics of the protocol's script left out, with why) and
        the other settings used.
    """
    check_protocol(protocol)  # before any work, as the other arguments below
    thresholds = _check_tious(tious)
    if meteor_threads is not None and meteor_threads < 1:  # before minutes of work, not after
        raise ValueError(f"meteor_threads must be >= 1, got {meteor_threads}.")
    own_meteor = meteor is None and not no_java
    if no_java:
        meteor = None
    if own_meteor:
        # The JVM loads METEOR (about a second) while the files are read and tokenised below.
        meteor = Meteor(java, processes=meteor_processes, threads=meteor_threads, defer_texts=True)
    try:
        preds = load_predictions(predictions)
        refs = load_references(references)
        paragraphs = load_paragraphs(paragraph_references) if paragraph_references is not None else None
        capped = {
            vid: VideoEvents(ev.segments[:max_proposals_per_video], ev.sentences[:max_proposals_per_video])
            for vid, ev in preds.items()
        }
        video_ids = reference_video_ids(refs)
        known = set(video_ids)
        unknown = [vid for vid in preds if vid not in known]
        evaluated = [vid for vid in video_ids if vid in preds]
        if preds and not evaluated:
            raise ValueError(
                f"None of the {len(preds)} predicted videos (e.g. {unknown[0]!r}) is in the references "
                f"(e.g. {video_ids[0]!r}); video ids must match exactly (ActivityNet ids start with 'v_')."
            )
        if unknown:
            warnings.warn(
                f"{len(unknown)} predicted videos are not in the references and are ignored "
                f"(e.g. {unknown[:3]}).",
                stacklevel=2,
            )

        tokenizer = SimpleTokenizer() if no_java else PTBTokenizer(java)
        raw = [GARBAGE_REFERENCE]
        raw += [s for ev in preds.values() for s in ev.sentences]
        raw += [s for ref in refs for ev in ref.videos.values() for s in ev.sentences]
        unique = list(dict.fromkeys(raw))
        cleaned = [remove_nonascii(s) for s in unique]
        para_texts = paragraph_texts(preds, paragraphs, paragraph_sort_by_start) if paragraphs else ([], [], [])
        _, para_hyps, para_refs = para_texts
        tokens = dict(zip(unique, tokenizer.tokenize(cleaned)))
        # The 2021 protocol's never-matching word: one no hypothesis word of this run begins like.
        unmatched = unmatched_reference(protocol, (w for ev in preds.values() for s in ev.sentences for w in tokens[s].split()))
    except BaseException:
        if own_meteor:
            meteor.close()
        raise
    try:
        if own_meteor:
            # Knowing every sentence of the run, METEOR loads only the paraphrases they can use (a fraction of a
            # second, not ~45 s of the whole table).
            meteor.set_texts([*tokens.values(), *([unmatched] if unmatched else []), *para_hyps,
                              *(r for refs_ in para_refs for r in refs_)])

        num_t, num_v = len(thresholds), len(video_ids)
        sets = caption_sets(capped, refs, video_ids, thresholds, tokens, unmatched)
        if meteor is not None:
            # Queue every alignment of the run up front, so METEOR never waits for Python: the
            # n-gram metrics, SODA_c's matching and the paragraph metrics run beside it.
            meteor.prefetch([meteor_requests(sets)], progress)
            soda_layouts = [soda_requests(preds, ref, tokens) for ref in refs] if soda else []
            groups = [layout[2] for layout in soda_layouts]
            meteor.prefetch(groups + ([list(zip(para_hyps, para_refs))] if paragraphs else []), progress)
        # localisation while METEOR aligns
        precision, recall = np.zeros((num_t, num_v)), np.zeros((num_t, num_v))
        for k, vid in enumerate(video_ids):
            video = capped.get(vid)
            segments = video.segments if video is not None else np.zeros((0, 2))
            ref_segments = [ref.videos[vid].segments for ref in refs if vid in ref.videos]
            precision[:, k], recall[:, k] = precision_recall(segments, ref_segments, thresholds)

        if pools_videos(protocol):  # one corpus per threshold: (T, 7), no per-video caption scores
            per_threshold = CaptionSetScorer(meteor).score_sets(pooled_sets(sets, num_t), progress)
            captions = None
        else:  # (T, V, 7); the per-threshold score is the mean over videos
            captions = caption_scores(
                capped, refs, video_ids, thresholds, tokens, CaptionSetScorer(meteor), progress, sets=sets
            )
            per_threshold = np.array([[captions[t, :, m].mean() for m in range(len(CAPTION_METRICS))] for t in range(num_t)])

        soda_results = None
        if soda and meteor is not None:
            soda_results = {
                ref.name: soda_c(preds, ref, tokens, meteor, progress, prepared=layout)
                for ref, layout in zip(refs, soda_layouts)
            }
        para = paragraph_scores(preds, paragraphs, meteor, progress, texts=para_texts) if paragraphs else None
    finally:
        if own_meteor:
            meteor.close()

    per_tiou: dict[str, dict[str, float | None]] = {}
    for t, threshold in enumerate(thresholds):
        row = {name: float(per_threshold[t, m]) for m, name in enumerate(CAPTION_METRICS)}
        row["Precision"], row["Recall"] = float(precision[t].mean()), float(recall[t].mean())
        row["F1"] = f1_score(row["Precision"], row["Recall"])
        per_tiou[_tiou_key(threshold)] = row
    average = {name: float(np.mean([per_tiou[_tiou_key(t)][name] for t in thresholds])) for name in CAPTION_METRICS}
    average["Precision"] = float(np.mean([per_tiou[_tiou_key(t)]["Precision"] for t in thresholds]))
    average["Recall"] = float(np.mean([per_tiou[_tiou_key(t)]["Recall"] for t in thresholds]))
    average["F1"] = f1_score(average["Precision"], average["Recall"])
    if meteor is None:
        average["METEOR"] = None
        for row in per_tiou.values():
            row["METEOR"] = None

    result: dict[str, Any] = {
        "average": average,
        "per_tiou": per_tiou,
        "SODA_c": None,
        "SODA_c_per_reference": None,
        "paragraph": None,
        "videos": {
            "references": num_v,
            "evaluated": len(evaluated),
            "missing": num_v - len(evaluated),
            "unknown": len(unknown),
        },
        "protocol": protocol,
        "not_computed": dict(NOT_COMPUTED.get(protocol, {})),
        "tious": thresholds,
        "reference_files": [ref.name for ref in refs],
        "max_proposals_per_video": max_proposals_per_video,
        "tokenizer": "simple (pure Python)" if no_java else "ptb (Stanford CoreNLP 3.4.1)",
        "comparable_to_papers": not no_java,
    }
    if soda_results is not None:
        result["SODA_c"] = float(np.mean([r["f1"] for r in soda_results.values()]))
        result["SODA_c_per_reference"] = {
            name: {k: r[k] for k in ("precision", "recall", "f1", "videos")} for name, r in soda_results.items()
        }
    if para is not None:
        result["paragraph"] = para
        result["paragraph_reference_files"] = [p.name for p in paragraphs]
        result["paragraph_order"] = "start time" if paragraph_sort_by_start else "prediction file"
    if per_video:
        videos = {}
        for k, vid in enumerate(video_ids):
            entry = {name: None if captions is None else float(captions[:, k, m].mean())
                     for m, name in enumerate(CAPTION_METRICS)}
            if meteor is None:
                entry["METEOR"] = None
            entry["Precision"], entry["Recall"] = float(precision[:, k].mean()), float(recall[:, k].mean())
            if soda_results is not None:
                entry["SODA_c"] = {n: r["per_video"].get(vid) for n, r in soda_results.items()}
            videos[vid] = entry
        result["per_video"] = videos
    return result


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def format_scores(result: dict[str, Any]) -> str:
    """A readable table of an ``evaluate_dense_captions`` result (scores in percent)."""
    names = list(CAPTION_METRICS) + list(LOCALIZATION_METRICS)
    videos = result["videos"]
    protocol = result.get("protocol", "2018")
    lines = [
        f"Dense captioning ({protocol_label(protocol)} protocol), {videos['references']} reference videos: "
        f"{videos['evaluated']} evaluated, "
        f"{videos['missing']} without predictions (scored 0), {videos['unknown']} predicted videos not in "
        f"the references (ignored). Scores in %.",
    ]
    for name, why in (result.get("not_computed") or {}).items():
        lines.append(f"{name} of the {protocol} script: {why}.")
    if not result["comparable_to_papers"]:
        lines.append("WARNING: pure-Python tokenizer, no METEOR/SODA_c: not comparable to published numbers.")
    width = max(len(n) for n in names) + 1
    lines.append("tIoU".ljust(6) + "".join(n.rjust(width) for n in names))
    rows = list(result["per_tiou"].items()) + [("mean", result["average"])]
    for label, row in rows:
        lines.append(label.ljust(6) + "".join(_percent(row[n]).rjust(width) for n in names))
    if result["SODA_c"] is not None:
        parts = ", ".join(f"{name} {_percent(r['f1'])}" for name, r in result["SODA_c_per_reference"].items())
        lines.append(f"SODA_c {_percent(result['SODA_c'])}  ({parts})")
    para = result.get("paragraph")
    if para:
        scores = "  ".join(f"{n} {_percent(para[n])}" for n in PARAGRAPH_METRICS)
        order = result.get("paragraph_order", "prediction file")
        lines.append(f"Paragraph ({para['videos']} videos, {para['predicted_videos']} predicted, sentences in "
                     f"{order} order): {scores}")
    return "\n".join(lines)


def summary_line(result: dict[str, Any]) -> str:
    """One log line of an ``evaluate_dense_captions`` result that names its protocol (scores in percent)."""
    average = result["average"]
    names = (("Bleu_4", "BLEU-4"), ("METEOR", "METEOR"), ("ROUGE_L", "ROUGE-L"), ("CIDEr", "CIDEr"),
             ("Precision", "P"), ("Recall", "R"), ("F1", "F1"))
    parts = [f"{label} {_percent(average[key])}" for key, label in names]
    if result.get("SODA_c") is not None:
        parts.append(f"SODA_c {_percent(result['SODA_c'])}")
    tious = "/".join(f"{t:g}" for t in result["tious"])
    return (f"{protocol_label(result.get('protocol', DEFAULT_PROTOCOL))} protocol, mean over tIoU {tious}, "
            f"{result['videos']['evaluated']} of {result['videos']['references']} videos (%): " + ", ".join(parts))
