"""The CLIP text memory bank: equals the tower's own embeddings, round-trips on disk, and the model retrieves with it."""

import argparse
import json

import numpy as np
import pytest
import torch

from cacmi_hf.data.memory import (
    MemoryBankData,
    add_arguments,
    build_memory_bank,
    load_memory_bank,
    run,
    save_memory_bank,
)
from cacmi_hf.open_clip_tower import TINY_OPEN_CLIP_CONFIG, get_text_tokenizer, load_open_clip, save_open_clip_local_dir

ANNOTATIONS = {
    "v_cook": {"duration": 30.0, "timestamps": [[0, 10], [10, 20], [20, 30]],
               "sentences": [" cut the onion into thin slices", "fry the onion in butter", "add salt and pepper"]},
    "v_dance": {"duration": 12.0, "timestamps": [[0, 6], [6, 12]],
                "sentences": ["a girl dances in a room", "she ends by lying on the floor"]},
    "v_ball": {"duration": 8.0, "timestamps": [[1, 7]], "sentences": ["two men play basketball outside"]},
}
SENTENCES = [s.strip() for item in ANNOTATIONS.values() for s in item["sentences"]]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    torch.manual_seed(0)
    model, spec = load_open_clip(TINY_OPEN_CLIP_CONFIG)
    return model, spec, save_open_clip_local_dir(model, spec, tmp_path_factory.mktemp("clip") / "tiny")


@pytest.fixture(scope="module")
def bank(tiny_clip):
    model, spec, _ = tiny_clip
    pairs = [(vid, s) for vid, item in ANNOTATIONS.items() for s in item["sentences"]]
    return build_memory_bank(pairs, model, get_text_tokenizer(spec), clip=spec.to_dict(), batch_size=4)


def test_embeddings_are_the_towers_own(bank, tiny_clip):
    model, spec, _ = tiny_clip
    tokens = get_text_tokenizer(spec)(SENTENCES)
    with torch.no_grad():
        direct = torch.nn.functional.normalize(model.encode_text(tokens), dim=-1)
    assert bank.embeddings.shape == (6, 32) and bank.embeddings.dtype == torch.float32
    torch.testing.assert_close(bank.embeddings, direct, atol=1e-5, rtol=0)
    assert bank.sentences == SENTENCES  # stripped
    assert bank.video_ids == ["v_cook", "v_dance", "v_ball"]
    assert bank.video_index.tolist() == [0, 0, 0, 1, 1, 2]
    assert bank.video_lookup == {"v_cook": 0, "v_dance": 1, "v_ball": 2}


def test_round_trip_on_disk(bank, tmp_path):
    folder = save_memory_bank(bank, tmp_path / "bank")
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "memory_bank.safetensors"))
    assert set(tensors) == {"embeddings", "video_index"} and tensors["video_index"].dtype == torch.int64
    meta = json.loads((folder / "memory_bank.json").read_text())
    assert meta["video_ids"] == bank.video_ids and meta["sentences"] == SENTENCES and meta["dim"] == 32
    for path in (folder, folder / "memory_bank.safetensors"):
        loaded = load_memory_bank(path)
        torch.testing.assert_close(loaded.embeddings, bank.embeddings, atol=0, rtol=0)
        assert torch.equal(loaded.video_index, bank.video_index) and loaded.sentences == bank.sentences
        assert loaded.clip["model_cfg"]["embed_dim"] == 32
    with pytest.raises(FileNotFoundError, match="build-memory"):
        load_memory_bank(tmp_path / "nothing")
    with pytest.raises(ValueError, match="video_index must lie"):
        MemoryBankData(bank.embeddings, bank.video_index + 5, bank.video_ids, bank.sentences)


def test_model_loads_the_bank_and_retrieves_the_right_sentences(bank, tiny_clip):
    from cacmi_hf import CACMIConfig, CACMIForDenseCaptioning

    model, spec, _ = tiny_clip
    config = CACMIConfig(
        feature_dim=32, memory_dim=32, num_frames=8, hidden_size=32, num_attention_heads=4, ffn_dim=32,
        num_encoder_layers=1, num_decoder_layers=1, num_feature_levels=2, num_queries=3, max_event_count=3,
        vocab_size=12, caption_hidden_size=16, num_clusters=2, retrieval_top_k=2, max_caption_len=6,
    )
    captioner = CACMIForDenseCaptioning(config)
    assert captioner.set_memory_bank(bank.embeddings, bank.video_index) == 6
    memory = captioner.cacmi.memory_bank
    tokenizer = get_text_tokenizer(spec)
    with torch.no_grad():
        queries = model.encode_text(tokenizer(["fry the onion in butter", "a girl dances in a room"]))  # (2, 32)
    mean, indices, scores = memory.retrieve(queries[None], top_k=1)
    assert [bank.sentences[i] for i in indices[0, :, 0].tolist()] == ["fry the onion in butter", "a girl dances in a room"]
    torch.testing.assert_close(scores[0, :, 0], torch.ones(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(mean[0], bank.embeddings[indices[0, :, 0]], atol=1e-6, rtol=0)
    # training-time exclusion: the query's own video never answers
    own = torch.tensor([bank.video_lookup["v_cook"]])
    _, indices, _ = memory.retrieve(queries[:1][None], top_k=3, exclude_video=own, exclude="same_video")
    assert all(bank.video_index[i] != own for i in indices.flatten().tolist())
    # the saved model carries the bank
    state = captioner.state_dict()
    torch.testing.assert_close(state["cacmi.memory_bank.embeddings"], bank.embeddings)


def test_build_memory_command(tiny_clip, tmp_path, capsys):
    _, _, clip_folder = tiny_clip
    (tmp_path / "train.json").write_text(json.dumps(ANNOTATIONS))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "train.json"), "--out", str(tmp_path / "bank"), "--clip", f"local-dir:{clip_folder}", "--batch-size", "2"])
    assert run(args) == 0
    assert "6 captions from 3 videos (dim 32)" in capsys.readouterr().out
    loaded = load_memory_bank(tmp_path / "bank")
    assert loaded.sentences == SENTENCES and loaded.video_ids == list(ANNOTATIONS)
    np.testing.assert_allclose(loaded.embeddings.norm(dim=-1).numpy(), 1.0, atol=1e-5)
    with pytest.raises(SystemExit, match="needs CLIP weights"):
        run(parser.parse_args([str(tmp_path / "train.json"), "--out", str(tmp_path / "x")]))
    with pytest.raises(ValueError, match="at least one"):
        build_memory_bank([], None, None)
