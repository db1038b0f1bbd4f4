"""CACMIModel / CACMIForDenseCaptioning: switches, padding invariance, losses, over-fitting, input errors."""

import itertools
import math

import pytest
import torch

from cacmi_hf.configuration_cacmi import CACMIConfig
from cacmi_hf.modeling_cacmi import CACMIDenseCaptioningOutput, CACMIForDenseCaptioning, CACMIModel
from cacmi_hf.segment_ops import segment_cw_to_se, segment_iou


def tiny_config(**overrides) -> CACMIConfig:
    base = dict(
        feature_dim=16, num_frames=12, hidden_size=32, num_attention_heads=4, ffn_dim=32, num_encoder_layers=1,
        num_decoder_layers=2, num_feature_levels=3, num_queries=5, max_event_count=3, vocab_size=20,
        max_caption_len=6, caption_hidden_size=24, num_clusters=3, retrieval_top_k=2, retrieval_num_windows=3,
        memory_size=10,
    )
    base.update(overrides)
    return CACMIConfig(**base)


def make_model(seed=0, **overrides) -> CACMIForDenseCaptioning:
    torch.manual_seed(seed)
    model = CACMIForDenseCaptioning(tiny_config(**overrides))
    if model.config.use_cfa:
        model.set_memory_bank(torch.randn(model.config.memory_size, model.config.text_dim), torch.arange(10) % 5)
    return model.eval()


