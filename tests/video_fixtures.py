"""mp4 files the tests write with PyAV: a video drawn frame by frame, and a file with audio only."""

from __future__ import annotations

import av
import numpy as np


def write_mp4(path, draw, seconds: float, fps: float, size=(64, 48), codec: str = "libx264", gop: int | None = None):
    """Encode `draw(i, second) -> (H, W, 3) uint8` for every frame i of `seconds` at `fps`; returns `path`."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.options = {"g": str(gop), "keyint_min": str(gop)}
        for i in range(int(round(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(draw(i, int(i / fps)), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _mux_silence(out, frames: int) -> None:
    """Add a silent AAC stream (16 kHz mono) of `frames` 1024-sample frames to the open container `out`."""
    stream = out.add_stream("aac", rate=16000)
    for k in range(frames):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, k * 1024
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def write_audio_only(path, seconds: float = 1.28):
    """An mp4 with one silent AAC stream (16 kHz mono) and no video."""
    with av.open(str(path), "w") as out:
        _mux_silence(out, int(seconds * 16000 / 1024))
    return path


def write_frameless_video(path):
    """A Matroska file with a video track that holds no frames (an audio track keeps the file valid)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        _mux_silence(out, 10)
        for packet in video.encode():
            out.mux(packet)
    return path
