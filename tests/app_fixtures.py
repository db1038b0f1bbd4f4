"""What the app tests (and benchmarks/bench_app.py) share: a tiny saved model, the app as a server, the page in Chromium.

The model is built in seconds without downloads (the tiny open_clip config, random weights): its captions are
nonsense, but the page must show exactly what `pipeline(...)` returns for the same file, nonsense or not.
The browser is the system's Chromium (Debian's `chromium`), driven by Playwright's Python package through
`executable_path`: nothing downloads a browser.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MEMORY_CAPTIONS = ["a red circle moves to the left", "a blue square grows", "a green cross blinks", "a red square shrinks"]
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium", "/usr/lib/chromium/chromium")


def build_tiny_model(folder: Path, num_frames: int = 12) -> Path:
    """A CACMI model with a tiny CLIP tower and CFA over four memory sentences, saved with its processor."""
    import torch

    from cacmi_hf import CACMIConfig, CACMIForDenseCaptioning
    from cacmi_hf.data.vocab import build_caption_tokenizer
    from cacmi_hf.open_clip_tower import TINY_OPEN_CLIP_CONFIG, build_open_clip_model, resolve_open_clip, save_open_clip_local_dir
    from cacmi_hf.processing_cacmi import CACMIProcessor, CACMIVideoProcessor

    torch.manual_seed(0)
    spec = resolve_open_clip(TINY_OPEN_CLIP_CONFIG)
    clip_dir = save_open_clip_local_dir(build_open_clip_model(spec).eval(), spec, folder.parent / f"{folder.name}-clip")
    tokenizer = build_caption_tokenizer(MEMORY_CAPTIONS, min_count=1, max_caption_len=6)
    config = CACMIConfig(
        num_frames=num_frames, hidden_size=32, num_attention_heads=4, ffn_dim=32, num_encoder_layers=1,
        num_decoder_layers=2, num_feature_levels=2, num_queries=5, max_event_count=3, max_caption_len=6,
        caption_hidden_size=24, num_clusters=3, retrieval_top_k=3, memory_size=len(MEMORY_CAPTIONS),
        vocab_size=len(tokenizer), rerank_alpha=0.5,  # not the control's 1.0: the page must start from the model's
    )
    model = CACMIForDenseCaptioning.from_clip(clip_dir, clip_dir, config=config).eval()
    bank = torch.nn.functional.normalize(torch.randn(len(MEMORY_CAPTIONS), model.config.feature_dim), dim=-1)
    model.set_memory_bank(bank, torch.arange(len(MEMORY_CAPTIONS)))
    video = CACMIVideoProcessor.from_open_clip(spec, num_frames=num_frames)
    processor = CACMIProcessor(video, tokenizer, memory_sentences=MEMORY_CAPTIONS)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def chromium_path() -> str | None:
    """The system Chromium's executable, or None."""
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate) or (candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None)
        if found:
            return found
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """`cacmi app` in a subprocess on 127.0.0.1 and a free port; `stop()` ends it with SIGTERM (it cleans up)."""

    def __init__(self, model: Path | str, *, temp_dir: Path, cwd: Path, args: list[str] | None = None, timeout: float = 600.0,
                 system_temp: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = Path(temp_dir).parent / f"app-{self.port}.log"
        import torch

        env = {**os.environ, "CACMI_PROGRESS": "log", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
               # the thread count of this process: float sums in the same order, so the same events to compare
               "OMP_NUM_THREADS": str(torch.get_num_threads())}
        env.pop("GRADIO_TEMP_DIR", None)
        if system_temp is not None:  # the system's temporary folder as the server sees it (TMPDIR)
            env["TMPDIR"] = str(system_temp)
        command = [sys.executable, "-m", "cacmi_hf.cli", "app", "--model", str(model), "--host", "127.0.0.1",
                   "--port", str(self.port), "--temp-dir", str(temp_dir), *(args or [])]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.root: Path | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cacmi app exited with {self.process.returncode}:\n{self.log()}")
            found = re.search(r"files in (\S+) \(removed on exit\)", self.log())
            if found:
                self.root = Path(found.group(1))
                try:
                    with urllib.request.urlopen(self.url, timeout=5) as response:
                        if response.status == 200:
                            return
                except OSError:
                    pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"cacmi app did not answer on {self.url} within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait (SIGKILL after `timeout`); returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


# ------------------------------------------------------------------------------------------------------------------
# the page, as a user sees it

STATUS_DONE = "(() => { const s = document.querySelector('#status'); return s && /found in|Error:/.test(s.innerText); })()"


def open_page(browser, url: str):
    """A fresh page (own context: own session) on the app, ready for an upload."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url)
    page.wait_for_selector("#input-video input[type=file]", state="attached", timeout=120_000)
    return page


def upload(page, path: Path) -> float:
    """Drop a file on the video input (the captioning starts on upload); returns the time it was given."""
    started = time.perf_counter()
    page.set_input_files("#input-video input[type=file]", str(path))
    return started


def wait_for_result(page, timeout_s: float = 300.0) -> str:
    """Wait until the status line says the events were found or what went wrong; returns its text."""
    page.wait_for_function(STATUS_DONE, timeout=timeout_s * 1000)
    return page.inner_text("#status")


def wait_for_rows(page, count: int, timeout_s: float = 60.0) -> list[list[str]]:
    """The events table's rows once it shows `count` of them (cells as text)."""
    page.wait_for_function(
        f"document.querySelectorAll('#events [role=gridcell][data-col=\"0\"]').length === {count} && "
        "Array.from(document.querySelectorAll('#events [role=gridcell][data-col=\"0\"]')).every(c => c.innerText.trim())",
        timeout=timeout_s * 1000,
    )
    cells = page.evaluate(
        "Array.from(document.querySelectorAll('#events [role=gridcell]'))"
        ".map(c => [Number(c.dataset.row), Number(c.dataset.col), c.innerText.trim()])"
    )
    rows: dict[int, dict[int, str]] = {}
    for row, col, text in cells:
        rows.setdefault(row, {})[col] = text
    return [[cols[c] for c in sorted(cols)] for _, cols in sorted(rows.items())]


def caption_track(page) -> str:
    """The text of the output player's caption track (fetched from the app as the player does)."""
    page.wait_for_selector("#output-video video track", state="attached", timeout=60_000)
    src = page.eval_on_selector("#output-video video track", "t => t.src")
    response = page.request.get(src)
    assert response.ok, f"caption track {src} answered {response.status}"
    return response.text()


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    """(start, end, text) of each cue of a WebVTT file."""
    def seconds(clock: str) -> float:
        hours, minutes, rest = clock.split(":")
        return 3600 * int(hours) + 60 * int(minutes) + float(rest)

    cues = []
    for block in text.strip().split("\n\n")[1:]:
        lines = block.strip().splitlines()
        timing = next(i for i, line in enumerate(lines) if "-->" in line)
        start, end = (part.strip().split()[0] for part in lines[timing].split("-->"))
        cues.append((seconds(start), seconds(end), "\n".join(lines[timing + 1 :])))
    return cues
