"""VToonify (Yang et al., SIGGRAPH Asia 2022): the fully convolutional toonification network.

Structure (paper Sec. 4): an *encoder* turns the frame plus its parsing map into multi-scale
content features; the StyleGAN layers from the 32x32 stage upward act as the *generator*,
driven by the W+ style code; *fusion* modules inject the encoder features at the first four
up-sampling stages. With the DualStyleGAN backbone (VToonify-D) the encoder's residual
features are adjusted by ModRes blocks scaled by the *style degree* ``d_s``, and the fusion is
style-degree aware: a mask ``m_E`` predicted from ``cat(f_G, |f_G - f_E|)`` (AdaIN conditioned
on ``d_s``) gates the encoder features.

Input frames of any size whose height and width are multiples of 8; output is 4x the input.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import is_oom
from ..host_memory import reuse_host_memory
from ..weights import check_finite, expect_kind, load_into, read_checkpoint
from .dualstylegan import AdaptiveInstanceNorm, AdaResBlock, DualStyleGAN
from .stylegan import Generator

BACKBONES = ("toonify", "dualstylegan")


class VToonifyResBlock(nn.Module):
    """Residual block of the encoder: ``(lrelu(conv2(lrelu(conv(x)))) + x) / sqrt(2)``."""

    def __init__(self, fin: int):
        super().__init__()
        self.conv = nn.Conv2d(fin, fin, 3, 1, 1)
        self.conv2 = nn.Conv2d(fin, fin, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv(x), 0.2)
        out = F.leaky_relu(self.conv2(out), 0.2)
        return (out + x) / math.sqrt(2)


class StyleDegreeFusion(nn.Module):
    """The style-degree-aware fusion of VToonify-D (official name ``Fusion``).

    ``label = MLP(d_s)``; ``m_E = tanh(relu(conv2(AdaIN(cat(f_G, |f_G - f_E|), label))))``;
    ``f_out = conv(cat(f_G, f_E * m_E))``.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + skip_channels, out_channels, 3, 1, 1)
        self.norm = AdaptiveInstanceNorm(in_channels + skip_channels, 128)
        self.conv2 = nn.Conv2d(in_channels + skip_channels, 1, 3, 1, 1)
        self.linear = nn.Sequential(nn.Linear(1, 64), nn.LeakyReLU(0.2), nn.Linear(64, 128), nn.LeakyReLU(0.2))

    def forward(self, f_G: torch.Tensor, f_E: torch.Tensor, d_s: float) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.linear[0].weight
        label = self.linear(torch.full((f_G.shape[0], 1), float(d_s), device=w.device, dtype=w.dtype))
        out = torch.cat([f_G, (f_G - f_E).abs()], dim=1)
        m_E = F.relu(self.conv2(self.norm(out, label))).tanh()
        return self.conv(torch.cat([f_G, f_E * m_E], dim=1)), m_E


def _conv_lrelu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2)]


