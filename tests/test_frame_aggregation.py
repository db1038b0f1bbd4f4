"""CFA: contiguous Ward clustering, boundary-weighted and window pooling, and the retrieval module."""

import pytest
import torch

from cacmi_hf.configuration_cacmi import CACMIConfig
from cacmi_hf.frame_aggregation import (
    CrossModalFrameAggregation,
    boundary_weighted_pooling,
    contiguous_ward_clustering,
    window_pooling,
)
from cacmi_hf.memory_bank import MemoryBank


def _reference_clustering(x, num_clusters, max_span):
    """Plain-Python greedy contiguous Ward clustering of one video's valid frames (T, D) -> list of spans."""
    clusters = [[t, t] for t in range(len(x))]

    def cost(a, b):
        xa, xb = x[a[0] : a[1] + 1], x[b[0] : b[1] + 1]
        na, nb = len(xa), len(xb)
        return na * nb / (na + nb) * float(((xa.mean(0) - xb.mean(0)) ** 2).sum())

    while len(clusters) > num_clusters:
        pairs = [(cost(clusters[i], clusters[i + 1]), i) for i in range(len(clusters) - 1)]
        allowed = [p for p in pairs if clusters[p[1] + 1][1] - clusters[p[1]][0] + 1 <= max_span]
        _, i = min(allowed or pairs)  # min over (cost, index): ties go to the earliest pair
        clusters[i : i + 2] = [[clusters[i][0], clusters[i + 1][1]]]
    return clusters


def _features(values):
    return torch.tensor(values, dtype=torch.float32)[None, :, None]


def test_hand_worked_three_clusters():
    features = _features([0, 0, 0, 10, 10, 20])
    mask = torch.ones(1, 6, dtype=torch.bool)
    assignment, spans, cluster_mask = contiguous_ward_clustering(features, mask, 3, 6)
    assert spans.tolist() == [[[0, 2], [3, 4], [5, 5]]]
    assert assignment.tolist() == [[0, 0, 0, 1, 1, 2]]
    assert cluster_mask.tolist() == [[True, True, True]]


def test_span_limit_changes_the_answer():
    features = _features([0, 0, 0, 0, 10, 10])
    mask = torch.ones(1, 6, dtype=torch.bool)
    assert contiguous_ward_clustering(features, mask, 2, 6)[1].tolist() == [[[0, 3], [4, 5]]]
    # At most 3 frames: [0-2] fills up, so frame 3 must join the 10s (cost 2/3·100 instead of 4/5·100).
    assert contiguous_ward_clustering(features, mask, 2, 3)[1].tolist() == [[[0, 2], [3, 5]]]


def test_relaxation_when_no_allowed_merge_is_left():
    # Pairs merge first ({0,1}, {2,3}, {4,5}); every further merge exceeds 3 frames, so the limit is
    # relaxed and the cheapest pair ({10,10} + {15,15}: cost 25 < 100) merges.
    features = _features([0, 0, 10, 10, 15, 15])
    mask = torch.ones(1, 6, dtype=torch.bool)
    assignment, spans, cluster_mask = contiguous_ward_clustering(features, mask, 2, 3)
    assert spans.tolist() == [[[0, 1], [2, 5]]]
    assert assignment.tolist() == [[0, 0, 1, 1, 1, 1]]
    assert cluster_mask.all()


