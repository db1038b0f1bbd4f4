"""Reading and validating predictions and references (cacmi_hf.evaluation.io)."""

import json

import numpy as np
import pytest

from cacmi_hf.evaluation.io import (
    load_paragraphs,
    load_predictions,
    load_references,
    parse_segment,
    reference_video_ids,
)

EVENTS = [{"timestamp": [1.0, 4.0], "sentence": "a man runs"}, {"timestamp": [0, 2], "sentence": "he stops"}]


def _same(a, b):
    assert a.keys() == b.keys()
    for vid in a:
        np.testing.assert_array_equal(a[vid].segments, b[vid].segments)
        assert a[vid].sentences == b[vid].sentences


def test_all_prediction_forms_agree(tmp_path):
    expected = load_predictions({"results": {"v1": EVENTS}})
    path = tmp_path / "pred.json"
    path.write_text(json.dumps({"version": "VERSION 1.0", "results": {"v1": EVENTS}}))
    _same(load_predictions(path), expected)
    _same(load_predictions(str(path)), expected)
    _same(load_predictions({"v1": EVENTS}), expected)
    _same(load_predictions([{"video_id": "v1", "events": EVENTS}]), expected)
    rows = [{"video_id": "v1", "timestamp": e["timestamp"], "caption": e["sentence"], "score": 0.5} for e in EVENTS]
    _same(load_predictions(rows), expected)
    assert expected["v1"].segments.dtype == np.float64
    np.testing.assert_array_equal(expected["v1"].segments, [[1.0, 4.0], [0.0, 2.0]])


def test_pipeline_caption_key_and_numpy_values():
    out = load_predictions({"v1": [{"timestamp": np.array([1.5, 2.5], dtype=np.float32), "caption": "x", "score": 1}]})
    assert out["v1"].sentences == ["x"]
    np.testing.assert_array_equal(out["v1"].segments, [[1.5, 2.5]])


def test_max_per_video_keeps_the_first_events_in_given_order():
    out = load_predictions({"v1": EVENTS * 3}, max_per_video=3)
    assert out["v1"].sentences == ["a man runs", "he stops", "a man runs"]
    with pytest.raises(ValueError, match="positive"):
        load_predictions({"v1": EVENTS}, max_per_video=0)


def test_sorted_by_start_is_stable():
    video = load_predictions({"v": [{"timestamp": [3, 4], "sentence": "c"}, {"timestamp": [1, 9], "sentence": "a"},
                                    {"timestamp": [1, 2], "sentence": "b"}]})["v"]
    ordered = video.sorted_by_start()
    assert ordered.sentences == ["a", "b", "c"]
    np.testing.assert_array_equal(ordered.segments, [[1, 9], [1, 2], [3, 4]])


