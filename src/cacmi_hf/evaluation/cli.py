"""`cacmi evaluate`: score a dense-captioning prediction file and print a readable table."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from .evaluator import DEFAULT_TIOUS, evaluate_dense_captions, format_scores
from .protocols import DEFAULT_PROTOCOL, PROTOCOLS
from .tokenization import JavaNotFoundError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Attach the options of `cacmi evaluate` to ``parser``."""
    parser.add_argument("predictions", help="prediction JSON ({'results': {video: [{'timestamp', 'sentence'}]}})")
    parser.add_argument("--references", "-r", nargs="+", required=True,
                        help="reference file(s), e.g. val_1.json val_2.json")
    parser.add_argument("--paragraph-references", nargs="+", default=None,
                        help="paragraph reference file(s), e.g. para_val_1.json para_val_2.json")
    parser.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                        help="densevid_eval3 version the caption metrics follow: 2018 (evaluate2018.py, default), "
                             "2021 (evaluate2021.py: unmatched predictions against one unknown word) or 2018_cider "
                             "(evaluate2018_cider.py: each tIoU's pairs of all videos scored as one corpus; no SPICE)")
    parser.add_argument("--paragraph-sort-by-start", action="store_true",
                        help="join each video's sentences in start-time order for the paragraph metrics (default: "
                             "prediction-file order, as para_evaluate.py)")
    parser.add_argument("--tious", nargs="+", type=float, default=list(DEFAULT_TIOUS), help="tIoU thresholds")
    parser.add_argument("--max-proposals-per-video", type=int, default=1000,
                        help="events kept per video for the tIoU-paired metrics (first ones)")
    parser.add_argument("--no-soda", action="store_true", help="skip SODA_c")
    parser.add_argument("--no-java", action="store_true",
                        help="no Java: pure-Python tokenizer, no METEOR/SODA_c (not comparable to papers)")
    parser.add_argument("--java", default="java", help="Java executable")
    parser.add_argument("--meteor-threads", type=int, default=None,
                        help="METEOR aligner threads (default: one per core, at most 4; needs a JDK)")
    parser.add_argument("--per-video", action="store_true", help="include per-video scores in --output")
    parser.add_argument("--output", "-o", default=None, help="write the scores as JSON here")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; returns the exit status (1 on bad input or a missing Java)."""
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda message, *rest: print(f"warning: {message}", file=sys.stderr)
            result = evaluate_dense_captions(
                args.predictions,
                args.references,
                tious=args.tious,
                paragraph_references=args.paragraph_references,
                protocol=args.protocol,
                paragraph_sort_by_start=args.paragraph_sort_by_start,
                max_proposals_per_video=args.max_proposals_per_video,
                soda=not args.no_soda,
                no_java=args.no_java,
                java=args.java,
                meteor_threads=args.meteor_threads,
                per_video=args.per_video,
                progress=not args.quiet,
            )
    except (ValueError, FileNotFoundError, JavaNotFoundError) as err:
        print(f"cacmi evaluate: error: {err}", file=sys.stderr)
        return 1
    print(format_scores(result))
    print(f"({time.perf_counter() - start:.1f} s)")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        print(f"scores written to {args.output}")
    return 0
