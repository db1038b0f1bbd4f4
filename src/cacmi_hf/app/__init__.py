"""`cacmi app`: caption videos in the browser (Gradio), locally or as a Hugging Face Space.

    pip install -e ".[app]"
    cacmi app --model cacmi-demo/full/model-cacmi       # then open http://127.0.0.1:7860
    cacmi app --model my-cacmi --export-space my-space  # a folder to push as a Space

`service` does the work (no web framework), `ui` lays out the page, `command` is the CLI and the Space export.
Gradio is imported only when a page is built, so `cacmi --help` works without the `[app]` extra.
"""

from .command import add_arguments, export_space, launch, run
from .service import AppError, CaptionOptions, CaptionResult, CaptioningService

__all__ = ["AppError", "CaptionOptions", "CaptionResult", "CaptioningService", "add_arguments", "export_space", "launch", "run"]
