"""The pSp style encoder (GradualStyleEncoder, 50-layer IR-SE) of the official VToonify release.

Details: docs/design.md, ``vtoonify_core/models/psp.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..weights import check_finite, expect_kind, load_into, read_checkpoint
from .stylegan import EqualLinear

PathLike = Union[str, Path]

#: Input size of the encoder (FFHQ-aligned face crops).
INPUT_SIZE = 256
#: Number of style vectors (``log2(1024) * 2 - 2`` for the 1024 StyleGAN2 of the release).
N_STYLES = 18
#: Width of a style vector.
STYLE_DIM = 512

# (in_channel, depth, num_units) of the four stages of the 50-layer IR network; the first unit of
# each stage has stride 2 (``helpers.get_blocks(50)``).
_BLOCKS_50 = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))

# Body units whose outputs feed the feature pyramid (official indices for 50 layers).
_C1, _C2, _C3 = 6, 20, 23


# ----------------------------------------------------------------------------------------------
# building blocks (helpers.py)


class SEModule(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(fc2(relu(fc1(avg_pool(x)))))``."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            # the mean of up to 128*128 values, taken in fp32 whatever the backend's accumulator
            s = self.avg_pool(x.float()).to(x.dtype)
        else:
            s = self.avg_pool(x)
        s = self.sigmoid(self.fc2(self.relu(self.fc1(s))))
        return x * s


class BottleneckIRSE(nn.Module):
    """``bottleneck_IR_SE`` of the official helpers: ``res_layer(x) + shortcut_layer(x)``."""

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channel, depth, (1, 1), stride, bias=False),
                nn.BatchNorm2d(depth),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel),
            nn.Conv2d(in_channel, depth, (3, 3), (1, 1), 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, (3, 3), stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16),
        )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.shortcut_layer(x)
        res = self.res_layer(x)
        return res + shortcut


# ----------------------------------------------------------------------------------------------
# the encoder (psp_encoders.py)


class GradualStyleBlock(nn.Module):
    """``log2(spatial)`` stride-2 3x3 convs with LeakyReLU(0.01), then an EqualLinear.

    (B, in_c, spatial, spatial) -> (B, out_c).
    """

    def __init__(self, in_c: int, out_c: int, spatial: int):
        super().__init__()
        self.out_c = out_c
        self.spatial = spatial
        num_pools = int(np.log2(spatial))
        modules: list[nn.Module] = [nn.Conv2d(in_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        for _ in range(num_pools - 1):
            modules += [nn.Conv2d(out_c, out_c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*modules)
        self.linear = EqualLinear(out_c, out_c, lr_mul=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.convs(x)
        x = x.reshape(-1, self.out_c)
        return self.linear(x)


class GradualStyleEncoder(nn.Module):
    """The official pSp ``GradualStyleEncoder(50, 'ir_se', opts)``.

    forward: (B, input_nc, 256, 256) -> (B, n_styles, 512), the encoder output *without*
    ``latent_avg`` (see :class:`StyleEncoder`). No input check here; the official module is
    reproduced as is.
    """

    def __init__(self, num_layers: int = 50, mode: str = "ir_se", input_nc: int = 3, n_styles: int = N_STYLES):
        super().__init__()
        if num_layers != 50 or mode != "ir_se":
            raise ValueError(
                f"only the 50-layer 'ir_se' encoder of the VToonify release is implemented, got {num_layers}, {mode!r}"
            )
        self.input_layer = nn.Sequential(
            nn.Conv2d(input_nc, 64, (3, 3), 1, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.PReLU(64),
        )
        modules = []
        for in_channel, depth, num_units in _BLOCKS_50:
            modules.append(BottleneckIRSE(in_channel, depth, 2))
            modules += [BottleneckIRSE(depth, depth, 1) for _ in range(num_units - 1)]
        self.body = nn.Sequential(*modules)

        self.styles = nn.ModuleList()
        self.style_count = n_styles
        self.coarse_ind = 3
        self.middle_ind = 7
        for i in range(self.style_count):
            if i < self.coarse_ind:
                style = GradualStyleBlock(512, 512, 16)
            elif i < self.middle_ind:
                style = GradualStyleBlock(512, 512, 32)
            else:
                style = GradualStyleBlock(512, 512, 64)
            self.styles.append(style)
        self.latlayer1 = nn.Conv2d(256, 512, kernel_size=1, stride=1, padding=0)
        self.latlayer2 = nn.Conv2d(128, 512, kernel_size=1, stride=1, padding=0)

    @staticmethod
    def _upsample_add(x: Tensor, y: Tensor) -> Tensor:
        """Bilinear (``align_corners=True``) up-sampling of ``x`` to ``y``'s size, plus ``y``."""
        _, _, h, w = y.size()
        return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True) + y

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_layer(x)
        c1 = c2 = c3 = None
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i == _C1:
                c1 = x
            elif i == _C2:
                c2 = x
            elif i == _C3:
                c3 = x

        latents = [self.styles[j](c3) for j in range(self.coarse_ind)]
        p2 = self._upsample_add(c3, self.latlayer1(c2))
        latents += [self.styles[j](p2) for j in range(self.coarse_ind, self.middle_ind)]
        p1 = self._upsample_add(p2, self.latlayer2(c1))
        latents += [self.styles[j](p1) for j in range(self.middle_ind, self.style_count)]
        return torch.stack(latents, dim=1)


