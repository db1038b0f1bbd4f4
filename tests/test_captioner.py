"""LSTM-DSA captioner: teacher forcing agrees with greedy decoding, sampling stays on the segment, padding invariance."""

import pytest
import torch

from cacmi_hf.captioner import DeformableCaptioner
from cacmi_hf.configuration_cacmi import CACMIConfig

LEVELS = [8, 4]


def make_captioner(seed=0, **overrides):
    base = dict(
        hidden_size=8, caption_hidden_size=6, vocab_size=11, max_caption_len=5, num_feature_levels=2,
        caption_num_points=3, caption_dropout=0.0, num_attention_heads=2, num_clusters=2, retrieval_top_k=1,
        num_frames=8,
    )
    base.update(overrides)
    torch.manual_seed(seed)
    cap = DeformableCaptioner(CACMIConfig(**base))
    for p in cap.parameters():
        torch.nn.init.normal_(p, std=0.4)
    for module in cap.modules():  # PDVC's special initialisation on top (uniform embeddings, offset grid, ...)
        if hasattr(module, "init_special_weights"):
            module.init_special_weights()
    return cap.eval()


def layout(lengths=LEVELS):
    level_lengths = torch.tensor(lengths)
    return level_lengths, torch.nn.functional.pad(level_lengths.cumsum(0)[:-1], (1, 0))


