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
            (16 = 5.3M parameters with the defaults; the paper's network has 5.6M).
        blocks: residual blocks at the deepest level (1/16 of the input).
        refiner: whether the Stage-II refiner is present.
        refiner_width: channels of the refiner.
        decoder_width: channels of the U-Net's last decoder level (full input resolution, two 3x3
            convolutions) that feeds the x4 sub-pixel head; 0 is the first layout (one convolution
            of ``width`` channels), which files written before this field load as.
    """

    width: int = 16
    blocks: int = 3
    refiner: bool = True
    refiner_width: int = 16
    decoder_width: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2)


class _Act(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, 0.2, inplace=True)


class _ResBlock(nn.Module):
    """``x + conv(act(conv(x)))``, starting as the identity (the second convolution is zero), so the
    deep blocks do not disturb the first steps and training is stable at the default rate."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = _conv(c, c), _conv(c, c)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

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
    is cheap per pixel; the last decoder level (``decoder_width`` channels, two convolutions) gives
    the head enough per-pixel capacity for the 16 output pixels each input pixel becomes. The
    output is a sub-pixel (pixel shuffle x4) residual on top of the bilinearly up-sampled input.
    """

    def __init__(self, width: int = 16, blocks: int = 3, decoder_width: int = 32) -> None:
        super().__init__()
        c = [width * m for m in (1, 2, 4, 8, 16)]
        self.stem = nn.Sequential(_conv(3, c[0]), _Act())
        self.down = nn.ModuleList(nn.Sequential(_conv(c[i], c[i + 1], 3, 2), _Act(), _conv(c[i + 1], c[i + 1]), _Act())
                                  for i in range(4))
        self.mid = nn.Sequential(*[_ResBlock(c[4]) for _ in range(blocks)])
        self.up = nn.ModuleList(nn.Sequential(_conv(c[i + 1] + c[i], c[i]), _Act()) for i in reversed(range(1, 4)))
        last = decoder_width or c[0]
        self.up.append(nn.Sequential(_conv(c[1] + c[0], last), _Act(), _conv(last, last), _Act()) if decoder_width
                       else nn.Sequential(_conv(c[1] + c[0], c[0]), _Act()))
        self.head = _conv(last, 3 * SCALE * SCALE)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(self.folded(x), SCALE)

    def folded(self, x: Tensor) -> Tensor:
        """``G(x)`` folded to the input resolution, ``[B, 3 * 16, H, W]`` (pixel unshuffle x4 of the
        output): the refiner reads and writes this layout, so a clip is unfolded once per frame."""
        xp, h, w = _pad_to(x, UNET_MULTIPLE)
        skips = [self.stem(xp)]
        for layer in self.down:
            skips.append(layer(skips[-1]))
        y = self.mid(skips.pop())
        for layer in self.up:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = layer(torch.cat([y, skip], 1))
        out = self.head(y).add_(folded_upsample(xp))
        return out[..., :h, :w]


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
        y = self.folded(F.pixel_unshuffle(g_t, SCALE), F.pixel_unshuffle(prev, SCALE), sources)
        return F.pixel_shuffle(y, SCALE)

    def folded(self, g_f: Tensor, prev_f: Tensor, sources: Tensor) -> Tensor:
        """:meth:`forward` in the folded layout: ``g_f`` and ``prev_f`` are ``[B, 3 * 16, H, W]``
        (pixel unshuffle x4), and so is the result."""
        # The first 1x1 convolution reads the three inputs in place of their concatenation (its
        # weight split by input), and the padding to even sides follows it (a point-wise map and a
        # reflect/replicate pad commute): no 105-channel copy per frame.
        first, c = self.inp[0], g_f.shape[1]
        wt = first.weight
        a = F.conv2d(g_f, wt[:, :c]).add_(F.conv2d(prev_f, wt[:, c:2 * c])).add_(
            F.conv2d(sources, wt[:, 2 * c:], first.bias))
        a, h, w = _pad_to(F.leaky_relu(a, 0.2, inplace=True), 2)
        a = self.inp[2:](a)
        # likewise the 1x1 convolution after the skip: it commutes with the bilinear up-sampling,
        # so the coarse branch is projected at its own resolution and then up-sampled
        up, k = self.up[0], a.shape[1]
        u = F.conv2d(a, up.weight[:, :k], up.bias).add_(F.interpolate(
            F.conv2d(self.down(a), up.weight[:, k:]), size=a.shape[-2:], mode="bilinear", align_corners=False))
        o = self.out(F.leaky_relu(u, 0.2, inplace=True))[..., :h, :w]
        n = SCALE * SCALE  # the blend in the folded layout: channel c * 16 + sub-pixel, one weight per sub-pixel
        bsz, _, fh, fw = g_f.shape
        weight = torch.sigmoid(o[:, :n]).unsqueeze(1)  # [B, 1, 16, H, W]: the same weight for the 3 colours
        blend = torch.lerp(g_f.view(bsz, 3, n, fh, fw), prev_f.view(bsz, 3, n, fh, fw), weight)
        return blend.reshape(bsz, 3 * n, fh, fw).add_(o[:, n:])


def _upsample_taps(dtype: torch.dtype, device: torch.device) -> Tensor:
    """The 3x3 taps ``[3 * 16, 1, 3, 3]`` that give bilinear x4 up-sampling (align_corners=False)
    folded to the input resolution: sub-pixel ``s`` of pixel ``i`` lies at ``i + (2 s - 3) / 8``,
    between pixel ``i`` and its neighbour on that side."""
    near = torch.tensor([[3, 5, 0], [1, 7, 0], [0, 7, 1], [0, 5, 3]], dtype=torch.float64) / 8.0
    taps = (near[:, None, :, None] * near[None, :, None, :]).reshape(SCALE * SCALE, 1, 3, 3)
    return taps.repeat(3, 1, 1, 1).to(device, dtype)


def folded_upsample(x: Tensor) -> Tensor:
    """``pixel_unshuffle(interpolate(x, scale_factor=4, mode="bilinear"), 4)`` computed at the input
    resolution (``[B, 3, H, W]`` -> ``[B, 48, H, W]``); the edges repeat, as PyTorch's clamp does."""
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), _upsample_taps(x.dtype, x.device), groups=3)


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
