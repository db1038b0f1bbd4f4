"""`cacmi card`: write a Hub model card for a benchmark preset, filled from our own evaluation JSON.

    cacmi card --eval scores.json --preset activitynet --model-id user/cacmi-activitynet --out model/README.md

`--eval` is the file `cacmi evaluate ... --output scores.json` wrote for the checkpoint on the
benchmark's reported split; without it every number of ours is "not measured" and the card has no
`model-index`. The paper's numbers are always shown, in their own column.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cacmi card`."""
    from ..model_card import BENCHMARKS

    parser.add_argument("--preset", required=True, choices=sorted(BENCHMARKS), help="Benchmark the card describes.")
    parser.add_argument(
        "--eval", dest="evaluation", default=None, metavar="SCORES.json",
        help="Evaluation JSON of this checkpoint (`cacmi evaluate --output`); omit it and ours read 'not measured'.",
    )
    parser.add_argument("--model-id", default=None, help="Hub id or folder the usage examples load (default: cacmi-<preset>).")
    parser.add_argument("--out", default=None, metavar="README.md", help="Write the card here (default: print it).")
    parser.add_argument(
        "--allow-incomparable", action="store_true",
        help="Accept scores made without Java (no PTB tokenizer / METEOR); the card then carries a warning.",
    )


def run(args: argparse.Namespace) -> int:
    """Render the card; print it or write it to --out. Bad input exits 1 with the reason."""
    from ..model_card import render_model_card, write_model_card

    options = dict(model_id=args.model_id, allow_incomparable=args.allow_incomparable)
    try:
        if args.out:
            path = write_model_card(args.out, args.preset, args.evaluation, **options)
            print(f"model card written to {path}")
        else:
            sys.stdout.write(render_model_card(args.preset, args.evaluation, **options))
    except (ValueError, FileNotFoundError) as err:
        print(f"cacmi card: error: {err}", file=sys.stderr)
        return 1
    return 0


__all__ = ["add_arguments", "run"]