class StyleEncoder(nn.Module):
    """The pSp encoder as VToonify uses it: ``encoder(x) + latent_avg``.

    forward: (B, 3, 256, 256) FFHQ-aligned face crops in [-1, 1] -> (B, 18, 512) z+ codes
    (``util.load_psp_standalone`` of the official code, forward hook included). The input is
    cast to the encoder's dtype (not moved between devices); the output is in that dtype, with
    ``latent_avg`` added in fp32.

    State dict: ``encoder.*`` (the official names with their ``encoder.`` prefix) and
    ``latent_avg``, i.e. exactly the flat dict :func:`~vtoonify_core.weights.read_checkpoint`
    makes of ``encoder.pt``.
    """

    def __init__(self, n_styles: int = N_STYLES):
        super().__init__()
        self.encoder = GradualStyleEncoder(50, "ir_se", input_nc=3, n_styles=n_styles)
        self.register_buffer("latent_avg", torch.zeros(n_styles, STYLE_DIM))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"the pSp style encoder expects a (B, 3, 256, 256) image batch, got shape {tuple(x.shape)}")
        if x.shape[2] != INPUT_SIZE or x.shape[3] != INPUT_SIZE:
            raise ValueError(
                f"the pSp style encoder expects 256x256 FFHQ-aligned crops (align the face first), "
                f"got {x.shape[2]}x{x.shape[3]}"
            )
        dtype = self.latent_avg.dtype
        if x.dtype != dtype:
            x = x.to(dtype)
        out = self.encoder(x)
        return (out.float() + self.latent_avg.float()).to(dtype)


# ----------------------------------------------------------------------------------------------
# public API


def load_style_encoder(
    path: PathLike, device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32
) -> StyleEncoder:
    """Load the official pSp ``encoder.pt`` (or a ``.safetensors`` conversion of it).

    The file is read without unpickling code (only the ``encoder.*`` entries and ``latent_avg``
    are kept; the unused ``decoder.*`` entries are dropped), checked to be a pSp style encoder
    with finite weights and loaded with strict key and shape checks. The module is returned in
    eval mode (BatchNorm uses the running statistics), without gradients, on ``device`` in
    ``dtype``.

    Raises:
        CheckpointError: missing, unreadable, wrong-kind, corrupt or non-fitting file.
    """
    ckpt = read_checkpoint(path)
    expect_kind(ckpt, "psp")
    check_finite(ckpt.tensors, ckpt.path)
    n_styles = N_STYLES
    la = ckpt.tensors.get("latent_avg")
    if la is not None and la.dim() == 2:
        n_styles = int(la.shape[0])
    with torch.device("meta"):
        model = StyleEncoder(n_styles=n_styles)
    model = model.to_empty(device="cpu")
    load_into(model, ckpt.tensors, ckpt.path, "pSp style encoder")
    model.source = str(ckpt.path)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
