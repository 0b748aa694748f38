"""The backend registry and face detection: :func:`detect_faces` with any registered backend
(``'dlib'`` by default, ``'mediapipe'`` when installed).
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Union

import numpy as np

from ..errors import NoFaceError
from .base import FACE_ORDERS, Face, FaceBackend, as_rgb_uint8, no_face_message, order_faces, pick_face
from .dlib_backend import DlibBackend
from .mediapipe_backend import MediaPipeBackend

logger = logging.getLogger("vtoonify")


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
