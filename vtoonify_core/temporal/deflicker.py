"""Deflicker of a stylized clip (the previous output, warped with the guide frames' flow, blended
into the current one where the flow is trusted) and the warping-error flicker metric.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import check_clip, check_fraction, check_positive
from ..types import Progress
from .flow import (FlowBackend, backward_warp, check_flow_scale, estimate_flow, get_flow_backend, occlusion_mask,
                   resize_flow)
from .smoothing import FlowArg, _compute_dtype

logger = logging.getLogger("vtoonify")


# --------------------------------------------------------------------------------------------
# consecutive-frame flows at the guide resolution, brought to the output resolution
# --------------------------------------------------------------------------------------------

def _consecutive(
    backend: FlowBackend,
    cur: Tensor,
    prev: Tensor,
    size: tuple[int, int],
    flow_scale: float,
    occlusion: bool,
    alpha1: float,
    alpha2: float,
    flow_batch: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Flow cur -> prev (on cur's grid) and its trust mask, at guide resolution and at ``size``.

    Returns ``(flow_out, mask_guide, flow_guide)``: the flow resized to ``size`` with rescaled
    vectors, the 0/1 mask at guide resolution, and the flow at guide resolution.
    """
    f = estimate_flow(backend, cur, prev, flow_scale, flow_batch)
    if occlusion:
        b = estimate_flow(backend, prev, cur, flow_scale, flow_batch)
        mask = occlusion_mask(f, b, alpha1, alpha2)
    else:
        mask = occlusion_mask(f)
    return resize_flow(f, size), mask, f


def _guide_check(frames: Tensor, guide: Tensor, name: str) -> None:
    check_clip(guide, name, 3)
    if guide.shape[0] != frames.shape[0]:
        raise ValueError(f"{name} ({guide.shape[0]} frames) and the frames ({frames.shape[0]}) differ in length.")


# --------------------------------------------------------------------------------------------
# deflicker
# --------------------------------------------------------------------------------------------

