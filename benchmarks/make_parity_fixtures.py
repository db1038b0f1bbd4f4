"""Build the parity fixtures (tests/fixtures/parity) by running PDVC's and CM2's own code at tiny sizes on CPU.

    python benchmarks/make_parity_fixtures.py --pdvc PATH/TO/PDVC --cm2 PATH/TO/CM2_DVC --out tests/fixtures/parity

Reference commits: ttengwang/PDVC @0b025c8 and ailab-kyunghee/CM2_DVC @01a6558. This is the only file of the
repository that imports reference code; CI never runs it (the tests read the files it writes). For every
reference configuration it builds the reference model with the reference's own `build(opt)`, gives it seeded
random weights, saves them in the reference's checkpoint format (`model-best.pth` = {"epoch", "model",
"optimizer"} + `info.json` {"best": {"opt": ...}}, the vocabulary json, for CM2 the memory-bank .npy files),
runs the reference's evaluation path on four videos one at a time (batch 1, as they run) in eval mode, and
records the inputs, the intermediate tensors and the final re-ranked events in `expected.pt`.

What is patched in the reference, and why (see also tests/fixtures/parity/README.md):
- The deformable attention of the encoder and decoder: on CPU the reference falls back to
  `ms_deform_attn_core_pytorch`, which samples with `padding_mode="border"`, while the CUDA kernel the
  references train and evaluate with reads zeros outside each level. The generator gives those two modules
  the same function with `padding_mode="zeros"` (the CUDA behaviour). The captioner's `MSDeformAttnCap`
  always uses the pure-PyTorch function, also on CUDA, so it keeps its border padding.
- Sizes hard-coded at the published 512/768 widths are re-made at the tiny width after `build(opt)`: PDVC's
  duration embedding (`Linear(256, 256)` whose output is concatenated with the hidden/2 sine channels:
  `max_duration` becomes hidden/2); CM2's text path (`RetPositionEmbeddingSine(512)`, `down_proj` from 768
  to 512) and its modules the forward never reads (the text transformer, its CLS token and position table).
- CM2 moves tensors to "cuda" in its code; `Tensor.to("cuda")` is mapped to the CPU. CM2 loads OpenAI CLIP
  ViT-L/14 in `build` and embeds the ground-truth captions with its text tower in every forward (used only
  by its ablations): a tiny CLIP in the OpenAI layout stands in, so the checkpoint carries `clip_model.*`.
- Modules the references import but the model never uses (colorlog, six, tensorboardX, the evaluation
  toolkit, the `clip` package) are stubbed when they are not installed.
Weights: each reference's own initialisation, then every parameter moved by seeded Gaussian noise so no
tensor keeps an all-zero or constant start (sampling offsets, attention weights, box heads).
"""

from __future__ import annotations

import argparse
import contextlib
import time
import copy
import json
import os
import shutil
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PDVC_COMMIT = "0b025c8"
CM2_COMMIT = "01a6558"
REFERENCE_PACKAGES = ("misc", "data", "pdvc", "cm2", "opts", "eval_utils", "eval_utils_clip", "densevid_eval3", "clip")


# ----------------------------------------------------------------------------------------------- environment


def _stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _stub_missing_imports():
    """Stub the modules the references import for logging and evaluation but never use in the model."""
    for name in ("colorlog", "tensorboardX", "h5py"):
        try:
            __import__(name)
        except ImportError:
            _stub(name, ColoredFormatter=object, SummaryWriter=object)
    try:
        import six  # noqa: F401
    except ImportError:
        import pickle

        moves = _stub("six.moves", cPickle=pickle)
        _stub("six", moves=moves, PY3=True)
    # the evaluation toolkits import Java-based scorers at module level; reranking needs none of them
    for name in ("eval_soda", "eval_para", "eval_dvc", "eval_tal", "eval_grounding"):
        _stub(f"densevid_eval3.{name}", **{name: None, "eval_result": None})
    package = _stub("densevid_eval3")
    package.__path__ = []
    _stub("misc.plot_proposal_distribution", main=lambda *a, **k: None)


@contextlib.contextmanager
def reference_root(root: Path):
    """Import the reference package found at `root` (cwd and sys.path), forgetting any other reference's modules."""
    for name in list(sys.modules):
        if name.split(".")[0] in REFERENCE_PACKAGES:
            del sys.modules[name]
    old_cwd, old_path, old_argv = os.getcwd(), list(sys.path), list(sys.argv)
    os.chdir(root)
    sys.path.insert(0, str(root))
    _stub_missing_imports()
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.path[:] = old_path
        sys.argv[:] = old_argv


