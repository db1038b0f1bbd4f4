"""Model cards in the Hub's format, filled from our own evaluation output (`cacmi card`).

A card is YAML metadata (`pipeline_tag`, `library_name`, `datasets`, and a `model-index` built from
an `evaluate_dense_captions` / `cacmi evaluate` JSON) followed by a markdown body: what the model
does, how to caption a video, how it was trained and evaluated, the paper's numbers beside ours, and
the limits. A number we have not measured is written "not measured": the paper's numbers are only
ever shown in the paper's column, and without an evaluation JSON the card has no `model-index`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

NOT_MEASURED = "not measured"
# The densevid evaluator version of the paper's numbers. The paper does not name it; its tables put its numbers
# beside CM2's and PDVC's, which are densevid 2018 (CM2's eval.py default `--eval_tool_version 2018`, which its
# eval_anet.sh / eval_yc2.sh keep; PDVC's README: "In the paper, we ... use the evaluation toolkit in
# ActivityNet Challenge 2018").
PAPER_PROTOCOL = "2018"
# Metrics whose value depends on the densevid protocol (SODA_c and localisation F1 do not).
PROTOCOL_METRICS = ("Bleu_4", "METEOR", "CIDEr")
PAPER = "Explicit Temporal-Semantic Modeling for Dense Video Captioning via Context-Aware Cross-Modal Interaction"
PAPER_URL = "https://arxiv.org/abs/2511.10134"
PIPELINE_TASK = "dense-video-captioning"
# The Hub's closest task tag: video in, text out (dense captioning adds the time stamps).
HUB_PIPELINE_TAG = "video-text-to-text"

# (key in the evaluation JSON, label in the card, Hub metric id); values are fractions there, percent here.
CARD_METRICS: tuple[tuple[str, str, str], ...] = (
    ("Bleu_4", "BLEU-4", "bleu"),
    ("METEOR", "METEOR", "meteor"),
    ("CIDEr", "CIDEr", "cider"),
    ("SODA_c", "SODA_c", "soda_c"),
    ("F1", "F1 (localisation)", "f1"),
)


@dataclass(frozen=True)
class BenchmarkCard:
    """Everything a card states about one benchmark that does not come from the evaluation JSON."""

    preset: str
    model_name: str
    dataset_name: str
    dataset_id: str
    train_file: str
    reference_files: tuple[str, ...]
    paragraph_files: tuple[str, ...]
    eval_split: str
    test_split: str  # `examples/train.py --test_splits` name of the reported split
    train_videos: int
    reference_videos: int
    memory_entries: int
    vocabulary: str
    num_frames: int
    num_queries: int
    num_clusters: int
    paper_results: Mapping[str, float]  # percent, keyed like CARD_METRICS

    @property
    def predictions_file(self) -> str:
        """Name of the predictions file `examples/train.py` writes for the reported split."""
        return f"predictions_{self.test_split.replace('+', '_')}.json"

    @property
    def script(self) -> str:
        """The repository's end-to-end recipe for this benchmark."""
        return f"examples/reproduce_{self.preset}.sh"


BENCHMARKS: dict[str, BenchmarkCard] = {
    "activitynet": BenchmarkCard(
        preset="activitynet",
        model_name="cacmi-activitynet",
        dataset_name="ActivityNet Captions",
        dataset_id="friedrichor/ActivityNet_Captions",
        train_file="train_modified.json",
        reference_files=("val_1.json", "val_2.json"),
        paragraph_files=("para_val_1.json", "para_val_2.json"),
        eval_split="val_1 + val_2",
        test_split="val_1+val_2",
        train_videos=10009,
        reference_videos=4917,
        memory_entries=37421,
        vocabulary="words seen at least twice in the training captions",
        num_frames=100,
        num_queries=10,
        num_clusters=10,
        paper_results={"Bleu_4": 2.44, "METEOR": 8.68, "CIDEr": 33.80, "SODA_c": 6.39, "F1": 57.10},
    ),
    "youcook2": BenchmarkCard(
        preset="youcook2",
        model_name="cacmi-youcook2",
        dataset_name="YouCook2",
        dataset_id="lmms-lab/YouCook2",
        train_file="yc2_train.json",
        reference_files=("yc2_val.json",),
        paragraph_files=("para_yc2_val.json",),
        eval_split="validation",
        test_split="validation",
        train_videos=1333,
        reference_videos=457,
        memory_entries=10337,
        vocabulary="words seen at least twice in the training captions",
        num_frames=200,
        num_queries=100,
        num_clusters=20,
        paper_results={"Bleu_4": 1.70, "METEOR": 6.21, "CIDEr": 34.83, "SODA_c": 5.57, "F1": 29.34},
    ),
}


