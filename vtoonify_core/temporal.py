"""Temporal coherence for video: parsing-map smoothing (paper Sec. 4.1, Eq. 6-7), deflicker, flicker metric.

Parsing-map smoothing (VToonify, Yang et al. 2022, Sec. 4.1)
------------------------------------------------------------
For each frame i the parsing maps of the frames j in the window [i-k, i+k] (clipped to the clip)
are warped to frame i with the optical flow and averaged::

    p~_i = sum_j w_{j,i} * warp_{j->i}(p_j) / sum_j w_{j,i}                                   (Eq. 6)
    w_{j,i} = exp( -(i-j)^2 / (2 sigma_t^2) - ||I_i - warp_{j->i}(I_j)||^2 / (2 sigma_s^2) ) * m_{j,i}   (Eq. 7)

with, as in the official ``smooth_parsing_map.py``:

* frames ``I`` in [-1, 1] and ``||.||^2`` the **mean over the three colour channels** of the
  squared difference (``((aligned_I - I_i)**2).mean(dim=1)``); ``sigma_s = 0.2`` is meant for
  that scale;
* the official script ties ``sigma_t`` to the window, ``k + 0.5`` (5.5 for its ``k = 5``); here
  it is a separate argument with the same default;
* ``warp_{j->i}(x) = backward_warp(x, flow(I_i, I_j))``: bilinear, ``align_corners=True``;
* ``m_{j,i}`` zero where the sample falls outside frame j; the j = i term is the unwarped map
  with weight exactly 1.

Two deliberate differences from the official script (both documented options):

* ``m_{j,i}`` also applies the forward-backward consistency check (``occlusion='fb'``, the
  default; the paper's "occlusion mask"); ``occlusion='bounds'`` is the official in-image test
  alone.
* At the ends of the clip the window is clipped (the official pads the clip with copies of its
  first and last k frames, which counts some frames twice).

The official script also enlarges the frames 2x before computing flow and parsing, and shrinks
the fused maps back with a [1,3,3,1] blur; here everything is at the resolution given (use
``flow_scale=2`` for flow on enlarged frames).

Chunks
------
The result for frame i depends only on frames i-k..i+k, so a long clip can be processed in
chunks that carry k frames of context on each side (:func:`chunk_with_context`) and the result
is identical to the one-shot computation (each frame's sum has the same terms in the same
order, and every flow depends only on its two frames).

Deflicker and metric
--------------------
:class:`Deflicker` / :func:`deflicker` blend the previous *deflickered* output, warped with the
flow of the guide (input) frames, into the current output, where the flow is trusted and the
guide did not change. :func:`warping_error` is the usual flicker metric, the mean
``|O_t - warp(O_{t-1})|`` over non-occluded pixels.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .flow import (
    FlowBackend, _sample, _sampling_grid, backward_warp, estimate_flow, fb_consistent, get_flow_backend, occlusion_mask,
    resize_flow,
)

logger = logging.getLogger("vtoonify")

__all__ = [
    "chunk_with_context", "fuse_window", "smooth_parsing", "Deflicker", "deflicker", "warping_error",
]

ProgressFn = Callable[[int, int], None]
FlowArg = Union[FlowBackend, str]

#: Rough budget (bytes) of the per-group working tensors of :func:`smooth_parsing`.
_GROUP_BYTES = 256 * 2**20


# --------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------

def _check_video(x: Tensor, name: str, channels: Optional[int] = None) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}.")
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a (T, C, H, W) tensor, got shape {tuple(x.shape)}.")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels, got shape {tuple(x.shape)}.")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: the clip is empty (0 frames).")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}.")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: holds NaN or infinite values.")


def _check_k(k: int) -> int:
    """``k`` as an int: a whole number >= 0 (bools refused)."""
    if isinstance(k, bool) or not isinstance(k, int) and not (isinstance(k, float) and float(k).is_integer()):
        raise TypeError(f"k must be an integer (the temporal half-window, e.g. 5), got {k!r}.")
    k = int(k)
    if k < 0:
        raise ValueError(f"k (the temporal half-window) must be >= 0, got {k}: use 0 for no smoothing.")
    return k


def _check_sigma(v: float, name: str) -> float:
    """``v`` as a float > 0 (NaN refused); ``name`` is the argument named in the message."""
    v = float(v)
    if not v > 0:  # also refuses NaN
        raise ValueError(f"{name} must be > 0, got {v}.")
    return v


def _check_chunk_size(chunk_size: Optional[int]) -> None:
    """``None`` (one chunk) or a whole number of frames >= 1."""
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1 (or None for one chunk), got {chunk_size}.")


def _check_flow_scale(flow_scale: float) -> None:
    """A finite number > 0 (NaN and infinity refused)."""
    if not (flow_scale > 0) or not math.isfinite(flow_scale):
        raise ValueError(f"flow_scale must be a positive number (1.0: flow at full resolution), got {flow_scale}.")


def _check_window_args(parsing: Tensor, frames: Tensor, k: int, sigma_t: float,
                       sigma_s: float) -> tuple[int, float, float]:
    """The checks that :func:`fuse_window` and :func:`smooth_parsing` share, in this order.

    ``k`` (:func:`_check_k`), ``sigma_t`` and ``sigma_s`` (> 0), ``parsing`` a finite float
    ``(T, C, H, W)`` clip, ``frames`` a finite float ``(T, 3, H, W)`` clip with as many frames as
    ``parsing`` and the same size. Each message names the argument at fault.

    Returns:
        ``(k, sigma_t, sigma_s)`` as int, float, float.
    """
    k = _check_k(k)
    sigma_t = _check_sigma(sigma_t, "sigma_t")
    sigma_s = _check_sigma(sigma_s, "sigma_s")
    _check_video(parsing, "parsing")
    _check_video(frames, "frames", 3)
    if frames.shape[0] != parsing.shape[0]:
        raise ValueError(f"frames ({frames.shape[0]}) and parsing ({parsing.shape[0]}) have different numbers of "
                         f"frames: give one parsing map per frame.")
    if frames.shape[-2:] != parsing.shape[-2:]:
        raise ValueError(
            f"frames {tuple(frames.shape[-2:])} and parsing {tuple(parsing.shape[-2:])} differ in size: give both at "
            f"frame resolution (resize the parsing logits with F.interpolate first)."
        )
    return k, sigma_t, sigma_s


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# chunks
# --------------------------------------------------------------------------------------------

def chunk_with_context(T: int, chunk_size: Optional[int], k: int) -> Iterator[tuple[int, int, int, int]]:
    """Split ``range(T)`` into chunks with ``k`` frames of context on each side.

    Yields ``(context_start, context_end, out_start, out_end)`` (half-open, absolute frame
    indices): the frames ``out_start:out_end`` of the result can be computed from the input
    frames ``context_start:context_end`` alone, where ``context_start = max(0, out_start - k)``
    and ``context_end = min(T, out_end + k)``. The output ranges tile ``range(T)`` in order.
    ``chunk_size=None`` gives one chunk. Nothing is yielded for ``T == 0``.
    """
    if T < 0:
        raise ValueError(f"T must be >= 0, got {T}.")
    k = _check_k(k)
    _check_chunk_size(chunk_size)
    chunk_size = max(T, 1) if chunk_size is None else int(chunk_size)
    for s in range(0, T, chunk_size):
        e = min(T, s + chunk_size)
        yield max(0, s - k), min(T, e + k), s, e


# --------------------------------------------------------------------------------------------
# Eq. 6-7
# --------------------------------------------------------------------------------------------

def fuse_window(
    parsing: Tensor,
    frames: Tensor,
    flows: Tensor,
    k: int,
    sigma_t: float = 5.5,
    sigma_s: float = 0.2,
    *,
    flows_back: Optional[Tensor] = None,
    masks: Optional[Tensor] = None,
    out_start: int = 0,
    alpha1: float = 0.01,
    alpha2: float = 0.5,
    batch_frames: Optional[int] = None,
) -> Tensor:
    """Eq. 6-7 with precomputed flows, for the frames ``out_start .. out_start + M - 1``.

    Args:
        parsing: ``(N, C, H, W)`` parsing maps (e.g. BiSeNet logits) of the N frames.
        frames: ``(N, 3, H, W)`` frames in [-1, 1] (the photometric term of Eq. 7).
        flows: ``(M, 2k+1, 2, H, W)``; ``flows[m, k + d]`` is the flow from frame
            ``i = out_start + m`` to frame ``j = i + d`` on i's grid (``backend(I_i, I_j)``, see
            :mod:`vtoonify_core.flow`). Entries with ``d = 0`` or ``j`` outside ``[0, N)`` are
            ignored (any finite value).
        k: half window; sigma_t, sigma_s: Eq. 7.
        flows_back: optional, same layout: ``flows_back[m, k + d]`` is the flow from j to i on
            j's grid. When given (and ``masks`` is not), ``m_{j,i}`` is the forward-backward
            consistency mask (:func:`~vtoonify_core.flow.occlusion_mask`, ``alpha1``, ``alpha2``).
        masks: optional ``(M, 2k+1, 1, H, W)`` occlusion weights in [0, 1] on i's grid, used
            instead of the forward-backward check.
            Without either, ``m_{j,i}`` is the in-image test only (the official behaviour). The
            in-image test is always applied.
        out_start: index in ``parsing`` of the first output frame.
        batch_frames: output frames fused per group (default: all M). The result does not
            depend on it.

    For each window offset d, one batched ``grid_sample`` warps the neighbours i+d of all the
    output frames (frames and maps together; the backward flows with the same grid when the
    forward-backward mask is used) and Eq. 6 accumulates in place; memory is O(M) frames.

    Returns:
        ``(M, C, H, W)`` smoothed maps, in ``parsing``'s dtype (computed in float32, or float64
        for float64 input). The ``j = i`` term enters unwarped with weight 1, so ``k = 0`` (or a
        window with no usable neighbour) returns the input maps.
    """
    k, sigma_t, sigma_s = _check_window_args(parsing, frames, k, sigma_t, sigma_s)
    N, C, H, W = parsing.shape
    L = 2 * k + 1
    if flows.ndim != 5 or flows.shape[1:] != (L, 2, H, W):
        raise ValueError(f"flows: expected shape (M, {L}, 2, {H}, {W}), got {tuple(flows.shape)}.")
    M = flows.shape[0]
    if not 0 <= out_start or out_start + M > N:
        raise ValueError(f"out_start={out_start} with {M} flow rows exceeds the {N} frames.")
    for name, t, ch in (("flows_back", flows_back, 2), ("masks", masks, 1)):
        if t is not None and (t.ndim != 5 or t.shape != (M, L, ch, H, W)):
            raise ValueError(f"{name}: expected shape {(M, L, ch, H, W)}, got {tuple(t.shape)}.")
    if batch_frames is not None and batch_frames < 1:
        raise ValueError(f"batch_frames must be >= 1, got {batch_frames}.")
    for name, t in (("flows", flows), ("flows_back", flows_back), ("masks", masks)):
        if t is not None and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: holds NaN or infinite values.")
    G = M if batch_frames is None else int(batch_frames)
    dev = parsing.device
    out = torch.empty((M, C, H, W), dtype=parsing.dtype, device=dev)
    for g0 in range(0, M, G):
        g1 = min(M, g0 + G)

        def flows_at(d: int, r0: int, r1: int, g0: int = g0) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
            sl = slice(g0 + r0, g0 + r1)
            return (
                flows[sl, k + d],
                None if flows_back is None or masks is not None else flows_back[sl, k + d],
                None if masks is None else masks[sl, k + d],
            )

        out[g0:g1] = _fuse(parsing, frames, k, sigma_t, sigma_s, out_start + g0, out_start + g1, flows_at, alpha1, alpha2)
    return out


#: ``flows_at(d, r0, r1)`` -> (forward flows, backward flows or None, masks or None) for the
#: output rows r0:r1 of a group and the window offset d (see :func:`_fuse`).
FlowsAt = Callable[[int, int, int], tuple[Tensor, Optional[Tensor], Optional[Tensor]]]


def _fuse(
    parsing: Tensor,
    frames: Tensor,
    k: int,
    sigma_t: float,
    sigma_s: float,
    i0: int,
    i1: int,
    flows_at: FlowsAt,
    alpha1: float,
    alpha2: float,
) -> Tensor:
    """Eq. 6-7 for the frames ``i0:i1`` of ``parsing`` (no argument checks).

    The window offsets d = -k..k are visited in order; for each, one batched ``grid_sample``
    warps the frames i+d (and, with forward-backward masks, the backward flows) of all output
    frames whose neighbour exists, and ``num``/``den`` accumulate in place. So each frame's sum
    has the same terms in the same order whatever the grouping: chunked == one-shot, bit for bit.
    """
    N, C, H, W = parsing.shape
    dt = _compute_dtype(parsing)
    dev = parsing.device
    M = i1 - i0
    # the j = i term: the unwarped map with weight exactly 1 (exp(0) * mask 1)
    num = parsing[i0:i1].to(dt).clone()
    if k == 0 or M == 0:
        return num.to(parsing.dtype)
    den = torch.ones((M, 1, H, W), dtype=dt, device=dev)
    # the frames and maps of the window frames, warped together (one grid per window offset)
    s0, s1 = max(0, i0 - k), min(N, i1 + k)
    src = torch.cat((frames[s0:s1].to(device=dev, dtype=dt), parsing[s0:s1].to(dt)), dim=1)
    Ii = src[i0 - s0:i1 - s0, :3]
    inv_s = 1.0 / (2.0 * sigma_s ** 2)
    for d in range(-k, k + 1):
        if d == 0:
            continue
        # output rows r0:r1 whose neighbour j = i + d lies in [0, N)
        r0, r1 = max(0, -d - i0), min(M, N - d - i0)
        if r1 <= r0:
            continue
        j0, j1 = i0 + r0 + d, i0 + r1 + d
        fw, bw, mask = flows_at(d, r0, r1)
        fw = fw.to(device=dev, dtype=dt)
        grid, inside = _sampling_grid(fw)
        warped = _sample(src[j0 - s0:j1 - s0], grid)                            # warp_{j->i}(I_j, p_j)
        if mask is not None:
            occ = mask.to(device=dev, dtype=dt) * inside.to(dt)
        elif bw is not None:
            bw_at_i = _sample(bw.to(device=dev, dtype=dt), grid)                 # f_{j->i}(p + f_{i->j}(p))
            occ = fb_consistent(fw, bw_at_i, alpha1, alpha2).logical_and_(inside).to(dt)
        else:
            occ = inside.to(dt)
        photo = ((warped[:, :3] - Ii[r0:r1]) ** 2).mean(dim=1, keepdim=True)  # ||I_i - warp(I_j)||^2
        w = torch.exp(-(d * d) / (2.0 * sigma_t ** 2) - photo * inv_s) * occ    # Eq. 7
        num[r0:r1].addcmul_(w, warped[:, 3:])                                   # Eq. 6
        den[r0:r1].add_(w)
    return (num / den).to(parsing.dtype)


def _group_size(k: int, C: int, H: int, W: int, itemsize: int) -> int:
    per_frame = (3 * (C + 5) + 8 + 8 * k) * H * W * itemsize
    return max(1, _GROUP_BYTES // max(per_frame, 1))


def smooth_parsing(
    parsing: Tensor,
    frames: Tensor,
    k: int = 5,
    sigma_t: float = 5.5,
    sigma_s: float = 0.2,
    flow: FlowArg = "dis",
    flow_scale: float = 1.0,
    chunk_size: Optional[int] = None,
    progress: Optional[ProgressFn] = None,
    *,
    occlusion: str = "fb",
    alpha1: float = 0.01,
    alpha2: float = 0.5,
    out_range: Optional[tuple[int, int]] = None,
    flow_batch: int = 16,
    batch_frames: Optional[int] = None,
) -> Tensor:
    """Smooth parsing maps over time with optical flow (paper Sec. 4.1, Eq. 6-7).

    Args:
        parsing: ``(T, C, H, W)`` parsing maps at frame resolution, normally the BiSeNet logits
            ``x_p`` of :func:`~vtoonify_core.bisenet.parse_frames` (C = 19; any C works).
        frames: ``(T, 3, H, W)`` the frames, in [-1, 1] (the convention of the whole package and
            of the official script; ``sigma_s`` is meant for it).
        k: half window (official default 5); ``k = 0`` returns a copy of the input.
        sigma_t, sigma_s: Eq. 7 (official 5.5 and 0.2).
        flow: a :class:`~vtoonify_core.flow.FlowBackend` or a name (``'dis'``, ``'dis_fast'``,
            ``'raft:<path>'``, see :func:`~vtoonify_core.flow.get_flow_backend`).
        flow_scale: the flow is computed at this fraction of the frame resolution (0.5: half
            size, about 4x faster with DIS) and up-scaled, vectors multiplied accordingly.
        chunk_size: process the output in chunks of this many frames, each with k frames of
            context on either side; the result is identical to ``chunk_size=None`` (one chunk).
        progress: called as ``progress(frames_done, frames_total)`` after each group of frames.
        occlusion: ``'fb'`` (in-image and forward-backward consistent, the default) or
            ``'bounds'`` (in-image only, as the official script).
        alpha1, alpha2: forward-backward thresholds (Sundaram et al. 2010).
        out_range: ``(start, end)``: compute only these output frames (the others are used as
            context) and return ``(end - start, C, H, W)``. With ``chunk_with_context`` this lets
            a caller stream a long clip: ``smooth_parsing(p[cs:ce], f[cs:ce],
            out_range=(os - cs, oe - cs))`` equals ``smooth_parsing(p, f)[os:oe]``.
        flow_batch: pairs per backend call. batch_frames: output frames fused together (default:
            from a ~256 MB budget). Neither changes the result.

    Returns:
        ``(T, C, H, W)`` (or the ``out_range`` frames) in ``parsing``'s dtype and device.

    Flows are computed once per ordered pair (i, j), |i - j| <= k, and cached while a pair can
    still be needed: about 2k backend calls per frame.
    """
    k, sigma_t, sigma_s = _check_window_args(parsing, frames, k, sigma_t, sigma_s)
    T, C, H, W = parsing.shape
    if occlusion not in ("fb", "bounds"):
        raise ValueError(f"occlusion must be 'fb' or 'bounds', got {occlusion!r}.")
    _check_flow_scale(flow_scale)
    lo, hi = (0, T) if out_range is None else (int(out_range[0]), int(out_range[1]))
    if not 0 <= lo <= hi <= T:
        raise ValueError(f"out_range {out_range} is not within [0, {T}]: give (start, end) with "
                         f"0 <= start <= end <= {T}.")
    _check_chunk_size(chunk_size)

    if k == 0 or T == 1 or hi == lo:
        if progress is not None:
            progress(hi - lo, hi - lo)
        return parsing[lo:hi].clone()

    backend = get_flow_backend(flow)
    dev = parsing.device
    dt = _compute_dtype(parsing)
    frames_c = frames.to(device=dev, dtype=dt)
    G = int(batch_frames) if batch_frames is not None else _group_size(k, C, H, W, torch.finfo(dt).bits // 8)
    fb = occlusion == "fb"
    result = torch.empty((hi - lo, C, H, W), dtype=parsing.dtype, device=dev)
    cache: dict[tuple[int, int], Tensor] = {}
    done = 0

    for cs, ce, os_, oe in chunk_with_context(hi - lo, chunk_size, k):
        os_, oe = os_ + lo, oe + lo           # absolute output range of this chunk
        cs, ce = max(0, os_ - k), min(T, oe + k)  # its context, within the whole clip
        for g0 in range(os_, oe, G):
            g1 = min(oe, g0 + G)
            # the ordered pairs this group needs
            need: list[tuple[int, int]] = []
            for i in range(g0, g1):
                for j in range(max(cs, i - k), min(ce, i + k + 1)):
                    if j != i:
                        need.append((i, j))
                        if fb:
                            need.append((j, i))
            missing = list(dict.fromkeys(p for p in need if p not in cache))
            for b0 in range(0, len(missing), max(1, flow_batch)):
                batch = missing[b0:b0 + max(1, flow_batch)]
                a = torch.tensor([p[0] for p in batch], device=dev)
                b = torch.tensor([p[1] for p in batch], device=dev)
                fl = estimate_flow(backend, frames_c[a], frames_c[b], flow_scale, flow_batch)
                for n, p in enumerate(batch):
                    cache[p] = fl[n]
            g = g1 - g0

            def flows_at(d: int, r0: int, r1: int, g0: int = g0) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
                rows = range(g0 + r0, g0 + r1)
                fw = torch.stack([cache[(i, i + d)] for i in rows])
                bw = torch.stack([cache[(i + d, i)] for i in rows]) if fb else None
                return fw, bw, None

            fused = _fuse(parsing[cs:ce], frames[cs:ce], k, sigma_t, sigma_s, g0 - cs, g1 - cs, flows_at, alpha1, alpha2)
            result[g0 - lo:g1 - lo] = fused
            # forget the flows no later group can use (later outputs are >= g1, neighbours >= g1 - k)
            for p in [p for p in cache if min(p) < g1 - k]:
                del cache[p]
            done += g
            if progress is not None:
                progress(done, hi - lo)
    logger.debug("smooth_parsing: %d frames, k=%d, flow=%r, flow_scale=%g", hi - lo, k, backend, flow_scale)
    return result


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
    _check_video(guide, name, 3)
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
        strength = float(strength)
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"deflicker strength must be in [0, 1], got {strength}.")
        if not 0.0 <= float(max_blend) <= 1.0:
            raise ValueError(f"max_blend must be in [0, 1], got {max_blend}.")
        _check_flow_scale(flow_scale)
        self.strength = strength
        self.max_blend = float(max_blend)
        self.sigma_g = _check_sigma(sigma_g, "sigma_g")
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

    def __call__(self, frames_out: Tensor, guide_frames: Tensor, progress: Optional[ProgressFn] = None) -> Tensor:
        """Deflicker ``frames_out`` ``(T, 3, H, W)`` guided by ``guide_frames`` ``(T, 3, h, w)`` in [-1, 1].

        The output may be in any range (the guide carries the photometric gate); the guide may
        be smaller than the output (same aspect ratio expected). Returns ``(T, 3, H, W)`` in
        ``frames_out``'s dtype and device.
        """
        _check_video(frames_out, "frames_out")
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
    progress: Optional[ProgressFn] = None,
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
    _check_video(frames, "frames")
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
