"""Temporal smoothing of parsing maps (paper Sec. 4.1, Eq. 6-7): maps of the frames in a window
warped with optical flow and averaged with temporal and photometric weights; chunked with context
so long clips give the one-shot result. Design notes: docs/design.md.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator, Optional, Union

import torch
from torch import Tensor

from ..checks import check_chunk_size, check_clip, check_positive, check_window_k, validate_frames
from ..errors import InputError
from ..frames import to_model_range
from ..types import FaceParsing, Progress
from .flow import FlowBackend, _sample, _sampling_grid, check_flow_scale, estimate_flow, fb_consistent, get_flow_backend

logger = logging.getLogger("vtoonify")
FlowArg = Union[FlowBackend, str]

#: Rough budget (bytes) of the per-group working tensors of :func:`smooth_parsing`.
_GROUP_BYTES = 256 * 2**20


def _check_window_args(parsing: Tensor, frames: Tensor, k: int, sigma_t: float,
                       sigma_s: float) -> tuple[int, float, float]:
    """The checks that :func:`fuse_window` and :func:`smooth_parsing` share, in this order.

    ``k`` (:func:`_check_k`), ``sigma_t`` and ``sigma_s`` (> 0), ``parsing`` a finite float
    ``(T, C, H, W)`` clip, ``frames`` a finite float ``(T, 3, H, W)`` clip with as many frames as
    ``parsing`` and the same size. Each message names the argument at fault.

    Returns:
        ``(k, sigma_t, sigma_s)`` as int, float, float.
    """
    k = check_window_k(k)
    sigma_t = check_positive(sigma_t, "sigma_t")
    sigma_s = check_positive(sigma_s, "sigma_s")
    check_clip(parsing, "parsing")
    check_clip(frames, "frames", 3)
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
    k = check_window_k(k)
    check_chunk_size(chunk_size)
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
            consistency mask (:func:`~vtoonify_core.temporal.flow.occlusion_mask`, ``alpha1``, ``alpha2``).
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
    progress: Optional[Progress] = None,
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
            ``x_p`` of :func:`~vtoonify_core.models.bisenet.parse_frames` (C = 19; any C works).
        frames: ``(T, 3, H, W)`` the frames, in [-1, 1] (the convention of the whole package and
            of the official script; ``sigma_s`` is meant for it).
        k: half window (official default 5); ``k = 0`` returns a copy of the input.
        sigma_t, sigma_s: Eq. 7 (official 5.5 and 0.2).
        flow: a :class:`~vtoonify_core.temporal.flow.FlowBackend` or a name (``'dis'``, ``'dis_fast'``,
            ``'raft:<path>'``, see :func:`~vtoonify_core.temporal.flow.get_flow_backend`).
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
    check_flow_scale(flow_scale)
    lo, hi = (0, T) if out_range is None else (int(out_range[0]), int(out_range[1]))
    if not 0 <= lo <= hi <= T:
        raise ValueError(f"out_range {out_range} is not within [0, {T}]: give (start, end) with "
                         f"0 <= start <= end <= {T}.")
    check_chunk_size(chunk_size)

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
# clips as the nodes hold them
# --------------------------------------------------------------------------------------------

def smooth_clip(parsing: FaceParsing, frames: Tensor, *, k: int = 5, sigma_t: float = 5.5, sigma_s: float = 0.2,
                flow="dis", input_range: tuple[float, float] = (-1.0, 1.0), chunk_size: int = 32,
                progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None
                ) -> FaceParsing:
    """Smooth parsing maps over time (:func:`smooth_parsing`), chunk by chunk.

    Each chunk of ``chunk_size`` output frames is computed from its frames plus ``k`` frames of
    context on each side (identical to the one-shot result); frames are converted to [-1, 1] one
    chunk at a time and ``check_interrupt`` runs between chunks.
    """
    if not isinstance(parsing, FaceParsing):
        raise InputError("face_parsing", f"expected FACE_PARSING (from Face Parse), got {type(parsing).__name__}.")
    validate_frames(frames, "images")
    t = len(parsing)
    if frames.shape[0] != t:
        raise InputError("images", f"{frames.shape[0]} images but the parsing holds {t} frames: give the frames "
                                   f"that were parsed.")
    if tuple(frames.shape[2:]) != parsing.size:
        raise InputError("images", f"the images are {frames.shape[3]}x{frames.shape[2]} but the parsing maps "
                                   f"{parsing.size[1]}x{parsing.size[0]}: give the frames that were parsed.")
    sigma_t, sigma_s = check_positive(sigma_t, "sigma_t"), check_positive(sigma_s, "sigma_s")
    k = check_window_k(k)
    out = torch.empty_like(parsing.logits)
    for cs, ce, os_, oe in chunk_with_context(t, max(1, int(chunk_size)), k):
        if check_interrupt is not None:
            check_interrupt()
        f = to_model_range(frames[cs:ce], input_range)
        out[os_:oe] = smooth_parsing(parsing.logits[cs:ce], f, k, sigma_t, sigma_s, flow,
                                     out_range=(os_ - cs, oe - cs)).to(out.dtype)
        if progress is not None:
            progress(oe, t)
    return FaceParsing(out, smoothed=True)
