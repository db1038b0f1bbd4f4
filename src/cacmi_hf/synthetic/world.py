"""A seeded, deterministic dense-captioning world: small mp4 videos of coloured shapes doing things.

Each video is a noisy background on which 2–6 events happen one after another, separated by gaps,
sometimes overlapping the previous one (as in ActivityNet Captions). An event shows one object, a
shape in a colour, doing one action over time: moving left/right/up/down, growing, shrinking or
blinking. Colour and shape are visible in any single frame; the action only across frames. Each
event is captioned from the template ``"a {colour} {shape} {action}"``, e.g. "a red circle moves
to the left".

Frame rate: 1 fps by default, the rate at which the paper samples CLIP features, so a synthetic
video of 30–120 s gives 30–120 frames, about one feature per frame at the usual L=100. 2 fps
would double the encode, decode and feature-extraction cost of every step of the pipeline without
adding anything a 100-frame model input could use; it stays available through ``fps``.

Time convention: frame ``i`` covers ``[i/fps, (i+1)/fps)``; an event ``[a/fps, b/fps]`` is shown
in frames ``a .. b-1`` exactly, so every boundary falls on a frame time and a prediction on the
frame grid can reach tIoU 1. Events last at least ``min_event_frames`` (8) frames, so a
one-frame error costs little tIoU on most events (the tIoU 0.9 term of the localisation scores).

Settings (``WORLD_SETTINGS``): "present" is the default world above. "ambiguous" draws some caption words as
others (``WorldConfig.render_as``): yellow, cyan and purple objects are drawn in red, green and blue, squares as
circles and crosses as triangles, while the captions keep the true words. From the pixels alone a caption's
colour and shape are then each one of two; only a sentence that names them (retrieved text, in the retrieval
study ``benchmarks/bench_mechanism.py``) carries the missing detail. The event layout, captions and random
draws are those of the present world video for video; only the drawing differs.

Layout on disk (``generate_world``)::

    out_dir/world.json             generator settings, seed and video ids per split
    out_dir/{split}.json           {video_id: {"duration", "timestamps", "sentences"}}
    out_dir/para_{split}.json      {video_id: "sentence. sentence."}  (every split but train)
    out_dir/videos/{video_id}.mp4  H.264 (or MPEG-4 part 2), yuv420p
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

# Six hues 60 degrees apart, saturated, so single frames (and yuv420p chroma) keep them apart.
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (225, 40, 40),
    "yellow": (230, 215, 45),
    "green": (45, 200, 60),
    "cyan": (45, 205, 220),
    "blue": (50, 80, 235),
    "purple": (175, 60, 215),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
# action name -> the words that end its caption
ACTION_PHRASES: dict[str, str] = {
    "left": "moves to the left",
    "right": "moves to the right",
    "up": "moves up",
    "down": "moves down",
    "grow": "grows",
    "shrink": "shrinks",
    "blink": "blinks",
}
ACTIONS: tuple[str, ...] = tuple(ACTION_PHRASES)
DEFAULT_NUM_VIDEOS: dict[str, int] = {"train": 400, "val": 50, "test": 50}
# (caption word, word drawn instead): the "ambiguous" setting's look-alikes, one hue / outline for two names
AMBIGUOUS_RENDERING: tuple[tuple[str, str], ...] = (
    ("yellow", "red"),
    ("cyan", "green"),
    ("purple", "blue"),
    ("square", "circle"),
    ("cross", "triangle"),
)
MANIFEST_NAME = "world.json"
MANIFEST_FORMAT = 1

CAPTION_RE = re.compile(
    r"^a (?P<colour>{}) (?P<shape>{}) (?P<action>{})$".format(
        "|".join(COLOUR_RGB), "|".join(SHAPES), "|".join(ACTION_PHRASES.values())
    )
)


@dataclass(frozen=True)
class WorldConfig:
    """Every knob of the generator; the defaults are the embedded world of the demo."""

    fps: int = 1
    size: int = 32  # frame height = width in pixels, even (yuv420p)
    min_duration_s: float = 30.0
    max_duration_s: float = 120.0
    min_events: int = 2
    max_events: int = 6
    min_event_frames: int = 8
    min_gap_frames: int = 2  # between consecutive non-overlapping events
    overlap_prob: float = 0.25  # chance that an event starts inside the previous one
    object_scale: float = 0.16  # object radius as a fraction of the frame size
    noise_std: float = 6.0  # static per-video background texture (Gaussian std)
    temporal_noise: int = 3  # fresh every frame, grey (same on R, G, B): uniform integers in [-n, n]
    blink_half_period_frames: int = 2  # frames on, then as many off
    colours: tuple[str, ...] = tuple(COLOUR_RGB)
    shapes: tuple[str, ...] = SHAPES
    actions: tuple[str, ...] = ACTIONS
    codec: str = "libx264"
    crf: int = 18
    # (caption word, drawn word) pairs: objects named by the first are drawn as the second (same kind: colour or
    # shape); the caption keeps the first. Empty: every object is drawn as named.
    render_as: tuple[tuple[str, str], ...] = ()

    def drawn(self, word: str) -> str:
        """The colour or shape name actually drawn for a caption word (itself unless ``render_as`` maps it)."""
        return dict(self.render_as).get(word, word)

    def __post_init__(self):
        """Reject settings that cannot produce a valid world, naming the field and the fix."""
        if self.size % 2 or not 16 <= self.size <= 512:
            raise ValueError(f"WorldConfig.size={self.size}: use an even frame size in [16, 512] (yuv420p needs even sizes)")
        if self.fps < 1:
            raise ValueError(f"WorldConfig.fps={self.fps}: use an integer frame rate >= 1")
        if not 0 < self.min_duration_s <= self.max_duration_s:
            raise ValueError(
                f"WorldConfig durations {self.min_duration_s}..{self.max_duration_s} s: need 0 < min <= max"
            )
        if not 1 <= self.min_events <= self.max_events:
            raise ValueError(f"WorldConfig events {self.min_events}..{self.max_events}: need 1 <= min <= max")
        if self.min_event_frames < 2 or self.min_gap_frames < 1:
            raise ValueError(
                f"WorldConfig min_event_frames={self.min_event_frames}, min_gap_frames={self.min_gap_frames}: "
                "need >= 2 and >= 1"
            )
        shortest = int(round(self.min_duration_s * self.fps))
        if _events_that_fit(shortest, self) < self.min_events:
            raise ValueError(
                f"WorldConfig: {self.min_events} events of >= {self.min_event_frames} frames (1.5x that on "
                f"average) with gaps of >= {self.min_gap_frames} do not fit the shortest video ({shortest} "
                "frames); raise min_duration_s or lower min_events / min_event_frames"
            )
        for name, chosen, known in (
            ("colours", self.colours, COLOUR_RGB),
            ("shapes", self.shapes, SHAPES),
            ("actions", self.actions, ACTIONS),
        ):
            unknown = [c for c in chosen if c not in known]
            if not chosen or unknown:
                raise ValueError(f"WorldConfig.{name}={chosen!r}: unknown {unknown}; choose from {list(known)}")
        for pair in self.render_as:
            kinds = [k for k, known in (("colour", COLOUR_RGB), ("shape", SHAPES)) if len(pair) == 2 and set(pair) <= set(known)]
            if not kinds or pair[0] == pair[1]:
                raise ValueError(
                    f"WorldConfig.render_as pair {pair!r}: give (caption word, drawn word), two different colours "
                    f"({list(COLOUR_RGB)}) or two different shapes ({list(SHAPES)})"
                )
        words = [pair[0] for pair in self.render_as]
        if len(set(words)) != len(words) or set(words) & {pair[1] for pair in self.render_as}:
            raise ValueError(
                f"WorldConfig.render_as={self.render_as!r}: each caption word may be mapped once, and never to a word "
                "that is itself mapped; list each look-alike pair once"
            )


@dataclass(frozen=True)
class SyntheticEvent:
    """One captioned event: frames ``start_frame .. end_frame-1`` show the object acting."""

    start_frame: int
    end_frame: int  # exclusive
    colour: str
    shape: str
    action: str

    @property
    def caption(self) -> str:
        """The template sentence, e.g. "a red circle moves to the left"."""
        return make_caption(self.colour, self.shape, self.action)

    def timestamp(self, fps: int) -> list[float]:
        """``[start, end]`` in seconds, on frame times."""
        return [self.start_frame / fps, self.end_frame / fps]


@dataclass
class SyntheticVideo:
    """One generated video: frames, its events in start order, and which event shows in which frame."""

    video_id: str
    split: str
    fps: int
    frames: np.ndarray  # (T, H, W, 3) uint8
    events: list[SyntheticEvent]
    visible: np.ndarray  # (T, E) bool: event e's object is drawn in frame t (blinks switch it off)

    @property
    def num_frames(self) -> int:
        """Number of frames T."""
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds, ``T / fps``."""
        return self.num_frames / self.fps

    def annotation(self) -> dict:
        """The video's entry in the standard annotation JSON."""
        return {
            "duration": self.duration,
            "timestamps": [e.timestamp(self.fps) for e in self.events],
            "sentences": [e.caption for e in self.events],
        }

    def paragraph(self) -> str:
        """All captions in time order joined into one paragraph reference."""
        return ". ".join(e.caption for e in self.events) + "."


