"""The three versions of the densevid evaluator that PDVC and CM2 ship, as small differences of one protocol.

``densevid_eval3/evaluate2018.py``, ``evaluate2021.py`` and ``evaluate2018_cider.py`` (CM2 @01a6558,
PDVC @0b025c8) share loading, tIoU pairing, PTB tokenisation and the localisation precision/recall.
They differ in two places only, and so do we:

- ``"2018"`` (the default, and what the field mostly reports): a prediction that overlaps no reference
  at tIoU >= τ is paired with the reference ``"abc123!@#"`` (three PTB tokens); every scorer runs per
  video and the scores are averaged over the reference videos, a video without predictions scoring 0.
- ``"2021"``: the unmatched prediction is paired with a random lowercase word of 10–20 letters
  instead. The word never matches, so only its length counts. The PTB tokenizer keeps
  ``"abc123!@#"`` as one token, so BLEU (even its brevity penalty), ROUGE-L and CIDEr-D do not
  change; METEOR's own normalisation splits it into several words where the random word stays one,
  and METEOR sums its statistics over a video, so 2021's METEOR is higher wherever predictions go
  unmatched. Ours pairs with one fixed word that no hypothesis of the run begins like
  (``unmatched_reference``): the reference script's scores, without its random state.
- ``"2018_cider"``: the 2018 pairs, but at each tIoU the pairs of all videos are pooled and each
  scorer runs once on the pool (corpus BLEU and METEOR, mean ROUGE-L over pairs, CIDEr-D with
  document frequencies from the whole pool); a video without predictions adds no pairs instead of
  scoring 0. The script also runs SPICE, which needs Stanford CoreNLP models downloaded at run time:
  it is left out here, and the result says so (``not_computed``).

CM2's ``densevid_eval3/eval_dvc.py`` runs ``evaluate2018`` for ``version == '2018'`` and
``evaluate2021`` for any other value, so its ``2018_cider`` option never reaches
``evaluate2018_cider.py``; here every protocol name runs its own script's rule, and an unknown
name is an error.
"""

from __future__ import annotations

from typing import Iterable

PROTOCOLS = ("2018", "2021", "2018_cider")
DEFAULT_PROTOCOL = "2018"
GARBAGE_REFERENCE = "abc123!@#"
# The 2021 script draws 10-20 random lowercase letters; these 10 are no English word, stem or
# paraphrase (shifted along the alphabet in the unlikely case a hypothesis holds a word like them).
_UNMATCHED_WORD = "qxzjvkwpqz"
NOT_COMPUTED = {"2018_cider": {"SPICE": "needs Stanford CoreNLP models downloaded at run time; not computed"}}


def check_protocol(protocol: str) -> str:
    """Return ``protocol`` if it is one of ``PROTOCOLS``, else raise a ValueError naming the valid ones."""
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"Unknown evaluation protocol {protocol!r}; use one of {', '.join(repr(p) for p in PROTOCOLS)} "
            "(densevid_eval3's evaluate2018.py, evaluate2021.py, evaluate2018_cider.py)."
        )
    return protocol


def protocol_label(protocol: str) -> str:
    """How a score names its protocol, e.g. ``"densevid 2018"``."""
    return f"densevid {check_protocol(protocol)}"


def pools_videos(protocol: str) -> bool:
    """True where each tIoU's pairs of all videos are scored as one corpus (``2018_cider``)."""
    return check_protocol(protocol) == "2018_cider"


def unmatched_reference(protocol: str, hypothesis_words: Iterable[str] = ()) -> str | None:
    """The tokenised reference of an unmatched prediction under ``protocol``.

    None for 2018 and 2018_cider (the caller tokenises ``GARBAGE_REFERENCE`` with the PTB tokenizer,
    as the scripts do); for 2021 one lowercase word of at least 10 letters that starts no word of the
    run's hypotheses, so that METEOR's exact, stem, synonym and paraphrase stages can never match it.
    """
    if check_protocol(protocol) != "2021":
        return None
    words = set(hypothesis_words)
    for shift in range(26):  # the letters shifted by 0..25 places: the first one no hypothesis word starts like
        word = "".join(chr((ord(c) - 97 + shift) % 26 + 97) for c in _UNMATCHED_WORD)
        if not any(w.startswith(word[:-2]) for w in words):
            return word
    raise ValueError(
        "Every candidate word for unmatched predictions (protocol 2021) begins a hypothesis word; "
        "the predictions look adversarial. Use protocol '2018'."
    )
