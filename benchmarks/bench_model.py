"""Model cost: parameters per module group, forward (loss) / generate latency and peak memory.

    MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736 python benchmarks/bench_model.py

Prints markdown tables: presets × batch 1/16, the growth with L (100..800) and with the memory-bank
size (10k..1M). Peak memory is the largest resident-set growth seen by a 1 ms sampler during the
call (CPU), or torch's peak allocation on CUDA. Times are medians over --repeats runs.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import threading
import time
from typing import Callable

import psutil
import torch

from cacmi_hf import CACMIConfig, CACMIForDenseCaptioning

# real caption vocabularies (DESIGN §4) and memory banks (DESIGN §3) of the two benchmarks
PRESET_SIZES = {"activitynet": dict(vocab_size=8500, memory_size=37421), "youcook2": dict(vocab_size=1600, memory_size=10000)}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _heap_in_use() -> Callable[[], int]:
    """Bytes the C heap has handed out (glibc `mallinfo2`: heap in use + mmapped blocks), else the RSS.

    RSS cannot show a second call's peak once glibc keeps freed buffers (the malloc settings above);
    the bytes in use can.
    """
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
        mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        proc = psutil.Process()
        return lambda: proc.memory_info().rss

    def in_use() -> int:
        info = mallinfo2()
        return info.uordblks + info.hblkhd

    return in_use


class PeakMemory:
    """Largest growth of the memory in use over a `with` block, in MiB: the C heap (CPU, sampled every
    millisecond) or torch's allocator (CUDA)."""

    def __init__(self, device: torch.device):
        self.device, self.peak, self._stop = device, 0.0, threading.Event()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        in_use = _heap_in_use()
        self._base = in_use()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, in_use() - self._base)
                time.sleep(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
        self.peak /= 2**20


def build(preset: str, device: torch.device, **overrides) -> CACMIForDenseCaptioning:
    """A randomly initialised model of a preset with a random memory bank of the real size."""
    sizes = {**PRESET_SIZES[preset], **overrides}
    torch.manual_seed(0)
    model = CACMIForDenseCaptioning(CACMIConfig.from_preset(preset, **sizes)).to(device).eval()
    bank = torch.randn(sizes["memory_size"], model.config.text_dim)
    model.set_memory_bank(bank.to(device), torch.arange(sizes["memory_size"], device=device) // 4)
    return model


def inputs(config: CACMIConfig, batch: int, device: torch.device, num_frames: int | None = None, events: int = 4):
    """Random features with every video full length, and labels of `events` events with 8-word captions."""
    g = torch.Generator().manual_seed(1)
    frames = num_frames or config.num_frames
    starts = torch.rand(batch, events, generator=g) * 0.6
    caption = torch.randint(4, config.vocab_size, (batch, events, 10), generator=g)
    caption[..., 0], caption[..., -1] = config.bos_token_id, config.eos_token_id
    data = dict(
        video_features=torch.randn(batch, frames, config.feature_dim, generator=g),
        video_mask=torch.ones(batch, frames, dtype=torch.bool),
        durations=torch.full((batch,), 120.0),
        video_ids=torch.arange(batch),  # bank videos (4 captions each), for the training-time same-video exclusion
        event_segments=torch.stack([starts, starts + 0.3], -1),
        event_mask=torch.ones(batch, events, dtype=torch.bool),
        caption_ids=caption,
    )
    return {k: v.to(device) for k, v in data.items()}


def timed(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    """Median seconds of `fn()` over `repeats` runs (after one warm-up) and the peak memory of one run."""
    fn()
    times, peak = [], 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        # the 1 ms RSS sampler runs in a thread that mostly sleeps: timing and peak come from the same calls
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peak = max(peak, mem.peak)
    return statistics.median(times), peak


def forward_and_generate(model, batch, device, repeats, num_frames=None):
    """(forward+backward seconds, forward peak MiB, generate seconds, generate peak MiB)."""
    data = inputs(model.config, batch, device, num_frames)
    video = {k: data[k] for k in ("video_features", "video_mask", "durations")}

    def train_step():
        model.train()
        model(**data).loss.backward()
        model.zero_grad(set_to_none=True)
        model.eval()

    def gen():
        model.generate(**video)

    fwd_s, fwd_mb = timed(train_step, repeats, device)
    gen_s, gen_mb = timed(gen, repeats, device)
    return fwd_s, fwd_mb, gen_s, gen_mb


def parameter_table(model: CACMIForDenseCaptioning) -> list[str]:
    """Parameter count per top-level module group."""
    groups: dict[str, int] = {}
    for name, p in model.named_parameters():
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "cacmi" else parts[0]
        groups[key] = groups.get(key, 0) + p.numel()
    rows = ["| module group | parameters |", "| --- | ---: |"]
    rows += [f"| {k} | {v:,} |" for k, v in sorted(groups.items(), key=lambda kv: -kv[1])]
    rows.append(f"| **total** | **{sum(groups.values()):,}** |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-scaling", action="store_true", help="only the preset table")
    parser.add_argument("--skip-parameters", action="store_true", help="no parameter table")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_flush_denormal(True)
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}\n")

    if not args.skip_parameters:
        print("## Parameters (ActivityNet preset)\n")
        print("\n".join(parameter_table(build("activitynet", device))) + "\n")

    print("## Presets\n")
    print("| preset | batch | train step s | train peak MiB | generate s | generate peak MiB | videos/s (generate) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    throughput = {}
    for preset in ("activitynet", "youcook2"):
        model = build(preset, device)
        for batch in (1, 16):
            fwd_s, fwd_mb, gen_s, gen_mb = forward_and_generate(model, batch, device, args.repeats)
            throughput[preset, batch] = batch / gen_s
            print(f"| {preset} | {batch} | {fwd_s:.3f} | {fwd_mb:.0f} | {gen_s:.3f} | {gen_mb:.0f} | {batch / gen_s:.2f} |")
    print()
    for preset in ("activitynet", "youcook2"):
        ratio = throughput[preset, 16] / throughput[preset, 1]
        print(f"- {preset}: batch-16 generate throughput = {ratio:.1f}x batch 1 (target >= 5x)")
    print()
    if args.skip_scaling:
        return

    print("## Growth with L (ActivityNet preset, batch 4; cluster span limit 3L/c)\n")
    print("| L | train step s | generate s | generate s / L (ms) | generate peak MiB |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for frames in (100, 200, 400, 800):
        model = build("activitynet", device, num_frames=frames)
        fwd_s, _, gen_s, gen_mb = forward_and_generate(model, 4, device, args.repeats)
        print(f"| {frames} | {fwd_s:.3f} | {gen_s:.3f} | {1000 * gen_s / frames:.2f} | {gen_mb:.0f} |")
    print()

    print("## Growth with the memory bank (ActivityNet preset, batch 16, generate)\n")
    print("| entries | generate s | generate peak MiB | bank MiB |")
    print("| ---: | ---: | ---: | ---: |")
    for entries in (10_000, 100_000, 1_000_000):
        model = build("activitynet", device, memory_size=entries)
        data = inputs(model.config, 16, device)
        video = {k: data[k] for k in ("video_features", "video_mask", "durations")}
        gen_s, gen_mb = timed(lambda: model.generate(**video), args.repeats, device)
        bank_mb = model.memory_bank.embeddings.numel() * 4 / 2**20
        print(f"| {entries:,} | {gen_s:.3f} | {gen_mb:.0f} | {bank_mb:.0f} |")
        del model


if __name__ == "__main__":
    main()
