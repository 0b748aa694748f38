"""Optical flow for temporal coherence: backends, backward warping and occlusion masks.

Details: docs/design.md, ``vtoonify_core/temporal/flow.py``.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional, Protocol, Union, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, InputError
from ..weights import load_into, read_checkpoint

logger = logging.getLogger("vtoonify")

__all__ = [
    "FlowBackend", "DISFlow", "RAFTFlow", "get_flow_backend", "estimate_flow", "backward_warp",
    "occlusion_mask", "fb_consistent", "resize_flow", "BOUNDS_TOLERANCE",
]

#: A sample is "inside the image" when its coordinate lies in [-tol, W-1+tol] (pixels). The
#: official code accepts ``grid_sample(ones) >= 0.9999``, i.e. at most 1e-4 px outside.
BOUNDS_TOLERANCE = 1e-4


@runtime_checkable
class FlowBackend(Protocol):
    """An optical flow estimator.

    ``__call__(src, dst)``: ``src``, ``dst`` are ``(N, 3, H, W)`` frames in [-1, 1] (same shape,
    any device/dtype); returns the flow ``(N, 2, H, W)`` in pixels on ``src``'s grid such that
    ``src(p) ~= dst(p + flow(p))`` (see the module docstring), on ``src``'s device.
    """

    def __call__(self, src: Tensor, dst: Tensor) -> Tensor:  # pragma: no cover - protocol
        ...


def _check_pair(src: Tensor, dst: Tensor) -> None:
    if src.ndim != 4 or src.shape[1] != 3:
        raise ValueError(f"flow: expected frames of shape (N, 3, H, W), got src {tuple(src.shape)}.")
    if src.shape != dst.shape:
        raise ValueError(f"flow: src {tuple(src.shape)} and dst {tuple(dst.shape)} differ in shape.")


def _to_gray_u8(x: Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W) uint8 luma (BT.601 weights of ``(x + 1) * 127.5``), rounded."""
    a = x.detach().to(device="cpu", dtype=torch.float32).numpy()
    gray = 0.299 * a[:, 0] + 0.587 * a[:, 1] + 0.114 * a[:, 2]  # still in [-1, 1]
    gray = np.rint((gray + 1.0) * 127.5)
    return np.clip(gray, 0, 255).astype(np.uint8)


class DISFlow:
    """OpenCV DIS optical flow (``cv2.DISOpticalFlow_create``): no weights, runs on the CPU.

    Args:
        preset: ``'ultrafast'``, ``'fast'`` or ``'medium'`` (OpenCV's presets; medium is the
            most accurate of the three and the default).

    The frames are converted to 8-bit grayscale (BT.601 luma of ``(x + 1) * 127.5``, rounded);
    the pairs of a batch are computed one after the other (OpenCV parallelises inside a pair).
    The result is deterministic: the same pair gives bit-identical flow in any batch.
    """

    PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}

    def __init__(self, preset: str = "medium") -> None:
        import cv2

        if preset not in self.PRESETS:
            raise ValueError(f"DISFlow: unknown preset {preset!r}; expected one of {sorted(self.PRESETS)}.")
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(self.PRESETS[preset])

    def __repr__(self) -> str:
        return f"DISFlow(preset={self.preset!r})"

    def __call__(self, src: Tensor, dst: Tensor) -> Tensor:
        """Flow from ``src`` to ``dst`` on ``src``'s grid, ``(N, 2, H, W)`` float32 on ``src.device``."""
        _check_pair(src, dst)
        n, _, h, w = src.shape
        if h < 2 or w < 2:
            return src.new_zeros((n, 2, h, w), dtype=torch.float32)
        a, b = _to_gray_u8(src), _to_gray_u8(dst)
        out = np.empty((n, 2, h, w), dtype=np.float32)
        for i in range(n):
            f = self._dis.calc(a[i], b[i], None)
            out[i] = f.transpose(2, 0, 1)
        return torch.from_numpy(out).to(src.device)


_RAFT_HINT = (
    "The RAFT flow backend needs torchvision (torchvision.models.optical_flow), which is not "
    "installed. Install the torchvision build that matches your torch (e.g. `pip install "
    "torchvision` with the same index URL you used for torch), or use the 'dis' backend, which "
    "needs no extra package."
)