def inputs(batch=2, queries=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(batch, sum(LEVELS), 8, generator=g)
    mask = torch.ones(batch, sum(LEVELS), dtype=torch.bool)
    q = torch.randn(batch, queries, 8, generator=g)
    segments = torch.stack([torch.rand(batch, queries, generator=g) * 0.6 + 0.2, torch.full((batch, queries), 0.3)], -1)
    return memory, mask, *layout(), q, segments


def test_teacher_forcing_reproduces_greedy_log_probs():
    cap = make_captioner()
    args = inputs()
    ids, log_probs = cap.generate(*args)
    forced = cap(*args, ids)  # (B, Q, T-1, V)
    token = forced.gather(-1, ids[..., 1:, None])[..., 0]  # log p of each generated token
    emitted = ids[..., 1:] != cap.pad_token_id
    torch.testing.assert_close(token[emitted], log_probs[..., 1:][emitted], atol=1e-5, rtol=1e-5)
    # greedy: every emitted token is the best allowed one under teacher forcing
    allowed = forced.clone()
    allowed[..., [cap.pad_token_id, cap.bos_token_id]] = float("-inf")
    best = allowed.argmax(-1)
    steps = ids.shape[-1] - 1
    not_forced_eos = torch.arange(steps) < cap.max_caption_len  # the last step is EOS by force
    check = emitted & not_forced_eos
    assert torch.equal(best[check], ids[..., 1:][check])


def test_generated_captions_are_well_formed():
    cap = make_captioner(seed=3)
    ids, log_probs = cap.generate(*inputs(batch=3, queries=4))
    assert ids.shape == log_probs.shape and ids.shape[:2] == (3, 4) and ids.shape[-1] <= cap.max_caption_len + 2
    assert (ids[..., 0] == cap.bos_token_id).all() and (log_probs[..., 0] == 0).all()
    is_eos = ids == cap.eos_token_id
    assert (is_eos.sum(-1) == 1).all()  # every caption ends exactly once
    after = is_eos.long().cumsum(-1) - is_eos.long() > 0
    assert (ids[after] == cap.pad_token_id).all() and (log_probs[after] == 0).all()
    assert not ((ids[..., 1:] == cap.bos_token_id) | ((ids[..., 1:] == cap.pad_token_id) & ~after[..., 1:])).any()
    assert (log_probs[..., 1:][~after[..., 1:]] < 0).all()


def test_generation_stops_once_every_caption_ended():
    cap = make_captioner(seed=5)
    torch.nn.init.zeros_(cap.logit.weight)
    with torch.no_grad():
        cap.logit.bias.zero_()
        cap.logit.bias[cap.eos_token_id] = 10.0  # EOS first
    ids, _ = cap.generate(*inputs())
    assert ids.shape[-1] == 2 and (ids[..., 1] == cap.eos_token_id).all()
    with torch.no_grad():
        cap.logit.bias[cap.eos_token_id] = -10.0
        cap.logit.bias[7] = 10.0  # never EOS: cut after max_len words
    ids, log_probs = cap.generate(*inputs(), max_len=3)
    assert ids.shape[-1] == 5 and (ids[..., 1:4] == 7).all() and (ids[..., 4] == cap.eos_token_id).all()
    assert (log_probs[..., 4] < -15).all()  # the forced EOS carries its real (low) log-probability


def test_batched_equals_each_video_alone_with_padding():
    cap = make_captioner(seed=2)
    memory, mask, lengths, starts, q, seg = inputs(batch=2)
    caption = torch.randint(3, 11, (2, 3, 6))
    caption[..., 0] = cap.bos_token_id
    # video 1 alone: valid levels 5 and 3 of 8 and 4
    alone_memory = torch.cat([memory[1:, :5], memory[1:, 8:11]], 1)
    alone_lengths, alone_starts = layout([5, 3])
    mask[1] = False
    mask[1, :5] = mask[1, 8:11] = True
    memory[1, 5:8] = memory[1, 11:] = 99.0  # padding garbage must not leak
    batched = cap(memory, mask, lengths, starts, q, seg, caption)
    alone_mask = torch.ones(1, 8, dtype=torch.bool)
    alone = cap(alone_memory, alone_mask, alone_lengths, alone_starts, q[1:], seg[1:], caption[1:])
    torch.testing.assert_close(batched[1:], alone, atol=1e-5, rtol=1e-5)
    ids_b, lp_b = cap.generate(memory, mask, lengths, starts, q, seg)
    ids_a, lp_a = cap.generate(alone_memory, alone_mask, alone_lengths, alone_starts, q[1:], seg[1:])
    assert torch.equal(ids_b[1:, :, : ids_a.shape[-1]], ids_a)
    torch.testing.assert_close(lp_b[1:, :, : ids_a.shape[-1]], lp_a, atol=1e-5, rtol=1e-5)


def test_sampling_stays_around_the_query_segment():
    """At initialisation the samples lie inside the segment: memory far from it cannot change the caption."""
    cap = make_captioner(seed=4)
    torch.nn.init.zeros_(cap.sampling_offsets.weight)  # offsets = PDVC's centred grid only
    memory, mask, lengths, starts, q, _ = inputs(batch=1, queries=1)
    segment = torch.tensor([[[0.25, 0.25]]])  # frames 1..2 of level 0 (T=8), frame 0..1 of level 1 (T=4)
    caption = torch.tensor([[[1, 4, 5, 6, 2]]])
    before = cap(memory, mask, lengths, starts, q, segment, caption)
    changed = memory.clone()
    changed[0, 5:8] = 50.0  # level 0 frames 5-7
    changed[0, 11] = 50.0  # level 1 frame 3
    torch.testing.assert_close(cap(changed, mask, lengths, starts, q, segment, caption), before)
    changed[0, 1] = 50.0  # inside the segment
    assert not torch.allclose(cap(changed, mask, lengths, starts, q, segment, caption), before)


def test_gradients_reach_memory_queries_and_every_parameter():
    cap = make_captioner(seed=6).train()
    memory, mask, lengths, starts, q, seg = inputs()
    memory.requires_grad_(True)
    q.requires_grad_(True)
    caption = torch.randint(3, 11, (2, 3, 5))
    cap(memory, mask, lengths, starts, q, seg, caption).sum().backward()
    assert memory.grad.abs().sum() > 0 and q.grad.abs().sum() > 0
    # the soft attention's score bias shifts every score alike, which softmax ignores: its gradient is zero
    # (up to rounding), so it is the one parameter left out
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for name, p in cap.named_parameters()
        if name != "attention_score.bias"
    )


