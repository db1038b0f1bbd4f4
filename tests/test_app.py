"""`cacmi app`: the captioning service gives pipeline(...)'s events and readable errors; the page, in Chromium, shows them.

The fast tests drive `CaptioningService` (what the page calls) directly. The slow one starts `cacmi app` on
127.0.0.1, opens it in the system's headless Chromium, uploads synthetic-world videos from two browsers at
once, checks the table and the caption track against `pipeline(...)` on the same files, uploads a broken file,
and takes the screenshot shown in the README (written where CACMI_APP_SCREENSHOT says; CACMI_APP_MODEL and
CACMI_APP_VIDEO swap in the demo's model and a video of its world for that picture).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import pipeline

import cacmi_hf  # noqa: F401 - registers the pipeline
from cacmi_hf.app.service import (
    RETRIEVED_HEADER,
    TABLE_HEADERS,
    AppError,
    CaptionOptions,
    CaptioningService,
    event_rows,
    retrieved_for_events,
)
from cacmi_hf.exports import to_densevid_json, to_srt, to_webvtt
from cacmi_hf.synthetic.world import generate_world

from app_fixtures import (
    AppServer,
    build_tiny_model,
    caption_track,
    chromium_path,
    open_page,
    parse_vtt,
    upload,
    wait_for_result,
    wait_for_rows,
)
from video_fixtures import write_audio_only, write_frameless_video



@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny saved model, three synthetic-world videos and the files a user can get wrong."""
    root = tmp_path_factory.mktemp("app")
    model = build_tiny_model(root / "model")
    world = generate_world(root / "world", {"test": 3}, seed=0, progress=False)
    videos = [world.video_path(v) for v in world.video_ids["test"]]
    broken = root / "broken.mp4"
    broken.write_bytes(b"this is not a video\n" * 64)
    no_frames = write_frameless_video(root / "no_frames.mkv")
    audio_only = write_audio_only(root / "audio_only.mp4")
    not_cacmi = root / "bert-model"
    not_cacmi.mkdir()
    (not_cacmi / "config.json").write_text(json.dumps({"model_type": "bert"}))
    no_config = root / "empty-folder"
    no_config.mkdir()
    return SimpleNamespace(root=root, model=model, world=world, videos=videos, broken=broken, no_frames=no_frames,
                           audio_only=audio_only, not_cacmi=not_cacmi, no_config=no_config)


@pytest.fixture(scope="module")
def service(assets):
    service = CaptioningService(str(assets.model), max_duration_s=300)
    yield service
    service.close()


@pytest.fixture(scope="module")
def pipe(assets):
    return pipeline("dense-video-captioning", model=str(assets.model))


def expected(pipe, video, **options):
    """pipeline(...)'s events and pseudo-events of one video, as the page asks for them."""
    out = pipe(str(video), return_retrieved=True, **options)
    return out["events"], out["pseudo_events"]


# ---------------------------------------------------------------------------------------------------------------------
# hand-worked pieces


def test_retrieved_sentences_follow_the_most_overlapping_pseudo_event():
    events = [{"timestamp": [0.0, 4.0]}, {"timestamp": [5.0, 9.0]}, {"timestamp": [20.0, 22.0]}]
    pseudo = [
        {"timestamp": [0.0, 3.0], "retrieved": ["A"]},
        {"timestamp": [3.0, 10.0], "retrieved": ["B"]},
        {"timestamp": [12.0, 15.0], "retrieved": ["C"]},
    ]
    # event 1 overlaps A by 3 s and B by 1 s; event 2 only B; event 3 nothing: the nearest centre is C's (13.5 s)
    assert retrieved_for_events(events, pseudo) == [["A"], ["B"], ["C"]]
    assert retrieved_for_events(events, []) == [[], [], []]
    assert retrieved_for_events([], pseudo) == []


