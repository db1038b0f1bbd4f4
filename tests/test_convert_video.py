"""A converted tiny CM2 checkpoint captions an mp4 by itself: its CLIP image tower (taken from the checkpoint, raw
embeddings as CM2's features) through `pipeline(...)` and `cacmi caption`, and `cacmi convert` writes it."""

import json

import numpy as np
import pytest
import torch

from cacmi_hf.cli import main

from parity_fixtures import FIXTURES
from video_fixtures import write_mp4


@pytest.fixture(scope="module")
def converted_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("convert") / "cm2-tiny"
    code = main(["convert", "cm2", "--checkpoint", str(FIXTURES / "cm2_anet" / "model-best.pth"),
                 "--memory-bank", str(FIXTURES / "cm2_anet" / "bank"), "--output", str(folder)])
    assert code == 0
    return folder


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"

    def draw(i, second):
        frame = np.full((48, 64, 3), 40, dtype=np.uint8)
        x = (4 + 2 * second) % 56
        frame[10:30, x : x + 8] = (220, 60, 30) if second < 12 else (30, 200, 90)
        return frame

    write_mp4(path, draw, seconds=24, fps=2)
    return path


def test_converted_cm2_tower_gives_clip_encode_image_unnormalised(converted_folder):
    """The folder's image tower is the checkpoint's CLIP: open_clip's own CLIP with those weights gives the same
    `encode_image`, and the tower keeps it raw (CM2's features are not L2-normalised)."""
    import open_clip

    from cacmi_hf import CACMIForDenseCaptioning

    model = CACMIForDenseCaptioning.from_pretrained(converted_folder)
    state = torch.load(FIXTURES / "cm2_anet" / "model-best.pth", weights_only=True)["model"]
    clip = open_clip.model.CLIP(
        embed_dim=24,
        vision_cfg=open_clip.model.CLIPVisionCfg(layers=1, width=64, head_width=64, patch_size=16, image_size=32),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=8, vocab_size=64, width=64, heads=1, layers=1),
        quick_gelu=True,
    )
    clip.load_state_dict({k[len("clip_model."):]: v.float() for k, v in state.items() if k.startswith("clip_model.")})
    pixels = torch.randn(1, 3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.vision_tower(pixels)[0]
        reference = clip.encode_image(pixels[0])
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours.norm(dim=-1), torch.ones(3))


def test_converted_tiny_checkpoint_captions_an_mp4_with_pipeline_and_cli(converted_folder, video, tmp_path, capsys):
    from transformers import pipeline

    import cacmi_hf  # noqa: F401  (registers the task)

    pipe = pipeline("dense-video-captioning", model=str(converted_folder))
    events = pipe(str(video))
    assert events and any(e["caption"] for e in events)  # random weights: a caption may end at once
    assert all(0 <= e["timestamp"][0] <= e["timestamp"][1] <= 24.0 + 1e-3 for e in events)
    # every frame at 1 fps, not resized: 24 frames for 24 s (CM2's native-length features)
    inputs = pipe.processor(videos=str(video))
    assert inputs["pixel_values_videos"].shape[:2] == (1, 24)
    out = tmp_path / "r.json"
    assert main(["caption", str(video), "--model", str(converted_folder), "--json", str(out), "--no-progress",
                 "--dtype", "fp32"]) == 0
    results = json.loads(out.read_text())["results"]["clip"]
    assert [e["sentence"] for e in results] == [e["caption"] for e in events]
    assert np.allclose([e["timestamp"] for e in results], [e["timestamp"] for e in events], atol=1e-3)
