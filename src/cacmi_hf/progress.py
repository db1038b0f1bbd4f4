"""Progress for people and for logs: a bar on a terminal, a line every N % with rates anywhere else.

A tqdm bar redraws itself many times a second; in a CI log or a file each redraw is a line of its own, and a
ten-minute run buries its results under thousands of them. So `progress(...)` gives a tqdm bar only when
stderr is a terminal (or when bars are asked for: `cacmi --progress ...`, `CACMI_PROGRESS=bar`), and
otherwise a `LogProgress` that prints one line each time another `every` percent of the work is done:

    extract-features: 40% (96/240 video) 18.2 video/s, 5 s elapsed, ~8 s left, failed=0

`CACMI_PROGRESS` (`auto`, `bar`, `log`, `off`) and `CACMI_PROGRESS_EVERY` (percent, default 10) set the
defaults; `set_progress_mode` changes them in a running process.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

MODES = ("auto", "bar", "log", "off")
DEFAULT_EVERY = 10.0

_mode: str | None = None  # None: CACMI_PROGRESS, read when first needed


def _check_mode(mode: str, where: str) -> str:
    """`mode` if it is one of MODES, else a ValueError naming where it came from."""
    if mode not in MODES:
        raise ValueError(f"{where} must be one of {MODES}, got {mode!r}.")
    return mode


def set_progress_mode(mode: str | None) -> None:
    """Use `mode` ("auto", "bar", "log" or "off") from now on; None goes back to `CACMI_PROGRESS` (default "auto")."""
    global _mode
    _mode = None if mode is None else _check_mode(mode, "progress mode")


def progress_mode(stream: TextIO | None = None) -> str:
    """The mode in force, "bar", "log" or "off": "auto" means a bar when `stream` (stderr) is a terminal, else log lines."""
    mode = _mode or _check_mode(os.environ.get("CACMI_PROGRESS", "auto").strip().lower() or "auto", "CACMI_PROGRESS")
    if mode != "auto":
        return mode
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "log"


def _every_percent() -> float:
    """`CACMI_PROGRESS_EVERY` as a percent in (0, 100], or the default 10."""
    raw = os.environ.get("CACMI_PROGRESS_EVERY")
    if not raw:
        return DEFAULT_EVERY
    value = float(raw)
    if not 0 < value <= 100:
        raise ValueError(f"CACMI_PROGRESS_EVERY must be a percent in (0, 100], got {raw!r}.")
    return value


def _duration(seconds: float) -> str:
    """Seconds as "42 s", "3 min 05 s" or "1 h 02 min"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _rate(count: float, seconds: float, unit: str) -> str:
    """Items per second, or seconds per item when slower than one a second."""
    if count <= 0 or seconds <= 0:
        return f"? {unit}/s"
    per_second = count / seconds
    return f"{per_second:.3g} {unit}/s" if per_second >= 1 else f"{seconds / count:.3g} s/{unit}"


