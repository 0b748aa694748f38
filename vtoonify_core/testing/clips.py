"""Synthetic clips for tests and benchmarks: a still image seen through a moving window, so a face
moves smoothly from frame to frame (uint8 RGB frames; write them with ``video.write_video``)."""
from __future__ import annotations

import math

import cv2
import numpy as np


def _window(image: np.ndarray, x0: int, y0: int, window: int, size: int) -> np.ndarray:
    """The window (cut at the image border where it reaches past it), resized to ``size`` x ``size``."""
    crop = image[y0:y0 + window, x0:x0 + window]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def moving_window_frame(image: np.ndarray, i: int, n: int, size: int, *, window: int = 400,
                        origin: tuple[int, int] = (30, 20), travel: tuple[int, int] = (60, 30)) -> np.ndarray:
    """Frame ``i`` of :func:`moving_window` alone (for clips too long to hold)."""
    t = i / max(1, n - 1)
    x0 = int(origin[0] + travel[0] * t)
    y0 = int(origin[1] + travel[1] * math.sin(math.pi * t))
    return _window(image, x0, y0, window, size)


def moving_window(image: np.ndarray, n: int, size: int, *, window: int = 400, origin: tuple[int, int] = (30, 20),
                  travel: tuple[int, int] = (60, 30), blank_first: int = 0) -> list[np.ndarray]:
    """``n`` frames of ``size`` x ``size``: a ``window`` px square of ``image`` that moves ``travel[0]`` px
    right (evenly) and ``travel[1]`` px down and back (half a sine) over the clip; the first
    ``blank_first`` frames are black (a clip whose face appears late)."""
    out = []
    for i in range(n):
        frame = moving_window_frame(image, i, n, size, window=window, origin=origin, travel=travel)
        out.append(np.zeros_like(frame) if i < blank_first else frame)
    return out


def linear_pan(image: np.ndarray, n: int, size: int, *, window: int = 400, origin: tuple[int, int] = (40, 20),
               step: tuple[int, int] = (8, 5)) -> list[np.ndarray]:
    """``n`` frames of ``size`` x ``size``: a ``window`` px square of ``image`` moved by ``step`` px a frame."""
    return [_window(image, origin[0] + step[0] * i, origin[1] + step[1] * i, window, size) for i in range(n)]
