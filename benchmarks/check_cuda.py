"""End-to-end check on a GPU: Trainer on CUDA, CUDA against CPU generation, the pipeline on device 0.

    python benchmarks/check_cuda.py

Trains the test suite's tiny fixture set (tests/training_fixtures.py: 8/4/4 videos, 16-d features) for
2 epochs with `cacmi_hf.training` on the default device (the GPU when there is one; CI's CPU tests
pass `--use_cpu`), then loads the saved folder twice — on the CPU and on the GPU — and compares greedy
generation on the 4 test videos (one of them padded), batched against alone on the GPU, and the
pipeline on device 0 against the trainer's own evaluation. Prints the differences; exits 1 when the
captions differ or a segment moves by more than 1e-4. Without a GPU both sides run on the CPU.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from training_fixtures import make_dataset, train_argv  # noqa: E402

import cacmi_hf  # noqa: E402,F401  registers the pipeline task
from cacmi_hf.data import resize_features  # noqa: E402
from cacmi_hf.modeling_cacmi import CACMIForDenseCaptioning  # noqa: E402
from cacmi_hf.training import parse_args, train  # noqa: E402

TOLERANCE = 1e-4


def main() -> int:
    """Train on the default device, compare, print, return 0 when CUDA and CPU agree."""
    from transformers import pipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    root = Path(tempfile.mkdtemp(prefix="cacmi_cuda_"))
    paths = make_dataset(root / "data")
    argv = train_argv(paths, root / "out", "--num_train_epochs", "2", "--eval_no_java", "true", "--metric_for_best_model", "CIDEr")
    cpu_flag = argv.index("--use_cpu")
    del argv[cpu_flag : cpu_flag + 2]
    start = time.perf_counter()
    run = train(*parse_args(argv))
    trained_on = next(run.trainer.model.parameters()).device
    print(f"trained on {trained_on} in {time.perf_counter() - start:.1f} s")

    out = root / "out"
    on_cpu = CACMIForDenseCaptioning.from_pretrained(out).eval()
    on_device = CACMIForDenseCaptioning.from_pretrained(out).to(device).eval()
    test = json.loads(paths["test"].read_text())
    vids = sorted(test)
    frames = on_cpu.config.num_frames
    features = torch.stack([torch.as_tensor(resize_features(np.load(paths["features"] / f"{v}.npy"), frames)) for v in vids])
    mask = torch.ones(features.shape[:2], dtype=torch.bool)
    mask[1, frames * 3 // 4 :] = False  # one padded video
    durations = torch.tensor([test[v]["duration"] for v in vids], dtype=torch.float)
    with torch.no_grad():
        a = on_cpu.generate(video_features=features, video_mask=mask, durations=durations)
        b = on_device.generate(video_features=features.to(device), video_mask=mask.to(device), durations=durations.to(device))
        alone = on_device.generate(video_features=features[1:2].to(device), video_mask=mask[1:2].to(device),
                                   durations=durations[1:2].to(device))
    segments_diff = (a.pred_segments - b.pred_segments.cpu()).abs().max().item()
    same_captions = torch.equal(a.caption_ids, b.caption_ids.cpu())
    alone_diff = (b.pred_segments[1:2] - alone.pred_segments).abs().max().item()
    alone_captions = torch.equal(b.caption_ids[1:2, :, : alone.caption_ids.shape[-1]], alone.caption_ids)
    print(f"CPU vs {device}: max |segment| diff {segments_diff:.2e}, max |logit| diff "
          f"{(a.logits - b.logits.cpu()).abs().max().item():.2e}, captions equal: {same_captions}")
    print(f"{device} batched vs alone (padded video): max |segment| diff {alone_diff:.2e}, captions equal: {alone_captions}")

    captioner = pipeline("dense-video-captioning", model=str(out), device=0 if device == "cuda" else -1)
    vid = vids[0]
    events = captioner({"video_features": resize_features(np.load(paths["features"] / f"{vid}.npy"), frames),
                        "duration": test[vid]["duration"]})
    expected = run.trainer.last_predictions[vid]
    pipeline_captions = [e["caption"] for e in events] == [e["caption"] for e in expected]
    times_diff = max((abs(x - y) for e, f in zip(events, expected) for x, y in zip(e["timestamp"], f["timestamp"])), default=0.0)
    print(f"pipeline on {captioner.device}: {len(events)} events, captions equal to the trainer's evaluation: "
          f"{pipeline_captions}, max |time| diff {times_diff:.2e} s")
    ok = same_captions and alone_captions and pipeline_captions and max(segments_diff, alone_diff, times_diff) <= TOLERANCE
    return 0 if ok and str(trained_on).startswith(device) else 1


if __name__ == "__main__":
    sys.exit(main())
