"""Edit Style by Text (issue 19) in the real ComfyUI 0.30: a tiny random CLIP in ComfyUI's own
``models/clip/`` is listed by the node and used; a one-tower CLIP there is refused with a clear message.

Stand-in VToonify-D weights (conftest.py) and a CLIP written by ``vtoonify_core.testing.tinyclip``;
the synthesis stops at 32 px, three steps.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("transformers")

FACE = "vtoonify_text_face.png"
CLIP = "tiny-clip"
ONE_TOWER = "clip_l_text_only"


@pytest.fixture(scope="module")
def text_env(comfy_server, vtoonify_d_path, psp_path, bisenet_path):
    from skimage import data

    from vtoonify_core.testing import standin
    from vtoonify_core.testing.tinyclip import write_tiny_clip

    folder = comfy_server.base / "models" / "vtoonify" / "text_style"
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in (("vtoonify_s_d.pt", vtoonify_d_path), ("encoder.pt", psp_path),
                      ("faceparsing.pth", bisenet_path)):
        if not (folder / name).exists():
            (folder / name).symlink_to(src)
    if not (folder / "exstyle_code.npy").exists():
        standin.write_official_exstyles(folder / "exstyle_code.npy", n=4)
    clips = comfy_server.base / "models" / "clip"
    if not (clips / CLIP / "config.json").exists():
        write_tiny_clip(clips / CLIP)
    one = clips / ONE_TOWER
    one.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((clips / CLIP / "config.json").read_text())
    (one / "config.json").write_text(json.dumps({**cfg["text_config"], "model_type": "clip_text_model"}))
    face = Image.fromarray(data.astronaut()).resize((256, 256), Image.LANCZOS)
    buf = io.BytesIO()
    face.save(buf, format="PNG")
    comfy_server.upload_image(buf.getvalue(), FACE)
    return comfy_server


def prompt(text: str, clip: str = CLIP) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": FACE}},
        "2": {"class_type": "VToonifyLoadModel", "inputs": {
            "checkpoint": "text_style/vtoonify_s_d.pt", "style_encoder": "text_style/encoder.pt",
            "face_parser": "text_style/faceparsing.pth", "exstyle": "auto", "device": "cpu", "precision": "fp32",
            "download_missing": False}},
        "3": {"class_type": "VToonifyExtractStyle", "inputs": {
            "vtoonify_model": ["2", 0], "image": ["1", 0], "style_id": 1, "color_transfer": False}},
        "4": {"class_type": "VToonifyEditStyleByText", "inputs": {
            "vtoonify_model": ["2", 0], "style": ["3", 0], "text": text, "clip_model": clip, "steps": 3,
            "strength": 1.0, "layers": "all", "first_layer": 0, "last_layer": 17, "source_text": "",
            "learning_rate": 0.1, "l2_weight": 0.0, "identity_weight": 0.0, "resolution": "32", "seed": 0,
            "augmentations": 0}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 1], "filename_prefix": "text_style"}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["4", 2]}},
    }


def test_edit_style_by_text_runs_with_a_clip_from_models_clip(text_env):
    info = text_env.request("GET", "/object_info/VToonifyEditStyleByText")
    assert info[0] == 200
    choices = json.loads(info[1])["VToonifyEditStyleByText"]["input"]["required"]["clip_model"][0]
    assert CLIP in choices and ONE_TOWER in choices
    entry = text_env.run_prompt(prompt("a cartoon with big eyes"), timeout=300)
    records = text_env.output_images(entry, "5")
    assert len(records) == 2
    before, after = (np.asarray(Image.open(io.BytesIO(text_env.view(r["filename"], r["subfolder"]))))
                     for r in records)
    assert before.shape == after.shape == (32, 32, 3) and np.abs(before.astype(int) - after.astype(int)).max() > 0
    text = " ".join(entry["outputs"]["6"]["text"])
    assert f"CLIP {CLIP}; layers 1-7" in text and "CLIP loss" in text, text


def test_a_one_tower_clip_is_refused_by_name(text_env):
    entry = text_env.run_prompt(prompt("a face", ONE_TOWER), timeout=300, check=False)
    (error,) = [data for event, data in entry["status"]["messages"] if event == "execution_error"]
    assert error["node_id"] == "4"
    assert error["exception_message"].startswith(
        f"Edit Style by Text (VToonify): {ONE_TOWER}: a CLIP text model only (no image tower"), error
