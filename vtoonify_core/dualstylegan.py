"""DualStyleGAN (Yang et al., CVPR 2022): StyleGAN2 plus an extrinsic style path.

The extrinsic style path has two parts that VToonify-D reuses:

* the colour transform ``style`` (PixelNorm + 2 EqualLinear) that maps an extrinsic W+ code to
  the codes that drive the ModRes blocks;
* ``res``: ModRes blocks (modulative residual blocks, AdaIN-conditioned) for the structure
  layers 0-6 and EqualLinear *structure/colour transforms* for layers 7-17, which VToonify
  applies to the W+ code it receives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan import ConvLayer, EqualLinear, Generator, PixelNorm


class AdaptiveInstanceNorm(nn.Module):
    """AdaIN: instance normalisation, then ``gamma * x + beta`` from a linear map of a code.

    Statistics are computed in fp32 (``InstanceNorm2d`` semantics: biased variance, eps 1e-5).
    Keys: ``style.{weight,bias}``.
    """

    def __init__(self, fin: int, style_dim: int = 512):
        super().__init__()
        self.style = nn.Linear(style_dim, fin * 2)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        params = F.linear(code.float(), self.style.weight.float(), self.style.bias.float())
        gamma, beta = params[:, :, None, None].chunk(2, 1)
        # instance norm written out (not F.instance_norm) so that the memory format is kept
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, unbiased=False)
        scale = gamma * torch.rsqrt(var + 1e-5)
        return (xf * scale + (beta - mean * scale)).to(x.dtype)


class AdaResBlock(nn.Module):
    """ModRes block: ``x + w * conv2(AdaIN2(conv(AdaIN(x, s)), s))`` (``w = 0`` returns ``x``)."""

    def __init__(self, fin: int, style_dim: int = 512, dilation: int = 1):
        super().__init__()
        self.conv = ConvLayer(fin, fin, 3, dilation=dilation)
        self.conv2 = ConvLayer(fin, fin, 3, dilation=dilation)
        self.norm = AdaptiveInstanceNorm(fin, style_dim)
        self.norm2 = AdaptiveInstanceNorm(fin, style_dim)

    def forward(self, x: torch.Tensor, s: torch.Tensor, w: float = 1.0) -> torch.Tensor:
        if w == 0:
            return x
        out = self.conv(self.norm(x, s))
        out = self.conv2(self.norm2(out, s))
        return out * w + x


class DualStyleGAN(nn.Module):
    """DualStyleGAN's modules with the official names: ``style``, ``generator``, ``res``."""

    def __init__(self, size: int = 1024, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 res_index: int = 6):
        super().__init__()
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(512, 512, lr_mul=0.01, activation="fused_lrelu") for _ in range(n_mlp - 6)])
        self.generator = Generator(size, style_dim, n_mlp, channel_multiplier)
        self.res_index = res_index // 2 * 2
        self.res = nn.ModuleList([AdaResBlock(self.generator.channels[4])])
        for i in range(3, self.generator.log_size + 1):
            ch = self.generator.channels[2 ** i]
            if i < 3 + self.res_index // 2:
                self.res.extend([AdaResBlock(ch), AdaResBlock(ch)])
            else:
                self.res.extend([EqualLinear(512, 512), EqualLinear(512, 512)])
        self.res.append(EqualLinear(512, 512))  # for the last to_rgb
        self.channels = self.generator.channels
        self.n_latent = self.generator.n_latent
        self.log_size = self.generator.log_size

    def color_transform(self, wplus: torch.Tensor) -> torch.Tensor:
        """T_c: the codes that drive the ModRes blocks, per layer. ``[N, L, 512] -> [N, L, 512]``."""
        shape = wplus.shape
        return self.style(wplus.reshape(-1, shape[-1])).reshape(shape)

    def structure_transform(self, wplus: torch.Tensor, first: int = 7) -> torch.Tensor:
        """Apply the per-layer EqualLinear transforms ``res[i]`` to layers ``i >= first`` of W+."""
        layers = [wplus[:, i] if i < first else self.res[i](wplus[:, i]) for i in range(wplus.shape[1])]
        return torch.stack(layers, dim=1)
