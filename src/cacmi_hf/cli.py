"""The `cacmi` command line: one sub-command per job, each defined next to the code it drives."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module defining `add_arguments(parser)` and `run(args) -> int`; imported lazily so that
# `cacmi --help` stays fast and one broken optional dependency does not take every command down.
COMMANDS = {
    "caption": ("cacmi_hf.commands.caption", "Caption videos with a trained model."),
    "extract-features": ("cacmi_hf.data.extract", "Extract CLIP frame features from videos."),
    "build-memory": ("cacmi_hf.data.memory", "Build the CLIP text memory bank from annotations."),
    "build-vocab": ("cacmi_hf.data.vocab", "Build the word-level caption tokenizer."),
    "evaluate": ("cacmi_hf.evaluation.cli", "Score dense captions with the field's metrics."),
    "demo": ("cacmi_hf.synthetic.demo", "Run the whole pipeline on the synthetic world."),
    "card": ("cacmi_hf.commands.card", "Write a model card from an evaluation JSON."),
    "convert": ("cacmi_hf.convert", "Convert a PDVC or CM2 checkpoint into a model folder."),
    "app": ("cacmi_hf.app", "Caption videos in the browser (Gradio; pip install 'cacmi_hf[app]')."),
}


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every available sub-command attached."""
    # every command takes --progress (before or after its name): bars even when stderr is not a terminal
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--progress", action="store_true", default=argparse.SUPPRESS,
                        help="Progress bars even when stderr is not a terminal (default: bars on a terminal, "
                             "otherwise a log line every 10%% with rates; see CACMI_PROGRESS).")
    parser = argparse.ArgumentParser(prog="cacmi", description="CACMI dense video captioning.", parents=[common])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("cacmi_hf"):
                continue  # command not shipped in this version
            raise
        command = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cacmi` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .progress import progress_mode, quiet_library_bars, set_progress_mode

    if getattr(args, "progress", False):
        set_progress_mode("bar")
    if hasattr(args, "_run") and progress_mode() != "bar":
        quiet_library_bars()  # in a log, the libraries' own bars would redraw line after line
    if not hasattr(args, "_run"):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