def make_batch(lengths=(12, 9, 5), frames=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    features = torch.randn(batch, frames, 16, generator=g)
    mask = torch.arange(frames)[None] < torch.tensor(lengths)[:, None]
    features[~mask] = 1e3  # padding content must not matter
    durations = torch.tensor([30.0, 47.5, 12.2, 80.0][:batch])
    return dict(video_features=features, video_mask=mask, durations=durations)


# bank video of each make_batch() video while training ("same_video" exclusion needs them)
TRAIN_IDS = torch.tensor([0, 1, 2])


def make_labels(batch=3):
    segments = torch.tensor([[0.1, 0.4], [0.5, 0.9], [0.0, 1.0]]).expand(batch, 3, 2).clone()
    mask = torch.tensor([[True, True, False], [True, False, False], [True, True, True]][:batch])
    captions = torch.tensor([[1, 4, 5, 2, 0, 0], [1, 6, 7, 8, 9, 2], [1, 10, 2, 0, 0, 0]]).expand(batch, 3, 6).clone()
    captions[~mask] = 0
    return dict(event_segments=segments, event_mask=mask, caption_ids=captions)


SWITCHES = list(itertools.product([True, False], [True, False], [True, False], ["clusters", "windows"]))


@pytest.mark.parametrize("use_cfa,use_cfe,text_attn,mode", SWITCHES)
def test_every_switch_combination(use_cfa, use_cfe, text_attn, mode):
    overrides = dict(use_cfa=use_cfa, use_cfe=use_cfe, decoder_text_cross_attention=text_attn, retrieval_mode=mode)
    if not use_cfa and (use_cfe or text_attn):
        with pytest.raises(ValueError, match="use_cfa=False"):
            make_model(**overrides)
        return
    model = make_model(**overrides)
    assert (model.cacmi.feature_enhancement is not None) == use_cfe
    assert (model.cacmi.decoder.layers[0].text_attn is not None) == text_attn
    inputs = make_batch()
    out = model.generate(**inputs)
    B, N, K = 3, 5, 3
    assert out.logits.shape == (B, N) and out.pred_segments.shape == (B, N, 2) and out.pred_counts.shape == (B, K + 1)
    assert out.caption_ids.shape[:2] == (B, N) and out.caption_ids.shape == out.caption_log_probs.shape
    assert len(out.aux_outputs) == 1 and out.aux_outputs[0]["logits"].shape == (B, N)
    if use_cfa:
        c = 3  # 3 clusters or 3 windows
        assert out.text_mask.shape == (B, c) and out.retrieved_indices.shape == (B, c, 2)
    else:
        assert out.text_mask is None and model.memory_bank is None
    model.train()
    trained = model(**inputs, **make_labels(), video_ids=torch.tensor([0, 1, -1]))
    assert torch.isfinite(trained.loss)
    expected_keys = {f"{k}{s}" for k in ("loss_ce", "loss_giou", "loss_l1", "loss_counter", "loss_caption") for s in ("", "_0")}
    assert set(trained.loss_dict) == expected_keys
    trained.loss.backward()


def test_text_cross_attention_uses_the_retrieved_text():
    model = make_model()
    inputs = make_batch()
    before = model(**inputs).logits
    model.set_memory_bank(torch.randn(10, 16) * 3, torch.arange(10) % 5)
    assert not torch.allclose(model(**inputs).logits, before)


@pytest.mark.parametrize("overrides", [{}, dict(use_cfa=False, use_cfe=False, decoder_text_cross_attention=False),
                                       dict(retrieval_mode="windows", with_segment_refine=False)])
def test_batched_equals_each_video_alone(overrides):
    model = make_model(**overrides)
    inputs = make_batch()
    with torch.no_grad():
        batched = model.generate(**inputs)
        forward = model(**inputs)
    torch.testing.assert_close(forward.logits, batched.logits)
    for i, n in enumerate((12, 9, 5)):
        alone = model.generate(
            video_features=inputs["video_features"][i : i + 1, :n], durations=inputs["durations"][i : i + 1]
        )
        for name in ("logits", "pred_segments", "pred_counts", "last_hidden_state"):
            torch.testing.assert_close(getattr(batched, name)[i : i + 1], getattr(alone, name), atol=1e-5, rtol=1e-5, msg=name)
        t = alone.caption_ids.shape[-1]
        assert torch.equal(batched.caption_ids[i : i + 1, :, :t], alone.caption_ids)
        assert (batched.caption_ids[i : i + 1, :, t:] == model.config.pad_token_id).all()
        torch.testing.assert_close(batched.caption_log_probs[i : i + 1, :, :t], alone.caption_log_probs, atol=1e-5, rtol=1e-5)


def test_loss_is_the_weighted_sum_of_the_loss_dict():
    model = make_model().train()
    torch.manual_seed(0)
    out = model(**make_batch(), video_ids=TRAIN_IDS, **make_labels())
    weights = model.criterion.weight_dict
    expected = sum(weights[k] * v for k, v in out.loss_dict.items())
    torch.testing.assert_close(out.loss, expected)
    assert weights["loss_caption"] == model.config.caption_loss_coef and weights["loss_giou_0"] == model.config.giou_loss_coef


def test_without_aux_loss_only_the_last_layer_is_trained():
    model = make_model(aux_loss=False).train()
    out = model(**make_batch(), video_ids=TRAIN_IDS, **make_labels())
    assert set(out.loss_dict) == {"loss_ce", "loss_giou", "loss_l1", "loss_counter", "loss_caption"}


def test_caption_loss_is_the_nll_of_the_matched_captions():
    """The caption loss equals the teacher-forced NLL of each matched query's caption, recomputed by hand."""
    model = make_model(aux_loss=False).eval()
    inputs, labels = make_batch(), make_labels()
    out = model(**inputs, **labels)
    model_out = model.cacmi(**inputs)
    heads = model._heads(model_out)
    _, (match,) = model.criterion(heads[-1:], {"segments": labels["event_segments"], "mask": labels["event_mask"]})
    nlls = []
    for b, q, e in zip(match.batch.tolist(), match.query.tolist(), match.target.tolist()):
        caption = labels["caption_ids"][b, e]
        caption = caption[: int((caption != 0).sum())]
        log_probs = model.captioner(
            model_out.memory[b : b + 1], model_out.memory_mask[b : b + 1], model_out.level_lengths,
            model_out.level_start, model_out.last_hidden_state[b : b + 1, q : q + 1],
            model_out.pred_segments[-1, b : b + 1, q : q + 1], caption[None, None],
        )[0, 0]
        nlls.append(-log_probs.gather(1, caption[1:, None]).mean())
    torch.testing.assert_close(out.loss_dict["loss_caption"], torch.stack(nlls).mean(), atol=1e-5, rtol=1e-5)


def test_initialisation_follows_pdvc():
    model = make_model()
    prior = -math.log(0.99 / 0.01)
    for head in model.confidence_heads:
        torch.testing.assert_close(head.bias, torch.tensor([prior]))
    decoder = model.cacmi.decoder
    for i, head in enumerate(decoder.segment_heads):
        assert head.layers[-1].weight.abs().sum() == 0
        torch.testing.assert_close(head.layers[-1].bias, torch.tensor([0.0, -2.0 if i == 0 else 0.0]))
    attn = model.cacmi.encoder.layers[0].self_attn
    assert attn.sampling_offsets.weight.abs().sum() == 0 and attn.attention_weights.weight.abs().sum() == 0
    assert model.captioner.sampling_offsets.bias.abs().sum() > 0
    # fresh model: every query is "no event", near the 0.01 prior
    probs = model(**make_batch()).logits.sigmoid()
    assert ((probs > 0.005) & (probs < 0.02)).all()


def test_construction_on_the_meta_device():
    with torch.device("meta"):
        model = CACMIForDenseCaptioning(tiny_config())
    assert all(p.is_meta for p in model.parameters())
    assert model.memory_bank.embeddings.shape == (10, 16)
    base = CACMIModel(tiny_config())
    assert isinstance(base.memory_bank.embeddings, torch.Tensor)


def test_set_memory_bank_updates_config_and_rejects_without_cfa():
    model = make_model()
    assert model.set_memory_bank(torch.randn(7, 16)) == 7 and model.config.memory_size == 7
    plain = make_model(use_cfa=False, use_cfe=False, decoder_text_cross_attention=False)
    with pytest.raises(ValueError, match="use_cfa=False"):
        plain.set_memory_bank(torch.randn(7, 16))


def bad(**changes):
    inputs = {**make_batch(), **changes}
    return inputs


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(video_features=torch.randn(3, 12, 15)), "feature_dim=16"),
        (dict(video_features=torch.randn(12, 16)), "batch, frames, feature_dim"),
        (dict(durations=None), "durations"),
        (dict(durations=torch.tensor([30.0, 0.0, 10.0])), r"durations\[1\] = 0.0"),
        (dict(durations=torch.tensor([30.0, 10.0, -1.0])), r"durations\[2\] = -1.0"),
        (dict(durations=torch.tensor([30.0, 10.0])), "one per video"),
        (dict(video_mask=torch.ones(3, 11, dtype=torch.bool)), "video_mask must have shape"),
    ],
)
def test_bad_video_inputs(changes, match):
    model = make_model()
    with pytest.raises(ValueError, match=match):
        model(**bad(**changes))


