"""Input rules, each checked in one place: the pipeline, video jobs, temporal smoothing, the nodes
and the command line all call these. Every failure is an :class:`~vtoonify_core.errors.InputError`
naming the input (as the nodes call it) and saying what to do.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from .errors import InputError
from .types import CROP_MODES, MULTIPLE, N_LAYERS, StyleCode


def few(idx: Sequence[int], n: int = 5) -> str:
    """``'1, 2, 3, 4, 5 and 7 more'``: the first ``n`` of a list of indices."""
    s = ", ".join(str(i) for i in idx[:n])
    return s + (f" and {len(idx) - n} more" if len(idx) > n else "")


def validate_frames(frames: Tensor, input_name: str = "images") -> None:
    """Check a ``[B, 3, H, W]`` frame batch: not empty, three channels, finite values."""
    if not isinstance(frames, Tensor):
        raise InputError(input_name, f"expected a tensor of frames, got {type(frames).__name__}.")
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise InputError(input_name, f"expected frames [B, 3, H, W], got shape {tuple(frames.shape)}.")
    if frames.shape[0] == 0:
        raise InputError(input_name, "the batch is empty (0 frames): connect a node that outputs at least one image.")
    if frames.shape[2] == 0 or frames.shape[3] == 0:
        raise InputError(input_name, f"the frames are empty ({frames.shape[3]}x{frames.shape[2]} px): connect a node that "
                                     f"outputs images of at least 8x8 px.")
    if frames.is_floating_point():
        bad = ~torch.isfinite(frames).flatten(1).all(dim=1)
        if bool(bad.any()):
            idx = torch.nonzero(bad).flatten().tolist()
            raise InputError(input_name, f"frame(s) {few(idx)} contain NaN or infinite values; fix or drop those "
                                         f"frames upstream (e.g. a failed decode or a division by zero).")


def check_clip(x: Tensor, name: str, channels: Optional[int] = None) -> None:
    """A non-empty, finite, floating-point ``(T, C, H, W)`` clip (``C == channels`` when given)."""
    if not isinstance(x, Tensor):
        raise InputError(name, f"expected a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 4:
        raise InputError(name, f"expected a (T, C, H, W) tensor, got shape {tuple(x.shape)}.")
    if channels is not None and x.shape[1] != channels:
        raise InputError(name, f"expected {channels} channels, got shape {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise InputError(name, "the clip is empty (0 frames).")
    if not x.is_floating_point():
        raise InputError(name, f"expected a floating-point tensor, got {x.dtype}.")
    if not bool(torch.isfinite(x).all()):
        raise InputError(name, "holds NaN or infinite values.")


def check_fraction(value: float, input_name: str) -> float:
    """``value`` as a finite float in [0, 1] (a blend, a style degree)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(input_name, f"must be a number between 0 and 1, got {value!r}.") from None
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise InputError(input_name, f"must be between 0 and 1, got {value}.")
    return v


def check_style_degree(d_s: float, input_name: str = "style_degree") -> float:
    """The style degree ``d_s`` of VToonify-D as a float in [0, 1]."""
    return check_fraction(d_s, input_name)


def check_code(style: StyleCode, input_name: str) -> StyleCode:
    """A single finite ``[1, 18, 512]`` :class:`~vtoonify_core.types.StyleCode` (not a keyframe schedule)."""
    if not isinstance(style, StyleCode):
        if getattr(style, "keyframes", None) is not None:
            raise InputError(input_name, "this is a keyframed style (Style Keyframes); connect a single style code.")
        raise InputError(input_name, f"expected a VToonify style code, got {type(style).__name__}.")
    w = style.wplus
    if w.ndim != 3 or tuple(w.shape) != (1, N_LAYERS, 512):
        raise InputError(input_name, f"the W+ code must be [1, {N_LAYERS}, 512], got {tuple(w.shape)}.")
    if not bool(torch.isfinite(w).all()):
        raise InputError(input_name, "the W+ code contains NaN or infinite values.")
    return style


def check_batch_size(batch_size: int, input_name: str = "batch_size", allow_auto: bool = True) -> int:
    """Frames per chunk: a whole number >= 1, or 0 for the automatic size when ``allow_auto``."""
    low = 0 if allow_auto else 1
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, float)) or int(batch_size) != batch_size \
            or batch_size < low:
        what = "0 (automatic, from the free memory) or at least 1" if allow_auto else "at least 1"
        raise InputError(input_name, f"must be {what}, got {batch_size}.")
    return int(batch_size)


def check_face_padding(face_padding: int, input_name: str = "face_padding") -> int:
    """Padding of the official face crop around the eye centre: a whole number of at least 8 px."""
    if isinstance(face_padding, bool) or int(face_padding) != face_padding or face_padding < MULTIPLE:
        raise InputError(input_name, f"must be at least {MULTIPLE} px, got {face_padding}.")
    return int(face_padding)


def check_crop_mode(mode: str, input_name: str = "crop_mode") -> str:
    """``'face'`` (the official crop) or ``'whole'`` (the whole frame, padded to multiples of 8)."""
    if mode not in CROP_MODES:
        raise InputError(input_name, f"unknown crop mode {mode!r}; use one of {', '.join(CROP_MODES)}.")
    return mode


def check_window_k(k: int, input_name: str = "k") -> int:
    """The temporal half-window ``k`` of parsing smoothing: a whole number >= 0 (bools refused)."""
    if isinstance(k, bool) or not isinstance(k, int) and not (isinstance(k, float) and float(k).is_integer()):
        raise InputError(input_name, f"must be a whole number (the temporal half-window, e.g. 5), got {k!r}.")
    k = int(k)
    if k < 0:
        raise InputError(input_name, f"(the temporal half-window) must be >= 0, got {k}: use 0 for no smoothing.")
    return k


def check_positive(value: float, input_name: str) -> float:
    """``value`` as a finite float > 0 (NaN refused)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(input_name, f"must be a number > 0, got {value!r}.") from None
    if not v > 0 or not math.isfinite(v):
        raise InputError(input_name, f"must be > 0, got {v}.")
    return v


def check_chunk_size(chunk_size: Optional[int], input_name: str = "chunk_size", allow_none: bool = True) -> None:
    """A whole number of frames >= 1 (``None``, one chunk, where ``allow_none``)."""
    if chunk_size is None and allow_none:
        return
    if chunk_size is None or isinstance(chunk_size, bool) or int(chunk_size) < 1:
        raise InputError(input_name, f"must be at least 1{' (or None for one chunk)' if allow_none else ''}, "
                                     f"got {chunk_size}.")

