"""Pre-flight checks: catch a bad data/model set-up before the first training step, with the fix in the message.

Each check raises `TrainingSetupError` (a ValueError) naming the file or split, the offending value
and what to do. `attach_features` (data package) already refuses videos whose features are missing
or malformed when the dataset is loaded; these checks cover what only the combination reveals.
"""

from __future__ import annotations

from typing import Any, Mapping


class TrainingSetupError(ValueError):
    """A configuration problem found before training starts."""


def check_splits(splits: Mapping[str, Any], source: str = "the annotations") -> None:
    """Every split used for training or evaluation has at least one video (and at least one event to learn)."""
    for role, dataset in splits.items():
        if dataset is None:
            continue
        if len(dataset) == 0:
            raise TrainingSetupError(
                f"The {role} split of {source} has no videos (after filtering for features / --max_*_videos). "
                f"Check the annotation file and the split name, or point --{role}_split at a non-empty split."
            )
    train = splits.get("train")
    if train is not None:
        counts = train.with_format(None)["timestamps"]
        if not any(len(c) for c in counts):
            raise TrainingSetupError(
                f"The train split of {source} has {len(train)} videos but no annotated event; nothing to learn from."
            )


def check_feature_dim(feature_dim: int, config: Any, features: Any) -> None:
    """The features' size D equals `config.feature_dim`."""
    if feature_dim != config.feature_dim:
        raise TrainingSetupError(
            f"The features in {features} have D={feature_dim} but the model expects feature_dim={config.feature_dim}. "
            f"Extract features with the CLIP model the config names, or set --config_overrides feature_dim={feature_dim} "
            "(and rebuild the memory bank with the same CLIP)."
        )


def check_memory_bank(bank: Any, config: Any, path: Any, train_video_ids: list[str] | None = None) -> None:
    """The bank exists when CFA is on, its embedding size is the model's text size, and it knows every training video (same-video exclusion)."""
    if not config.use_cfa:
        return
    if bank is None:
        raise TrainingSetupError(
            "CFA is on (use_cfa=True) but no memory bank was given: build one from the training captions with "
            "`cacmi build-memory TRAIN.json --clip <the CLIP of the features> --out BANK` and pass --memory_bank BANK "
            "(or train the PDVC variant with --variant pdvc)."
        )
    if bank.num_entries == 0:
        raise TrainingSetupError(f"The memory bank {path} is empty; rebuild it from the training captions.")
    if bank.dim != config.text_dim:
        made_with = bank.clip.get("name") if isinstance(getattr(bank, "clip", None), dict) else None
        raise TrainingSetupError(
            f"The memory bank {path} holds {bank.dim}-d embeddings"
            + (f" (CLIP {made_with})" if made_with else "")
            + f" but the model retrieves with {config.text_dim}-d queries (memory_dim, or feature_dim when unset): "
            "it was built with a different CLIP model than the features. Rebuild it with `cacmi build-memory --clip` "
            "set to the CLIP model that extracted the features."
        )
    if train_video_ids and getattr(config, "retrieval_exclude", "same_video") == "same_video":
        from ..data.collator import bank_video_lookup, canonical_video_id

        exact = set(bank.video_ids)
        canonical = bank_video_lookup({v: i for i, v in enumerate(bank.video_ids)})
        missing = [v for v in train_video_ids if v not in exact and canonical.get(canonical_video_id(v), -1) < 0]
        if missing:
            which = "None" if len(missing) == len(train_video_ids) else f"{len(missing)}"
            raise TrainingSetupError(
                f"{which} of the {len(train_video_ids)} training videos (e.g. {missing[0]!r}) "
                f"{'is' if which == 'None' else 'are not'} in the memory bank {path} (e.g. {bank.video_ids[0]!r}, ids "
                "compared up to a 'v_' prefix or a file ending), so the training-time exclusion of a video's own captions "
                "cannot be guaranteed for them: build the bank from the same training annotations "
                "(`cacmi build-memory TRAIN.json`), or train with --config_overrides retrieval_exclude=top1."
            )


def check_tokenizer(tokenizer: Any, config: Any, tokenizer_source: Any, model_source: Any) -> None:
    """The caption tokenizer matches the vocabulary and special ids the model (or checkpoint) was built with."""
    size = len(tokenizer)
    specials = {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "unk_token_id": tokenizer.unk_token_id,
    }
    wrong = {k: (v, getattr(config, k)) for k, v in specials.items() if v != getattr(config, k)}
    if size != config.vocab_size or wrong:
        details = []
        if size != config.vocab_size:
            details.append(f"{size} tokens vs vocab_size={config.vocab_size}")
        details += [f"{k}: tokenizer {v} vs model {m}" for k, (v, m) in wrong.items()]
        raise TrainingSetupError(
            f"The caption tokenizer {tokenizer_source} does not match the model {model_source} ({'; '.join(details)}). "
            "Use the tokenizer saved with that checkpoint (drop --tokenizer), or train from scratch without "
            "--model_name_or_path so the model is sized from this tokenizer."
        )


def check_same_vocabulary(tokenizer: Any, saved_tokenizer: Any, tokenizer_source: Any, model_source: Any) -> None:
    """Two tokenizers of the same size must also map the same words to the same ids."""
    ours, theirs = tokenizer.get_vocab(), saved_tokenizer.get_vocab()
    if ours != theirs:
        differ = sorted(w for w in set(ours) | set(theirs) if ours.get(w) != theirs.get(w))
        raise TrainingSetupError(
            f"The caption tokenizer {tokenizer_source} maps words to other ids than the one saved with {model_source} "
            f"({len(differ)} words differ, e.g. {differ[:5]}). Use the checkpoint's tokenizer (drop --tokenizer)."
        )


__all__ = [
    "TrainingSetupError",
    "check_feature_dim",
    "check_memory_bank",
    "check_same_vocabulary",
    "check_splits",
    "check_tokenizer",
]
