"""Reading the reference fixtures of tests/fixtures/parity and comparing our converted models with them.

The fixtures come from benchmarks/make_parity_fixtures.py, which ran PDVC's / CM2's own code (see the README
there); nothing here computes an expected value with our code.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from cacmi_hf.convert import convert
from cacmi_hf.convert.common import NUM_SPECIALS

FIXTURES = Path(__file__).parent / "fixtures" / "parity"
PDVC_FIXTURES = ("pdvc_anet_c3d", "pdvc_anet_tsp", "pdvc_light_anet_c3d")
CM2_FIXTURES = ("cm2_anet", "cm2_yc2")
# fp32 tolerance: |ours − reference| <= TOL · (1 + max |reference|) over a tensor. The two codes sum in different
# orders (grid_sample vs an embedding-bag gather, fused vs split LSTM matrices), which moves the last bits (~1e-7
# relative); a deformable sampling location off by that much moves a sample by 1e-5 of a frame at 100 frames, and
# the decoder's states by up to ~1.1e-5 relative through two layers (measured over the fixtures; BENCHMARKS.md).
TOL = 2e-5
# the caption log-probabilities come out of up to max_caption_len recurrent steps, each adding that rounding
CAPTION_TOL = 5e-5


@lru_cache(maxsize=None)
def expected(name: str) -> dict:
    """The fixture's recorded inputs and reference outputs."""
    return torch.load(FIXTURES / name / "expected.pt", weights_only=False)


@lru_cache(maxsize=None)
def converted(name: str):
    """The fixture's reference checkpoint converted in memory (source from the fixture name)."""
    source = "cm2" if name.startswith("cm2") else "pdvc"
    folder = FIXTURES / name
    bank = folder / "bank" if source == "cm2" else None
    return convert(source, folder / "model-best.pth", memory_bank=bank)


def max_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference, shapes checked."""
    assert tuple(ours.shape) == tuple(reference.shape), (tuple(ours.shape), tuple(reference.shape))
    return float((ours.float() - reference.float()).abs().max()) if reference.numel() else 0.0


def assert_parity(ours: torch.Tensor, reference: torch.Tensor, what: str, tol: float = TOL) -> float:
    """`ours` equals the reference's tensor within `tol` (see TOL); returns the max abs difference."""
    error = max_error(ours, reference)
    bound = tol * (1 + float(reference.abs().max()) if reference.numel() else 1)
    assert error <= bound, f"{what}: max |ours - reference| = {error:.3g} > {bound:.3g}"
    return error


def reference_ids(ours: torch.Tensor, length: int) -> torch.Tensor:
    """Our generated ids `(N, T)` ([BOS, words, EOS, PAD..]) in the reference's numbering and layout: words then 0s."""
    words = ours[:, 1:]
    if words.shape[1] < length:
        words = torch.nn.functional.pad(words, (0, length - words.shape[1]))
    words = words[:, :length]
    unk = words == 3
    mapped = torch.where(words >= NUM_SPECIALS, words - (NUM_SPECIALS - 1), torch.zeros_like(words))
    return torch.where(unk, torch.full_like(words, -1), mapped)  # UNK: resolved by the caller (vocabulary size)


def reference_caption_ids(ours: torch.Tensor, length: int, vocab_rows: int) -> torch.Tensor:
    """`reference_ids` with our UNK (3) written as the reference's last row."""
    ids = reference_ids(ours, length)
    return torch.where(ids < 0, torch.full_like(ids, vocab_rows - 1), ids)


def word_log_probs(ids: torch.Tensor, log_probs: torch.Tensor, length: int) -> torch.Tensor:
    """Our per-token log-probs `(N, T)` at the reference's positions (words then the EOS step's), zero after."""
    values = log_probs[:, 1:]
    if values.shape[1] < length:
        values = torch.nn.functional.pad(values, (0, length - values.shape[1]))
    return values[:, :length]


