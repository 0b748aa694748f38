"""Face choice and paste-back on a real ComfyUI 0.30 (issue 20): a two-face image (the example portrait and
a smaller copy side by side) through Detect Faces (every face) -> Extract Style Code -> Stylize Frames ->
Paste Back, over ``/prompt``; both faces are stylized in place and the rest of the frame is the input, pixel
for pixel. A face index beyond the faces found fails the run with the node's message."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from test_workflows import D_CARTOON, ENCODER, PARSER, png_bytes, portrait, workflow_env  # noqa: F401 (a fixture)

TWO_FACES = "vtoonify_two_faces.png"
PAD = 64  # small crops: a quick run on the CPU


def two_faces() -> np.ndarray:
    """(256, 512, 3): the portrait and an 80% copy of it, side by side."""
    face = portrait()
    right = np.zeros_like(face)
    right[25:230, 25:230] = np.asarray(Image.fromarray(face).resize((205, 205), Image.LANCZOS))
    return np.concatenate([face, right], axis=1)


def prompt(stylize: str = "every face", index: int = 0) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": TWO_FACES}},
        "2": {"class_type": "VToonifyLoadModel", "inputs": {
            "checkpoint": D_CARTOON, "style_encoder": ENCODER, "face_parser": PARSER, "exstyle": "auto",
            "device": "auto", "precision": "auto", "download_missing": False}},
        "3": {"class_type": "VToonifyDetectFaces", "inputs": {
            "images": ["1", 0], "detector": "dlib", "face": "left to right", "index": index, "stylize": stylize,
            "crop": "fixed (first frame)", "smoothing": 3.0, "face_padding": PAD, "upsample": 1}},
        "4": {"class_type": "VToonifyExtractStyle", "inputs": {
            "vtoonify_model": ["2", 0], "image": ["1", 0], "style_id": 26, "color_transfer": False,
            "faces": ["3", 0]}},
        "5": {"class_type": "VToonifyStylizeFrames", "inputs": {
            "vtoonify_model": ["2", 0], "images": ["1", 0], "style": ["4", 0], "style_degree": 0.5,
            "crop_mode": "face (official crop)", "batch_size": 2, "face_padding": PAD, "faces": ["3", 0]}},
        "6": {"class_type": "VToonifyPasteBack", "inputs": {
            "images": ["1", 0], "stylized": ["5", 0], "faces": ["5", 6], "feather": 8.0, "color_match": 0.5}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "vtoonify/two_faces"}},
        "8": {"class_type": "MaskPreview", "inputs": {"mask": ["6", 1]}},
    }


def fetch(server, entry: dict, node_id: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(io.BytesIO(server.view(r["filename"], r["subfolder"], r["type"]))).convert("RGB"))
            for r in server.output_images(entry, node_id)]


def test_every_face_is_stylized_and_pasted_back(workflow_env, comfy_server):
    image = two_faces()
    comfy_server.upload_image(png_bytes(image), TWO_FACES)
    entry = comfy_server.run_prompt(prompt(), timeout=300)
    (out,) = fetch(comfy_server, entry, "7")
    (mask,) = fetch(comfy_server, entry, "8")
    assert out.shape == image.shape == mask.shape
    weight = mask[..., 0]
    diff = np.abs(out.astype(int) - image.astype(int)).max(axis=2)
    assert (diff[weight == 0] <= 1).all(), "Paste Back changed the frame outside the faces"
    for half in (slice(0, 256), slice(256, 512)):  # each face pasted, in its own half
        inside = weight[:, half] > 200
        assert inside.sum() > 300 and diff[:, half][inside].mean() > 5, half
    assert (weight == 0).mean() > 0.5

    failed = comfy_server.run_prompt(prompt("the chosen face", index=5), timeout=300, check=False)
    (error,) = [d for event, d in failed["status"]["messages"] if event == "execution_error"]
    assert error["node_id"] == "3", error
    message = error["exception_message"]
    assert message.startswith("Detect Faces (VToonify): index: face 5 (in 'left_to_right' order) was asked for"), \
        message
    assert "(the first frame with faces has 2: indices 0..1): lower the index." in message, message