class LogProgress:
    """tqdm's interface as this package uses it (iteration, `update`, `set_postfix`, `close`, `n`, `total`), as log lines.

    A line goes to `file` (stderr) each time the count passes another `every` percent of `total`, and once at
    `close` if the last one did not say 100 %. Without a total, only `close` prints (the count and the rate).
    """

    def __init__(
        self,
        iterable: Iterable | None = None,
        total: float | None = None,
        desc: str = "",
        unit: str = "it",
        every: float | None = None,
        file: TextIO | None = None,
        clock=time.perf_counter,
        **_ignored: Any,  # tqdm options with no meaning in a log (leave, dynamic_ncols, ...)
    ):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.every = float(every) if every is not None else _every_percent()
        if not 0 < self.every <= 100:
            raise ValueError(f"LogProgress every must be a percent in (0, 100], got {every!r}.")
        self.file = file
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self._clock = clock
        self._start = clock()
        self._printed_step = 0  # how many `every`-percent steps have been printed
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self) -> int:
        return int(self.total) if self.total is not None else len(self.iterable)

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line(self) -> str:
        """`desc: 40% (4/10 step) 2.1 step/s, 2 s elapsed, ~3 s left, key=value`."""
        elapsed = self._clock() - self._start
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            fraction = min(self.n / self.total, 1.0)
            count = f"{fraction:.0%} ({self.n:g}/{self.total:g} {self.unit})"
        else:
            fraction, count = None, f"{self.n:g} {self.unit}"
        parts = [f"{head}{count} {_rate(self.n, elapsed, self.unit)}", f"{_duration(elapsed)} elapsed"]
        if fraction is not None and 0 < fraction < 1 and elapsed > 0:
            parts.append(f"~{_duration(elapsed * (self.total - self.n) / self.n)} left")
        parts += [f"{key}={value}" for key, value in self.postfix.items()]
        return ", ".join(parts)

    def _print(self) -> None:
        print(self._line(), file=self.file if self.file is not None else sys.stderr, flush=True)

    def update(self, n: float = 1) -> None:
        """Count `n` more items; print a line when another `every` percent is done."""
        self.n += n
        if not self.total:
            return
        step = math.floor(100.0 * min(self.n / self.total, 1.0) / self.every + 1e-9)
        if step > self._printed_step:
            self._printed_step = step
            self._print()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """Values shown at the end of the next line (like tqdm's)."""
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def close(self) -> None:
        """Print the final line unless the last one already said 100 % (idempotent)."""
        if self._closed:
            return
        self._closed = True
        finished = self.total and self.n >= self.total and self._printed_step * self.every >= 100 - 1e-9
        if not finished:
            self._print()


def progress(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    leave: bool = True,
    every: float | None = None,
    file: TextIO | None = None,
):
    """A tqdm bar (terminal, or mode "bar"), a `LogProgress` (mode "log"), or a silent tqdm (`enabled=False`, mode "off").

    A transient bar (`leave=False`, an inner step such as one metric of an evaluation) is a terminal nicety:
    in a log it stays silent, or every evaluation of a training run would add its own lines.
    """
    from tqdm.auto import tqdm

    stream = file if file is not None else sys.stderr
    mode = progress_mode(stream) if enabled else "off"
    if mode == "log" and not leave:
        mode = "off"
    if mode == "log":
        return LogProgress(iterable, total=total, desc=desc, unit=unit, every=every, file=file)
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=stream, disable=mode == "off")


def quiet_library_bars() -> None:
    """Turn off the bars transformers, huggingface_hub and datasets draw themselves (loading weights, writing shards,
    `Map`): they redraw in place too, so a log gets them only where `progress_mode()` is "bar"."""
    import huggingface_hub.utils
    from transformers.utils import logging as transformers_logging

    huggingface_hub.utils.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    else:  # read when datasets is first imported; importing it here would cost every command seconds
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def trainer_progress_callback(every: float | None = None):
    """A transformers `TrainerCallback` logging training steps as `LogProgress` lines (use with `disable_tqdm=True`)."""
    from transformers import TrainerCallback

    class TrainerProgressLog(TrainerCallback):
        """One line per `every` percent of `state.max_steps`, on the main process only."""

        def __init__(self):
            self.log: LogProgress | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.log = LogProgress(total=state.max_steps, desc="train", unit="step", every=every)
                self.log.n = state.global_step  # a resumed run starts where it stopped

        def on_step_end(self, args, state, control, **kwargs):
            if self.log is not None:
                self.log.update(state.global_step - self.log.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.log is not None and logs and "loss" in logs:
                self.log.set_postfix(loss=f"{logs['loss']:.4g}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.log is not None:
                self.log.close()
                self.log = None

    return TrainerProgressLog()


__all__ = [
    "LogProgress",
    "MODES",
    "progress",
    "progress_mode",
    "quiet_library_bars",
    "set_progress_mode",
    "trainer_progress_callback",
]
