"""The retrieval-quality dial: event banks (oracle, swapped), random banks, the lookup CFA and retrieval accuracy."""

import pytest
import torch

from cacmi_hf.configuration_cacmi import CACMIConfig
from cacmi_hf.data.memory import MemoryBankData
from cacmi_hf.modeling_cacmi import CACMIForDenseCaptioning
from cacmi_hf.synthetic.banks import (
    EventLookupAggregation,
    bank_name,
    event_bank,
    install_bank,
    random_bank,
    retrieval_accuracy,
    word_encoder,
)

SENTENCES = [f"a {c} {s} grows" for c in ("red", "blue", "green") for s in ("circle", "square", "cross")]


def fake_encode(sentences):
    """A deterministic 16-d embedding per sentence (its index among SENTENCES, one-hot plus a constant)."""
    out = torch.full((len(sentences), 16), 0.1)
    for i, s in enumerate(sentences):
        out[i, SENTENCES.index(s)] = 1.0
    return out


def annotations():
    """Three videos, 3 + 2 + 4 events, every sentence distinct."""
    return {
        "v0": {"duration": 10.0, "timestamps": [[0, 3], [4, 6], [8, 10]], "sentences": SENTENCES[0:3]},
        "v1": {"duration": 20.0, "timestamps": [[0, 10], [10, 20]], "sentences": SENTENCES[3:5]},
        "v2": {"duration": 8.0, "timestamps": [[0, 2], [2, 4], [4, 6], [6, 8]], "sentences": SENTENCES[5:9]},
    }


def test_oracle_bank_holds_every_event_in_order():
    bank, table = event_bank(annotations(), fake_encode)
    assert bank.sentences == SENTENCES and bank.video_ids == ["v0", "v1", "v2"]
    assert bank.video_index.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert torch.allclose(bank.embeddings, fake_encode(SENTENCES))
    assert table.rows.tolist() == [[0, 1, 2, -1], [3, 4, -1, -1], [5, 6, 7, 8]]
    assert table.spans[1].tolist() == [[0.0, 0.5], [0.5, 1.0], [0.0, 0.0], [0.0, 0.0]]
    assert bank_name("oracle") == "oracle" and bank_name("swap", 0.5) == "swap 0.5"


@pytest.mark.parametrize("fraction, changed", [(0.0, 0), (1 / 3, 3), (0.5, 4), (1.0, 9)])
def test_swap_replaces_exactly_that_fraction_with_other_videos_sentences(fraction, changed):
    bank, _ = event_bank(annotations(), fake_encode, swap_fraction=fraction, seed=7)
    own = {0: set(SENTENCES[0:3]), 1: set(SENTENCES[3:5]), 2: set(SENTENCES[5:9])}
    differs = [row for row, (s, t) in enumerate(zip(bank.sentences, SENTENCES)) if s != t]
    assert len(differs) == changed
    for row in differs:  # a swapped entry comes from another video, and its embedding is that sentence's
        assert bank.sentences[row] not in own[int(bank.video_index[row])]
        assert torch.equal(bank.embeddings[row], fake_encode([bank.sentences[row]])[0])
    again, _ = event_bank(annotations(), fake_encode, swap_fraction=fraction, seed=7)
    assert again.sentences == bank.sentences  # seeded


def test_random_bank_keeps_rows_and_labels_and_is_seeded():
    bank, _ = event_bank(annotations(), fake_encode)
    noise = random_bank(bank, seed=3)
    assert noise.sentences == bank.sentences and torch.equal(noise.video_index, bank.video_index)
    assert torch.allclose(noise.embeddings.norm(dim=1), torch.ones(9))
    assert torch.equal(noise.embeddings, random_bank(bank, seed=3).embeddings)
    assert not torch.equal(noise.embeddings, random_bank(bank, seed=4).embeddings)


def _config(**overrides):
    base = dict(feature_dim=16, num_frames=10, hidden_size=32, num_attention_heads=4, ffn_dim=32, num_encoder_layers=1,
                num_decoder_layers=1, num_feature_levels=2, num_queries=4, max_event_count=4, vocab_size=20,
                max_caption_len=6, caption_hidden_size=24, num_clusters=2, retrieval_top_k=2,
                retrieval_mode="windows", retrieval_num_windows=5, memory_size=9)
    base.update(overrides)
    return CACMIConfig(**base)


