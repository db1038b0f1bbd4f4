"""The Gradio page: upload (or pick) a video, set the controls, see its events.

Left: the video, the model and the controls. Right: the video again with the events as a WebVTT caption
track, a status line (the stage times, or what went wrong), the events table, the timeline image and the
downloads (JSON, SRT, VTT). Requests go through Gradio's queue; the models live in the shared
`CaptioningService`, so two browsers captioning at once each get their own results from one loaded model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from .service import AppError, CaptionOptions, CaptioningService, TABLE_HEADERS

logger = logging.getLogger(__name__)

INTRO = (
    "# Dense video captioning with CACMI\n"
    "Drop a video: the model finds its events (start, end) and writes a sentence for each. "
    "The captions play as subtitles in the player on the right (turn on its CC track)."
)


def _status(text: str, error: bool = False) -> str:
    """The status line as markdown; errors start with "Error:" so that they stand out (and tests can find them)."""
    return f"**Error:** {text}" if error else text


def build_app(
    service: CaptioningService,
    *,
    examples: Sequence[str | os.PathLike] = (),
    title: str = "CACMI dense video captioning",
    concurrency: int = 1,
):
    """The Gradio Blocks of the app, with its queue set up (`concurrency` videos captioned at once)."""
    import gradio as gr

    default_frames, default_alpha, retrieval = 100, 1.0, True
    try:  # the default model's settings; a model that cannot load is reported when a video comes in
        default_frames = service.default_num_frames()
        default_alpha = service.default_rerank_alpha()
        retrieval = service.can_retrieve()
    except AppError as err:
        logger.warning("%s", err)

    def caption(video, model, alpha, count_mode, num_events, num_frames, show_retrieved, progress=gr.Progress()):
        """One request: every problem becomes a status line, so the page (and the server) carry on."""
        empty = (None, [], None, None)
        if not video:
            return (_status("Upload a video or pick an example first.", error=True), *empty)
        options = CaptionOptions(
            rerank_alpha=float(alpha), event_count=count_mode, num_events=int(num_events),
            num_frames=int(num_frames) if num_frames else None, show_retrieved=bool(show_retrieved),
        )
        name = Path(video).name
        try:
            result = service.caption(
                video, options, model=model or None, name=name, progress=lambda f, stage: progress(f, desc=stage)
            )
        except AppError as err:
            return (_status(str(err), error=True), *empty)
        except Exception as err:  # noqa: BLE001 - the page must keep working whatever one video does
            logger.exception("captioning %s failed", name)
            return (_status(f"Unexpected failure on {name} ({type(err).__name__}: {err}).", error=True), *empty)
        player = gr.Video(value=video, subtitles=str(result.files["vtt"]))
        widths = ["5%", "9%", "9%", "27%", "10%", "40%"] if len(result.headers) > len(TABLE_HEADERS) else None
        table = gr.Dataframe(value=result.rows, headers=result.headers, column_widths=widths)
        downloads = [str(result.files[k]) for k in ("json", "srt", "vtt")]
        return _status(result.summary()), player, table, str(result.files["timeline"]), downloads

    with gr.Blocks(title=title, analytics_enabled=False,
                   delete_cache=(int(service.keep_results_s), int(service.keep_results_s))) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2):
                video = gr.Video(label="Video", sources=["upload"], height=260, elem_id="input-video")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[video], label="Examples")
                with gr.Accordion("Settings", open=True):
                    model = gr.Textbox(value=service.default_model, label="Model (folder or hub id)", elem_id="model")
                    alpha = gr.Slider(0.0, max(4.0, 2 * default_alpha), value=default_alpha, step=0.1,
                                      label="Rerank alpha (weight of the caption score; the model's by default)",
                                      elem_id="alpha")
                    count_mode = gr.Radio(["auto", "fixed"], value="auto", label="Event count",
                                          info="auto: the model's event counter; fixed: the number below",
                                          elem_id="event-count")
                    num_events = gr.Slider(1, 20, value=3, step=1, label="Events (when fixed)", elem_id="num-events")
                    num_frames = gr.Slider(4, max(4 * default_frames, 8), value=default_frames, step=1,
                                           label="Frames L sampled from the video", elem_id="num-frames")
                    show_retrieved = gr.Checkbox(value=retrieval, label="Show the memory sentences CFA retrieved",
                                                 elem_id="show-retrieved")
                run = gr.Button("Find the events", variant="primary", elem_id="run")
            with gr.Column(scale=3):
                player = gr.Video(label="Captioned video", interactive=False, height=360, elem_id="output-video")
                status = gr.Markdown("Upload a video to begin.", elem_id="status")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Events", interactive=False, wrap=True,
                                     elem_id="events")
                timeline = gr.Image(label="Timeline", type="filepath", interactive=False, elem_id="timeline")
                downloads = gr.File(label="Downloads (JSON, SRT, VTT)", file_count="multiple", interactive=False,
                                    elem_id="downloads")
        inputs = [video, model, alpha, count_mode, num_events, num_frames, show_retrieved]
        outputs = [status, player, table, timeline, downloads]
        run.click(caption, inputs, outputs, concurrency_limit=concurrency)
        video.upload(caption, inputs, outputs, concurrency_limit=concurrency)
    app.queue(default_concurrency_limit=concurrency)
    return app


__all__ = ["build_app"]
