"""Dense video captioning metric for the Hugging Face `evaluate` library.

Load it offline with ``evaluate.load(cacmi_hf.evaluation.metric_path())``; it wraps
``cacmi_hf.evaluation.evaluate_dense_captions`` (densevid 2018, 2021 or 2018_cider protocol, SODA_c,
paragraphs).
"""

import datasets
import evaluate

from cacmi_hf.evaluation import DEFAULT_TIOUS, evaluate_dense_captions, shared_meteor
from cacmi_hf.evaluation.protocols import DEFAULT_PROTOCOL, check_protocol

_DESCRIPTION = """
Dense video captioning scores as reported by the field: BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr-D
over tIoU-paired captions (densevid protocol 2018 by default, or 2021 / 2018_cider; averaged over tIoU
0.3/0.5/0.7/0.9),
localisation precision/recall/F1, SODA_c and optional paragraph scores. Needs Java for the PTB
tokenizer and METEOR (`apt-get install default-jre-headless`), or `no_java=True`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one list per video of events {"timestamp": [start, end], "sentence": str}.
    references: one list per video with one entry per reference file, {"timestamps": [[s, e], ...],
        "sentences": [...]}; an entry with empty lists means the video is not in that file.
        Every video must have the same number of entries (the number of reference files).
    video_ids: optional video id per example (default "video_<index>").
    paragraph_references: optional, one list per video with one paragraph (str, "" = absent) per
        paragraph reference file.
    protocol: "2018" (default), "2021" or "2018_cider", as in `evaluate_dense_captions`.
    paragraph_sort_by_start, tious, max_proposals_per_video, soda, no_java: as in `evaluate_dense_captions`.
    keep_meteor_running: reuse one METEOR process across calls (saves its start-up when
        evaluating every epoch); it stops when Python exits.
Returns:
    The averaged metrics (fractions) "Bleu_1".."Bleu_4", "METEOR", "ROUGE_L", "CIDEr",
    "Precision", "Recall", "F1", "SODA_c", "para_<metric>" when paragraphs are given, plus
    "per_tiou", "videos", "protocol", "not_computed" and "comparable_to_papers".
Example:
    >>> metric = evaluate.load(cacmi_hf.evaluation.metric_path())
    >>> metric.compute(predictions=[[{"timestamp": [0, 5], "sentence": "a man runs"}]],
    ...                references=[[{"timestamps": [[0, 5]], "sentences": ["a man runs"]}]])
"""

_CITATION = """
@inproceedings{krishna2017dense, title={Dense-Captioning Events in Videos}, author={Krishna, Ranjay and
 Hata, Kenji and Ren, Frederic and Fei-Fei, Li and Niebles, Juan Carlos}, booktitle={ICCV}, year={2017}}
@inproceedings{fujita2020soda, title={SODA: Story Oriented Dense Video Captioning Evaluation Framework},
 author={Fujita, Soichiro and Hirao, Tsutomu and Kamigaito, Hidetaka and Okumura, Manabu and Nagata,
 Masaaki}, booktitle={ECCV}, year={2020}}
"""

_EVENT = {"timestamp": datasets.List(datasets.Value("float64")), "sentence": datasets.Value("string")}
_REFERENCE = {
    "timestamps": datasets.List(datasets.List(datasets.Value("float64"))),
    "sentences": datasets.List(datasets.Value("string")),
}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DenseCaptioning(evaluate.Metric):
    """`evaluate` wrapper of `evaluate_dense_captions`, one example per video."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.List(_EVENT), "references": datasets.List(_REFERENCE)}
            ),
            reference_urls=["https://github.com/ranjaykrishna/densevid_eval", "https://github.com/fujiso/SODA"],
        )

    def _compute(self, predictions, references, video_ids=None, paragraph_references=None,
                 tious=DEFAULT_TIOUS, max_proposals_per_video=1000, soda=True, no_java=False,
                 keep_meteor_running=False, protocol=DEFAULT_PROTOCOL, paragraph_sort_by_start=False):
        check_protocol(protocol)  # before any work
        if video_ids is None:
            video_ids = [f"video_{i}" for i in range(len(predictions))]
        if len(video_ids) != len(predictions) or len(set(video_ids)) != len(video_ids):
            raise ValueError("video_ids must give one distinct id per example.")
        num_files = {len(r) for r in references}
        if len(num_files) != 1 or 0 in num_files:
            raise ValueError(
                f"every video needs one reference entry per reference file; got entry counts {sorted(num_files)}."
            )
        files = [{} for _ in range(num_files.pop())]
        for vid, entries in zip(video_ids, references):
            for k, entry in enumerate(entries):
                if entry["sentences"] or entry["timestamps"]:
                    files[k][vid] = {"timestamps": entry["timestamps"], "sentences": entry["sentences"]}
        paragraphs = None
        if paragraph_references is not None:
            if len(paragraph_references) != len(video_ids):
                raise ValueError("paragraph_references needs one list per example.")
            paragraphs = [{} for _ in range(max((len(p) for p in paragraph_references), default=0))]
            for vid, texts in zip(video_ids, paragraph_references):
                for k, text in enumerate(texts):
                    if text:
                        paragraphs[k][vid] = text
        result = evaluate_dense_captions(
            dict(zip(video_ids, predictions)), files, tious=tious, paragraph_references=paragraphs,
            protocol=protocol, paragraph_sort_by_start=paragraph_sort_by_start,
            max_proposals_per_video=max_proposals_per_video, soda=soda, no_java=no_java,
            meteor=shared_meteor() if keep_meteor_running and not no_java else None,
        )
        out = dict(result["average"])
        out["SODA_c"] = result["SODA_c"]
        for name, value in (result["paragraph"] or {}).items():
            out[f"para_{name}"] = value
        out["per_tiou"] = result["per_tiou"]
        out["videos"] = result["videos"]
        out["comparable_to_papers"] = result["comparable_to_papers"]
        out["protocol"] = result["protocol"]
        out["not_computed"] = result["not_computed"]
        return out
