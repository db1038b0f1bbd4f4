"""Logs for machines, bars for people: `cacmi_hf.progress` picks a tqdm bar on a terminal and log lines elsewhere."""

import io

import pytest
from tqdm.auto import tqdm

from cacmi_hf import progress as progress_module
from cacmi_hf.progress import LogProgress, progress, progress_mode, set_progress_mode, trainer_progress_callback


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def auto_mode(monkeypatch):
    monkeypatch.delenv("CACMI_PROGRESS", raising=False)
    monkeypatch.delenv("CACMI_PROGRESS_EVERY", raising=False)
    set_progress_mode(None)
    yield
    set_progress_mode(None)


def test_log_lines_every_25_percent_with_rates():
    out, clock = io.StringIO(), Clock()
    log = LogProgress(total=10, desc="extract-features", unit="video", every=25, file=out, clock=clock)
    for _ in range(10):
        clock.now += 0.4  # 2.5 videos a second
        log.update(1)
        if log.n == 2:
            log.set_postfix(failed=0)
    log.close()  # already said 100 %: no second final line
    assert out.getvalue().splitlines() == [
        "extract-features: 30% (3/10 video) 2.5 video/s, 1 s elapsed, ~3 s left, failed=0",
        "extract-features: 50% (5/10 video) 2.5 video/s, 2 s elapsed, ~2 s left, failed=0",
        "extract-features: 80% (8/10 video) 2.5 video/s, 3 s elapsed, ~1 s left, failed=0",
        "extract-features: 100% (10/10 video) 2.5 video/s, 4 s elapsed, failed=0",
    ]


def test_log_iteration_slow_rates_and_an_early_close():
    out, clock = io.StringIO(), Clock()
    seen = []
    for item in LogProgress(range(4), desc="train", unit="step", every=50, file=out, clock=clock):
        clock.now += 90.0  # slower than one a second: seconds per step
        seen.append(item)
    assert seen == [0, 1, 2, 3]
    assert out.getvalue().splitlines() == [
        "train: 50% (2/4 step) 90 s/step, 3 min 00 s elapsed, ~3 min 00 s left",
        "train: 100% (4/4 step) 90 s/step, 6 min 00 s elapsed",
    ]
    out = io.StringIO()
    stopped = LogProgress(total=8, desc="train", unit="step", every=50, file=out, clock=clock)
    stopped.update(3)  # 37 %: under the first step, nothing yet
    assert out.getvalue() == ""
    stopped.close()
    stopped.close()  # idempotent
    assert out.getvalue().splitlines() == ["train: 38% (3/8 step) ? step/s, 0 s elapsed"]


def test_log_without_total_prints_once_at_close():
    out, clock = io.StringIO(), Clock()
    log = LogProgress(desc="pairs", unit="pair", file=out, clock=clock)
    log.update(30)
    clock.now += 10.0
    assert out.getvalue() == ""
    log.close()
    assert out.getvalue().splitlines() == ["pairs: 30 pair 3 pair/s, 10 s elapsed"]


def test_bar_on_a_terminal_lines_in_a_log_and_the_overrides(monkeypatch):
    terminal, log_file = Terminal(), io.StringIO()
    assert progress_mode(terminal) == "bar" and progress_mode(log_file) == "log"
    bar = progress(total=3, desc="x", file=terminal)
    assert isinstance(bar, tqdm) and not bar.disable
    bar.close()
    assert isinstance(progress(total=3, desc="x", file=log_file), LogProgress)
    # a transient inner bar and a disabled one stay silent in a log
    assert progress(total=3, file=log_file, leave=False).disable
    assert progress(total=3, file=terminal, enabled=False).disable
    # `cacmi --progress` (set_progress_mode("bar")) and CACMI_PROGRESS force a mode
    set_progress_mode("bar")
    assert progress_mode(log_file) == "bar"
    set_progress_mode(None)
    monkeypatch.setenv("CACMI_PROGRESS", "off")
    assert progress_mode(terminal) == "off" and progress(total=3, file=terminal).disable
    monkeypatch.setenv("CACMI_PROGRESS", "sometimes")
    with pytest.raises(ValueError, match="CACMI_PROGRESS must be one of"):
        progress_mode(terminal)
    with pytest.raises(ValueError, match="progress mode must be one of"):
        set_progress_mode("loud")


def test_every_from_the_environment(monkeypatch):
    monkeypatch.setenv("CACMI_PROGRESS_EVERY", "50")
    out = io.StringIO()
    log = LogProgress(total=4, file=out, clock=Clock())
    log.update(1)
    log.update(1)
    assert len(out.getvalue().splitlines()) == 1
    monkeypatch.setenv("CACMI_PROGRESS_EVERY", "0")
    with pytest.raises(ValueError, match="CACMI_PROGRESS_EVERY must be a percent"):
        LogProgress(total=4)


def test_cli_progress_flag_forces_bars(monkeypatch):
    from cacmi_hf import cli

    calls = []
    monkeypatch.setattr(progress_module, "set_progress_mode", lambda mode: calls.append(mode))
    monkeypatch.setattr(progress_module, "quiet_library_bars", lambda: calls.append("quiet"))
    parser = cli.build_parser()
    assert parser.parse_args(["demo", "--progress"]).progress and parser.parse_args(["--progress", "demo"]).progress
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    cli.main(["--progress"])  # no command: prints help, after setting the mode
    assert calls == ["bar"]


def test_trainer_callback_logs_steps(capsys):
    from types import SimpleNamespace

    callback = trainer_progress_callback(every=50)
    state = SimpleNamespace(is_world_process_zero=True, max_steps=4, global_step=0)
    callback.on_train_begin(None, state, None)
    for step in range(1, 5):
        state.global_step = step
        callback.on_step_end(None, state, None)
        callback.on_log(None, state, None, logs={"loss": 1.0 / step})
    callback.on_train_end(None, state, None)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 3)[:3] for line in lines] == [["train:", "50%", "(2/4"], ["train:", "100%", "(4/4"]]
    assert lines[0].endswith("loss=1") and lines[1].endswith("loss=0.3333")


def test_library_bars_are_quiet_in_a_log(monkeypatch):
    import huggingface_hub.utils
    from transformers.utils import logging as transformers_logging

    from cacmi_hf import cli

    monkeypatch.setenv("CACMI_PROGRESS", "log")
    ran = []
    parser = cli.build_parser()
    parser.set_defaults(_run=lambda args: ran.append(args) or 0)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    try:
        assert cli.main([]) == 0 and ran
        assert not transformers_logging.is_progress_bar_enabled()
        assert huggingface_hub.utils.are_progress_bars_disabled()
    finally:
        transformers_logging.enable_progress_bar()
        huggingface_hub.utils.enable_progress_bars()
