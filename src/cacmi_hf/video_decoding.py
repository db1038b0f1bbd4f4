"""Video decoding with PyAV: RGB frames sampled at a target rate or at L evenly spread times.

Sampling rule (shared by feature extraction, the processor and feature resizing): a video of
duration `d` seconds cut into `n` frames is split into `n` equal bins and frame `k` is the picture
on screen at the bin centre `(k + 0.5) · d / n` (the last frame whose presentation time is <= that
instant). At a target rate `fps`, `n = max(1, round(d · fps))`, so a 10.4 s clip at 1 fps gives 10
frames and the feature axis always spans exactly [0, d]. `nearest_indices(T, L)` applies the same
rule to an already sampled sequence of T items.

Opening a video reads its packet index once (packet times and keyframe flags, no decoding): it serves
keyframe seeking (`frames_at_seeking`) and the truncation check. A file whose packets end before the
container's stated duration (a partial download with the index at the front) gets a
`TruncatedVideoWarning` naming it with both spans, and its decodable span becomes its duration, so the
sampled times never run past the last real picture; `strict=True` makes it a `TruncatedVideoError`.
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


class TruncatedVideoError(VideoDecodingError):
    """A video whose decodable frames end well before the duration its container states (strict mode)."""


class TruncatedVideoWarning(RuntimeWarning):
    """A video whose decodable frames end well before the duration its container states; the shorter span is used."""


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
    stated_duration: float | None = None  # what the container claims (None: it states nothing)
    decodable_span: tuple[float, float] | None = None  # (first, end) seconds of the packets, from the video start

    @property
    def truncated(self) -> bool:
        """True when the packets end before the stated duration (the duration was cut to the decodable span)."""
        return self.stated_duration is not None and self.duration < self.stated_duration

    def truncation_message(self) -> str:
        """What is wrong with a truncated video: its name, the stated duration and the decodable span."""
        first, end = self.decodable_span if self.decodable_span else (0.0, self.duration)
        return (
            f"{self.name} is truncated: the container states {self.stated_duration:.2f} s but its frames end at "
            f"{end:.2f} s (decodable span {first:.2f}-{end:.2f} s)"
        )


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


@dataclass
class PacketIndex:
    """Packet times of the video stream: keyframe pts `(K,)` in stream time-base units, first/end seconds (absolute)."""

    keyframes: np.ndarray
    first: float | None
    end: float | None


def truncation_tolerance(fps: float | None) -> float:
    """Seconds the packets may end before the stated duration without counting as truncated (2 frames, >= 0.5 s)."""
    return max(0.5, 2.0 / fps) if fps else 0.5


class VideoReader:
    """An open video: `info` from the container, `frames_at(times)` streams the sampled RGB frames.

    `check_span` (default True) reads the packet index at opening and cuts `info.duration` to the decodable
    span of a truncated file, with a `TruncatedVideoWarning` (a `TruncatedVideoError` when `strict`; nothing when
    `warn` is False, for callers that report `info.truncation_message()` themselves).
    """

    def __init__(
        self, source: VideoSource, *, threads: bool = True, check_span: bool = True, strict: bool = False, warn: bool = True
    ):
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
        self._source, self._threads = source, threads
        if threads:
            self._stream.thread_type = "AUTO"  # frame + slice threads: decoding dominates at 1 fps sampling
        self.num_corrupt_packets = 0
        self.frames_decoded = 0  # pictures the decoder produced (what seeking saves)
        self._index: PacketIndex | None = None
        self.info = self._probe()
        if check_span:
            self._check_span(strict, warn)

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

    @property
    def index(self) -> PacketIndex:
        """The packet index (read once: packet times and keyframe flags, no decoding, then rewind)."""
        if self._index is None:
            import av

            keys, first, end = [], None, None
            try:
                for packet in self._container.demux(self._stream):
                    if packet.pts is None:
                        continue
                    t0 = float(packet.pts * packet.time_base)
                    t1 = t0 + float((packet.duration or 0) * packet.time_base)
                    first = t0 if first is None else min(first, t0)
                    end = t1 if end is None else max(end, t1)
                    if packet.is_keyframe:
                        keys.append(int(packet.pts))
            except av.FFmpegError:
                pass  # a damaged tail ends the index where the readable packets end
            self._rewind()
            self._index = PacketIndex(np.unique(np.asarray(keys, dtype=np.int64)), first, end)
        return self._index

    def _rewind(self) -> None:
        """Back to the first packet; a container that refuses to seek (no packets at all) is reopened."""
        import av

        try:
            self._container.seek(0)
        except av.FFmpegError:
            self._container.close()
            if hasattr(self._source, "seek"):
                self._source.seek(0)
            self._container = av.open(self._source, mode="r")
            self._stream = self._container.streams.video[0]
            if self._threads:
                self._stream.thread_type = "AUTO"

    def _duration_from_packets(self, start: float) -> tuple[float, float]:
        """Container without a duration: the span of the packet times."""
        index = self.index
        if index.first is None or index.end <= index.first:
            self.close()
            raise VideoDecodingError(f"{self.name} has a video stream with zero frames (zero-length video).")
        return index.end - index.first, index.first

    def _check_span(self, strict: bool, warn: bool) -> None:
        """Cut the duration of a truncated file to its decodable span (warning, or error when strict)."""
        info, index = self.info, self.index
        if index.end is None:
            return  # no packets: decoding reports it
        first, end = index.first - info.start_time, index.end - info.start_time  # seconds from the video start
        info.decodable_span = (max(first, 0.0), end)
        info.stated_duration = info.duration
        if end >= info.duration - truncation_tolerance(info.average_fps):
            return
        info.duration = end
        message = info.truncation_message()
        if strict:
            self.close()
            raise TruncatedVideoError(f"{message}; re-download or re-encode it, or drop strict mode to use the decodable span.")
        if warn:
            warnings.warn(f"{message}; using {end:.2f} s as its duration.", TruncatedVideoWarning, stacklevel=3)

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
        corrupt = 0
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
                corrupt += 1  # one warning at the end, not one per packet
                self.num_corrupt_packets += 1
                continue
            self.frames_decoded += len(frames)
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
        if corrupt:
            warnings.warn(
                f"{self.name}: {corrupt} corrupt packet(s) skipped; nearby samples reuse the last good frame.",
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


def keyframe_pts(reader: VideoReader) -> np.ndarray:
    """Presentation timestamps (stream time-base units) of the video's keyframes, from the packet index."""
    return reader.index.keyframes


