"""PDVC checkpoints converted to CACMIForDenseCaptioning compute what PDVC's own code computed (fixtures made by
benchmarks/make_parity_fixtures.py from ttengwang/PDVC @0b025c8), one video at a time and batched."""

import json

import pytest
import torch

from cacmi_hf.convert import ConversionError, convert, convert_checkpoint
from cacmi_hf.convert.common import NEVER_LOGIT, load_checkpoint
from cacmi_hf.processing_cacmi import CACMIProcessor

from parity_fixtures import (
    FIXTURES,
    PDVC_FIXTURES,
    assert_events_match,
    assert_parity,
    compare_decoder_and_captions,
    converted,
    expected,
    reference_events,
    run_one,
    run_padded_batch,
)


def compare(name, model_out, out, record, index=0):
    """Every recorded reference tensor against ours for batch row `index`."""
    assert_parity(model_out.memory[index], record["memory"], f"{name} encoder memory")
    compare_decoder_and_captions(name, model_out, out, record, index)


@pytest.mark.parametrize("name", PDVC_FIXTURES)
def test_pdvc_batch_one_matches_reference(name):
    for index, record in enumerate(expected(name)["records"]):
        model_out, out = run_one(name, index)
        compare(name, model_out, out, record)


@pytest.mark.parametrize("name", PDVC_FIXTURES)
def test_pdvc_events_match_reference(name):
    assert_events_match(name)


@pytest.mark.parametrize("name", PDVC_FIXTURES)
def test_pdvc_batch_of_four_padded_matches_reference_batch_one(name):
    """Their batch 1 (PDVC cannot batch its captioner) against our batch 4 of native-length, padded videos."""
    model_out, out = run_padded_batch(name)
    for index, record in enumerate(expected(name)["records"]):
        compare(name, model_out, out, record, index)


def test_pdvc_resize_rule_matches_reference():
    """PDVC's nearest-index resize (scipy interp1d) picks the same native frames as the reference did."""
    from cacmi_hf.modeling_cacmi import pdvc_resize_index

    for name in PDVC_FIXTURES:
        for video, record in zip(expected(name)["videos"], expected(name)["records"]):
            length = torch.tensor([video["features"].shape[0]])
            assert torch.equal(pdvc_resize_index(length, 100)[0], record["resize_index"])


def test_pdvc_conversion_accounts_for_every_tensor():
    conv = converted("pdvc_anet_c3d")
    state = load_checkpoint(FIXTURES / "pdvc_anet_c3d" / "model-best.pth")["model"]
    # the shared captioner and the decoder's second registration of the box heads repeat tensors
    assert conv.copies == sum(1 for k in state if k.startswith(("caption_head.1.", "transformer.decoder.bbox_head.")))
    assert set(conv.dropped) == {k for k in state if k.startswith("transformer.pos_trans") or (
        k.startswith("caption_head.0.core.deformable_att.") and ("attention_weights" in k or "output_proj" in k))}
    config = conv.model.config
    assert (config.hidden_size, config.num_queries, config.max_event_count, config.caption_embedding_size,
            config.caption_attention_size, config.feature_resize, config.rerank_alpha) == (32, 10, 10, 24, 20, "pdvc", 1.0)
    # PAD and BOS are never predicted; EOS carries the reference's row 0
    assert torch.all(conv.model.captioner.logit.bias[:2] == NEVER_LOGIT)
    assert torch.equal(conv.model.captioner.logit.bias[2], state["caption_head.0.logit.bias"][0])


def test_reference_vocabulary_becomes_our_tokenizer():
    conv = converted("pdvc_anet_c3d")
    tok = conv.processor.tokenizer
    vocab = json.loads((FIXTURES / "pdvc_anet_c3d" / "vocabulary.json").read_text())["word_to_ix"]
    # PDVC's translate: punctuation to spaces, lowercase; words keep their index + 3, unknown words are UNK
    sentence = "A young-woman, is SEEN; zzzz."
    ids = tok(sentence)["input_ids"]
    words = ["a", "young", "woman", "is", "seen", "zzzz"]
    assert ids == [1] + [vocab[w] + 3 if w in vocab else 3 for w in words] + [2]
    assert tok.decode([vocab["woman"] + 3, vocab["is"] + 3]) == "woman is"