@dataclass(frozen=True)
class WorldPaths:
    """Where ``generate_world`` put everything."""

    root: Path
    videos_dir: Path
    annotations: dict[str, Path]  # split -> {split}.json
    paragraphs: dict[str, Path]  # split -> para_{split}.json (no entry for train)
    manifest: Path
    video_ids: dict[str, list[str]] = field(repr=False)

    def video_path(self, video_id: str) -> Path:
        """Path of one video's mp4."""
        return self.videos_dir / f"{video_id}.mp4"


def make_caption(colour: str, shape: str, action: str) -> str:
    """Caption template: ``make_caption("red", "circle", "left") == "a red circle moves to the left"``."""
    if action not in ACTION_PHRASES:
        raise ValueError(f"unknown action {action!r}; choose from {list(ACTION_PHRASES)}")
    return f"a {colour} {shape} {ACTION_PHRASES[action]}"


def parse_caption(caption: str) -> tuple[str, str, str]:
    """Inverse of ``make_caption``: ``(colour, shape, action)``; ValueError for other sentences."""
    match = CAPTION_RE.match(caption.strip().rstrip(".").lower())
    if match is None:
        raise ValueError(f"caption {caption!r} does not follow the template 'a <colour> <shape> <action>'")
    phrase_to_action = {v: k for k, v in ACTION_PHRASES.items()}
    return match["colour"], match["shape"], phrase_to_action[match["action"]]


