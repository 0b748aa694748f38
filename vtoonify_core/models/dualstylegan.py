"""DualStyleGAN (Yang et al., CVPR 2022): StyleGAN2 plus an extrinsic style path.

Details: docs/design.md, ``vtoonify_core/models/dualstylegan.py``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

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
        # instance norm written out (not F.instance_norm) so that the memory format is kept; two
        # passes (mean, then the mean square of the centred values), which on channels-last
        # tensors is several times faster than torch.var_mean's strided reduction
        xf = x.float()
        centred = xf - xf.mean(dim=(2, 3), keepdim=True)  # a new tensor even when x is float32
        var = centred.square().mean(dim=(2, 3), keepdim=True)
        scale = gamma * torch.rsqrt(var + 1e-5)
        if torch.is_grad_enabled():  # autograd needs ``centred`` for the variance's gradient
            return (centred * scale + beta).to(x.dtype)
        return centred.mul_(scale).add_(beta).to(x.dtype)


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

    # ------------------------------------------------------------------ full synthesis
    def forward(self, content: torch.Tensor, exstyle: torch.Tensor, **kwargs) -> torch.Tensor:
        """Same as :meth:`synthesize` (the official forward takes lists of codes and returns a tuple)."""
        return self.synthesize(content, exstyle, **kwargs)

    def synthesize(self, content: torch.Tensor, exstyle: torch.Tensor, *,
                   interp_weights: Union[float, Sequence[float]] = 1.0, content_space: str = "w+",
                   exstyle_space: str = "w+", use_res: bool = True, fuse_index: int = 18, truncation: float = 1.0,
                   truncation_latent: Union[float, torch.Tensor, None] = None, max_size: Optional[int] = None
                   ) -> torch.Tensor:
        """The DualStyleGAN generator (official ``DualStyleGAN.forward``), without noise.

        Layer ``k`` of the intrinsic code drives StyleGAN2 layer ``k`` as usual. With
        ``use_res`` the extrinsic path joins for layers ``k <= fuse_index``:

        * structure layers ``k <= res_index`` (0-6): after the modulated conv of layer ``k`` the
          ModRes block ``res[k]`` adds a residual conditioned on ``T_c(exstyle[:, k])``, scaled
          by ``interp_weights[k]`` (0 leaves the features untouched);
        * colour layers ``k > res_index`` (7-17): the conv/to-RGB of layer ``k`` is modulated by
          ``w_k * res[k](exstyle[:, k]) + (1 - w_k) * content[:, k]`` (``res[k]`` is the
          structure transform ``T_s``, an EqualLinear).

        VToonify-D generates its training pairs with this forward: ``content`` the W+ of a face,
        ``exstyle`` the exemplar W+ (layers 7-17 replaced by the face's own code when the colours
        are kept), ``interp_weights = [d_s] * 7 + [1] * 11`` (``[d_s] * 7 + [0] * 11`` without
        colour transfer), ``input_is_latent=True``.

        Args:
            content: intrinsic code ``[B, 18, 512]`` (or ``[B, 512]``, repeated), in ``content_space``.
            exstyle: extrinsic code ``[B or 1, 18, 512]`` (or ``[B, 512]``), in ``exstyle_space``.
            interp_weights: one weight per layer (18 values) or one for all; the official default is 1.
            content_space, exstyle_space: ``'w+'`` (already mapped, ``input_is_latent=True``) or
                ``'z+'`` (mapped here with the StyleGAN2 mapping network, as ``z_plus_latent=True``
                does for the content and VToonify's ``zplus2wplus`` for exemplar codes).
            use_res: use the extrinsic style path (``False``: plain StyleGAN2 of ``content``).
            fuse_index: layers above it do not use the extrinsic path (official default 18: all).
            truncation, truncation_latent: official truncation of the content code
                (``truncation_latent + truncation * (w - truncation_latent)``; VToonify's
                training uses 0.5 and 0). 1 = none.
            max_size: stop at this resolution (a power of two from 4 to the full size) and return
                the RGB image accumulated so far: a cheaper, blurrier stand-in for the full image
                (the first stages are computed exactly as in the full forward).

        Returns:
            ``[B, 3, S, S]`` in the generator's dtype, unclamped (``S`` = ``max_size`` or 1024).
        """
        g = self.generator
        n = self.n_latent
        latent = self._as_wplus(content, content_space, "content")
        if truncation < 1:
            anchor = 0.0 if truncation_latent is None else truncation_latent
            latent = anchor + truncation * (latent - anchor)
        stop = self._stop_stage(max_size)
        if isinstance(interp_weights, (int, float)):
            weights = [float(interp_weights)] * n
        else:
            weights = [float(w) for w in interp_weights]
            if len(weights) < n:
                raise ValueError(f"interp_weights needs {n} values (one per layer), got {len(weights)}")
        if use_res:
            ada = self._as_wplus(exstyle, exstyle_space, "exstyle")
            if ada.shape[0] not in (1, latent.shape[0]):
                raise ValueError(f"exstyle batch {ada.shape[0]} does not match the content batch {latent.shape[0]}")
            ada = ada.expand(latent.shape[0], -1, -1)
            resstyles = self.color_transform(ada)

        def mod_style(k: int) -> torch.Tensor:
            if use_res and fuse_index >= k and k > self.res_index:
                w = weights[k]
                return w * self.res[k](ada[:, k]) + (1 - w) * latent[:, k]
            return latent[:, k]

        def mod_res(x: torch.Tensor, k: int) -> torch.Tensor:
            if use_res and fuse_index >= k and k <= self.res_index:
                return self.res[k](x, resstyles[:, k], weights[k])
            return x

        out = g.input(latent.shape[0])
        out = g.conv1(out, latent[:, 0])
        if use_res and fuse_index > 0:
            out = self.res[0](out, resstyles[:, 0], weights[0])
        skip = g.to_rgb1(out, latent[:, 1])
        for stage, (conv1, conv2, to_rgb) in enumerate(zip(g.convs[::2], g.convs[1::2], g.to_rgbs)):
            if stage >= stop:
                break
            k = 2 * stage + 1
            out = mod_res(conv1(out, mod_style(k)), k)
            out = mod_res(conv2(out, mod_style(k + 1)), k + 1)
            skip = to_rgb(out, mod_style(k + 2), skip)
        return skip

    def _as_wplus(self, code: torch.Tensor, space: str, name: str) -> torch.Tensor:
        if space not in ("w+", "z+"):
            raise ValueError(f"{name}_space must be 'w+' or 'z+', got {space!r}")
        if code.ndim == 2:
            code = code.unsqueeze(1).repeat(1, self.n_latent, 1)
        if code.ndim != 3 or tuple(code.shape[1:]) != (self.n_latent, 512):
            raise ValueError(f"{name} must be a code [B, {self.n_latent}, 512] (or [B, 512]), got {tuple(code.shape)}")
        code = code.float()
        return self.generator.mapping(code) if space == "z+" else code

    def _stop_stage(self, max_size: Optional[int]) -> int:
        """How many up-sampling stages to run for ``max_size`` (all of them for ``None``)."""
        stages = self.log_size - 2
        if max_size is None:
            return stages
        size = int(max_size)
        if size < 4 or size > 2 ** self.log_size or size & (size - 1):
            raise ValueError(f"max_size must be a power of two from 4 to {2 ** self.log_size}, got {max_size}")
        return int(math.log2(size)) - 2


def stylegan_synthesis(generator: Generator, wplus: torch.Tensor, *, max_size: Optional[int] = None) -> torch.Tensor:
    """Plain StyleGAN2 synthesis of W+ codes ``[B, 18, 512]`` without noise (rosinality's
    ``Generator.forward`` with ``input_is_latent=True``, ``noise`` zero), stopping at ``max_size``.

    Returns ``[B, 3, S, S]`` in the generator's dtype, unclamped.
    """
    n = generator.n_latent
    if wplus.ndim != 3 or tuple(wplus.shape[1:]) != (n, 512):
        raise ValueError(f"wplus must be [B, {n}, 512], got {tuple(wplus.shape)}")
    stages = generator.log_size - 2
    if max_size is not None:
        size = int(max_size)
        if size < 4 or size > 2 ** generator.log_size or size & (size - 1):
            raise ValueError(f"max_size must be a power of two from 4 to {2 ** generator.log_size}, got {max_size}")
        stages = int(math.log2(size)) - 2
    latent = wplus.float()
    out = generator.conv1(generator.input(latent.shape[0]), latent[:, 0])
    skip = generator.to_rgb1(out, latent[:, 1])
    for stage, (conv1, conv2, to_rgb) in enumerate(zip(generator.convs[::2], generator.convs[1::2], generator.to_rgbs)):
        if stage >= stages:
            break
        k = 2 * stage + 1
        out = conv2(conv1(out, latent[:, k]), latent[:, k + 1])
        skip = to_rgb(out, latent[:, k + 2], skip)
    return skip
