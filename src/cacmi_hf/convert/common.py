"""What every reference converter shares: reading the checkpoint and its options, accounting for every tensor,
the reference vocabulary as our tokenizer, and writing the output folder all at once or not at all."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

# Our caption vocabulary puts four specials first; the references use one id (0) for BOS/EOS/PAD and the last
# for UNK. The two rows PDVC/CM2 have no counterpart for (PAD, BOS) get this logit, which log-softmax turns into
# an exact zero probability in float32 and bfloat16 alike, so the other log-probabilities are the reference's.
NEVER_LOGIT = -1.0e4
PAD, BOS, EOS, UNK = 0, 1, 2, 3
NUM_SPECIALS = 4
# PDVC's and CM2's `Translator.translate`: these characters become spaces, then lowercase, whitespace split.
REFERENCE_PUNCTUATION = (",", ":", "!", "_", ";", "-", ".", "?", "/", '"', "\\n", "\\")


class ConversionError(ValueError):
    """A reference checkpoint that cannot be converted; the message names the file, key, shape or option."""


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The reference's `model-best.pth` (a pickled dict with "model"), without running arbitrary pickled code."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint {path} does not exist.")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, not a torch file, foreign pickled objects
        raise ConversionError(
            f"checkpoint {path} could not be read as a torch checkpoint ({type(err).__name__}: {str(err)[:200]}); "
            "it may be truncated or not a PDVC/CM2 model-best.pth: download it again."
        ) from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        keys = sorted(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConversionError(
            f"checkpoint {path} has no 'model' state dict (found {keys}); PDVC and CM2 save "
            "{'epoch', 'model', 'optimizer'} in model-best.pth."
        )
    return checkpoint


def load_options(checkpoint: dict, checkpoint_path: str | os.PathLike, options_path: str | os.PathLike | None) -> dict:
    """Training options: `--options` file, else the checkpoint's 'opt', else `info.json` beside the checkpoint."""
    if options_path is None and "opt" in checkpoint:
        opt = checkpoint["opt"]
        return dict(vars(opt)) if isinstance(opt, argparse.Namespace) else dict(opt)
    path = Path(options_path) if options_path is not None else Path(checkpoint_path).parent / "info.json"
    if not path.is_file():
        raise ConversionError(
            f"no training options: {Path(checkpoint_path).name} has no 'opt' and {path} does not exist. PDVC and CM2 "
            "write them to info.json beside model-best.pth; pass it with --options PATH."
        )
    info = json.loads(path.read_text())
    for section in ("best", "last"):
        if isinstance(info.get(section), dict) and isinstance(info[section].get("opt"), dict):
            return dict(info[section]["opt"])
    if "hidden_dim" in info:  # a bare options dict
        return dict(info)
    raise ConversionError(f"{path} has no training options (expected info['best']['opt'] as PDVC/CM2 write it).")


def option(opt: dict, name: str, default: Any = ...) -> Any:
    """`opt[name]`, or a ConversionError naming the missing option."""
    if name in opt:
        return opt[name]
    if default is ...:
        raise ConversionError(f"the training options have no {name!r}; is this a PDVC/CM2 info.json?")
    return default


def require(condition: bool, message: str) -> None:
    """Raise a ConversionError with `message` (an unsupported variant) unless `condition`."""
    if not condition:
        raise ConversionError(message)


