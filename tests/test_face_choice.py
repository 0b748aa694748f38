"""Face choice and paste-back in the core (issue 20): :func:`track_faces` (face order, index, every face,
crop fixed or tracked) on real faces (``skimage.data.astronaut()``, two faces side by side), and
:func:`composite_face` / :func:`paste_tracks` (exact inverse of the crop, continuous feather, colour
match at the seam, clear errors)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from vtoonify_core import faces
from vtoonify_core.errors import InputError, NoFaceError
from vtoonify_core.faces.crop import CropGeometry, apply_crop
from vtoonify_core.faces.paste import composite_face, paste_tracks, seam_band
from vtoonify_core.faces.tracks import FaceOptions, FaceTracks, track_faces, whole_frame_geometry

skdata = pytest.importorskip("skimage.data")
PAD = 64  # crops of about 128 px instead of the official ~400, for speed


@pytest.fixture(scope="module")
def dlib_ok():
    try:
        faces.get_backend("dlib")
    except faces.FaceBackendUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The astronaut's face, 256x256 (the badge on the suit is cut away)."""
    return np.ascontiguousarray(skdata.astronaut()[20:276, 80:336])


@pytest.fixture(scope="module")
def two_faces(face) -> np.ndarray:
    """Two copies of the face side by side: the left one full size, the right one 80% (smaller)."""
    right = np.zeros_like(face)
    right[25:230, 25:230] = cv2.resize(face, (205, 205), interpolation=cv2.INTER_AREA)
    return np.concatenate([face, right], axis=1)


def eye_centres(img: np.ndarray) -> list[np.ndarray]:
    """Eye midpoints of the faces, left to right."""
    return [f.eye_center for f in faces.detect_faces(img, order="left_to_right")]


def inside(box: tuple[int, int, int, int], point) -> bool:
    x, y, w, h = box
    return x <= point[0] < x + w and y <= point[1] < y + h


# ---------------------------------------------------------------------------------------------- choice


def test_order_and_index_choose_the_face(dlib_ok, two_faces):
    left, right = eye_centres(two_faces)
    choose = {("left_to_right", 0): left, ("left_to_right", 1): right, ("largest", 0): left, ("largest", 1): right}
    for (pick, index), eye in choose.items():
        tracks = track_faces([two_faces], FaceOptions(pick=pick, index=index, padding=PAD))
        other = right if eye is left else left
        assert tracks.num_faces == 1 and len(tracks.candidates) == 2
        assert inside(tracks.box(0), eye) and not inside(tracks.box(0), other), (pick, index, tracks.box(0))
    # the official choice is the last face the detector returns
    official = track_faces([two_faces], FaceOptions(pick="official", padding=PAD))
    last = faces.detect_faces(two_faces, order="official")[0].eye_center
    assert inside(official.box(0), last)


def test_every_face_gives_one_track_per_face_of_one_crop_size(dlib_ok, two_faces):
    tracks = track_faces([two_faces], FaceOptions(every_face=True, pick="left_to_right", padding=PAD))
    left, right = eye_centres(two_faces)
    assert tracks.num_faces == 2 and tracks.num_items == 2
    assert {c.crop_shape for c in tracks.clips} == {tracks.crop_shape}
    assert inside(tracks.box(0), left) and inside(tracks.box(1), right)
    crops = [apply_crop(two_faces, tracks.geometry(i)) for i in range(2)]
    assert crops[0].shape == crops[1].shape == (*tracks.crop_shape, 3)
    # the right face is smaller, so rescaled more: its crop (same size) covers less of the frame
    assert tracks.box(1)[2] < tracks.box(0)[2]


def test_bad_choices_are_refused_clearly(dlib_ok, two_faces):
    with pytest.raises(InputError, match=r"index: face 2 .* has 2: indices 0\.\.1\): lower the index"):
        track_faces([two_faces], FaceOptions(index=2, padding=PAD))
    with pytest.raises(NoFaceError, match="No face was detected in any of the 2 frames"):
        coffee = skdata.coffee()
        track_faces([coffee, coffee], FaceOptions(padding=PAD))
    for bad, name in ((FaceOptions(pick="biggest"), "face"), (FaceOptions(mode="follow"), "crop"),
                      (FaceOptions(index=-1), "index"), (FaceOptions(smoothing=-1.0), "smoothing"),
                      (FaceOptions(padding=4), "face_padding")):
        with pytest.raises(InputError, match=f"^{name}: "):
            track_faces([two_faces], bad)


