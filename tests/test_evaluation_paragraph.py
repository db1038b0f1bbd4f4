"""Paragraph-level scores (cacmi_hf.evaluation.paragraph)."""

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from cacmi_hf.evaluation.io import load_paragraphs, load_predictions
from cacmi_hf.evaluation.paragraph import normalize_paragraph, paragraph_scores, predicted_paragraph

PREDS = load_predictions({
    "v1": [{"timestamp": [5, 6], "sentence": "He stops."}, {"timestamp": [0, 1], "sentence": "A man runs!"}],
    "v3": [{"timestamp": [0, 1], "sentence": "a cat"}],
})
REFS = load_paragraphs([
    {"v1": "A man runs. He stops running.", "v2": "The dog sits. It barks."},
    {"v1": "A man is running, then he stops."},
])


def test_normalisation_keeps_ascii_letters_only():
    assert normalize_paragraph("A man's 2nd run -- café!") == "a man s nd run caf"
    assert normalize_paragraph("  ") == ""


def test_predicted_paragraph_keeps_the_prediction_order_or_sorts_by_start():
    assert predicted_paragraph(PREDS["v1"]) == "he stops a man runs"  # as para_evaluate.py: file order
    assert predicted_paragraph(PREDS["v1"], sort_by_start=True) == "a man runs he stops"
    assert predicted_paragraph(None) == ""
    assert predicted_paragraph(load_predictions({"v": []})["v"]) == ""


def test_scores_equal_pycocoevalcap_on_the_normalised_corpus():
    out = paragraph_scores(PREDS, REFS, meteor=None)
    gts = {0: ["a man runs he stops running", "a man is running then he stops"], 1: ["the dog sits it barks"]}
    res = {0: ["he stops a man runs"], 1: [""]}  # v1 in file order; v2 has no prediction: empty paragraph
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    assert [out[f"Bleu_{n}"] for n in range(1, 5)] == pytest.approx(bleu, rel=1e-12)
    assert out["ROUGE_L"] == pytest.approx(Rouge().compute_score(gts, res)[0], rel=1e-12)
    assert out["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0], rel=1e-10)
    assert out["METEOR"] is None
    assert out["videos"] == 2 and out["predicted_videos"] == 1  # v3 has no paragraph reference


def test_no_videos():
    out = paragraph_scores(PREDS, load_paragraphs({}), meteor=None)
    assert out["videos"] == 0 and out["Bleu_4"] == 0.0


def test_sort_by_start_scores_the_start_ordered_paragraph():
    gts = {0: ["a man runs he stops running", "a man is running then he stops"], 1: ["the dog sits it barks"]}
    res = {0: ["a man runs he stops"], 1: [""]}
    out = paragraph_scores(PREDS, REFS, meteor=None, sort_by_start=True)
    assert out["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0], rel=1e-10)
    assert out["CIDEr"] != paragraph_scores(PREDS, REFS, meteor=None)["CIDEr"]
