"""Same-video exclusion holds or fails loudly: ids matched up to their "v_" / file-ending forms, no silent fallback."""

import pytest
import torch
import torch.nn.functional as F

from cacmi_hf.configuration_cacmi import CACMIConfig
from cacmi_hf.data import DenseCaptioningCollator, MemoryBankData
from cacmi_hf.data.collator import canonical_video_id
from cacmi_hf.frame_aggregation import CrossModalFrameAggregation
from cacmi_hf.memory_bank import MemoryBank
from cacmi_hf.training.checks import TrainingSetupError, check_memory_bank

DIM = 8


class _Tokenizer:
    """Just enough of a tokenizer for collating rows without captions."""

    pad_token_id = 0


def _config(**overrides) -> CACMIConfig:
    values = dict(feature_dim=DIM, num_frames=6, hidden_size=16, num_attention_heads=2, ffn_dim=16, num_queries=2,
                  max_event_count=2, vocab_size=10, num_clusters=2, retrieval_top_k=2, memory_size=8)
    values.update(overrides)
    return CACMIConfig(**values)


def _bank_data(video_ids: list[str]) -> MemoryBankData:
    """Two captions per video, each caption a copy of its video's direction (so a video's own captions are its best match)."""
    directions = F.normalize(torch.eye(DIM)[: len(video_ids)] + 0.1, dim=-1)
    embeddings = directions.repeat_interleave(2, 0)
    index = torch.arange(len(video_ids)).repeat_interleave(2)
    return MemoryBankData(embeddings, index, list(video_ids), [f"caption {i}" for i in range(len(index))])


def test_canonical_video_id_forms():
    assert canonical_video_id("v_abc") == canonical_video_id("abc") == canonical_video_id("v_abc.mp4") == "abc"
    assert canonical_video_id("abc.NPY") == "abc" and canonical_video_id("v_v_x") == "v_x"


def test_collator_finds_bank_videos_whatever_the_id_form():
    bank = _bank_data(["abc", "v_def", "ghi.mp4"])
    collator = DenseCaptioningCollator(_Tokenizer(), num_frames=6, memory_video_lookup=bank.video_lookup, training=True)
    rows = [{"video_id": vid, "duration": 10.0, "video_features": torch.zeros(6, DIM)} for vid in ("v_abc", "def", "v_ghi", "xyz")]
    assert collator(rows)["video_ids"].tolist() == [0, 1, 2, -1]


def test_collator_refuses_ids_that_match_two_bank_videos():
    bank = _bank_data(["abc", "v_abc"])
    collator = DenseCaptioningCollator(_Tokenizer(), num_frames=6, memory_video_lookup=bank.video_lookup)
    row = {"duration": 10.0, "video_features": torch.zeros(6, DIM)}
    assert collator([{**row, "video_id": "v_abc"}])["video_ids"].tolist() == [1]  # an exact match decides
    with pytest.raises(ValueError, match=r"'abc.mp4' matches several memory-bank videos \['abc', 'v_abc'\]"):
        collator([{**row, "video_id": "abc.mp4"}])


def test_training_retrieval_without_video_ids_raises():
    bank = MemoryBank(0, DIM)
    data = _bank_data(["a", "b", "c", "d"])
    bank.set(data.embeddings, data.video_index)
    features = data.embeddings[[0, 4]][:, None, :].expand(2, 6, DIM).clone()  # videos 0 and 2
    mask = torch.ones(2, 6, dtype=torch.bool)
    cfa = CrossModalFrameAggregation(_config()).train()
    with pytest.raises(ValueError, match="retrieval_exclude='same_video' needs video_ids"):
        cfa(features, mask, bank)
    out = cfa(features, mask, bank, torch.tensor([0, 2]))  # with ids: the own captions never come back
    assert not (bank.video_index[out.retrieved_indices[0]] == 0).any()
    assert not (bank.video_index[out.retrieved_indices[1]] == 2).any()
    own = cfa.eval()(features, mask, bank)  # inference needs no ids and excludes nothing
    assert (bank.video_index[own.retrieved_indices[0]] == 0).all()
    top1 = CrossModalFrameAggregation(_config(retrieval_exclude="top1")).train()(features, mask, bank)
    assert top1.retrieved_indices.shape == (2, 2, 2)


def test_collated_ids_exclude_the_own_captions_of_prefixed_videos():
    data = _bank_data(["abc", "def", "ghi"])  # a bank keyed by bare ids, annotations with "v_"
    bank = MemoryBank(0, DIM)
    bank.set(data.embeddings, data.video_index)
    collator = DenseCaptioningCollator(_Tokenizer(), num_frames=6, memory_video_lookup=data, training=True)
    rows = [{"video_id": f"v_{vid}", "duration": 6.0, "video_features": data.embeddings[2 * i][None].expand(6, DIM)}
            for i, vid in enumerate(("abc", "def"))]
    batch = collator(rows)
    out = CrossModalFrameAggregation(_config()).train()(batch["video_features"], batch["video_mask"], bank, batch["video_ids"])
    for b in range(2):
        assert not (bank.video_index[out.retrieved_indices[b]] == b).any()


def test_check_memory_bank_needs_every_training_video():
    config = _config(memory_size=6)
    bank = _bank_data(["abc", "def", "ghi"])
    check_memory_bank(bank, config, "bank", ["v_abc", "v_def", "ghi"])  # prefixes differ: still the same videos
    with pytest.raises(TrainingSetupError, match=r"1 of the 3 training videos \(e.g. 'v_xyz'\) are not in the memory bank"):
        check_memory_bank(bank, config, "bank", ["v_abc", "v_def", "v_xyz"])
    with pytest.raises(TrainingSetupError, match="None of the 2 training videos"):
        check_memory_bank(bank, config, "bank", ["x", "y"])
    check_memory_bank(bank, _config(memory_size=6, retrieval_exclude="top1"), "bank", ["x", "y"])  # no ids needed
