"""StyleGAN2 layers and generator with the attribute names of the official checkpoints.

The names (``convs``, ``to_rgbs``, ``conv.modulation``, ``activate.bias``, ``noises.noise_i``...)
are those of rosinality's StyleGAN2 port, which VToonify vendors; keeping them lets the official
state dicts load with ``strict=True``.

Precision: the style side (mapping network, modulation, demodulation) is computed in fp32
whatever the module dtype, since the squared-weight sums of demodulation overflow fp16; the
convolutions run in the activations' dtype.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .ops import SQRT2, fused_leaky_relu, make_kernel, upfirdn2d

BLUR_KERNEL = (1, 3, 3, 1)

#: folded up-sampling convolutions on inputs of at most this many pixels run in the four-phase
#: form (one plain conv + pixel shuffle), larger ones as one transposed conv: the faster of the two
#: in bench/bench_pipeline.py on CPU bf16 (few pixels and many channels favour the large GEMM)
POLYPHASE_MAX_PIXELS = 64 * 64


class PixelNorm(nn.Module):
    """Normalise each vector to unit root-mean-square over dim 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU(0.2) + gain sqrt(2); key ``bias``."""

    def __init__(self, channels: int, bias: bool = True):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate (runtime weight scale ``lr_mul / sqrt(in_dim)``).

    ``activation='fused_lrelu'`` adds the bias inside the fused leaky ReLU. Computed in fp32
    (it only ever maps style vectors) and returned in the input's dtype.
    """

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: Optional[str] = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        w = self.weight.float() * self.scale
        b = self.bias.float() * self.lr_mul if self.bias is not None else None
        if self.activation:
            out = fused_leaky_relu(F.linear(x, w), b)
        else:
            out = F.linear(x, w, b)
        return out.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate (weight scale ``1 / sqrt(fan_in)``); keys ``weight``, ``bias``."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = True, dilation: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.stride, self.padding, self.dilation = stride, padding, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.scaled_weight(), self.bias, self.stride, self.padding, self.dilation)

    def scaled_weight(self) -> torch.Tensor:
        """``weight * scale``, computed once and reused while gradients are off and the weight is
        unchanged (same storage, version, dtype, device, layout); recomputed when grad is on."""
        w = self.weight
        if torch.is_grad_enabled() or torch.compiler.is_compiling():  # (compiled: folded into the graph)
            return w * self.scale
        key = (w.data_ptr(), -1 if w.is_inference() else w._version, w.dtype, w.device, w.stride())
        memo = self.__dict__.get("_scaled")
        if memo is None or memo[0] != key:
            memo = (key, w * self.scale)
            self.__dict__["_scaled"] = memo
        return memo[1]

    def _apply(self, fn, recurse=True):
        self.__dict__.pop("_scaled", None)  # never keep a copy on the device the weights leave
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, {k}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}"


class ConvLayer(nn.Sequential):
    """EqualConv2d (+ fused leaky ReLU); keys ``0.weight`` and ``1.bias``. Same-size output."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, bias: bool = True,
                 activate: bool = True, dilation: int = 1):
        padding = kernel_size // 2 + dilation - 1
        layers: list[nn.Module] = [EqualConv2d(in_channel, out_channel, kernel_size, padding=padding,
                                               bias=bias and not activate, dilation=dilation)]
        if activate:
            layers.append(FusedLeakyReLU(out_channel, bias=bias))
        super().__init__(*layers)


class Blur(nn.Module):
    """FIR filter with padding (``kernel`` buffer, pre-multiplied by ``factor**2`` after upsampling)."""

    def __init__(self, kernel=BLUR_KERNEL, pad: tuple[int, int] = (0, 0), upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", make_kernel(kernel) * upsample_factor ** 2)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x FIR up-sampling (``kernel`` buffer)."""

    def __init__(self, kernel=BLUR_KERNEL, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(kernel) * factor ** 2)
        p = len(kernel) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


