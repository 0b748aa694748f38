"""The batch client (vtoonify_core.batch.client) against a real ComfyUI 0.30 server.

The stand-in checkpoints go into the server's ``models/vtoonify`` in the official layout. The
client queues several prompts from the API workflows in ``workflows/api/``, spread over two
"servers" (the same server twice, so two workers share the work), follows them on ``/ws``,
downloads every output through ``/view``, retries a prompt that fails and writes a summary.
To stay short on CPU: the portraits are 256x256 (the style code needs a face) but an
``ImageScale`` node added to the image workflow feeds 32x32 frames to Stylize Frames; the video
is 6 frames of 32x32; both stylize the whole frame with the exemplar colours.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

av = pytest.importorskip("av", reason="PyAV (pip install av) is needed for the video workflow")
skdata = pytest.importorskip("skimage.data")

import cv2  # noqa: E402

from vtoonify_core import video  # noqa: E402
from vtoonify_core.batch import client as batch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows" / "api"
VIDEO_NODE = "VToonifyStylizeVideoFile"
FAST_MODEL = ["device=\"cpu\"", "precision=\"fp32\""]


@pytest.fixture(scope="module")
def server(comfy_server, official_dir, vtoonify_d_path, vtoonify_t_path, psp_path, bisenet_path, exstyle_path):
    """The real server with the stand-in model files in models/vtoonify."""
    comfy_server.add_models(official_dir)
    return comfy_server


def astronaut(size: int, shift: int = 0) -> np.ndarray:
    img = skdata.astronaut()
    return cv2.resize(img[10 + shift:450 + shift, 20 + shift:460 + shift], (size, size), interpolation=cv2.INTER_AREA)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_workflow_helpers(tmp_path):
    wf = batch.load_workflow(WORKFLOWS / "stylize_image.json")
    assert batch.find_input_node(wf, "image") == "1"
    assert batch.find_input_node(batch.load_workflow(WORKFLOWS / "stylize_video_file.json"), "video") == "2"
    with pytest.raises(batch.QueueError, match="for video inputs"):
        batch.find_input_node(wf, "video")
    assert batch.parse_override("4.style_degree=0.8") == ("4", "style_degree", 0.8)
    assert batch.parse_override("4.crop_mode=whole frame (pad to 8)") == ("4", "crop_mode", "whole frame (pad to 8)")
    with pytest.raises(batch.QueueError):
        batch.parse_override("style_degree=0.8")
    with pytest.raises(batch.QueueError, match="no node 9"):
        batch.apply_overrides(wf, [("9", "x", 1)])
    batch.name_outputs(wf, "alice")
    assert wf["5"]["inputs"]["filename_prefix"] == "vtoonify/image_alice"
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(batch.QueueError, match="Export \\(API\\)"):
        batch.load_workflow(ui)
    entry = {"outputs": {"5": {"images": [{"filename": "a.png", "subfolder": "s", "type": "output"}], "text": ["x"]}}}
    assert batch.output_files(entry) == [{"node": "5", "key": "images", "filename": "a.png", "subfolder": "s",
                                          "type": "output"}]


def test_workflows_are_valid_api_format(server):
    info = server.object_info()
    for name in ("stylize_image.json", "stylize_video_file.json"):
        wf = batch.load_workflow(WORKFLOWS / name)
        for nid, node in wf.items():
            assert node["class_type"] in info, (
                f"{name}: node {nid} uses {node['class_type']}, which this server does not have"
                + (" (register nodes/video.py in nodes/__init__.py)" if node["class_type"] == VIDEO_NODE else ""))
            spec = info[node["class_type"]]["input"]
            known = set(spec.get("required", {})) | set(spec.get("optional", {}))
            assert set(node["inputs"]) <= known, f"{name}: node {nid} has unknown inputs {set(node['inputs']) - known}"
            assert set(spec.get("required", {})) <= set(node["inputs"]), f"{name}: node {nid} misses required inputs"


def test_image_batch_over_two_workers_with_a_retry(server, tmp_path):
    inputs = []
    for i in range(3):
        path = tmp_path / f"face_{i}.png"
        video.write_image(path, astronaut(256, 12 * i))
        inputs.append(path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n but not really a PNG")
    inputs.append(broken)
    overrides = [batch.parse_override(o) for o in (
        "3.style_id=1", "3.color_transfer=true", "4.crop_mode=whole frame (pad to 8)", "4.batch_size=2",
        *("2." + o for o in FAST_MODEL))]
    workflow = batch.load_workflow(WORKFLOWS / "stylize_image.json")
    workflow["6"] = {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "area", "width": 32,
                                                            "height": 32, "crop": "disabled"}}
    workflow["4"]["inputs"]["images"] = ["6", 0]
    events = []
    out = tmp_path / "out"
    summary = batch.run_batch(workflow, inputs, [server.url, server.url],
                              out, retries=1, timeout=300, overrides=overrides,
                              on_event=lambda kind, job, data: events.append((kind, Path(job.input).name, data)))
    assert summary["ok"] == 3 and summary["failed"] == 1
    assert json.loads((out / "summary.json").read_text()) == summary
    jobs = {Path(j["input"]).name: j for j in summary["jobs"]}
    for i in range(3):
        job = jobs[f"face_{i}.png"]
        assert job["status"] == "ok" and len(job["attempts"]) == 1 and job["prompt_id"]
        assert len(job["outputs"]) == 1
        data = Path(job["outputs"][0]).read_bytes()
        assert png_size(data) == (128, 128)
        assert f"face_{i}" in Path(job["outputs"][0]).name  # SaveImage prefix named after the input
        entry = server.get_json(f"/history/{job['prompt_id']}")[job["prompt_id"]]
        assert entry["status"]["status_str"] == "success"
    bad = jobs["broken.png"]
    assert bad["status"] == "failed" and len(bad["attempts"]) == 2  # the first try and one retry
    assert all(a["error"] for a in bad["attempts"]) and "LoadImage" in bad["error"]
    kinds = [k for k, _, _ in events]
    assert kinds.count("queued") == 5 and kinds.count("done") == 3 and kinds.count("retry") == 1
    assert any(k == "progress" for k in kinds), "no progress message came over /ws"


def test_video_file_batch(server, tmp_path, capsys):
    if VIDEO_NODE not in server.object_info():
        pytest.fail(f"{VIDEO_NODE} is not registered: add nodes/video.py to nodes/__init__.py")
    frames = [astronaut(32, 6 * i) for i in range(6)]
    clip = video.write_video(tmp_path / "walk.mp4", frames, Fraction(24000, 1001), options={"crf": "0"}, tone_hz=330)
    out = tmp_path / "out"
    rc = batch.main([str(WORKFLOWS / "stylize_video_file.json"), str(clip), "--server", server.url, "--out", str(out),
                     "--set", "2.crop_mode=whole frame (pad to 8)", "--set", "2.style_id=1",
                     "--set", "2.color_transfer=true", "--set", "2.chunk_size=3", "--set", "2.preview_frames=2",
                     *(x for o in FAST_MODEL for x in ("--set", "1." + o)), "--timeout", "300", "--no-websocket",
                     "-q"])  # the /history polling path
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    (job,) = summary["jobs"]
    assert job["status"] == "ok"
    (path,) = job["outputs"]
    assert path.endswith("walk_vtoonify.mp4")
    info = video.probe_video(path)
    assert (info.width, info.height, info.frames, info.rate, len(info.audio)) == (128, 128, 6, Fraction(24000, 1001), 1)
    on_server = server.base / "output" / "vtoonify" / "walk_vtoonify.mp4"
    assert on_server.read_bytes() == Path(path).read_bytes()
