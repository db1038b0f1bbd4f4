"""Video decoding with PyAV: RGB frames sampled at a target rate or at L evenly spread times.

Sampling rule (shared by feature extraction, the processor and feature resizing): a video of
duration `d` seconds cut into `n` frames is split into `n` equal bins and frame `k` is the picture
on screen at the bin centre `(k + 0.5) · d / n` (the last frame whose presentation time is <= that
instant). At a target rate `fps`, `n = max(1, round(d · fps))`, so a 10.4 s clip at 1 fps gives 10
frames and the feature axis always spans exactly [0, d]. `nearest_indices(T, L)` applies the same
rule to an already sampled sequence of T items.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

VideoSource = str | os.PathLike | bytes | bytearray | BinaryIO


class VideoDecodingError(ValueError):
    """A video that cannot be decoded: not a media file, no video stream, or no frames."""


@dataclass
class VideoInfo:
    """What the container says about a video stream (times in seconds)."""

    name: str
    duration: float
    start_time: float
    width: int
    height: int
    average_fps: float | None
    num_frames: int | None


@dataclass
class DecodedVideo:
    """Sampled RGB frames `(T, H, W, 3)` uint8 with their sample times `(T,)` in seconds."""

    frames: np.ndarray
    timestamps: np.ndarray
    duration: float
    num_corrupt_packets: int = 0


def nearest_indices(length: int, num_frames: int) -> np.ndarray:
    """Indices `(num_frames,)` int64 that resample `length` items to `num_frames` by bin centres."""
    if length < 1 or num_frames < 1:
        raise ValueError(f"nearest_indices needs length >= 1 and num_frames >= 1, got {length} and {num_frames}.")
    centres = (np.arange(num_frames, dtype=np.float64) + 0.5) * (length / num_frames)  # (L,)
    return np.minimum(np.floor(centres).astype(np.int64), length - 1)


def sample_times(duration: float, *, fps: float | None = None, num_frames: int | None = None) -> np.ndarray:
    """Bin-centre sample times `(n,)` float64 for a clip of `duration` s at `fps` or with `num_frames` frames."""
    if (fps is None) == (num_frames is None):
        raise ValueError("sample_times needs exactly one of fps= or num_frames=.")
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"sample_times needs a positive duration, got {duration!r}.")
    if fps is not None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps!r}.")
        num_frames = max(1, int(math.floor(duration * fps + 0.5)))
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames!r}.")
    return (np.arange(num_frames, dtype=np.float64) + 0.5) * (duration / num_frames)


def _source_name(source: VideoSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return getattr(source, "name", "<file object>")


def _scaled_size(width: int, height: int, max_short_side: int | None) -> tuple[int, int] | None:
    """Output (width, height) keeping the aspect ratio, or None when no downscale is needed."""
    if max_short_side is None or min(width, height) <= max_short_side:
        return None
    scale = max_short_side / min(width, height)
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


class VideoReader:
    """An open video: `info` from the container, `frames_at(times)` streams the sampled RGB frames."""

    def __init__(self, source: VideoSource, *, threads: bool = True):
        import av

        self.name = _source_name(source)
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"Video file not found: {path} (check the path or the video list).")
            if path.stat().st_size == 0:
                raise VideoDecodingError(f"{path} is an empty file (0 bytes, zero-length video); re-download it.")
            source = os.fspath(path)
        elif isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(bytes(source))
        try:
            self._container = av.open(source, mode="r")
        except av.FFmpegError as err:
            raise VideoDecodingError(
                f"{self.name} is not a readable video file ({err}); re-encode it (e.g. ffmpeg -i in -c:v libx264 out.mp4) "
                "or remove it from the list."
            ) from err
        if not self._container.streams.video:
            self._container.close()
            raise VideoDecodingError(
                f"{self.name} has no video stream (audio-only or data file); it cannot give frames."
            )
        self._stream = self._container.streams.video[0]
        if threads:
            self._stream.thread_type = "AUTO"  # frame + slice threads: decoding dominates at 1 fps sampling
        self.info = self._probe()

    def _probe(self) -> VideoInfo:
        stream, container = self._stream, self._container
        base = float(stream.time_base) if stream.time_base is not None else None
        start = float(stream.start_time * base) if stream.start_time is not None and base else 0.0
        duration = None
        if stream.duration and base:
            duration = float(stream.duration * base)
        elif container.duration:
            duration = container.duration / 1_000_000 - max(start, 0.0)  # container times are in AV_TIME_BASE
        if not duration or duration <= 0:
            duration, start = self._duration_from_packets(start)
        rate = float(stream.average_rate) if stream.average_rate else None
        width, height = stream.codec_context.width, stream.codec_context.height
        return VideoInfo(self.name, duration, start, width, height, rate, stream.frames or None)

    def _duration_from_packets(self, start: float) -> tuple[float, float]:
        """Container without a duration: read packet times (no decoding), then rewind."""
        first, last = None, None
        for packet in self._container.demux(self._stream):
            if packet.pts is None:
                continue
            t0 = float(packet.pts * packet.time_base)
            t1 = t0 + float((packet.duration or 0) * packet.time_base)
            first = t0 if first is None else min(first, t0)
            last = t1 if last is None else max(last, t1)
        if first is None or last <= first:
            self.close()
            raise VideoDecodingError(f"{self.name} has a video stream with zero frames (zero-length video).")
        self._container.seek(0)
        return last - first, first

    def frames_at(self, times: np.ndarray, *, max_short_side: int | None = None) -> Iterator[np.ndarray]:
        """Yield one `(H, W, 3)` uint8 RGB frame per time in `times` (seconds from the start, ascending).

        `max_short_side` downscales (swscale, area filter) frames whose shorter side exceeds it, while
        converting from YUV, so huge resolutions never materialise at full size.
        """
        import av

        times = np.asarray(times, dtype=np.float64)
        if times.size and np.any(np.diff(times) < 0):
            raise ValueError("frames_at needs ascending times.")
        size = _scaled_size(self.info.width, self.info.height, max_short_side)
        targets = times + self.info.start_time  # absolute presentation times
        self.num_corrupt_packets = 0
        cache: tuple[int, np.ndarray] | None = None  # (frame number, array): a frame shown at several targets

        def to_array(frame, number: int) -> np.ndarray:
            nonlocal cache
            if cache is None or cache[0] != number:
                kwargs = dict(format="rgb24")
                if size is not None:
                    kwargs.update(width=size[0], height=size[1], interpolation="AREA")
                cache = (number, frame.to_ndarray(**kwargs))
            return cache[1]

        next_target, number, previous = 0, -1, None
        rate = self.info.average_fps or 1.0
        for packet in self._container.demux(self._stream):
            if next_target >= len(targets):
                break
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.num_corrupt_packets += 1  # one warning at the end, not one per packet
                continue
            for frame in frames:
                number += 1
                t = frame.time if frame.time is not None else self.info.start_time + number / rate
                # targets before this frame's time are showing the previous frame (or this one if it is the first)
                while next_target < len(targets) and targets[next_target] < t:
                    yield to_array(previous[0] if previous else frame, previous[1] if previous else number)
                    next_target += 1
                previous = (frame, number)
        if previous is None:
            raise VideoDecodingError(f"{self.name} has no decodable frames (zero-length or fully corrupt video).")
        while next_target < len(targets):
            yield to_array(*previous)
            next_target += 1
        if self.num_corrupt_packets:
            warnings.warn(
                f"{self.name}: {self.num_corrupt_packets} corrupt packet(s) skipped; nearby samples reuse the last good frame.",
                RuntimeWarning,
                stacklevel=2,
            )

    def close(self) -> None:
        """Release the container."""
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def probe_video(source: VideoSource) -> VideoInfo:
    """Duration, start time, size and frame rate of a video, read from the container (no decoding)."""
    with VideoReader(source, threads=False) as reader:
        return reader.info


def decode_video(
    source: VideoSource,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    max_short_side: int | None = None,
) -> DecodedVideo:
    """Decode a video (path, bytes or file object) into frames sampled at `fps` or at `num_frames` bin centres.

    Raises FileNotFoundError for a missing path and VideoDecodingError (a ValueError) for a file that is
    not a video, has no video stream or has no frames; corrupt packets are skipped with a warning.
    """
    with VideoReader(source) as reader:
        times = sample_times(reader.info.duration, fps=fps, num_frames=num_frames)
        frames = list(reader.frames_at(times, max_short_side=max_short_side))
        return DecodedVideo(np.stack(frames), times, reader.info.duration, reader.num_corrupt_packets)


__all__ = [
    "DecodedVideo",
    "VideoDecodingError",
    "VideoInfo",
    "VideoReader",
    "decode_video",
    "nearest_indices",
    "probe_video",
    "sample_times",
]