@pytest.mark.parametrize("length", [1, 2])
def test_short_captions(length):
    cap = make_captioner()
    args = inputs()
    caption = torch.full((2, 3, length), cap.bos_token_id)
    assert cap(*args, caption).shape == (2, 3, length - 1, 11)


def test_border_padding_repeats_the_last_valid_position():
    """PDVC's captioner samples with grid_sample(padding_mode="border") on the unpadded video: beyond the last valid
    frame (here 3 of a padded level of 4) it reads that frame, in full."""
    from cacmi_hf.deformable_attention import sampling_corners

    lengths, starts = torch.tensor([4]), torch.tensor([0])
    locations = torch.tensor([0.99, 0.5, -0.2]).view(1, 1, 1, 1, 3)  # positions 3.46, 1.5, -1.3
    rows, weights = sampling_corners(locations, lengths, starts, 4, border_lengths=torch.tensor([[3]]))
    assert rows[..., 0].flatten().tolist() == [2, 1, 0]
    assert weights.flatten().tolist() == pytest.approx([1.0, 0.0, 0.5, 0.5, 1.0, 0.0])
    rows, weights = sampling_corners(locations, lengths, starts, 4)  # zeros: fades out past the padded level's ends
    assert weights.flatten().tolist() == pytest.approx([0.54, 0.0, 0.5, 0.5, 0.0, 0.0], abs=1e-6)


def test_centre_reference_samples_at_offsets_in_frames_of_each_level():
    """A centre-only reference (PDVC's layer-0 captions) puts sample p at centre + offset_p / T_l on level l."""
    from cacmi_hf.captioner import caption_references
    from cacmi_hf.deformable_attention import deformable_sampling_locations

    level_lengths = torch.tensor([8, 4])
    ratios = torch.tensor([[1.0, 1.0]])
    reference = caption_references(torch.tensor([[[0.5]]]), ratios, level_lengths, num_points=2)  # (1, 1, 2, 2)
    offsets = torch.tensor([[-1.0, 2.0], [1.0, 0.5]]).view(1, 1, 1, 2, 2)
    locations = deformable_sampling_locations(reference, offsets, level_lengths)
    expected = torch.tensor([[0.5 - 1 / 8, 0.5 + 2 / 8], [0.5 + 1 / 4, 0.5 + 0.5 / 4]])
    torch.testing.assert_close(locations.view(2, 2), expected)


def test_light_captioner_is_torch_lstm_on_word_and_query():
    """PDVC's "light" captioner: nn.LSTM(bias=False) over [word embedding; query], then the vocabulary projection."""
    from cacmi_hf.captioner import LightCaptioner

    config = CACMIConfig(hidden_size=8, caption_hidden_size=6, caption_embedding_size=5, vocab_size=11,
                         caption_decoder="light", caption_dropout=0.0, num_attention_heads=2, num_clusters=2,
                         retrieval_top_k=1, num_frames=8)
    torch.manual_seed(3)
    cap = LightCaptioner(config).eval()
    lstm = torch.nn.LSTM(5 + 8, 6, bias=False)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.cat([cap.word_gates.weight, cap.query_gates.weight], 1))
        lstm.weight_hh_l0.copy_(cap.hidden_gates.weight)
    queries = torch.randn(1, 2, 8)
    words = torch.tensor([[[1, 5, 7, 2]]]).expand(1, 2, 4)
    with torch.no_grad():
        ours = cap(torch.zeros(1, 3, 8), torch.ones(1, 3, dtype=torch.bool), torch.tensor([3]), torch.tensor([0]),
                   queries, torch.zeros(1, 2, 2), words)  # (1, 2, 3, V)
        inputs = torch.cat([cap.embed(words[0, :, :3]).transpose(0, 1), queries[0][None].expand(3, -1, -1)], -1)
        hidden, _ = lstm(inputs)  # (3, 2, 6)
        reference = torch.log_softmax(cap.logit(hidden), -1).transpose(0, 1)  # (2, 3, V)
    torch.testing.assert_close(ours[0], reference, atol=1e-6, rtol=1e-6)
