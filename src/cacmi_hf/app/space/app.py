"""A Hugging Face Space captioning videos with CACMI: push this folder as it is (Gradio SDK), or run `python app.py`.

`cacmi app --export-space DIR --model MODEL` writes this file beside a copy of the cacmi_hf package (./cacmi_hf),
the model (./model) and a few example videos (./examples).
"""

import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the cacmi_hf copied beside this file comes first

from cacmi_hf.app import launch  # noqa: E402

launch(
    os.environ.get("CACMI_MODEL", os.path.join(HERE, "model")),  # a hub id in CACMI_MODEL replaces the copied model
    examples=sorted(glob.glob(os.path.join(HERE, "examples", "*.mp4"))),
    max_duration_s=float(os.environ.get("CACMI_MAX_DURATION", "600")),
)
