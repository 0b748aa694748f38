"""Detect Faces (VToonify) and Paste Back (VToonify), and the faces inputs of Extract Style Code and Stylize
Frames (issue 20), through their entry points on CPU with the fake ComfyUI (``fake_comfy``): two real faces
(``skimage.data.astronaut()``) side by side, small crops (face_padding 48) and stand-in networks."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from vtoonify_core.types import StyleCode

skdata = pytest.importorskip("skimage.data")
D_CKPT = "vtoonify_d_cartoon/vtoonify_s_d.pt"
PAD = 48
DETECT = dict(detector="dlib", face="left to right", index=0, stylize="the chosen face", crop="fixed (first frame)",
              smoothing=3.0, face_padding=PAD, upsample=1)


@pytest.fixture(scope="module")
def dlib_ok(fake_comfy):
    from vtoonify_core import faces

    try:
        faces.get_backend("dlib")
    except faces.FaceBackendUnavailableError as exc:
        pytest.skip(f"face detection backend missing: {exc}")


@pytest.fixture(scope="module")
def model(fake_comfy):
    fake_comfy.module("nodes.cache").NETWORKS.capacity = 6
    return fake_comfy.node("VToonifyLoadModel")(D_CKPT, "encoder.pt", "faceparsing.pth", "auto", "cpu", "fp32",
                                                 False)[0]


@pytest.fixture(scope="module")
def two_faces() -> torch.Tensor:
    """IMAGE [1, 256, 512, 3]: the astronaut's face (left) and an 80% copy (right)."""
    face = np.ascontiguousarray(skdata.astronaut()[20:276, 80:336])
    right = np.zeros_like(face)
    right[25:230, 25:230] = cv2.resize(face, (205, 205), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.concatenate([face, right], axis=1)).float().div(255.0)[None]


def style_of(model, seed: int = 0) -> StyleCode:
    g = torch.Generator().manual_seed(seed)
    return StyleCode(torch.randn(1, 18, 512, generator=g) * 0.5, model.backbone, style_id=0)


def test_detect_faces_node(fake_comfy, dlib_ok, two_faces):
    detect = fake_comfy.node("VToonifyDetectFaces")
    tracks, preview, count = detect(two_faces, **DETECT)
    assert count == 2 and tracks.num_faces == 1 and tracks.num_frames == 1
    x, y, w, h = tracks.box(0)
    assert x + w <= 256  # the left face
    assert preview.shape == two_faces.shape and preview.dtype == torch.float32
    changed = (preview - two_faces).abs().amax(-1)[0] > 0.1
    assert changed[y, x:x + w].float().mean() > 0.9  # the chosen crop drawn ...
    assert changed[:, 256:].any()                     # ... and the other face, with its index
    every, _, _ = detect(two_faces, **{**DETECT, "stylize": "every face"})
    assert every.num_faces == 2 and every.box(1)[0] >= 256
    with pytest.raises(ValueError, match=r"Detect Faces \(VToonify\): index: face 5 .* indices 0\.\.1"):
        detect(two_faces, **{**DETECT, "index": 5})
    with pytest.raises(ValueError, match=r"Detect Faces \(VToonify\): No face was detected in the image"):
        detect(torch.full((1, 64, 64, 3), 0.5), **DETECT)