MIN_SEEK_SKIP = 1.0  # seconds of video a seek must skip to pay for itself (measured: 0.8x at 1 fps, 2 s GOPs)


def frames_at_seeking(
    reader: VideoReader, times: np.ndarray, *, max_short_side: int | None = None, min_skip: float = MIN_SEEK_SKIP
) -> list[np.ndarray]:
    """The frames `reader.frames_at(times)` gives, as a list, decoding from keyframes (see `iter_frames_at_seeking`)."""
    return list(iter_frames_at_seeking(reader, times, max_short_side=max_short_side, min_skip=min_skip))


def iter_frames_at_seeking(
    reader: VideoReader, times: np.ndarray, *, max_short_side: int | None = None, min_skip: float = MIN_SEEK_SKIP
) -> Iterator[np.ndarray]:
    """Yield the frames `reader.frames_at(times)` gives, decoding only from the keyframe before each far target.

    Targets are grouped so that a new group starts where the keyframe before a target lies more than
    `min_skip` seconds after the previous target: decoding from there gives the same pictures (H.264/HEVC
    GOPs restart at keyframes) while the frames in between are never decoded. A seek flushes the decoder's
    frame threads, so skipping less than about a second costs more than decoding through (1 fps on 2 s GOPs
    decodes straight through). Sparse sampling of a long video (L = 100 frames of a 10-minute clip) decodes
    about L · GOP / 2 frames instead of all of them. Falls back to plain sequential decoding when the
    container cannot be indexed or seeked.
    """
    import av

    times = np.asarray(times, dtype=np.float64)
    stream = reader._stream
    base = float(stream.time_base) if stream.time_base else 0.0
    try:
        keys = keyframe_pts(reader) if base > 0 else np.zeros(0, np.int64)
    except av.FFmpegError:
        keys = np.zeros(0, np.int64)
        reader._container.seek(0)
    if keys.size < 2 or times.size < 2:
        yield from reader.frames_at(times, max_short_side=max_short_side)
        return
    key_times = keys * base - reader.info.start_time  # (K,) seconds from the video start
    slot = np.searchsorted(key_times, times, side="right") - 1  # (L,) keyframe at or before each target
    starts = [0] + [i for i in range(1, times.size) if slot[i] >= 0 and key_times[slot[i]] > times[i - 1] + min_skip]
    for first, end in zip(starts, starts[1:] + [times.size]):
        if slot[first] >= 0 and (first > 0 or key_times[slot[first]] > min_skip):
            reader._container.seek(int(keys[slot[first]]), stream=stream, backward=True, any_frame=False)
        yield from reader.frames_at(times[first:end], max_short_side=max_short_side)


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
    seek: bool = False,
    strict: bool = False,
) -> DecodedVideo:
    """Decode a video (path, bytes or file object) into frames sampled at `fps` or at `num_frames` bin centres.

    `seek` decodes from the keyframe before each far target (`frames_at_seeking`: the same frames). Raises
    FileNotFoundError for a missing path and VideoDecodingError (a ValueError) for a file that is not a video,
    has no video stream or has no frames; corrupt packets are skipped with a warning; a truncated file is
    sampled over its decodable span with a warning (`strict`: a TruncatedVideoError).
    """
    with VideoReader(source, strict=strict) as reader:
        times = sample_times(reader.info.duration, fps=fps, num_frames=num_frames)
        if seek:
            frames = frames_at_seeking(reader, times, max_short_side=max_short_side)
        else:
            frames = list(reader.frames_at(times, max_short_side=max_short_side))
        return DecodedVideo(np.stack(frames), times, reader.info.duration, reader.num_corrupt_packets)


__all__ = [
    "DecodedVideo",
    "PacketIndex",
    "TruncatedVideoError",
    "TruncatedVideoWarning",
    "VideoDecodingError",
    "VideoInfo",
    "VideoReader",
    "decode_video",
    "frames_at_seeking",
    "iter_frames_at_seeking",
    "keyframe_pts",
    "nearest_indices",
    "probe_video",
    "sample_times",
]
