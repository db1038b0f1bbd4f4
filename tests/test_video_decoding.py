"""video_decoding: bin-centre sampling, PyAV decoding of files/bytes, and the errors for broken inputs."""

import warnings

import av
import numpy as np
import pytest

from cacmi_hf.video_decoding import (
    TruncatedVideoError,
    TruncatedVideoWarning,
    VideoDecodingError,
    VideoReader,
    decode_video,
    frames_at_seeking,
    nearest_indices,
    probe_video,
    sample_times,
)

from video_fixtures import write_audio_only, write_frameless_video, write_mp4


def write_video(path, seconds=10.0, fps=25, size=(64, 48), codec="libx264"):
    """An mp4 whose red channel encodes the second (23·s) and blue the frame number (5·i mod 256)."""

    def draw(i, second):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[..., 0] = (second * 23) % 256
        img[..., 1] = 128
        img[..., 2] = (i * 5) % 256
        return img

    return write_mp4(path, draw, seconds, fps, size, codec=codec)


@pytest.fixture(scope="module")
def clip10(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("videos") / "clip10.mp4", seconds=10.0, fps=25)


def test_nearest_indices_hand_worked():
    # bin centres (i + 0.5) * T / L: 10 -> 4 at 1.25, 3.75, 6.25, 8.75; 3 -> 6 at 0.25 ... 2.75
    assert nearest_indices(10, 4).tolist() == [1, 3, 6, 8]
    assert nearest_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert nearest_indices(7, 7).tolist() == list(range(7))
    assert nearest_indices(1, 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        nearest_indices(0, 3)


def test_sample_times_rate_and_count():
    np.testing.assert_allclose(sample_times(10.0, fps=1), np.arange(10) + 0.5)
    assert len(sample_times(10.4, fps=1)) == 10 and len(sample_times(10.6, fps=1)) == 11
    assert len(sample_times(10.0, fps=2)) == 20
    assert len(sample_times(0.2, fps=1)) == 1  # never zero frames
    np.testing.assert_allclose(sample_times(8.0, num_frames=4), [1.0, 3.0, 5.0, 7.0])
    with pytest.raises(ValueError, match="exactly one"):
        sample_times(5.0, fps=1, num_frames=3)
    with pytest.raises(ValueError, match="positive duration"):
        sample_times(0.0, fps=1)


def test_probe_reads_container(clip10):
    info = probe_video(clip10)
    assert info.duration == pytest.approx(10.0, abs=1e-6)
    assert (info.width, info.height) == (64, 48)
    assert info.average_fps == pytest.approx(25.0)


def test_fps_sampling_picks_the_frame_on_screen(clip10):
    decoded = decode_video(clip10, fps=1)
    assert decoded.frames.shape == (10, 48, 64, 3) and decoded.frames.dtype == np.uint8
    np.testing.assert_allclose(decoded.timestamps, np.arange(10) + 0.5)
    # at t = s + 0.5 the frame shown is number 25 s + 12: red 23 s, blue 5 (25 s + 12) mod 256 (lossy codec: +-6)
    seconds = np.arange(10)
    np.testing.assert_allclose(decoded.frames[:, 20, 30, 0], seconds * 23, atol=6)
    np.testing.assert_allclose(decoded.frames[:, 20, 30, 2], (5 * (25 * seconds + 12)) % 256, atol=6)
    assert decode_video(clip10, fps=2).frames.shape[0] == 20
    assert decode_video(clip10, fps=0.5).frames.shape[0] == 5


def test_num_frames_sampling_and_bytes_input(clip10):
    by_count = decode_video(clip10, num_frames=4)
    np.testing.assert_allclose(by_count.timestamps, [1.25, 3.75, 6.25, 8.75])
    np.testing.assert_allclose(by_count.frames[:, 20, 30, 0], np.array([1, 3, 6, 8]) * 23, atol=6)
    from_bytes = decode_video(clip10.read_bytes(), num_frames=4)
    np.testing.assert_array_equal(from_bytes.frames, by_count.frames)
    with open(clip10, "rb") as handle:
        np.testing.assert_array_equal(decode_video(handle, num_frames=4).frames, by_count.frames)
    # more samples than frames: neighbouring samples repeat the frame on screen
    dense = decode_video(clip10, num_frames=500)
    assert dense.frames.shape[0] == 500


def test_non_integer_duration_frame_count(tmp_path):
    path = write_video(tmp_path / "short.mp4", seconds=5.2, fps=30, codec="mpeg4")
    assert decode_video(path, fps=1).frames.shape[0] == 5
    assert decode_video(path, fps=1).duration == pytest.approx(5.2, abs=1e-6)


def test_downscale_while_decoding(tmp_path):
    path = write_video(tmp_path / "big.mp4", seconds=2.0, fps=5, size=(320, 240))
    small = decode_video(path, fps=1, max_short_side=120)
    assert small.frames.shape == (2, 120, 160, 3)
    full = decode_video(path, fps=1, max_short_side=1000)
    assert full.frames.shape == (2, 240, 320, 3)
    assert abs(float(small.frames.mean()) - float(full.frames.mean())) < 2.0  # same picture, fewer pixels


def test_frames_at_needs_ascending_times(clip10):
    with VideoReader(clip10) as reader, pytest.raises(ValueError, match="ascending"):
        list(reader.frames_at(np.array([2.0, 1.0])))


def test_missing_empty_junk_audio_only_and_frameless(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        decode_video(tmp_path / "nope.mp4", fps=1)
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(VideoDecodingError, match="zero.mp4.*empty file"):
        decode_video(tmp_path / "zero.mp4", fps=1)
    (tmp_path / "junk.mp4").write_bytes(b"definitely not a video" * 50)
    with pytest.raises(VideoDecodingError, match="junk.mp4 is not a readable video"):
        decode_video(tmp_path / "junk.mp4", fps=1)
    with pytest.raises(VideoDecodingError, match="no video stream"):
        decode_video(write_audio_only(tmp_path / "audio.mp4"), fps=1)
    with pytest.raises(VideoDecodingError, match="no decodable frames"):
        decode_video(write_frameless_video(tmp_path / "frameless.mkv"), fps=1)


def test_corrupt_packets_are_skipped_with_a_warning(tmp_path):
    path = write_video(tmp_path / "c.mp4", seconds=4.0, fps=25, size=(128, 96))
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 1500] = np.random.default_rng(0).integers(0, 256, 1500, dtype=np.uint8).tobytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = decode_video(bytes(data), fps=1)
    assert decoded.frames.shape == (4, 96, 128, 3)
    assert decoded.num_corrupt_packets > 0
    assert any("corrupt packet" in str(w.message) for w in caught)


def write_noisy_video(path, seconds, fps, gop=None, faststart=False, size=(64, 48)):
    """Random pictures (every frame differs, B-frames on) with an optional GOP length and the index at the front."""
    rng = np.random.default_rng(0)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        if gop is not None:
            stream.codec_context.options = {"g": str(gop), "keyint_min": str(gop), "bf": "3", "sc_threshold": "0"}
        for _ in range(int(round(seconds * fps))):
            image = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize("gop", [15, 30, 60])
def test_seeking_gives_the_every_frame_decoders_frames(tmp_path, gop):
    path = write_noisy_video(tmp_path / "noise.mp4", 8.0, 30, gop=gop)
    for options in ({"fps": 1.0}, {"fps": 3.0}, {"num_frames": 3}, {"num_frames": 40}):
        every = decode_video(path, **options)
        seeking = decode_video(path, seek=True, **options)
        np.testing.assert_array_equal(seeking.timestamps, every.timestamps)
        np.testing.assert_array_equal(seeking.frames, every.frames)  # bit-identical pictures
        with VideoReader(path) as reader:  # a seek at every keyframe between targets, however small the skip
            eager = frames_at_seeking(reader, every.timestamps, min_skip=0.0)
        np.testing.assert_array_equal(np.stack(eager), every.frames)
    assert len({frame.tobytes() for frame in decode_video(path, fps=1.0, seek=True).frames}) == 8


def test_seeking_decodes_only_from_the_keyframe_before_each_target(tmp_path):
    path = write_noisy_video(tmp_path / "noise.mp4", 8.0, 30, gop=15)  # a keyframe every 0.5 s
    targets = np.array([0.5, 3.5, 7.5])  # each on a keyframe, 3-4 s apart
    with VideoReader(path) as reader:
        frames = frames_at_seeking(reader, targets)
        seeking = reader.frames_decoded
    with VideoReader(path) as reader:
        every = list(reader.frames_at(targets))
        assert reader.frames_decoded >= 7 * 30  # up to the last target
    np.testing.assert_array_equal(np.stack(frames), np.stack(every))
    assert seeking <= 3 * 8  # a handful of pictures per target (decoder delay), not 225
    with VideoReader(path) as reader:
        frames_at_seeking(reader, np.arange(8) + 0.5)  # keyframes 1 s apart: not worth a seek, decoded through
        assert reader.frames_decoded >= 7 * 30


def test_truncated_file_uses_its_decodable_span(tmp_path):
    whole = write_noisy_video(tmp_path / "whole.mp4", 10.0, 25, faststart=True)  # index first, like a download
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 4 // 10])
    with pytest.warns(TruncatedVideoWarning, match=r"cut.mp4 is truncated: the container states 10.00 s but its frames end at 3\.\d\d s"):
        decoded = decode_video(cut, fps=1)
    assert 3.0 < decoded.duration < 4.5 and decoded.frames.shape[0] == round(decoded.duration)
    with pytest.warns(TruncatedVideoWarning):
        with VideoReader(cut) as reader:
            assert reader.info.truncated and reader.info.stated_duration == pytest.approx(10.0)
            assert reader.info.decodable_span == (0.0, pytest.approx(decoded.duration))
    with pytest.raises(TruncatedVideoError, match="cut.mp4 is truncated.*decodable span 0.00-3"):
        decode_video(cut, fps=1, strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a whole file says nothing
        info = VideoReader(whole).info
    assert not info.truncated and info.duration == pytest.approx(10.0)
