"""Frame tensors as VToonify takes them: value range, padding to multiples of 8, the 22-channel input.

Frames are ``[B, 3, H, W]``; float frames are in an ``input_range`` (the official ``(-1, 1)``,
ComfyUI's ``(0, 1)``), ``uint8`` frames 0..255.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .types import MULTIPLE, PARSING_WEIGHT, SCALE


def to_model_range(frames: Tensor, input_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Frames (float in ``input_range``, or uint8 0..255) as float32 in [-1, 1].

    The result may share memory with ``frames`` (float32 frames already in [-1, 1]).
    """
    if frames.dtype == torch.uint8:
        return frames.float() / 127.5 - 1.0
    lo, hi = float(input_range[0]), float(input_range[1])
    if not hi > lo:
        raise ValueError(f"input_range must be (low, high) with high > low, got {input_range}")
    x = frames.float()
    if (lo, hi) == (-1.0, 1.0):
        return x
    return (x - lo) * (2.0 / (hi - lo)) - 1.0


class FramePadding(NamedTuple):
    """Pixels added on each side by :func:`pad_to_multiple`."""

    top: int
    bottom: int
    left: int
    right: int


def padding_for(height: int, width: int, multiple: int = MULTIPLE, mode: str = "reflect") -> FramePadding:
    """The centred padding that brings ``height`` x ``width`` to multiples of ``multiple``.

    Raises:
        ValueError: ``mode='reflect'`` and a pad is not smaller than the side it mirrors, or
            ``multiple`` < 1.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    ph, pw = (-height) % multiple, (-width) % multiple
    pad = FramePadding(ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
    if mode == "reflect" and (max(pad.top, pad.bottom) >= height or max(pad.left, pad.right) >= width):
        raise ValueError(
            f"a {width}x{height} frame cannot be padded to a multiple of {multiple} by reflection (it needs "
            f"{pw} px across and {ph} px down, more than the frame can mirror); use frames of at least "
            f"{multiple}x{multiple} px")
    return pad


def padded_size(height: int, width: int, multiple: int = MULTIPLE) -> tuple[int, int]:
    """``(height, width)`` rounded up to multiples of ``multiple`` (what :func:`pad_to_multiple` gives)."""
    return -(-int(height) // multiple) * multiple, -(-int(width) // multiple) * multiple


def apply_padding(x: Tensor, pad: FramePadding, mode: str = "reflect") -> Tensor:
    """Pad ``[..., H, W]`` by ``pad`` (any leading dimensions; integer tensors go through float)."""
    if not any(pad):
        return x
    h, w = int(x.shape[-2]), int(x.shape[-1])
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, h, w)
    out = F.pad(flat if flat.is_floating_point() else flat.float(), (pad.left, pad.right, pad.top, pad.bottom),
                mode=mode)
    return out.to(x.dtype).reshape(*lead, h + pad.top + pad.bottom, w + pad.left + pad.right)


def pad_to_multiple(x: Tensor, multiple: int = MULTIPLE, mode: str = "reflect") -> tuple[Tensor, FramePadding]:
    """Pad ``[..., H, W]`` so both sides are multiples of ``multiple``, centred (odd pixel at the end).

    ``mode`` is a :func:`torch.nn.functional.pad` mode (``'reflect'`` by default, which needs each
    pad smaller than the side it mirrors; ``'replicate'`` and ``'constant'`` always work).

    Returns:
        ``(padded, padding)``; undo with :func:`crop_padding` (``scale=4`` for VToonify's output).

    Raises:
        ValueError: the frame is too small to pad by reflection, or ``multiple`` < 1.
    """
    pad = padding_for(int(x.shape[-2]), int(x.shape[-1]), multiple, mode)
    return apply_padding(x, pad, mode), pad


def crop_padding(y: Tensor, padding: FramePadding, scale: int = SCALE) -> Tensor:
    """Undo :func:`pad_to_multiple` on an output ``scale`` times the padded input."""
    t, b, l, r = (scale * v for v in padding)
    h, w = y.shape[-2], y.shape[-1]
    return y[..., t:h - b, l:w - r]


def make_inputs(frames: Tensor, parsing: Tensor) -> Tensor:
    """VToonify's input: ``cat(frames in [-1, 1], parsing logits / 16)`` -> ``[B, 22, H, W]``."""
    return torch.cat([frames, parsing.to(frames.dtype) / PARSING_WEIGHT], dim=1)


def frame_uint8(frames: Tensor, i: int, input_range: tuple[float, float]) -> np.ndarray:
    f = frames[i]
    if f.dtype != torch.uint8:
        f = ((to_model_range(f, input_range) + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return np.ascontiguousarray(f.permute(1, 2, 0).cpu().numpy())
