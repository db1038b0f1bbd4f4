"""No collective is reachable from a forward that one process runs alone (evaluation), only from training steps."""

import pytest
import torch

from cacmi_hf import criterion as criterion_module
from cacmi_hf.configuration_cacmi import CACMIConfig
from cacmi_hf.modeling_cacmi import CACMIForDenseCaptioning


def _tiny_model() -> CACMIForDenseCaptioning:
    """A tiny full model (CFA, CFE, text cross-attention) with a memory bank of 10 captions of 5 videos."""
    torch.manual_seed(0)
    config = CACMIConfig(
        feature_dim=16, num_frames=12, hidden_size=32, num_attention_heads=4, ffn_dim=32, num_encoder_layers=1,
        num_decoder_layers=2, num_feature_levels=2, num_queries=4, max_event_count=3, vocab_size=20,
        max_caption_len=5, caption_hidden_size=16, num_clusters=3, retrieval_top_k=2, memory_size=10,
    )
    model = CACMIForDenseCaptioning(config)
    model.set_memory_bank(torch.randn(10, 16), torch.arange(10) % 5)
    return model


def _batch() -> dict[str, torch.Tensor]:
    """Two videos (bank videos 0 and 3) with labels."""
    g = torch.Generator().manual_seed(1)
    return dict(
        video_features=torch.randn(2, 12, 16, generator=g),
        durations=torch.tensor([20.0, 31.0]),
        video_ids=torch.tensor([0, 3]),
        event_segments=torch.tensor([[[0.1, 0.4], [0.5, 0.9]], [[0.0, 1.0], [0.0, 0.0]]]),
        event_mask=torch.tensor([[True, True], [True, False]]),
        caption_ids=torch.tensor([[[1, 4, 5, 2], [1, 6, 2, 0]], [[1, 7, 8, 2], [0, 0, 0, 0]]]),
    )


@pytest.fixture
def two_processes(monkeypatch):
    """Pretend to be rank 0 of 2 processes; every all_reduce is recorded (the other process adds 5 events)."""
    calls = []

    def all_reduce(tensor, *args, **kwargs):
        calls.append(tensor.clone())
        return tensor.add_(5)

    monkeypatch.setattr(criterion_module.dist, "is_available", lambda: True)
    monkeypatch.setattr(criterion_module.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(criterion_module.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(criterion_module.dist, "all_reduce", all_reduce)
    return calls


def test_training_forward_averages_the_event_count_over_processes(two_processes):
    model = _tiny_model().train()
    loss = model(**_batch()).loss
    assert len(two_processes) == 1 and two_processes[0].item() == 3.0  # one all_reduce of this process's 3 events
    loss.backward()


def test_evaluation_forward_reaches_no_collective(two_processes):
    model = _tiny_model().eval()
    batch = _batch()
    with torch.no_grad():
        evaluated = model(**batch)
        model.generate(**{k: batch[k] for k in ("video_features", "durations")})
    assert two_processes == []
    assert torch.isfinite(evaluated.loss)


def test_num_events_without_synchronisation_is_local():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert criterion_module.CACMICriterion.num_events(mask, synchronize=False).item() == 3.0
    assert criterion_module.CACMICriterion.num_events(mask[:, 2:], synchronize=False).item() == 1.0  # clamped
