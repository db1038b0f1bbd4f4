"""Caption tokenisers (cacmi_hf.evaluation.tokenization)."""

import json
import shutil

import pytest

from cacmi_hf.evaluation.tokenization import (
    PTB_PUNCTUATION,
    JavaNotFoundError,
    PTBTokenizer,
    SimpleTokenizer,
    find_java,
    remove_nonascii,
)

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed")


def test_remove_nonascii_replaces_each_character_by_a_space():
    assert remove_nonascii("café – ok") == "caf    ok"
    assert remove_nonascii("plain") == "plain"


def test_simple_tokenizer_hand_worked():
    tok = SimpleTokenizer()
    assert tok.tokenize(["A man, who's tall, doesn't run... (fast)!", "", "Well-known U.S. e-mail"]) == [
        "a man who 's tall does n't run -lrb- fast -rrb-",
        "",
        "well-known u.s. e-mail",
    ]


def test_missing_java_explains_how_to_install():
    with pytest.raises(JavaNotFoundError, match="apt-get install default-jre-headless"):
        find_java("no-such-java-binary")
    with pytest.raises(JavaNotFoundError, match="no_java=True"):
        PTBTokenizer(java="no-such-java-binary")


@needs_java
def test_ptb_tokenizer_matches_coco_caption_conventions():
    sentences = [
        "A man, who's tall, doesn't run... (fast)!",
        "",
        "   ",
        "line\nbreak and\rcarriage",
        "A man, who's tall, doesn't run... (fast)!",
        "abc123!@#",
        "The dog said \"hi\" -- ok; 3.5 cups.",
    ]
    out = PTBTokenizer().tokenize(sentences)
    assert out == [
        "a man who 's tall does n't run -lrb- fast -rrb-",  # -lrb- survives: lower-cased after the filter list
        "",
        "",
        "line break and carriage",
        "a man who 's tall does n't run -lrb- fast -rrb-",
        "abc123!@#",
        "the dog said hi ok 3.5 cups",
    ]
    assert not set(" ".join(out).split()) & PTB_PUNCTUATION
    assert PTBTokenizer().tokenize([]) == []


@needs_java
def test_simple_tokenizer_agrees_with_ptb_on_most_real_captions(shared_data):
    data = json.loads((shared_data / "activitynet" / "val_1.json").read_text())
    sentences = [remove_nonascii(s) for v in list(data.values())[:600] for s in v["sentences"]]
    ptb = PTBTokenizer().tokenize(sentences)
    simple = SimpleTokenizer().tokenize(sentences)
    agree = sum(a == b for a, b in zip(ptb, simple)) / len(sentences)
    assert agree > 0.97, agree
