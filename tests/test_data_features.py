"""Lazily attached features: .npy folders, .pt dicts, datasets columns; nearest-index resizing; never zeros."""

import json
import logging

import numpy as np
import pytest
import torch
from datasets import Dataset

from cacmi_hf.data.annotations import load_dense_captions
from cacmi_hf.data.features import attach_features, id_variants, open_feature_store, resize_features


def ramp(frames, dim=4, offset=0.0):
    """(T, D) float32 whose row t is filled with t + offset: the row index survives resizing."""
    return np.repeat(np.arange(frames, dtype=np.float32)[:, None] + offset, dim, axis=1)


@pytest.fixture
def annotations(tmp_path):
    data = {
        "v_long": {"duration": 20.0, "timestamps": [[0, 5]], "sentences": ["a"]},
        "v_short": {"duration": 3.0, "timestamps": [[0, 1]], "sentences": ["b"]},
        "v_bare": {"duration": 8.0, "timestamps": [[1, 2]], "sentences": ["c"]},
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def npy_dir(tmp_path):
    folder = tmp_path / "features"
    folder.mkdir()
    np.save(folder / "v_long.npy", ramp(10))
    np.save(folder / "v_short.npy", ramp(3, offset=100))
    np.save(folder / "bare.npy", ramp(4, offset=200))  # stored without the "v_" prefix
    return folder


def test_resize_is_nearest_index_at_bin_centres():
    assert resize_features(ramp(10), 4)[:, 0].tolist() == [1, 3, 6, 8]
    assert resize_features(ramp(3), 6)[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    x = ramp(5)
    assert resize_features(x, 5) is x and resize_features(x, None) is x
    assert id_variants("v_abc") == ("v_abc", "abc") and id_variants("abc") == ("abc", "v_abc")


def test_npy_folder_lazy_and_resized(annotations, npy_dir):
    dataset = load_dense_captions(annotations, features=npy_dir, num_frames=4, split="train")
    rows = {row["video_id"]: row for row in dataset}
    assert rows["v_long"]["video_features"][:, 0].tolist() == [1, 3, 6, 8]
    assert rows["v_short"]["video_features"][:, 0].tolist() == [100, 101, 101, 102]  # centres 0.375, 1.125, 1.875, 2.625
    assert rows["v_bare"]["video_features"][:, 0].tolist() == [200, 201, 202, 203]
    assert rows["v_long"]["video_features"].dtype == np.float32
    # lazy: the file is read when the row is read, so a rewrite shows up and a deletion is an error
    np.save(npy_dir / "v_long.npy", ramp(10, offset=50))
    assert dataset[0]["video_features"][0, 0] == 51
    (npy_dir / "v_long.npy").unlink()
    with pytest.raises(ValueError, match="'v_long'.*v_long.npy"):
        dataset[0]


def test_missing_features_error_or_skip(annotations, npy_dir, caplog):
    (npy_dir / "v_short.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 videos.*v_short: missing \(.*v_short.npy\).*missing='skip'"):
        load_dense_captions(annotations, features=npy_dir)
    with caplog.at_level(logging.WARNING, logger="cacmi_hf.data.features"):
        dataset = load_dense_captions(annotations, features=npy_dir, missing="skip", split="train")
    assert dataset["video_id"] == ["v_long", "v_bare"]
    assert "Dropped 1 of 3 videos" in caplog.text and "v_short" in caplog.text


def test_unreadable_wrong_shape_and_nonfinite_features(annotations, npy_dir):
    (npy_dir / "v_short.npy").write_bytes(b"not an npy file at all")
    with pytest.raises(FileNotFoundError, match="v_short: unreadable"):
        load_dense_captions(annotations, features=npy_dir)
    truncated = (npy_dir / "v_long.npy").read_bytes()[:-8]
    np.save(npy_dir / "v_short.npy", ramp(3))
    (npy_dir / "v_long.npy").write_bytes(truncated)
    with pytest.raises(FileNotFoundError, match="v_long: unreadable"):
        load_dense_captions(annotations, features=npy_dir)
    np.save(npy_dir / "v_long.npy", ramp(10))
    with pytest.raises(FileNotFoundError, match="D=4, expected 768"):
        load_dense_captions(annotations, features=npy_dir, feature_dim=768)
    np.save(npy_dir / "v_long.npy", np.zeros((0, 4), np.float32))
    with pytest.raises(FileNotFoundError, match=r"v_long: bad shape \(0, 4\)"):
        load_dense_captions(annotations, features=npy_dir)
    bad = ramp(10)
    bad[3, 1] = np.nan
    np.save(npy_dir / "v_long.npy", bad)
    dataset = load_dense_captions(annotations, features=npy_dir, split="train")
    with pytest.raises(ValueError, match="'v_long'.*NaN"):
        dataset[0]


def test_torch_dict_and_dataset_column_sources(annotations, tmp_path):
    tensors = {"v_long": torch.from_numpy(ramp(10)), "short": torch.from_numpy(ramp(3, offset=100)), "v_bare": torch.from_numpy(ramp(4, offset=200))}
    for suffix in (".pt", ".pth"):
        torch.save(tensors, tmp_path / f"feats{suffix}")
        dataset = load_dense_captions(annotations, features=tmp_path / f"feats{suffix}", num_frames=2, split="train")
        assert [row["video_features"][:, 0].tolist() for row in dataset] == [[2, 7], [100, 102], [201, 203]]
    column = Dataset.from_dict({"video_id": ["v_bare", "v_long", "v_short"], "video_features": [ramp(4, offset=200), ramp(10), ramp(3, offset=100)]})
    dataset = load_dense_captions(annotations, features=column, split="train")
    assert [row["video_features"].shape for row in dataset] == [(10, 4), (3, 4), (4, 4)]
    assert dataset[2]["video_features"][:, 0].tolist() == [200, 201, 202, 203]


def test_pickled_objects_are_refused(tmp_path):
    from fractions import Fraction

    torch.save({"v_a": Fraction(1, 3)}, tmp_path / "evil.pt")  # any non-tensor global needs full unpickling
    with pytest.raises(ValueError, match=r"weights_only=True"):
        open_feature_store(tmp_path / "evil.pt")
    torch.save([torch.zeros(2, 2)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="expected a dict"):
        open_feature_store(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="Features not found"):
        open_feature_store(tmp_path / "nope")


def test_mapping_source_and_batch_access(annotations):
    features = {"v_long": ramp(6), "v_short": ramp(6, offset=10), "v_bare": ramp(6, offset=20)}
    dataset = attach_features(load_dense_captions(annotations, split="train"), features, num_frames=3)
    batch = dataset[0:3]
    assert [f[:, 0].tolist() for f in batch["video_features"]] == [[1, 3, 5], [11, 13, 15], [21, 23, 25]]
    with pytest.raises(ValueError, match="missing must be"):
        attach_features(dataset, features, missing="zeros")
