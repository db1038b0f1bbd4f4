"""Dense video captioning evaluation: the densevid protocols (2018, 2021, 2018_cider), SODA_c and paragraph scores.

Standalone (no torch, no transformers): ``evaluate_dense_captions`` for Python, the
``cacmi evaluate`` command, and an ``evaluate`` metric at ``metric_path()``.
"""

from pathlib import Path

from .captioning import GARBAGE_REFERENCE
from .evaluator import DEFAULT_TIOUS, evaluate_dense_captions, format_scores, summary_line
from .localization import precision_recall, tiou, tiou_matrix
from .meteor import Meteor, shared_meteor
from .protocols import DEFAULT_PROTOCOL, PROTOCOLS, protocol_label
from .soda import soda_alignment_score
from .tokenization import JavaNotFoundError, PTBTokenizer, SimpleTokenizer


def metric_path() -> str:
    """Folder of the ``evaluate`` metric script: ``evaluate.load(metric_path())`` works offline."""
    return str(Path(__file__).resolve().parent / "dense_captioning")


__all__ = [
    "DEFAULT_PROTOCOL",
    "DEFAULT_TIOUS",
    "GARBAGE_REFERENCE",
    "JavaNotFoundError",
    "Meteor",
    "PROTOCOLS",
    "PTBTokenizer",
    "SimpleTokenizer",
    "evaluate_dense_captions",
    "format_scores",
    "metric_path",
    "precision_recall",
    "protocol_label",
    "shared_meteor",
    "soda_alignment_score",
    "summary_line",
    "tiou",
    "tiou_matrix",
]