def video_id_for(split: str, index: int) -> str:
    """Stable id of the ``index``-th video of ``split``, e.g. ``syn_train_00007``."""
    return f"syn_{split}_{index:05d}"


def _video_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Independent stream per (seed, split, index): a video does not depend on how many others exist."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def _events_that_fit(num_frames: int, config: WorldConfig) -> int:
    """Most events a video of ``num_frames`` gets: room for 1.5x the minimum length each, plus gaps."""
    # The 1.5 keeps most events well above the minimum, where a one-frame error still scores tIoU > 0.9.
    per_event = 1.5 * config.min_event_frames + config.min_gap_frames
    return int((num_frames + config.min_gap_frames) // per_event)


def sample_events(rng: np.random.Generator, num_frames: int, config: WorldConfig) -> list[SyntheticEvent]:
    """Lay 2–6 events on the frame grid: gaps between them, some starting inside their predecessor."""
    fits = _events_that_fit(num_frames, config)
    count = int(rng.integers(config.min_events, max(config.min_events, min(config.max_events, fits)) + 1))
    # Budget beyond the minimum lengths, split among the events and the count+1 gaps; events get
    # three times the weight so that they cover most of the video, as ActivityNet events do.
    free = num_frames - count * config.min_event_frames - (count - 1) * config.min_gap_frames
    shares = rng.dirichlet([3.0] * count + [1.0] * (count + 1))
    extra = np.floor(shares * free).astype(int)
    lengths = config.min_event_frames + extra[:count]
    gaps = extra[count:].copy()
    gaps[1:-1] += config.min_gap_frames

    starts, ends = [], []
    cursor = int(gaps[0])
    for length, gap in zip(lengths, gaps[1:]):
        starts.append(cursor)
        ends.append(cursor + int(length))
        cursor += int(length) + int(gap)

    # Overlap: pull an event's start back into the previous event (at most half of it, never into
    # an event that already overlaps, so at most two objects are ever on screen together).
    overlaps = [False] * count
    for i in range(1, count):
        if not overlaps[i - 1] and rng.random() < config.overlap_prob:
            previous = ends[i - 1] - starts[i - 1]
            into = int(rng.integers(1, previous // 2 + 1))
            starts[i] = ends[i - 1] - into
            overlaps[i] = True

    events = []
    for start, end in zip(starts, ends):
        events.append(
            SyntheticEvent(
                start_frame=start,
                end_frame=end,
                colour=str(rng.choice(config.colours)),
                shape=str(rng.choice(config.shapes)),
                action=str(rng.choice(config.actions)),
            )
        )
    return events


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Pixels inside ``shape`` given offsets from its centre (y grows downwards); all (n, H, W)."""
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * radius
    if shape == "triangle":  # apex up, base at +0.7 r, half-base r
        return (dy >= -radius) & (dy <= 0.7 * radius) & (np.abs(dx) <= (dy + radius) / 1.7)
    if shape == "cross":
        arm = radius / 3.0
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= radius))
    raise ValueError(f"unknown shape {shape!r}; choose from {list(SHAPES)}")


def _trajectory(
    rng: np.random.Generator, event: SyntheticEvent, config: WorldConfig, avoid: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame centre x, y, radius and visibility of an event's object, each (n,)."""
    size = config.size
    n = event.end_frame - event.start_frame
    progress = np.arange(n) / max(n - 1, 1)  # 0 at the first frame, 1 at the last
    base = config.object_scale * size * rng.uniform(0.85, 1.15)
    radius = np.full(n, base)
    if event.action == "grow":
        radius = base * (0.5 + 1.1 * progress)
    elif event.action == "shrink":
        radius = base * (1.6 - 1.1 * progress)
    margin = float(radius.max()) + 1.0
    # Fixed coordinates; an overlapping event goes to the other half of the frame from its partner.
    centre = rng.uniform(margin, size - margin, size=2)
    if avoid is not None:
        centre = np.where(avoid < size / 2, np.maximum(centre, size / 2), np.minimum(centre, size / 2))
        centre = np.clip(centre, margin, size - margin)
    x = np.full(n, centre[0])
    y = np.full(n, centre[1])
    travel_from = margin + rng.uniform(0.0, 0.12) * size
    travel_to = size - margin - rng.uniform(0.0, 0.12) * size
    path = travel_from + (travel_to - travel_from) * progress
    if event.action == "right":
        x = path
    elif event.action == "left":
        x = path[::-1].copy()
    elif event.action == "down":
        y = path
    elif event.action == "up":
        y = path[::-1].copy()
    visible = np.ones(n, dtype=bool)
    if event.action == "blink":
        visible = (np.arange(n) // config.blink_half_period_frames) % 2 == 0
        visible[-1] = True  # the last frame shows the object, so the event's end stays visible
    return x, y, radius, visible


def render_video(
    rng: np.random.Generator, num_frames: int, events: list[SyntheticEvent], config: WorldConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the background and every event; returns frames (T, H, W, 3) uint8 and visibility (T, E) bool."""
    size = config.size
    level = rng.uniform(35.0, 95.0)
    tint = rng.uniform(-8.0, 8.0, size=3)
    texture = rng.standard_normal((size, size, 3)) * config.noise_std
    # int16 throughout: integer noise and clipping are several times faster than float on frames.
    frames = np.empty((num_frames, size, size, 3), dtype=np.int16)
    frames[:] = np.rint(level + tint + texture).astype(np.int16)  # (T, H, W, 3)
    visible_all = np.zeros((num_frames, len(events)), dtype=bool)
    grid = np.arange(size, dtype=np.float32) + 0.5  # pixel centres
    previous_centre = None
    previous_end = -1
    for index, event in enumerate(events):
        overlapping = event.start_frame < previous_end
        x, y, radius, visible = _trajectory(rng, event, config, previous_centre if overlapping else None)
        previous_centre, previous_end = np.array([x.mean(), y.mean()]), event.end_frame
        dx = grid[None, None, :] - x[:, None, None].astype(np.float32)  # (n, 1, W)
        dy = grid[None, :, None] - y[:, None, None].astype(np.float32)  # (n, H, 1)
        r = radius[:, None, None].astype(np.float32)  # (n, 1, 1)
        mask = _shape_mask(config.drawn(event.shape), dx, dy, r) & visible[:, None, None]  # (n, H, W)
        colour = np.rint(np.asarray(COLOUR_RGB[config.drawn(event.colour)]) * rng.uniform(0.85, 1.0)).astype(np.int16)
        # Flat pixel indices: several times faster than boolean-mask assignment into a 4-D slice.
        pixels = frames.reshape(-1, 3)  # (T*H*W, 3) view
        pixels[np.flatnonzero(mask) + event.start_frame * size * size] = colour
        visible_all[event.start_frame : event.end_frame, index] = visible
    if config.temporal_noise > 0:
        n = config.temporal_noise
        frames += rng.integers(-n, n + 1, (num_frames, size, size, 1), dtype=np.int16)  # (T, H, W, 1)
    return np.clip(frames, 0, 255).astype(np.uint8), visible_all


# The worlds of the retrieval study: the default one, and one whose pixels leave colour and shape ambiguous.
WORLD_SETTINGS: dict[str, WorldConfig] = {
    "present": WorldConfig(),
    "ambiguous": WorldConfig(render_as=AMBIGUOUS_RENDERING),
}


def generate_video(split: str, index: int, *, seed: int = 0, config: WorldConfig | None = None) -> SyntheticVideo:
    """The ``index``-th video of ``split`` in the world of ``seed``, in memory (no file I/O)."""
    config = config or WorldConfig()
    rng = _video_rng(seed, split, index)
    low = int(round(config.min_duration_s * config.fps))
    high = int(round(config.max_duration_s * config.fps))
    num_frames = int(rng.integers(low, high + 1))
    events = sample_events(rng, num_frames, config)
    frames, visible = render_video(rng, num_frames, events, config)
    return SyntheticVideo(video_id_for(split, index), split, config.fps, frames, events, visible)


def iter_videos(
    num_videos: Mapping[str, int] | None = None, *, seed: int = 0, config: WorldConfig | None = None
) -> Iterator[SyntheticVideo]:
    """Yield every video of the world split by split, in id order, without touching the disk."""
    config = config or WorldConfig()
    for split, count in _check_num_videos(num_videos).items():
        for index in range(count):
            yield generate_video(split, index, seed=seed, config=config)


def _check_num_videos(num_videos: Mapping[str, int] | None) -> dict[str, int]:
    """Validate the split -> count mapping."""
    num_videos = dict(DEFAULT_NUM_VIDEOS if num_videos is None else num_videos)
    for split, count in num_videos.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", split) or int(count) != count or count < 0:
            raise ValueError(
                f"num_videos[{split!r}]={count!r}: use split names of letters/digits/_ and counts >= 0"
            )
    return {split: int(count) for split, count in num_videos.items()}


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: int, *, codec: str = "libx264", crf: int = 18) -> None:
    """Encode frames (T, H, W, 3) uint8 RGB as an mp4 (yuv420p, one frame per ``1/fps`` s)."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_mp4({path}): frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"write_mp4({path}): frame size {frames.shape[1:3]} must be even for yuv420p")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        # One thread: identical bytes on every machine, and tiny frames gain nothing from more.
        stream.thread_count = 1
        if codec == "libx264":
            stream.codec_context.options = {"crf": str(crf), "preset": "ultrafast"}
        else:
            stream.codec_context.bit_rate = 8 * 1024 * frames.shape[1] * frames.shape[2] * fps
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def read_mp4(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame of a video file as (T, H, W, 3) uint8 RGB."""
    import av

    if not Path(path).is_file():
        raise FileNotFoundError(f"video file {path} does not exist; generate the world with generate_world()")
    # One reformatter for the whole file: frame.to_ndarray(format=...) builds a fresh swscale
    # context per frame, which makes decoding these tiny frames several times slower.
    from av.video.reformatter import VideoReformatter

    reformatter = VideoReformatter()
    with av.open(str(path)) as container:
        frames = [reformatter.reformat(f, format="rgb24").to_ndarray() for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"video file {path} has no decodable frames; regenerate it")
    return np.stack(frames)


def _available_codec(preferred: str) -> str:
    """``preferred`` if PyAV's ffmpeg has an encoder for it, else MPEG-4 part 2, which it always has."""
    import av

    try:
        av.codec.Codec(preferred, "w")
        return preferred
    except Exception:  # PyAV raises different types across versions for a missing encoder
        return "mpeg4"


def _manifest(num_videos: dict[str, int], seed: int, config: WorldConfig) -> dict:
    """The settings that fully determine a world's files."""
    return {
        "format": MANIFEST_FORMAT,
        "seed": seed,
        "num_videos": num_videos,
        "config": dataclasses.asdict(config),
        "video_ids": {s: [video_id_for(s, i) for i in range(n)] for s, n in num_videos.items()},
    }


def _paths(root: Path, manifest: dict) -> WorldPaths:
    """WorldPaths for a world whose manifest is known."""
    splits = list(manifest["num_videos"])
    return WorldPaths(
        root=root,
        videos_dir=root / "videos",
        annotations={s: root / f"{s}.json" for s in splits},
        paragraphs={s: root / f"para_{s}.json" for s in splits if s != "train"},
        manifest=root / MANIFEST_NAME,
        video_ids={s: list(ids) for s, ids in manifest["video_ids"].items()},
    )


def load_world(root: str | os.PathLike) -> WorldPaths:
    """WorldPaths of a world written earlier by ``generate_world``."""
    root = Path(root)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: {root} is not a synthetic world; run generate_world({str(root)!r})")
    return _paths(root, json.loads(manifest_path.read_text()))


def _is_complete(paths: WorldPaths) -> bool:
    """All annotation, paragraph and video files of a world exist."""
    files = [*paths.annotations.values(), *paths.paragraphs.values()]
    files += [paths.video_path(v) for ids in paths.video_ids.values() for v in ids]
    return all(f.is_file() for f in files)


def generate_world(
    out_dir: str | os.PathLike,
    num_videos: Mapping[str, int] | None = None,
    seed: int = 0,
    config: WorldConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    **config_overrides,
) -> WorldPaths:
    """Write the world's mp4s and annotation files under ``out_dir``; reuse them if already there.

    ``num_videos`` maps split -> count (default 400/50/50 train/val/test); ``config_overrides``
    replace fields of ``config`` (e.g. ``fps=2, size=64``). A world already in ``out_dir`` with
    the same seed, counts and settings is returned as is unless ``overwrite``; one with other
    settings is replaced.
    """
    from ..progress import progress as progress_bar

    config = dataclasses.replace(config or WorldConfig(), **config_overrides)
    config = dataclasses.replace(config, codec=_available_codec(config.codec))
    counts = _check_num_videos(num_videos)
    root = Path(out_dir)
    manifest = json.loads(json.dumps(_manifest(counts, seed, config)))  # tuples -> lists, as read back
    paths = _paths(root, manifest)
    if not overwrite and paths.manifest.is_file():
        if json.loads(paths.manifest.read_text()) == manifest and _is_complete(paths):
            return paths

    if root.exists() and not paths.manifest.is_file() and any(root.iterdir()):
        raise ValueError(
            f"generate_world: {root} exists, is not empty and holds no {MANIFEST_NAME}; "
            "choose a new or empty folder (an existing world there would be replaced)"
        )
    # Write to a temporary folder and swap it in, so an interrupted run never looks complete.
    staging = root.parent / f".{root.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "videos").mkdir(parents=True)
    annotations: dict[str, dict] = {split: {} for split in counts}
    paragraphs: dict[str, dict] = {split: {} for split in counts if split != "train"}
    bar = progress_bar(total=sum(counts.values()), desc="synthetic world", unit="video", enabled=progress)
    for video in iter_videos(counts, seed=seed, config=config):
        write_mp4(staging / "videos" / f"{video.video_id}.mp4", video.frames, config.fps, codec=config.codec, crf=config.crf)
        annotations[video.split][video.video_id] = video.annotation()
        if video.split in paragraphs:
            paragraphs[video.split][video.video_id] = video.paragraph()
        bar.update()
    bar.close()
    for split, data in annotations.items():
        (staging / f"{split}.json").write_text(json.dumps(data))
    for split, data in paragraphs.items():
        (staging / f"para_{split}.json").write_text(json.dumps(data))
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
    if root.exists():
        shutil.rmtree(root)
    staging.rename(root)
    return paths