def test_nan_features_empty_and_holey_masks():
    model = make_model()
    inputs = make_batch()
    inputs["video_features"][1, 3, 2] = float("nan")
    with pytest.raises(ValueError, match="video 1 has NaN/inf at frame 3"):
        model.generate(**inputs)
    inputs = make_batch()
    inputs["video_features"][2, 8] = float("inf")  # in padding: ignored
    model.generate(**inputs)
    inputs["video_mask"][1] = False
    with pytest.raises(ValueError, match="video 1 of the batch has no valid frame"):
        model(**inputs)
    inputs = make_batch()
    inputs["video_mask"][0, 4] = False
    with pytest.raises(ValueError, match="video_mask of video 0 is not a prefix"):
        model(**inputs)


@pytest.mark.parametrize(
    "segment,match",
    [((0.6, 0.4), r"event_segments\[1, 0\] = \[0.6"), ((-0.1, 0.4), "0 <= start <= end <= 1"), ((0.2, 1.3), "<= 1")],
)
def test_bad_labels(segment, match):
    model = make_model().train()
    labels = make_labels()
    labels["event_segments"][1, 0] = torch.tensor(segment)
    with pytest.raises(ValueError, match=match):
        model(**make_batch(), video_ids=TRAIN_IDS, **labels)
    labels = make_labels()
    labels["event_segments"][1, 2] = torch.tensor(segment)  # a padded event may hold anything
    model(**make_batch(), video_ids=TRAIN_IDS, **labels)


def test_bad_caption_ids():
    model = make_model().train()
    labels = make_labels()
    labels["caption_ids"][0, 1, 2] = 20
    with pytest.raises(ValueError, match=r"caption_ids\[0, 1, 2\] = 20 is outside the vocabulary"):
        model(**make_batch(), video_ids=TRAIN_IDS, **labels)
    with pytest.raises(ValueError, match="caption_ids must have shape"):
        model(**make_batch(), video_ids=TRAIN_IDS, **{**make_labels(), "caption_ids": torch.ones(3, 2, 4, dtype=torch.long)})