def test_tracked_crop_follows_the_face_fixed_does_not(dlib_ok, face):
    step = np.array([9.0, 4.0])
    frames = np.stack([cv2.warpAffine(face, np.float32([[1, 0, -30 + step[0] * t], [0, 1, step[1] * t]]), (320, 288),
                                      borderMode=cv2.BORDER_REFLECT) for t in range(4)])
    fixed = track_faces(frames, FaceOptions(padding=PAD))
    tracked = track_faces(frames, FaceOptions(mode="track", smoothing=1.0, padding=PAD))
    assert len({fixed.geometry(i) for i in range(4)}) == 1
    boxes = np.array([tracked.box(i)[:2] for i in range(4)], float)
    assert np.abs(np.diff(boxes, axis=0).mean(0) - step).max() < 1.5, boxes
    assert {tracked.geometry(i).crop_shape for i in range(4)} == {fixed.crop_shape}
    # the face stays put in the tracked crops, it drifts in the fixed ones
    eyes = [faces.detect_faces(f)[0].eye_center for f in frames]
    in_tracked = np.array([tracked.geometry(i).to_crop(e) for i, e in enumerate(eyes)])
    in_fixed = np.array([fixed.geometry(i).to_crop(e) for i, e in enumerate(eyes)])
    assert np.ptp(in_tracked, axis=0).max() < 3.0 < np.ptp(in_fixed, axis=0).max()


def test_each_frame_is_detected_once_and_a_run_can_stop(dlib_ok, two_faces):
    seen = []
    clip = np.stack([two_faces, two_faces[:, ::-1]])
    tracks = track_faces(clip, FaceOptions(every_face=True, mode="track", padding=PAD),
                         on_frame=lambda done, total: seen.append((done, total)))
    assert tracks.num_faces == 2 and seen == [(0, 2), (1, 2)]  # two faces, two frames: two detections

    class Stop(Exception):
        pass

    def stop(done: int, total: int) -> None:
        if done == 1:
            raise Stop

    with pytest.raises(Stop):
        track_faces(clip, FaceOptions(mode="track", padding=PAD), on_frame=stop)


# ---------------------------------------------------------------------------------------------- paste back

#: a crop at scale 1 (eyes already 64 px apart): no resize, no blur; the crop is frame[16:80, 24:104]
GEO = CropGeometry(1.0, 100, 128, 16, 80, 24, 104, 100, 128, 0)


