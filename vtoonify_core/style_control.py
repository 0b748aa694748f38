"""Style control beyond the official scripts: exemplars from any image, few-shot averages, mixing,
interpolation and keyframed styles over a clip.

Everything here is W+ arithmetic on :class:`~vtoonify_core.pipeline.StyleCode` (``[1, 18, 512]``)
plus one optimisation through the checkpoint's own DualStyleGAN generator:

* **Exemplar from any image** (VToonify-D): a reference portrait (photo or artwork) is aligned
  as the official code aligns faces, encoded with pSp into a z+ code, and that code is used as the
  *extrinsic* (exemplar) style code, exactly where the official release uses a row of
  ``exstyle_code.npy``. :func:`refine_exemplar` optionally improves it by gradient descent so that
  ``DualStyleGAN.synthesize(content = the reference's own W+, exstyle = code, interp_weights = 1)``
  reproduces the aligned reference (a pixel L2 or L1 loss on a down-sampled output). The official
  exemplar codes were optimised with LPIPS and identity losses (DualStyleGAN's destylization);
  their VGG/ArcFace weights are not available offline, so only pixel losses are offered here.
* **Few-shot**: several references give the mean of their W+ codes (:func:`average_codes`).
* **Mixing** (:func:`mix_styles`): ``(1 - blend) * A + blend * B`` on a group of W+ layers, the
  other layers kept from ``A``. What the layers do is listed by :func:`layer_roles`:

  ====== =====================================================================================
  layer  role in VToonify
  ====== =====================================================================================
  0      DualStyleGAN's 4x4 stage: not used by VToonify (nor by VToonify-T)
  1-6    *structure* (VToonify-D): through the colour transform ``T_c`` they condition the ModRes
         blocks on the encoder features, scaled by the style degree (DualStyleGAN: 8x8, 16x16
         and 32x32 stages). VToonify-T ignores them.
  7-17   *colour and texture*: they modulate the decoder (VToonify-D through the structure
         transforms ``T_s``): stage ``s = 0..4`` (output ``H/4 * 2**s`` for an ``H`` x ``W`` input)
         uses layer ``2s+7`` (up-sampling conv), ``2s+8`` (conv) and ``2s+9`` (to-RGB).
  ====== =====================================================================================

  The official rule builds a VToonify-D code as ``content[:, 7:]`` (the face) with
  ``exemplar[:, :7]``; colour transfer takes all 18 layers from the exemplar.
* **Keyframes** (:class:`StyleSchedule`): styles and style degrees at chosen frames, linearly
  interpolated in W+ and in ``d_s`` in between and held before the first / after the last
  keyframe. :func:`~vtoonify_core.pipeline.stylize` and
  :func:`~vtoonify_core.pipeline.stylize_clip` accept a schedule wherever they take a style; frames
  of equal style keep the baked fast path, varying styles go through VToonify's per-sample path,
  and frames are grouped by equal ``d_s`` (VToonify takes one scalar ``d_s`` per call: it feeds the
  fusion modules' label MLP and scales the ModRes residuals).

Pure PyTorch/numpy; no ComfyUI import.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .pipeline import (ALIGNED_SIZE, BACKBONE_NAMES, STRUCTURE_LAYERS, InputError, StyleCode, VToonifyModel,
                       encode_face, prepare_style_image)

logger = logging.getLogger("vtoonify")

Progress = Callable[[int, int], None]

#: Number of W+ layers of the 1024 px StyleGAN2 behind VToonify.
N_LAYERS = 18
#: Named layer groups (first, last), inclusive.
LAYER_GROUPS = {"all": (0, N_LAYERS - 1), "structure": (0, STRUCTURE_LAYERS - 1),
                "colour": (STRUCTURE_LAYERS, N_LAYERS - 1), "color": (STRUCTURE_LAYERS, N_LAYERS - 1)}
#: Resolutions at which the refinement may stop the DualStyleGAN synthesis.
REFINE_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)
#: Pixel losses of the refinement.
LOSSES = ("l2", "l1")


# ----------------------------------------------------------------------------------------------
# layers


def layer_roles() -> list[str]:
    """What each of the 18 W+ layers does in VToonify (index = layer); see the module docstring."""
    roles = ["DualStyleGAN 4x4 stage (not used by VToonify)"]
    for k in range(1, STRUCTURE_LAYERS):
        size = 2 ** (3 + (k - 1) // 2)
        roles.append(f"structure: VToonify-D ModRes {k} (DualStyleGAN {size}x{size} stage); ignored by VToonify-T")
    for k in range(STRUCTURE_LAYERS, N_LAYERS):
        parts = []
        if k % 2 == 1 and k <= 15:
            parts.append(f"up-sampling conv of decoder stage {(k - 7) // 2}")
        if k % 2 == 0:
            parts.append(f"conv of decoder stage {(k - 8) // 2}")
        if k % 2 == 1 and k >= 9:
            parts.append(f"to-RGB of decoder stage {(k - 9) // 2}")
        roles.append("colour/texture: " + " and ".join(parts))
    return roles


def resolve_layers(layers: Union[str, Sequence[int], tuple[int, int]] = "all") -> list[int]:
    """W+ layer indices from a group name (``'all'``, ``'structure'`` = 0-6, ``'colour'`` = 7-17),
    a range string ``'3-9'`` (inclusive) or ``'3'``, or a sequence of indices.

    Raises:
        InputError: unknown names, indices outside 0..17, or an empty selection.
    """
    if isinstance(layers, str):
        text = layers.strip().lower()
        if text in LAYER_GROUPS:
            first, last = LAYER_GROUPS[text]
            return list(range(first, last + 1))
        m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", text)
        if not m:
            raise InputError("layers", f"unknown layer selection {layers!r}; use all, structure (0-6), colour "
                                       f"(7-17) or a range such as '3-9'.")
        first, last = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if first > last:
            raise InputError("layers", f"the range {layers!r} is empty: the first layer must not exceed the last.")
        idx = list(range(first, last + 1))
    else:
        idx = []
        for v in layers:
            if isinstance(v, bool) or int(v) != v:
                raise InputError("layers", f"layer indices must be whole numbers, got {v!r}.")
            if int(v) not in idx:
                idx.append(int(v))
    bad = [i for i in idx if not 0 <= i < N_LAYERS]
    if bad:
        raise InputError("layers", f"W+ layers are 0..{N_LAYERS - 1}, got {bad}.")
    if not idx:
        raise InputError("layers", "no layer selected.")
    return sorted(idx)


def _layers_label(idx: Sequence[int]) -> str:
    for name in ("all", "structure", "colour"):
        first, last = LAYER_GROUPS[name]
        if list(idx) == list(range(first, last + 1)):
            return f"{name} layers {first}-{last}"
    if list(idx) == list(range(idx[0], idx[-1] + 1)):
        return f"layers {idx[0]}-{idx[-1]}"
    return "layers " + ",".join(map(str, idx))


# ----------------------------------------------------------------------------------------------
# mixing and averaging


def _check_code(style, input_name: str) -> StyleCode:
    if isinstance(style, StyleSchedule):
        raise InputError(input_name, "this is a keyframed style (Style Keyframes); connect a single style code.")
    if not isinstance(style, StyleCode):
        raise InputError(input_name, f"expected a VToonify style code, got {type(style).__name__}.")
    w = style.wplus
    if w.ndim != 3 or tuple(w.shape) != (1, N_LAYERS, 512):
        raise InputError(input_name, f"the W+ code must be [1, {N_LAYERS}, 512], got {tuple(w.shape)}.")
    if not bool(torch.isfinite(w).all()):
        raise InputError(input_name, "the W+ code contains NaN or infinite values.")
    return style


def _check_fraction(value: float, input_name: str) -> float:
    v = float(value)
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise InputError(input_name, f"must be between 0 and 1, got {value}.")
    return v


def mix_styles(a: StyleCode, b: StyleCode, blend: float = 0.5,
               layers: Union[str, Sequence[int]] = "all") -> StyleCode:
    """Blend two style codes on a group of W+ layers: ``(1 - blend) * A + blend * B`` there, ``A`` elsewhere.

    ``blend = 0`` returns ``A`` itself; ``blend = 1`` on all layers returns ``B`` itself; on a group
    it copies those layers of ``B`` exactly. With ``layers='all'`` this is linear interpolation
    between the two codes. Both must be for the same backbone (VToonify-T or -D).

    Raises:
        InputError: not style codes, different backbones, blend outside [0, 1], bad layers.
    """
    a, b = _check_code(a, "style_a"), _check_code(b, "style_b")
    if a.backbone != b.backbone:
        raise InputError("style_b", f"style_a is for {BACKBONE_NAMES.get(a.backbone, a.backbone)} but style_b for "
                                    f"{BACKBONE_NAMES.get(b.backbone, b.backbone)}: mix codes made with the same model.")
    t = _check_fraction(blend, "blend")
    idx = resolve_layers(layers)
    if t == 0.0:
        return a
    if t == 1.0 and len(idx) == N_LAYERS:
        return b
    w = a.wplus.detach().float().clone()
    wb = b.wplus.detach().float().to(w.device)
    w[:, idx] = wb[:, idx] if t == 1.0 else torch.lerp(w[:, idx], wb[:, idx], t)
    same = a.style_id == b.style_id and a.style_name == b.style_name
    name = a.style_name if same else f"mix of {_style_label(a)} and {_style_label(b)} ({t:g} on {_layers_label(idx)})"
    return StyleCode(w, a.backbone, a.style_id if same else None, name,
                     a.color_transfer if a.color_transfer == b.color_transfer else False)


def _style_label(s: StyleCode) -> str:
    if s.style_name:
        return str(s.style_name) if s.style_id is None else f"{s.style_id} ({s.style_name})"
    return "face code"


def average_codes(codes: Sequence[Tensor], weights: Optional[Sequence[float]] = None) -> Tensor:
    """(Weighted) mean of W+ codes ``[1, 18, 512]``; one code is returned unchanged (a copy).

    Averaging is done in W+ (where StyleGAN's codes combine linearly), not in z+.

    Raises:
        InputError: no codes, mismatched shapes, or bad weights.
    """
    if len(codes) == 0:
        raise InputError("reference", "no code to average: give at least one reference image.")
    shape = tuple(codes[0].shape)
    for c in codes:
        if tuple(c.shape) != shape:
            raise InputError("reference", f"codes to average must all be {shape}, got {tuple(c.shape)}.")
    if len(codes) == 1:
        return codes[0].detach().float().clone()
    stack = torch.stack([c.detach().float() for c in codes])
    if weights is None:
        return stack.mean(dim=0)
    if len(weights) != len(codes):
        raise InputError("weights", f"{len(weights)} weights for {len(codes)} codes.")
    wt = torch.tensor([float(x) for x in weights], dtype=torch.float32)
    if not bool(torch.isfinite(wt).all()) or bool((wt < 0).any()) or float(wt.sum()) <= 0:
        raise InputError("weights", "weights must be finite, >= 0 and not all 0.")
    wt = (wt / wt.sum()).reshape(-1, *([1] * len(shape)))
    return (stack * wt).sum(dim=0)


def average_styles(styles: Sequence[StyleCode], weights: Optional[Sequence[float]] = None) -> StyleCode:
    """The mean of several style codes of one backbone (see :func:`average_codes`)."""
    if len(styles) == 0:
        raise InputError("styles", "no style to average.")
    styles = [_check_code(s, "styles") for s in styles]
    if len({s.backbone for s in styles}) > 1:
        raise InputError("styles", "all style codes must be made with the same kind of model.")
    if len(styles) == 1:
        return styles[0]
    w = average_codes([s.wplus for s in styles], weights)
    return StyleCode(w, styles[0].backbone, None, f"average of {len(styles)} styles",
                     all(s.color_transfer for s in styles))


# ----------------------------------------------------------------------------------------------
# keyframes


@dataclass(frozen=True, eq=False)
class Keyframe:
    """A style (and optionally a style degree) at a frame of the clip.

    ``degree`` ``None`` means: the style degree the stylization is given (Stylize Frames'
    ``style_degree``).
    """

    frame: int
    style: StyleCode
    degree: Optional[float] = None


@dataclass(frozen=True, eq=False)
class StyleSchedule:
    """Styles and style degrees over a clip, from keyframes (sorted by frame, distinct frames).

    Frame ``f`` between keyframes ``k0`` and ``k1`` gets ``lerp(k0.wplus, k1.wplus, t)`` and
    ``d0 + t * (d1 - d0)`` with ``t = (f - k0.frame) / (k1.frame - k0.frame)``; frames before the
    first keyframe take the first, frames after the last take the last. At a keyframe the code is
    the keyframe's own, bit for bit.
    """

    keyframes: tuple[Keyframe, ...]

    def __post_init__(self):
        kfs = tuple(self.keyframes)
        if not kfs:
            raise InputError("keyframes", "a style schedule needs at least one keyframe.")
        frames = [k.frame for k in kfs]
        if frames != sorted(set(frames)):
            raise InputError("keyframes", f"keyframe frames must be distinct and increasing, got {frames}.")
        for k in kfs:
            if isinstance(k.frame, bool) or not isinstance(k.frame, (int, np.integer)) or k.frame < 0:
                raise InputError("keyframes", f"keyframe frames must be whole numbers >= 0, got {k.frame!r}.")
            _check_code(k.style, "keyframes")
            if k.degree is not None:
                _check_fraction(k.degree, "keyframes")
        if len({k.style.backbone for k in kfs}) > 1:
            raise InputError("keyframes", "all keyframe styles must be made with the same kind of model "
                                          "(VToonify-T or VToonify-D).")
        object.__setattr__(self, "keyframes", kfs)

    @property
    def backbone(self) -> str:
        """The backbone of every keyframe style."""
        return self.keyframes[0].style.backbone

    @property
    def is_constant(self) -> bool:
        """True when every frame gets the same style and degree."""
        k0 = self.keyframes[0]
        return all(torch.equal(k.style.wplus, k0.style.wplus) and k.degree == k0.degree for k in self.keyframes[1:])

    def _segment(self, frame: int) -> tuple[Keyframe, Keyframe, float]:
        kfs = self.keyframes
        if frame <= kfs[0].frame:
            return kfs[0], kfs[0], 0.0
        if frame >= kfs[-1].frame:
            return kfs[-1], kfs[-1], 0.0
        for k0, k1 in zip(kfs, kfs[1:]):
            if k0.frame <= frame < k1.frame:
                return k0, k1, (frame - k0.frame) / (k1.frame - k0.frame)
        raise AssertionError("unreachable")  # pragma: no cover

    def wplus_at(self, frame: int) -> Tensor:
        """The W+ code of ``frame``, ``[1, 18, 512]`` float32."""
        k0, k1, t = self._segment(int(frame))
        if t == 0.0:
            return k0.style.wplus.float()
        return torch.lerp(k0.style.wplus.float(), k1.style.wplus.float().to(k0.style.wplus.device), t)

    def degree_at(self, frame: int, default: float) -> float:
        """The style degree of ``frame``; keyframes without one use ``default``."""
        k0, k1, t = self._segment(int(frame))
        d0 = float(default) if k0.degree is None else float(k0.degree)
        if t == 0.0:
            return d0
        d1 = float(default) if k1.degree is None else float(k1.degree)
        return d0 + t * (d1 - d0)

    def codes(self, start: int, stop: int, default_degree: float) -> tuple[Tensor, list[float]]:
        """W+ codes ``[stop - start, 18, 512]`` and style degrees of frames ``start..stop-1``."""
        frames = range(int(start), int(stop))
        return (torch.cat([self.wplus_at(f) for f in frames]) if len(frames) else torch.zeros(0, N_LAYERS, 512),
                [self.degree_at(f, default_degree) for f in frames])

    def describe(self) -> str:
        """One line per keyframe."""
        kind = BACKBONE_NAMES.get(self.backbone, self.backbone)
        lines = [f"{kind} style keyframes ({len(self.keyframes)}; linear in W+ and style degree between them, "
                 f"held before the first and after the last):"]
        for k in self.keyframes:
            deg = "the node's style_degree" if k.degree is None else f"style degree {k.degree:g}"
            lines.append(f"  frame {k.frame}: {k.style.describe()}, {deg}")
        return "\n".join(lines)


_ENTRY = re.compile(r"^(\d+)\s*:\s*([A-Za-z])\s*(?:@\s*([-+0-9.eE]+))?$")


def parse_keyframes(spec: str, styles: Mapping[str, Optional[StyleCode]]) -> StyleSchedule:
    """A schedule from a text such as ``"0:A@0.0, 120:B@1.0"``.

    Entries are separated by commas, semicolons or new lines; each is ``FRAME:LETTER`` with an
    optional ``@DEGREE`` (0..1; without it the stylization's own style degree is used). ``LETTER``
    names a style of ``styles`` (e.g. ``{'A': code, 'B': code}``, case-insensitive).

    Raises:
        InputError: syntax errors (with the entry), unknown or unconnected letters, repeated frames,
            degrees outside [0, 1].
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("keyframes", "empty: write entries such as '0:A@0.0, 120:B@1.0'.")
    named = {str(k).upper(): v for k, v in styles.items()}
    out: dict[int, Keyframe] = {}
    for raw in re.split(r"[,;\n]+", spec):
        entry = raw.strip()
        if not entry:
            continue
        m = _ENTRY.match(entry)
        if not m:
            raise InputError("keyframes", f"cannot read {entry!r}: write FRAME:LETTER or FRAME:LETTER@DEGREE, "
                                          f"e.g. '0:A@0.0, 120:B@1.0'.")
        frame, letter, degree = int(m.group(1)), m.group(2).upper(), m.group(3)
        if letter not in named:
            raise InputError("keyframes", f"{entry!r} names style {letter}; the styles are "
                                          f"{', '.join(sorted(named))}.")
        style = named[letter]
        if style is None:
            raise InputError("keyframes", f"{entry!r} uses style {letter}, but style_{letter.lower()} is not "
                                          f"connected.")
        deg = None
        if degree is not None:
            try:
                deg = float(degree)
            except ValueError:
                raise InputError("keyframes", f"cannot read the degree of {entry!r}.") from None
            if not math.isfinite(deg) or not 0.0 <= deg <= 1.0:
                raise InputError("keyframes", f"the style degree of {entry!r} must be between 0 and 1.")
        if frame in out:
            raise InputError("keyframes", f"frame {frame} has two keyframes.")
        out[frame] = Keyframe(frame, _check_code(style, f"style_{letter.lower()}"), deg)
    if not out:
        raise InputError("keyframes", "no keyframe: write entries such as '0:A@0.0, 120:B@1.0'.")
    return StyleSchedule(tuple(out[f] for f in sorted(out)))


def forward_scheduled(generator: torch.nn.Module, inputs: Tensor, schedule: StyleSchedule, start: int,
                      default_degree: float) -> Tensor:
    """Run VToonify on a chunk of frames ``start..start+B-1`` with their scheduled styles and degrees.

    Consecutive frames with equal degree form one call (VToonify takes a scalar ``d_s``; VToonify-T
    ignores it, so it always makes one call). Within a call every frame has its own W+ code; when
    they are all equal the generator's baked fast path applies.

    Args:
        generator: the VToonify network.
        inputs: ``[B, 22, H, W]`` on the network's device and dtype.
        schedule: the style schedule.
        start: clip index of the chunk's first frame.
        default_degree: degree for keyframes without one.

    Returns:
        ``[B, 3, 4H, 4W]``, unclamped.
    """
    n = inputs.shape[0]
    wplus, degrees = schedule.codes(start, start + n, default_degree)
    wplus = wplus.to(inputs.device, inputs.dtype)
    if generator.backbone != "dualstylegan":
        return generator(inputs, wplus, d_s=degrees[0] if degrees else default_degree)
    outs, i = [], 0
    while i < n:
        j = i + 1
        while j < n and degrees[j] == degrees[i]:
            j += 1
        outs.append(generator(inputs[i:j], wplus[i:j], d_s=degrees[i]))
        i = j
    return outs[0] if len(outs) == 1 else torch.cat(outs)


# ----------------------------------------------------------------------------------------------
# exemplar codes from any image


@dataclass(frozen=True, eq=False)
class ExemplarCode:
    """An extrinsic (exemplar) style code made from reference images.

    Attributes:
        wplus: ``[1, 18, 512]`` float32 CPU: the exemplar code in W+ (what the official pipeline
            computes as ``zplus2wplus(exstyle[style_id])``).
        zplus: ``[1, 18, 512]`` z+ code it maps from (``None`` for an average of several).
        references: how many reference images it was made from.
        losses: ``(before, after)`` refinement losses (averaged over the references), empty
            without refinement.
    """

    wplus: Tensor
    zplus: Optional[Tensor] = None
    references: int = 1
    losses: tuple[float, ...] = ()


@dataclass(frozen=True, eq=False)
class Refinement:
    """Result of :func:`refine_exemplar`: the best code found and the loss at every step.

    ``losses[0]`` is the loss of the initial code, ``losses[i]`` after ``i`` steps; ``best`` is the
    index of the returned code (the lowest loss).
    """

    zplus: Tensor
    wplus: Tensor
    losses: tuple[float, ...]
    best: int


def _require_dual(model: VToonifyModel, what: str) -> None:
    if model.backbone != "dualstylegan":
        raise InputError("vtoonify_model", f"{what} needs a VToonify-D checkpoint (vtoonify_d_<style>/...): "
                                           f"VToonify-T has no extrinsic style path.")


def _aligned_tensor(aligned: Union[np.ndarray, Tensor]) -> Tensor:
    if isinstance(aligned, np.ndarray):
        if aligned.shape != (ALIGNED_SIZE, ALIGNED_SIZE, 3) or aligned.dtype != np.uint8:
            raise InputError("reference", f"the aligned face must be 256x256x3 uint8, got {aligned.shape} "
                                          f"{aligned.dtype}.")
        return torch.from_numpy(np.ascontiguousarray(aligned)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    if aligned.ndim != 4 or aligned.shape[:2] != (1, 3):
        raise InputError("reference", f"the aligned face must be [1, 3, H, W] in [-1, 1], got {tuple(aligned.shape)}.")
    return aligned.float()


def encode_zplus(model: VToonifyModel, aligned: Union[np.ndarray, Tensor]) -> Tensor:
    """pSp z+ code ``[1, 18, 512]`` (float32 CPU) of an FFHQ-aligned face (256x256 uint8 or tensor in [-1, 1])."""
    if model.encoder is None:
        raise InputError("vtoonify_model", "no pSp style encoder is loaded: pick encoder.pt in Load VToonify Model.")
    x = _aligned_tensor(aligned)
    with torch.inference_mode():
        return model.encoder(x.to(model.device, model.dtype)).float().cpu()


def _dual_generator(model: VToonifyModel):
    return model.generator.generator


def _grad_tensors(module: torch.nn.Module, device: torch.device) -> dict[str, Tensor]:
    """float32 copies of the parameters/buffers that autograd cannot use as they are (inference
    tensors, as ComfyUI creates them, or half precision), for :func:`torch.func.functional_call`."""
    out = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        same_device = t.device.type == device.type and (device.index is None or t.device.index == device.index)
        if t.is_floating_point() and (t.is_inference() or t.dtype != torch.float32 or not same_device):
            out[name] = t.detach().to(device=device, dtype=torch.float32).clone()
    return out


def _downsample(x: Tensor, size: int) -> Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if x.shape[-1] > size:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def refine_exemplar(model: VToonifyModel, aligned: Union[np.ndarray, Tensor], zplus: Optional[Tensor] = None,
                    content_wplus: Optional[Tensor] = None, *, steps: int = 100, lr: float = 0.05,
                    size: int = 256, loss_size: Optional[int] = None, loss: str = "l2", latent_weight: float = 0.0,
                    interp_weights: Union[float, Sequence[float]] = 1.0, progress: Optional[Progress] = None,
                    check_interrupt: Optional[Callable[[], None]] = None) -> Refinement:
    """Optimise an exemplar z+ code so that DualStyleGAN reproduces the aligned reference.

    Minimises ``pixel_loss(down(DualStyleGAN.synthesize(content, mapping(z), interp_weights,
    max_size=size)), down(reference)) + latent_weight * mean((z - z_0)^2)`` over ``z`` with Adam,
    where ``content`` is the reference's own W+ (its pSp code: the intrinsic face) and ``down``
    averages to ``loss_size``. The checkpoint's DualStyleGAN (frozen) runs without noise on the
    model's device in float32; its weights are copied when autograd cannot use them (half
    precision, or inference tensors as ComfyUI makes them), the shared model is never modified.

    Args:
        model: a VToonify-D bundle (with the pSp encoder unless ``zplus`` and ``content_wplus`` are given).
        aligned: the FFHQ-aligned reference (256x256x3 uint8, or ``[1, 3, H, W]`` in [-1, 1]).
        zplus: initial z+ ``[1, 18, 512]`` (default: pSp of ``aligned``).
        content_wplus: intrinsic W+ ``[1, 18, 512]`` (default: ``mapping(pSp(aligned))``).
        steps: optimisation steps (0 only evaluates the loss).
        lr: Adam learning rate on z+.
        size: resolution where the synthesis stops (power of two, 16..1024; the full 1024 px
            forward is heavy on a CPU: 64-256 is a good trade-off there).
        loss_size: resolution of the loss (default ``min(size, 256)``).
        loss: ``'l2'`` (mean squared error) or ``'l1'``.
        latent_weight: weight of the pull towards the initial code (0 = none).
        interp_weights: DualStyleGAN's per-layer weights of the extrinsic path (1 = full style).
        progress: ``progress(step, steps)`` after each step.
        check_interrupt: called before each step; raise to stop.

    Returns:
        :class:`Refinement` with the lowest-loss code (z+ and W+, float32 CPU) and the loss history.

    Raises:
        InputError: VToonify-T model, bad sizes, steps or loss name.
    """
    _require_dual(model, "Refining an exemplar code")
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise InputError("refine_steps", f"must be a whole number >= 0, got {steps}.")
    if int(size) not in REFINE_SIZES:
        raise InputError("refine_resolution", f"must be one of {', '.join(map(str, REFINE_SIZES))}, got {size}.")
    loss_size = min(int(size), 256) if loss_size is None else int(loss_size)
    if loss_size < 4:
        raise InputError("loss_size", f"must be at least 4, got {loss_size}.")
    if loss not in LOSSES:
        raise InputError("loss", f"unknown loss {loss!r}; use {' or '.join(LOSSES)}.")
    if not math.isfinite(float(lr)) or float(lr) <= 0:
        raise InputError("learning_rate", f"must be > 0, got {lr}.")
    steps, size = int(steps), int(size)
    target = _aligned_tensor(aligned)
    if zplus is None or content_wplus is None:
        z_face = encode_zplus(model, aligned)
        zplus = z_face if zplus is None else zplus
        if content_wplus is None:
            with torch.inference_mode():
                content_wplus = model.generator.zplus2wplus(z_face.to(model.device, model.dtype)).float().cpu()
    dsg = _dual_generator(model)
    device = model.device
    pixel = F.mse_loss if loss == "l2" else F.l1_loss
    with torch.inference_mode(False), torch.enable_grad():
        tensors = _grad_tensors(dsg, device)
        tgt = _downsample(target.detach().clone().to(device), loss_size)
        content = content_wplus.detach().float().clone().to(device)
        z0 = zplus.detach().float().clone().to(device)
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=float(lr), betas=(0.9, 0.999))

        def objective() -> Tensor:
            img = torch.func.functional_call(dsg, tensors, (content, z), {
                "exstyle_space": "z+", "interp_weights": interp_weights, "max_size": size})
            value = pixel(_downsample(img.float(), loss_size), tgt)
            if latent_weight:
                value = value + float(latent_weight) * (z - z0).square().mean()
            return value

        losses: list[float] = []
        best, best_z, best_i = math.inf, z0.clone(), 0
        for step in range(steps + 1):
            if step < steps and check_interrupt is not None:
                check_interrupt()
            opt.zero_grad(set_to_none=True)
            value = objective()
            v = float(value.detach())
            if not math.isfinite(v):
                raise FloatingPointError(f"the refinement loss became {v} at step {step}: lower the learning rate.")
            losses.append(v)
            if v < best:
                best, best_z, best_i = v, z.detach().clone(), step
            if step == steps:
                break
            value.backward()
            opt.step()
            if progress is not None:
                progress(step + 1, steps)
        best_z = best_z.detach()
    with torch.inference_mode():
        w = model.generator.zplus2wplus(best_z.to(model.device, model.dtype)).float().cpu()
    return Refinement(best_z.float().cpu(), w, tuple(losses), best_i)


def synthesize_exemplar(model: VToonifyModel, content_wplus: Tensor, exemplar_wplus: Tensor, *, size: int = 256,
                        interp_weights: Union[float, Sequence[float]] = 1.0) -> Tensor:
    """DualStyleGAN image of an intrinsic code with an exemplar code (both W+ ``[1, 18, 512]``),
    stopped at ``size``: ``[1, 3, size, size]`` float32 CPU in [-1, 1] (a preview of the exemplar)."""
    _require_dual(model, "Rendering an exemplar")
    if int(size) not in REFINE_SIZES:
        raise InputError("refine_resolution", f"must be one of {', '.join(map(str, REFINE_SIZES))}, got {size}.")
    dsg = _dual_generator(model)
    with torch.inference_mode():
        img = dsg.synthesize(content_wplus.to(model.device), exemplar_wplus.to(model.device),
                             interp_weights=interp_weights, max_size=int(size))
        return img.float().clamp(-1.0, 1.0).cpu()


def exemplar_from_aligned(model: VToonifyModel, aligned: Union[np.ndarray, Tensor], *, refine_steps: int = 0,
                          lr: float = 0.05, size: int = 256, loss: str = "l2", latent_weight: float = 0.0,
                          progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None
                          ) -> tuple[ExemplarCode, Tensor]:
    """Exemplar code of one aligned reference: its pSp z+ as the extrinsic code, optionally refined.

    Returns:
        ``(exemplar, content_wplus)``: the :class:`ExemplarCode` and the reference's own W+
        (its intrinsic code, for previews).
    """
    _require_dual(model, "An exemplar style from an image")
    z = encode_zplus(model, aligned)
    with torch.inference_mode():
        content = model.generator.zplus2wplus(z.to(model.device, model.dtype)).float().cpu()
    if refine_steps:
        r = refine_exemplar(model, aligned, z, content, steps=refine_steps, lr=lr, size=size, loss=loss,
                            latent_weight=latent_weight, progress=progress, check_interrupt=check_interrupt)
        return ExemplarCode(r.wplus, r.zplus, 1, (r.losses[0], r.losses[r.best])), content
    return ExemplarCode(content.clone(), z, 1, ()), content


def exemplar_from_images(model: VToonifyModel, images: Sequence[np.ndarray], *, refine_steps: int = 0,
                         lr: float = 0.05, size: int = 256, loss: str = "l2", latent_weight: float = 0.0,
                         weights: Optional[Sequence[float]] = None, backend="dlib",
                         progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None
                         ) -> tuple[ExemplarCode, list[np.ndarray], list[Tensor]]:
    """Exemplar code from one or several reference portraits (uint8 RGB ``(H, W, 3)``).

    Each reference is detected, cropped and aligned as the official code aligns faces
    (:func:`~vtoonify_core.pipeline.prepare_style_image`), encoded, optionally refined
    (:func:`refine_exemplar`); several references give the (weighted) mean W+ (few-shot).

    Returns:
        ``(exemplar, aligned crops, intrinsic W+ of each reference)``.

    Raises:
        NoFaceError: a reference without a face (the message names which).
        InputError: VToonify-T model, no encoder, bad settings.
    """
    from .faces import NoFaceError

    _require_dual(model, "An exemplar style from an image")
    if model.encoder is None:
        raise InputError("vtoonify_model", "no pSp style encoder is loaded: pick encoder.pt in Load VToonify Model.")
    if len(images) == 0:
        raise InputError("reference", "no reference image.")
    n = len(images)
    steps = max(1, int(refine_steps))
    codes, zs, aligned_all, contents, first_losses, last_losses = [], [], [], [], [], []
    for i, img in enumerate(images):
        if check_interrupt is not None:
            check_interrupt()
        try:
            aligned, _ = prepare_style_image(img, backend=backend)
        except NoFaceError as exc:
            raise NoFaceError(f"reference image {i + 1} of {n}: {exc}") from None
        prog = None if progress is None else (lambda d, t, i=i: progress(i * steps + d, n * steps))
        ex, content = exemplar_from_aligned(model, aligned, refine_steps=refine_steps, lr=lr, size=size, loss=loss,
                                            latent_weight=latent_weight, progress=prog,
                                            check_interrupt=check_interrupt)
        if progress is not None and not refine_steps:
            progress((i + 1) * steps, n * steps)
        codes.append(ex.wplus)
        zs.append(ex.zplus)
        aligned_all.append(aligned)
        contents.append(content)
        if ex.losses:
            first_losses.append(ex.losses[0])
            last_losses.append(ex.losses[-1])
    losses = (float(np.mean(first_losses)), float(np.mean(last_losses))) if first_losses else ()
    if n == 1:
        return ExemplarCode(codes[0], zs[0], 1, losses), aligned_all, contents
    return ExemplarCode(average_codes(codes, weights), None, n, losses), aligned_all, contents


def style_from_exemplar(model: VToonifyModel, exemplar: Union[ExemplarCode, Tensor],
                        face: Union[np.ndarray, Tensor, None] = None, color_transfer: bool = False,
                        name: str = "exemplar from an image") -> StyleCode:
    """A VToonify-D style code from an exemplar code, by the official rule.

    With ``color_transfer`` the code is the exemplar's W+; otherwise the face's W+ with layers 0-6
    (structure) from the exemplar. ``face`` is an aligned face (256x256 uint8, encoded with pSp)
    or its W+ ``[1, 18, 512]``.

    Raises:
        InputError: VToonify-T model, or no face without colour transfer.
    """
    _require_dual(model, "An exemplar style")
    ex = exemplar.wplus if isinstance(exemplar, ExemplarCode) else exemplar
    if ex.ndim != 3 or tuple(ex.shape) != (1, N_LAYERS, 512):
        raise InputError("exemplar", f"the exemplar W+ must be [1, {N_LAYERS}, 512], got {tuple(ex.shape)}.")
    ex = ex.detach().float().cpu()
    if color_transfer:
        return StyleCode(ex.clone(), model.backbone, None, name, True)
    if face is None:
        raise InputError("face", "a face is needed for the colours unless color_transfer is on: connect the face "
                                 "(a frame of the clip) or turn color_transfer on.")
    if isinstance(face, Tensor) and face.ndim == 3 and tuple(face.shape) == (1, N_LAYERS, 512):
        s_w = face.detach().float().cpu().clone()
    else:
        s_w = encode_face(model, face).clone()
    s_w[:, :STRUCTURE_LAYERS] = ex[:, :STRUCTURE_LAYERS]
    return StyleCode(s_w, model.backbone, None, name, False)


__all__ = [
    "ExemplarCode", "Keyframe", "LAYER_GROUPS", "LOSSES", "N_LAYERS", "REFINE_SIZES", "Refinement", "StyleSchedule",
    "average_codes", "average_styles", "encode_zplus", "exemplar_from_aligned", "exemplar_from_images",
    "forward_scheduled", "layer_roles", "mix_styles", "parse_keyframes", "refine_exemplar", "resolve_layers",
    "style_from_exemplar", "synthesize_exemplar",
]