def test_stylize_every_face_and_paste_back(fake_comfy, dlib_ok, model, two_faces):
    """Every face stylized (face-major) and pasted back: the frame changes inside both boxes only."""
    tracks, _, _ = fake_comfy.node("VToonifyDetectFaces")(two_faces, **{**DETECT, "stylize": "every face"})
    stylize = fake_comfy.node("VToonifyStylizeFrames")
    images, mask, x, y, w, h, faces_out = stylize(model, two_faces, style_of(model), 0.5, "face (official crop)", 2,
                                                  None, PAD, tracks)
    ch, cw = tracks.crop_shape
    assert images.shape == (2, 4 * ch, 4 * cw, 3) and mask.shape == (2, 256, 512)
    assert faces_out is tracks and (x, y, w, h) == tracks.box(0)
    pasted, weight = fake_comfy.node("VToonifyPasteBack")(two_faces, images, faces_out, 8.0, 0.0)
    assert pasted.shape == two_faces.shape and weight.shape == (1, 256, 512)
    diff = (pasted - two_faces).abs().amax(-1)[0]
    for k in range(2):
        bx, by, bw, bh = tracks.box(k)
        assert diff[by + bh // 2 - 8:by + bh // 2 + 8, bx + bw // 2 - 8:bx + bw // 2 + 8].mean() > 0.02, k
    assert torch.equal(pasted[0][weight[0] == 0], two_faces[0][weight[0] == 0])  # untouched elsewhere
    # a Face Parse-like mask: only its part of the boxes changes
    only_left = torch.zeros(1, 256, 512)
    only_left[:, :, :256] = 1.0
    masked, mweight = fake_comfy.node("VToonifyPasteBack")(two_faces, images, faces_out, 0.0, 0.0, only_left)
    assert torch.equal(masked[0, :, 256:], two_faces[0, :, 256:]) and mweight[0, :, 256:].max() == 0


def test_stylize_frames_faces_output_pastes_back_without_detect(fake_comfy, dlib_ok, model, two_faces):
    """Stylize Frames' own crop (no Detect Faces) also pastes back: crop_mode face and whole frame."""
    stylize, paste = fake_comfy.node("VToonifyStylizeFrames"), fake_comfy.node("VToonifyPasteBack")
    images, *_, faces_out = stylize(model, two_faces, style_of(model), 0.5, "face (official crop)", 2, None, PAD)
    assert faces_out.num_items == 1
    pasted, weight = paste(two_faces, images, faces_out, 4.0, 0.5)
    assert pasted.shape == two_faces.shape and 0 < float(weight.mean()) < 1
    small = torch.nn.functional.interpolate(two_faces.permute(0, 3, 1, 2), size=(32, 64), mode="area")
    small = small.permute(0, 2, 3, 1).contiguous()
    images, *_, whole = stylize(model, small, style_of(model), 0.5, "whole frame (pad to 8)", 2)
    pasted, weight = paste(small, images, whole, 4.0, 0.0)
    assert float(weight.min()) == 1.0
    expect = torch.nn.functional.interpolate(images.permute(0, 3, 1, 2), size=(32, 64), mode="area")
    torch.testing.assert_close(pasted, expect.permute(0, 2, 3, 1), atol=2e-3, rtol=0)


def test_extract_style_uses_the_chosen_face(fake_comfy, dlib_ok, model, two_faces):
    extract, detect = fake_comfy.node("VToonifyExtractStyle"), fake_comfy.node("VToonifyDetectFaces")
    right, _, _ = detect(two_faces, **{**DETECT, "index": 1})
    left, _, _ = detect(two_faces, **DETECT)
    _, aligned_default, _ = extract(model, two_faces, 0, False)
    _, aligned_left, _ = extract(model, two_faces, 0, False, left)
    _, aligned_right, _ = extract(model, two_faces, 0, False, right)
    from vtoonify_core.styles.codes import prepare_style_image

    frame = (two_faces[0].numpy() * 255).round().astype(np.uint8)
    for tracks, aligned in ((left, aligned_left), (right, aligned_right)):
        expected = prepare_style_image(frame, face=tracks.reference(0)[1], face_padding=200)[0]
        assert np.array_equal((aligned[0].numpy() * 255).round().astype(np.uint8), expected)
    assert not torch.equal(aligned_left, aligned_right)
    # not connected: the best-scoring face, one of the two
    assert torch.equal(aligned_default, aligned_left) or torch.equal(aligned_default, aligned_right)


def test_faces_inputs_refuse_other_frames(fake_comfy, dlib_ok, model, two_faces):
    tracks, _, _ = fake_comfy.node("VToonifyDetectFaces")(two_faces, **DETECT)
    stylize, paste = fake_comfy.node("VToonifyStylizeFrames"), fake_comfy.node("VToonifyPasteBack")
    style = style_of(model)
    with pytest.raises(ValueError, match=r"Stylize Frames: faces: the faces were found in 512x256 frames but these "
                                         r"are 256x256"):
        stylize(model, two_faces[:, :, :256], style, 0.5, "face (official crop)", 2, None, PAD, tracks)
    with pytest.raises(ValueError, match=r"Stylize Frames: faces: the faces were found in 1 frame\(s\) but there "
                                         r"are 2"):
        stylize(model, two_faces.repeat(2, 1, 1, 1), style, 0.5, "face (official crop)", 2, None, PAD, tracks)
    images, *_ = stylize(model, two_faces, style, 0.5, "face (official crop)", 2, None, PAD, tracks)
    with pytest.raises(ValueError, match=r"Paste Back \(VToonify\): stylized: holds 2 image\(s\) but the faces give "
                                         r"1 crop"):
        paste(two_faces, images.repeat(2, 1, 1, 1), tracks, 8.0, 0.0)
    with pytest.raises(ValueError, match=r"Paste Back \(VToonify\): stylized: .*aspect of the crop"):
        paste(two_faces, images[:, :, :-64], tracks, 8.0, 0.0)
    with pytest.raises(ValueError, match=r"Paste Back \(VToonify\): mask: is 256x256 but the frames are 512x256"):
        paste(two_faces, images, tracks, 8.0, 0.0, torch.ones(1, 256, 256))
    with pytest.raises(ValueError, match=r"Paste Back \(VToonify\): faces: expected VTOONIFY_FACES, got str"):
        paste(two_faces, images, "faces", 8.0, 0.0)
    with pytest.raises(ValueError, match=r"Stylize Frames: face_parsing: maps are 256x256 but the frames are 512x256"):
        stylize(model, two_faces, style, 0.5, "face (official crop)", 2, torch.zeros(1, 19, 256, 256), PAD, tracks)


def test_video_file_crops_the_chosen_face(fake_comfy, dlib_ok, model, two_faces, tmp_path, monkeypatch):
    """The streaming node takes the detector, face order, index and padding of Detect Faces for the video's
    first frame with a face; tracked crops and every face are refused (the IMAGE path does them)."""
    from vtoonify_core import video
    from vtoonify_core.faces import detect_faces
    from vtoonify_core.video.jobs import prepare_job

    monkeypatch.setenv("VTOONIFY_ALLOWED_DIRS", str(tmp_path))
    frame = (two_faces[0].numpy() * 255).round().astype(np.uint8)
    src = video.write_video(tmp_path / "two.mp4", np.stack([frame] * 2), 24, codec="libx264rgb", pix_fmt="rgb24")
    detect = fake_comfy.node("VToonifyDetectFaces")
    right, _, _ = detect(two_faces, **{**DETECT, "index": 1})
    run = fake_comfy.node("VToonifyStylizeVideoFile")
    answer = run(model, str(src), output_name="faces/%stem%.mp4", style_degree=0.5, batch_size=2,
                 crop_mode="face (official crop)", style=style_of(model), chunk_size=2, preview_frames=1,
                 faces=right)
    h, w = right.crop_shape
    assert tuple(answer["result"][1].shape) == (1, 4 * h, 4 * w, 3)
    eyes = [f.eye_center for f in detect_faces(frame, order="left_to_right")]
    for index, eye in enumerate(eyes):
        job = prepare_job(model, src, tmp_path / f"out{index}.mp4", style_of(model), face_padding=PAD,
                          pick="left_to_right", index=index)
        x0, y0, x1, y1 = job.geometry.box
        assert x0 <= eye[0] < x1 and job.settings["face"] == {"pick": "left_to_right", "index": index}
    tracked, _, _ = detect(two_faces, **{**DETECT, "crop": "tracked (smoothed)"})
    with pytest.raises(ValueError, match=r"Stylize Video File \(VToonify\): faces: the video file is cropped like "
                                         r"its first frame"):
        run(model, str(src), output_name="faces/x.mp4", style_degree=0.5, batch_size=2,
            crop_mode="face (official crop)", style=style_of(model), faces=tracked)


def test_tracked_crops_paste_back_frame_by_frame(fake_comfy, dlib_ok, model, two_faces):
    """A clip whose face moves: tracked crops follow it and Paste Back puts each frame's crop at its own place."""
    left = two_faces[:, :, :256]
    frames = torch.cat([torch.roll(left, shifts=(0, 12 * t), dims=(1, 2)) for t in range(3)])
    detect = fake_comfy.node("VToonifyDetectFaces")
    tracked, _, _ = detect(frames, **{**DETECT, "crop": "tracked (smoothed)", "smoothing": 0.0})
    fixed, _, _ = detect(frames, **DETECT)
    style = style_of(model)
    for tracks, moves in ((tracked, True), (fixed, False)):
        images, *_ = fake_comfy.node("VToonifyStylizeFrames")(model, frames, style, 0.5, "face (official crop)", 3,
                                                              None, PAD, tracks)
        _, weight = fake_comfy.node("VToonifyPasteBack")(frames, images, tracks, 0.0, 0.0)
        cols = [torch.nonzero(weight[i].amax(0) > 0.5).flatten()[0].item() for i in range(3)]
        if moves:
            assert [b - a for a, b in zip(cols, cols[1:])] == pytest.approx([12, 12], abs=2), cols
        else:
            assert cols[0] == cols[1] == cols[2]
