"""A deterministic cartoon-like teacher for the student's tests and bench: smoothed, softly
quantised and saturated colours with dark edges, up-sampled x4 (``[B,3,H,W] -> [B,3,4H,4W]`` in
[-1, 1]); and a small clip of a real face moving smoothly."""
from __future__ import annotations

import math

import numpy as np

import torch
import torch.nn.functional as F
from torch import Tensor

from .clips import moving_window


def _blur(x: Tensor) -> Tensor:
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device)
    k = (k[:, None] * k[None, :]) / 256.0
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k.expand(x.shape[1], 1, 5, 5), groups=x.shape[1])


def cartoon_teacher(frames: Tensor, levels: int = 6) -> Tensor:
    """The cartoon filter: blur, a smooth staircase on ``levels`` colour levels, +30 % saturation,
    strong edges (Sobel on the blurred luma) darkened, then bicubic x4; output clamped to [-1, 1]."""
    x = _blur(frames.float())
    u = (x + 1.0) * 0.5 * levels
    u = u - torch.sin(2.0 * math.pi * u) / (2.0 * math.pi) * 0.8  # flat plateaus, smooth steps
    x = u / levels * 2.0 - 1.0
    gray = x.mean(1, keepdim=True)
    x = gray + (x - gray) * 1.3
    luma = _blur(frames.float()).mean(1, keepdim=True)
    sx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    gx = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), sx.view(1, 1, 3, 3))
    gy = F.conv2d(F.pad(luma, (1, 1, 1, 1), mode="replicate"), sx.t().reshape(1, 1, 3, 3))
    edge = ((torch.sqrt(gx * gx + gy * gy + 1e-6) - 0.5) / 1.0).clamp(0.0, 1.0)
    x = x - 0.7 * edge * (x + 1.0)
    y = F.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    return y.clamp(-1.0, 1.0).to(frames.dtype)


def face_clip(n: int = 24, size: int = 64, travel: tuple[int, int] = (60, 30)) -> Tensor:
    """``[n, 3, size, size]`` in [-1, 1]: the astronaut of scikit-image seen through a moving window."""
    from skimage import data

    frames = moving_window(data.astronaut(), n, size, window=300, origin=(80, 20), travel=travel)
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0
