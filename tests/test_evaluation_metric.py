"""The `evaluate` metric script shipped in cacmi_hf.evaluation (loaded offline from a local path)."""

from pathlib import Path

import pytest

evaluate = pytest.importorskip("evaluate")

from cacmi_hf.evaluation import evaluate_dense_captions, metric_path  # noqa: E402

PREDICTIONS = [
    [{"timestamp": [0.0, 10.0], "sentence": "a man runs"}, {"timestamp": [40.0, 50.0], "sentence": "a cat"}],
    [],
]
REFERENCES = [  # two reference files; the second has no annotation of video 2
    [{"timestamps": [[0.0, 10.0], [20.0, 30.0]], "sentences": ["a man runs", "a dog sits"]},
     {"timestamps": [[0.0, 9.0]], "sentences": ["a man is running"]}],
    [{"timestamps": [[0.0, 5.0]], "sentences": ["the end"]}, {"timestamps": [], "sentences": []}],
]


def test_metric_folder_layout():
    folder = Path(metric_path())
    assert (folder / f"{folder.name}.py").is_file()  # evaluate.load needs <dir>/<dir>.py


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(metric_path())


def test_compute_equals_the_python_api(metric):
    out = metric.compute(predictions=PREDICTIONS, references=REFERENCES, video_ids=["v1", "v2"], no_java=True)
    expected = evaluate_dense_captions(
        {"v1": PREDICTIONS[0], "v2": PREDICTIONS[1]},
        [{"v1": {"timestamps": [[0.0, 10.0], [20.0, 30.0]], "sentences": ["a man runs", "a dog sits"]},
          "v2": {"timestamps": [[0.0, 5.0]], "sentences": ["the end"]}},
         {"v1": {"timestamps": [[0.0, 9.0]], "sentences": ["a man is running"]}}],
        no_java=True,
    )
    for name, value in expected["average"].items():
        assert out[name] == value, name
    assert out["videos"] == {"references": 2, "evaluated": 2, "missing": 0, "unknown": 0}
    assert out["comparable_to_papers"] is False and out["SODA_c"] is None


def test_add_batch_then_compute_with_paragraphs(metric):
    metric.add_batch(predictions=PREDICTIONS, references=REFERENCES)
    out = metric.compute(paragraph_references=[["A man runs. A cat sits."], [""]], no_java=True, tious=[0.5])
    assert set(out["per_tiou"]) == {"0.5"}
    assert out["para_Bleu_1"] > 0 and out["para_METEOR"] is None


def test_inconsistent_reference_counts_raise(metric):
    with pytest.raises(ValueError, match="one reference entry per reference file"):
        metric.compute(predictions=PREDICTIONS, references=[REFERENCES[0], REFERENCES[1][:1]], no_java=True)


def test_protocol_passes_through(metric):
    out = metric.compute(predictions=PREDICTIONS, references=REFERENCES, no_java=True, protocol="2018_cider")
    assert out["protocol"] == "2018_cider" and "SPICE" in out["not_computed"]
    # v2 has no prediction: 2018 scores it 0 and halves the mean, 2018_cider adds no pairs for it.
    default = metric.compute(predictions=PREDICTIONS, references=REFERENCES, no_java=True)
    assert default["protocol"] == "2018"
    assert out["CIDEr"] == pytest.approx(2 * default["CIDEr"], rel=1e-12)
    with pytest.raises(ValueError, match="'2019'"):
        metric.compute(predictions=PREDICTIONS, references=REFERENCES, no_java=True, protocol="2019")