@contextlib.contextmanager
def cuda_on_cpu():
    """Map `.to("cuda")` / `device="cuda"` in the reference code to the CPU."""
    original_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        args = tuple("cpu" if (isinstance(a, str) and a.startswith("cuda")) else a for a in args)
        if isinstance(kwargs.get("device"), str) and kwargs["device"].startswith("cuda"):
            kwargs["device"] = "cpu"
        return original_to(self, *args, **kwargs)

    torch.Tensor.to = to
    try:
        yield
    finally:
        torch.Tensor.to = original_to


def zero_padding_core(value, value_spatial_shapes, sampling_locations, attention_weights, return_value=False):
    """The reference's `ms_deform_attn_core_pytorch` with the CUDA kernel's zero padding (only this line differs)."""
    N_, S_, M_, D_ = value.shape
    _, Lq_, M_, L_, P_, _ = sampling_locations.shape
    value_list = value.split([H_ * W_ for H_, W_ in value_spatial_shapes], dim=1)
    sampling_grids = 2 * sampling_locations - 1
    sampling_value_list = []
    for lid_, (H_, W_) in enumerate(value_spatial_shapes):
        value_l_ = value_list[lid_].flatten(2).transpose(1, 2).reshape(N_ * M_, D_, H_, W_)
        sampling_grid_l_ = sampling_grids[:, :, :, lid_].transpose(1, 2).flatten(0, 1)
        sampling_value_l_ = F.grid_sample(value_l_, sampling_grid_l_, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampling_value_list.append(sampling_value_l_)
    attention_weights = attention_weights.transpose(1, 2).reshape(N_ * M_, 1, Lq_, L_ * P_)
    if return_value:
        return torch.stack(sampling_value_list, dim=-2)
    output = (torch.stack(sampling_value_list, dim=-2).flatten(-2) * attention_weights).sum(-1).view(N_, M_ * D_, Lq_)
    return output.transpose(1, 2).contiguous()


def patch_deformable_attention(package: str):
    """Encoder/decoder MSDeformAttn on CPU: zero padding as the CUDA op (the captioner's module is left alone)."""
    module = sys.modules[f"{package}.ops.modules.ms_deform_attn"]
    module.ms_deform_attn_core_pytorch = zero_padding_core


def tiny_duration_embedding(model, hidden: int) -> None:
    """PDVC's duration embedding at a tiny width: `max_duration` 256 -> hidden/2 (its output sits beside hidden/2 sine channels)."""
    pos = model.base_encoder.pos_embed
    pos.max_duration = hidden // 2
    pos.duration_embed_layer = torch.nn.Linear(pos.max_duration, pos.max_duration)


def perturb(model: torch.nn.Module, seed: int, scale: float = 0.15, skip: tuple[str, ...] = (), width: int | None = None):
    """Move every floating parameter by seeded Gaussian noise (shared tensors once), after the reference's init.

    The captioner's word embedding and output layer move more (scale 1.5), so greedy captions vary in words and
    length instead of repeating one word. With `width`, each tensor's noise is scaled by sqrt(width / fan-in), so a
    wide model is as well conditioned as the tiny one of that width (the same noise on 512-wide layers would make
    activations, and so the last-bit differences of two implementations, grow by orders of magnitude).
    """
    generator = torch.Generator().manual_seed(seed)
    seen = set()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if id(param) in seen or any(s in name for s in skip):
                continue
            seen.add(id(param))
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            loud = "caption_head" in name and (".embed." in name or ".logit." in name)
            std = 1.5 if loud else scale
            if width is not None:
                fan_in = param.numel() // param.shape[0] if param.dim() > 1 else param.shape[0]
                std *= min(1.0, (width / max(fan_in, 1)) ** 0.5)
            param.add_((noise * std).to(param.dtype))


def to_py(x):
    """Numpy / torch scalars and arrays inside JSON-bound structures -> plain Python."""
    if isinstance(x, dict):
        return {k: to_py(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_py(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if torch.is_tensor(x):
        return x.tolist()
    return x


def small_vocabulary(source: Path, num_words: int | None, out: Path) -> int:
    """The first `num_words` words of a reference vocabulary (None: all) + its UNK, in the reference's json format."""
    vocab = json.load(open(source))
    if num_words is None:
        shutil.copy(source, out)
        return len(vocab["ix_to_word"])
    words = [vocab["ix_to_word"][str(i)] for i in range(1, num_words + 1)] + ["UNK"]
    itow = {str(i + 1): w for i, w in enumerate(words)}
    wtoi = {w: i + 1 for i, w in enumerate(words)}
    json.dump({"ix_to_word": itow, "word_to_ix": wtoi}, open(out, "w"))
    return len(words)


# ------------------------------------------------------------------------------------------------ recording


class Recorder:
    """Wraps the reference transformer's encoder/decoder entry points to keep their outputs per call."""

    def __init__(self, transformer):
        self.calls: list[tuple[str, object]] = []
        for name in ("forward_encoder", "forward_decoder"):
            original = getattr(transformer, name)

            def wrapped(*args, _original=original, _name=name, **kwargs):
                out = _original(*args, **kwargs)
                self.calls.append((_name, out))
                return out

            setattr(transformer, name, wrapped)

    def take(self) -> dict:
        """The recorded tensors of one forward: video memory, text memory (CM2), per-layer states and boxes."""
        encoders = [out for name, out in self.calls if name == "forward_encoder"]
        decoders = [out for name, out in self.calls if name == "forward_decoder"]
        self.calls = []
        hs, references = decoders[-1]
        record = {"memory": encoders[0][0].detach().clone(), "hs": hs[:, 0].detach().clone(),
                  "layer_boxes": references[:, 0].detach().clone()}
        if len(encoders) > 1:
            record["text_memory"] = encoders[1][0].detach().clone()
        return record


def record_outputs(out: dict) -> dict:
    """Confidence/count logits and boxes of every layer, greedy caption ids and their log-probs (batch 1)."""
    layers = list(out.get("aux_outputs", [])) + [out]
    seq, log_probs = out["seq"], out["caption_probs"]["cap_prob_eval"]
    return {
        "logits": torch.stack([o["pred_logits"][0, :, 0] for o in layers]).detach().clone(),
        "counts": torch.stack([o["pred_count"][0] for o in layers]).detach().clone(),
        "pred_boxes": out["pred_boxes"][0].detach().clone(),
        "seq": torch.as_tensor(seq)[0].long().clone() if len(seq) else torch.zeros(0, 0, dtype=torch.long),
        "seq_log_probs": torch.as_tensor(log_probs)[0].detach().float().clone() if len(seq) else torch.zeros(0, 0),
    }


def rerank_events(reranking, results: list, path: Path, alpha: float, **kwargs) -> list:
    """The reference's own `reranking` over a prediction json built as its `evaluate` builds it."""
    json.dump({"results": {"video": results}, "version": "VERSION 1.0", "external_data": {}}, open(path, "w"))
    reranked = json.load(open(reranking(str(path), alpha=alpha, temperature=2.0, **kwargs)))["results"]["video"]
    return [
        {k: p[k] for k in ("timestamp", "sentence", "proposal_score", "sentence_score", "joint_score", "query_id")}
        for p in reranked
    ]


def video_results(post, out, duration: float, loader) -> list:
    """One video's prediction entries, as the references' `evaluate` writes them (score threshold 0)."""
    res = post(out, torch.tensor([duration]), loader)[0]
    segment = res["boxes"].cpu().numpy()
    return [
        {
            "timestamp": segment[pid].tolist(),
            "proposal_score": res["scores"][pid].item(),
            "sentence": res["captions"][pid],
            "sentence_score": float(res["caption_scores"][pid]),
            "query_id": res["query_id"][pid].item(),
            "pred_event_count": res["pred_seq_len"].item(),
            "vid_duration": float(duration),
            "cl_score": float(res["cl_scores"][pid]) if "cl_scores" in res else 0.0,
        }
        for pid in range(len(segment))
        if res["scores"][pid].item() > 0 and segment[pid].sum() != 0
    ]


def resize_index(model_input: torch.Tensor, native: np.ndarray) -> torch.Tensor:
    """Which native frame each row the reference fed its model is (its feature resize is a row selection)."""
    native = torch.from_numpy(native)
    index = torch.cdist(model_input.double(), native.double()).argmin(1)
    if not torch.equal(native[index], model_input):
        raise RuntimeError("the reference's model input is not a selection of native feature rows")
    return index


class _Loader(list):
    """What the references' post-processing reads from a DataLoader: `.dataset.translator` and `.dataset.opt`."""

    def __init__(self, items, dataset):
        super().__init__(items)
        self.dataset = dataset


# ------------------------------------------------------------------------------------------------ videos


def make_videos(seed: int, lengths: list[int], durations: list[float], feature_dim: int) -> list[dict]:
    """Random videos: features rounded to float16 values (so the fixture can store them as float16 exactly)."""
    rng = np.random.default_rng(seed)
    videos = []
    for i, (length, duration) in enumerate(zip(lengths, durations)):
        feats = rng.normal(0.0, 1.0, size=(length, feature_dim)).astype(np.float16).astype(np.float32)
        start = round(0.15 * duration, 2)
        videos.append(
            {
                "key": f"v_parity{seed:03d}{i:02d}",  # 13 characters as ActivityNet ids (PDVC reads key[:13])
                "features": feats,
                "duration": float(duration),
                "timestamps": [[start, round(0.6 * duration, 2)]],
                "sentences": ["a man is playing a game"],
            }
        )
    return videos


def save_checkpoint(folder: Path, model, opt) -> None:
    """The reference's checkpoint layout: model-best.pth {"epoch", "model", "optimizer"} and info.json."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 7, "model": model.state_dict(), "optimizer": {}}, folder / "model-best.pth")
    opt_dict = {k: v for k, v in vars(opt).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
    json.dump({"best": {"opt": opt_dict, "epoch": 7}}, open(folder / "info.json", "w"), indent=1)


# ------------------------------------------------------------------------------------------------ PDVC

PDVC_CONFIGS = {
    # name: (cfg file, feature type, overrides, native feature lengths)
    "pdvc_anet_c3d": ("cfgs/anet_c3d_pdvc.yml", "c3d", {}, [23, 100, 41, 64]),
    "pdvc_anet_tsp": ("cfgs/anet_tsp_pdvc.yml", ["tsp"], {}, [100, 17, 31, 48]),
    "pdvc_light_anet_c3d": ("cfgs/anet_c3d_pdvcl.yml", "c3d", {}, [29, 100, 12, 57]),
}

TINY = dict(hidden_dim=32, nheads=8, transformer_ff_dim=48, rnn_size=32, input_encoding_size=24, att_hid_size=20,
            max_caption_len=12)


@dataclass
class Scale:
    """Sizes of one run: the tiny fixtures (default) or the published sizes (benchmarks/bench_parity.py)."""

    sizes: dict = field(default_factory=lambda: dict(TINY))  # opts overrides; {} keeps the config file's
    vocab_words: int | None = 150  # None: the reference's whole vocabulary
    text_dim: int = 24  # CLIP embedding size (768 for ViT-L/14)
    bank_size: int = 400
    lengths: list | None = None  # native feature lengths (None: the configuration's four)
    durations: list | None = None
    noise_width: int | None = None  # scale the weight noise to fan-in as a model of this width (see `perturb`)


FULL_BANKS = {"anet": 37421, "yc2": 10337}  # CM2's bank sizes (ActivityNet train captions; YouCook2 train)
EOS_BIAS = 4.0


def pdvc_fixture(root: Path, name: str, out: Path, seed: int, scale: Scale | None = None):
    """Build, save and run one PDVC configuration."""
    scale = scale or Scale()
    cfg, feature_type, overrides, lengths = PDVC_CONFIGS[name]
    lengths = scale.lengths or lengths
    with reference_root(root), tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        import opts as reference_opts

        sys.argv = ["train.py", "--cfg_path", cfg]
        opt = reference_opts.parse_opts()
        vocab_path = out / "vocabulary.json"
        out.mkdir(parents=True, exist_ok=True)
        opt.vocab_size = small_vocabulary(root / "data/anet/vocabulary_activitynet.json", scale.vocab_words, vocab_path)
        opt.dict_file = "vocabulary.json"
        opt.device = "cpu"
        opt.visual_feature_folder = str(tmp / "features") if isinstance(feature_type, str) else [str(tmp / "features")]
        opt.visual_feature_type = feature_type
        vars(opt).update(scale.sizes)
        vars(opt).update(overrides)

        from pdvc.pdvc import build
        from data.video_dataset import PropSeqDataset, collate_fn
        import eval_utils

        patch_deformable_attention("pdvc")
        torch.manual_seed(seed)
        model, criterion, postprocessors = build(opt)
        if opt.hidden_dim != 512:
            tiny_duration_embedding(model, opt.hidden_dim)
        perturb(model, seed, width=scale.noise_width)
        with torch.no_grad():  # so that some greedy captions end before max_caption_len
            model.caption_head[0].logit.bias[0] += EOS_BIAS
        model.eval()
        save_checkpoint(out, model, opt)
        shutil.copy(vocab_path, tmp / "vocabulary.json")

        videos = make_videos(seed, lengths, scale.durations or [23.4, 151.0, 57.25, 300.5], opt.feature_dim)
        (tmp / "features").mkdir()
        for v in videos:
            np.save(tmp / "features" / f"{v['key'][:13]}.npy", v["features"])
        annotations = {v["key"]: {k: v[k] for k in ("duration", "timestamps", "sentences")} for v in videos}
        json.dump(annotations, open(tmp / "anno.json", "w"))
        dataset = PropSeqDataset(str(tmp / "anno.json"), opt.visual_feature_folder, str(tmp / "vocabulary.json"),
                                 False, "gt", opt)
        recorder = Recorder(model.transformer)
        records = []
        for index in range(len(videos)):
            dt = collate_fn([dataset[index]])
            loader = _Loader([dt], dataset)
            json_path = tmp / f"pred{index}.json"
            with torch.no_grad():
                eval_utils.evaluate(model, criterion, postprocessors, loader, str(json_path), logger=None,
                                    alpha=opt.ec_alpha, device="cpu", skip_lang_eval=True)
            # evaluate() ran the model once; run it again for the raw outputs (deterministic in eval mode)
            recorder.take()
            with torch.no_grad():
                dt = {k: v for k, v in collate_fn([dataset[index]]).items()}
                start = time.perf_counter()
                output, _ = model(dt, criterion, opt.transformer_input_type, eval_mode=True)
                seconds = time.perf_counter() - start
            record = recorder.take()
            record["seconds"] = seconds
            record.update(record_outputs(output))
            record["resize_index"] = resize_index(dt["video_tensor"][0], videos[index]["features"])
            predictions = json.load(open(json_path))["results"][videos[index]["key"]]
            record["events"] = to_py(rerank_events(eval_utils.reranking, predictions, tmp / f"rr{index}.json", opt.ec_alpha))
            records.append(record)
    return opt, videos, records


# ------------------------------------------------------------------------------------------------ CM2

CM2_CONFIGS = {
    # name: (cfg, bank, window count, soft_k, native lengths, durations)
    "cm2_anet": ("cfgs/anet_clip_cm2.yml", "anet", 20, 100, [61, 100, 143, 40], [61.2, 100.0, 143.5, 40.8]),
    "cm2_yc2": ("cfgs/yc2_clip_cm2.yml", "yc2", 50, 80, [150, 73, 211, 100], [300.2, 146.0, 421.9, 200.0]),
}
TEXT_DIM = 24  # tiny CLIP embedding size (768 in ViT-L/14): image features and memory-bank text alike


def tiny_openai_clip(seed: int, embed_dim: int = TEXT_DIM):
    """A tiny CLIP in OpenAI's layout (open_clip's CLIP class with QuickGELU names every tensor as OpenAI does)."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.model.CLIP(
        embed_dim=embed_dim,
        vision_cfg=open_clip.model.CLIPVisionCfg(layers=1, width=64, head_width=64, patch_size=16, image_size=32),
        text_cfg=open_clip.model.CLIPTextCfg(context_length=8, vocab_size=64, width=64, heads=1, layers=1),
        quick_gelu=True,
    )
    model.encode_text = lambda tokens, _m=model: torch.zeros(tokens.shape[0], embed_dim)  # unused by the forward
    return model


def resize_cm2_literals(model, cm2_model, hidden: int, text_dim: int) -> None:
    """CM2's text-path modules written at 512 (its hidden size) and 768 (CLIP's), re-made at a tiny width."""
    model.pos_embed = cm2_model.RetPositionEmbeddingSine(hidden, normalize=True)
    model.pos_embed.max_duration = 4
    model.pos_embed.duration_embed_layer = torch.nn.Linear(4, 4)  # unused by its forward, but saved
    relu = [True, False]
    model.down_proj = torch.nn.Sequential(
        cm2_model.LinearLayer(text_dim, hidden, layer_norm=True, dropout=0.5, relu=relu[0]),
        cm2_model.LinearLayer(hidden, hidden, layer_norm=True, dropout=0.5, relu=relu[1]),
    )
    # never read by its forward with --ret_encoder avg, but in its checkpoints: kept, small
    model.text_positional_encoding = cm2_model.PositionalEncoding(text_dim, max_len=8)
    model.text_transformer_layers = torch.nn.ModuleList(
        torch.nn.TransformerEncoderLayer(d_model=text_dim, nhead=2, dim_feedforward=8) for _ in range(3)
    )
    model.cls_token = torch.nn.Parameter(torch.randn(1, 1, text_dim))


def cm2_fixture(root: Path, name: str, out: Path, seed: int, scale: Scale | None = None):
    """Build, save and run one CM2 configuration (windows retrieval on, as its published runs)."""
    scale = scale or Scale()
    cfg, bank_name, windows, soft_k, lengths, durations = CM2_CONFIGS[name]
    lengths, durations = scale.lengths or lengths, scale.durations or durations
    text_dim = scale.text_dim
    with reference_root(root), cuda_on_cpu(), tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip_model = tiny_openai_clip(seed, text_dim)
        _stub("clip", load=lambda *a, **k: (clip_model, None),
              tokenize=lambda texts, truncate=True: torch.zeros(len(texts) if isinstance(texts, list) else 1, 8, dtype=torch.long))
        import opts as reference_opts

        # the flags of CM2's train_{anet,yc2}.sh
        sys.argv = ["train.py", "--cfg_path", cfg, "--text_crossAttn", "--text_crossAttn_loc", "after", "--ret_encoder",
                    "avg", "--sim_attention", "cls_token", "--target_domain", bank_name, "--bank_type", bank_name,
                    "--soft_k", str(soft_k), "--window_size", str(windows)]
        opt = reference_opts.parse_opts()
        out.mkdir(parents=True, exist_ok=True)
        vocab_source = {"anet": "data/anet/vocabulary_activitynet_thres2.json", "yc2": "data/yc2/vocabulary_youcook2.json"}
        opt.vocab_size = small_vocabulary(root / vocab_source[bank_name], scale.vocab_words, out / "vocabulary.json")
        opt.dict_file = "vocabulary.json"
        opt.device = "cpu"
        opt.feature_dim = text_dim
        opt.visual_feature_folder = [str(tmp / "clipvitl14.pth")]
        opt.bank_path = str(tmp / "bank")
        vars(opt).update(scale.sizes)
        if not opt.text_crossAttn:
            opt.cap_num_feature_levels = 4

        import cm2.cm2_ret_encdec_clip as cm2_model
        from cm2.cm2_ret_encdec_clip import build
        from data.video_dataset import PropSeqDataset, collate_fn
        from ret_utils import load_clip_memory_bank
        import eval_utils_clip

        patch_deformable_attention("cm2")
        torch.manual_seed(seed)
        model, criterion, contrastive_criterion, postprocessors = build(opt)
        hidden = opt.hidden_dim
        if hidden != 512:  # the tiny fixtures; the published sizes need nothing re-made
            tiny_duration_embedding(model, hidden)
            resize_cm2_literals(model, cm2_model, hidden, text_dim)
        perturb(model, seed, skip=("clip_model.",), width=scale.noise_width)
        with torch.no_grad():
            model.caption_head[0].logit.bias[0] += EOS_BIAS / 2  # its text path already favours short captions
        model.clip_model.half()  # CM2's checkpoints carry the fp16 CLIP that clip.load gives on a GPU
        model.eval()
        save_checkpoint(out, model, opt)
        model.clip_model.float()

        # memory bank in CM2's files: fp16 CLIP text embeddings (M, 1, D), sentences, video ids
        rng = np.random.default_rng(seed + 1)
        bank_size = scale.bank_size
        bank_dir = out / "bank" / bank_name / "clip"
        bank_dir.mkdir(parents=True, exist_ok=True)
        embeds = (rng.normal(0, 1, size=(bank_size, 1, text_dim)) * rng.uniform(0.5, 3.0, size=(bank_size, 1, 1)))
        np.save(bank_dir / f"{bank_name}_clip_token_embeds.npy", embeds.astype(np.float16))
        sentences = np.array([f"sentence number {i}" for i in range(bank_size)])
        np.save(bank_dir / f"{bank_name}_scene_sentences.npy", sentences)
        np.save(bank_dir / f"{bank_name}_scene_videoID.npy", np.array([f"v_train{i // 3:05d}" for i in range(bank_size)]))
        shutil.copytree(out / "bank", tmp / "bank")
        memory_bank = load_clip_memory_bank(opt)
        memory_bank["vid_sent_embeds"] = torch.tensor(memory_bank["vid_sent_embeds"]).to("cuda")

        videos = make_videos(seed, lengths, durations, text_dim)
        torch.save({v["key"]: torch.from_numpy(v["features"]).half() for v in videos}, tmp / "clipvitl14.pth")
        annotations = {v["key"]: {k: v[k] for k in ("duration", "timestamps", "sentences")} for v in videos}
        json.dump(annotations, open(tmp / "anno.json", "w"))
        shutil.copy(out / "vocabulary.json", tmp / "vocabulary.json")
        dataset = PropSeqDataset(str(tmp / "anno.json"), opt.visual_feature_folder, str(tmp / "vocabulary.json"),
                                 False, "gt", opt)
        recorder = Recorder(model.transformer)
        records = []
        for index in range(len(videos)):
            dt = collate_fn([dataset[index]])
            with torch.no_grad():
                start = time.perf_counter()
                output, _ = model(dt, criterion, contrastive_criterion, opt.transformer_input_type, memory_bank,
                                  eval_mode=True)
                seconds = time.perf_counter() - start
            record = recorder.take()
            record["seconds"] = seconds
            record.update(record_outputs(output))
            record["resize_index"] = resize_index(dt["video_tensor"][0], videos[index]["features"])
            # the retrieved window vectors CM2 feeds its text path (one more call of its own selection)
            with torch.no_grad():
                _, window_embeds, _ = model.softattention_select(memory_bank, dt["video_tensor"], True, dt, None)
            record["window_embeds"] = window_embeds[0].clone()
            loader = _Loader([dt], dataset)
            predictions = video_results(postprocessors["bbox"], output, videos[index]["duration"], loader)
            record["events"] = to_py(rerank_events(eval_utils_clip.reranking, predictions, tmp / f"rr{index}.json",
                                                   opt.ec_alpha, cl_score_weight=0.0))
            records.append(record)
    return opt, videos, records


# ------------------------------------------------------------------------------------------------ main


def write_expected(out: Path, name: str, reference: str, commit: str, opt, videos, records):
    """expected.pt: inputs (fp16 features), every recorded tensor, the final events; plus a short summary."""
    expected = {
        "name": name,
        "reference": reference,
        "commit": commit,
        "videos": [
            {"key": v["key"], "duration": v["duration"], "features": torch.from_numpy(v["features"]).half(),
             "timestamps": v["timestamps"], "sentences": v["sentences"]}
            for v in videos
        ],
        "records": [{k: v for k, v in r.items() if k != "seconds"} for r in records],  # timings vary by run
    }
    torch.save(expected, out / "expected.pt")
    sizes = {p.name: p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    print(f"{name}: {sum(sizes.values()) / 1e6:.2f} MB", {k: f"{v / 1e3:.0f} kB" for k, v in sizes.items()})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdvc", type=Path, help=f"PDVC checkout at {PDVC_COMMIT}")
    parser.add_argument("--cm2", type=Path, help=f"CM2_DVC checkout at {CM2_COMMIT}")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/parity"))
    parser.add_argument("--only", nargs="*", help="configuration names to (re)build (default: all)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    torch.set_num_threads(1)
    for seed, name in enumerate(PDVC_CONFIGS, start=11):
        if args.pdvc and (not args.only or name in args.only):
            folder = out / name
            shutil.rmtree(folder, ignore_errors=True)
            opt, videos, records = pdvc_fixture(args.pdvc.resolve(), name, folder, seed)
            write_expected(folder, name, "ttengwang/PDVC", PDVC_COMMIT, opt, videos, records)
    for seed, name in enumerate(CM2_CONFIGS, start=31):
        if args.cm2 and (not args.only or name in args.only):
            folder = out / name
            shutil.rmtree(folder, ignore_errors=True)
            opt, videos, records = cm2_fixture(args.cm2.resolve(), name, folder, seed)
            write_expected(folder, name, "ailab-kyunghee/CM2_DVC", CM2_COMMIT, opt, videos, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
