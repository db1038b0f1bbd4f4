"""Post-processing: caption scores, clamping, counter top-k, reranking, ordering, decoding, JSON output."""

import json
import math

import pytest
import torch

from cacmi_hf.post_processing import caption_scores, caption_word_mask, event_counts, post_process_dense_video_captioning

PAD, BOS, EOS = 0, 1, 2
NEG = -1e4  # a counter logit that never wins


def _logit(p):
    return math.log(p / (1 - p))


def _counts(argmax, bins=5):
    counts = torch.full((bins,), NEG)
    counts[argmax] = 0.0
    return counts


def _batch():
    """Two videos, 4 queries; captions of two words with log p −0.1 each unless changed."""
    logits = torch.tensor([[_logit(p) for p in (0.9, 0.8, 0.7, 0.6)], [_logit(p) for p in (0.5, 0.4, 0.3, 0.2)]])
    segments = torch.tensor(
        [
            [[0.7, 0.2], [0.05, 0.3], [0.95, 0.3], [0.4, 0.2]],  # q1 = [-.1, .2] and q2 = [.8, 1.1] need clamping
            [[0.5, 0.2], [0.3, 0.2], [0.1, 0.1], [0.9, 0.1]],
        ]
    )
    counts = torch.stack([_counts(3), _counts(0)])  # 3 events, then 0 -> at least 1
    ids = torch.tensor([BOS, 5, 6, EOS, PAD]).repeat(2, 4, 1)
    log_probs = torch.tensor([0.0, -0.1, -0.1, -0.05, 0.0]).repeat(2, 4, 1)
    durations = torch.tensor([100.0, 50.0])
    return logits, segments, counts, ids, log_probs, durations


def test_caption_score_counts_only_words_before_eos():
    ids = torch.tensor([[BOS, 5, 6, EOS, PAD], [BOS, 5, EOS, 7, 7], [BOS, EOS, PAD, PAD, PAD], [BOS, 3, 5, 6, 7]])
    log_probs = torch.tensor(
        [[0.0, -1.0, -2.0, -0.5, -9.0], [0.0, -1.0, -0.5, -4.0, -4.0], [0.0, -0.3, 0, 0, 0], [0, -1.0, -1.0, -1.0, -1.0]]
    )
    assert caption_word_mask(ids, PAD, BOS, EOS).tolist() == [
        [False, True, True, False, False],
        [False, True, False, False, False],
        [False, False, False, False, False],
        [False, True, True, True, True],  # UNK (3) counts as a word; no EOS -> every word counts
    ]
    scores = caption_scores(ids, log_probs, PAD, BOS, EOS)
    assert scores.tolist() == pytest.approx([-3.0 / (4 + 1e-5), -1.0 / (1 + 1e-5), 0.0, -4.0 / (16 + 1e-5)])


def test_counter_clamping_ordering_and_seconds():
    results = post_process_dense_video_captioning(*_batch())
    assert len(results) == 2
    video0, video1 = results
    # argmax(counter) = 3 -> the three best by joint (equal captions: by confidence q0, q1, q2), sorted by start
    assert [e["query_index"] for e in video0] == [1, 0, 2]
    assert video0[0]["timestamp"] == pytest.approx([0.0, 20.0])  # [-.1, .2] clamped, × 100 s
    assert video0[1]["timestamp"] == pytest.approx([60.0, 80.0])
    assert video0[2]["timestamp"] == pytest.approx([80.0, 100.0])  # [.8, 1.1] clamped
    assert [e["score"] for e in video0] == pytest.approx([0.8, 0.9, 0.7])
    # argmax(counter) = 0 -> still one event, the best one, in the video's own seconds
    assert [e["query_index"] for e in video1] == [0]
    assert video1[0]["timestamp"] == pytest.approx([20.0, 30.0])


def test_rerank_changes_the_choice():
    logits, segments, counts, ids, log_probs, durations = _batch()
    counts[0] = _counts(1)
    log_probs[0, 0, 1:3] = -2.0  # q0: confident (.9) but caption score −4/4 = −1 -> joint −.1
    # q1 keeps −.2/4 = −.05 -> joint .75: the best with reranking
    inputs = (logits, segments, counts, ids, log_probs, durations)
    with_rerank = post_process_dense_video_captioning(*inputs, rerank_alpha=1.0)
    without = post_process_dense_video_captioning(*inputs, rerank_alpha=0.0)
    assert [e["query_index"] for e in with_rerank[0]] == [1]
    assert [e["query_index"] for e in without[0]] == [0]


def test_max_events_and_threshold_overrides():
    batch = _batch()
    everything = post_process_dense_video_captioning(*batch, max_events=10)
    assert [len(v) for v in everything] == [4, 4]
    starts = [e["timestamp"][0] for e in everything[1]]
    assert starts == sorted(starts) and [e["query_index"] for e in everything[1]] == [2, 1, 0, 3]
    thresholded = post_process_dense_video_captioning(*batch, max_events=10, threshold=0.65)
    assert sorted(e["query_index"] for e in thresholded[0]) == [0, 1, 2]
    assert thresholded[1] == []
    with pytest.raises(ValueError, match="max_events"):
        post_process_dense_video_captioning(*batch, max_events=0)