def test_events_past_the_counter_limit_are_matched_and_captioned(recwarn):
    # K = 2 and a video of K + 3 = 5 events with 5 queries: all 5 are matched and captioned [PDVC], only the
    # counter's target is clamped to K.
    model = make_model(max_event_count=2).eval()
    segments = torch.tensor([[0.0, 0.15], [0.2, 0.35], [0.4, 0.55], [0.6, 0.75], [0.8, 0.95]])[None]
    captions = torch.tensor([[1, 4 + i, 2, 0] for i in range(5)])[None]
    labels = dict(event_segments=segments, event_mask=torch.ones(1, 5, dtype=torch.bool), caption_ids=captions)
    inputs = {k: v[:1] for k, v in make_batch().items()}
    out = model(**inputs, **labels)
    assert not [w for w in recwarn if "max_event_count" in str(w.message)]
    layers = model.cacmi.decoder.layers
    layer_outputs = [
        {"logits": out.logits if i == len(layers) - 1 else out.aux_outputs[i]["logits"],
         "pred_segments": out.pred_segments if i == len(layers) - 1 else out.aux_outputs[i]["pred_segments"],
         "pred_counts": out.pred_counts if i == len(layers) - 1 else out.aux_outputs[i]["pred_counts"]}
        for i in range(len(layers))
    ]
    targets = {"segments": segments, "mask": labels["event_mask"]}
    _, indices = model.criterion(layer_outputs, targets)
    assert all(sorted(m.target.tolist()) == [0, 1, 2, 3, 4] for m in indices)
    from cacmi_hf.criterion import event_counter_loss

    prior = torch.full((3,), 1 / 3)  # no count_prior configured: uniform
    expected = event_counter_loss(out.pred_counts, torch.tensor([2]), prior, model.config.counter_sigma)
    torch.testing.assert_close(out.loss_dict["loss_counter"], expected)
    # the fifth event changes the loss: it is not dropped
    fewer = dict(labels, event_mask=torch.tensor([[True, True, True, True, False]]))
    assert not torch.allclose(model(**inputs, **fewer).loss_dict["loss_caption"], out.loss_dict["loss_caption"])


@pytest.mark.slow
def test_overfits_four_videos():
    """Loss falls and the model then finds every event (tIoU > 0.7) with its exact caption."""
    torch.manual_seed(0)
    cfg = tiny_config(
        num_frames=16, num_feature_levels=2, num_queries=4, max_event_count=3, vocab_size=14, max_caption_len=4,
        dropout=0.0, caption_dropout=0.0, num_clusters=4, hidden_size=64, ffn_dim=64, caption_hidden_size=64,
        num_encoder_layers=1, num_decoder_layers=2, retrieval_exclude="top1",
    )
    model = CACMIForDenseCaptioning(cfg)
    model.set_memory_bank(torch.randn(10, 16), torch.arange(10) % 4)
    g = torch.Generator().manual_seed(0)
    features = torch.randn(4, 16, 16, generator=g)
    mask = torch.ones(4, 16, dtype=torch.bool)
    mask[2, 12:] = mask[3, 10:] = False
    durations = torch.tensor([16.0, 20.0, 12.0, 10.0])
    segments = torch.tensor([[[0.0, 0.5], [0.5, 1.0]], [[0.2, 0.7], [0.0, 0.0]],
                             [[0.1, 0.4], [0.6, 0.9]], [[0.3, 1.0], [0.0, 0.0]]])
    events = torch.tensor([[True, True], [True, False], [True, True], [True, False]])
    captions = torch.tensor([[[1, 4, 5, 2, 0], [1, 6, 7, 8, 2]], [[1, 9, 2, 0, 0], [0] * 5],
                             [[1, 10, 11, 2, 0], [1, 12, 13, 4, 2]], [[1, 5, 4, 6, 2], [0] * 5]])
    batch = dict(video_features=features, video_mask=mask, durations=durations, event_segments=segments,
                 event_mask=events, caption_ids=captions)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for _ in range(200):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.2 * losses[0]
    model.eval()
    out = model.generate(video_features=features, video_mask=mask, durations=durations)
    for b in range(4):
        count = int(events[b].sum())
        top = out.logits[b].topk(count).indices  # the `count` most confident queries
        iou = segment_iou(segments[b, :count], segment_cw_to_se(out.pred_segments[b, top]))  # (E, count)
        best = iou.argmax(1)
        for e in range(count):
            assert iou[e, best[e]] > 0.7, (b, e, iou)
            length = int((captions[b, e] != 0).sum())
            assert out.caption_ids[b, top[best[e]], :length].tolist() == captions[b, e, :length].tolist(), (b, e)
        assert int(out.pred_counts[b].argmax()) == count


def test_output_is_a_model_output():
    out = make_model().generate(**make_batch())
    assert isinstance(out, CACMIDenseCaptioningOutput) and out["logits"] is out.logits and out.loss is None
