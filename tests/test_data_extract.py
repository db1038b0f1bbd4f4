"""`cacmi extract-features`: features equal the tower on the decoded frames; fps counts; broken videos skipped; resumable."""

import argparse
import json
import os
import socket
import subprocess
import sys
import warnings

import av
import numpy as np
import pytest
import torch

from cacmi_hf.data.extract import Manifest, add_arguments, extract_features, file_checksum, find_videos, run
from cacmi_hf.open_clip_tower import TINY_OPEN_CLIP_CONFIG, encode_images, load_open_clip, save_open_clip_local_dir, spec_preprocess
from cacmi_hf.video_decoding import TruncatedVideoWarning, decode_video

from video_fixtures import write_audio_only, write_mp4


def write_video(path, seconds, fps=25, size=(64, 48), codec="libx264"):
    """An mp4 whose colour changes every second (so wrong frame choices change the features)."""

    def draw(i, second):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[..., 0] = (second * 37) % 256
        img[: size[1] // 2, :, 1] = (second * 91) % 256
        img[:, : size[0] // 3, 2] = 255 - (second * 53) % 256
        return img

    return write_mp4(path, draw, seconds, fps, size, codec=codec)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    torch.manual_seed(0)
    model, spec = load_open_clip(TINY_OPEN_CLIP_CONFIG)
    folder = save_open_clip_local_dir(model, spec, tmp_path_factory.mktemp("clip") / "tiny")
    return model, spec, folder


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    write_video(folder / "v_alpha.mp4", 6.0, fps=25)
    (folder / "sub").mkdir()
    write_video(folder / "sub" / "v_beta.mp4", 3.4, fps=30, size=(96, 64), codec="mpeg4")
    return folder


@pytest.fixture
def broken_dir(video_dir, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("v_alpha.mp4", "sub/v_beta.mp4"):
        os.symlink(video_dir / name, folder / os.path.basename(name))
    (folder / "v_corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (folder / "v_empty.mp4").write_bytes(b"")
    write_audio_only(folder / "v_audio.mp4")
    return folder


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def test_features_equal_the_tower_on_decoded_frames(tiny_clip, video_dir, tmp_path):
    model, spec, _ = tiny_clip
    videos = find_videos(video_dir)
    assert [vid for vid, _ in videos] == ["v_alpha", "v_beta"]  # recursive, sorted by id
    report = extract_features(videos, tmp_path / "f1", model, spec, fps=1.0, batch_size=4, progress=False)
    assert report.written == ["v_alpha", "v_beta"] and not report.failed and report.frames == 6 + 3
    for vid, path in videos:
        saved = np.load(tmp_path / "f1" / f"{vid}.npy")
        expected = encode_images(model, spec_preprocess(spec)(decode_video(path, fps=1.0).frames)).numpy()
        assert saved.dtype == np.float32 and saved.shape == expected.shape
        np.testing.assert_allclose(saved, expected, atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.linalg.norm(saved, axis=1), 1.0, atol=1e-5)
        assert len({tuple(np.round(r, 4)) for r in saved}) == len(saved)  # one distinct picture per second
    two = extract_features(videos, tmp_path / "f2", model, spec, fps=2.0, progress=False)
    assert [np.load(tmp_path / "f2" / f"{v}.npy").shape[0] for v in two.written] == [12, 7]  # round(6*2), round(3.4*2)
    fixed = extract_features(videos, tmp_path / "f3", model, spec, num_frames=5, progress=False)
    assert [np.load(tmp_path / "f3" / f"{v}.npy").shape for v in fixed.written] == [(5, 32), (5, 32)]


def test_broken_videos_are_reported_and_skipped(tiny_clip, broken_dir, tmp_path):
    model, spec, _ = tiny_clip
    report = extract_features(find_videos(broken_dir), tmp_path / "out", model, spec, progress=False)
    assert sorted(report.written) == ["v_alpha", "v_beta"]
    assert sorted(report.failed) == ["v_audio", "v_corrupt", "v_empty"]
    assert "no video stream" in report.failed["v_audio"]
    assert "empty file" in report.failed["v_empty"]
    assert "not a readable video" in report.failed["v_corrupt"]
    # no temp files: the features and this run's manifest journal
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shards", "v_alpha.npy", "v_beta.npy"]
    assert "3 failed" in report.summary() and "FAILED v_audio" in report.summary()


def test_resume_skips_finished_videos(tiny_clip, video_dir, tmp_path):
    model, spec, _ = tiny_clip
    videos = find_videos(video_dir)
    out = tmp_path / "out"
    extract_features(videos[:1], out, model, spec, progress=False)
    stamp = (out / "v_alpha.npy").stat().st_mtime_ns
    report = extract_features(videos, out, model, spec, progress=False)
    assert report.skipped == ["v_alpha"] and report.written == ["v_beta"]
    assert (out / "v_alpha.npy").stat().st_mtime_ns == stamp
    again = extract_features(videos, out, model, spec, overwrite=True, progress=False)
    assert again.written == ["v_alpha", "v_beta"] and not again.skipped


def test_command_exit_codes_and_settings_guard(tiny_clip, video_dir, broken_dir, tmp_path, capsys):
    _, _, clip_folder = tiny_clip
    out = tmp_path / "cli"
    assert run(parse(broken_dir, "--out", out, "--clip", f"local-dir:{clip_folder}", "--no-progress")) == 0
    info = json.loads((out / "extraction_info.json").read_text())
    assert info["fps"] == 1.0 and info["clip"]["model_cfg"]["embed_dim"] == 32
    assert "2 written" in capsys.readouterr().out
    # the rerun only retries the broken ones: nothing new, but features exist -> success, unless --strict
    assert run(parse(broken_dir, "--out", out, "--clip", clip_folder, "--no-progress")) == 0
    assert run(parse(broken_dir, "--out", out, "--clip", clip_folder, "--no-progress", "--strict")) == 1
    only_broken = tmp_path / "only_broken"
    only_broken.mkdir()
    (only_broken / "bad.mp4").write_bytes(b"nope")
    assert run(parse(only_broken, "--out", tmp_path / "none", "--clip", clip_folder, "--no-progress")) == 1
    with pytest.raises(SystemExit, match="other settings.*fps"):
        run(parse(video_dir, "--out", out, "--clip", clip_folder, "--fps", "2", "--no-progress"))
    with pytest.raises(SystemExit, match="needs CLIP weights"):
        run(parse(video_dir, "--out", tmp_path / "x", "--clip", "ViT-L-14"))


def test_find_videos_list_file_and_duplicates(video_dir, tmp_path):
    listing = tmp_path / "videos.txt"
    listing.write_text(f"# my videos\nclip_a\t{video_dir / 'v_alpha.mp4'}\n{video_dir / 'sub' / 'v_beta.mp4'}\n\n")
    assert find_videos(listing) == [("clip_a", video_dir / "v_alpha.mp4"), ("v_beta", video_dir / "sub" / "v_beta.mp4")]
    (tmp_path / "dups").mkdir()
    (tmp_path / "dups" / "a").mkdir()
    for sub in ("", "a/"):
        (tmp_path / "dups" / f"{sub}same.mp4").write_bytes(b"x")
    with pytest.raises(ValueError, match="share the id 'same'"):
        find_videos(tmp_path / "dups")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No videos"):
        find_videos(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        find_videos(tmp_path / "missing")


def write_truncated(path, seconds=6.0, fps=25):
    """The first 40 % of an mp4 whose index sits at the front (a partial download): it states `seconds`."""
    rng = np.random.default_rng(1)
    whole = path.with_name("whole_" + path.name)
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(int(seconds * fps)):
            image = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size * 4 // 10])
    whole.unlink()
    return path


def test_seeking_and_parallel_decoding_write_the_same_bytes(tiny_clip, video_dir, tmp_path):
    model, spec, _ = tiny_clip
    videos = find_videos(video_dir)
    every = extract_features(videos, tmp_path / "every", model, spec, fps=2.0, seek=False, progress=False)
    seeking = extract_features(videos, tmp_path / "seek", model, spec, fps=2.0, decode_workers=2, progress=False)
    assert every.written == ["v_alpha", "v_beta"] and sorted(seeking.written) == ["v_alpha", "v_beta"]
    for vid in every.written:
        assert (tmp_path / "every" / f"{vid}.npy").read_bytes() == (tmp_path / "seek" / f"{vid}.npy").read_bytes()
    records = Manifest(tmp_path / "seek").load()
    alpha = records["v_alpha"]
    assert alpha["status"] == "done" and alpha["frames"] == 12 and alpha["attempts"] == 1
    assert alpha["duration"] == pytest.approx(6.0) and alpha["decode_span"] == [0.0, pytest.approx(6.0)]
    assert alpha["source_fps"] == pytest.approx(25.0) and alpha["sample_fps"] == 2.0 and not alpha["truncated"]
    assert alpha["sha256"] == file_checksum(tmp_path / "seek" / "v_alpha.npy")


def test_failed_videos_are_retried_once_and_truncated_ones_recorded(tiny_clip, broken_dir, tmp_path):
    model, spec, _ = tiny_clip
    cut = write_truncated(broken_dir / "v_cut.mp4")
    videos = find_videos(broken_dir)
    out = tmp_path / "out"
    with pytest.warns(TruncatedVideoWarning, match=r"v_cut.mp4 is truncated: the container states 6.00 s"):
        first = extract_features(videos, out, model, spec, progress=False)
    assert "v_cut" in first.written and "v_cut" in first.truncated and "TRUNCATED v_cut" in first.summary()
    record = Manifest(out).load()["v_cut"]
    assert record["truncated"] and record["stated_duration"] == pytest.approx(6.0)
    assert record["decode_span"][1] == pytest.approx(record["duration"]) and 1.5 < record["duration"] < 3.0
    assert record["frames"] == round(record["duration"])  # 1 fps over the decodable span only
    second = extract_features(videos, out, model, spec, progress=False)  # retries the failed ones once
    assert sorted(second.skipped) == ["v_alpha", "v_beta", "v_cut"] and sorted(second.failed) == ["v_audio", "v_corrupt", "v_empty"]
    assert Manifest(out).load()["v_audio"]["attempts"] == 2
    third = extract_features(videos, out, model, spec, progress=False)  # nothing left to try
    assert sorted(third.failed) == sorted(second.failed) and Manifest(out).load()["v_audio"]["attempts"] == 2
    strict = extract_features([("v_cut", cut)], tmp_path / "strict", model, spec, strict=True, progress=False)
    assert "TruncatedVideoError" in strict.failed["v_cut"] and "decodable span" in strict.failed["v_cut"]
    assert Manifest(tmp_path / "strict").load()["v_cut"]["status"] == "failed"


def test_manual_shards_merge_into_the_one_process_manifest(tiny_clip, video_dir, broken_dir, tmp_path, capsys):
    _, _, clip_folder = tiny_clip
    common = (broken_dir, "--clip", clip_folder, "--dtype", "fp32", "--no-progress")
    assert run(parse(*common, "--out", tmp_path / "one")) == 0
    # shard 1 holds v_audio and v_corrupt (every other video of the sorted list): all its videos fail
    assert run(parse(*common, "--out", tmp_path / "two", "--num-shards", "2", "--shard", "1")) == 1
    assert not (tmp_path / "two" / "manifest.json").exists()  # shard 0 has not run yet
    assert run(parse(*common, "--out", tmp_path / "two", "--num-shards", "2", "--shard", "0")) == 0
    assert "manifest:" in capsys.readouterr().out
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "two")
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())["videos"]
    assert sorted(manifest) == ["v_alpha", "v_audio", "v_beta", "v_corrupt", "v_empty"]
    assert manifest["v_empty"]["status"] == "failed" and "empty file" in manifest["v_empty"]["error"]
    from cacmi_hf.data.features import NpyDirectoryFeatures  # the merged folder is what the loaders read

    store = NpyDirectoryFeatures(tmp_path / "two")
    assert store.check(store.resolve("v_alpha")) == (manifest["v_alpha"]["frames"], 32) and store.resolve("v_audio") is None
    with pytest.raises(SystemExit):
        run(parse(*common, "--out", tmp_path / "x", "--num-shards", "2", "--shard", "2"))


def folder_bytes(folder):
    """{relative path: bytes} of every file under a folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_write_the_bytes_of_one(tiny_clip, video_dir, tmp_path):
    """`torchrun`/`accelerate launch` style: RANK/WORLD_SIZE set, a gloo barrier before rank 0 merges."""
    _, _, clip_folder = tiny_clip
    args = [str(video_dir), "--clip", str(clip_folder), "--dtype", "fp32", "--no-progress"]
    assert run(parse(*args, "--out", tmp_path / "one")) == 0
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        command = [sys.executable, "-m", "cacmi_hf.cli", "extract-features", *args, "--out", str(tmp_path / "two")]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert "1 written" in outputs[0] and "1 written" in outputs[1]  # one video each
    assert folder_bytes(tmp_path / "one") == folder_bytes(tmp_path / "two")
    assert (tmp_path / "two" / "manifest.json").is_file() and not list((tmp_path / "two" / "shards").glob("*.jsonl"))