def test_event_rows_hand_worked():
    events = [{"timestamp": [1.234, 5.0], "caption": "a red circle grows", "score": 0.87654}]
    hits = [[{"sentence": "a red circle grows", "score": 0.912}, {"sentence": "a red square grows", "score": 0.5}]]
    assert event_rows(events) == [[1, "1.23", "5.00", "a red circle grows", "0.877"]]
    assert event_rows(events, hits)[0][-1] == "a red circle grows (0.91) · a red square grows (0.50)"
    # a sentence the bank holds several times is listed once, with its best score
    repeated = [[{"sentence": "x", "score": 0.9}, {"sentence": "x", "score": 0.8}, {"sentence": "y", "score": 0.7},
                 {"sentence": "z", "score": 0.6}]]
    assert event_rows(events, repeated, top=2)[0][-1] == "x (0.90) · y (0.70)"


def test_options_are_checked():
    assert CaptionOptions().pipeline_options() == {}  # pipeline(...)'s own defaults
    assert CaptionOptions(rerank_alpha=2).pipeline_options() == {"rerank_alpha": 2.0}
    assert CaptionOptions(event_count="fixed", num_events=2, rerank_alpha=0.5).pipeline_options() == {
        "rerank_alpha": 0.5, "max_events": 2}
    with pytest.raises(AppError, match="Event count must be one of"):
        CaptionOptions(event_count="many").pipeline_options()
    with pytest.raises(AppError, match="at least 1"):
        CaptionOptions(event_count="fixed", num_events=0).pipeline_options()


# ---------------------------------------------------------------------------------------------------------------------
# the service against pipeline(...)