class TensorMap:
    r"""
    Builds our state dict from the reference's while accounting for every reference tensor: each is taken (mapped
    into ours), dropped with a stated reason (never read by the reference's forward), or checked to be a copy of one
    already taken (modules the reference registers twice). `finish` fails on any reference key left over and on any
    of our keys not filled, naming keys and shapes.
    """

    def __init__(self, source: dict[str, torch.Tensor], name: str):
        self.source = {k: v for k, v in source.items()}
        self.name = name
        self.accounted: dict[str, str] = {}
        self.target: dict[str, torch.Tensor] = {}
        self.dropped: dict[str, str] = {}

    def _mark(self, key: str, how: str) -> torch.Tensor:
        if key not in self.source:
            raise ConversionError(f"{self.name}: missing key {key!r} in the checkpoint's state dict.")
        if key in self.accounted:
            raise ConversionError(f"{self.name}: key {key!r} used twice ({self.accounted[key]} and {how}).")
        self.accounted[key] = how
        return self.source[key]

    def take(self, key: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """The reference tensor `key` (float32), checked against `shape` when given."""
        tensor = self._mark(key, "taken")
        if shape is not None and tuple(tensor.shape) != tuple(shape):
            raise ConversionError(
                f"{self.name}: key {key!r} has shape {tuple(tensor.shape)}, expected {tuple(shape)} from the options."
            )
        return tensor.float() if tensor.is_floating_point() else tensor

    def put(self, target_key: str, tensor: torch.Tensor) -> None:
        """Our tensor `target_key`."""
        if target_key in self.target:
            raise ConversionError(f"{self.name}: our key {target_key!r} filled twice.")
        self.target[target_key] = tensor.contiguous()

    def move(self, key: str, target_key: str) -> None:
        """Reference `key` as our `target_key`, unchanged."""
        self.put(target_key, self.take(key))

    def move_prefix(self, prefix: str, target_prefix: str, names: tuple[str, ...] = ("weight", "bias")) -> None:
        """Reference `prefix.{names}` as our `target_prefix.{names}`."""
        for n in names:
            self.move(f"{prefix}.{n}", f"{target_prefix}.{n}")

    def copy_of(self, key: str, original: str) -> None:
        """Reference `key` holds the same values as `original` (a module registered twice)."""
        tensor = self._mark(key, f"copy of {original}")
        if original not in self.source or not torch.equal(tensor, self.source[original]):
            raise ConversionError(f"{self.name}: {key!r} should repeat {original!r} (a shared module) but differs.")

    def drop(self, key: str, reason: str) -> None:
        """Reference `key` is never read by the reference's forward in this configuration."""
        self._mark(key, f"dropped: {reason}")
        self.dropped[key] = reason

    def drop_prefix(self, prefix: str, reason: str) -> None:
        """Every reference key under `prefix` (see `drop`)."""
        for key in [k for k in self.source if k.startswith(prefix) and k not in self.accounted]:
            self.drop(key, reason)

    def keys_under(self, prefix: str) -> list[str]:
        """Reference keys starting with `prefix`."""
        return [k for k in self.source if k.startswith(prefix)]

    def finish(self, model: torch.nn.Module) -> None:
        """Check the accounting and load our state dict into `model` (strict, shapes checked)."""
        left = [k for k in self.source if k not in self.accounted]
        if left:
            shapes = ", ".join(f"{k} {tuple(self.source[k].shape)}" for k in left[:6])
            raise ConversionError(
                f"{self.name}: {len(left)} unexpected key(s) in the checkpoint, e.g. {shapes}; this variant of the "
                "model (extra heads or modules) is not supported by the converter."
            )
        ours = model.state_dict()
        missing = [k for k in ours if k not in self.target]
        if missing:
            raise ConversionError(f"{self.name}: the converter left our {missing[:6]} unfilled (a converter bug).")
        extra = [k for k in self.target if k not in ours]
        if extra:
            raise ConversionError(f"{self.name}: the converter wrote keys our model does not have: {extra[:6]}.")
        for key, tensor in self.target.items():
            if tuple(tensor.shape) != tuple(ours[key].shape):
                raise ConversionError(
                    f"{self.name}: mapped {key!r} has shape {tuple(tensor.shape)} but the model built from the options "
                    f"expects {tuple(ours[key].shape)}; the options do not describe this checkpoint."
                )
        model.load_state_dict({k: v.to(ours[k].dtype) for k, v in self.target.items()}, strict=True)


def split_in_proj(tm: TensorMap, prefix: str, target_prefix: str, hidden: int) -> None:
    """torch `nn.MultiheadAttention` (in_proj_weight (3C, C) / in_proj_bias, out_proj) -> our q/k/v/out projections."""
    weight = tm.take(f"{prefix}.in_proj_weight", (3 * hidden, hidden))
    bias = tm.take(f"{prefix}.in_proj_bias", (3 * hidden,))
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        tm.put(f"{target_prefix}.{name}.weight", weight[i * hidden : (i + 1) * hidden])
        tm.put(f"{target_prefix}.{name}.bias", bias[i * hidden : (i + 1) * hidden])
    tm.move_prefix(f"{prefix}.out_proj", f"{target_prefix}.out_proj")


# ------------------------------------------------------------------------------------------------ vocabulary


def reference_vocabulary(path: str | os.PathLike) -> list[str]:
    """Words of a PDVC/CM2 vocabulary json ({"ix_to_word": {"1": w, ...}}), index 1..V in order (V = UNK)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"vocabulary {path} does not exist; pass the reference's vocabulary json with --vocabulary.")
    data = json.loads(path.read_text())
    itow = data.get("ix_to_word") if isinstance(data, dict) else None
    if not isinstance(itow, dict) or not itow:
        raise ConversionError(f"{path} is not a PDVC/CM2 vocabulary (no 'ix_to_word').")
    words = [itow.get(str(i)) for i in range(1, len(itow) + 1)]
    if any(w is None for w in words):
        raise ConversionError(f"{path}: 'ix_to_word' is not numbered 1..{len(itow)}.")
    return words


def our_token_order(num_reference_rows: int) -> torch.Tensor:
    """For each of our ids, the reference row it comes from (-1 for PAD and BOS): `(R + 2,)` long.

    Reference rows: 0 = BOS/EOS/PAD, 1..R-2 words, R-1 = UNK. Ours: PAD, BOS, EOS, UNK, then the words in order.
    """
    order = torch.empty(num_reference_rows + 2, dtype=torch.long)
    order[PAD] = order[BOS] = -1
    order[EOS] = 0
    order[UNK] = num_reference_rows - 1
    order[NUM_SPECIALS:] = torch.arange(1, num_reference_rows - 1)
    return order


def convert_word_embedding(embedding: torch.Tensor) -> torch.Tensor:
    """Reference embedding `(R, E)` -> ours `(R + 2, E)`: PAD and BOS read the reference's BOS row (0), as EOS does."""
    order = our_token_order(embedding.shape[0])
    return embedding[order.clamp(min=0)]


def convert_logit(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference vocabulary projection `(R, H)`, `(R,)` -> ours, with PAD and BOS never predicted (`NEVER_LOGIT`)."""
    order = our_token_order(weight.shape[0])
    never = order < 0
    new_weight = weight[order.clamp(min=0)].masked_fill(never[:, None], 0.0)
    new_bias = bias[order.clamp(min=0)].masked_fill(never, NEVER_LOGIT)
    return new_weight, new_bias


def reference_tokenizer(words: list[str], max_caption_len: int):
    """Our fast word-level tokenizer over the reference's words, with the reference's text normalisation."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    # UNK is spelled as the references spell it and is not a transformers special token, so decoded captions show
    # it as PDVC/CM2's do (and count it as a word in the caption score, as their re-ranking does)
    specials = ["[PAD]", "[BOS]", "[EOS]", "UNK"]
    vocab = {token: i for i, token in enumerate(specials)}
    for i, word in enumerate(words[:-1]):  # the last reference word is its UNK
        if word in vocab:
            raise ConversionError(f"the reference vocabulary repeats {word!r}.")
        vocab[word] = i + NUM_SPECIALS
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="UNK"))
    backend.normalizer = normalizers.Sequence(
        [normalizers.Replace(mark, " ") for mark in REFERENCE_PUNCTUATION] + [normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", BOS), ("[EOS]", EOS)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]",
        model_max_length=max_caption_len + 2, clean_up_tokenization_spaces=False,
    )


def find_vocabulary(opt: dict, checkpoint_path: str | os.PathLike, given: str | os.PathLike | None) -> Path:
    """`--vocabulary`, else the options' `dict_file` (as given, or by name beside the checkpoint)."""
    if given is not None:
        return Path(given)
    dict_file = opt.get("dict_file")
    candidates = []
    if dict_file:
        candidates += [Path(dict_file), Path(checkpoint_path).parent / Path(dict_file).name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConversionError(
        f"cannot find the caption vocabulary (options dict_file={dict_file!r}, looked at {[str(c) for c in candidates]}); "
        "pass the reference's vocabulary json (e.g. data/anet/vocabulary_activitynet.json) with --vocabulary."
    )


# ------------------------------------------------------------------------------------------------ output


def write_atomically(output: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Run `write(folder)` on a fresh folder next to `output` and rename it into place only when it succeeds."""
    output = Path(output).resolve()
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not overwrite:
        raise ConversionError(f"output {output} already exists and is not empty; choose another folder or pass --overwrite.")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.converting-", dir=output.parent))
    try:
        write(staging)
        if output.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{output.name}.old-", dir=output.parent))
            os.replace(output, backup / output.name)
            os.replace(staging, output)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output


__all__ = [
    "ConversionError",
    "NEVER_LOGIT",
    "TensorMap",
    "convert_logit",
    "convert_word_embedding",
    "find_vocabulary",
    "load_checkpoint",
    "load_options",
    "our_token_order",
    "reference_tokenizer",
    "reference_vocabulary",
    "split_in_proj",
    "write_atomically",
]
