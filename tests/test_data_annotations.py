"""Annotation loaders on the real ActivityNet Captions / YouCook2 files, YouCook2's original layout and hub layouts."""

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cacmi_hf.data.annotations import (
    infer_split_name,
    load_activitynet_captions,
    load_dense_captions,
    load_youcook2,
    training_sentences,
)


@pytest.fixture(scope="module")
def anet(shared_data):
    return load_activitynet_captions(shared_data / "activitynet")


@pytest.fixture(scope="module")
def yc2(shared_data):
    return load_youcook2(shared_data / "youcook2")


@pytest.fixture(scope="module")
def yc2_json(shared_data):
    return {
        split: json.loads((shared_data / "youcook2" / name).read_text())
        for split, name in (("train", "yc2_train.json"), ("validation", "yc2_val.json"))
    }


def _rows(dataset):
    return dataset.to_dict()


def test_activitynet_counts_and_text(anet, shared_data):
    assert list(anet) == ["train", "val_1", "val_2"]  # paragraph files in the folder are skipped
    counts = {name: (split.num_rows, sum(map(len, split["sentences"]))) for name, split in anet.items()}
    assert counts == {"train": (10009, 37421), "val_1": (4917, 17505), "val_2": (4885, 17031)}
    first = anet["train"][0]
    assert first["video_id"] == "v_QOlSCBRmfWY"
    # the file writes " The girl dances ..." with a leading space
    assert first["sentences"][1] == "The girl dances around the room while the camera captures her movements."
    for split in anet.values():
        assert all(s == s.strip() and s for sentences in split["sentences"] for s in sentences)


def test_activitynet_durations_and_times_exact(anet, shared_data):
    raw = json.loads((shared_data / "activitynet" / "val_1.json").read_text())
    split = anet["val_1"]
    assert split.features["duration"].dtype == "float64"
    assert split.features["timestamps"].feature.feature.dtype == "float64"
    table = _rows(split)
    assert table["video_id"] == list(raw)
    assert table["duration"] == [v["duration"] for v in raw.values()]  # bit-exact, no float32 on the way
    assert table["timestamps"] == [[[float(x) for x in pair] for pair in v["timestamps"]] for v in raw.values()]


def test_youcook2_counts(yc2):
    assert list(yc2) == ["train", "validation"]
    assert (yc2["train"].num_rows, sum(map(len, yc2["train"]["sentences"]))) == (1333, 10337)
    assert (yc2["validation"].num_rows, sum(map(len, yc2["validation"]["sentences"]))) == (457, 3492)


def test_youcook2_original_layout_equals_standard_files(yc2, yc2_json, tmp_path):
    subsets = {"train": "training", "validation": "validation"}
    database = {
        vid.removeprefix("v_"): {
            "duration": item["duration"],
            "subset": subsets[split],
            "recipe_type": "101",
            "video_url": f"https://www.youtube.com/watch?v={vid.removeprefix('v_')}",
            "annotations": [
                {"id": k, "segment": [int(s), int(e)], "sentence": sentence}
                for k, ((s, e), sentence) in enumerate(zip(item["timestamps"], item["sentences"]))
            ],
        }
        for split, data in yc2_json.items()
        for vid, item in data.items()
    }
    path = tmp_path / "youcookii_annotations_trainval.json"
    path.write_text(json.dumps({"database": database}))
    loaded = load_youcook2(path)
    assert list(loaded) == ["train", "validation"]
    for split in ("train", "validation"):
        assert _rows(loaded[split]) == _rows(yc2[split])  # same "v_" ids, times, stripped sentences


def test_hub_parquet_per_video_layout_round_trip(yc2, tmp_path):
    snapshot = tmp_path / "snapshot"
    (snapshot / "data").mkdir(parents=True)
    for split, name in (("train", "train-00000-of-00001.parquet"), ("validation", "validation-00000-of-00001.parquet")):
        yc2[split].to_parquet(str(snapshot / "data" / name))
    (snapshot / "README.md").write_text("---\nlicense: mit\n---\n")
    loaded = load_dense_captions(snapshot)
    assert list(loaded) == ["train", "validation"]
    for split in ("train", "validation"):
        assert _rows(loaded[split]) == _rows(yc2[split])
        assert loaded[split].features == yc2[split].features


def test_hub_parquet_per_segment_layout_regrouped(yc2, yc2_json, shared_data, tmp_path):
    # lmms-lab/YouCook2: one row per segment, float32 segments, no duration column, youtube ids without "v_"
    rows = {"id": [], "youtube_id": [], "segment": [], "sentence": [], "recipe_type": [], "video_url": [], "video_path": []}
    for vid, item in reversed(list(yc2_json["validation"].items())):  # video order differs from the JSON file
        for start_end, sentence in zip(item["timestamps"], item["sentences"]):
            start, end = start_end
            rows["id"].append(str(len(rows["id"])))
            rows["youtube_id"].append(vid.removeprefix("v_"))
            rows["segment"].append([start, end])
            rows["sentence"].append(sentence)
            rows["recipe_type"].append("101")
            rows["video_url"].append("")
            rows["video_path"].append(f"validation/101/{vid.removeprefix('v_')}.mp4")
    schema = pa.schema(
        [("id", pa.string()), ("youtube_id", pa.string()), ("segment", pa.list_(pa.float32(), 2)), ("sentence", pa.string()),
         ("recipe_type", pa.string()), ("video_url", pa.string()), ("video_path", pa.string())]
    )
    folder = tmp_path / "lmms"
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pydict(rows, schema=schema), folder / "data" / "val-00000-of-00001.parquet")
    with pytest.raises(ValueError, match="has no duration.*durations="):
        load_youcook2(folder)
    loaded = load_youcook2(folder, durations=shared_data / "youcook2" / "yc2_val.json")
    assert list(loaded) == ["validation"]
    expected = _rows(yc2["validation"])
    got = _rows(loaded["validation"])
    order = {vid: i for i, vid in enumerate(got["video_id"])}
    assert sorted(got["video_id"]) == sorted(expected["video_id"])
    for k, vid in enumerate(expected["video_id"]):
        i = order[vid]
        assert got["duration"][i] == expected["duration"][k]
        # regrouped segments are sorted by (start, end), ties in row order; YouCook2's order is chronological
        assert got["timestamps"][i] == expected["timestamps"][k]
        assert got["sentences"][i] == expected["sentences"][k]