def test_expected_event_count_hand_worked():
    # sigmoids ~0, .8808, .5, .5 over counts 0..3: normalised mean = (.8808 + 2 * .5 + 3 * .5) / 1.8808 = 1.80 -> 2
    counts = torch.tensor([[NEG, 2.0, 0.0, 0.0], [NEG, NEG, NEG, 0.0], [0.0, NEG, NEG, NEG]])
    assert event_counts(counts, "argmax").tolist() == [1, 3, 1]  # the last: argmax 0, at least one event
    assert event_counts(counts, "expected").tolist() == [2, 3, 1]
    expected = (torch.tensor([2.0, 0.0, 0.0]).sigmoid() * torch.tensor([1.0, 2.0, 3.0])).sum() / torch.tensor([2.0, 0.0, 0.0]).sigmoid().sum()
    assert expected.item() == pytest.approx(1.7975, abs=1e-4)
    with pytest.raises(ValueError, match="event_count"):
        event_counts(counts, "mean")


def test_event_count_rule_chooses_how_many_events_are_kept():
    logits, segments, counts, ids, log_probs, durations = _batch()
    counts[0] = torch.tensor([NEG, 2.0, 0.0, 0.0, NEG])  # argmax 1, expected 2
    inputs = (logits, segments, counts, ids, log_probs, durations)
    by_argmax = post_process_dense_video_captioning(*inputs)
    by_mean = post_process_dense_video_captioning(*inputs, event_count="expected")
    assert [e["query_index"] for e in by_argmax[0]] == [0]
    assert [e["query_index"] for e in by_mean[0]] == [1, 0]  # the two best by joint, by start
    assert post_process_dense_video_captioning(*inputs, event_count="expected", max_events=4)[0].__len__() == 4  # explicit count wins
    with pytest.raises(ValueError, match="event_count"):
        post_process_dense_video_captioning(*inputs, event_count="median")


def test_ties_in_start_are_ordered_by_end():
    logits = torch.zeros(1, 3)
    # all start at exactly .25; ends .75, .5, .375
    segments = torch.tensor([[[0.5, 0.5], [0.375, 0.25], [0.3125, 0.125]]])
    results = post_process_dense_video_captioning(logits, segments, _counts(3)[None], None, None, torch.tensor([10.0]))
    assert [e["query_index"] for e in results[0]] == [2, 1, 0]
    assert [e["caption"] for e in results[0]] == ["", "", ""]


def test_batched_equals_single_video():
    batch = _batch()
    together = post_process_dense_video_captioning(*batch)
    for b in range(2):
        alone = post_process_dense_video_captioning(*(t[b : b + 1] for t in batch))
        assert alone[0] == together[b]


def test_decoding_and_json_output():
    batch = _batch()
    assert post_process_dense_video_captioning(*batch)[0][0]["caption"] == "5 6"
    words = {5: "cut", 6: "onions"}
    by_callable = post_process_dense_video_captioning(*batch, tokenizer=lambda ids: " ".join(words[i] for i in ids))
    assert by_callable[0][0]["caption"] == "cut onions"

    class FakeTokenizer:
        def __init__(self):
            self.calls = []

        def decode(self, ids, skip_special_tokens=False):
            self.calls.append((list(ids), skip_special_tokens))
            return " ".join(words[i] for i in ids)

    tokenizer = FakeTokenizer()
    results = post_process_dense_video_captioning(*batch, tokenizer=tokenizer)
    assert results[1][0]["caption"] == "cut onions"
    assert tokenizer.calls == [([5, 6], True)] * 4  # only kept events are decoded, specials stripped

    reloaded = json.loads(json.dumps(results))
    assert reloaded == results
    event = results[0][0]
    assert set(event) == {"timestamp", "caption", "score", "query_index"}
    assert type(event["score"]) is float and type(event["query_index"]) is int
    assert all(type(t) is float for t in event["timestamp"])


def test_transformers_tokenizer_decode():
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, "a": 4, "cut": 5, "onions": 6}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    results = post_process_dense_video_captioning(*_batch(), tokenizer=tokenizer)
    assert results[0][0]["caption"] == "cut onions"


def test_bad_inputs_name_the_argument():
    logits, segments, counts, ids, log_probs, durations = _batch()
    with pytest.raises(ValueError, match="durations"):
        post_process_dense_video_captioning(logits, segments, counts, ids, log_probs, torch.tensor([1.0]))
    with pytest.raises(ValueError, match="pred_segments"):
        post_process_dense_video_captioning(logits, segments[:, :2], counts, ids, log_probs, durations)
    with pytest.raises(ValueError, match="together"):
        post_process_dense_video_captioning(logits, segments, counts, ids, None, durations)
