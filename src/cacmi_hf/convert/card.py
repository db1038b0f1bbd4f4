"""The model card (README.md) of a converted PDVC / CM2 checkpoint: where it comes from, its licence, what it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TEMPLATE = """---
library_name: cacmi_hf
pipeline_tag: video-text-to-text
license: mit
tags:
- dense-video-captioning
- converted
---

# {name}

{source} weights converted to `CACMIForDenseCaptioning` with `cacmi convert {kind}`
(checkpoint `{checkpoint}`, {date}). The original code and weights are MIT-licensed: {source_url}.
The converted model computes what the reference computes on the same inputs (see "Parity with the reference
code" in BENCHMARKS.md of cacmi_hf for the measured differences).

## Inputs

{features}

{feature_note}

## Use

```python
from transformers import pipeline
import cacmi_hf  # registers the task

captioner = pipeline("dense-video-captioning", model="{name}")
{example}
```

## Metrics

The reference's authors report their numbers for this kind of model: {reported}. They were not measured again
on this conversion.

## Conversion

{conversion}
"""


def model_card(fields: dict[str, Any]) -> str:
    """The card text with `fields` filled in (missing ones say "not given")."""

    class _Default(dict):
        def __missing__(self, key):
            return "not given"

    return TEMPLATE.format_map(_Default(fields))


def write_model_card(folder: Path, fields: dict[str, Any]) -> None:
    """README.md of a converted folder."""
    (folder / "README.md").write_text(model_card(fields), encoding="utf-8")


__all__ = ["TEMPLATE", "model_card", "write_model_card"]