def video_batch(videos: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Native-length features of several fixture videos padded into one batch: features, mask, durations."""
    length = max(v["features"].shape[0] for v in videos)
    dim = videos[0]["features"].shape[1]
    features = torch.zeros(len(videos), length, dim)
    mask = torch.zeros(len(videos), length, dtype=torch.bool)
    for i, v in enumerate(videos):
        features[i, : v["features"].shape[0]] = v["features"].float()
        mask[i, : v["features"].shape[0]] = True
    return features, mask, torch.tensor([v["duration"] for v in videos])


def reference_events(record: dict) -> list[dict]:
    """The reference's re-ranked events with its caption text normalised to ours (no trailing period)."""
    events = []
    for e in record["events"]:
        sentence = e["sentence"][:-1] if e["sentence"].endswith(".") else e["sentence"]
        events.append({"timestamp": e["timestamp"], "caption": sentence, "query_index": e["query_id"]})
    return events


@lru_cache(maxsize=None)
def run_one(name: str, index: int):
    """Our converted model on fixture video `index` alone, at its native length: (CACMIModelOutput, generate output)."""
    model, video = converted(name).model, expected(name)["videos"][index]
    features = video["features"].float()[None]
    duration = torch.tensor([video["duration"]])
    with torch.no_grad():
        return model.cacmi(features, None, duration), model.generate(video_features=features, durations=duration)


def run_padded_batch(name: str):
    """Our converted model on all fixture videos at once, native lengths padded together: (model output, generate output)."""
    model = converted(name).model
    features, mask, durations = video_batch(expected(name)["videos"])
    assert not bool(mask.all()), "the fixture videos have different native lengths"
    with torch.no_grad():
        return model.cacmi(features, mask, durations), model.generate(video_features=features, video_mask=mask,
                                                                      durations=durations)


def compare_decoder_and_captions(name: str, model_out, out, record: dict, index: int = 0) -> None:
    """Decoder states, per-layer and final segments, confidence and count logits, greedy captions and their
    log-probabilities of batch row `index` against the reference's record."""
    model = converted(name).model
    assert_parity(model_out.decoder_hidden_states[:, index], record["hs"], f"{name} decoder states")
    assert_parity(model_out.pred_segments[:, index], record["layer_boxes"], f"{name} per-layer segments")
    assert_parity(out.pred_segments[index], record["pred_boxes"], f"{name} final segments")
    logits = torch.stack([o["logits"][index] for o in out.aux_outputs] + [out.logits[index]])
    assert_parity(logits, record["logits"], f"{name} confidence logits")
    counts = torch.stack([o["pred_counts"][index] for o in out.aux_outputs] + [out.pred_counts[index]])
    assert_parity(counts, record["counts"], f"{name} count logits")
    length = record["seq"].shape[1]
    ours = reference_caption_ids(out.caption_ids[index], length, model.config.vocab_size - 2)
    assert torch.equal(ours, record["seq"]), f"{name}: greedy captions differ"
    words = record["seq"] > 0
    ours_lp = out.caption_log_probs[index][:, 1 : 1 + length]
    assert_parity(ours_lp[words], record["seq_log_probs"][words], f"{name} caption log-probs", CAPTION_TOL)


def assert_events_match(name: str) -> None:
    """Our re-ranked events of every fixture video, one at a time, equal the reference's (queries, captions, times)."""
    conv = converted(name)
    for index, (video, record) in enumerate(zip(expected(name)["videos"], expected(name)["records"])):
        _, out = run_one(name, index)
        events = conv.processor.post_process_dense_video_captioning(
            out, torch.tensor([video["duration"]]), rerank_alpha=conv.model.config.rerank_alpha
        )[0]
        reference = reference_events(record)
        assert [e["query_index"] for e in events] == [e["query_index"] for e in reference]
        assert [e["caption"] for e in events] == [e["caption"] for e in reference]
        for ours, ref in zip(events, reference):
            assert abs(ours["timestamp"][0] - ref["timestamp"][0]) <= 1e-5 * (1 + video["duration"])
            assert abs(ours["timestamp"][1] - ref["timestamp"][1]) <= 1e-5 * (1 + video["duration"])
