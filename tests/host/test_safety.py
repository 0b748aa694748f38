"""What a prompt may make the pack do, through a real ComfyUI 0.30 (issue 18 items 1, 3 and 4; the
unit tests are in ``tests/test_node_safety.py``).

* Files: a server started with ``VTOONIFY_ALLOWED_DIRS`` set to one folder refuses, when the prompt
  is queued (HTTP 400), Stylize Video File paths outside its input/output/temp folders and that
  folder: absolute paths, ``../`` climbs, a link in ``input/`` to a file outside, a missing file,
  all with the same message but for the name; a path coming from another node is refused the same
  way when the node runs; a clip in ``input/`` and one in the listed folder are stylized.
* Missing models: Load VToonify Model refuses a missing checkpoint/encoder/parser/exemplar codes
  when the prompt is queued, naming the file, its place under ``models/vtoonify`` and where to get
  it; ComfyUI keeps checking device and precision itself. Pressing Run in the real frontend shows
  the message in its error panel (screenshot ``tests/host/artifacts/missing_model_errors.png``).
* Previews: the server started with ``--preview-method none`` sends no binary preview on ``/ws``;
  a prompt that asks for previews (the frontend's preview setting) gets them.
* Node sizes: after a run of the templates with previews on, no node covers another, and every
  node's widgets (the previews included) lie inside it (screenshots ``tests/host/artifacts/
  layout_after_run_<name>.png``).
"""
from __future__ import annotations

import copy
import io
import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from test_workflows import (  # noqa: F401 (a fixture)
    LAYOUT_JS,
    load_ui,
    overlapping,
    png_bytes,
    portrait,
    show_graph,
    workflow_env,
)

pytestmark = pytest.mark.slow

VIDEO_NODE = "VToonifyStylizeVideoFile"
D_CKPT = "vtoonify_d_cartoon/vtoonify_s_d.pt"
HUB_MISSING = "vtoonify_d_pixar/vtoonify_s052_d0.5.pt"   # official, on Hugging Face; placed by no test
DRIVE_MISSING = "vtoonify_t_pixar/vtoonify.pt"             # official, on Google Drive only; placed by no test
DRIVE_T_PIXAR = "https://drive.google.com/drive/folders/19N4ddcTXhXbTEayTbrFc533EktbhOXMz"
HF_PIXAR = "https://huggingface.co/PKUWilliamYang/VToonify/tree/main/models/vtoonify_d_pixar"
LOADER_CHECKED = {"checkpoint", "style_encoder", "face_parser", "exstyle", "download_missing"}
LAYOUT_TEMPLATES = ["vtoonify_composite", "vtoonify_reference_style"]


def clip_frames(n: int = 3, size: int = 32) -> list[np.ndarray]:
    return [np.ascontiguousarray(portrait(size + 2 * n)[i:i + size, 2 * i:2 * i + size]) for i in range(n)]


@pytest.fixture(scope="module")
def guarded(comfy_server_factory, tmp_path_factory, official_dir, vtoonify_d_path, vtoonify_t_path, psp_path,
            bisenet_path, exstyle_path):
    """A second real server, started with ``--preview-method none`` and ``VTOONIFY_ALLOWED_DIRS`` set to
    one folder, with the stand-in models and these files:

    * ``input/safety_clip.mp4`` and ``<allowed>/listed_clip.mp4`` (may be read);
    * ``<outside>/secret.mp4``, a readable clip in a folder not listed; ``input/link.mp4`` -> it and
      ``input/linkdir`` -> its folder.
    """
    from vtoonify_core import video

    allowed = tmp_path_factory.mktemp("listed_videos")
    outside = tmp_path_factory.mktemp("not_listed")
    server = comfy_server_factory("comfy_guarded", extra=["--preview-method", "none"],
                                  env={"VTOONIFY_ALLOWED_DIRS": str(allowed)})
    server.add_models(official_dir)
    frames = clip_frames()
    input_dir = server.base / "input"
    input_dir.mkdir(exist_ok=True)
    for path in (input_dir / "safety_clip.mp4", allowed / "listed_clip.mp4", outside / "secret.mp4"):
        video.write_video(path, frames, Fraction(24), options={"crf": "0"})
    os.symlink(outside / "secret.mp4", input_dir / "link.mp4")
    os.symlink(outside, input_dir / "linkdir")
    server.allowed, server.outside = allowed, outside
    yield server
    server.close()  # its memory back before the other host tests (the factory would stop it at the end)


