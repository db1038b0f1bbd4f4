"""Side by side with PDVC's reference model at the ActivityNet sizes: greedy generation and training steps.

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 \
        python benchmarks/bench_vs_pdvc.py --pdvc /path/to/PDVC

`--pdvc` is a checkout of github.com/ttengwang/PDVC kept outside this repository (nothing of it is
copied here). Its model is built with its own `opts.parse_opts` + `pdvc.pdvc.build` from its
`cfgs/anet_c3d_pdvc.yml` (the LSTM-DSA captioner: 10 queries, 2+2 layers, hidden and FFN 512, 4
levels and points, 30-word captions), with `feature_dim` and `vocab_size` set to ours. On CPU its
deformable attention takes its own pure-PyTorch path (`ms_deform_attn_core_pytorch`); no compiled op
is needed. With `--device cuda` PDVC calls its compiled op (`MultiScaleDeformableAttention`, built from
its `pdvc/ops`) when that imports, else the script routes it to the same pure-PyTorch path and the
header says which ran. Its Python needs `six` and `colorlog` besides what `cacmi_hf` installs.

Both models get random weights (each library's own initialisation, seed 0) and the same random
features; after one untimed batch-1 call per model, the cases run round-robin (one run of each case
per round, so load changes hit every case alike) and the tables give medians. PDVC decodes one video per call (its captioner asserts batch 1);
ours is timed at batch 1 and at batch 16, with the PDVC-equivalent switches (`use_cfa`, `use_cfe`,
`decoder_text_cross_attention` off) and as full CACMI (random bank of the real ActivityNet size).
Generation = the model call that yields segments, scores, counts and greedy captions for a batch
(PDVC: `model(dt, criterion, eval_mode=True)`, which also runs its matcher on the given targets,
as its evaluation loop does; ours: `model.generate`). A training step = forward with labels,
backward, gradient clipping at 100, Adam step (lr 5e-5, weight decay 1e-4), as both recipes train.
Without a checkout the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cacmi_hf import CACMIConfig
from cacmi_hf.modeling_cacmi import CACMIForDenseCaptioning

PDVC_CONFIG = "cfgs/anet_c3d_pdvc.yml"  # PDVC's ActivityNet LSTM-DSA recipe (its other anet configs only swap features)
PDVC_SWITCHES_OFF = dict(use_cfa=False, use_cfe=False, decoder_text_cross_attention=False)


@contextlib.contextmanager
def _inside(folder: Path):
    """Run with `folder` as working directory and first on sys.path (PDVC resolves its configs and modules there)."""
    previous = os.getcwd()
    sys.path.insert(0, str(folder))
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def build_pdvc(checkout: Path, feature_dim: int, vocab_size: int, device: str = "cpu"):
    """PDVC's own model, criterion and options for the ActivityNet LSTM-DSA config on `device`, seed 0."""
    with _inside(checkout):
        try:
            from opts import parse_opts
            from pdvc.pdvc import build
            from data.video_dataset import collate_fn
        except ModuleNotFoundError as err:
            raise SystemExit(
                f"Importing PDVC from {checkout} failed ({err}); install its extra Python packages "
                "(`pip install six colorlog`) into this environment."
            ) from None
        argv, sys.argv = sys.argv, ["pdvc", "--cfg_path", PDVC_CONFIG, "--device", device]
        try:
            with contextlib.redirect_stdout(open(os.devnull, "w")):
                opt = parse_opts()
                opt.feature_dim, opt.vocab_size = feature_dim, vocab_size
                torch.manual_seed(0)
                model, criterion, _ = build(opt)
        finally:
            sys.argv = argv
        opt.deformable_op = _pdvc_deformable_op(device)
    return model.to(device), criterion, opt, collate_fn