@pytest.mark.parametrize("length, num_clusters, max_span", [(12, 3, 4), (15, 4, 6), (20, 5, 12), (9, 9, 1), (7, 1, 3)])
def test_matches_plain_python_reference_on_random_batches(length, num_clusters, max_span):
    gen = torch.Generator().manual_seed(length * 100 + num_clusters)
    batch = 6
    features = torch.randn(batch, length, 5, dtype=torch.float64, generator=gen)
    num_valid = torch.tensor([length, length - 1, num_clusters, max(num_clusters - 1, 0), 0, length // 2])
    mask = torch.arange(length)[None, :] < num_valid[:, None]
    assignment, spans, cluster_mask = contiguous_ward_clustering(features, mask, num_clusters, max_span)
    for b in range(batch):
        n = int(num_valid[b])
        expected = _reference_clustering(features[b, :n], num_clusters, max_span)
        got = spans[b][cluster_mask[b]].tolist()
        assert got == expected, (b, got, expected)
        assert int(cluster_mask[b].sum()) == min(n, num_clusters)
        assert (spans[b][~cluster_mask[b]] == -1).all()
        # The assignment agrees with the spans, is ordered in time, and is -1 exactly on padding.
        for cid, (first, last) in enumerate(expected):
            assert (assignment[b, first : last + 1] == cid).all()
        assert (assignment[b, n:] == -1).all()


def test_contiguous_within_limit_and_exactly_c_clusters():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(8, 100, 16, generator=gen)
    mask = torch.ones(8, 100, dtype=torch.bool)
    assignment, spans, cluster_mask = contiguous_ward_clustering(features, mask, 10, 30)
    assert cluster_mask.all()
    lengths = spans[..., 1] - spans[..., 0] + 1
    assert (lengths >= 1).all() and (lengths <= 30).all()
    assert (spans[:, 0, 0] == 0).all() and (spans[:, -1, 1] == 99).all()
    assert (spans[:, 1:, 0] == spans[:, :-1, 1] + 1).all()  # contiguous, ordered, covering every frame
    assert (assignment.diff(dim=1) >= 0).all() and (assignment.diff(dim=1) <= 1).all()


def test_padding_and_batch_equal_single_videos():
    gen = torch.Generator().manual_seed(1)
    lengths = [30, 17, 25]
    features = torch.randn(3, 30, 8, generator=gen) * 100  # padding holds large garbage
    mask = torch.arange(30)[None, :] < torch.tensor(lengths)[:, None]
    assignment, spans, cluster_mask = contiguous_ward_clustering(features, mask, 5, 12)
    for b, n in enumerate(lengths):
        single = contiguous_ward_clustering(features[b : b + 1, :n], torch.ones(1, n, dtype=torch.bool), 5, 12)
        assert torch.equal(assignment[b, :n], single[0][0])
        assert torch.equal(spans[b], single[1][0]) and torch.equal(cluster_mask[b], single[2][0])


def test_mask_hole_is_skipped_and_fewer_frames_than_clusters():
    features = _features([0, 0, 99, 10, 10, 20])
    mask = torch.tensor([[True, True, False, True, True, True]])
    assignment, spans, _ = contiguous_ward_clustering(features, mask, 3, 6)
    assert assignment.tolist() == [[0, 0, -1, 1, 1, 2]]
    assert spans.tolist() == [[[0, 1], [3, 4], [5, 5]]]
    few = torch.tensor([[True, True, False, False, False, False]])
    assignment, spans, cluster_mask = contiguous_ward_clustering(features, few, 3, 6)
    assert assignment.tolist() == [[0, 1, -1, -1, -1, -1]]
    assert spans.tolist() == [[[0, 0], [1, 1], [-1, -1]]]
    assert cluster_mask.tolist() == [[True, True, False]]


def test_clustering_bad_input():
    with pytest.raises(ValueError, match="mask \\(B, L\\)"):
        contiguous_ward_clustering(torch.zeros(1, 4, 2), torch.ones(1, 5, dtype=torch.bool), 2, 2)
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        contiguous_ward_clustering(torch.zeros(1, 4, 2), torch.ones(1, 4, dtype=torch.bool), 0, 2)


def test_boundary_weighted_pooling_hand_worked():
    features = torch.tensor([[[1.0], [2.0], [6.0], [4.0], [5.0], [8.0], [7.0]]])
    assignment = torch.tensor([[0, 0, 0, 1, 2, 2, -1]])
    pooled = boundary_weighted_pooling(features, assignment, 4, beta=1.0)
    # Cluster 0: u = 0, .5, 1 -> w = 2, 1, 2 -> (2 + 2 + 12) / 5; one-frame cluster 1: itself;
    # cluster 2: u = 0, 1 -> equal weights; empty cluster 3: zeros; the padded 7 is ignored.
    assert torch.allclose(pooled[0, :, 0], torch.tensor([16 / 5, 4.0, 6.5, 0.0]))
    beta3 = boundary_weighted_pooling(features, assignment, 4, beta=3.0)
    assert torch.allclose(beta3[0, 0, 0], torch.tensor((4 + 2 + 24) / 9))
    plain = boundary_weighted_pooling(features, assignment, 4, beta=0.0)
    assert torch.allclose(plain[0, 0, 0], torch.tensor(3.0))


def test_window_pooling_is_a_count_of_windows_as_cm2():
    # CM2 (cm2_ret_encdec_clip.py, softattention_select): segment_length = frames // window_size, window i is
    # frames [i*seg, (i+1)*seg), the remainder frames are in no window.
    features = torch.arange(11, dtype=torch.float32).view(1, 11, 1).repeat(3, 1, 2)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 7:] = False  # 7 valid frames: windows of 2, frame 6 left over
    mask[2, 2:] = False  # 2 valid frames for 3 windows: one-frame windows, the third empty
    pooled, window_mask, spans = window_pooling(features, mask, 3)
    assert pooled.shape == (3, 3, 2)
    # 11 frames / 3 windows -> 3 frames each: [0,1,2] [3,4,5] [6,7,8]; frames 9 and 10 belong to no window
    assert pooled[0, :, 0].tolist() == [1.0, 4.0, 7.0]
    assert spans[0].tolist() == [[0, 2], [3, 5], [6, 8]]
    assert pooled[1, :, 0].tolist() == [0.5, 2.5, 4.5] and spans[1].tolist() == [[0, 1], [2, 3], [4, 5]]
    assert pooled[2, :, 0].tolist() == [0.0, 1.0, 0.0] and spans[2].tolist() == [[0, 0], [1, 1], [-1, -1]]
    assert window_mask.tolist() == [[True] * 3, [True] * 3, [True, True, False]]
    # the ActivityNet setting: 100 frames, 20 windows of 5
    _, _, anet = window_pooling(torch.zeros(1, 100, 1), torch.ones(1, 100, dtype=torch.bool), 20)
    assert anet[0, 0].tolist() == [0, 4] and anet[0, -1].tolist() == [95, 99]


def _config(**overrides):
    base = dict(feature_dim=8, num_frames=24, num_clusters=4, retrieval_top_k=3, retrieval_num_windows=5)
    return CACMIConfig(**{**base, **overrides})


def _video_bank(num_videos=5, per_video=6, dim=8, seed=0):
    """Bank whose captions are noisy copies of one direction per video, so a video's own captions rank first."""
    gen = torch.Generator().manual_seed(seed)
    directions = torch.randn(num_videos, dim, generator=gen)
    rows = directions.repeat_interleave(per_video, 0) + 0.05 * torch.randn(num_videos * per_video, dim, generator=gen)
    bank = MemoryBank(0, dim)
    bank.set(rows, torch.arange(num_videos).repeat_interleave(per_video))
    return bank, directions


def test_cfa_clusters_mode_retrieves_for_pooled_clusters():
    bank, directions = _video_bank()
    config = _config()
    cfa = CrossModalFrameAggregation(config).eval()
    gen = torch.Generator().manual_seed(3)
    features = directions[[0, 2]][:, None, :] + 0.3 * torch.randn(2, 24, 8, generator=gen)
    mask = torch.ones(2, 24, dtype=torch.bool)
    mask[1, 20:] = False
    out = cfa(features, mask, bank)
    assert out.text_queries.shape == (2, 4, 8) and out.text_mask.shape == (2, 4)
    assert out.spans.shape == (2, 4, 2) and out.retrieved_indices.shape == (2, 4, 3)
    assignment, spans, cluster_mask = contiguous_ward_clustering(features, mask, 4, config.max_cluster_span)
    pooled = boundary_weighted_pooling(features, assignment, 4, 1.0)
    mean, index, scores = bank.retrieve(pooled, 3, query_mask=cluster_mask)
    assert torch.equal(out.spans, spans) and torch.equal(out.retrieved_indices, index)
    assert torch.allclose(out.text_queries, mean) and torch.allclose(out.retrieved_scores, scores)
    # In eval mode nothing is excluded: the videos' own captions come back.
    assert (bank.video_index[out.retrieved_indices[0]] == 0).all()


def test_cfa_excludes_own_captions_only_while_training():
    bank, directions = _video_bank()
    features = directions[[1, 3]][:, None, :].expand(2, 24, 8).clone()
    mask = torch.ones(2, 24, dtype=torch.bool)
    video_ids = torch.tensor([1, 3])
    cfa = CrossModalFrameAggregation(_config()).train()
    out = cfa(features, mask, bank, video_ids)
    for b, v in enumerate(video_ids.tolist()):
        assert not (bank.video_index[out.retrieved_indices[b]] == v).any()
    out = CrossModalFrameAggregation(_config(retrieval_exclude="top1")).train()(features, mask, bank, video_ids)
    eval_top4 = CrossModalFrameAggregation(_config(retrieval_top_k=4)).eval()(features, mask, bank, video_ids)
    assert torch.equal(out.retrieved_indices, eval_top4.retrieved_indices[..., 1:])
    assert (bank.video_index[eval_top4.retrieved_indices] == video_ids[:, None, None]).all()
    # "same_video" without video_ids refuses to train rather than retrieve the video's own captions.
    with pytest.raises(ValueError, match="needs video_ids"):
        cfa.train()(features, mask, bank)


def test_cfa_windows_mode_and_no_gradient():
    bank, directions = _video_bank()
    cfa = CrossModalFrameAggregation(_config(retrieval_mode="windows")).eval()
    features = torch.randn(3, 24, 8, requires_grad=True)
    mask = torch.ones(3, 24, dtype=torch.bool)
    mask[2, 9:] = False
    out = cfa(features, mask, bank)
    assert cfa.num_text_queries(24) == 5
    assert out.text_queries.shape == (3, 5, 8) and out.retrieved_scores.shape == (3, 5, 3)
    # 24 frames: 5 windows of 4 (frames 20-23 in none); the 9-frame video: 5 windows of 1 (frames 5-8 in none)
    assert out.spans[0, -1].tolist() == [16, 19] and out.spans[2, -1].tolist() == [4, 4]
    assert out.text_mask.all()
    pooled, _, _ = window_pooling(features.detach(), mask, 5)
    assert torch.equal(out.retrieved_indices[0], bank.retrieve(pooled[:1], 3)[1][0])
    assert not out.text_queries.requires_grad
    assert list(cfa.parameters()) == []


def test_cfa_dimension_errors():
    with pytest.raises(ValueError, match="memory_dim=16"):
        CrossModalFrameAggregation(_config(memory_dim=16))
    bank, _ = _video_bank(dim=6)
    with pytest.raises(ValueError, match="memory bank dimension 6 differs from the frame feature size 8"):
        CrossModalFrameAggregation(_config())(torch.randn(1, 24, 8), torch.ones(1, 24, dtype=torch.bool), bank)


def test_cluster_cache_is_a_config_switch():
    assert CrossModalFrameAggregation(_config()).cluster_cache is not None
    assert CrossModalFrameAggregation(_config(cache_clusters=False)).cluster_cache is None
