"""`cacmi caption`: subtitles, the ActivityNet JSON and timelines for several videos; failures; progress bar."""

import json
import re
import struct

import pytest

from cacmi_hf.cli import main
from cacmi_hf.exports import timeline_size

from test_pipeline import pipe, world  # noqa: F401  (the tiny model and mp4 fixtures)


@pytest.fixture(scope="module")
def model_dir(pipe, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("cli") / "model"
    pipe.model.save_pretrained(folder)
    pipe.processor.save_pretrained(folder)
    return folder


def _png_size(path):
    return struct.unpack(">II", path.read_bytes()[16:24])


def test_caption_writes_every_format(model_dir, world, pipe, tmp_path, capsys):  # noqa: F811
    videos = [str(p) for p in world["videos"][:2]]
    out = tmp_path / "out"
    code = main([
        "caption", *videos, "--model", str(model_dir), "--srt", "--vtt", "--json", str(tmp_path / "r.json"),
        "--plot", str(tmp_path / "t.png"), "--out-dir", str(out), "--max-events", "2", "--no-progress",
        "--dtype", "fp32",  # compared with the fp32 pipe below (the default, auto, is bf16 on a CPU with bf16)
    ])
    assert code == 0
    printed = capsys.readouterr().out
    expected = {f"v{i}": pipe(v, max_events=2) for i, v in enumerate(videos)}
    submission = json.loads((tmp_path / "r.json").read_text())
    assert submission["version"] == "VERSION 1.0" and set(submission["results"]) == {"v0", "v1"}
    for vid, events in expected.items():
        assert f"{vid}: 2 events" in printed
        assert [e["sentence"] for e in submission["results"][vid]] == [e["caption"] for e in events]
        assert submission["results"][vid][0]["timestamp"] == pytest.approx(events[0]["timestamp"], abs=1e-4)
        srt = (out / f"{vid}.srt").read_text()
        assert len(re.findall(r"^\d{2}:\d{2}:\d{2},\d{3} --> \d{2}:\d{2}:\d{2},\d{3}$", srt, re.M)) == 2
        assert (out / f"{vid}.vtt").read_text().startswith("WEBVTT\n")
        # several videos: one timeline per video beside the given name, with thumbnails
        assert _png_size(tmp_path / f"t_{vid}.png") == timeline_size(2, thumbnails=True)


def test_failed_video_is_reported_and_others_still_written(model_dir, world, tmp_path, capsys):
    good = str(world["videos"][2])
    code = main(["caption", good, str(tmp_path / "gone.mp4"), "--model", str(model_dir), "--json",
                 str(tmp_path / "r.json"), "--srt", "--out-dir", str(tmp_path), "--no-progress"])
    assert code == 1
    captured = capsys.readouterr()
    assert "gone: FAILED FileNotFoundError" in captured.out and "1 of 2 videos failed" in captured.err
    submission = json.loads((tmp_path / "r.json").read_text())
    assert set(submission["results"]) == {"v2"} and "FileNotFoundError" in submission["errors"]["gone"]
    assert (tmp_path / "v2.srt").is_file() and not (tmp_path / "gone.srt").exists()
    assert main(["caption", str(tmp_path / "gone.mp4"), "--model", str(model_dir), "--no-progress"]) == 2


def test_progress_bar_counts_videos(model_dir, world, capsys):
    videos = [str(p) for p in world["videos"]]
    assert main(["caption", *videos, "--model", str(model_dir), "--batch-size", "2"]) == 0
    assert "3/3" in capsys.readouterr().err


def test_folder_argument_and_bad_batch_size(model_dir, world, capsys):
    folder = world["videos"][0].parent
    assert main(["caption", str(folder), "--model", str(model_dir), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert [line.split(":")[0] for line in printed.splitlines() if not line.startswith(" ")] == ["v0", "v1", "v2"]
    with pytest.raises(SystemExit, match="batch-size"):
        main(["caption", str(folder), "--model", str(model_dir), "--batch-size", "0"])


def test_rerank_alpha_from_the_saved_config_or_the_command_line(pipe, world, tmp_path, capsys):  # noqa: F811
    from test_pipeline import _video_where_alpha_matters

    video, alpha = _video_where_alpha_matters(pipe, world["videos"])
    folder = tmp_path / "model"
    pipe.model.config.rerank_alpha, saved = alpha, pipe.model.config.rerank_alpha
    try:
        pipe.model.save_pretrained(folder)
    finally:
        pipe.model.config.rerank_alpha = saved
    pipe.processor.save_pretrained(folder)

    def first_event(*extra):
        command = ["caption", video, "--model", str(folder), "--max-events", "1", "--no-progress", "--dtype", "fp32"]
        assert main([*command, *extra]) == 0  # float32 tower: the events of the in-memory pipeline above
        return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("  ["))

    def printed(event):
        return f"{event['caption']}  ({event['score']:.2f})"

    by_caption = pipe(video, max_events=1, rerank_alpha=alpha)[0]
    by_confidence = pipe(video, max_events=1, rerank_alpha=0.0)[0]
    assert printed(by_caption) in first_event()  # the saved config's alpha
    assert printed(by_confidence) in first_event("--rerank-alpha", "0")
