"""WardClusterCache: the clustering of contiguous_ward_clustering, computed once per video."""

import pytest
import torch

from cacmi_hf.cluster_cache import WardClusterCache
from cacmi_hf.frame_aggregation import contiguous_ward_clustering


def batch(seed, sizes=(12, 9, 12)):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(sizes), max(sizes), 8, generator=generator)
    mask = torch.arange(max(sizes))[None, :] < torch.tensor(sizes)[:, None]
    return features, mask


def assert_same(got, expected):
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_equals_ward_and_runs_it_only_on_unseen_videos(monkeypatch):
    features, mask = batch(0)
    cache = WardClusterCache()
    expected = contiguous_ward_clustering(features, mask, 3, 5)
    assert_same(cache(features, mask, 3, 5), expected)
    assert (cache.hits, cache.misses, len(cache)) == (0, 3, 3)
    calls = []
    original = contiguous_ward_clustering

    def counting(f, m, c, s):
        calls.append(f.shape[0])
        return original(f, m, c, s)

    monkeypatch.setattr("cacmi_hf.cluster_cache.contiguous_ward_clustering", counting)
    assert_same(cache(features, mask, 3, 5), expected)  # the next epoch: no Ward at all
    assert calls == [] and cache.hits == 3
    other, other_mask = batch(1, sizes=(12, 5))
    mixed = torch.cat([features[1:2], other[:, :12]]), torch.cat([mask[1:2], other_mask])
    assert_same(cache(*mixed, 3, 5), contiguous_ward_clustering(*mixed, 3, 5))  # new videos beside a seen one
    assert calls == [2]  # only the two new videos were clustered
    assert_same(cache(features, mask, 2, 5), contiguous_ward_clustering(features, mask, 2, 5))  # c is in the key
    assert calls == [2, 3]


def test_padding_does_not_change_the_key_but_features_do():
    features, mask = batch(2, sizes=(10, 7))
    cache = WardClusterCache()
    cache(features, mask, 3, 4)
    padded = features.clone()
    padded[1, 7:] = 99.0  # values under the padding are ignored
    cache(padded, mask, 3, 4)
    assert cache.hits == 2
    moved = features.clone()
    moved[0, 3, 5] += 1e-4  # a different video
    assert_same(cache(moved, mask, 3, 4)[0][:1], contiguous_ward_clustering(moved, mask, 3, 4)[0][:1])
    assert cache.misses == 3


def test_least_recently_used_videos_leave_first():
    cache = WardClusterCache(max_videos=2)
    features, mask = batch(3, sizes=(6, 6, 6))
    cache(features[:2], mask[:2], 2, 4)
    cache(features[:1], mask[:1], 2, 4)  # video 0 is now the most recent
    cache(features[2:], mask[2:], 2, 4)  # evicts video 1
    assert len(cache) == 2
    cache(features[:1], mask[:1], 2, 4)
    cache(features[1:2], mask[1:2], 2, 4)
    assert cache.misses == 4 and cache.hits == 2
    with pytest.raises(ValueError, match="max_videos"):
        WardClusterCache(max_videos=0)


def test_cfa_uses_the_cache_and_gives_the_same_queries(monkeypatch):
    from types import SimpleNamespace

    from cacmi_hf.frame_aggregation import CrossModalFrameAggregation
    from cacmi_hf.memory_bank import MemoryBank

    config = SimpleNamespace(text_dim=8, feature_dim=8, retrieval_mode="clusters", num_clusters=3, max_cluster_span=5,
                             boundary_weight=1.0, retrieval_top_k=2, retrieval_num_windows=3, retrieval_exclude="none",
                             cache_clusters=True)
    cached, plain = CrossModalFrameAggregation(config), CrossModalFrameAggregation(config)
    plain.cluster_cache = None
    assert isinstance(cached.cluster_cache, WardClusterCache)
    bank = MemoryBank(6, 8)
    bank.set(torch.nn.functional.normalize(torch.randn(6, 8), dim=-1), torch.arange(6))
    features, mask = batch(4)
    expected = plain(features, mask, bank)
    for _ in range(2):  # the second pass finds every video in the cache
        out = cached(features, mask, bank)
        for name in ("text_queries", "text_mask", "spans", "retrieved_indices"):
            assert torch.equal(getattr(out, name), getattr(expected, name)), name
    assert (cached.cluster_cache.hits, cached.cluster_cache.misses) == (3, 3)
