"""CACMIConfig: presets, validation messages and save/load round trip."""

import pytest
from huggingface_hub.errors import StrictDataclassClassValidationError

from cacmi_hf import CACMIConfig
from cacmi_hf.configuration_cacmi import PRESETS


@pytest.mark.parametrize("name, frames, queries, clusters, train_events", [
    ("activitynet", 100, 10, 10, 30),  # PDVC/CM2 anet cfgs: frame_embedding_num 100, num_queries 10, 30 GT events
    ("youcook2", 200, 100, 20, 10),  # yc2 cfgs: 200 frames, 100 queries; gt_proposal_sample_num default 10
])
def test_presets_build_the_reference_model(name, frames, queries, clusters, train_events):
    import torch

    from cacmi_hf import CACMIForDenseCaptioning

    config = CACMIConfig.from_preset(name, vocab_size=12)
    torch.manual_seed(0)
    model = CACMIForDenseCaptioning(config).eval()
    model.set_memory_bank(torch.randn(50, config.text_dim), torch.arange(50))
    features = torch.randn(1, frames, config.feature_dim)
    with torch.no_grad():
        out = model(video_features=features, video_mask=torch.ones(1, frames, dtype=torch.bool), durations=torch.tensor([60.0]))
    # K = 20 on both (CM2 max_eseq_length): 21 counter bins; N queries; c pseudo-events of CFA
    assert out.pred_counts.shape == (1, 21) and out.logits.shape == (1, queries)
    assert out.text_mask.shape == (1, clusters) and config.retrieval_top_k == 40  # the paper's top-k
    assert config.max_train_events == train_events


def test_preset_overrides_and_unknown_preset():
    cfg = CACMIConfig.from_preset("youcook2", hidden_size=64, num_attention_heads=4)
    assert cfg.hidden_size == 64 and cfg.num_frames == 200
    with pytest.raises(ValueError, match="Unknown CACMI preset 'kinetics'"):
        CACMIConfig.from_preset("kinetics")
    assert set(PRESETS) == {"activitynet", "youcook2"}


def test_derived_sizes():
    cfg = CACMIConfig(num_frames=100, num_clusters=10)
    assert cfg.max_cluster_span == 30  # 3·L/c
    assert CACMIConfig(cluster_max_frames=12).max_cluster_span == 12
    assert cfg.text_dim == cfg.feature_dim
    assert CACMIConfig(memory_dim=512).text_dim == 512


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_size=510), "divisible by num_attention_heads"),
        (dict(num_clusters=101), "cannot exceed num_frames"),
        (dict(cluster_max_frames=5), "could never cover"),
        (dict(retrieval_mode="segments"), "retrieval_mode must be"),
        (dict(retrieval_exclude="all"), "retrieval_exclude must be"),
        (dict(count_prior=[0.5, 0.5]), "needs max_event_count \\+ 1 = 21"),
        (dict(max_event_count=0), "max_event_count must be >= 1, got 0; set it to a positive integer"),
        (dict(retrieval_mode="windows", num_frames=30, num_clusters=3, retrieval_num_windows=31),
         "retrieval_num_windows \\(31\\) exceeds num_frames \\(30\\).*at most 30 windows"),
        (dict(memory_size=30), "retrieval_top_k \\(40\\) needs 40 memory-bank entries.*lower retrieval_top_k to at most 30"),
        (dict(memory_size=40, retrieval_exclude="top1"), "needs 41 memory-bank entries"),
        (dict(num_queries=0), "num_queries must be >= 1"),
        (dict(vocab_size=3), "special token ids"),
    ],
)
def test_validation_messages(kwargs, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        CACMIConfig(**kwargs)


def test_save_load_round_trip(tmp_path):
    cfg = CACMIConfig.from_preset("youcook2", vocab_size=1234, count_prior=[0.05] * 21, use_cfe=False)
    cfg.save_pretrained(tmp_path)
    loaded = CACMIConfig.from_pretrained(tmp_path)
    assert loaded.to_diff_dict() == cfg.to_diff_dict()
    assert loaded.model_type == "cacmi"


def test_variants_take_the_reference_values_of_each_benchmark():
    # CM2: train_anet.sh --window_size 20 --soft_k 100, train_yc2.sh --window_size 50 --soft_k 80, top-1 exclusion
    anet_cm2 = CACMIConfig.from_preset("activitynet", variant="cm2")
    yc2_cm2 = CACMIConfig.from_preset("youcook2", variant="cm2")
    assert (anet_cm2.retrieval_mode, anet_cm2.retrieval_num_windows, anet_cm2.retrieval_top_k) == ("windows", 20, 100)
    assert (yc2_cm2.retrieval_mode, yc2_cm2.retrieval_num_windows, yc2_cm2.retrieval_top_k) == ("windows", 50, 80)
    assert anet_cm2.retrieval_exclude == yc2_cm2.retrieval_exclude == "top1" and not anet_cm2.use_cfe
    # PDVC: max_eseq_length 10 on ActivityNet (cfgs/anet_*_pdvcl.yml), 20 on YouCook2; CACMI follows CM2's 20
    assert CACMIConfig.from_preset("activitynet", variant="pdvc").max_event_count == 10
    assert CACMIConfig.from_preset("youcook2", variant="pdvc").max_event_count == 20
    assert CACMIConfig.from_preset("activitynet").max_event_count == 20
    with pytest.raises(ValueError, match="Unknown CACMI variant 'cm3'"):
        CACMIConfig.from_preset("activitynet", variant="cm3")


def test_old_window_length_field_loads_with_a_deprecation_warning(tmp_path):
    import json

    CACMIConfig(num_frames=100).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    del saved["retrieval_num_windows"]
    saved["retrieval_window_size"] = 20  # the old reading: windows of 20 frames, 5 over 100 frames
    path.write_text(json.dumps(saved))
    with pytest.warns(FutureWarning, match="retrieval_window_size=20 .* now uses retrieval_num_windows=5"):
        loaded = CACMIConfig.from_pretrained(tmp_path)
    assert loaded.retrieval_num_windows == 5 and not hasattr(loaded, "retrieval_window_size")