def _pdvc_deformable_op(device: str) -> str:
    """Which deformable-attention code PDVC runs on `device`; on CUDA without its compiled op, its PyTorch path."""
    if device == "cpu":
        return "its pure-PyTorch path (CPU)"
    try:
        import MultiScaleDeformableAttention  # noqa: F401  (PDVC's compiled op)
        return "its compiled CUDA op"
    except ImportError:
        import pdvc.ops.modules.ms_deform_attn as module
        from pdvc.ops.functions import ms_deform_attn_core_pytorch

        class _PyTorchPath:
            @staticmethod
            def apply(value, shapes, _start_index, locations, weights, _im2col_step):
                return ms_deform_attn_core_pytorch(value, shapes, locations, weights)

        module.MSDeformAttnFunction = _PyTorchPath
        return "its pure-PyTorch path (its compiled CUDA op was not built)"


def random_videos(batch: int, frames: int, dim: int, events: int, words: int, vocab: int, duration: float, seed: int = 1):
    """Features (B, L, D) and `events` events per video with `words`-word captions (word ids 4..vocab-1)."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, frames, dim, generator=g)
    starts = torch.rand(batch, events, generator=g) * 0.6
    segments = torch.stack([starts, starts + 0.3], -1)  # (B, E, 2) normalised
    word_ids = torch.randint(4, vocab, (batch, events, words), generator=g)
    return features, segments, word_ids, duration


def ours_inputs(config, features, segments, word_ids, duration, batch: int):
    """Our model's keyword inputs for the first `batch` videos: [BOS, words, EOS] captions."""
    b, e, w = word_ids[:batch].shape
    caption_ids = torch.full((b, e, w + 2), config.pad_token_id, dtype=torch.long, device=word_ids.device)
    caption_ids[..., 0], caption_ids[..., 1 : w + 1], caption_ids[..., w + 1] = config.bos_token_id, word_ids[:batch], config.eos_token_id
    device = features.device
    return dict(
        video_features=features[:batch],
        video_mask=torch.ones(b, features.shape[1], dtype=torch.bool, device=device),
        durations=torch.full((b,), duration, device=device),
        video_ids=torch.arange(b, device=device),
        event_segments=segments[:batch],
        event_mask=torch.ones(b, e, dtype=torch.bool, device=device),
        caption_ids=caption_ids,
    )


def pdvc_batch(collate_fn, features, segments, word_ids, duration, device="cpu"):
    """PDVC's own collated batch of the first video on `device` (PDVC's token 0 is both BOS and EOS)."""
    frames = features.shape[1]
    seconds = (segments[0] * duration).tolist()
    item = (
        features[0].numpy(),
        [[s * frames / duration, e * frames / duration] for s, e in seconds],
        [0] * len(seconds),
        [np.concatenate([[0], w, [0]]) for w in word_ids[0].numpy()],
        seconds,
        duration,
        ["x"] * len(seconds),
        "v_bench",
    )
    dt = collate_fn([item])
    move = lambda x: x.to(device) if isinstance(x, torch.Tensor) else x  # noqa: E731
    dt = {k: [{kk: move(vv) for kk, vv in t.items()} for t in v] if k == "video_target" else move(v) for k, v in dt.items()}
    return collections.defaultdict(lambda: None, dt)


