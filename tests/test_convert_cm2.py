"""CM2 checkpoints converted to CACMIForDenseCaptioning compute what CM2's own code computed (fixtures made by
benchmarks/make_parity_fixtures.py from ailab-kyunghee/CM2_DVC @01a6558): windowed retrieval over its float16
bank, its text path, the decoder, greedy captions and re-ranked events; one video at a time and batched."""

import json

import numpy as np
import pytest
import torch

from cacmi_hf.convert import ConversionError, convert, convert_checkpoint
from cacmi_hf.convert.common import load_checkpoint

from parity_fixtures import (
    CM2_FIXTURES,
    FIXTURES,
    assert_events_match,
    assert_parity,
    compare_decoder_and_captions,
    converted,
    expected,
    run_one,
    run_padded_batch,
)


def compare(name, model_out, out, record, index=0):
    """Every recorded reference tensor against ours for batch row `index`."""
    model = converted(name).model
    windows = model.config.retrieval_num_windows
    assert_parity(model_out.text_queries[index], record["window_embeds"], f"{name} retrieved window vectors")
    with torch.no_grad():
        text = model.cacmi.encode_text(model_out.text_queries[index : index + 1], model_out.text_mask[index : index + 1])
    assert_parity(text[0], record["text_memory"][:windows], f"{name} encoded text")
    assert_parity(model_out.memory[index][model_out.memory_mask[index]], record["memory"], f"{name} encoder memory")
    compare_decoder_and_captions(name, model_out, out, record, index)


@pytest.mark.parametrize("name", CM2_FIXTURES)
def test_cm2_batch_one_matches_reference(name):
    for index, record in enumerate(expected(name)["records"]):
        model_out, out = run_one(name, index)
        compare(name, model_out, out, record)


@pytest.mark.parametrize("name", CM2_FIXTURES)
def test_cm2_events_match_reference(name):
    assert_events_match(name)


@pytest.mark.parametrize("name", CM2_FIXTURES)
def test_cm2_batch_of_four_padded_matches_reference_batch_one(name):
    """Their batch 1 (CM2 retrieves for one video) against our batch 4 of native-length videos padded together."""
    model_out, out = run_padded_batch(name)
    for index, record in enumerate(expected(name)["records"]):
        compare(name, model_out, out, record, index)


def test_cm2_conversion_accounts_for_every_tensor():
    conv = converted("cm2_anet")
    state = load_checkpoint(FIXTURES / "cm2_anet" / "model-best.pth")["model"]
    unused = ("text_transformer_layers.", "text_positional_encoding.", "cls_token", "pos_embed.duration_embed_layer")
    for key in state:
        if key.startswith(unused) or ".norm_t." in key or (key.startswith("clip_model.") and not key.startswith("clip_model.visual.")):
            assert key in conv.dropped, key
    assert not any(k.startswith("clip_model.visual.") for k in conv.dropped)
    config = conv.model.config
    assert (config.retrieval_mode, config.retrieval_num_windows, config.retrieval_top_k, config.text_path,
            config.memory_format, config.feature_resize, config.vision_normalize) == (
        "windows", 20, 100, "cm2", "cm2_fp16", "none", False)
    # the bank keeps CM2's raw float16 values, unnormalised
    raw = np.load(FIXTURES / "cm2_anet" / "bank" / "anet" / "clip" / "anet_clip_token_embeds.npy")[:, 0]
    assert torch.equal(conv.model.cacmi.memory_bank.embeddings, torch.from_numpy(raw.astype(np.float32)))
    # the CLIP image tower is the checkpoint's (float16 values)
    tower = conv.model.vision_tower.visual.state_dict()
    assert torch.equal(tower["conv1.weight"], state["clip_model.visual.conv1.weight"].float())


def test_pdvc_checkpoint_given_to_cm2_and_back_are_clear_errors(tmp_path):
    with pytest.raises(ConversionError, match="not a CM2 checkpoint.*cacmi convert pdvc"):
        convert("cm2", FIXTURES / "pdvc_anet_c3d" / "model-best.pth", memory_bank=FIXTURES / "cm2_anet" / "bank")
    output = tmp_path / "out"
    with pytest.raises(ConversionError, match="CM2 checkpoint.*cacmi convert cm2"):
        convert_checkpoint("pdvc", FIXTURES / "cm2_anet" / "model-best.pth", output)
    assert not output.exists() and not list(tmp_path.iterdir())


def test_cm2_needs_its_memory_bank(tmp_path):
    with pytest.raises(ConversionError, match="--memory-bank"):
        convert("cm2", FIXTURES / "cm2_anet" / "model-best.pth")
    with pytest.raises(ConversionError, match="anet_clip_token_embeds.npy"):
        convert("cm2", FIXTURES / "cm2_anet" / "model-best.pth", memory_bank=tmp_path)


def test_cm2_other_variant_is_named(tmp_path):
    folder = tmp_path / "cm2"
    folder.mkdir()
    for f in ("model-best.pth", "vocabulary.json"):
        (folder / f).write_bytes((FIXTURES / "cm2_anet" / f).read_bytes())
    info = json.loads((FIXTURES / "cm2_anet" / "info.json").read_text())
    info["best"]["opt"]["text_crossAttn_loc"] = "before"
    (folder / "info.json").write_text(json.dumps(info))
    with pytest.raises(ConversionError, match="unsupported variant: text_crossAttn_loc='before'"):
        convert("cm2", folder / "model-best.pth", memory_bank=FIXTURES / "cm2_anet" / "bank")


def test_checkpoint_without_options_uses_cm2s_published_ones_or_asks_for_them(tmp_path):
    """CM2's download is a bare model-best.pth: its published options are picked by vocabulary size (8517 words:
    ActivityNet, 20 windows, top-100, 10 queries; 1607: YouCook2, 50 windows, top-80, 100 queries)."""
    from cacmi_hf.convert.convert_cm2_to_hf import published_options

    anet = published_options({"caption_head.0.embed.weight": torch.zeros(8518, 4)})
    yc2 = published_options({"caption_head.0.embed.weight": torch.zeros(1608, 4)})
    assert (anet["window_size"], anet["soft_k"], anet["num_queries"], anet["bank_type"]) == (20, 100, 10, ["anet"])
    assert (yc2["window_size"], yc2["soft_k"], yc2["num_queries"], yc2["bank_type"]) == (50, 80, 100, ["yc2"])
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "model-best.pth").write_bytes((FIXTURES / "cm2_anet" / "model-best.pth").read_bytes())
    with pytest.raises(ConversionError, match=r"neither CM2's ActivityNet.*--options"):
        convert("cm2", folder / "model-best.pth", memory_bank=FIXTURES / "cm2_anet" / "bank")
