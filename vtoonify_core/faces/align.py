"""FFHQ alignment of a face, as the input of VToonify's pSp style encoder.

Details: docs/design.md, ``vtoonify_core/faces/align.py``.
"""
from __future__ import annotations

import importlib
from typing import Any

import cv2
import numpy as np

from .base import NUM_LANDMARKS, as_rgb_uint8

#: Output side of the official alignment (pSp input).
ALIGN_SIZE = 256


def _check_landmarks(landmarks: Any) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (68, 2), got {lm.shape}")
    if not np.all(np.isfinite(lm)):
        raise ValueError("landmarks contain NaN or infinite values")
    return lm


def ffhq_quad(landmarks: Any) -> tuple[np.ndarray, float]:
    """The FFHQ crop square of a face.

    Args:
        landmarks: ``(68, 2)`` ``(x, y)`` points (iBUG/dlib order), in pixels.

    Returns:
        ``(quad, qsize)``: ``quad`` is ``(4, 2)`` float64, the corners in the order
        top-left, bottom-left, bottom-right, top-right of the aligned output; ``qsize`` is the
        side length in pixels.

    Raises:
        ValueError: landmarks of the wrong shape, or degenerate (all eyes and mouth at a point).
    """
    lm = _check_landmarks(landmarks)
    eye_l = lm[36:42].mean(axis=0)
    eye_r = lm[42:48].mean(axis=0)
    eye_mid = (eye_l + eye_r) / 2.0
    eye_vec = eye_r - eye_l
    mouth_mid = (lm[48] + lm[54]) / 2.0
    mouth_vec = mouth_mid - eye_mid
    # Horizontal axis: the eye direction plus the eye-to-mouth direction turned by -90 degrees.
    axis_x = eye_vec + np.array([mouth_vec[1], -mouth_vec[0]])
    norm = float(np.hypot(axis_x[0], axis_x[1]))
    if not norm > 0:
        raise ValueError("degenerate landmarks: eyes and mouth give no face orientation")
    half = max(float(np.hypot(*eye_vec)) * 2.0, float(np.hypot(*mouth_vec)) * 1.8)
    axis_x = axis_x / norm * half
    axis_y = np.array([-axis_x[1], axis_x[0]])
    centre = eye_mid + mouth_vec * 0.1
    quad = np.stack(
        [centre - axis_x - axis_y, centre - axis_x + axis_y, centre + axis_x + axis_y,
         centre + axis_x - axis_y]
    )
    return quad, float(np.hypot(axis_x[0], axis_x[1]) * 2.0)


def _pil():
    try:
        return importlib.import_module("PIL.Image")
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"align_face needs Pillow, which is not installed ({exc}); install it with: "
            f"pip install pillow"
        ) from exc


def _gaussian_blur_reflect(img: np.ndarray, sigma: float) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(img, [sigma, sigma, 0])`` (truncate 4, mode 'reflect')."""
    radius = int(4.0 * sigma + 0.5)
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * taps * taps / (sigma * sigma))
    kernel /= kernel.sum()
    return cv2.sepFilter2D(img, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REFLECT)


def align_face(image: np.ndarray, landmarks: Any, size: int = ALIGN_SIZE) -> np.ndarray:
    """FFHQ-aligned face crop, the official pSp input.

    Args:
        image: ``(H, W, 3)`` uint8 RGB frame.
        landmarks: ``(68, 2)`` points of the face in pixels of ``image`` (e.g.
            :attr:`vtoonify_core.faces.Face.landmarks`). The official pipeline aligns the
            *rescaled crop* (:func:`vtoonify_core.faces.crop.official_crop`) with landmarks found
            there; map landmarks into the crop with
            :meth:`vtoonify_core.faces.crop.CropGeometry.to_crop`.
        size: output side; 256 as in the official code (transform size = output size).

    Returns:
        ``(size, size, 3)`` uint8 RGB.

    Raises:
        ValueError, TypeError: bad image, landmarks or size.
    """
    if int(size) != size or size < 8:
        raise ValueError(f"size must be an integer >= 8, got {size!r}")
    size = int(size)
    Image = _pil()
    frame = as_rgb_uint8(image)
    quad, qsize = ffhq_quad(landmarks)
    img = Image.fromarray(frame)

    # 1. Shrink by an integer factor when the square is far larger than the output.
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        new_size = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(new_size, Image.Resampling.LANCZOS)
        quad = quad / shrink
        qsize = qsize / shrink

    # 2. Crop to the square's bounding box plus a border.
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    box = (
        max(int(lo[0]) - border, 0),
        max(int(lo[1]) - border, 0),
        min(int(hi[0]) + border, img.size[0]),
        min(int(hi[1]) + border, img.size[1]),
    )
    if box[2] - box[0] < img.size[0] or box[3] - box[1] < img.size[1]:
        img = img.crop(box)
        quad = quad - np.array(box[:2], dtype=np.float64)

    # 3. Mirror-pad, blur and fade the padding when the square leaves the image.
    lo = np.floor(quad.min(axis=0)).astype(int)
    hi = np.ceil(quad.max(axis=0)).astype(int)
    pad = np.array(
        [
            max(-int(lo[0]) + border, 0),
            max(-int(lo[1]) + border, 0),
            max(int(hi[0]) - img.size[0] + border, 0),
            max(int(hi[1]) - img.size[1] + border, 0),
        ]
    )
    if pad.max() > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        px0, py0, px1, py1 = (int(v) for v in pad)
        arr = np.pad(np.asarray(img, dtype=np.float32), ((py0, py1), (px0, px1), (0, 0)), "reflect")
        h, w = arr.shape[:2]
        xs = np.arange(w, dtype=np.float32)[None, :, None]
        ys = np.arange(h, dtype=np.float32)[:, None, None]
        fade_x = 1.0 - np.minimum(xs / np.float32(px0), np.float32(w - 1 - xs) / np.float32(px1))
        fade_y = 1.0 - np.minimum(ys / np.float32(py0), np.float32(h - 1 - ys) / np.float32(py1))
        fade = np.maximum(fade_x, fade_y)
        sigma = qsize * 0.02
        arr = arr + (_gaussian_blur_reflect(arr, sigma) - arr) * np.clip(fade * 3.0 + 1.0, 0.0, 1.0)
        arr = arr + (np.median(arr, axis=(0, 1)) - arr) * np.clip(fade, 0.0, 1.0)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
        quad = quad + np.array([px0, py0], dtype=np.float64)

    # 4. Resample the square (corners at pixel centres, hence +0.5 in Pillow's coordinates).
    img = img.transform(
        (size, size), Image.Transform.QUAD, tuple((quad + 0.5).flatten()), Image.Resampling.BILINEAR
    )
    return np.asarray(img, dtype=np.uint8).copy()