class VToonify(nn.Module):
    """VToonify-T (``backbone='toonify'``) or VToonify-D (``backbone='dualstylegan'``).

    Official constructor defaults; attribute names match the official checkpoints
    (``generator``, ``encoder``, ``fusion_out``, ``fusion_skip``, ``res``).
    """

    def __init__(self, in_size: int = 256, out_size: int = 1024, img_channels: int = 3, style_channels: int = 512,
                 num_mlps: int = 8, channel_multiplier: int = 2, num_res_layers: int = 6,
                 backbone: str = "dualstylegan"):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        self.backbone = backbone
        if backbone == "dualstylegan":
            self.generator = DualStyleGAN(out_size, style_channels, num_mlps, channel_multiplier)
        else:
            self.generator = Generator(out_size, style_channels, num_mlps, channel_multiplier)
        self.in_size = in_size
        channels = self.generator.channels
        encoder_res = [2 ** i for i in range(int(math.log2(in_size)), 4, -1)]  # 256, 128, 64, 32
        self.encoder = nn.ModuleList([nn.Sequential(
            *_conv_lrelu(img_channels + 19, 32, 1), *_conv_lrelu(32, channels[in_size], 1))])
        for res in encoder_res:
            cin = channels[res]
            if res > 32:
                cout = channels[res // 2]
                self.encoder.append(nn.Sequential(*_conv_lrelu(cin, cout, 2), *_conv_lrelu(cout, cout, 1)))
            else:
                self.encoder.append(nn.Sequential(*[VToonifyResBlock(cin) for _ in range(num_res_layers)]))
                self.encoder.append(nn.Conv2d(cin, img_channels, 1, 1, 0))
        self.fusion_out = nn.ModuleList()
        self.fusion_skip = nn.ModuleList()
        for res in encoder_res[::-1]:
            c = channels[res]
            if backbone == "dualstylegan":
                self.fusion_out.append(StyleDegreeFusion(c, c, c))
            else:
                self.fusion_out.append(nn.Conv2d(c * 2, c, 3, 1, 1))
            self.fusion_skip.append(nn.Conv2d(c + 3, 3, 3, 1, 1))
        if backbone == "dualstylegan":
            # ModRes blocks on the encoder's residual features (res.0 exists in the release, unused)
            self.res = nn.ModuleList([AdaResBlock(channels[4])])
            for i in range(3, 6):
                self.res.extend([AdaResBlock(channels[2 ** i], dilation=2 ** (5 - i)) for _ in range(2)])

    # ------------------------------------------------------------------ fast-path switches
    # Each switch is independent, off on the plain path, and equal to it up to float rounding
    # (tests/test_fast_path.py); bench/bench_pipeline.py measures each one against the plain path.

    #: bake: when every frame of a batch has the same style (a clip), modulate and demodulate the
    #: decoder weights once per style and run plain batched convolutions (bias + leaky ReLU and
    #: its gain fused into the weights); ``False`` selects per-sample modulation
    fast: bool = True
    #: run the convolutions in channels-last memory format (much faster on CPU/oneDNN and on
    #: tensor cores)
    channels_last: bool = True
    #: with baked weights, fold each up-sampling layer's FIR blur into its transposed-convolution
    #: kernel and run the ToRGB skip up-sampling as a precomputed depthwise transposed conv.
    #: ``None`` (auto) folds in fp16/bf16, where the extra multiply-adds of the 6x6 kernel cost
    #: less than the separate blur pass; in fp32 on CPU it measured slower
    fold_upsample: Optional[bool] = None
    #: ``torch.compile`` the network body with this mode (``'default'``, ``'max-autotune'``, or on
    #: CUDA ``'reduce-overhead'`` = CUDA graphs for a fixed chunk shape); ``None`` runs eagerly.
    #: If compilation fails (no compiler, unsupported platform) the model warns once and runs eagerly.
    compile_mode: Optional[str] = None
    #: on CPU, keep the forward's large activations in the heap instead of fresh ``mmap``s that the
    #: kernel page-faults and zeroes on every call (:func:`~vtoonify_core.host_memory.reuse_host_memory`;
    #: glibc only, a no-op elsewhere and on other devices)
    reuse_host_memory: bool = True
    #: how many baked styles to keep per model
    bake_cache_size: int = 4

    SWITCHES = ("fast", "channels_last", "fold_upsample", "compile_mode", "reuse_host_memory")

    def set_fast_path(self, enabled: bool = True, **switches) -> "VToonify":
        """Turn every fast-path switch on (their defaults) or off (the plain path), then apply
        ``switches`` by name; returns ``self``."""
        values = {"fast": enabled, "channels_last": enabled, "fold_upsample": None if enabled else False,
                  "compile_mode": None, "reuse_host_memory": enabled}
        unknown = set(switches) - set(self.SWITCHES)
        if unknown:
            raise ValueError(f"unknown fast-path switch(es) {sorted(unknown)}; known: {self.SWITCHES}")
        values.update(switches)
        for name, value in values.items():
            setattr(self, name, value)
        return self

    def folds_upsample(self, dtype: torch.dtype) -> bool:
        """Whether baked weights in ``dtype`` fold the up-sampling blur (resolves ``fold_upsample=None``)."""
        if self.fold_upsample is None:
            return dtype in (torch.float16, torch.bfloat16)
        return bool(self.fold_upsample)

    def clear_bake_cache(self) -> None:
        """Drop the baked decoder weights and compiled bodies (they are not buffers, so ``.to()``
        would not move them)."""
        self.__dict__.pop("_bake_cache", None)
        self.__dict__.pop("_compiled", None)

    def _apply(self, fn, recurse=True):
        # any device/dtype move (``.to``, ``.cuda``, ComfyUI offloading) invalidates the baked weights
        self.clear_bake_cache()
        return super()._apply(fn, recurse)

    def _store_weights(self, memory_format: torch.memory_format) -> None:
        """Store the convolution weights in ``memory_format`` (same values), once per change:
        channels-last convolutions then do not reorder their weights on every call, and the plain
        path keeps the plain layout."""
        first = self.encoder[0][0].weight
        if first.ndim == 4 and not first.is_contiguous(memory_format=memory_format):
            with torch.no_grad():
                for param in self.parameters():
                    if param.ndim == 4:
                        param.data = param.data.contiguous(memory_format=memory_format)
            # baked weights keep their values (and their own layout): the cache stays valid

    def _decoder_layers(self):
        g = self.stylegan()
        for stage, (conv1, conv2, to_rgb) in enumerate(zip(g.convs[6::2], g.convs[7::2], g.to_rgbs[3:])):
            yield 2 * stage + 7, conv1
            yield 2 * stage + 8, conv2
            yield 2 * stage + 9, to_rgb

    def _baked_decoder(self, adastyles: torch.Tensor):
        """Baked weights per decoder layer for a batch that shares one style, else ``None``.

        Cached per (style values, dtype, device, folding, parameter versions), so an in-place
        change of the weights is never served stale.
        """
        first = adastyles[:1]
        if adastyles.shape[0] > 1 and not torch.equal(adastyles, first.expand_as(adastyles)):
            return None
        layers = list(self._decoder_layers())
        dtype = next(self.encoder.parameters()).dtype
        fold = self.folds_upsample(dtype)
        # inference tensors (weights loaded under torch.inference_mode, as ComfyUI runs nodes) have no
        # version counter: their storage identity stands in for it
        versions = tuple((p.data_ptr(), -1) if p.is_inference() else p._version
                         for _, m in layers for p in m.parameters())
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        key = (hash(first.detach().float().cpu().numpy().tobytes()), dtype, first.device, fold, fmt, versions)
        cache = self.__dict__.setdefault("_bake_cache", {})
        if key not in cache:
            with torch.no_grad():
                cache[key] = [tuple(t.contiguous(memory_format=fmt) if t.ndim == 4 else t
                                    for t in m.bake(first[:, i], dtype, fold)) for i, m in layers]
            while len(cache) > self.bake_cache_size:
                cache.pop(next(iter(cache)))
        return cache[key]

    def _body_fn(self) -> Callable:
        """The network body, compiled with :attr:`compile_mode` when set and compilable."""
        mode = self.compile_mode
        if not mode:
            return self._body
        compiled = self.__dict__.setdefault("_compiled", {})
        if mode not in compiled:
            if not hasattr(torch, "compile"):
                warnings.warn("torch.compile is not available in this PyTorch; VToonify runs eagerly.")
                compiled[mode] = self._body
            else:
                compiled[mode] = torch.compile(self._body, mode=mode, dynamic=False)
        return compiled[mode]

    def _run_body(self, *args) -> tuple[torch.Tensor, list]:
        fn = self._body_fn()
        if fn is self._body:
            return fn(*args)
        cudagraphs = self.compile_mode == "reduce-overhead"
        if cudagraphs and hasattr(torch, "compiler") and hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()
        try:
            skip, masks = fn(*args)
        except Exception as exc:  # noqa: BLE001 - compile failures come in many types
            if is_oom(exc):
                raise
            # a genuine error of the inputs fails the eager run too and propagates from there
            result = self._body(*args)
            warnings.warn(f"torch.compile(mode={self.compile_mode!r}) failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); VToonify runs eagerly from now on.")
            self.__dict__.setdefault("_compiled", {})[self.compile_mode] = self._body
            return result
        if cudagraphs:  # CUDA-graph outputs are overwritten by the next replay
            skip, masks = skip.clone(), [m.clone() for m in masks]
        return skip, masks

    # ------------------------------------------------------------------ style codes
    def stylegan(self) -> Generator:
        """The StyleGAN2 generator (inside DualStyleGAN for VToonify-D)."""
        return self.generator.generator if self.backbone == "dualstylegan" else self.generator

    def zplus2wplus(self, zplus: torch.Tensor) -> torch.Tensor:
        """Map z+ codes ``[N, 18, 512]`` to W+ with the generator's mapping network."""
        return self.stylegan().mapping(zplus)

    @property
    def n_latent(self) -> int:
        return self.stylegan().n_latent

    # ------------------------------------------------------------------ forward
    def check_input(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Validate shapes; returns the style expanded to the batch."""
        if x.ndim != 4 or x.shape[1] != 22:
            raise ValueError(f"VToonify input must be [B, 22, H, W] (frame in [-1,1] + 19 parsing maps / 16), "
                             f"got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % 8 or w % 8:
            raise ValueError(f"VToonify needs height and width that are multiples of 8, got {h}x{w}: pad or crop "
                             f"the frames (e.g. to {h - h % 8 or 8}x{w - w % 8 or 8}).")
        if style.ndim == 2:
            style = style.unsqueeze(1).repeat(1, self.n_latent, 1)
        if style.ndim != 3 or style.shape[1:] != (self.n_latent, 512):
            raise ValueError(f"style must be a W+ code [B, {self.n_latent}, 512], got {tuple(style.shape)}")
        if style.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"style batch {style.shape[0]} does not match frame batch {x.shape[0]} (use 1 or B)")
        return style.expand(x.shape[0], -1, -1)

    def forward(self, x: torch.Tensor, style: torch.Tensor, d_s: Union[float, None] = 0.5,
                return_mask: bool = False):
        """Toonify frames.

        Args:
            x: ``[B, 22, H, W]`` = ``cat(frame in [-1, 1], parsing logits / 16)``, H and W multiples of 8.
            style: W+ code ``[B or 1, 18, 512]`` (VToonify-D: the content code with layers 0-6 from
                the exemplar, or the exemplar code for colour transfer).
            d_s: style degree in [0, 1] (VToonify-D); accepted and ignored by VToonify-T.
            return_mask: also return the four fusion masks ``m_E`` (VToonify-D).

        Returns:
            ``[B, 3, 4H, 4W]``, unclamped (clamp to [-1, 1] for display); with ``return_mask``,
            ``(image, [m_E at H/8, H/4, H/2, H])``.
        """
        style = self.check_input(x, style)
        d_s = 1.0 if d_s is None else float(d_s)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self._store_weights(torch.channels_last if self.channels_last else torch.contiguous_format)
        if self.backbone == "dualstylegan":
            resstyles = self.generator.color_transform(style)
            adastyles = self.generator.structure_transform(style)
        else:
            resstyles, adastyles = None, style
        baked = self._baked_decoder(adastyles) if self.fast else None
        with reuse_host_memory(self.reuse_host_memory and x.device.type == "cpu"):
            skip, masks = self._run_body(x, resstyles, adastyles, baked, d_s)
        if return_mask:
            return skip, masks
        return skip

    def _body(self, x: torch.Tensor, resstyles: Optional[torch.Tensor], adastyles: torch.Tensor,
              baked: Optional[list], d_s: float) -> tuple[torch.Tensor, list]:
        """Encoder, fusion and decoder on prepared inputs; ``baked`` from :meth:`_baked_decoder`
        replaces the per-sample modulation. Tensors in, tensors out (what ``torch.compile`` traces)."""
        dual = self.backbone == "dualstylegan"
        feat = x
        features = []
        for block in self.encoder[:-2]:
            feat = block(feat)
            features.append(feat)
        features = features[::-1]  # H/8, H/4, H/2, H
        for ii, block in enumerate(self.encoder[-2]):
            feat = block(feat)
            if dual:
                feat = self.res[ii + 1](feat, resstyles[:, ii + 1], d_s)
        out = feat
        skip = self.encoder[-1](feat)

        g = self.stylegan()
        masks = []
        for stage, (conv1, conv2, to_rgb) in enumerate(zip(g.convs[6::2], g.convs[7::2], g.to_rgbs[3:])):
            if stage < len(features):
                f_E = features[stage]
                if dual:
                    out, m_E = self.fusion_out[stage](out, f_E, d_s)
                    skip = self.fusion_skip[stage](torch.cat([skip, f_E * m_E], dim=1))
                    masks.append(m_E.contiguous())
                else:
                    out = self.fusion_out[stage](torch.cat([out, f_E], dim=1))
                    skip = self.fusion_skip[stage](torch.cat([skip, f_E], dim=1))
            if baked is not None:
                out = conv1.forward_baked(out, baked[3 * stage])
                out = conv2.forward_baked(out, baked[3 * stage + 1])
                skip = to_rgb.forward_baked(out, baked[3 * stage + 2], skip)
                continue
            layer = 2 * stage + 8  # style vectors 8,10,...: conv1 uses layer-1, conv2 layer, to_rgb layer+1
            out = conv1(out, adastyles[:, layer - 1])
            out = conv2(out, adastyles[:, layer])
            skip = to_rgb(out, adastyles[:, layer + 1], skip)
        return skip.contiguous(), masks


def build_vtoonify(kind: str) -> VToonify:
    """An empty VToonify network of a checkpoint kind (``'vtoonify_t'`` or ``'vtoonify_d'``)."""
    return VToonify(backbone="dualstylegan" if kind == "vtoonify_d" else "toonify")


def load_vtoonify(path, device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32) -> VToonify:
    """Load an official VToonify-T/-D checkpoint (``.pt`` with ``g_ema``, or converted ``.safetensors``).

    The backbone is detected from the keys. Returns the network in eval mode on ``device`` in
    ``dtype``; call it as ``m(x, style, d_s)`` and ``m.zplus2wplus(z)``.

    Raises:
        CheckpointError: missing, corrupt or wrong-kind file, or keys/shapes that differ from the
            official release.
    """
    ckpt = read_checkpoint(path)
    expect_kind(ckpt, ("vtoonify_t", "vtoonify_d"))
    check_finite(ckpt.tensors, ckpt.path)
    with torch.device("meta"):
        model = build_vtoonify(ckpt.kind)
    load_into(model, ckpt.tensors, ckpt.path, f"{ckpt.kind} network")
    model.kind = ckpt.kind
    model.source = str(ckpt.path)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
