"""Data for CACMI: annotation loaders, lazily attached features, the collator, and the data CLIs."""

from .annotations import load_activitynet_captions, load_dense_captions, load_youcook2
from .collator import DenseCaptioningCollator
from .features import attach_features, resize_features
from .memory import MemoryBankData, build_memory_bank, load_memory_bank, save_memory_bank
from .vocab import build_caption_tokenizer

__all__ = [
    "DenseCaptioningCollator",
    "MemoryBankData",
    "attach_features",
    "build_caption_tokenizer",
    "build_memory_bank",
    "load_activitynet_captions",
    "load_dense_captions",
    "load_memory_bank",
    "load_youcook2",
    "resize_features",
    "save_memory_bank",
]