class Deflicker:
    """Flow-guided temporal blending of a stylized clip; streams over chunks.

    For each frame t (after the first)::

        a_t  = strength * max_blend * m_t * g_t
        D_t  = (1 - a_t) * O_t + a_t * warp(D_{t-1})

    where ``O`` is the output to deflicker, ``D`` the deflickered result (so the blending is
    recursive, an exponential moving average along the motion), ``warp`` the backward warp with
    the flow of the guide frames t -> t-1 (resized to the output resolution, vectors rescaled),
    ``m_t`` the occlusion mask (in-image and forward-backward consistent) and ``g_t`` a
    photometric gate on the guide, ``exp(-||G_t - warp(G_{t-1})||^2 / (2 sigma_g^2))`` (channel
    mean, guide in [-1, 1]): where the input itself changed (new content, disocclusion, a real
    lighting change) the history is not blended in. ``m`` and ``g`` are bilinearly resized to
    the output resolution.

    Args:
        strength: in [0, 1]; 0 returns the frames unchanged (a copy).
        flow: backend or name; flow_scale: as in :func:`smooth_parsing` (relative to the guide).
        sigma_g: photometric gate width. max_blend: the blend weight at strength 1 (below 1
            so that a fully trusted region is not frozen on its first frame).
        occlusion: apply the forward-backward check (else in-image only).

    Calling the object on consecutive chunks of a clip gives the same frames as one call on
    the whole clip (the last deflickered frame and its guide frame are carried over); call
    :meth:`reset` before a new clip.
    """

    def __init__(
        self,
        strength: float,
        flow: FlowArg = "dis",
        flow_scale: float = 1.0,
        *,
        sigma_g: float = 0.1,
        max_blend: float = 0.9,
        occlusion: bool = True,
        alpha1: float = 0.01,
        alpha2: float = 0.5,
        flow_batch: int = 16,
    ) -> None:
        check_flow_scale(flow_scale)
        self.strength = check_fraction(strength, "strength")
        self.max_blend = check_fraction(max_blend, "max_blend")
        self.sigma_g = check_positive(sigma_g, "sigma_g")
        self.flow_scale = float(flow_scale)
        self.occlusion = bool(occlusion)
        self.alpha1, self.alpha2 = float(alpha1), float(alpha2)
        self.flow_batch = int(flow_batch)
        self._flow_arg = flow
        self._backend: Optional[FlowBackend] = None
        self._prev_out: Optional[Tensor] = None
        self._prev_guide: Optional[Tensor] = None

    def reset(self) -> None:
        """Forget the carried frame: the next call starts a new clip."""
        self._prev_out = None
        self._prev_guide = None

    def __call__(self, frames_out: Tensor, guide_frames: Tensor, progress: Optional[Progress] = None) -> Tensor:
        """Deflicker ``frames_out`` ``(T, 3, H, W)`` guided by ``guide_frames`` ``(T, 3, h, w)`` in [-1, 1].

        The output may be in any range (the guide carries the photometric gate); the guide may
        be smaller than the output (same aspect ratio expected). Returns ``(T, 3, H, W)`` in
        ``frames_out``'s dtype and device.
        """
        check_clip(frames_out, "frames_out")
        _guide_check(frames_out, guide_frames, "guide_frames")
        T, Cc, H, W = frames_out.shape
        if self._prev_out is not None and (
            self._prev_out.shape[1:] != frames_out.shape[1:] or self._prev_guide.shape[1:] != guide_frames.shape[1:]
        ):
            raise ValueError("Deflicker: the frame size changed between calls; call reset() for a new clip.")
        if self.strength == 0.0 or self.max_blend == 0.0:
            self._prev_out = frames_out[-1:].detach().clone()
            self._prev_guide = guide_frames[-1:].detach().clone()
            return frames_out.clone()
        if self._backend is None:
            self._backend = get_flow_backend(self._flow_arg)
        dev = frames_out.device
        dt = _compute_dtype(frames_out)
        out = torch.empty_like(frames_out)
        guide = guide_frames.to(device=dev, dtype=dt)
        prev_d = None if self._prev_out is None else self._prev_out.to(device=dev, dtype=dt)
        prev_g = None if self._prev_guide is None else self._prev_guide.to(device=dev, dtype=dt)
        a_max = self.strength * self.max_blend
        B = max(1, self.flow_batch)
        # guide frames with the carried one in front: the guide before frame t is gext[t + off - 1]
        off = 0 if prev_g is None else 1
        gext = guide if prev_g is None else torch.cat((prev_g, guide), 0)
        if prev_g is None:  # the first frame of a clip has no history
            out[0] = frames_out[0]
            prev_d = frames_out[0:1].to(dt)
        ts = list(range(1 - off, T))
        for b0 in range(0, len(ts), B):
            tb = ts[b0:b0 + B]
            a0, a1 = tb[0] + off, tb[-1] + off + 1
            cur_g, prv_g = gext[a0:a1], gext[a0 - 1:a1 - 1]
            flow_o, mask, flow_g = _consecutive(
                self._backend, cur_g, prv_g, (H, W), self.flow_scale, self.occlusion, self.alpha1, self.alpha2, B,
            )
            warped_g, _ = backward_warp(prv_g, flow_g.to(dt))
            photo = ((cur_g - warped_g) ** 2).mean(dim=1, keepdim=True)
            gate = torch.exp(-photo / (2.0 * self.sigma_g ** 2)) * mask.to(dt)
            if gate.shape[-2:] != (H, W):
                gate = F.interpolate(gate, size=(H, W), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
            alpha = a_max * gate
            for n, tt in enumerate(tb):
                o = frames_out[tt:tt + 1].to(dt)
                warped, inside = backward_warp(prev_d, flow_o[n:n + 1].to(dt))
                a = alpha[n:n + 1] * inside.to(dt)
                prev_d = o + a * (warped - o)
                out[tt] = prev_d[0].to(out.dtype)
            if progress is not None:
                progress(tb[-1] + 1, T)
        self._prev_out = prev_d.detach().clone()
        self._prev_guide = guide_frames[-1:].detach().clone()
        return out


def deflicker(
    frames_out: Tensor,
    guide_frames: Tensor,
    strength: float,
    flow: FlowArg = "dis",
    flow_scale: float = 1.0,
    progress: Optional[Progress] = None,
    **kwargs,
) -> Tensor:
    """Deflicker a whole stylized clip; see :class:`Deflicker` (``kwargs`` go to it).

    ``frames_out``: ``(T, 3, H, W)`` the stylized frames; ``guide_frames``: ``(T, 3, h, w)`` the
    input frames in [-1, 1], possibly at a lower resolution. ``strength`` in [0, 1]; 0 returns
    the input exactly (a copy).
    """
    return Deflicker(strength, flow, flow_scale, **kwargs)(frames_out, guide_frames, progress)


# --------------------------------------------------------------------------------------------
# flicker metric
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def warping_error(
    frames: Tensor,
    guide: Tensor,
    flow: FlowArg = "dis",
    flow_scale: float = 1.0,
    *,
    occlusion: bool = True,
    alpha1: float = 0.01,
    alpha2: float = 0.5,
    flow_batch: int = 16,
) -> float:
    """Flicker metric: mean ``|O_t - warp(O_{t-1})|`` over the non-occluded pixels, t = 1..T-1.

    Args:
        frames: ``(T, C, H, W)`` the clip to measure: RGB output, or parsing maps as softmax
            probabilities (the caller applies the softmax), any C.
        guide: ``(T, 3, h, w)`` the input frames in [-1, 1] that carry the motion; the flow
            t -> t-1 is computed on them (at ``flow_scale``) and resized to ``(H, W)`` with
            rescaled vectors.
        occlusion: exclude pixels failing the forward-backward check (the in-image test is
            always made); the mask is resized with bilinear interpolation and only pixels with a
            value of 1 (to 1e-3) are counted.

    Returns:
        The mean absolute difference over channels and counted pixels of all frame pairs (a
        pixel-weighted mean), as a float; 0.0 if no pixel is counted.
    """
    check_clip(frames, "frames")
    _guide_check(frames, guide, "guide")
    T, C, H, W = frames.shape
    if T < 2:
        raise ValueError("warping_error needs at least 2 frames.")
    backend = get_flow_backend(flow)
    dev = frames.device
    dt = _compute_dtype(frames)
    g = guide.to(device=dev, dtype=dt)
    total = torch.zeros((), dtype=torch.float64, device=dev)
    count = torch.zeros((), dtype=torch.float64, device=dev)
    B = max(1, int(flow_batch))
    for t in range(1, T, B):
        t1 = min(T, t + B)
        flow_o, mask, _ = _consecutive(backend, g[t:t1], g[t - 1:t1 - 1], (H, W), flow_scale, occlusion, alpha1, alpha2, B)
        if mask.shape[-2:] != (H, W):
            mask = F.interpolate(mask, size=(H, W), mode="bilinear", align_corners=False)
        warped, inside = backward_warp(frames[t - 1:t1 - 1].to(dt), flow_o.to(dt))
        keep = (mask >= 1.0 - 1e-3) & inside
        diff = (frames[t:t1].to(dt) - warped).abs().mean(dim=1, keepdim=True)
        total += (diff * keep).sum().double()
        count += keep.sum().double()
    return float(total / count) if count > 0 else 0.0