def video_prompt(video_path, output_name: str = "safety/%stem%.mp4") -> dict:
    """Load VToonify Model (1) -> Stylize Video File (2), whole frames, small chunks; the exemplar's code
    with colour transfer (the 32 px clip has no face to take a style from)."""
    return {
        "1": {"class_type": "VToonifyLoadModel", "inputs": {
            "checkpoint": D_CKPT, "style_encoder": "encoder.pt", "face_parser": "faceparsing.pth", "exstyle": "auto",
            "device": "cpu", "precision": "fp32", "download_missing": False}},
        "2": {"class_type": VIDEO_NODE, "inputs": {
            "vtoonify_model": ["1", 0], "video_path": video_path, "output_name": output_name, "style_degree": 0.5,
            "batch_size": 2, "crop_mode": "whole frame (pad to 8)", "style_id": 1, "color_transfer": True,
            "chunk_size": 3, "preview_frames": 1}},
    }


def refused_names(server) -> list[str]:
    """Paths that server must not read: absolute paths outside its folders (existing or not), climbs
    out of input/, links in input/ that lead out of it, and missing files."""
    input_dir = server.base / "input"
    secret = server.outside / "secret.mp4"
    return ["/etc/passwd", "/etc/hostname", str(secret), str(server.outside / "missing.mp4"), "/nonexistent/clip.mp4",
            os.path.relpath(secret, input_dir), "../../../../../../../../etc/passwd", "link.mp4", "linkdir/secret.mp4",
            str(input_dir / "link.mp4"), "missing.mp4", "../output/missing.mp4", "secret.mp4 [output]"]


def rejection(server, prompt: dict) -> dict:
    """The body of a /prompt answered 400."""
    with pytest.raises(AssertionError) as info:  # conftest.PromptRejected
        server.post_prompt(prompt)
    assert getattr(info.value, "status", None) == 400, info.value
    return info.value.body


def test_video_paths_outside_are_refused_when_queued(guarded):
    output = guarded.base / "output"
    before = sorted(output.rglob("*")) if output.exists() else []
    generic = set()
    for name in refused_names(guarded):
        body = rejection(guarded, video_prompt(name))
        errors = body["node_errors"]["2"]["errors"]
        assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == \
            [("custom_validation_failed", "video_path")], errors
        details = errors[0]["details"]
        assert details.startswith(f"video_path - {name!r} is not a file this ComfyUI can read."), details
        text = json.dumps(body).replace(json.dumps(repr(name))[1:-1], "<NAME>")  # the whole answer, as sent
        assert str(guarded.outside) not in text and "/etc" not in text and "No such file" not in text, text
        generic.add(details.replace(repr(name), "<NAME>"))
    assert len(generic) == 1, generic  # missing or not allowed: one message, nothing to tell them apart
    assert str(guarded.base / "input") in generic.pop()  # the user's own input folder is named
    assert (sorted(output.rglob("*")) if output.exists() else []) == before  # nothing was read or written


