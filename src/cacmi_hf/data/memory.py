"""The CFA text memory bank: CLIP text embeddings of every training caption, and `cacmi build-memory`.

On disk, a folder with
- `memory_bank.safetensors`: `embeddings (M, dim)` float32, L2-normalised, and `video_index (M,)` int64
  (position of each caption's video in `video_ids`);
- `memory_bank.json`: `video_ids` (ordered list), `sentences` (M, stripped), `clip` (the open_clip
  model name, config and preprocessing used) and `num_entries` / `dim`.
Load it with `load_memory_bank(folder)` and hand it to the model with
`model.set_memory_bank(bank.embeddings, bank.video_index)`; the collator takes `bank.video_lookup` so
training batches carry each video's bank index for the retrieval exclusion.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "memory_bank.safetensors"
INDEX_NAME = "memory_bank.json"


@dataclass
class MemoryBankData:
    """A text memory bank: embeddings `(M, dim)`, `video_index (M,)`, the ordered `video_ids` and the `sentences`."""

    embeddings: torch.Tensor
    video_index: torch.Tensor
    video_ids: list[str]
    sentences: list[str]
    clip: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.embeddings.dim() != 2:
            raise ValueError(f"Memory bank embeddings must be (M, dim), got {tuple(self.embeddings.shape)}.")
        num = self.embeddings.shape[0]
        if tuple(self.video_index.shape) != (num,) or len(self.sentences) != num:
            raise ValueError(
                f"Memory bank sizes disagree: embeddings {num}, video_index {tuple(self.video_index.shape)}, "
                f"sentences {len(self.sentences)}."
            )
        if num and (int(self.video_index.min()) < 0 or int(self.video_index.max()) >= len(self.video_ids)):
            raise ValueError(f"Memory bank video_index must lie in [0, {len(self.video_ids)}) (the video_ids list).")

    @property
    def video_lookup(self) -> dict[str, int]:
        """`{video_id: index}` into `video_ids` (what the collator needs for `video_ids`)."""
        return {vid: i for i, vid in enumerate(self.video_ids)}

    @property
    def num_entries(self) -> int:
        """Number of captions M."""
        return self.embeddings.shape[0]

    @property
    def dim(self) -> int:
        """Embedding size."""
        return self.embeddings.shape[1]


def build_memory_bank(
    pairs: Sequence[tuple[str, str]],
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    clip: dict[str, Any] | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> MemoryBankData:
    """Embed `(video_id, sentence)` pairs with an open_clip text tower into a `MemoryBankData` (batched, normalised)."""
    from ..open_clip_tower import encode_texts

    if not pairs:
        raise ValueError("No captions to embed: the memory bank needs at least one training sentence.")
    video_ids: list[str] = []
    lookup: dict[str, int] = {}
    index = []
    for vid, _ in pairs:
        if vid not in lookup:
            lookup[vid] = len(video_ids)
            video_ids.append(vid)
        index.append(lookup[vid])
    sentences = [s.strip() for _, s in pairs]
    chunks = []
    starts = range(0, len(sentences), batch_size)
    if progress:
        from ..progress import progress as progress_bar

        starts = progress_bar(starts, desc="memory bank", unit="batch")
    for start in starts:
        chunks.append(encode_texts(model, sentences[start : start + batch_size], tokenizer, batch_size=batch_size))
    embeddings = torch.cat(chunks).float()
    return MemoryBankData(embeddings, torch.tensor(index, dtype=torch.long), video_ids, sentences, clip or {})


def save_memory_bank(bank: MemoryBankData, folder: str | os.PathLike) -> Path:
    """Write `memory_bank.safetensors` + `memory_bank.json` into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {"embeddings": bank.embeddings.float().contiguous(), "video_index": bank.video_index.long().contiguous()},
        str(folder / WEIGHTS_NAME),
        metadata={"format": "pt"},
    )
    meta = {
        "num_entries": bank.num_entries,
        "dim": bank.dim,
        "clip": bank.clip,
        "video_ids": bank.video_ids,
        "sentences": bank.sentences,
    }
    (folder / INDEX_NAME).write_text(json.dumps(meta, ensure_ascii=False))
    return folder


def load_memory_bank(path: str | os.PathLike) -> MemoryBankData:
    """Read a memory-bank folder (or its `memory_bank.safetensors`) written by `save_memory_bank`."""
    from safetensors.torch import load_file

    path = Path(path)
    folder = path.parent if path.suffix == ".safetensors" else path
    weights, index = folder / WEIGHTS_NAME, folder / INDEX_NAME
    for needed in (weights, index):
        if not needed.is_file():
            raise FileNotFoundError(f"Memory bank file missing: {needed} (build it with `cacmi build-memory`).")
    tensors = load_file(str(weights))
    meta = json.loads(index.read_text(encoding="utf-8"))
    return MemoryBankData(tensors["embeddings"], tensors["video_index"], meta["video_ids"], meta["sentences"], meta.get("clip", {}))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cacmi build-memory`."""
    parser.add_argument("annotations", help="Annotation file, folder, {split: file} source or hub dataset id.")
    parser.add_argument("--out", required=True, help="Output folder (memory_bank.safetensors + memory_bank.json).")
    parser.add_argument("--clip", default="ViT-L-14", help="open_clip model name or local-dir folder (default: ViT-L-14).")
    parser.add_argument(
        "--pretrained", default=None,
        help="CLIP weights: a local file or local-dir folder, or an open_clip tag such as 'openai' (downloads).",
    )
    parser.add_argument("--split", default="train", help="Split whose captions fill the bank (default: train).")
    parser.add_argument("--batch-size", type=int, default=256, help="Sentences per text-tower batch.")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu).")
    parser.add_argument("--quick-gelu", action="store_true", default=None, help="Force QuickGELU (OpenAI weights).")


def run(args: argparse.Namespace) -> int:
    """Embed the training captions with the CLIP text tower and save the bank."""
    from ..open_clip_tower import get_text_tokenizer, load_open_clip
    from .annotations import load_dense_captions, training_sentences

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.pretrained is None and not (str(args.clip).startswith("local-dir:") or Path(args.clip).is_dir()):
        raise SystemExit("build-memory needs CLIP weights: pass --pretrained PATH|openai or a local-dir --clip folder.")
    pairs = training_sentences(load_dense_captions(args.annotations), args.split)
    model, spec = load_open_clip(args.clip, args.pretrained, allow_download=True, quick_gelu=args.quick_gelu)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    bank = build_memory_bank(
        pairs, model, get_text_tokenizer(spec), clip=spec.to_dict(), batch_size=args.batch_size, progress=True
    )
    save_memory_bank(bank, args.out)
    print(f"Saved a memory bank of {bank.num_entries} captions from {len(bank.video_ids)} videos (dim {bank.dim}) to {args.out}")
    return 0


__all__ = ["MemoryBankData", "build_memory_bank", "load_memory_bank", "save_memory_bank"]
