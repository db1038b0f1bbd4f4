"""Convert PDVC and CM2 checkpoints into `CACMIForDenseCaptioning` folders (`cacmi convert pdvc|cm2`).

    from cacmi_hf.convert import convert_checkpoint
    convert_checkpoint("pdvc", "save/anet_c3d_pdvc/model-best.pth", "pdvc-anet-c3d")

reads the reference's `model-best.pth` and the training options beside it (`info.json`), builds the matching
`CACMIConfig`, maps every tensor (each reference tensor used once or dropped with a stated reason, none of ours
left at its initial value), converts the caption vocabulary (and CM2's memory bank) and writes a
`save_pretrained` folder with the processor, a model card and `conversion.json` (what was dropped and why).
Any problem raises `ConversionError` before anything is written; the folder appears only when complete.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import ConversionError, load_checkpoint, load_options, write_atomically

SOURCES = ("pdvc", "cm2")


@dataclass
class Converted:
    """A converted model before it is written: the model, its processor, card fields and the tensor accounting."""

    model: Any
    processor: Any
    card: dict[str, Any]
    dropped: dict[str, str] = field(default_factory=dict)
    copies: int = 0


def convert(
    source: str,
    checkpoint: str | os.PathLike,
    memory_bank: str | os.PathLike | None = None,
    vocabulary: str | os.PathLike | None = None,
    options: str | os.PathLike | None = None,
) -> Converted:
    """Convert in memory (nothing written): a `Converted` with the model in eval mode and its processor."""
    if source not in SOURCES:
        raise ConversionError(f"unknown source {source!r}; choose one of {SOURCES}.")
    checkpoint = Path(checkpoint)
    loaded = load_checkpoint(checkpoint)
    try:
        opt = load_options(loaded, checkpoint, options)
    except ConversionError:
        # CM2's published model-best.pth comes without info.json: its published options, when they fit
        if source != "cm2" or options is not None or not isinstance(loaded.get("model"), dict):
            raise
        from .convert_cm2_to_hf import is_cm2_state_dict, published_options

        if not is_cm2_state_dict(loaded["model"]):
            raise
        opt = published_options(loaded["model"])
    if source == "pdvc":
        from .convert_pdvc_to_hf import convert_pdvc

        return convert_pdvc(loaded["model"], opt, checkpoint, vocabulary)
    from .convert_cm2_to_hf import convert_cm2

    return convert_cm2(loaded["model"], opt, checkpoint, vocabulary, memory_bank)


def convert_checkpoint(
    source: str,
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    memory_bank: str | os.PathLike | None = None,
    vocabulary: str | os.PathLike | None = None,
    options: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert `checkpoint` of `source` ("pdvc" | "cm2") and write the folder `output`; returns its path."""
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise ConversionError(f"output {output} already exists and is not empty; choose another folder or pass --overwrite.")
    converted = convert(source, checkpoint, memory_bank, vocabulary, options)

    def write(folder: Path) -> None:
        from .card import write_model_card

        converted.model.save_pretrained(folder)
        converted.processor.save_pretrained(folder)
        card = dict(converted.card, name=output.name, kind=source, date=datetime.date.today().isoformat())
        write_model_card(folder, card)
        report = {
            "source": source,
            "checkpoint": str(checkpoint),
            "dropped": converted.dropped,
            "repeated_tensors_checked": converted.copies,
        }
        (folder / "conversion.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    return write_atomically(output, write, overwrite=overwrite)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cacmi convert`."""
    parser.add_argument("source", choices=SOURCES, help="Which reference the checkpoint comes from.")
    parser.add_argument("--checkpoint", required=True, help="The reference's model-best.pth.")
    parser.add_argument("--output", required=True, help="Folder to write (must not exist or be empty).")
    parser.add_argument("--memory-bank", help="CM2: its bank folder (bank/<anet|yc2>/clip/*.npy) or the clip folder itself.")
    parser.add_argument("--vocabulary", help="The reference's vocabulary json (default: the options' dict_file, "
                        "as given or beside the checkpoint).")
    parser.add_argument("--options", help="The training options (default: the checkpoint's 'opt' or info.json beside it).")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing output folder.")


def run(args: argparse.Namespace) -> int:
    """`cacmi convert`: write the folder, or print the error and return 1 (nothing written)."""
    import sys

    try:
        path = convert_checkpoint(
            args.source, args.checkpoint, args.output, memory_bank=args.memory_bank, vocabulary=args.vocabulary,
            options=args.options, overwrite=args.overwrite,
        )
    except ConversionError as err:
        print(f"cacmi convert {args.source}: {err}", file=sys.stderr)
        return 1
    print(f"Converted {args.source} checkpoint {args.checkpoint} -> {path}")
    return 0


__all__ = ["ConversionError", "Converted", "SOURCES", "add_arguments", "convert", "convert_checkpoint", "run"]