def test_video_paths_from_another_node_are_refused_when_run(guarded):
    """A path that is not known when the prompt is queued (it comes from a Text node) is refused when the
    node runs, with the same message."""
    messages = set()
    for name in ("/etc/passwd", str(guarded.outside / "secret.mp4"), "link.mp4", "missing.mp4"):
        prompt = video_prompt(["3", 0])
        prompt["3"] = {"class_type": "PrimitiveString", "inputs": {"value": name}}
        with pytest.raises(AssertionError) as info:  # conftest.PromptFailed
            guarded.run_prompt(prompt, timeout=300)
        (error,) = [data for event, data in info.value.entry["status"]["messages"] if event == "execution_error"]
        assert error["node_id"] == "2" and error["exception_type"].endswith(".FileRefused"), error
        messages.add(error["exception_message"].rstrip("\n").replace(repr(name), "<NAME>"))  # ComfyUI adds a \\n
    assert messages == {"Stylize Video File (VToonify): video_path: <NAME> is not a file this ComfyUI can read. "
                        f"Give the name of a file in ComfyUI's input folder ({guarded.base / 'input'}) (upload it "
                        "there; 'name [output]' for a file of the output folder), or an absolute path inside the "
                        "input, output or temp folder or inside a folder listed in the environment variable "
                        "VTOONIFY_ALLOWED_DIRS of the ComfyUI server."}, messages


def test_clips_in_input_and_in_the_listed_folder_are_stylized(guarded):
    from vtoonify_core import video

    for name, stem in (("safety_clip.mp4", "safety_clip"), (str(guarded.allowed / "listed_clip.mp4"), "listed_clip")):
        entry = guarded.run_prompt(video_prompt(name), timeout=300)
        (record,) = guarded.output_images(entry, "2")
        assert record == {"filename": f"{stem}.mp4", "subfolder": "safety", "type": "output"}
        info = video.probe_video(guarded.base / "output" / "safety" / f"{stem}.mp4")
        assert (info.frames, info.width, info.height) == (3, 128, 128)
    # an output name that leads out of the output folder is refused before anything is read
    entry = guarded.run_prompt(video_prompt("safety_clip.mp4", "../escaped.mp4"), timeout=300, check=False)
    (error,) = [data for event, data in entry["status"]["messages"] if event == "execution_error"]
    assert "output_name: '../escaped.mp4' must be a relative file name inside the output folder" in \
        error["exception_message"]
    assert not (guarded.base / "escaped.mp4").exists()


# ---------------------------------------------------------------------------------------------- models


