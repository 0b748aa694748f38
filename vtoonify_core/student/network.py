"""The student's two networks (Kim et al., "Context-Preserving Two-Stage Video Domain Translation"):
Stage I, a U-Net ``G`` mapping a frame to its 4x stylized frame through a sub-pixel output, and
Stage II, a small refiner ``R`` that renders frame t from ``G(x_t)``, the previous refined output
and the previous ``L = 2`` source frames. Both run on frames ``[B, 3, H, W]`` in [-1, 1].
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..types import SCALE

#: previous source frames the refiner reads (the paper's L)
CONTEXT = 2
#: the U-Net downsamples four times: inputs are padded (reflect) to multiples of this inside
UNET_MULTIPLE = 16


@dataclass(frozen=True)
class StudentConfig:
    """What a student checkpoint needs to rebuild its networks (stored with the weights).

    Attributes:
        width: channels of the U-Net's full-resolution level; the levels have ``width * (1, 2, 4, 8, 16)``
            (16 = about 6M parameters, the paper's size).
        blocks: residual blocks at the deepest level (1/16 of the input).
        refiner: whether the Stage-II refiner is present.
        refiner_width: channels of the refiner.
    """

    width: int = 16
    blocks: int = 4
    refiner: bool = True
    refiner_width: int = 16

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2)


class _Act(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, 0.2, inplace=True)


class _ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv(c, c), _conv(c, c)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.2, inplace=True))


def _pad_to(x: Tensor, multiple: int) -> tuple[Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


class StudentUNet(nn.Module):
    """Stage I: ``G(x)``, ``[B, 3, H, W]`` -> ``[B, 3, 4H, 4W]`` (unclamped; about [-1, 1]).

    Thin full-resolution levels and most parameters at 1/8 and 1/16 of the input, so the network
    is cheap per pixel; the output is a sub-pixel (pixel shuffle x4) residual on top of the
    bilinearly up-sampled input.
    """

    def __init__(self, width: int = 16, blocks: int = 4) -> None:
        super().__init__()
        c = [width * m for m in (1, 2, 4, 8, 16)]
        self.stem = nn.Sequential(_conv(3, c[0]), _Act())
        self.down = nn.ModuleList(nn.Sequential(_conv(c[i], c[i + 1], 3, 2), _Act(), _conv(c[i + 1], c[i + 1]), _Act())
                                  for i in range(4))
        self.mid = nn.Sequential(*[_ResBlock(c[4]) for _ in range(blocks)])
        self.up = nn.ModuleList(nn.Sequential(_conv(c[i + 1] + c[i], c[i]), _Act()) for i in reversed(range(4)))
        self.head = _conv(c[0], 3 * SCALE * SCALE)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        xp, h, w = _pad_to(x, UNET_MULTIPLE)
        skips = [self.stem(xp)]
        for layer in self.down:
            skips.append(layer(skips[-1]))
        y = self.mid(skips.pop())
        for layer in self.up:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = layer(torch.cat([y, skip], 1))
        out = F.pixel_shuffle(self.head(y), SCALE)
        out = out + F.interpolate(xp, scale_factor=SCALE, mode="bilinear", align_corners=False)
        return out[..., :SCALE * h, :SCALE * w]


class Refiner(nn.Module):
    """Stage II: ``R(g_t, prev, x_t, x_{t-1}, x_{t-2})`` -> refined ``[B, 3, 4H, 4W]``.

    ``g_t = G(x_t)`` and ``prev`` (the previous refined output) are folded to the input resolution
    (pixel unshuffle x4) and read with the three source frames; the network predicts a per-pixel
    weight of ``prev`` and a residual, blended in the folded layout and unfolded (pixel shuffle
    x4). It starts as the identity on ``g_t`` (weight ~0, residual 0).
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        cin = 2 * 3 * SCALE * SCALE + 3 * (CONTEXT + 1)
        self.inp = nn.Sequential(nn.Conv2d(cin, width, 1), _Act(), _conv(width, width), _Act())
        self.down = nn.Sequential(_conv(width, 2 * width, 3, 2), _Act(), _conv(2 * width, 2 * width), _Act())
        self.up = nn.Sequential(nn.Conv2d(3 * width, width, 1), _Act())
        self.out = nn.Conv2d(width, 4 * SCALE * SCALE, 1)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias.zero_()
            self.out.bias[:SCALE * SCALE] = -6.0  # the weight of prev starts at sigmoid(-6) ~ 0

    def forward(self, g_t: Tensor, prev: Tensor, sources: Tensor) -> Tensor:
        """``sources``: ``[B, 3 * (L + 1), H, W]``, x_t then the previous frames, newest first."""
        g_f, prev_f = F.pixel_unshuffle(g_t, SCALE), F.pixel_unshuffle(prev, SCALE)
        zp, h, w = _pad_to(torch.cat([g_f, prev_f, sources], 1), 2)
        a = self.inp(zp)
        b = F.interpolate(self.down(a), size=a.shape[-2:], mode="bilinear", align_corners=False)
        o = self.out(self.up(torch.cat([a, b], 1)))[..., :h, :w]
        n = SCALE * SCALE  # the blend in the folded layout: channel c * 16 + sub-pixel, one weight per sub-pixel
        weight = torch.sigmoid(o[:, :n]).repeat(1, 3, 1, 1)
        return F.pixel_shuffle(torch.lerp(g_f, prev_f, weight) + o[:, n:], SCALE)


def context_frames(frames: Tensor, t: int, history: Optional[Tensor] = None) -> Tensor:
    """``[1, 3 * (L + 1), H, W]``: frame ``t`` of ``frames`` and its ``L`` predecessors, newest first.

    Before the clip's start the predecessors come from ``history`` (the last frames of the previous
    chunk, oldest first), else the first frame repeats.
    """
    seq = frames if history is None else torch.cat([history, frames], 0)
    i = t + (0 if history is None else history.shape[0])
    return torch.cat([seq[max(i - k, 0)][None] for k in range(CONTEXT + 1)], 1)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())
