"""StyleGAN2's two custom ops in plain PyTorch: FIR up/down-sampling and fused bias + leaky ReLU.

No CUDA extension is compiled: both ops are expressed with ``conv2d`` so they run unchanged on
CPU, CUDA and MPS, in fp32, fp16 and bf16, and are differentiable.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)


def make_kernel(k: Sequence[float]) -> torch.Tensor:
    """The normalised 2-D FIR kernel of a 1-D tap list (outer product), summing to 1."""
    t = torch.tensor(k, dtype=torch.float32)
    if t.ndim == 1:
        t = t[None, :] * t[:, None]
    return t / t.sum()


def upfirdn2d(
    x: torch.Tensor,
    kernel: torch.Tensor,
    up: int = 1,
    down: int = 1,
    pad: Union[tuple[int, int], tuple[int, int, int, int]] = (0, 0),
) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter with a FIR kernel, downsample by striding.

    Same semantics as StyleGAN2's ``upfirdn2d`` (the kernel is flipped, i.e. a true
    convolution; negative padding crops).

    Args:
        x: ``[N, C, H, W]``.
        kernel: ``[kh, kw]`` FIR kernel.
        up, down: integer factors, the same along both axes.
        pad: ``(p0, p1)`` for both axes or ``(px0, px1, py0, py1)``.

    Returns:
        ``[N, C, (H*up + py0 + py1 - kh) // down + 1, (W*up + px0 + px1 - kw) // down + 1]``.
    """
    if len(pad) == 2:
        px0, px1, py0, py1 = pad[0], pad[1], pad[0], pad[1]
    else:
        px0, px1, py0, py1 = pad
    n, c, h, w = x.shape
    # channels-last stays channels-last: oneDNN's depthwise convolution is several times faster there
    fmt = torch.channels_last if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and c > 1 \
        else torch.contiguous_format
    if up > 1:
        y = torch.empty((n, c, h * up, w * up), dtype=x.dtype, device=x.device, memory_format=fmt).zero_()
        y[:, :, ::up, ::up] = x
        x = y
    kh, kw = kernel.shape
    # a real (not expanded) weight: an expanded one sends the convolution down a slow generic path
    weight = torch.flip(kernel, [0, 1]).to(dtype=x.dtype, device=x.device).expand(c, 1, kh, kw).contiguous()
    if px0 == px1 >= 0 and py0 == py1 >= 0:
        # symmetric padding: let the convolution pad (no padded copy of the input)
        return F.conv2d(x, weight, stride=down, padding=(py0, px0), groups=c)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    if min(px0, px1, py0, py1) < 0:
        x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    return F.conv2d(x, weight, stride=down, groups=c)


def fused_leaky_relu(
    x: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    negative_slope: float = 0.2,
    scale: float = SQRT2,
) -> torch.Tensor:
    """``leaky_relu(x + bias) * scale`` with ``bias`` broadcast over dim 1 (channels)."""
    if bias is not None:
        x = x + bias.to(x.dtype).view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope) * scale