def test_caption_is_the_pipelines_result_with_its_files(service, pipe, assets):
    video = assets.videos[0]
    stages = []
    result = service.caption(str(video), CaptionOptions(), progress=lambda f, stage: stages.append((f, stage)))
    events, pseudo = expected(pipe, video)
    assert result.events == events and result.pseudo_events == pseudo
    assert result.headers == TABLE_HEADERS + [RETRIEVED_HEADER]
    assert result.rows == event_rows(events, retrieved_for_events(events, pseudo))
    assert result.files["vtt"].read_text() == to_webvtt(events)
    assert result.files["srt"].read_text() == to_srt(events)
    assert json.loads(result.files["json"].read_text()) == to_densevid_json({video.stem: events}, with_scores=True)
    assert result.files["timeline"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every file in the request's own folder, under the service's temporary root
    assert all(path.parent == result.folder for path in result.files.values())
    assert result.folder.parent.parent == service.root
    # each stage reported, in order, ending at 100 %
    names = [stage for _, stage in stages]
    assert names[:3] == ["loading the model", "reading the video", "decoding frames and CLIP features"]
    assert names[-3:] == ["captioning", "writing subtitles and the timeline", "done"]
    assert names[-4] == "decoding frames and CLIP features: 12/12"  # L = 12 frames, counted as CLIP embeds them
    assert [f for f, _ in stages] == sorted(f for f, _ in stages) and stages[-1][0] == 1.0
    assert set(result.seconds) == {"read", "frames", "captioning", "exports", "total"}
    assert f"{len(events)} events in {video.name}" in result.summary()


def test_controls_are_pipeline_options(service, pipe, assets):
    video = assets.videos[1]
    options = CaptionOptions(rerank_alpha=0.5, event_count="fixed", num_events=2, num_frames=20, show_retrieved=False)
    result = service.caption(str(video), options)
    reference = pipeline("dense-video-captioning", model=str(assets.model))
    reference.processor.video_processor.num_frames = 20
    events = reference(str(video), rerank_alpha=0.5, max_events=2)
    assert len(events) == 2 and result.events == events
    assert result.pseudo_events is None and result.headers == TABLE_HEADERS and len(result.rows[0]) == len(TABLE_HEADERS)
    # the shared model's processor is untouched: the next request with the defaults gets the defaults
    assert service.pipeline().processor.video_processor.num_frames == 12
    assert service.default_rerank_alpha() == pipe.model.config.rerank_alpha
    assert service.caption(str(video)).events == expected(pipe, video)[0]


def test_errors_are_readable_and_the_service_carries_on(service, assets):
    cases = [
        (assets.broken, r"^broken\.mp4 could not be read as a video"),
        (assets.audio_only, r"^audio_only\.mp4 could not be read as a video: .*video stream"),
        (assets.no_frames, r"^no_frames\.mkv (could not be (read as a video|decoded)|has no frames)"),
        (assets.root / "missing.mp4", r"^No video: upload a video file"),
    ]
    for path, message in cases:
        with pytest.raises(AppError, match=message) as caught:
            service.caption(str(path), name=path.name)
        assert str(assets.root) not in str(caught.value)  # the server's paths stay on the server
    for model, message in [
        (assets.not_cacmi, "is not a cacmi model: its config.json says model_type 'bert'"),
        (assets.no_config, "has no config.json"),
        (str(assets.root / "no" / "such" / "model"), "neither a model folder nor a hub id"),
    ]:
        with pytest.raises(AppError, match=message):
            service.caption(str(assets.videos[0]), model=str(model))
    short = CaptioningService(str(assets.model), max_duration_s=10)
    try:
        duration = short.check_video(str(assets.videos[0]), "clip.mp4")  # the limit is checked before decoding
    except AppError as err:
        assert str(err).startswith("clip.mp4 is ") and "up to 10 s (start it with `cacmi app --max-duration" in str(err)
    else:
        pytest.fail(f"a {duration:.0f} s video passed a 10 s limit")
    finally:
        short.close()
    assert not short.root.exists()
    assert service.caption(str(assets.videos[2])).events  # still serving


def test_old_results_are_removed_and_close_removes_everything(assets, tmp_path):
    service = CaptioningService(str(assets.model), root=tmp_path / "root", keep_results_s=60)
    old = service.new_folder()
    (old / "x.vtt").write_text("WEBVTT\n")
    os.utime(old, (0, 0))  # written long ago
    new = service.new_folder()
    assert not old.exists() and new.exists()
    service.close()
    assert (tmp_path / "root").exists()  # a root it was given is the caller's
    own = CaptioningService(str(assets.model))
    own.new_folder()
    own.close()
    assert not own.root.exists()


def test_cli_refuses_a_model_that_is_not_cacmi(assets):
    pytest.importorskip("gradio", reason="cacmi app needs the [app] extra (gradio)")
    from cacmi_hf.cli import main

    with pytest.raises(SystemExit, match="is not a cacmi model"):
        main(["app", "--model", str(assets.not_cacmi)])


def test_export_space_is_a_complete_folder(assets, tmp_path):
    gradio = pytest.importorskip("gradio", reason="the Space export needs the [app] extra (gradio)")
    from cacmi_hf.app import export_space

    out = export_space(tmp_path / "space", str(assets.model), examples=[assets.videos[0]])
    readme = (out / "README.md").read_text()
    front = readme.split("---")[1]
    assert "sdk: gradio" in front and f"sdk_version: {gradio.__version__}" in front and "app_file: app.py" in front
    requirements = (out / "requirements.txt").read_text().split()
    assert any(r.startswith("torch") for r in requirements) and not any(r.startswith("gradio") for r in requirements)
    assert (out / "app.py").is_file() and (out / "cacmi_hf" / "__init__.py").is_file()
    assert not list((out / "cacmi_hf").rglob("__pycache__"))
    assert (out / "model" / "config.json").is_file() and (out / "examples" / assets.videos[0].name).is_file()
    with pytest.raises(AppError, match="not empty"):
        export_space(out, str(assets.model))


# ---------------------------------------------------------------------------------------------------------------------
# the page in a real browser


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        pytest.skip("no system Chromium (apt-get install chromium): the browser test drives the real page")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package is not installed")
    pytest.importorskip("gradio", reason="cacmi app needs the [app] extra (gradio)")
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                                 args=["--no-sandbox", "--disable-dev-shm-usage"])
        except Exception as err:  # noqa: BLE001 - a Chromium that cannot start here is a skip, not a failure
            pytest.skip(f"{executable} does not start headless here: {err}")
        yield browser
        browser.close()


