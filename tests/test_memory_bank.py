"""MemoryBank: buffers, validation of `set`, exact cosine top-k retrieval, exclusions, chunking."""

import math

import pytest
import torch

from cacmi_hf.memory_bank import MemoryBank


def _bank(num=50, dim=8, num_videos=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    bank = MemoryBank(num, dim)
    bank.set(torch.randn(num, dim, generator=gen), torch.randint(0, num_videos, (num,), generator=gen))
    return bank


def _brute_force(bank, queries, top_k, exclude_video=None, exclude="none"):
    """Full similarity matrix, masked, sorted: the reference for the chunked running top-k."""
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    sims = q @ bank.embeddings.T  # (B, Q, M)
    if exclude == "same_video":
        own = (bank.video_index[None, :] == exclude_video[:, None]) & (exclude_video[:, None] >= 0)
        sims = sims.masked_fill(own[:, None, :], float("-inf"))
    extra = 1 if exclude == "top1" else 0
    scores, index = sims.topk(top_k + extra, dim=-1)
    scores, index = scores[..., extra:], index[..., extra:]
    return bank.embeddings[index].mean(-2), index, scores


def test_fresh_bank_is_empty_and_init_special_weights_resets_garbage():
    bank = MemoryBank(4, 3)
    assert torch.equal(bank.embeddings, torch.zeros(4, 3))
    assert torch.equal(bank.video_index, torch.full((4,), -1))
    assert set(bank.state_dict()) == {"embeddings", "video_index"}
    # A checkpoint without the bank leaves torch.empty placeholders; init_special_weights must clean them.
    bank.embeddings.fill_(7.0)
    bank.video_index.fill_(9)
    bank.init_special_weights()
    assert torch.equal(bank.embeddings, torch.zeros(4, 3))
    assert torch.equal(bank.video_index, torch.full((4,), -1))


def test_set_normalises_changes_size_and_keeps_video_index():
    bank = MemoryBank(2, 2)
    size = bank.set(torch.tensor([[3.0, 4.0], [0.0, -2.0], [1.0, 1.0]]), [0, 1, -1])
    assert size == 3 and bank.num_entries == 3
    assert torch.allclose(bank.embeddings, torch.tensor([[0.6, 0.8], [0.0, -1.0], [2**-0.5, 2**-0.5]]))
    assert bank.embeddings.dtype == torch.float32
    assert bank.video_index.tolist() == [0, 1, -1]
    bank.set(torch.ones(5, 2, dtype=torch.float64))
    assert bank.video_index.tolist() == [-1] * 5 and bank.embeddings.dtype == torch.float32


@pytest.mark.parametrize(
    "embeddings, video_index, message",
    [
        (torch.ones(3, 4), None, r"shape \(M, 2\), got \(3, 4\)"),
        (torch.ones(3), None, r"shape \(M, 2\), got \(3,\)"),
        (torch.ones(0, 2), None, "empty"),
        (torch.ones(3, 2, dtype=torch.long), None, "floating point"),
        (torch.tensor([[1.0, float("nan")], [1.0, 1.0]]), None, r"non-finite .* rows \[0\]"),
        (torch.tensor([[1.0, 1.0], [0.0, 0.0]]), None, r"rows \[1\].* all zeros"),
        (torch.ones(3, 2), torch.zeros(2, dtype=torch.long), r"shape \(3,\) .* got \(2,\)"),
        (torch.ones(3, 2), torch.zeros(3), "must be integers"),
        (torch.ones(3, 2), torch.tensor([0, -2, 1]), "got minimum -2"),
    ],
)
def test_set_rejects_bad_input_with_clear_errors(embeddings, video_index, message):
    bank = MemoryBank(1, 2)
    with pytest.raises(ValueError, match=message):
        bank.set(embeddings, video_index)
    assert bank.num_entries == 1  # a failed set leaves the bank untouched


def test_retrieve_hand_built_bank_exact():
    bank = MemoryBank(0, 2)
    angles = [0.0, 30.0, 60.0, 90.0, 180.0]
    bank.set(torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles]) * 5)
    query = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])  # 0° and 90°, any norm
    mean, index, scores = bank.retrieve(query, top_k=2)
    assert index.tolist() == [[[0, 1], [3, 2]]]
    c30 = math.cos(math.radians(30))
    assert torch.allclose(scores, torch.tensor([[[1.0, c30], [1.0, c30]]]), atol=1e-6)
    expected_mean = torch.tensor([[[(1 + c30) / 2, 0.25], [0.25, (1 + c30) / 2]]])
    assert torch.allclose(mean, expected_mean, atol=1e-6)
    # "top1" drops the single best match: 0° then gets 30° and 60°.
    _, index, scores = bank.retrieve(query, top_k=2, exclude="top1")
    assert index.tolist() == [[[1, 2], [2, 1]]]
    assert torch.allclose(scores[0, 0], torch.tensor([c30, 0.5]), atol=1e-6)


def test_same_video_exclusion_never_returns_own_captions_randomised():
    bank = _bank(num=300, dim=16, num_videos=12, seed=1)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        videos = torch.randint(-1, 12, (4,), generator=gen)
        # Queries built from the videos' own captions: the most tempting case for a leak.
        own_rows = torch.stack([torch.nonzero(bank.video_index == max(int(v), 0))[0, 0] for v in videos])
        queries = bank.embeddings[own_rows][:, None, :] + 0.1 * torch.randn(4, 3, 16, generator=gen)
        mean, index, scores = bank.retrieve(queries, 20, exclude_video=videos, exclude="same_video", chunk_size=37)
        for b, v in enumerate(videos.tolist()):
            hit_videos = bank.video_index[index[b]]
            if v >= 0:
                assert not (hit_videos == v).any()
        ref = _brute_force(bank, queries, 20, videos, "same_video")
        assert torch.equal(index, ref[1])
        assert torch.allclose(scores, ref[2], atol=1e-6) and torch.allclose(mean, ref[0], atol=1e-6)
    # Without the exclusion the own captions do come back, so the check above is not vacuous.
    _, index, _ = bank.retrieve(queries, 20)
    assert any((bank.video_index[index[b]] == v).any() for b, v in enumerate(videos.tolist()) if v >= 0)