def modulation_weights(weight: torch.Tensor, styles: torch.Tensor, scale: float, demodulate: bool):
    """Per-sample input scales and output demodulation coefficients, in fp32.

    Args:
        weight: ``[1, O, I, k, k]`` (unscaled, as stored).
        styles: ``[N, I]`` modulation (already through the affine layer).

    Returns:
        ``(w, styles, dcoefs)``: the scaled shared weight ``[O, I, k, k]`` (fp32), styles ``[N, I]``
        and demodulation coefficients ``[N, O]`` (or ``None``).
    """
    w = weight[0].float() * scale
    styles = styles.float()
    dcoefs = None
    if demodulate:
        # sum over I,k,k of (w * s)^2 = (w^2 summed over k,k) @ s^2
        dcoefs = torch.rsqrt(styles.square() @ w.square().sum((2, 3)).t() + 1e-8)
    return w, styles, dcoefs


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution (with demodulation), optionally 2x up-sampling.

    Implemented by modulating the activations instead of the weights (mathematically the
    same as per-sample weights, with one shared convolution for the batch). Keys: ``weight``
    ``[1, O, I, k, k]``, ``modulation.{weight,bias}``, and ``blur.kernel`` when up-sampling.
    """

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 demodulate: bool = True, upsample: bool = False, blur_kernel=BLUR_KERNEL):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.upsample, self.demodulate = upsample, demodulate
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """``x`` ``[N, I, H, W]``, ``style`` ``[N, style_dim]`` -> ``[N, O, H', W']``."""
        w, s, dcoefs = modulation_weights(self.weight, self.modulation(style.float()), self.scale, self.demodulate)
        dtype = x.dtype
        x = x * s.to(dtype)[:, :, None, None]
        w = w.to(dtype)
        if self.upsample:
            out = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
            out = self.blur(out)
        else:
            out = F.conv2d(x, w, padding=self.padding)
        if dcoefs is not None:
            out = out * dcoefs.to(dtype)[:, :, None, None]
        return out

    def bake(self, style: torch.Tensor) -> torch.Tensor:
        """The modulated (and demodulated) weight ``[O, I, k, k]`` in fp32 for one style ``[1, style_dim]``.

        Convolving with it equals :meth:`forward` for every sample that has this style.
        """
        w, s, dcoefs = modulation_weights(self.weight, self.modulation(style.float()), self.scale, self.demodulate)
        w = w * s[0][None, :, None, None]
        if dcoefs is not None:
            w = w * dcoefs[0][:, None, None, None]
        return w

    def conv_baked(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Plain (batched) convolution with a baked weight ``[O, I, k, k]``, incl. the up-sampling and its blur."""
        if self.upsample:
            return self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        return F.conv2d(x, weight, padding=self.padding)

    def conv_folded(self, x: torch.Tensor, folded: torch.Tensor, phases: torch.Tensor,
                    bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Up-sampling convolution with the blur folded in (:func:`fold_upsample_kernel`).

        Small inputs (at most :data:`POLYPHASE_MAX_PIXELS` pixels) run the four-phase form
        (:func:`polyphase_kernel`: one plain convolution + pixel shuffle), larger ones the single
        transposed convolution; both equal :meth:`conv_baked` up to float rounding. ``bias`` (per
        output channel) is added inside the convolution: with the blur folded in, nothing comes
        between the two.
        """
        if x.shape[-2] * x.shape[-1] <= POLYPHASE_MAX_PIXELS:
            phase_bias = None if bias is None else bias.repeat_interleave(4)
            return F.pixel_shuffle(F.conv2d(x, phases, phase_bias, padding=phases.shape[-1] // 2), 2)
        return F.conv_transpose2d(x, folded.transpose(0, 1), bias, stride=2, padding=self.fold_padding)

    @property
    def fold_padding(self) -> int:
        """Crop of the folded transposed convolution: ``b - 1 - p0`` for a ``b``-tap blur padded by
        ``p0`` in front (2 for StyleGAN2's 4-tap blur)."""
        return self.blur.kernel.shape[-1] - 1 - self.blur.pad[0]

    def extra_repr(self) -> str:
        return f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, upsample={self.upsample}"


class NoiseInjection(nn.Module):
    """Per-layer noise strength (key ``weight``). VToonify removes the noise (it multiplies the
    noise by 0), so ``noise=None`` here means *no noise*, not random noise."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        return x if noise is None else x + self.weight.to(x.dtype) * noise


class ConstantInput(nn.Module):
    """The learned 4x4 input of StyleGAN2 (key ``input``)."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.repeat(batch, 1, 1, 1)


class StyledConv(nn.Module):
    """Modulated conv + noise + fused leaky ReLU (keys ``conv.*``, ``noise.weight``, ``activate.bias``)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
                 upsample: bool = False, blur_kernel=BLUR_KERNEL, demodulate: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim,
                                    demodulate=demodulate, upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))

    def bake(self, style: torch.Tensor, dtype: torch.dtype, fold: bool = False) -> tuple[torch.Tensor, ...]:
        """Weight and bias for :meth:`forward_baked`, with the activation gain sqrt(2) folded in
        (leaky ReLU is positively homogeneous: ``g * lrelu(v) = lrelu(g * v)``).

        With ``fold`` an up-sampling layer also gets its FIR blur folded into the kernel: the
        tuple is ``(folded, bias, phases)`` (:func:`fold_upsample_kernel`, :func:`polyphase_kernel`).
        """
        g = SQRT2
        weight = self.conv.bake(style) * g
        bias = (self.activate.bias.float() * g).to(dtype)
        if fold and self.conv.upsample:
            folded = fold_upsample_kernel(weight, self.conv.blur.kernel)
            phases = polyphase_kernel(folded, self.conv.fold_padding)
            return folded.to(dtype), bias, phases.to(dtype)
        return weight.to(dtype), bias

    def forward_baked(self, x: torch.Tensor, baked: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Same as :meth:`forward` (without noise) for samples of the baked style; one batched conv,
        bias and activation applied in place."""
        weight, bias = baked[:2]
        if len(baked) > 2:
            out = self.conv.conv_folded(x, weight, baked[2], bias)
        elif self.conv.upsample:
            out = self.conv.conv_baked(x, weight).add_(bias[:, None, None])
        else:
            out = F.conv2d(x, weight, bias, padding=self.conv.padding)
        return F.leaky_relu_(out, 0.2)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) + bias, plus the up-sampled skip image."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True, blur_kernel=BLUR_KERNEL):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias.to(x.dtype)
        if skip is not None:
            out = out + self.upsample(skip)
        return out

    def bake(self, style: torch.Tensor, dtype: torch.dtype, fold: bool = False) -> tuple[torch.Tensor, ...]:
        """Weight ``[3, I, 1, 1]`` and bias ``[3]`` for :meth:`forward_baked`; with ``fold``, also
        the skip up-sampling as a precomputed depthwise transposed-convolution kernel ``[3, 1, 4, 4]``."""
        baked = (self.conv.bake(style).to(dtype), self.bias.float().reshape(3).to(dtype))
        if fold and hasattr(self, "upsample"):
            kernel = self.upsample.kernel.float()
            baked += (kernel.expand(3, 1, *kernel.shape).to(dtype),)
        return baked

    def forward_baked(self, x: torch.Tensor, baked, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        out = F.conv2d(x, baked[0], baked[1])
        if skip is not None:
            if len(baked) > 2:
                # zero insertion + FIR filter in one op: a depthwise stride-2 transposed convolution
                # with the (unflipped) kernel, cropped by b - 1 - p0 on each side
                pad = baked[2].shape[-1] - 1 - self.upsample.pad[0]
                up = F.conv_transpose2d(skip, baked[2], stride=2, padding=pad, groups=skip.shape[1])
            else:
                up = self.upsample(skip)
            out = out.add_(up)
        return out


def fold_upsample_kernel(weight: torch.Tensor, blur: torch.Tensor) -> torch.Tensor:
    """Fold the FIR blur that follows a stride-2 transposed convolution into its kernel.

    ``blur(conv_transpose2d(x, W, stride=2), pad=(p0, p1))`` equals
    ``conv_transpose2d(x, K, stride=2, padding=(k - 1 + b - 2) // 2)`` where ``K`` is the full
    2-D convolution of every ``W[o, i]`` with the blur kernel: a ``(k + b - 1)``-tap kernel
    (6x6 for StyleGAN2's 3x3 conv and 4-tap blur). One op replaces two and the intermediate
    ``(2H + 1)``-sized tensor is never written.

    Args:
        weight: ``[O, I, k, k]`` (as given to :func:`torch.nn.functional.conv2d`; the transposed
            convolution uses its ``transpose(0, 1)``).
        blur: ``[b, b]`` FIR kernel (already scaled by the up-sampling gain).

    Returns:
        ``[O, I, k + b - 1, k + b - 1]`` in the dtype of ``weight``.
    """
    o, i, k, _ = weight.shape
    b = blur.shape[-1]
    # upfirdn2d convolves (flipped kernel); the transposed convolution scatters W, so the
    # folded kernel is W convolved with the blur: pad W by b-1 and correlate with the flipped blur
    flipped = torch.flip(blur, [0, 1]).to(weight)
    padded = F.pad(weight.reshape(o * i, 1, k, k), [b - 1] * 4)
    return F.conv2d(padded, flipped[None, None]).reshape(o, i, k + b - 1, k + b - 1)


def polyphase_kernel(folded: torch.Tensor, padding: int) -> torch.Tensor:
    """Split a stride-2 transposed-convolution kernel into its four output phases.

    ``conv_transpose2d(x, K, stride=2, padding=padding)`` equals
    ``pixel_shuffle(conv2d(x, P, padding=m // 2), 2)`` with ``P`` returned here: output pixel
    ``2a + p`` gathers input pixels ``a + d`` through taps ``K[p + padding - 2d]``, so each phase
    is an ``m = K / 2``-tap kernel at the *input* resolution. One plain convolution with 4x the
    output channels (a large GEMM on few pixels) then replaces the transposed convolution.

    Args:
        folded: ``[O, I, K, K]`` with ``K`` even (:func:`fold_upsample_kernel`).
        padding: the transposed convolution's padding.

    Returns:
        ``[4 * O, I, K // 2, K // 2]`` ordered for :func:`torch.nn.functional.pixel_shuffle`
        (output channel ``o * 4 + 2 * phase_y + phase_x``).
    """
    o, i, kk, _ = folded.shape
    if kk % 2:
        raise ValueError(f"polyphase split needs an even kernel size, got {kk}")
    m = kk // 2
    half = m // 2
    phases = []
    for py in range(2):
        for px in range(2):
            # correlation tap t (offset d = t - half) reads K[p + padding - 2d]
            ty = [py + padding - 2 * (t - half) for t in range(m)]
            tx = [px + padding - 2 * (t - half) for t in range(m)]
            if min(ty + tx) < 0 or max(ty + tx) >= kk:
                raise ValueError(f"padding {padding} does not suit a {kk}-tap kernel for the polyphase split")
            phases.append(folded[:, :, ty][:, :, :, tx])
    return torch.stack(phases, 1).reshape(4 * o, i, m, m)


def channel_table(channel_multiplier: int = 2) -> dict[int, int]:
    """Feature channels of StyleGAN2 per resolution."""
    m = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m, 512: 32 * m, 1024: 16 * m}


class Generator(nn.Module):
    """StyleGAN2 generator: mapping network ``style`` and synthesis layers.

    VToonify uses the mapping network (``zplus2wplus``) and the synthesis layers from the 32x32
    stage upward; the lower layers are kept so that official state dicts load strictly.
    """

    def __init__(self, size: int = 1024, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 blur_kernel=BLUR_KERNEL, lr_mlp: float = 0.01):
        super().__init__()
        self.size, self.style_dim = size, style_dim
        self.style = nn.Sequential(PixelNorm(), *[
            EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)])
        self.channels = channel_table(channel_multiplier)
        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)
        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = (layer_idx + 5) // 2
            self.noises.register_buffer(f"noise_{layer_idx}", torch.zeros(1, 1, 2 ** res, 2 ** res))
        in_channel = self.channels[4]
        for i in range(3, self.log_size + 1):
            out_channel = self.channels[2 ** i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True, blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channel, style_dim))
            in_channel = out_channel

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """Map z (or z+) codes ``[..., 512]`` to W (W+) with the 8-layer MLP."""
        shape = z.shape
        return self.style(z.reshape(-1, shape[-1])).reshape(shape)