def loader_prompt(**inputs) -> dict:
    """Load VToonify Model (1) with these inputs -> Extract Style Code (3) of an uploaded portrait (2)
    -> PreviewImage (4)."""
    loader = {"checkpoint": D_CKPT, "style_encoder": "encoder.pt", "face_parser": "faceparsing.pth",
              "exstyle": "auto", "device": "cpu", "precision": "fp32", "download_missing": False, **inputs}
    return {
        "1": {"class_type": "VToonifyLoadModel", "inputs": loader},
        "2": {"class_type": "LoadImage", "inputs": {"image": "safety_portrait.png"}},
        "3": {"class_type": "VToonifyExtractStyle", "inputs": {
            "vtoonify_model": ["1", 0], "image": ["2", 0], "style_id": 1, "color_transfer": False}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }


def loader_errors(server, **inputs) -> list[dict]:
    body = rejection(server, loader_prompt(**inputs))
    assert body["error"]["type"] == "prompt_outputs_failed_validation", body
    assert set(body["node_errors"]) == {"1"}, body["node_errors"]
    return body["node_errors"]["1"]["errors"]


def test_missing_models_are_refused_when_queued(guarded):
    guarded.upload_image(png_bytes(portrait()), "safety_portrait.png")
    folder = guarded.base / "models" / "vtoonify"
    expected = (f"checkpoint: '{HUB_MISSING}' is not in models/vtoonify: save it as models/vtoonify/{HUB_MISSING} "
                f"(the folder {folder}). It is on Hugging Face (PKUWilliamYang/VToonify): set download_missing to "
                f"true, or download it from {HF_PIXAR}.")
    errors = loader_errors(guarded, checkpoint=HUB_MISSING, exstyle="none")
    # ComfyUI reports a VALIDATE_INPUTS refusal once for every input it takes
    assert {e["extra_info"]["input_name"] for e in errors} == LOADER_CHECKED and len(errors) == 5, errors
    for e in errors:
        assert e["type"] == "custom_validation_failed"
        assert e["details"] == f"{e['extra_info']['input_name']} - {expected}", e
    # Google Drive only: refused with the folder to get it from, even with download_missing on
    for download in (False, True):
        details = loader_errors(guarded, checkpoint=DRIVE_MISSING, download_missing=download)[0]["details"]
        assert f"checkpoint: '{DRIVE_MISSING}' is not in models/vtoonify: save it as models/vtoonify/{DRIVE_MISSING}" \
            in details and details.endswith(f"download vtoonify.pt by hand from {DRIVE_T_PIXAR}."), details
    # the exemplar codes beside a VToonify-D checkpoint ('auto'), and a missing encoder
    lines = loader_errors(guarded, checkpoint=HUB_MISSING)[0]["details"].split(" - ", 1)[1].split("\n")
    assert lines[1].startswith("exstyle (auto: the codes beside the checkpoint): 'vtoonify_d_pixar/exstyle_code.npy' "
                               "is not in models/vtoonify"), lines
    (folder / "encoder.pt").rename(folder / "encoder.pt.away")
    try:
        details = loader_errors(guarded)[0]["details"]
        assert "style_encoder: 'encoder.pt' is not in models/vtoonify: save it as models/vtoonify/encoder.pt" in details
    finally:
        (folder / "encoder.pt.away").rename(folder / "encoder.pt")
    # ComfyUI still checks the inputs the validation does not take, and the pack the lists of those it takes
    errors = loader_errors(guarded, device="gpu9")
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [("value_not_in_list", "device")], errors
    errors = loader_errors(guarded, checkpoint="vtoonify_d_cartoon/no_such.pt")
    assert errors[0]["details"] == ("checkpoint - Value not in list: checkpoint: 'vtoonify_d_cartoon/no_such.pt' is "
                                    "neither a file of models/vtoonify nor an official file name."), errors
    # present files pass and run
    entry = guarded.run_prompt(loader_prompt(), timeout=300)
    assert len(guarded.output_images(entry, "4")) == 1


def test_errors_panel_shows_the_missing_model(comfy_server, browser_page):
    """Run in the real frontend with a missing checkpoint: the prompt is refused and the error panel
    (frontend 1.47: toast "Invalid input" -> View details -> the entry's info) shows the message."""
    page = browser_page.page
    comfy_server.upload_image(png_bytes(portrait()), "safety_portrait.png")
    browser_page.evaluate("async () => { await window.app.refreshComboInNodes(); }")  # the page knows the upload
    assert not (comfy_server.base / "models" / "vtoonify" / DRIVE_MISSING).exists()
    browser_page.evaluate("async (api) => { await window.app.loadApiJson(api, 'missing_model.json'); }",
                          loader_prompt(checkpoint=DRIVE_MISSING))
    page.wait_for_timeout(500)
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/prompt")) as answer:
        page.get_by_role("button", name="Run").first.click()
    assert answer.value.status == 400
    errors = answer.value.json()["node_errors"]
    assert set(errors) == {"1"}, errors  # the loader only
    page.get_by_role("button", name="View details").first.click(timeout=10000)
    page.get_by_role("button", name="Info for Load VToonify Model - checkpoint").first.click()
    shown = page.get_by_text(f"'{DRIVE_MISSING}' is not in models/vtoonify", exact=False).first
    shown.wait_for(timeout=10000)
    text = shown.inner_text()
    browser_page.screenshot("missing_model_errors")
    assert f"save it as models/vtoonify/{DRIVE_MISSING}" in text and DRIVE_T_PIXAR in text, text
    assert comfy_server.get_json("/queue")["queue_pending"] == []


# ---------------------------------------------------------------------------------------------- previews


def stylize_prompt(style_id: int, degree: float) -> dict:
    """Extract Style Code (3, which shows the aligned face) and Stylize Frames (6, which shows its first
    frame) of the uploaded portrait, 2 frames of 32 px; PreviewImage (7) saves nothing to output/."""
    prompt = loader_prompt()
    prompt["3"]["inputs"]["style_id"] = style_id
    prompt.update({
        "5": {"class_type": "ImageScale", "inputs": {
            "image": ["2", 0], "upscale_method": "area", "width": 32, "height": 32, "crop": "disabled"}},
        "8": {"class_type": "RepeatImageBatch", "inputs": {"image": ["5", 0], "amount": 2}},
        "6": {"class_type": "VToonifyStylizeFrames", "inputs": {
            "vtoonify_model": ["1", 0], "images": ["8", 0], "style": ["3", 0], "style_degree": degree,
            "crop_mode": "whole frame (pad to 8)", "batch_size": 1}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    })
    return prompt


def previews_by_node(server, prompt: dict, extra_data: dict | None = None) -> tuple[list, dict]:
    """Run ``prompt``; the node each binary /ws message (a preview) arrived for, and the history entry."""
    server.ws.clear()
    prompt_id = server.post_prompt(prompt, extra_data)
    entry = server.wait(prompt_id, timeout=300)
    current, previews = None, []
    for msg in server.messages():
        if msg["type"] == "executing":
            current = msg["data"].get("node")
        elif msg["type"] == "binary":
            previews.append((current, msg["data"]["size"]))
    return previews, entry


def test_previews_follow_the_preview_method(guarded):
    guarded.upload_image(png_bytes(portrait()), "safety_portrait.png")
    # the server was started with --preview-method none: progress, no previews
    previews, entry = previews_by_node(guarded, stylize_prompt(0, 0.4))  # style 1: cached by another test
    ran = {m["data"]["node"] for m in guarded.messages(entry["prompt"][1], "executing") if m["data"]["node"]}
    assert {"3", "6"} <= ran and previews == [], previews
    assert {m["data"]["node"] for m in guarded.messages(entry["prompt"][1], "progress")} >= {"6"}
    assert len(guarded.output_images(entry, "7")) == 2  # what an API client is after
    # a prompt that asks for previews (the frontend's "Live preview method") gets them
    previews, entry = previews_by_node(guarded, stylize_prompt(2, 0.6), {"preview_method": "auto"})
    assert {node for node, _ in previews} == {"3", "6"}, previews
    assert len(guarded.output_images(entry, "7")) == 2
    # and the next prompt without it is back to none
    previews, _ = previews_by_node(guarded, stylize_prompt(3, 0.7))
    assert previews == []


# ---------------------------------------------------------------------------------------------- node sizes


@pytest.fixture
def previews_on(browser_page, comfy_server):
    """The frontend's "Live preview method" set to auto (it asks the server for previews with every
    prompt); put back to the default afterwards (the setting is saved for the user on the server)."""
    set_method = "async (m) => { await window.app.extensionManager.setting.set('Comfy.Execution.PreviewMethod', m); }"
    browser_page.evaluate(set_method, "auto")
    try:
        yield
    finally:
        browser_page.evaluate(set_method, "default")


@pytest.mark.parametrize("name", LAYOUT_TEMPLATES)
def test_results_never_cover_other_nodes(name, workflow_env, browser_page, previews_on, comfy_server):
    page = browser_page
    show_graph(page, name)
    page.page.wait_for_timeout(1500)  # the panels have asked the server what to show
    before = page.evaluate(LAYOUT_JS)
    assert overlapping(before) == [], overlapping(before)
    entry = comfy_server.wait(page.queue_prompt(), timeout=300)
    assert entry["status"]["status_str"] == "success"
    page.page.wait_for_function(
        "() => app.graph.nodes.filter(n => n.type === 'VToonifyStylizeFrames').every(n => (n.imgs || []).length)",
        timeout=30000)
    page.page.wait_for_timeout(1500)  # drawn (the frontend lays the widgets out as it draws)
    after = page.evaluate(LAYOUT_JS)
    page.screenshot(f"layout_after_run_{name}")
    assert overlapping(after) == [], overlapping(after)
    stylize = [n for n in after if n["type"] == "VToonifyStylizeFrames"]
    assert stylize and all(n["previews"] for n in stylize)  # the preview did arrive
    for node in after:  # nothing is drawn below a node's bottom edge
        if not node["collapsed"]:
            assert node["widgets_end"] <= node["height"] + 1, node
    assert page.unexpected_console_errors() == [], "\n".join(page.console_errors)
