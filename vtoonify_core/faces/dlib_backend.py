"""The default face backend: dlib's HOG detector and 68-point shape predictor, as the official
code uses them (prebuilt ``dlib-bin``; the landmark model from ``face_recognition_models``).
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ..errors import FaceBackendUnavailableError
from .base import Face, FaceBackend

logger = logging.getLogger("vtoonify")

#: The pip line that installs the default (dlib) backend and its landmark model.
DLIB_INSTALL_HINT = "pip install dlib-bin face_recognition_models"

#: File name of dlib's 68-point landmark model (as shipped by ``face_recognition_models``).
DLIB_LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"


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