class RAFTFlow:
    """torchvision's RAFT (optional backend); weights from a local file, never downloaded.

    Args:
        weights_path: a torchvision RAFT state dict (``.pth``/``.pt`` read with
            ``weights_only=True``, or ``.safetensors``), e.g. the file torchvision names
            ``raft_large_C_T_SKHT_V2-ff5fadd5.pth``. The original princeton-vl checkpoints
            (``raft-things.pth``, used by the official VToonify script) have another layout and
            are refused with a message.
        small: build ``raft_small`` instead of ``raft_large``.
        num_flow_updates: refinement iterations (the official VToonify script uses 20).
        model: an already built module with torchvision's RAFT call signature
            ``model(image1, image2, num_flow_updates=...) -> list of (N, 2, H, W)`` flows; when
            given, ``weights_path`` is ignored and torchvision is not imported.

    The frames (in [-1, 1], which is RAFT's input range) are padded to a multiple of 8 by edge
    replication (split evenly between both sides, like RAFT's ``InputPadder``), the flow of the
    last iteration is cropped back. The model follows the input's device and dtype.
    """

    def __init__(
        self,
        weights_path: Union[str, Path, None] = None,
        *,
        small: bool = False,
        num_flow_updates: int = 20,
        model: Optional[nn.Module] = None,
    ) -> None:
        if num_flow_updates < 1:
            raise ValueError(f"RAFTFlow: num_flow_updates must be >= 1, got {num_flow_updates}.")
        self.num_flow_updates = int(num_flow_updates)
        if model is None:
            if weights_path is None:
                raise ValueError("RAFTFlow: give weights_path, the local file of a torchvision RAFT state dict.")
            model = self._build(Path(weights_path), small)
        self.model = model.eval()

    @staticmethod
    def _build(path: Path, small: bool) -> nn.Module:
        try:
            from torchvision.models.optical_flow import raft_large, raft_small
        except ImportError as e:
            raise ImportError(f"{_RAFT_HINT} ({e})") from None

        ckpt = read_checkpoint(path)
        keys = list(ckpt.tensors)
        if any(k.startswith(("module.fnet.", "fnet.")) for k in keys):
            raise CheckpointError(
                f"{path}: this is an original princeton-vl RAFT checkpoint (e.g. raft-things.pth); the RAFT "
                f"backend uses torchvision's RAFT, whose parameter names differ. Use a torchvision RAFT "
                f"state dict (e.g. raft_large_C_T_SKHT_V2-ff5fadd5.pth), or the 'dis' backend."
            )
        net = (raft_small if small else raft_large)(weights=None, progress=False)
        load_into(net, ckpt.tensors, path, "torchvision RAFT " + ("small" if small else "large"))
        return net

    def __repr__(self) -> str:
        return f"RAFTFlow(num_flow_updates={self.num_flow_updates})"

    @torch.no_grad()
    def __call__(self, src: Tensor, dst: Tensor) -> Tensor:
        """Flow from ``src`` to ``dst`` on ``src``'s grid, ``(N, 2, H, W)`` float32 on ``src.device``."""
        _check_pair(src, dst)
        p = next(self.model.parameters(), None)
        if p is not None and (p.device != src.device):
            self.model.to(src.device)
        dtype = p.dtype if p is not None else torch.float32
        h, w = src.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        a = F.pad(src.to(dtype), pad, mode="replicate") if any(pad) else src.to(dtype)
        b = F.pad(dst.to(dtype), pad, mode="replicate") if any(pad) else dst.to(dtype)
        flows = self.model(a, b, num_flow_updates=self.num_flow_updates)
        flow = flows[-1] if isinstance(flows, (list, tuple)) else flows
        flow = flow[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w]
        return flow.float().contiguous()