def get_benchmark(preset: str) -> BenchmarkCard:
    """The card facts of a preset, or a ValueError listing the known ones."""
    if preset not in BENCHMARKS:
        raise ValueError(f"No model card for preset {preset!r}; choose one of {sorted(BENCHMARKS)}.")
    return BENCHMARKS[preset]


def load_evaluation(source: str | os.PathLike | Mapping[str, Any], allow_incomparable: bool = False) -> dict[str, Any]:
    """Read and check an evaluation JSON written by `cacmi evaluate --output` (or an `evaluate_dense_captions` dict).

    Raises a ValueError naming the file and the missing or bad field; refuses scores made without Java's PTB
    tokenizer and METEOR (`comparable_to_papers: false`) unless `allow_incomparable`.
    """
    name = "evaluation result"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"Evaluation file {name!r} does not exist; write it with `cacmi evaluate ... --output {name}`.")
        try:
            source = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"Evaluation file {name!r} is not valid JSON ({err.msg} at line {err.lineno}).") from None
    if not isinstance(source, Mapping):
        raise ValueError(f"{name}: expected the JSON object `cacmi evaluate --output` writes, got {type(source).__name__}.")
    result = dict(source)
    for key in ("average", "videos", "tious"):
        if key not in result:
            raise ValueError(
                f"{name}: missing the {key!r} field; pass the file written by `cacmi evaluate ... --output scores.json` "
                "(not the trainer's results.json)."
            )
    for key, label, _ in CARD_METRICS:
        if key == "SODA_c":
            continue
        value = result["average"].get(key)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 10):
            raise ValueError(f"{name}: average.{key} = {value!r} is not a score fraction (finite, >= 0).")
    soda = result.get("SODA_c")
    if soda is not None and not (isinstance(soda, (int, float)) and math.isfinite(soda) and 0 <= soda <= 1):
        raise ValueError(f"{name}: SODA_c = {soda!r} is not a fraction in [0, 1].")
    if not result.get("comparable_to_papers", False) and not allow_incomparable:
        raise ValueError(
            f"{name} was scored without Java (pure-Python tokenizer, no METEOR/SODA_c): its numbers are not comparable "
            "with the paper's. Install Java and rerun `cacmi evaluate`, or pass --allow-incomparable to render it anyway."
        )
    return result


def measured_scores(evaluation: Mapping[str, Any] | None) -> dict[str, float | None]:
    """The card's metrics in percent from an evaluation result; None for each one it did not measure."""
    scores: dict[str, float | None] = {key: None for key, _, _ in CARD_METRICS}
    if evaluation is None:
        return scores
    for key, _, _ in CARD_METRICS:
        value = evaluation.get("SODA_c") if key == "SODA_c" else evaluation["average"].get(key)
        scores[key] = None if value is None else 100.0 * float(value)
    return scores


def _percent(value: float | None) -> str:
    return NOT_MEASURED if value is None else f"{value:.2f}"


def card_metadata(benchmark: BenchmarkCard, evaluation: Mapping[str, Any] | None, model_name: str):
    """The card's YAML metadata as a `huggingface_hub.ModelCardData` (model-index only from measured numbers)."""
    from huggingface_hub import EvalResult, ModelCardData

    scores = measured_scores(evaluation)
    results = []
    for key, label, metric_id in CARD_METRICS:
        if scores[key] is None:
            continue
        results.append(
            EvalResult(
                task_type=HUB_PIPELINE_TAG,
                task_name="Dense video captioning",
                dataset_type=benchmark.dataset_id,
                dataset_name=benchmark.dataset_name,
                dataset_split=evaluated_split(benchmark, evaluation),
                metric_type=metric_id,
                metric_name=label if key not in PROTOCOL_METRICS else
                f"{label} (densevid {_protocol(evaluation)}, mean over tIoU {_tiou_text(evaluation)})",
                metric_value=round(scores[key], 2),
            )
        )
    return ModelCardData(
        language="en",
        license="apache-2.0",
        library_name="transformers",
        pipeline_tag=HUB_PIPELINE_TAG,
        tags=["dense-video-captioning", "video-captioning", "temporal-localization", "cacmi", "custom_code"],
        datasets=[benchmark.dataset_id],
        metrics=[metric_id for _, _, metric_id in CARD_METRICS],
        model_name=model_name if results else None,
        eval_results=results or None,
    )