def test_top1_matches_brute_force_and_drops_best():
    bank = _bank(num=120, dim=8, seed=3)
    queries = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(4))
    _, plain_index, _ = bank.retrieve(queries, 6)
    _, index, scores = bank.retrieve(queries, 5, exclude="top1", chunk_size=16)
    assert torch.equal(index, plain_index[..., 1:])
    ref = _brute_force(bank, queries, 5, exclude="top1")
    assert torch.equal(index, ref[1]) and torch.allclose(scores, ref[2], atol=1e-6)


@pytest.mark.parametrize("chunk_size", [3, 64, 1000])
def test_chunked_equals_unchunked(chunk_size):
    bank = _bank(num=200, dim=12, seed=5)
    queries = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(6))
    videos = torch.tensor([0, 3])
    full = bank.retrieve(queries, 9, exclude_video=videos, exclude="same_video", chunk_size=10_000)
    chunked = bank.retrieve(queries, 9, exclude_video=videos, exclude="same_video", chunk_size=chunk_size)
    assert torch.equal(full[1], chunked[1])
    assert torch.allclose(full[0], chunked[0], atol=1e-6) and torch.allclose(full[2], chunked[2], atol=1e-6)


def test_batch_equals_single_videos_and_query_mask():
    bank = _bank(num=90, dim=8, seed=7)
    queries = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(8))
    videos = torch.tensor([1, -1, 4])
    query_mask = torch.tensor([[True, True, False, True], [True] * 4, [False] * 4])
    mean, index, scores = bank.retrieve(queries, 5, videos, "same_video", query_mask=query_mask, chunk_size=32)
    for b in range(3):
        m1, i1, s1 = bank.retrieve(queries[b : b + 1], 5, videos[b : b + 1], "same_video")
        valid = query_mask[b]
        assert torch.equal(index[b][valid], i1[0][valid])
        assert torch.allclose(mean[b][valid], m1[0][valid], atol=1e-6)
        assert torch.allclose(scores[b][valid], s1[0][valid], atol=1e-6)
        assert (index[b][~valid] == -1).all() and (scores[b][~valid] == 0).all() and (mean[b][~valid] == 0).all()


def test_no_gradient_and_dtype_follows_queries():
    bank = _bank(num=30, dim=4)
    queries = torch.randn(1, 2, 4, dtype=torch.float64, requires_grad=True)
    mean, index, scores = bank.retrieve(queries, 3)
    assert not mean.requires_grad and not scores.requires_grad
    assert mean.dtype == torch.float64 and index.dtype == torch.long


def test_retrieve_errors():
    with pytest.raises(ValueError, match="empty"):
        MemoryBank(0, 4).retrieve(torch.randn(1, 2, 4), 1)
    with pytest.raises(ValueError, match="never set"):
        MemoryBank(10, 4).retrieve(torch.randn(1, 2, 4), 1)
    bank = MemoryBank(0, 4)
    bank.set(torch.randn(10, 4), torch.tensor([0] * 8 + [1] * 2))
    with pytest.raises(ValueError, match=r"shape \(B, Q, 4\), got \(2, 4\)"):
        bank.retrieve(torch.randn(2, 4), 1)
    with pytest.raises(ValueError, match=r"shape \(B, Q, 4\), got \(1, 2, 5\)"):
        bank.retrieve(torch.randn(1, 2, 5), 1)
    with pytest.raises(ValueError, match="top_k=11 exceeds the 10"):
        bank.retrieve(torch.randn(1, 2, 4), 11)
    with pytest.raises(ValueError, match=r"top_k=10 \(\+1 for the top1 exclusion\)"):
        bank.retrieve(torch.randn(1, 2, 4), 10, exclude="top1")
    with pytest.raises(ValueError, match="only 2 eligible entries"):
        bank.retrieve(torch.randn(1, 2, 4), 3, torch.tensor([0]), "same_video")
    with pytest.raises(ValueError, match="needs exclude_video"):
        bank.retrieve(torch.randn(1, 2, 4), 3, exclude="same_video")
    with pytest.raises(ValueError, match=r"exclude_video must have shape \(1,\)"):
        bank.retrieve(torch.randn(1, 2, 4), 3, torch.tensor([0, 1]), "same_video")
    with pytest.raises(ValueError, match="exclude must be one of"):
        bank.retrieve(torch.randn(1, 2, 4), 3, exclude="video")
    with pytest.raises(ValueError, match=r"query_mask must have shape \(1, 2\)"):
        bank.retrieve(torch.randn(1, 2, 4), 3, query_mask=torch.ones(2, 1, dtype=torch.bool))
    # A masked query never triggers the "too few entries" error; video 1 leaves 8 entries.
    _, index, _ = bank.retrieve(torch.randn(1, 2, 4), 8, torch.tensor([1]), "same_video")
    assert (index < 8).all()


def test_state_dict_round_trip():
    bank = _bank(num=25, dim=6, seed=9)
    other = MemoryBank(25, 6)
    other.load_state_dict(bank.state_dict())
    queries = torch.randn(2, 3, 6)
    for a, b in zip(bank.retrieve(queries, 4), other.retrieve(queries, 4)):
        assert torch.equal(a, b)