def get_flow_backend(flow: Union[FlowBackend, str]) -> FlowBackend:
    """Resolve a backend name or pass a backend through.

    Names: ``'dis'`` (= ``'dis_medium'``), ``'dis_fast'``, ``'dis_ultrafast'``,
    ``'raft:<path>'`` and ``'raft_small:<path>'`` (torchvision RAFT with local weights).
    """
    if not isinstance(flow, str):
        if not callable(flow):
            raise TypeError(f"flow must be a backend name or a callable (src, dst) -> flow, got {type(flow).__name__}.")
        return flow
    name = flow.strip()
    low = name.lower()
    if low in ("dis", "dis_medium"):
        return DISFlow("medium")
    if low == "dis_fast":
        return DISFlow("fast")
    if low == "dis_ultrafast":
        return DISFlow("ultrafast")
    for prefix, small in (("raft_small:", True), ("raft:", False)):
        if low.startswith(prefix):
            path = name[len(prefix):].strip()
            if not path:
                break
            return RAFTFlow(path, small=small)
    if low.startswith("raft"):
        raise ValueError(
            f"flow {flow!r}: the RAFT backend needs a local weights file: use 'raft:/path/to/raft_large.pth' "
            f"or pass RAFTFlow(weights_path=...)."
        )
    raise ValueError(f"unknown flow backend {flow!r}; expected 'dis', 'dis_fast', 'dis_ultrafast', 'raft:<path>' or a FlowBackend.")