def assert_page_matches(rows, track, events, pseudo):
    """The table and the caption track show pipeline(...)'s events (times to the table's 0.01 s, cues to 1 ms)."""
    retrieved = retrieved_for_events(events, pseudo)
    assert len(rows) == len(events)
    for row, event, hits in zip(rows, events, retrieved):
        start, end = event["timestamp"]
        assert row[3] == event["caption"]
        assert float(row[1]) == pytest.approx(start, abs=0.006) and float(row[2]) == pytest.approx(end, abs=0.006)
        assert float(row[4]) == pytest.approx(event["score"], abs=0.0006)
        assert [h["sentence"] for h in hits][0] in row[5]
    cues = parse_vtt(track)
    assert [text for _, _, text in cues] == [text for _, _, text in parse_vtt(to_webvtt(events))]
    for (start, end, _), event in zip(cues, sorted(events, key=lambda e: e["timestamp"])):
        assert start == pytest.approx(event["timestamp"][0], abs=0.002) and end == pytest.approx(event["timestamp"][1], abs=0.002)


@pytest.mark.slow
def test_browser_upload_two_at_once_broken_file_and_screenshot(browser, assets, pipe, tmp_path):
    model = os.environ.get("CACMI_APP_MODEL") or assets.model
    videos = assets.videos[:2]
    if os.environ.get("CACMI_APP_VIDEO"):
        videos = [Path(os.environ["CACMI_APP_VIDEO"]), assets.videos[1]]
    reference = pipe if model == assets.model else pipeline("dense-video-captioning", model=str(model))
    temp_dir, cwd, system_temp = tmp_path / "temp", tmp_path / "cwd", tmp_path / "system-temp"
    for folder in (temp_dir, cwd, system_temp):
        folder.mkdir()
    if not Path(model).is_absolute():  # shown as given in the page: the server sees it from its own folder too
        (cwd / Path(model).parts[0]).symlink_to(Path(Path(model).parts[0]).resolve())
    before = sorted(cwd.iterdir())
    server = AppServer(model, temp_dir=temp_dir, cwd=cwd, system_temp=system_temp,
                       args=["--examples", str(videos[0]), "--max-duration", "300"])
    try:
        # two browsers (own sessions) upload at once; Gradio's queue serves them one after the other
        pages = [open_page(browser, server.url) for _ in videos]
        for page, video in zip(pages, videos):
            upload(page, video)
        for page, video in zip(pages, videos):
            status = wait_for_result(page)
            assert f"events in {video.name}" in status and "Error" not in status, status
            events, pseudo = expected(reference, video)
            assert_page_matches(wait_for_rows(page, len(events)), caption_track(page), events, pseudo)
        # the downloads are the three files
        links = pages[0].eval_on_selector_all("#downloads a", "links => links.map(a => a.href)")
        assert sorted(Path(link).suffix for link in links) == [".json", ".srt", ".vtt"], links

        # the screenshot: the first page, its player paused inside the first event with the captions showing
        first_event = expected(reference, videos[0])[0][0]
        middle = sum(first_event["timestamp"]) / 2
        pages[0].evaluate(
            """t => { const v = document.querySelector('#output-video video');
                      for (const track of v.textTracks) track.mode = 'showing';
                      v.currentTime = t; }""", middle)
        pages[0].wait_for_timeout(1500)
        shot = Path(os.environ.get("CACMI_APP_SCREENSHOT") or tmp_path / "app.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        pages[0].screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # a broken file: a readable message in the page, and the app goes on serving
        page = open_page(browser, server.url)
        upload(page, assets.broken)
        status = wait_for_result(page)
        assert status.startswith("Error: broken.mp4 could not be read as a video"), status
        page = open_page(browser, server.url)
        upload(page, videos[1])
        assert f"events in {videos[1].name}" in wait_for_result(page)
    finally:
        code = server.stop()
    assert code == 0, server.log()
    # everything the app wrote was in its temporary folder, and that folder is gone
    assert server.root is not None and server.root.parent == temp_dir and not server.root.exists(), server.log()
    assert list(temp_dir.iterdir()) == [] and sorted(cwd.iterdir()) == before
    assert list(system_temp.iterdir()) == [], list(system_temp.rglob("*"))  # not even the system's temporary folder
