"""The synthetic world: determinism, annotation schema, event layout, mp4 round trip, captions, splits."""

import json

import numpy as np
import pytest

from cacmi_hf.synthetic import world as W
from cacmi_hf.synthetic import (
    CAPTION_RE,
    SyntheticEvent,
    WorldConfig,
    generate_video,
    generate_world,
    iter_videos,
    load_world,
    make_caption,
    parse_caption,
    read_mp4,
    write_mp4,
)

COUNTS = {"train": 4, "val": 2, "test": 2}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small world on disk (8 videos)."""
    return generate_world(tmp_path_factory.mktemp("w") / "world", COUNTS, seed=3, progress=False)


def _all_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(world, tmp_path):
    again = generate_world(tmp_path / "again", COUNTS, seed=3, progress=False)
    first, second = _all_files(world.root), _all_files(again.root)
    assert sorted(first) == sorted(second)
    assert len([name for name in first if name.endswith(".mp4")]) == 8
    assert first == second
    other = generate_world(tmp_path / "other", COUNTS, seed=4, progress=False)
    assert json.loads(other.annotations["train"].read_text()) != json.loads(world.annotations["train"].read_text())


def test_video_does_not_depend_on_how_many_others_exist():
    alone = generate_video("train", 3, seed=3)
    among = list(iter_videos({"train": 5}, seed=3))[3]
    assert alone.video_id == among.video_id == "syn_train_00003"
    assert np.array_equal(alone.frames, among.frames)
    assert alone.events == among.events


def test_annotation_schema_and_event_layout(world):
    config = WorldConfig()
    for split, path in world.annotations.items():
        data = json.loads(path.read_text())
        assert sorted(data) == [f"syn_{split}_{i:05d}" for i in range(COUNTS[split])]
        for video_id, entry in data.items():
            assert set(entry) == {"duration", "timestamps", "sentences"}
            assert isinstance(entry["duration"], float)
            assert config.min_duration_s <= entry["duration"] <= config.max_duration_s
            assert len(entry["timestamps"]) == len(entry["sentences"])
            assert config.min_events <= len(entry["sentences"]) <= config.max_events
            starts = [s for s, _ in entry["timestamps"]]
            assert starts == sorted(starts), video_id
            for start, end in entry["timestamps"]:
                assert 0.0 <= start < end <= entry["duration"]
                # on frame times (1 fps: whole seconds) and at least min_event_frames long
                assert start * config.fps == int(start * config.fps) and end * config.fps == int(end * config.fps)
                assert (end - start) * config.fps >= config.min_event_frames


def test_events_have_gaps_some_overlap_and_never_three_at_once():
    config = WorldConfig(size=16)  # small frames: only the layout matters here
    counts, overlapping = set(), 0
    for video in iter_videos({"train": 120}, seed=0, config=config):
        counts.add(len(video.events))
        inside = np.zeros((video.num_frames, len(video.events)), dtype=bool)
        for index, event in enumerate(video.events):
            inside[event.start_frame : event.end_frame, index] = True
        assert inside.sum(1).max() <= 2
        for before, after in zip(video.events, video.events[1:]):
            if after.start_frame < before.end_frame:
                overlapping += 1
                assert after.end_frame > before.end_frame  # no event nested inside another
            else:
                assert after.start_frame - before.end_frame >= config.min_gap_frames
    assert counts == {2, 3, 4, 5, 6}
    assert overlapping > 10


def test_mp4_decodes_to_expected_frames_close_to_arrays(world):
    config = WorldConfig()
    for split, ids in world.video_ids.items():
        for index, video_id in enumerate(ids):
            generated = generate_video(split, index, seed=3)
            decoded = read_mp4(world.video_path(video_id))
            assert decoded.shape == (generated.num_frames, config.size, config.size, 3)
            assert decoded.dtype == np.uint8
            error = np.abs(decoded.astype(np.int16) - generated.frames.astype(np.int16))
            assert error.mean() < 8.0
            # object colours survive yuv420p: compare inside the drawn objects' bodies
            on_object = generated.frames.max(-1) > 150
            assert np.median(error[on_object]) < 25


def test_write_mp4_round_trip_hand_made_frames(tmp_path):
    frames = np.full((5, 16, 16, 3), 60, dtype=np.uint8)
    frames[2, 4:12, 4:12] = (220, 40, 40)
    write_mp4(tmp_path / "clip.mp4", frames, fps=2)
    decoded = read_mp4(tmp_path / "clip.mp4")
    assert decoded.shape == frames.shape
    assert np.abs(decoded[2, 6:10, 6:10].astype(int) - [220, 40, 40]).max() < 25
    assert np.abs(decoded[0].astype(int) - 60).max() < 8


@pytest.mark.parametrize(
    "frames, message",
    [(np.zeros((3, 15, 16, 3), np.uint8), "even"), (np.zeros((3, 16, 16), np.uint8), "uint8"), (np.zeros((3, 16, 16, 3)), "uint8")],
)
def test_write_mp4_rejects_bad_frames(tmp_path, frames, message):
    with pytest.raises(ValueError, match=message):
        write_mp4(tmp_path / "bad.mp4", frames, fps=1)


def test_read_mp4_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.mp4"):
        read_mp4(tmp_path / "nothing.mp4")


def test_captions_follow_template(world):
    assert make_caption("red", "circle", "left") == "a red circle moves to the left"
    assert make_caption("blue", "cross", "grow") == "a blue cross grows"
    assert parse_caption("a yellow triangle moves up") == ("yellow", "triangle", "up")
    with pytest.raises(ValueError, match="template"):
        parse_caption("a man plays the guitar")
    for path in world.annotations.values():
        for entry in json.loads(path.read_text()).values():
            for sentence in entry["sentences"]:
                assert CAPTION_RE.match(sentence), sentence
                assert make_caption(*parse_caption(sentence)) == sentence


def test_paragraphs_join_captions_in_time_order(world):
    assert set(world.paragraphs) == {"val", "test"}
    for split, path in world.paragraphs.items():
        annotations = json.loads(world.annotations[split].read_text())
        paragraphs = json.loads(path.read_text())
        assert sorted(paragraphs) == sorted(annotations)
        for video_id, entry in annotations.items():
            assert paragraphs[video_id] == ". ".join(entry["sentences"]) + "."


def test_splits_are_disjoint(world):
    ids = {split: set(json.loads(path.read_text())) for split, path in world.annotations.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    frames = {split: generate_video(split, 0, seed=3).frames for split in COUNTS}
    assert not np.array_equal(frames["train"][:30], frames["val"][:30])


def _render_single(action, num_frames=12):
    config = WorldConfig(noise_std=0.0, temporal_noise=0)
    event = SyntheticEvent(2, 2 + num_frames - 2, "red", "square", action)
    frames, visible = W.render_video(np.random.default_rng(0), num_frames, [event], config)
    red = (frames[..., 0] > 150) & (frames[..., 1] < 100)  # (T, H, W) object pixels
    return red, visible[:, 0]


def test_actions_show_only_across_frames():
    red, visible = _render_single("left")
    assert not red[:2].any() and red[2:].any(axis=(1, 2)).all() and visible[2:].all()
    xs = [np.nonzero(r)[1].mean() for r in red[2:]]
    assert all(b < a for a, b in zip(xs, xs[1:]))  # moves to the left every frame
    red, _ = _render_single("down")
    ys = [np.nonzero(r)[0].mean() for r in red[2:]]
    assert all(b > a for a, b in zip(ys, ys[1:]))
    red, _ = _render_single("grow")
    areas = red[2:].sum((1, 2))
    assert areas[-1] > 4 * areas[0] and all(b >= a for a, b in zip(areas, areas[1:]))
    red, visible = _render_single("blink")
    shown = red[2:].any(axis=(1, 2))
    assert shown.tolist() == [True, True, False, False, True, True, False, False, True, True]
    assert shown.tolist() == visible[2:].tolist()


def test_generate_world_reuses_matching_world_and_replaces_other(world, tmp_path):
    mtimes = {p: p.stat().st_mtime_ns for p in world.root.rglob("*.mp4")}
    again = generate_world(world.root, COUNTS, seed=3, progress=False)
    assert again == load_world(world.root)
    assert {p: p.stat().st_mtime_ns for p in world.root.rglob("*.mp4")} == mtimes
    small = generate_world(tmp_path / "w", {"train": 1}, seed=0, progress=False)
    replaced = generate_world(small.root, {"train": 1, "val": 1}, seed=0, progress=False)
    assert replaced.paragraphs["val"].is_file() and load_world(small.root).video_ids["val"] == ["syn_val_00000"]


def test_generate_world_refuses_foreign_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        generate_world(tmp_path, {"train": 1}, progress=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_load_world_without_manifest_names_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="world.json"):
        load_world(tmp_path)


@pytest.mark.parametrize(
    "overrides, field",
    [({"size": 33}, "size"), ({"min_events": 5}, "do not fit"), ({"colours": ("red", "pink")}, "pink"), ({"fps": 0}, "fps")],
)
def test_config_validation_names_the_problem(overrides, field):
    with pytest.raises(ValueError, match=field):
        WorldConfig(**overrides)


def test_two_fps_world_keeps_boundaries_on_frame_times():
    config = WorldConfig(fps=2, size=16)
    video = generate_video("val", 1, config=config)
    assert video.num_frames == 2 * video.duration
    for start, end in video.annotation()["timestamps"]:
        assert start * 2 == int(start * 2) and end * 2 == int(end * 2)
        assert (end - start) * 2 >= config.min_event_frames


def test_ambiguous_world_draws_look_alikes_and_keeps_captions_and_layout():
    """Same events and captions as the present world; an aliased object is drawn exactly as its look-alike."""
    ambiguous = W.WORLD_SETTINGS["ambiguous"]
    assert ambiguous.drawn("yellow") == "red" and ambiguous.drawn("cross") == "triangle" and ambiguous.drawn("red") == "red"
    aliased = dict(W.AMBIGUOUS_RENDERING)
    checked = 0
    for index in range(12):
        plain = generate_video("train", index, seed=5)
        alike = generate_video("train", index, seed=5, config=ambiguous)
        assert alike.events == plain.events  # layout, captions and draws unchanged
        assert np.array_equal(alike.visible, plain.visible)
        shown = [W.dataclasses.replace(e, colour=aliased.get(e.colour, e.colour), shape=aliased.get(e.shape, e.shape))
                 for e in plain.events]
        if shown == plain.events:
            assert np.array_equal(alike.frames, plain.frames)  # nothing aliased: identical pixels
            continue
        # the same random draws, with the look-alike words drawn: the pixels of a world that names what it draws
        rng = W._video_rng(5, "train", index)
        config = WorldConfig()
        assert rng.integers(round(config.min_duration_s), round(config.max_duration_s) + 1) == plain.num_frames
        assert W.sample_events(rng, plain.num_frames, config) == plain.events
        frames, _ = W.render_video(rng, plain.num_frames, shown, config)
        assert np.array_equal(alike.frames, frames)
        checked += 1
    assert checked >= 5


@pytest.mark.parametrize(
    "render_as, message",
    [((("yellow", "circle"),), "two different colours"), ((("red", "red"),), "two different"),
     ((("yellow", "red"), ("red", "blue")), "mapped once"), ((("yellow", "red"), ("yellow", "blue")), "mapped once")],
)
def test_render_as_validation_names_the_pair(render_as, message):
    with pytest.raises(ValueError, match=message):
        WorldConfig(render_as=render_as)


def test_ambiguous_world_round_trips_through_its_manifest(tmp_path):
    config = W.WORLD_SETTINGS["ambiguous"]
    first = generate_world(tmp_path / "w", {"train": 1}, seed=1, config=config, progress=False)
    stamp = first.video_path("syn_train_00000").stat().st_mtime_ns
    again = generate_world(tmp_path / "w", {"train": 1}, seed=1, config=config, progress=False)  # reused, not rewritten
    assert again.video_path("syn_train_00000").stat().st_mtime_ns == stamp
    saved = json.loads(first.manifest.read_text())["config"]["render_as"]
    assert [tuple(p) for p in saved] == list(W.AMBIGUOUS_RENDERING)