def frame(seed: int = 0, h: int = 100, w: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def up4(x: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(x, 4, axis=0), 4, axis=1)


def test_pasting_the_unstylized_crop_reproduces_the_frame(dlib_ok):
    img = frame()
    crop = apply_crop(img, GEO)
    np.testing.assert_array_equal(crop, img[16:80, 24:104])
    out, weight = composite_face(img, up4(crop), GEO, feather=0.0)
    np.testing.assert_allclose(out * 255.0, img.astype(np.float32), atol=1e-3)  # exact, in and outside the box
    assert weight[16:80, 24:104].min() == 1.0 and weight.sum() == 64 * 80
    # a real crop (rescaled, blurred): the frame comes back but for the resampling blur
    astro = skdata.astronaut()
    real = faces.official_crop(astro, faces.detect_faces(astro)[0].landmarks, (PAD,) * 4)[1]
    sty = cv2.resize(apply_crop(astro, real), None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    out, weight = composite_face(astro, sty, real, feather=0.0)
    diff = np.abs(out * 255.0 - astro)[weight == 1.0]
    assert diff.size and diff.mean() < 5.0  # (4.3: bilinear up, cubic back on the detailed face)
    np.testing.assert_array_equal(out[weight == 0] * 255.0, astro[weight == 0].astype(np.float32))


def test_feather_is_continuous_and_mask_is_softened():
    img = np.zeros((100, 128, 3), np.uint8)
    white = np.full((256, 320, 3), 255, np.uint8)
    for feather in (4.0, 10.0):
        _, w = composite_face(img, white, GEO, feather=feather)
        steps = max(np.abs(np.diff(w, axis=0)).max(), np.abs(np.diff(w, axis=1)).max())
        assert steps <= 1.0 / feather + 1e-6, (feather, steps)
        assert w[48, 64] == 1.0 and w[0, 0] == 0.0
    hard = np.zeros((100, 128), np.float32)
    hard[30:70, 40:90] = 1.0
    _, w = composite_face(img, white, GEO, feather=0.0, mask=hard)
    assert np.abs(np.diff(w, axis=1)).max() == 1.0  # no feather: a hard edge
    _, w = composite_face(img, white, GEO, feather=8.0, mask=hard)
    assert np.abs(np.diff(w, axis=1)).max() < 0.25 and w[50, 65] > 0.95 and w[50, 30] < 0.05


def test_color_match_moves_the_seam_colours():
    img = np.full((100, 128, 3), 90, np.uint8)
    img[..., 2] = 160
    sty = up4(np.clip(apply_crop(img, GEO).astype(int) + [60, -40, 30], 0, 255).astype(np.uint8))
    mask = np.zeros((100, 128), np.float32)
    mask[28:70, 36:92] = 1.0

    def seam_error(match: float) -> float:
        out, w = composite_face(img, sty, GEO, feather=6.0, mask=mask, color_match=match)
        band = seam_band(w, 3.0) & (w > 0.05)
        return float(np.abs(out[band] * 255.0 - img[band]).mean())

    before, half, after = seam_error(0.0), seam_error(0.5), seam_error(1.0)
    assert after < 1.0 < half < before, (before, half, after)


def test_paste_tracks_per_frame_and_face_and_errors():
    img = np.stack([frame(1), frame(2)])
    other = CropGeometry(1.0, 100, 128, 8, 72, 40, 120, 100, 128, 0)  # the same crop size elsewhere
    tracks = FaceTracks.fixed(GEO, 2)
    tracks = FaceTracks(FaceOptions(every_face=True), (100, 128), (tracks.clips[0], FaceTracks.fixed(other, 2).clips[0]))
    sty = np.stack([up4(apply_crop(img[i % 2], tracks.geometry(i))) // 2 for i in range(4)])  # darker crops
    out, weights = paste_tracks(img, sty, tracks, feather=0.0)
    for i in range(2):  # frame i: face 0 then face 1 pasted (face 1 on top where they overlap)
        np.testing.assert_allclose(out[i, 8:72, 40:120] * 255, img[i, 8:72, 40:120] // 2, atol=1e-3)
        np.testing.assert_allclose(out[i, 72:80, 24:104] * 255, img[i, 72:80, 24:104] // 2, atol=1e-3)
        np.testing.assert_allclose(out[i, 90:] * 255, img[i, 90:], atol=1e-3)
    assert weights.shape == (2, 100, 128) and weights[:, 16:80, 24:104].min() == 1.0

    with pytest.raises(InputError, match=r"^stylized: holds 3 image\(s\) but the faces give 4 crop\(s\)"):
        paste_tracks(img, sty[:3], tracks)
    with pytest.raises(InputError, match=r"^images: the faces were found in 2 frame\(s\) but there are 1"):
        paste_tracks(img[:1], sty, tracks)
    with pytest.raises(InputError, match=r"^images: the faces were found in 128x100 frames but these are 64x100"):
        paste_tracks(img[:, :, :64], sty, tracks)
    with pytest.raises(InputError, match=r"^mask: is 128x50 but the frames are 128x100"):
        paste_tracks(img, sty, tracks, masks=np.ones((1, 50, 128), np.float32))
    with pytest.raises(InputError, match=r"^stylized: .*aspect"):
        paste_tracks(img, sty[:, :, :100], tracks)
    with pytest.raises(InputError, match=r"^color_match: must be in \[0, 1\]"):
        paste_tracks(img, sty, tracks, color_match=2.0)


def test_whole_frames_paste_back_onto_the_frame():
    img = frame(3, 40, 56)
    tracks = FaceTracks.whole_frames(40, 56, 1)
    assert tracks.geometry(0) == whole_frame_geometry(40, 56) and tracks.box(0) == (0, 0, 56, 40)
    out, w = paste_tracks(img[None], up4(img)[None], tracks, feather=8.0)
    np.testing.assert_allclose(out[0] * 255, img, atol=1e-3)
    assert w.min() == 1.0  # a whole frame touches every border: never faded


def test_frame_parsing_is_cropped_like_each_face():
    """Parsing maps of the frames (e.g. smoothed over time) follow each face's crop: at scale 1 the exact
    window, replicated past the frame's border."""
    import torch

    from vtoonify_core.pipeline.tracks import parsing_crops

    logits = torch.randn(2, 19, 100, 128, generator=torch.Generator().manual_seed(0))
    outside = CropGeometry(1.0, 100, 128, -8, 56, 72, 152, 100, 128, 0)  # 8 px above, 24 px right of the frame
    tracks = FaceTracks(FaceOptions(), (100, 128), (FaceTracks.fixed(GEO, 2).clips[0],))
    torch.testing.assert_close(parsing_crops(logits, tracks, 0), logits[:, :, 16:80, 24:104])
    tracks = FaceTracks(FaceOptions(), (100, 128), (FaceTracks.fixed(outside, 2).clips[0],))
    crop = parsing_crops(logits, tracks, 0)
    assert crop.shape == (2, 19, 64, 80)
    torch.testing.assert_close(crop[:, :, 8:, :56], logits[:, :, :56, 72:])
    torch.testing.assert_close(crop[:, :, :8, :56], logits[:, :, :1, 72:].expand(-1, -1, 8, -1))
    torch.testing.assert_close(crop[:, :, 8:, 56:], logits[:, :, :56, -1:].expand(-1, -1, -1, 24))
