"""Faces and face backends: the :class:`Face` record (68 iBUG landmarks), the
:class:`FaceBackend` interface, and how faces are ordered and picked.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ..errors import NoFaceError

logger = logging.getLogger("vtoonify")

#: Ways to order (and pick from) several faces:
#:
#: * ``'score'``: detector confidence, best first (default);
#: * ``'official'``: the face the official VToonify code uses first (the *last* one the detector
#:   returned), then the others in reverse detector order;
#: * ``'largest'``: bounding-box area, largest first;
#: * ``'left_to_right'``: by the horizontal centre of the box, leftmost first.
FACE_ORDERS = ("score", "official", "largest", "left_to_right")

NUM_LANDMARKS = 68


#: What to do without a face when it was needed for the face crop.
CROP_ADVICE = "or switch the crop mode to 'whole frame' (no face crop) to stylize the frames as they are"
#: What to do without a face when it was needed for a style code (any crop mode).
STYLE_ADVICE = ("or give the style another way: a style code extracted from another image, or for VToonify-D "
                "colour transfer on (the exemplar's code alone needs no face)")


def no_face_message(where: str = "the image", upsample: Optional[int] = None, advice: str = CROP_ADVICE) -> str:
    """The message of :class:`NoFaceError`, saying what to do about it (``advice``: the way out that
    fits what the face was needed for, :data:`CROP_ADVICE` or :data:`STYLE_ADVICE`)."""
    hint_up = ""
    if upsample is not None:
        hint_up = (
            f" Small faces (eyes closer than about 20 px) need more up-sampling than "
            f"upsample={upsample}."
        )
    return (
        f"No face was detected in {where}. Use a frame where the face is clearly visible, "
        f"roughly frontal and not too small, {advice}." + hint_up
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
