"""Exports: SRT / WebVTT parse back to the same cues, the ActivityNet JSON, the timeline PNG's size."""

import json
import re
import struct

import numpy as np
import pytest

from cacmi_hf.exports import plot_timeline, timeline_size, to_densevid_json, to_srt, to_webvtt

EVENTS = [
    {"timestamp": [12.0, 31.5], "caption": "a man <plays> the drums & sings", "score": 0.87},
    {"timestamp": [3.25, 3661.9994], "caption": "two\nlines", "score": 0.5},
    {"timestamp": [3.25, 7.0], "caption": "", "score": 0.1},
]

SRT_TIME = r"(\d{2,}):(\d{2}):(\d{2}),(\d{3})"
VTT_TIME = r"(\d{2,}):(\d{2}):(\d{2})\.(\d{3})"


def _seconds(h, m, s, ms):
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def parse_srt(text):
    """A strict SubRip reader: numbered blocks separated by one blank line."""
    cues = []
    for number, block in enumerate(text.strip("\n").split("\n\n"), start=1):
        lines = block.split("\n")
        assert lines[0] == str(number)
        match = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1])
        assert match, lines[1]
        g = match.groups()
        assert len(lines) == 3 and lines[2]  # one non-empty text line per cue
        cues.append((_seconds(*g[:4]), _seconds(*g[4:]), lines[2]))
    return cues


def parse_webvtt(text):
    """A strict WebVTT reader: the signature line, then id / timing / payload cues."""
    assert text.startswith("WEBVTT\n\n")
    cues = []
    for block in text[len("WEBVTT\n\n"):].strip("\n").split("\n\n"):
        ident, timing, payload = block.split("\n")
        assert "-->" not in ident and "-->" not in payload
        match = re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", timing)
        assert match, timing
        g = match.groups()
        assert "<" not in payload and ">" not in payload  # markup characters are escaped
        text_ = payload.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        cues.append((ident, _seconds(*g[:4]), _seconds(*g[4:]), text_))
    return cues


def test_srt_round_trip_hand_worked(tmp_path):
    text = to_srt(EVENTS, tmp_path / "v.srt")
    assert (tmp_path / "v.srt").read_text(encoding="utf-8") == text
    assert text.splitlines()[:3] == ["1", "00:00:03,250 --> 00:00:07,000", "..."]
    assert "01:01:01,999" in text  # 3661.9994 s rounds to the millisecond, hours do not wrap
    cues = parse_srt(text)
    # time order: (start, end); newlines folded; empty caption gets a placeholder so the cue survives
    assert cues == [
        (3.25, 7.0, "..."),
        (3.25, 3661.999, "two lines"),
        (12.0, 31.5, "a man <plays> the drums & sings"),
    ]


def test_webvtt_round_trip_and_escaping():
    text = to_webvtt(EVENTS, with_scores=True)
    cues = parse_webvtt(text)
    assert [c[0] for c in cues] == ["event-1", "event-2", "event-3"]
    assert cues[2] == ("event-3", 12.0, 31.5, "a man <plays> the drums & sings (0.87)")
    assert "&lt;plays&gt;" in text and "&amp;" in text


def test_subtitle_times_clamped_and_ordered():
    # a start below zero clamps to 0 and an end before its start becomes a zero-length cue
    cues = parse_srt(to_srt([{"timestamp": [-0.4, 2.0], "caption": "a"}, {"timestamp": [5.0, 4.0], "caption": "b"}]))
    assert cues == [(0.0, 2.0, "a"), (5.0, 5.0, "b")]
    assert to_srt([]) == "" and to_webvtt([]) == "WEBVTT\n"  # no events: an empty but valid file


def test_pipeline_dict_output_is_accepted():
    assert to_srt({"events": EVENTS, "pseudo_events": []}) == to_srt(EVENTS)


@pytest.mark.parametrize(
    "bad",
    [[{"caption": "no timestamp"}], [{"timestamp": [1.0], "caption": "x"}], [{"timestamp": [0, float("nan")]}], "text"],
)
def test_bad_events_are_clear_errors(bad):
    with pytest.raises(ValueError, match="timestamp|list of"):
        to_srt(bad)


def test_failed_video_cannot_be_exported():
    with pytest.raises(ValueError, match="failed video.*not a video"):
        to_webvtt({"error": "x.mp4 is not a video"})


def test_densevid_json_format(tmp_path):
    results = {"v_abc": EVENTS, "v_empty": [], "v_failed": {"error": "unreadable"}}
    sub = to_densevid_json(results, tmp_path / "sub.json", with_scores=True)
    assert json.loads((tmp_path / "sub.json").read_text()) == sub
    assert sub["version"] == "VERSION 1.0" and sub["external_data"]["used"] is True
    assert set(sub["results"]) == {"v_abc", "v_empty"}  # a failed video is left out (scores as no predictions)
    first = sub["results"]["v_abc"][0]
    assert first == {"sentence": "", "timestamp": [3.25, 7.0], "score": 0.1}  # empty stays empty for the evaluator
    assert [e["timestamp"][0] for e in sub["results"]["v_abc"]] == [3.25, 3.25, 12.0]
    assert "score" not in to_densevid_json({"v": EVENTS})["results"]["v"][0]
    with pytest.raises(ValueError, match="video_id -> events"):
        to_densevid_json(EVENTS)


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_timeline_png_has_expected_size(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (12, 24, 32, 3), dtype=np.uint8)
    gt = {"timestamps": [[0.0, 10.0], [20.0, 40.0]], "sentences": ["first", "second"]}
    out = plot_timeline(EVENTS, 3700.0, tmp_path / "t.png", ground_truth=gt, thumbnails=frames, title="$v1", width=900)
    assert out == tmp_path / "t.png"
    assert _png_size(out) == timeline_size(3, 2, thumbnails=True, width=900)
    # hand-worked layout: title 36 + axis 46 + 2 × (pad 30 + rows × 26) + thumbnails 112
    assert timeline_size(3, 2, thumbnails=True, width=900) == (900, 36 + 46 + 30 + 78 + 30 + 52 + 112)
    plain = plot_timeline([], 10.0, tmp_path / "empty.png")
    assert _png_size(plain) == (1280, 36 + 46 + 30 + 26)


def test_timeline_returns_figure_and_rejects_bad_duration():
    fig = plot_timeline(EVENTS, 100.0)
    assert len(fig.axes) == 1 and fig.axes[0].get_xlim() == (0.0, 100.0)
    with pytest.raises(ValueError, match="positive duration"):
        plot_timeline(EVENTS, 0.0)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        plot_timeline(EVENTS, 10.0, thumbnails=np.zeros((3, 8, 8), np.uint8))