def evaluated_split(benchmark: BenchmarkCard, evaluation: Mapping[str, Any] | None) -> str:
    """The split the numbers are on: the benchmark's when the JSON names its reference files, else those files."""
    files = tuple(evaluation.get("reference_files") or ()) if evaluation is not None else ()
    if not files or files == benchmark.reference_files:
        return benchmark.eval_split
    return " + ".join(Path(f).stem for f in files)


def _protocol(evaluation: Mapping[str, Any] | None) -> str:
    """The densevid protocol of an evaluation result (results written before protocols existed are 2018)."""
    return str(evaluation.get("protocol", "2018")) if evaluation is not None else PAPER_PROTOCOL


def _tiou_text(evaluation: Mapping[str, Any] | None) -> str:
    tious = evaluation["tious"] if evaluation is not None else [0.3, 0.5, 0.7, 0.9]
    return "/".join(f"{t:g}" for t in tious)


def _results_table(benchmark: BenchmarkCard, evaluation: Mapping[str, Any] | None) -> str:
    scores = measured_scores(evaluation)
    split = evaluated_split(benchmark, evaluation)
    ours = "this checkpoint" if split == benchmark.eval_split else f"this checkpoint, on {split}"
    rows = [
        f"| {benchmark.dataset_name} {benchmark.eval_split} | paper (CACMI, arXiv 2511.10134) | {ours} |",
        "| --- | ---: | ---: |",
    ]
    protocol = _protocol(evaluation)
    for key, label, _ in CARD_METRICS:
        rows.append(f"| {label} | {benchmark.paper_results[key]:.2f} | {_percent(scores[key])} |")
    rows.append(f"\nBLEU-4, METEOR and CIDEr: densevid {PAPER_PROTOCOL} protocol in the paper's column, densevid "
                f"{protocol} in ours (`cacmi evaluate --protocol`); SODA_c and F1 do not depend on it.")
    if protocol != PAPER_PROTOCOL:
        rows.append(f"\n> Our BLEU-4 / METEOR / CIDEr follow densevid {protocol}, the paper's densevid {PAPER_PROTOCOL}: "
                    f"not comparable (rerun `cacmi evaluate --protocol {PAPER_PROTOCOL}`).")
    return "\n".join(rows)


def _paragraph_table(evaluation: Mapping[str, Any] | None) -> str:
    para = evaluation.get("paragraph") if evaluation is not None else None
    if not para:
        return "Paragraph-level scores (predicted sentences joined in prediction-file order): not measured."
    names = [n for n in ("Bleu_4", "METEOR", "CIDEr") if para.get(n) is not None]
    lines = [
        f"Paragraph-level scores ({para.get('videos', '?')} videos; predicted sentences joined in "
        f"{evaluation.get('paragraph_order', 'start time')} order; the paper reports none, so there is nothing to compare with):",
        "",
        "| " + " | ".join(names) + " |",
        "|" + " ---: |" * len(names),
        "| " + " | ".join(f"{100 * para[n]:.2f}" for n in names) + " |",
    ]
    return "\n".join(lines)


def _evaluation_facts(benchmark: BenchmarkCard, evaluation: Mapping[str, Any] | None) -> str:
    refs = " + ".join(f"`{f}`" for f in benchmark.reference_files)
    if evaluation is None:
        return (
            f"- Videos: {NOT_MEASURED} (the {benchmark.eval_split} references hold {benchmark.reference_videos:,} "
            "videos; write here how many had features and predictions once the checkpoint is evaluated).\n"
            f"- References: {refs}."
        )
    videos = evaluation["videos"]
    lines = [
        f"- Videos: {videos['evaluated']:,} of the {videos['references']:,} reference videos were evaluated; "
        f"{videos['missing']:,} had no prediction (no video or features available) and count as 0, as in the toolkit.",
        f"- References: {', '.join(f'`{f}`' for f in evaluation.get('reference_files', benchmark.reference_files))}.",
        f"- Tokenizer: {evaluation.get('tokenizer', 'ptb')}; events kept per video: "
        f"{evaluation.get('max_proposals_per_video', 1000)}.",
    ]
    per_ref = evaluation.get("SODA_c_per_reference") or {}
    if len(per_ref) > 1:
        parts = ", ".join(f"{name} {100 * r['f1']:.2f}" for name, r in per_ref.items())
        lines.append(f"- SODA_c per reference file: {parts} (the table gives their mean).")
    return "\n".join(lines)