def test_converted_folder_reloads_and_captions_features_through_the_pipeline(tmp_path):
    from transformers import AutoModel, pipeline

    import cacmi_hf  # noqa: F401  (registers the task)

    folder = convert_checkpoint("pdvc", FIXTURES / "pdvc_anet_c3d" / "model-best.pth", tmp_path / "pdvc")
    assert (folder / "README.md").read_text().count("PDVC") >= 1
    report = json.loads((folder / "conversion.json").read_text())
    assert "transformer.pos_trans.weight" in report["dropped"]
    model = AutoModel.from_pretrained(folder)
    assert type(model).__name__ == "CACMIForDenseCaptioning"
    video, record = expected("pdvc_anet_c3d")["videos"][1], expected("pdvc_anet_c3d")["records"][1]
    pipe = pipeline("dense-video-captioning", model=str(folder))
    events = pipe({"video_features": video["features"].float(), "duration": video["duration"]})
    reference = reference_events(record)
    assert [e["caption"] for e in events] == [e["caption"] for e in reference]
    assert [e["timestamp"] for e in events] == [pytest.approx(e["timestamp"], abs=1e-3) for e in reference]
    assert isinstance(CACMIProcessor.from_pretrained(folder), CACMIProcessor)


# ------------------------------------------------------------------------------------------- bad checkpoints


def _copy_fixture(tmp_path, name="pdvc_anet_c3d"):
    folder = tmp_path / name
    folder.mkdir()
    for f in ("model-best.pth", "info.json", "vocabulary.json"):
        (folder / f).write_bytes((FIXTURES / name / f).read_bytes())
    return folder


def _assert_nothing_written(tmp_path, output):
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}")]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    folder = _copy_fixture(tmp_path)
    data = (folder / "model-best.pth").read_bytes()
    (folder / "model-best.pth").write_bytes(data[: len(data) // 2])
    output = tmp_path / "out"
    with pytest.raises(ConversionError, match="could not be read.*truncated"):
        convert_checkpoint("pdvc", folder / "model-best.pth", output)
    _assert_nothing_written(tmp_path, output)


def test_state_dict_with_an_extra_head_names_the_key(tmp_path):
    folder = _copy_fixture(tmp_path)
    checkpoint = torch.load(folder / "model-best.pth", weights_only=True)
    checkpoint["model"]["grounding_head.weight"] = torch.zeros(3, 32)
    torch.save(checkpoint, folder / "model-best.pth")
    output = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"unexpected key.*grounding_head\.weight \(3, 32\)"):
        convert_checkpoint("pdvc", folder / "model-best.pth", output)
    _assert_nothing_written(tmp_path, output)


def test_missing_key_and_wrong_shape_name_the_key(tmp_path):
    folder = _copy_fixture(tmp_path)
    checkpoint = torch.load(folder / "model-best.pth", weights_only=True)
    del checkpoint["model"]["count_head.1.bias"]
    torch.save(checkpoint, folder / "model-best.pth")
    with pytest.raises(ConversionError, match=r"missing key 'count_head\.1\.bias'"):
        convert("pdvc", folder / "model-best.pth")
    checkpoint = torch.load(FIXTURES / "pdvc_anet_c3d" / "model-best.pth", weights_only=True)
    checkpoint["model"]["caption_head.0.core.rnn.weight_ih_l0"] = torch.zeros(128, 99)
    torch.save(checkpoint, folder / "model-best.pth")
    with pytest.raises(ConversionError, match=r"caption_head\.0\.core\.rnn\.weight_ih_l0.*\(128, 99\)"):
        convert("pdvc", folder / "model-best.pth")


def test_unsupported_variant_is_named(tmp_path):
    folder = _copy_fixture(tmp_path)
    info = json.loads((folder / "info.json").read_text())
    info["best"]["opt"]["caption_decoder_type"] = "gpt2"
    (folder / "info.json").write_text(json.dumps(info))
    with pytest.raises(ConversionError, match="unsupported variant: caption_decoder_type='gpt2'"):
        convert("pdvc", folder / "model-best.pth")


def test_missing_options_and_vocabulary_say_which_flag_to_pass(tmp_path):
    folder = _copy_fixture(tmp_path)
    (folder / "info.json").unlink()
    with pytest.raises(ConversionError, match="--options"):
        convert("pdvc", folder / "model-best.pth")
    folder = _copy_fixture(tmp_path / "again" if (tmp_path / "again").mkdir() is None else tmp_path)
    (folder / "vocabulary.json").unlink()
    with pytest.raises(ConversionError, match="--vocabulary"):
        convert("pdvc", folder / "model-best.pth")


def test_existing_output_is_left_alone(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="already exists"):
        convert_checkpoint("pdvc", FIXTURES / "pdvc_anet_c3d" / "model-best.pth", output)
    assert [p.name for p in output.iterdir()] == ["keep.txt"]