def test_malformed_json_names_file_and_position(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"results": {"v1": [}')
    with pytest.raises(ValueError, match=r"broken\.json.*not valid JSON.*line 1"):
        load_predictions(path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_predictions(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "stamp, message",
    [
        ([5.0, 1.0], "start > end"),
        ([float("nan"), 1.0], "not finite"),
        ([0.0, float("inf")], "not finite"),
        (["0", 1.0], "non-number"),
        ([True, 1.0], "non-number"),
        ([1.0], "pair"),
        (3.0, "pair"),
    ],
)
def test_bad_timestamps_raise_naming_video_and_value(stamp, message):
    with pytest.raises(ValueError, match=message) as info:
        load_predictions({"v_bad": [{"timestamp": stamp, "sentence": "x"}]})
    assert "v_bad" in str(info.value) and "event 0" in str(info.value)


def test_negative_times_and_empty_or_unicode_sentences_are_kept():
    out = load_predictions({"v": [{"timestamp": [-2.0, 3.0], "sentence": ""},
                                  {"timestamp": [0, 1], "sentence": "café – naïve"}]})
    np.testing.assert_array_equal(out["v"].segments[0], [-2.0, 3.0])
    assert out["v"].sentences == ["", "café – naïve"]
    assert parse_segment((-1, -0.5), "x") == (-1.0, -0.5)


@pytest.mark.parametrize(
    "event, message",
    [
        ({"sentence": "x"}, "missing 'timestamp'"),
        ({"timestamp": [0, 1]}, "missing 'sentence'"),
        ({"timestamp": [0, 1], "sentence": None}, "must be a string"),
        ("not a dict", "expected a dict"),
    ],
)
def test_bad_events_raise(event, message):
    with pytest.raises(ValueError, match=message):
        load_predictions({"v": [event]})


def test_bad_prediction_containers_raise():
    with pytest.raises(ValueError, match="list of events"):
        load_predictions({"v": "a man runs"})
    with pytest.raises(ValueError, match="'results' must map"):
        load_predictions({"results": [1, 2]})
    with pytest.raises(ValueError, match="video_id"):
        load_predictions([{"timestamp": [0, 1], "sentence": "x"}])
    with pytest.raises(ValueError, match="twice"):
        load_predictions([{"video_id": "v", "events": []}, {"video_id": "v", "events": []}])
    with pytest.raises(ValueError, match="expected"):
        load_predictions(42)


def test_references_from_paths_and_dicts(tmp_path):
    ref = {"v1": {"duration": 9.0, "timestamps": [[0, 3], [2, 9]], "sentences": ["a", "b"]}}
    path = tmp_path / "val_1.json"
    path.write_text(json.dumps(ref))
    sets = load_references([path, ref])
    assert [s.name for s in sets] == ["val_1.json", "references[1]"]
    np.testing.assert_array_equal(sets[0].videos["v1"].segments, [[0, 3], [2, 9]])
    assert load_references(str(path))[0].videos["v1"].sentences == ["a", "b"]
    assert [s.name for s in load_references([path, path])] == ["val_1.json", "val_1.json#2"]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"timestamps": [[0, 1]]}, "missing the 'sentences' field"),
        ({"sentences": ["a"]}, "missing the 'timestamps' field"),
        ({"timestamps": [[0, 1]], "sentences": ["a", "b"]}, "1 timestamps but 2 sentences"),
        ({"timestamps": [], "sentences": []}, "no events"),
        ({"timestamps": [[2, 1]], "sentences": ["a"]}, "start > end"),
        ({"timestamps": "0-1", "sentences": ["a"]}, "must be a list"),
    ],
)
def test_bad_reference_entries_name_file_and_video(tmp_path, entry, message):
    path = tmp_path / "val_x.json"
    path.write_text(json.dumps({"v_ok": {"timestamps": [[0, 1]], "sentences": ["a"]}, "v_bad": entry}))
    with pytest.raises(ValueError, match=message) as info:
        load_references(path)
    assert "val_x.json" in str(info.value) and "v_bad" in str(info.value)


def test_reference_containers_raise():
    with pytest.raises(ValueError, match="No reference"):
        load_references([])
    with pytest.raises(ValueError, match="no videos"):
        load_references({})
    with pytest.raises(ValueError, match="expected"):
        load_references([[1, 2]])


def test_reference_video_ids_union_in_first_seen_order():
    a = {"v2": {"timestamps": [[0, 1]], "sentences": ["a"]}, "v1": {"timestamps": [[0, 1]], "sentences": ["a"]}}
    b = {"v3": {"timestamps": [[0, 1]], "sentences": ["a"]}, "v1": {"timestamps": [[0, 1]], "sentences": ["a"]}}
    assert reference_video_ids(load_references([a, b])) == ["v2", "v1", "v3"]


def test_paragraph_references():
    sets = load_paragraphs([{"v1": "A man runs. He stops."}, {"v2": "x"}])
    assert sets[0].paragraphs == {"v1": "A man runs. He stops."} and sets[1].name == "paragraph_references[1]"
    with pytest.raises(ValueError, match="expected a string"):
        load_paragraphs({"v1": ["a", "b"]})