def test_lookup_gives_each_window_its_most_overlapped_or_nearest_event():
    # two videos of 10 frames: events [0, .3] and [.8, 1] (rows 0, 1); [0, .6] and [.6, 1] (rows 2, 3)
    notes = {"a": {"duration": 10.0, "timestamps": [[0, 3], [8, 10]], "sentences": SENTENCES[:2]},
             "b": {"duration": 10.0, "timestamps": [[0, 6], [6, 10]], "sentences": SENTENCES[2:4]}}
    bank_data, table = event_bank(notes, fake_encode)
    cfa = EventLookupAggregation(_config(), table)
    bank = CACMIForDenseCaptioning(_config()).cacmi.memory_bank
    bank.set(bank_data.embeddings, bank_data.video_index)
    features = torch.randn(2, 10, 16)
    mask = torch.ones(2, 10, dtype=torch.bool)
    out = cfa(features, mask, bank, torch.tensor([0, 1]))
    # windows of 2 frames: [0,.2) [.2,.4) [.4,.6) [.6,.8) [.8,1): overlap, overlap, nearest (gap .1 vs .2), touch, overlap
    assert out.retrieved_indices[0, :, 0].tolist() == [0, 0, 0, 1, 1]
    assert out.retrieved_indices[1, :, 0].tolist() == [2, 2, 2, 3, 3]
    assert torch.allclose(out.text_queries[0, 3], bank.embeddings[1])
    assert (out.retrieved_scores == 1).all()
    single = cfa(features[1:], mask[1:], bank, torch.tensor([1]))
    assert torch.equal(single.retrieved_indices, out.retrieved_indices[1:])  # batched == single
    assert torch.allclose(single.text_queries, out.text_queries[1:])
    with pytest.raises(ValueError, match="row in the event table"):
        cfa(features, mask, bank, torch.tensor([0, -1]))


def test_install_bank_routes_the_model_through_the_lookup():
    torch.manual_seed(0)
    bank, table = event_bank(annotations(), fake_encode)
    model = CACMIForDenseCaptioning(_config(retrieval_mode="clusters")).eval()
    install_bank(model, bank, table)
    assert isinstance(model.cacmi.frame_aggregation, EventLookupAggregation)
    out = model(video_features=torch.randn(2, 10, 16), durations=torch.tensor([10.0, 20.0]), video_ids=torch.tensor([0, 1]))
    assert set(out.retrieved_indices[0].flatten().tolist()) <= {0, 1, 2}  # v0's own events only
    assert set(out.retrieved_indices[1].flatten().tolist()) <= {3, 4}
    with pytest.raises(ValueError, match="same videos"):
        install_bank(model, bank, type(table)(["x", "y", "z"], table.spans, table.rows))


def test_retrieval_accuracy_hand_worked():
    reference = {"duration": 10.0, "timestamps": [[0, 5], [5, 10]], "sentences": ["a red circle grows", "a blue square blinks"]}
    sentences = ["a red circle grows", "a red square blinks", "a blue square blinks"]
    spans = torch.tensor([[[0, 3], [4, 6], [7, 9], [-1, -1]]])  # inside ev0, split 1/2-2/3 (mostly ev1), inside ev1, masked
    indices = torch.tensor([[[0, 2], [1, 0], [2, 1], [-1, -1]]])
    scores = retrieval_accuracy(spans, indices, [10], [reference], sentences)
    # spans 0 and 2 are at least half inside one event; span 1 covers frames 4-6 = [.4,.7): 2/3 inside ev1, counts too
    assert scores["spans"] == 3 and scores["inside"] == 3
    assert scores["acc@1"] == pytest.approx(2 / 3)  # right, wrong colour, right
    assert scores["colour"] == pytest.approx(2 / 3) and scores["shape"] == 1.0 and scores["action"] == 1.0


def test_word_encoder_keeps_every_word_apart():
    encode = word_encoder(128, seed=0)
    rows = encode(["a red circle grows", "a yellow circle grows", "a red circle grows.", "a red circle shrinks"])
    assert torch.allclose(rows.norm(dim=1), torch.ones(4))
    assert torch.equal(rows[0], rows[2])  # punctuation and case are not words
    assert torch.equal(rows, word_encoder(128, seed=0)(["a red circle grows", "a yellow circle grows",
                                                         "a red circle grows.", "a red circle shrinks"]))
    # one word of four differs: cosine near 3/4, far below the ~0.98 of the tiny CLIP's text tower
    assert 0.6 < float(rows[0] @ rows[1]) < 0.9 and 0.6 < float(rows[0] @ rows[3]) < 0.9
    with pytest.raises(ValueError, match="no words"):
        encode(["..."])
