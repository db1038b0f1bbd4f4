"""Mixed precision: retrieval and the memory bank stay float32, so bf16 training retrieves what float32 inference does."""

import pytest
import torch
import torch.nn.functional as F

from cacmi_hf.configuration_cacmi import CACMIConfig
from cacmi_hf.frame_aggregation import CrossModalFrameAggregation, boundary_weighted_pooling, contiguous_ward_clustering
from cacmi_hf.memory_bank import MemoryBank
from cacmi_hf.modeling_cacmi import CACMIForDenseCaptioning

DIM = 16


def _config(**overrides) -> CACMIConfig:
    values = dict(
        feature_dim=DIM, num_frames=12, hidden_size=32, num_attention_heads=4, ffn_dim=32, num_encoder_layers=1,
        num_decoder_layers=1, num_feature_levels=2, num_queries=4, max_event_count=3, vocab_size=20,
        max_caption_len=4, caption_hidden_size=16, num_clusters=3, retrieval_top_k=4,
    )
    values.update(overrides)
    return CACMIConfig(**values)


def _close_bank(queries: torch.Tensor, per_query: int = 8, spread: float = 2e-3, seed: int = 0):
    """Bank rows that are tiny perturbations of each query: cosines within ~1e-5 of each other, far below bf16's
    resolution (2^-8), so bf16 scores tie or reorder them while float32 ranks them strictly."""
    g = torch.Generator().manual_seed(seed)
    flat = queries.reshape(-1, queries.shape[-1])  # (N, D)
    rows = flat[:, None, :] + spread * torch.randn(flat.shape[0], per_query, flat.shape[-1], generator=g)  # (N, P, D)
    return F.normalize(rows.reshape(-1, flat.shape[-1]), dim=-1)


def _features(seed: int = 3) -> torch.Tensor:
    """Two videos of 12 frames with a step in the middle, so the clusters are distinct."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 12, DIM, generator=g) * 0.3
    x[:, 6:] += torch.randn(2, 1, DIM, generator=g)
    return x


def test_bank_search_under_bf16_autocast_returns_the_float32_neighbours():
    queries = F.normalize(torch.randn(2, 3, DIM, generator=torch.Generator().manual_seed(1)), dim=-1)
    bank = MemoryBank(0, DIM)
    bank.set(_close_bank(queries))
    expected, expected_index, expected_scores = bank.retrieve(queries, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, index, scores = bank.retrieve(queries, 5)
    assert torch.equal(index, expected_index)
    assert torch.equal(scores, expected_scores) and scores.dtype == torch.float32
    assert torch.equal(got, expected)


def test_cfa_under_bf16_autocast_retrieves_the_float32_indices():
    config = _config()
    cfa = CrossModalFrameAggregation(config).train()
    features, mask = _features(), torch.ones(2, 12, dtype=torch.bool)
    assignment, _, _ = contiguous_ward_clustering(features, mask, config.num_clusters, config.max_cluster_span)
    pooled = boundary_weighted_pooling(features, assignment, config.num_clusters)  # (2, 3, D) the CFA queries
    bank = MemoryBank(0, DIM)
    bank.set(_close_bank(pooled), torch.arange(pooled.shape[0] * pooled.shape[1] * 8) % 5)
    video_ids = torch.tensor([1, 4])
    expected = cfa(features, mask, bank, video_ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = cfa(features, mask, bank, video_ids)
    assert torch.equal(got.retrieved_indices, expected.retrieved_indices)
    assert torch.equal(got.retrieved_scores, expected.retrieved_scores)
    assert torch.equal(got.text_queries, expected.text_queries)


def test_model_to_bf16_keeps_the_bank_float32_and_exact():
    torch.manual_seed(0)
    model = CACMIForDenseCaptioning(_config(memory_size=6))
    embeddings = F.normalize(torch.randn(6, DIM), dim=-1) * (1 + 1e-4)  # values bf16 cannot hold
    model.set_memory_bank(embeddings, torch.arange(6))
    stored = model.memory_bank.embeddings.clone()
    model.to(torch.bfloat16)
    assert model.confidence_heads[0].weight.dtype == torch.bfloat16  # the rest of the model did change
    assert model.memory_bank.embeddings.dtype == torch.float32
    assert torch.equal(model.memory_bank.embeddings, stored)
    model.half()
    assert torch.equal(model.memory_bank.embeddings, stored)
    assert model.memory_bank.video_index.dtype == torch.long


def test_from_pretrained_in_bf16_keeps_the_bank_float32(tmp_path):
    torch.manual_seed(0)
    model = CACMIForDenseCaptioning(_config(memory_size=6))
    model.set_memory_bank(F.normalize(torch.randn(6, DIM), dim=-1), torch.arange(6))
    model.save_pretrained(tmp_path)
    loaded = CACMIForDenseCaptioning.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert loaded.confidence_heads[0].weight.dtype == torch.bfloat16
    assert loaded.memory_bank.embeddings.dtype == torch.float32
    assert torch.equal(loaded.memory_bank.embeddings, model.memory_bank.embeddings)


def test_bf16_model_retrieves_what_the_float32_model_retrieves_for_the_same_frames():
    torch.manual_seed(0)
    config = _config(memory_size=48)
    features = _features()
    assignment, _, _ = contiguous_ward_clustering(features, torch.ones(2, 12, dtype=torch.bool), 3, config.max_cluster_span)
    pooled = boundary_weighted_pooling(features, assignment, 3)
    model = CACMIForDenseCaptioning(config).eval()
    model.set_memory_bank(_close_bank(pooled), torch.arange(48) % 6)
    inputs = dict(video_features=features, durations=torch.tensor([20.0, 30.0]))
    with torch.no_grad():
        expected = model(**inputs).retrieved_indices
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(**inputs).retrieved_indices
    assert torch.equal(got, expected)


