"""Pasting stylized crops back into their frames: each crop resampled onto its box (the exact inverse
of the crop), blended through a feathered mask (the crop region, optionally times a face mask), with
an optional colour match at the seam; :func:`paste_tracks` does every frame and face of a clip.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from ..errors import InputError
from .crop import CropGeometry, warp_to_frame
from .tracks import FaceTracks


def _float_image(x: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[2] != 3:
        shape = getattr(x, "shape", type(x).__name__)
        raise InputError(what, f"expected an (H, W, 3) image, got {shape}.")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return np.ascontiguousarray(x, dtype=np.float32)


def soften_mask(mask: np.ndarray, feather: float) -> np.ndarray:
    """A face mask with its edge softened over about ``feather`` pixels (Gaussian, sigma ``feather / 2``)."""
    m = np.clip(np.asarray(mask, dtype=np.float32), 0.0, 1.0)
    if feather <= 0:
        return m
    return np.clip(cv2.GaussianBlur(m, (0, 0), sigmaX=feather / 2.0, borderType=cv2.BORDER_REPLICATE), 0.0, 1.0)


def seam_band(weight: np.ndarray, width: float) -> np.ndarray:
    """Boolean ``(h, w)``: the pixels near the edge of the pasted region (``weight`` around 0.5), a band
    about ``width`` pixels wide on both sides of it."""
    inside = (weight >= 0.5).astype(np.uint8)
    r = max(1, int(round(width)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    grown = cv2.dilate(inside, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    shrunk = cv2.erode(inside, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return (grown > 0) & ~(shrunk > 0)


def composite_face(frame: np.ndarray, stylized: np.ndarray, geometry: CropGeometry, *, feather: float = 8.0,
                   mask: Optional[np.ndarray] = None, color_match: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Paste one stylized crop into its frame.

    Args:
        frame: ``(H, W, 3)`` frame, uint8 or float in [0, 1].
        stylized: the stylized crop (any size with the crop's aspect, usually 4x), uint8 or float.
        geometry: the crop geometry of ``stylized`` in ``frame``.
        feather: width in frame pixels of the fade at the crop window's edges inside the frame, and of
            the softening of ``mask`` (0: hard edges).
        mask: ``(H, W)`` face mask in [0, 1] (e.g. Face Parse classes) multiplied into the region;
            ``None``: the whole crop region.
        color_match: 0..1: how far the stylized image's mean colour along the seam is moved to the frame's.

    Returns:
        ``(composite, weight)``: the float32 ``(H, W, 3)`` frame in [0, 1] and the ``(H, W)`` float32
        weight of the stylized image in it. Outside the region the frame is returned unchanged.
    """
    base = _float_image(frame, "images")
    sty = _float_image(stylized, "stylized")
    H, W = base.shape[:2]
    if not 0.0 <= color_match <= 1.0:
        raise InputError("color_match", f"must be in [0, 1], got {color_match!r}.")
    if feather < 0:
        raise InputError("feather", f"must be >= 0 pixels, got {feather!r}.")
    if mask is not None and tuple(mask.shape) != (H, W):
        raise InputError("mask", f"is {mask.shape[1]}x{mask.shape[0]} but the frames are {W}x{H}: make the mask "
                                 f"from the same frames (e.g. Face Parse on them).")
    try:
        warped, weight, (y0, y1, x0, x1) = warp_to_frame(sty, geometry, (H, W), feather)
    except ValueError as exc:
        raise InputError("stylized", f"{exc}: connect the images output of the Stylize Frames that made the "
                                     f"faces.") from None
    out = base.copy()
    full = np.zeros((H, W), np.float32)
    if warped is None:
        return out, full
    if mask is not None:
        weight = weight * soften_mask(mask, feather)[y0:y1, x0:x1]
    region = base[y0:y1, x0:x1]
    if color_match > 0:
        band = seam_band(weight, max(feather, 3.0))
        if band.any():
            shift = region[band].mean(axis=0) - warped[band].mean(axis=0)
            warped = np.clip(warped + color_match * shift, 0.0, 1.0)
    out[y0:y1, x0:x1] = region + (warped - region) * weight[:, :, None]
    full[y0:y1, x0:x1] = weight
    return out, full


def paste_tracks(frames: np.ndarray, stylized: np.ndarray, tracks: FaceTracks, *, feather: float = 8.0,
                 masks: Optional[np.ndarray] = None, color_match: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Paste every stylized crop of a clip back into its frame (every face, each frame's own crop).

    Args:
        frames: ``(B, H, W, 3)`` the frames the tracks were made for (uint8 or float in [0, 1]).
        stylized: ``(F * B, h, w, 3)`` the stylized crops in face-major order (:class:`FaceTracks`); with
            one face, ``B`` crops (or 1, used for every frame).
        tracks: where each crop lies.
        feather, color_match: as :func:`composite_face`.
        masks: ``(B, H, W)`` or ``(1, H, W)`` face masks in [0, 1], or ``None``.

    Returns:
        ``(composites (B, H, W, 3) float32, weights (B, H, W) float32)`` (weights: the largest over the faces).

    Raises:
        InputError: frame count or size, crop count or mask size not matching the tracks.
    """
    if not isinstance(frames, np.ndarray) or frames.ndim != 4:
        raise InputError("images", f"expected a batch of frames (B, H, W, 3), got {getattr(frames, 'shape', None)}.")
    b = frames.shape[0]
    tracks.check_frames(b, frames.shape[1:3], "images")
    n = tracks.num_items
    if stylized.ndim != 4 or stylized.shape[0] not in (n, 1):
        raise InputError("stylized", f"holds {stylized.shape[0]} image(s) but the faces give {n} crop(s) "
                                     f"({tracks.num_faces} face(s) x {b} frame(s)): connect the images of the "
                                     f"Stylize Frames that ran on these faces.")
    if masks is not None and (masks.ndim != 3 or masks.shape[0] not in (b, 1)):
        raise InputError("mask", f"holds {masks.shape[0]} mask(s) for {b} frame(s): give one per frame or one.")
    out = np.empty(frames.shape, np.float32)
    weights = np.zeros(frames.shape[:3], np.float32)
    for i in range(b):
        frame = frames[i]
        mask = None if masks is None else masks[min(i, masks.shape[0] - 1)]
        for k in range(tracks.num_faces):
            item = k * b + i
            crop = stylized[min(item, stylized.shape[0] - 1)]
            frame, w = composite_face(frame, crop, tracks.geometry(item), feather=feather, mask=mask,
                                      color_match=color_match)
            weights[i] = np.maximum(weights[i], w)
        out[i] = _float_image(frame, "images")
    return out, weights
