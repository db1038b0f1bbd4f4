"""`cacmi app`: serve the captioning page, or write a folder to push as a Hugging Face Space.

    cacmi app --model cacmi-demo/full/model-cacmi --port 7860
    cacmi app --model cacmi-demo/full/model-cacmi --export-space my-space --examples video.mp4

Every file the app writes (uploads, Gradio's cache, subtitles, timelines) lands in one temporary folder,
removed when the app stops (Ctrl-C or SIGTERM); uploads and results older than `--keep-minutes` are removed
while it runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from .service import DEFAULT_MAX_DURATION_S, AppError, CaptioningService, _check_model_folder

DEFAULT_MODEL = "cacmi-demo/full/model-cacmi"  # what `cacmi demo` trains: the app runs offline right after it
SPACE_TEMPLATE = Path(__file__).with_name("space")


def _default_examples(model: str) -> list[Path]:
    """A few test videos of the synthetic world when `model` is a demo model (the world sits beside it)."""
    videos = Path(model).expanduser().parent / "world" / "videos"
    return sorted(videos.glob("syn_test_*.mp4"))[:3] if videos.is_dir() else []


def launch(
    model: str = DEFAULT_MODEL,
    *,
    host: str | None = None,
    port: int | None = None,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
    examples: Sequence[str | os.PathLike] | None = None,
    concurrency: int = 1,
    temp_dir: str | os.PathLike | None = None,
    keep_minutes: float = 60.0,
    device: str | None = None,
) -> None:
    """Serve the page until interrupted; the temporary folder of the run is removed on the way out."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="cacmi-app-", dir=temp_dir))
    service = CaptioningService(model, max_duration_s=max_duration_s, root=root, device=device,
                                keep_results_s=60.0 * keep_minutes)
    # Gradio keeps uploads and served copies in GRADIO_TEMP_DIR, read when it is first imported (below, in .ui):
    # inside the run's folder, removed with it
    if "gradio" in sys.modules:
        logging.getLogger(__name__).warning("gradio was imported before cacmi app set GRADIO_TEMP_DIR: some of its "
                                            "files may land in %s", os.environ.get("GRADIO_TEMP_DIR", "/tmp/gradio"))
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    def stop(signum, frame):  # SIGTERM (a service manager, a test) ends the run like Ctrl-C: cleaned up
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        from .ui import build_app

        if examples is None:
            examples = _default_examples(model)
        app = build_app(service, examples=examples, concurrency=concurrency)
        print(f"cacmi app: model {model}; files in {root} (removed on exit)", flush=True)
        app.launch(server_name=host, server_port=port, ssr_mode=False, show_error=False,
                   allowed_paths=[str(root), *(str(Path(p).resolve().parent) for p in examples)])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        service.close()
        shutil.rmtree(root, ignore_errors=True)


def _requirements() -> list[str]:
    """The package's runtime requirements (from its installed metadata) and the app's, for a Space."""
    try:
        requires = metadata.requires("cacmi_hf") or []
    except metadata.PackageNotFoundError:
        requires = []
    base = [r.split(";")[0].strip() for r in requires if "extra ==" not in r]
    app = [r.split(";")[0].strip() for r in requires if "extra == \"app\"" in r or "extra == 'app'" in r]
    return base + [r for r in app if not r.lower().startswith("gradio")]  # the Space's SDK brings its own gradio


def export_space(out_dir: str | os.PathLike, model: str, examples: Sequence[str | os.PathLike] = ()) -> Path:
    """Write a Space folder: README (front matter), app.py, requirements.txt, this package's code, the model, examples."""
    import gradio

    import cacmi_hf

    _check_model_folder(model)
    if not Path(model).is_dir():
        raise AppError(f"--export-space copies the model into the Space: give a model folder, got {model!r}.")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise AppError(f"{out} exists and is not empty; give a new folder for the Space.")
    out.mkdir(parents=True, exist_ok=True)
    readme = (SPACE_TEMPLATE / "README.md").read_text(encoding="utf-8")
    (out / "README.md").write_text(readme.replace("{gradio_version}", gradio.__version__), encoding="utf-8")
    shutil.copy2(SPACE_TEMPLATE / "app.py", out / "app.py")
    (out / "requirements.txt").write_text("\n".join(_requirements()) + "\n", encoding="utf-8")
    # the package itself goes in as code: the Space imports it from its own folder, nothing to publish first
    shutil.copytree(Path(cacmi_hf.__file__).parent, out / "cacmi_hf", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(model, out / "model", ignore=shutil.ignore_patterns("checkpoint-*", "runs", "*.pt", "*.bin", "optimizer*"))
    if examples:
        (out / "examples").mkdir()
        for path in examples:
            shutil.copy2(path, out / "examples" / Path(path).name)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cacmi app`."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"Model folder or hub id (default {DEFAULT_MODEL}, what `cacmi demo` trains).")
    parser.add_argument("--host", default=None, help="Address to serve on (default 127.0.0.1, or GRADIO_SERVER_NAME).")
    parser.add_argument("--port", type=int, default=None, help="Port (default 7860 or the next free one).")
    parser.add_argument("--max-duration", type=float, default=DEFAULT_MAX_DURATION_S,
                        help=f"Longest video accepted, in seconds (default {DEFAULT_MAX_DURATION_S:g}; 0: no limit).")
    parser.add_argument("--examples", nargs="*", default=None, metavar="VIDEO",
                        help="Example videos offered on the page (default: a few test videos of the demo world).")
    parser.add_argument("--concurrency", type=int, default=1, help="Videos captioned at once; others queue (default 1).")
    parser.add_argument("--temp-dir", default=None, help="Where the run's temporary folder goes (default: the system's).")
    parser.add_argument("--keep-minutes", type=float, default=60.0,
                        help="Uploads and results older than this are removed while the app runs (default 60).")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available).")
    parser.add_argument("--export-space", metavar="DIR", default=None,
                        help="Write a Space folder (README, app.py, requirements.txt, the package, the model) and exit.")


def run(args: argparse.Namespace) -> int:
    """Serve the app, or export a Space folder."""
    # found, not imported: Gradio reads GRADIO_TEMP_DIR when imported, and `launch` sets it to the run's folder first
    if importlib.util.find_spec("gradio") is None:
        raise SystemExit("cacmi app needs Gradio: pip install 'cacmi_hf[app]'.")
    if args.concurrency < 1:
        raise SystemExit(f"--concurrency must be >= 1, got {args.concurrency}.")
    if args.export_space:
        examples = args.examples if args.examples is not None else _default_examples(args.model)
        try:
            out = export_space(args.export_space, args.model, examples)
        except AppError as err:
            raise SystemExit(str(err)) from err
        print(f"Wrote the Space in {out}: `cd {out} && python app.py` runs it; "
              f"`hf upload <you>/<space> {out} . --repo-type space` publishes it.")
        return 0
    try:
        _check_model_folder(args.model)
    except AppError as err:
        raise SystemExit(str(err)) from err
    launch(args.model, host=args.host, port=args.port, max_duration_s=args.max_duration or None,
           examples=args.examples, concurrency=args.concurrency, temp_dir=args.temp_dir,
           keep_minutes=args.keep_minutes, device=args.device)
    return 0


__all__ = ["DEFAULT_MODEL", "add_arguments", "export_space", "launch", "run"]
