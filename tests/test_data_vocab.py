"""The word-level caption tokenizer: normalisation, specials, truncation, save/load, real vocabulary sizes."""

import argparse
import json

import pytest
from transformers import AutoTokenizer

from cacmi_hf.data.vocab import add_arguments, build_caption_tokenizer, caption_words, run


def sentences_of(path):
    return [s for item in json.loads(path.read_text()).values() for s in item["sentences"]]


def test_reference_normalisation_as_pdvc_and_cm2():
    # PDVC/CM2 Translator.translate: only , : ! _ ; - . ? / " \\ become spaces; apostrophes, digits, # & ( ) stay
    assert caption_words("The girl's DOG, jumps!  Then-runs...") == ["the", "girl's", "dog", "jumps", "then", "runs"]
    assert caption_words("  ") == []
    # real captions (ActivityNet train v_7c5vvEn3uLk, v_TL7hwQauhFo; YouCook2 train v_NWBh5-CfPHk, v_9r-OKNP1V60)
    assert caption_words('a red flag that say\'s "1912-2012 Calgary Stampede",and a calf') == [
        "a", "red", "flag", "that", "say's", "1912", "2012", "calgary", "stampede", "and", "a", "calf"]
    assert caption_words(" The red team scores and it's 1-1, they continue") == [
        "the", "red", "team", "scores", "and", "it's", "1", "1", "they", "continue"]
    assert caption_words("take 2 cups of garbanzo beans and 1 1/2 cup") == [
        "take", "2", "cups", "of", "garbanzo", "beans", "and", "1", "1", "2", "cup"]
    assert caption_words("some half & half and mash") == ["some", "half", "&", "half", "and", "mash"]
    assert caption_words("the man’s (left) hand #1") == ["the", "man’s", "(left)", "hand", "#1"]  # no NFKC, as CM2


def test_punctuation_normalisation_is_a_switch():
    assert caption_words("The girl's DOG, jumps!  Then-runs...", "punctuation") == [
        "the", "girl", "s", "dog", "jumps", "then", "runs"]
    tokenizer = build_caption_tokenizer(["the man's dog"] * 2, normalization="punctuation")
    assert "man" in tokenizer.get_vocab() and "man's" not in tokenizer.get_vocab()
    with pytest.raises(ValueError, match="Unknown caption normalization 'nfkc'"):
        build_caption_tokenizer(["a"], normalization="nfkc")


def test_min_count_order_and_specials():
    tokenizer = build_caption_tokenizer(["b a b", "c b a", "d"], min_count=2, max_caption_len=5)
    vocab = tokenizer.get_vocab()
    # specials first, then by count (b: 3, a: 2); c and d seen once are dropped
    assert sorted(vocab, key=vocab.get) == ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "b", "a"]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2, 3)
    assert tokenizer("B, a c!")["input_ids"] == [1, 4, 5, 3, 2]
    assert tokenizer.decode([1, 4, 5, 3, 2], skip_special_tokens=True) == "b a"
    with pytest.raises(ValueError, match="min_count"):
        build_caption_tokenizer(["a"], min_count=0)


def test_truncation_keeps_bos_and_eos():
    tokenizer = build_caption_tokenizer(["a b c d e f g"] * 2, max_caption_len=4)
    ids = tokenizer("a b c d e f g", truncation=True)["input_ids"]
    assert ids == [1, 4, 5, 6, 7, 2]  # 4 words + BOS/EOS
    batch = tokenizer(["a", "b c"], padding="longest", truncation=True, return_tensors="pt")["input_ids"]
    assert batch.tolist() == [[1, 4, 2, 0], [1, 5, 6, 2]]


def test_save_load_with_auto_tokenizer(tmp_path):
    tokenizer = build_caption_tokenizer(["add the onions", "add salt", "stir the onions"], min_count=1)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "Add the onions, then STIR."
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert len(loaded) == len(tokenizer) and loaded.model_max_length == 32
    assert loaded.pad_token_id == 0 and loaded.unk_token_id == 3


@pytest.mark.slow
def test_real_vocabulary_sizes(shared_data):
    anet, yc2 = shared_data / "activitynet", shared_data / "youcook2"
    assert len(build_caption_tokenizer(sentences_of(anet / "train_modified.json"))) == 6609
    assert len(build_caption_tokenizer(sentences_of(yc2 / "yc2_train.json"))) == 1425
    # The references' vocabularies come from train + validation captions with min count 2: CM2's
    # data/anet/vocabulary_activitynet_thres2.json has 8517 entries and data/yc2/vocabulary_youcook2.json 1607,
    # each with three specials (<bos>, <eos>, UNK) where ours has four: the same words.
    anet_all = sentences_of(anet / "train_modified.json") + sentences_of(anet / "val_1.json") + sentences_of(anet / "val_2.json")
    assert len(build_caption_tokenizer(anet_all)) == 8517 - 3 + 4
    yc2_all = sentences_of(yc2 / "yc2_train.json") + sentences_of(yc2 / "yc2_val.json")
    assert len(build_caption_tokenizer(yc2_all)) == 1607 - 3 + 4


def test_build_vocab_command(shared_data, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(shared_data / "youcook2"), "--out", str(tmp_path / "vocab")])
    assert run(args) == 0
    assert "1425-token" in capsys.readouterr().out
    loaded = AutoTokenizer.from_pretrained(tmp_path / "vocab")
    assert len(loaded) == 1425 and loaded.convert_ids_to_tokens(4) == "the"
    args = parser.parse_args([str(shared_data / "youcook2"), "--out", str(tmp_path / "all"), "--split", "train", "validation"])
    assert run(args) == 0 and len(AutoTokenizer.from_pretrained(tmp_path / "all")) == 1608