def build_ours(full: bool, vocab_size: int, memory_size: int) -> CACMIForDenseCaptioning:
    """Our ActivityNet-preset model, seed 0: full CACMI with a random bank of `memory_size`, or the PDVC switches."""
    torch.manual_seed(0)
    switches = {} if full else PDVC_SWITCHES_OFF
    config = CACMIConfig.from_preset("activitynet", vocab_size=vocab_size, **switches)
    model = CACMIForDenseCaptioning(config)
    if full:
        g = torch.Generator().manual_seed(2)
        bank = torch.nn.functional.normalize(torch.randn(memory_size, config.text_dim, generator=g), dim=-1)
        model.set_memory_bank(bank, torch.arange(memory_size) // 4)
    return model


def train_step_fn(model, run_loss, optimizer, clip: float = 100.0):
    """One optimiser step as both recipes train: forward with labels, backward, clip at 100, Adam."""

    def step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = run_loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()

    return step


def adam(model):
    """Adam as PDVC and CM2 train: lr 5e-5, L2 weight decay 1e-4."""
    return torch.optim.Adam(model.parameters(), lr=5e-5, weight_decay=1e-4)


def _sync() -> None:
    """Wait for queued GPU work, so a timer stops when the work is done."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def round_robin(cases: dict, warmups: dict, repeats: int, log: dict, key: str, json_path: Path | None) -> dict[str, list[float]]:
    """Seconds of each case over `repeats` rounds, cases interleaved; `warmups` (cheap calls) run first, untimed.

    The raw times go into `log[key]` (and the whole `log` into `json_path`, when given) after every round, so a
    run cut short keeps them.
    """
    for name, fn in warmups.items():
        fn()
        print(f"  warmed up {name}", file=sys.stderr, flush=True)
    times = {name: [] for name in cases}
    for r in range(repeats):
        for name, fn in cases.items():
            _sync()
            start = time.perf_counter()
            fn()
            _sync()
            times[name].append(time.perf_counter() - start)
        print(f"  round {r + 1}/{repeats}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()), file=sys.stderr, flush=True)
        log[key].update(times)
        if json_path is not None:
            json_path.write_text(json.dumps(log, indent=1))
    return times


def calibration_ms() -> float:
    """Median ms of a 160x512 @ 512x8501 matmul (the vocabulary projection of one batch-16 decoding step)."""
    a, b = torch.randn(160, 512), torch.randn(512, 8501)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> int:
    """Build both models, time the cases round-robin and print markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pdvc", type=Path, default=os.environ.get("PDVC_DIR"), help="PDVC checkout (or $PDVC_DIR).")
    parser.add_argument("--batch", type=int, default=16, help="our batch size (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both models (default: torch's)")
    parser.add_argument("--vocab-size", type=int, default=8500, help="caption vocabulary (ActivityNet ~8.5k)")
    parser.add_argument("--memory-size", type=int, default=37421, help="memory-bank entries (ActivityNet train captions)")
    parser.add_argument("--events", type=int, default=4, help="ground-truth events per video for the training step")
    parser.add_argument("--words", type=int, default=8, help="words per ground-truth caption")
    parser.add_argument("--skip-train", action="store_true", help="only the generation table")
    parser.add_argument("--skip-batch1", action="store_true", help="leave out our batch-1 cases")
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for both models (default cpu)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw times here (after every round)")
    args = parser.parse_args()
    if args.pdvc is None or not (Path(args.pdvc) / "pdvc" / "pdvc.py").is_file():
        print(f"PDVC checkout not found ({args.pdvc}); pass --pdvc /path/to/PDVC to run this comparison. Skipped.")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    checkout = Path(args.pdvc).resolve()

    pdvc, criterion, opt, collate_fn = build_pdvc(checkout, 768, args.vocab_size, args.device)
    ours = {"PDVC switches": build_ours(False, args.vocab_size, args.memory_size).to(args.device),
            "full CACMI": build_ours(True, args.vocab_size, args.memory_size).to(args.device)}
    config = ours["full CACMI"].config
    data = random_videos(args.batch, config.num_frames, config.feature_dim, args.events, args.words, args.vocab_size, 120.0)
    dt = pdvc_batch(collate_fn, *data, device=args.device)
    data = (*(t.to(args.device) for t in data[:3]), data[3])
    batches = [1, args.batch] if not args.skip_batch1 else [args.batch]
    calib_before = calibration_ms()
    steps: dict[str, int] = {}

    def pdvc_generate():
        pdvc.eval()
        with torch.no_grad():
            out, _ = pdvc(dt, criterion, opt.transformer_input_type, eval_mode=True)
        steps["PDVC"] = out["seq"].shape[-1] + 1  # words incl. EOS + the BOS step

    def our_generate(name, batch):
        model, inputs = ours[name], ours_inputs(config, *data, batch)

        def run():
            model.eval()
            out = model.generate(**{k: inputs[k] for k in ("video_features", "video_mask", "durations")})
            steps[f"{name} b{batch}"] = out.caption_ids.shape[-1] - 1

        return run

    gen_cases = {"PDVC b1": pdvc_generate}
    for name in ours:
        for batch in batches:
            gen_cases[f"{name} b{batch}"] = our_generate(name, batch)
    gen_warmups = {"PDVC b1": pdvc_generate, **{f"{name} b1": our_generate(name, 1) for name in ours}}
    header = _header(args, pdvc, ours, config, opt.deformable_op)
    print(header + "\n", flush=True)
    log: dict[str, dict] = {"settings": {"header": header}, "generate": {}, "train": {}}
    print("timing generation", file=sys.stderr)
    gen_times = round_robin(gen_cases, gen_warmups, args.repeats, log, "generate", args.json)
    _table("Greedy generation (ActivityNet sizes, L=100, 10 queries, <= 30 words)", gen_times, steps, "generate")

    if not args.skip_train:
        pdvc_step = train_step_fn(pdvc, lambda: _pdvc_loss(pdvc, criterion, dt, opt), adam(pdvc))
        train_cases, train_warmups = {"PDVC b1": pdvc_step}, {"PDVC b1": pdvc_step}
        for name, model in ours.items():
            optimizer = adam(model)  # shared by the model's cases: the warm-up allocates its state once
            by_batch = {
                b: train_step_fn(model, lambda m=model, i=ours_inputs(config, *data, b): m(**i).loss, optimizer)
                for b in sorted({1, *batches})
            }
            train_warmups[f"{name} b1"] = by_batch[1]
            train_cases.update({f"{name} b{b}": by_batch[b] for b in batches})
        print("timing training steps", file=sys.stderr)
        train_times = round_robin(train_cases, train_warmups, args.repeats, log, "train", args.json)
        _table(f"Training step ({args.events} events x {args.words} words per video)", train_times, None, "step")
    print(f"Load average after: {tuple(round(x, 1) for x in os.getloadavg())}; calibration matmul: "
          f"{calibration_ms():.0f} ms (before: {calib_before:.0f} ms).")
    return 0


def _header(args, pdvc, ours, config, pdvc_op: str) -> str:
    """Settings, machine and load lines printed above the tables."""
    return (
        f"device {_device_name(args.device)}; PDVC's deformable attention: {pdvc_op}.\n"
        f"torch {torch.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads; medians of {args.repeats} rounds after one batch-1 warm-up call per model.\n"
        f"Load average (1/5/15 min) before: {tuple(round(x, 1) for x in os.getloadavg())}; calibration matmul "
        f"160x512x8501: {calibration_ms():.0f} ms.\n"
        f"Parameters: PDVC {_params(pdvc):,}; ours PDVC switches {_params(ours['PDVC switches']):,}; "
        f"full CACMI {_params(ours['full CACMI']):,} (+ a {args.memory_size:,} x {config.text_dim} bank buffer)."
    )


def _device_name(device: str) -> str:
    """The GPU's name for cuda, else the CPU's."""
    return torch.cuda.get_device_name() if device.startswith("cuda") else (platform.processor() or platform.machine())


def _pdvc_loss(model, criterion, dt, opt):
    """PDVC's weighted training loss, summed as its train loop does."""
    _, loss = model(dt, criterion, opt.transformer_input_type)
    return sum(loss[k] * criterion.weight_dict[k] for k in loss if k in criterion.weight_dict)


def _params(model) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in model.parameters())


def _table(title: str, times: dict[str, list[float]], steps: dict[str, int] | None, what: str) -> None:
    """Markdown table: median seconds per call and per video, videos/s, and the ratio to PDVC at batch 1."""
    base = 1 / statistics.median(times["PDVC b1"])
    print(f"### {title}\n")
    extra = " decoding steps |" if steps else ""
    print(f"| model | batch | s per {what} (median) | s per video | videos/s | vs PDVC b1 |{extra}")
    print("| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if steps else ""))
    for name, values in times.items():
        label, batch = name.rsplit(" b", 1)
        seconds = statistics.median(values)
        rate = int(batch) / seconds
        row = f"| {label} | {batch} | {seconds:.3f} | {seconds / int(batch):.4f} | {rate:.2f} | {rate / base:.2f}x |"
        if steps:
            row += f" {steps.get(name if label != 'PDVC' else 'PDVC', '')} |"
        print(row)
    print()


if __name__ == "__main__":
    sys.exit(main())
