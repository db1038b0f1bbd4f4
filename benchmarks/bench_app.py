"""Time from upload to events in the app (`cacmi app`, driven in headless Chromium) against `pipeline(...)` directly.

A one-minute video of the synthetic world (or `--video`) is captioned `--repeats` times each way, side by side
in one run (app, then pipeline, alternately; one warm-up each first):

- app: a fresh page, the file dropped on the video input, until the status line says the events were found
  (upload, queue, decode, CLIP, generation, the subtitles / JSON / timeline files, the page's update);
- pipeline: `pipeline("dense-video-captioning", model=...)(path)` in this process, the model already loaded.

The ratio of the medians is the app's overhead. The server's own stage times (from the status line) split it.

    python benchmarks/bench_app.py --model cacmi-demo/full/model-cacmi [--repeats 5] [--out benchmarks/results/app.md]

Needs the [app] extra, Playwright's Python package and the system's Chromium (`apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the app test's server and page helpers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cacmi-demo/full/model-cacmi")
    parser.add_argument("--video", default=None, help="Video to caption (default: a 60 s synthetic-world video).")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of both processes (default 1: steadier on a shared two-core box).")
    parser.add_argument("--out", default=None, help="Write the results as markdown here.")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the app's server process inherits it

    import torch

    import cacmi_hf  # noqa: F401 - registers the pipeline
    from playwright.sync_api import sync_playwright
    from transformers import pipeline

    from app_fixtures import AppServer, chromium_path, open_page, upload, wait_for_result
    from cacmi_hf.synthetic.world import generate_world

    work = Path(tempfile.mkdtemp(prefix="bench-app-"))
    if args.video:
        video = Path(args.video)
    else:
        world = generate_world(work / "world", {"test": 1}, seed=0, progress=False, min_duration_s=60.0, max_duration_s=60.0)
        video = world.video_path(world.video_ids["test"][0])
    executable = chromium_path()
    if executable is None:
        raise SystemExit("No system Chromium: apt-get install chromium.")

    torch.set_num_threads(args.threads)
    pipe = pipeline("dense-video-captioning", model=args.model)
    (work / "temp").mkdir()
    (work / "cwd").mkdir()
    server = AppServer(args.model, temp_dir=work / "temp", cwd=work / "cwd", args=["--examples"])
    app_s, pipe_s, server_s, stages = [], [], [], []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                                 args=["--no-sandbox", "--disable-dev-shm-usage"])
            for repeat in range(args.repeats + 1):  # the first of each is a warm-up
                page = open_page(browser, server.url)
                started = upload(page, video)
                status = wait_for_result(page)
                elapsed = time.perf_counter() - started
                page.context.close()
                if "found in" not in status:
                    raise SystemExit(f"the app failed: {status}")
                started = time.perf_counter()
                events = pipe(str(video))
                pipe_elapsed = time.perf_counter() - started
                if repeat == 0:
                    continue
                app_s.append(elapsed)
                pipe_s.append(pipe_elapsed)
                server_s.append(float(re.search(r"found in ([\d.]+) s", status).group(1)))
                stages.append(dict((k, float(v)) for k, v in re.findall(r"(\w+) ([\d.]+) s", status.split("found in")[1])))
            browser.close()
    finally:
        server.stop()

    app, direct, inside = (statistics.median(x) for x in (app_s, pipe_s, server_s))
    stage_medians = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
    lines = [
        "## App",
        "",
        f"Command: `python benchmarks/bench_app.py --model {args.model} --repeats {args.repeats} --threads "
        f"{args.threads}`; {date.today()}; load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        f"video: {video.name}, {pipe.processor.video_processor.num_frames} frames L, {len(events)} events; "
        f"medians of {args.repeats} runs after one warm-up each, alternating",
        "",
        "| path | s (median) | runs (s) |",
        "|---|---|---|",
        f"| `pipeline(...)(path)`, model loaded | {direct:.2f} | {', '.join(f'{x:.2f}' for x in pipe_s)} |",
        f"| app, upload to events shown (Chromium) | {app:.2f} | {', '.join(f'{x:.2f}' for x in app_s)} |",
        f"| of which the server's captioning call | {inside:.2f} | "
        + ", ".join(f"{k} {v:.2f}" for k, v in stage_medians.items()) + " |",
        "",
        f"overhead ratio app / pipeline: **{app / direct:.2f}x**",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
