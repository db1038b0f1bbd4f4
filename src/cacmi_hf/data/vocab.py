r"""The word-level caption tokenizer (DESIGN §4) and the `cacmi build-vocab` command.

A `tokenizers` WordLevel model wrapped as a transformers fast tokenizer, so it saves and reloads with
`AutoTokenizer` and no remote code: lowercase, some punctuation turned into spaces, whitespace split,
specials [PAD]=0 [BOS]=1 [EOS]=2 [UNK]=3 (the CACMIConfig defaults), words kept when they occur at least
`min_count` times in the training captions (ordered by count, then alphabetically), `[BOS] words [EOS]`
added, at most `max_caption_len` words (so `model_max_length = max_caption_len + 2`).

Two normalisations (`normalization=`):
- "reference" (default) [PDVC/CM2 `Translator.translate`, `misc/build_vocab.py`]: only `, : ! _ ; - . ? / " \`
  (and a literal backslash-n) become spaces, so "man's", "#1", "1912" and "&" stay words and "t-shirt" is two;
  no Unicode normalisation ("man’s" with a curly apostrophe is its own word, as in CM2's vocabulary).
- "punctuation" [ours, the earlier default]: NFKC, then every Unicode punctuation or symbol character becomes a
  space ("man's" -> "man s").
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Iterable

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")  # ids 0, 1, 2, 3
# PDVC/CM2 replace these characters with spaces (their `tokens` / `mark` lists); everything else stays in words.
REFERENCE_PUNCTUATION_PATTERN = r'[,:!_;\-.?/"\\]'
# Unicode punctuation and symbols (and the underscore, a word character for the regex engine).
PUNCTUATION_PATTERN = r"[\p{P}\p{S}_]"
NORMALIZATIONS = ("reference", "punctuation")


def _normalizer(normalization: str = "reference"):
    from tokenizers import Regex, normalizers

    if normalization == "reference":
        return normalizers.Sequence([
            normalizers.Replace("\\n", " "),  # the two characters backslash and n, as the reference's '\\n'
            normalizers.Replace(Regex(REFERENCE_PUNCTUATION_PATTERN), " "),
            normalizers.Lowercase(),
        ])
    if normalization == "punctuation":
        return normalizers.Sequence(
            [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(PUNCTUATION_PATTERN), " ")]
        )
    raise ValueError(f"Unknown caption normalization {normalization!r}; choose one of {NORMALIZATIONS}.")


def caption_words(sentence: str, normalization: str = "reference") -> list[str]:
    """The words the caption tokenizer sees in `sentence` (lowercased, punctuation as spaces)."""
    from tokenizers import pre_tokenizers

    text = _normalizer(normalization).normalize_str(sentence)
    return [word for word, _ in pre_tokenizers.WhitespaceSplit().pre_tokenize_str(text)]


def build_caption_tokenizer(
    sentences: Iterable[str], *, min_count: int = 2, max_caption_len: int = 30, normalization: str = "reference"
):
    """Build the word-level caption tokenizer from training `sentences` (a `PreTrainedTokenizerFast`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}.")
    if max_caption_len < 1:
        raise ValueError(f"max_caption_len must be >= 1, got {max_caption_len}.")
    backend = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    backend.normalizer = _normalizer(normalization)
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # the trainer counts words in Rust with the tokenizer's own normaliser; order: specials, then count desc, word asc
    trainer = trainers.WordLevelTrainer(
        min_frequency=min_count, special_tokens=list(SPECIAL_TOKENS), vocab_size=2**31 - 1, show_progress=False
    )
    backend.train_from_iterator(sentences, trainer)
    vocab = backend.get_vocab()
    if [vocab[t] for t in SPECIAL_TOKENS] != [0, 1, 2, 3]:
        raise RuntimeError(f"Special token ids came out as {[vocab[t] for t in SPECIAL_TOKENS]}, expected [0, 1, 2, 3].")
    backend.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        unk_token="[UNK]",
        model_max_length=max_caption_len + 2,
        clean_up_tokenization_spaces=False,
    )
    logger.info("Caption vocabulary: %d tokens (4 specials + words seen >= %d times)", len(vocab), min_count)
    return tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cacmi build-vocab`."""
    parser.add_argument("annotations", help="Annotation file, folder, {split: file} source or hub dataset id.")
    parser.add_argument("--out", required=True, help="Folder to save the tokenizer in (transformers format).")
    parser.add_argument(
        "--split", nargs="+", default=["train"],
        help="Split(s) whose captions define the vocabulary (default: train; PDVC/CM2's vocabularies also used the "
        "validation captions: --split train val_1 val_2 or train validation).",
    )
    parser.add_argument("--min-count", type=int, default=2, help="Keep words seen at least this often (default: 2).")
    parser.add_argument("--max-caption-len", type=int, default=30, help="Most words per caption (default: 30).")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default="reference",
                        help="'reference' (PDVC/CM2: only , : ! _ ; - . ? / \" \\ become spaces, so \"man's\" stays one word) "
                        "or 'punctuation' (every punctuation mark becomes a space).")


def run(args: argparse.Namespace) -> int:
    """Build the caption tokenizer from the annotations' training captions and save it."""
    from .annotations import load_dense_captions, training_sentences

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dataset = load_dense_captions(args.annotations)
    pairs = [pair for split in args.split for pair in training_sentences(dataset, split)]
    tokenizer = build_caption_tokenizer(
        (s for _, s in pairs), min_count=args.min_count, max_caption_len=args.max_caption_len,
        normalization=args.normalization,
    )
    tokenizer.save_pretrained(args.out)
    print(f"Saved a {len(tokenizer)}-token caption vocabulary ({len(pairs)} captions) to {Path(args.out)}")
    return 0


__all__ = ["NORMALIZATIONS", "SPECIAL_TOKENS", "build_caption_tokenizer", "caption_words"]