def check_flow_scale(flow_scale: float) -> None:
    """The scale flow is computed at: a finite number > 0 (NaN and infinity refused)."""
    if not (flow_scale > 0) or not math.isfinite(flow_scale):
        raise InputError("flow_scale", f"must be a positive number (1.0: flow at full resolution), got {flow_scale}.")


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Resample a flow ``(N, 2, h, w)`` to ``size = (H, W)`` and rescale its vectors (x by W/w, y by H/h).

    Bilinear, ``align_corners=False`` (pixel centres of both grids stay aligned).
    """
    h, w = flow.shape[-2:]
    H, W = size
    if (h, w) == (H, W):
        return flow
    up = F.interpolate(flow, size=(H, W), mode="bilinear", align_corners=False)
    scale = torch.tensor([W / w, H / h], device=flow.device, dtype=flow.dtype).view(1, 2, 1, 1)
    return up * scale


def estimate_flow(
    backend: FlowBackend,
    src: Tensor,
    dst: Tensor,
    scale: float = 1.0,
    batch_size: int = 16,
) -> Tensor:
    """Flow from ``src`` to ``dst`` (``(N, 3, H, W)`` in [-1, 1]) computed at ``scale`` x the resolution.

    With ``scale != 1`` both frames are resized to ``(floor(H*scale + 0.5), floor(W*scale + 0.5))`` (bilinear,
    anti-aliased when shrinking), the backend runs there, and :func:`resize_flow` brings the flow
    back to ``(H, W)`` with its vectors multiplied accordingly. Pairs go to the backend in batches
    of ``batch_size``. Returns float32 ``(N, 2, H, W)`` on ``src.device``.
    """
    _check_pair(src, dst)
    check_flow_scale(scale)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    n, _, h, w = src.shape
    hs, ws = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
    outs = []
    for s in range(0, n, batch_size):
        a, b = src[s:s + batch_size], dst[s:s + batch_size]
        if (hs, ws) != (h, w):
            aa = hs < h or ws < w
            a = F.interpolate(a.float(), size=(hs, ws), mode="bilinear", align_corners=False, antialias=aa)
            b = F.interpolate(b.float(), size=(hs, ws), mode="bilinear", align_corners=False, antialias=aa)
        f = backend(a, b)
        if f.shape != (a.shape[0], 2, hs, ws):
            raise ValueError(f"flow backend {backend!r} returned shape {tuple(f.shape)}, expected {(a.shape[0], 2, hs, ws)}.")
        outs.append(resize_flow(f.to(device=src.device, dtype=torch.float32), (h, w)))
    return torch.cat(outs, 0) if outs else src.new_zeros((0, 2, h, w), dtype=torch.float32)


def _sampling_grid(flow: Tensor) -> tuple[Tensor, Tensor]:
    """Normalised ``grid_sample`` grid (align_corners=True) and the in-image mask of ``p + flow(p)``.

    Pixel ``x`` maps to ``2x / (W-1) - 1``; a sample is inside when its coordinate lies within
    :data:`BOUNDS_TOLERANCE` pixels of ``[0, W-1] x [0, H-1]``.
    """
    n, _, h, w = flow.shape
    sx, sy = 2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)
    # absolute sample position first (exact integer + flow), then normalise: the most accurate order
    gx = (xs + flow[:, 0]).mul_(sx).sub_(1.0)
    gy = (ys + flow[:, 1]).mul_(sy).sub_(1.0)
    inside = (gx.abs() <= 1.0 + BOUNDS_TOLERANCE * sx).logical_and_(gy.abs() <= 1.0 + BOUNDS_TOLERANCE * sy)
    grid = torch.stack((gx, gy), dim=-1)
    return grid, inside.unsqueeze(1)


def backward_warp(x: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
    """Resample ``x`` ``(N, C, H, W)`` at ``p + flow(p)``: ``out(p) = x(p + flow(p))``.

    With ``flow = backend(src, x)`` this aligns ``x`` to ``src``. Bilinear ``grid_sample`` with
    ``align_corners=True`` as in the official code; samples outside the image are clamped to the
    border (so the result stays finite) and flagged in the returned mask.

    Returns:
        ``(warped, valid)``: ``warped`` has ``x``'s dtype; ``valid`` is a bool ``(N, 1, H, W)``,
        True where the sample point lies inside the image (within :data:`BOUNDS_TOLERANCE`).
    """
    if x.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"backward_warp: expected x (N,C,H,W) and flow (N,2,H,W), got {tuple(x.shape)} and {tuple(flow.shape)}.")
    if x.shape[0] != flow.shape[0] or x.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"backward_warp: x {tuple(x.shape)} and flow {tuple(flow.shape)} do not match.")
    grid, inside = _sampling_grid(flow.to(x.dtype))
    return _sample(x, grid), inside


def _sample(x: Tensor, grid: Tensor) -> Tensor:
    """Bilinear, border-clamped, ``align_corners=True`` sampling of ``x`` at a :func:`_sampling_grid` grid."""
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def occlusion_mask(
    flow_fw: Tensor,
    flow_bw: Optional[Tensor] = None,
    alpha1: float = 0.01,
    alpha2: float = 0.5,
) -> Tensor:
    """Where ``flow_fw`` (a -> b, on a's grid) can be trusted: in-image and forward-backward consistent.

    ``flow_bw`` is the flow b -> a on b's grid. With ``w = flow_bw(p + flow_fw(p))`` the pixel is
    kept when ``|flow_fw + w|^2 <= alpha1 (|flow_fw|^2 + |w|^2) + alpha2`` (Sundaram et al. 2010;
    pixels, squared) and ``p + flow_fw(p)`` lies inside the image. Without ``flow_bw`` only the
    in-image test is made (what the official ``smooth_parsing_map.py`` does).

    Returns a ``(N, 1, H, W)`` mask of 0/1 in ``flow_fw``'s dtype.
    """
    if flow_bw is None:
        _, inside = _sampling_grid(flow_fw)
        return inside.to(flow_fw.dtype)
    if flow_bw.shape != flow_fw.shape:
        raise ValueError(f"occlusion_mask: forward {tuple(flow_fw.shape)} and backward {tuple(flow_bw.shape)} flows differ in shape.")
    back, inside = backward_warp(flow_bw.to(flow_fw.dtype), flow_fw)
    return (inside & fb_consistent(flow_fw, back, alpha1, alpha2)).to(flow_fw.dtype)


def fb_consistent(flow_fw: Tensor, back_warped: Tensor, alpha1: float = 0.01, alpha2: float = 0.5) -> Tensor:
    """The forward-backward test alone: ``|f + w|^2 <= alpha1 (|f|^2 + |w|^2) + alpha2``.

    ``flow_fw`` is a -> b on a's grid, ``back_warped`` the flow b -> a already resampled at
    ``p + flow_fw(p)`` (``backward_warp(flow_bw, flow_fw)``). Returns a bool ``(N, 1, H, W)``.
    """
    fx, fy = flow_fw[:, 0:1], flow_fw[:, 1:2]
    bx, by = back_warped[:, 0:1], back_warped[:, 1:2]
    err = (fx + bx).square_() + (fy + by).square_()
    f2b2 = fx * fx + fy * fy + bx * bx + by * by
    return err <= f2b2.mul_(alpha1).add_(alpha2)