def render_model_card(
    preset: str,
    evaluation: str | os.PathLike | Mapping[str, Any] | None = None,
    *,
    model_id: str | None = None,
    allow_incomparable: bool = False,
) -> str:
    """The full card (YAML metadata + markdown) of `preset`; our numbers come only from `evaluation`.

    Args:
        preset: "activitynet" or "youcook2".
        evaluation: the JSON (path or dict) `cacmi evaluate --output` wrote for this checkpoint on the
            benchmark's reported split, or None: every number of ours is then "not measured".
        model_id: the Hub id or folder the usage examples load (default: the benchmark's model name).
        allow_incomparable: accept scores made without Java (they are flagged in the card).
    """
    from huggingface_hub import ModelCard

    benchmark = get_benchmark(preset)
    if evaluation is not None:
        evaluation = load_evaluation(evaluation, allow_incomparable=allow_incomparable)
    model_id = model_id or benchmark.model_name
    metadata = card_metadata(benchmark, evaluation, benchmark.model_name)
    body = _BODY.format(
        b=benchmark,
        model_id=model_id,
        refs=" ".join(f"$DATA/{f}" for f in benchmark.reference_files),
        paras=" ".join(f"$DATA/{f}" for f in benchmark.paragraph_files),
        annotations=" ".join(f"$DATA/{f}" for f in (benchmark.train_file, *benchmark.reference_files)),
        results_table=_results_table(benchmark, evaluation),
        paragraph_table=_paragraph_table(evaluation),
        evaluation_facts=_evaluation_facts(benchmark, evaluation),
        tious=", ".join(f"{t:g}" for t in (evaluation["tious"] if evaluation is not None else (0.3, 0.5, 0.7, 0.9))),
        domain=_domain(benchmark),
        incomparable=(
            "\n> **Warning:** these numbers were scored without Java's PTB tokenizer and METEOR; they are not "
            "comparable with the paper's.\n"
            if evaluation is not None and not evaluation.get("comparable_to_papers", False)
            else ""
        ),
        measured_note=(
            "Our column comes from the evaluation JSON this card was generated from."
            if evaluation is not None
            else f"No checkpoint has been trained and evaluated for this card yet: every number of ours is "
            f"\"{NOT_MEASURED}\", and the metadata has no `model-index` until `cacmi card --eval` fills it."
        ),
    )
    card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")
    return str(card)