def test_float32_segments_keep_their_decimal_value(tmp_path):
    table = pa.Table.from_pydict(
        {"video_id": ["a", "a"], "segment": [[17.37, 60.81], [0.83, 19.86]], "sentence": ["b", "a"], "duration": [82.73, 82.73]},
        schema=pa.schema([("video_id", pa.string()), ("segment", pa.list_(pa.float32(), 2)), ("sentence", pa.string()), ("duration", pa.float64())]),
    )
    pq.write_table(table, tmp_path / "train.parquet")
    row = load_dense_captions(tmp_path / "train.parquet")["train"][0]
    assert row["timestamps"] == [[0.83, 19.86], [17.37, 60.81]] and row["sentences"] == ["a", "b"]
    assert row["duration"] == 82.73


def test_generic_records_json_jsonl_and_split_dict(tmp_path):
    records = [
        {"video_id": "x", "duration": 10.5, "timestamps": [[0, 2.5], [3, 10]], "sentences": [" one", "two "]},
        {"video_id": "y", "duration": 4.0, "timestamps": [], "sentences": []},
    ]
    (tmp_path / "train.json").write_text(json.dumps(records))
    (tmp_path / "val.jsonl").write_text("\n".join(json.dumps({"vid": "z", "segment": s, "caption": c, "duration": 9.0})
                                                 for s, c in (([4, 5], "late"), ([1, 2], "early"))))
    loaded = load_dense_captions({"train": tmp_path / "train.json", "validation": tmp_path / "val.jsonl"})
    assert _rows(loaded["train"]) == {
        "video_id": ["x", "y"], "duration": [10.5, 4.0], "timestamps": [[[0.0, 2.5], [3.0, 10.0]], []], "sentences": [["one", "two"], []],
    }
    assert _rows(loaded["validation"])["sentences"] == [["early", "late"]]
    single = load_dense_captions(tmp_path / "train.json", split="train")
    assert single.num_rows == 2 and training_sentences(single) == [("x", "one"), ("x", "two")]


def test_bad_inputs_name_the_video_and_the_fix(tmp_path, shared_data):
    with pytest.raises(ValueError, match="paragraph reference file"):
        load_dense_captions(shared_data / "activitynet" / "para_val_1.json")
    cases = {
        "pairs.json": ({"v1": {"duration": 5.0, "timestamps": [[0, 1]], "sentences": []}}, "'v1'.*1 timestamps but 0 sentences"),
        "order.json": ({"v2": {"duration": 5.0, "timestamps": [[3, 1]], "sentences": ["a"]}}, "'v2'.*start 3.0 > end 1.0"),
        "nodur.json": ({"v3": {"timestamps": [[0, 1]], "sentences": ["a"]}}, "'v3'.*no duration"),
        "nan.json": ({"v4": {"duration": "soon", "timestamps": [], "sentences": []}}, "duration of video 'v4'.*number"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_text(json.dumps(data))
        with pytest.raises(ValueError, match=message):
            load_dense_captions(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dense_captions(tmp_path / "missing.json")
    (tmp_path / "dup").mkdir()
    for name in ("train_a.json", "train_b.json"):
        (tmp_path / "dup" / name).write_text(json.dumps({"v9": {"duration": 1.0, "timestamps": [], "sentences": []}}))
    with pytest.raises(ValueError, match="'v9' appears twice"):
        load_dense_captions(tmp_path / "dup")


def test_split_names_from_file_names():
    assert [infer_split_name(n) for n in ("train_modified.json", "val_1.json", "val_2.json", "yc2_train.json", "yc2_val.json")] == [
        "train", "val_1", "val_2", "train", "validation"
    ]
    assert infer_split_name("data/val-00000-of-00001.parquet") == "validation"
    assert infer_split_name("data/test-00000-of-00001.parquet") == "test"
    assert infer_split_name("train/0000.parquet") == "train"
    assert infer_split_name("youcookii_annotations_trainval.json") == "youcookii_annotations_trainval"


def test_hub_id_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="neither a local path nor a reachable hub dataset"):
        load_dense_captions("someone/NoSuchDenseCaptions")


def test_load_logs_counts(tmp_path, caplog):
    (tmp_path / "train.json").write_text(json.dumps({"a": {"duration": 1.0, "timestamps": [[0, 1]], "sentences": ["x"]}}))
    with caplog.at_level(logging.INFO, logger="cacmi_hf.data.annotations"):
        load_dense_captions(tmp_path / "train.json")
    assert "train: 1 videos, 1 sentences" in caplog.text