def write_model_card(path: str | os.PathLike, preset: str, evaluation: Any = None, **kwargs: Any) -> Path:
    """Render the card of `preset` and write it to `path` (folders are created)."""
    text = render_model_card(preset, evaluation, **kwargs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


_BODY = """
# CACMI dense video captioner — {b.dataset_name}

Dense video captioning: an untrimmed video in, its events out — each a `(start, end)` span in seconds
with one sentence. This is **CACMI** ([{paper}]({paper_url}), AAAI 2026) implemented in
`cacmi_hf` on a PDVC/CM2-style deformable-transformer captioner:
CLIP ViT-L/14 frame features → Cross-modal Frame Aggregation (contiguous Ward clustering of the frames
into {b.num_clusters} pseudo-events, each retrieving the mean of its 40 nearest captions from a text memory bank of
{b.memory_entries:,} training captions) → Context-aware Feature Enhancement → deformable transformer with
{b.num_queries} event queries → event counter, segment heads and an LSTM captioner with deformable
attention. Preset `{b.preset}` ({b.num_frames} frames per video).

## Caption a video

```python
import cacmi_hf  # registers the "{task}" pipeline
from transformers import pipeline
print(pipeline("{task}", model="{model_id}")("video.mp4"))
```

Each event is `{{"timestamp": [start, end], "caption": ..., "score": ...}}`. From the shell, with SRT
subtitles and a timeline picture:

```bash
cacmi caption video.mp4 --model {model_id} --srt --plot timeline.png
```

Both run on CPU. Install `cacmi_hf` first (`pip install -e .` in a clone of its repository; Python ≥ 3.10).
The model folder carries its CLIP image tower, so it reads mp4 files directly (PyAV).

## Training

The whole recipe is `{b.script}` in the `cacmi_hf` repository (GPU; needs the {b.dataset_name}
videos). Its steps, with `$VIDEOS` the videos, `$DATA` the annotation files and `$WORK` a scratch folder
(`$WORK/clip-vit-l-14` is OpenAI's CLIP ViT-L/14, which the script first saves in open_clip's local-dir format):

```bash
cacmi extract-features $VIDEOS --out $WORK/features --clip $WORK/clip-vit-l-14 --fps 1  # CLIP ViT-L/14 (OpenAI weights), 1 frame/s
cacmi build-memory $DATA/{b.train_file} --out $WORK/memory --clip $WORK/clip-vit-l-14    # {b.memory_entries:,} caption embeddings
cacmi build-vocab $DATA/{b.train_file} --out $WORK/vocab                                 # {b.vocabulary}
accelerate launch examples/train.py --preset {b.preset} \\
    --annotations {annotations} \\
    --features $WORK/features --memory_bank $WORK/memory --tokenizer $WORK/vocab \\
    --clip $WORK/clip-vit-l-14 --missing_features skip --output_dir $WORK/{b.model_name}
```

- Data: {b.dataset_name} train split, {b.train_videos:,} videos (`{b.train_file}`); features resampled to
  {b.num_frames} frames per video.
- Recipe (preset `{b.preset}`, the CM2/PDVC one): Adam, lr 5e-5, weight decay 1e-4, gradient clipping at 100,
  30 epochs, lr halved every 3 epochs from epoch 8, batch size 1 per device.
- Checkpoint selection: on videos held out of the train split (never on the reported split), by METEOR + SODA_c.
- Videos without features (no longer downloadable) are left out of training and scored 0 in the evaluation.
- The memory bank holds the CLIP text embeddings of the training captions; while training, a video never
  retrieves its own captions.

## Evaluation

```bash
cacmi evaluate $WORK/{b.model_name}/{b.predictions_file} --references {refs} \\
    --paragraph-references {paras} --protocol 2018 --output $WORK/scores.json
cacmi card --eval $WORK/scores.json --preset {b.preset} --model-id {model_id} --out $WORK/{b.model_name}/README.md
```

`cacmi evaluate --protocol 2018` reproduces densevid_eval's 2018 evaluator (`evaluate2018.py`, the protocol
of the paper's numbers; `--protocol 2021` and `2018_cider` follow the other two scripts) plus SODA_c:
for tIoU thresholds {tious}, every prediction is paired with every reference sentence it overlaps by
at least the threshold (or with a dummy reference when none), sentences are tokenised with the Stanford
PTB tokenizer and scored per video with BLEU, METEOR **1.5** (the coco-caption jar, `-l en -norm`), ROUGE-L
and CIDEr; scores are averaged over videos, then over thresholds. Localisation precision and recall use a
strict tIoU > threshold, F1 comes from the averaged precision and recall. SODA_c (Fujita et al., ECCV 2020)
matches time-ordered predictions and references by dynamic programming on IoU × METEOR;
{b.dataset_name} reports its mean over the reference files.

{evaluation_facts}

## Results

{measured_note}
{incomparable}
{results_table}

Scores in %. The paper's column is copied from the paper; our column is only ever filled from our own
evaluation output.

{paragraph_table}

## Limits

- Learned from {b.dataset_name} (YouTube videos of {domain}); expect weaker sentences and spans on other
  kinds of video, and the vocabulary is closed (words outside it become `<unk>`).
- At most {b.num_queries} event queries per video; the event counter decides how many events are kept.
- Captions are English, greedy, at most 30 words; time stamps come from {b.num_frames} sampled frames, so short
  events in long videos are located coarsely.
- Retrieval reads the training captions of the memory bank: the model can echo their wording, biases included.
- Do not expect retrieval by itself to beat PDVC on your data. In the controlled study of
  `benchmarks/bench_mechanism.py` (synthetic world, 3 seeds; BENCHMARKS.md, "Retrieval quality"), retrieval
  paid only when the memory bank's top sentence was right for nearly every pseudo-event: at 1,000 training
  steps an oracle bank lifted METEOR from 22.5 to 42-43 and CIDEr from 191 to ~500 over PDVC, but a bank right
  for 42-46 % of them, a CLIP bank right for 0.5-6 %, and random vectors all tied with PDVC (at 200 steps every
  bank tied). CACMI's clusters and CM2's fixed windows tied everywhere. The text is only as good as the CLIP
  text embedding: sentences differing in what single frames do not show sat at cosine ~0.98. Check what the
  bank returns for a few of your videos (`processor.retrieved_sentences`) before counting on it.
- Numbers on other data or other splits are not covered by this card; the videos of the benchmark are YouTube
  videos, some no longer available, so the evaluated video count matters when comparing.
"""


def _domain(benchmark: BenchmarkCard) -> str:
    return "everyday human activities" if benchmark.preset == "activitynet" else "cooking recipes"


_BODY = _BODY.replace("{paper}", PAPER).replace("{paper_url}", PAPER_URL).replace("{task}", PIPELINE_TASK)


__all__ = [
    "BENCHMARKS",
    "CARD_METRICS",
    "NOT_MEASURED",
    "BenchmarkCard",
    "card_metadata",
    "get_benchmark",
    "load_evaluation",
    "measured_scores",
    "render_model_card",
    "write_model_card",
]
