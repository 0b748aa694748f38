"""Training data of the student: the teacher's outputs computed once and cached (in memory up to a
bound, else in a file on disk), the flows and validity masks between consecutive frames, the
background masks of the parsing, and the augmentation (flips, small affine, colour jitter)."""
from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..temporal.flow import DISFlow, estimate_flow, occlusion_mask, resize_flow
from ..types import SCALE, Progress

#: default bound of the teacher outputs held in memory (bytes, float16); longer clips go to disk
CACHE_MEMORY = 1 << 30
Teacher = Callable[[Tensor], Tensor]


class TeacherCache:
    """The teacher's outputs ``[T, 3, 4H, 4W]`` in float16, in memory or in a memory-mapped file.

    ``get(idx, device)`` gives float32 frames; :meth:`close` deletes the file.
    """

    def __init__(self, shape: tuple[int, int, int, int], memory_limit: int, folder: Optional[str] = None) -> None:
        nbytes = int(np.prod(shape)) * 2
        self.on_disk = nbytes > memory_limit
        self._dir: Optional[str] = None
        if self.on_disk:
            self._dir = tempfile.mkdtemp(prefix="vtoonify-student-", dir=folder)
            self._data = np.lib.format.open_memmap(str(Path(self._dir) / "teacher.npy"), mode="w+",
                                                   dtype=np.float16, shape=shape)
        else:
            self._data = np.empty(shape, dtype=np.float16)
        self.shape = shape

    def put(self, i: int, y: Tensor) -> None:
        self._data[i:i + y.shape[0]] = y.detach().to("cpu", torch.float16).numpy()

    def get(self, idx: Sequence[int], device: torch.device) -> Tensor:
        rows = np.stack([self._data[int(i)] for i in idx])
        return torch.from_numpy(rows).to(device, torch.float32)

    def close(self) -> None:
        self._data = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def run_teacher(teacher: Teacher, frames: Tensor, *, batch_size: int, memory_limit: int = CACHE_MEMORY,
                folder: Optional[str] = None, progress: Optional[Progress] = None,
                check_interrupt: Optional[Callable[[], None]] = None) -> TeacherCache:
    """Run ``teacher`` over ``frames`` once, chunk by chunk, checking each output.

    Raises:
        InputError: the teacher's output is not ``[b, 3, 4H, 4W]`` or holds NaN / infinity.
    """
    t, _, h, w = frames.shape
    cache = TeacherCache((t, 3, SCALE * h, SCALE * w), memory_limit, folder)
    try:
        for i in range(0, t, batch_size):
            if check_interrupt is not None:
                check_interrupt()
            x = frames[i:i + batch_size]
            with torch.no_grad():
                y = teacher(x)
            want = (x.shape[0], 3, SCALE * h, SCALE * w)
            if not isinstance(y, Tensor) or tuple(y.shape) != want:
                got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
                raise InputError("teacher", f"must map frames [b, 3, H, W] to stylized frames [b, 3, 4H, 4W] in "
                                            f"[-1, 1]: for {tuple(x.shape)} it returned {got}, expected {want}.")
            if not bool(torch.isfinite(y).all()):
                raise InputError("teacher", f"returned NaN or infinite values for frames {i}..{i + x.shape[0] - 1}; "
                                            f"check the teacher model and its style code.")
            cache.put(i, y.clamp(-1.0, 1.0))
            if progress is not None:
                progress(min(i + batch_size, t), t)
    except BaseException:
        cache.close()
        raise
    return cache


@dataclass
class Motion:
    """Flows ``t -> t-1`` on the source frames ``[T-1, 2, H, W]`` (pixels), where they are valid
    ``[T-1, 1, H, W]`` (in-image and forward-backward consistent) and the background masks
    ``[T, 1, H, W]`` (parsing), all at the input resolution on the CPU."""

    flow: Tensor
    valid: Tensor
    background: Tensor

    def at(self, t: Sequence[int], box: tuple[int, int, int, int], device: torch.device) -> tuple[Tensor, ...]:
        """Flow, validity and background of frames ``t`` (t >= 1) at the output resolution, cropped to
        ``box = (y, x, h, w)`` of the input."""
        y0, x0, h, w = box
        idx = torch.as_tensor([int(i) - 1 for i in t])
        fl = self.flow[idx][..., y0:y0 + h, x0:x0 + w].to(device)
        va = self.valid[idx][..., y0:y0 + h, x0:x0 + w].to(device)
        bg = self.background[idx + 1][..., y0:y0 + h, x0:x0 + w].to(device)
        size = (SCALE * h, SCALE * w)
        return (resize_flow(fl, size), F.interpolate(va, size=size, mode="nearest"),
                F.interpolate(bg, size=size, mode="bilinear", align_corners=False))


def compute_motion(frames: Tensor, background: Optional[Tensor], flow=None) -> Motion:
    """The project's DIS flow between consecutive frames (both ways, for the occlusion test)."""
    backend = flow or DISFlow("medium")
    x = frames.float().cpu()
    fw = estimate_flow(backend, x[1:], x[:-1])   # t -> t-1 on t's grid
    bw = estimate_flow(backend, x[:-1], x[1:])   # t-1 -> t
    valid = occlusion_mask(fw, bw)
    if background is None:
        background = torch.ones(x.shape[0], 1, x.shape[2], x.shape[3])
    return Motion(fw, valid, background.float().cpu())


# ---------------------------------------------------------------------------------------------- augmentation


def random_box(h: int, w: int, crop: int, gen: torch.Generator) -> tuple[int, int, int, int]:
    """A random crop ``(y, x, ch, cw)`` of at most ``crop`` px a side, on multiples of 8."""
    ch, cw = min(h, crop), min(w, crop)
    y = int(torch.randint(0, (h - ch) // 8 + 1, (1,), generator=gen)) * 8
    x = int(torch.randint(0, (w - cw) // 8 + 1, (1,), generator=gen)) * 8
    return y, x, ch, cw


def augment_pair(x: Tensor, y: Tensor, strength: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """The same random flip, small affine transform (rotation, scale, shift) and colour jitter on
    the sources ``x [B, 3, h, w]`` and the teacher's outputs ``y [B, 3, 4h, 4w]``.

    The jitter (brightness, contrast, saturation) is applied to both, so the student learns the
    teacher's look over a wider range of colours than the clip has (an approximation: the
    teacher would not respond to colour changes exactly linearly).
    """
    if strength <= 0:
        return x, y
    b, dev = x.shape[0], x.device

    def u(lo: float, hi: float) -> Tensor:
        return (lo + (hi - lo) * torch.rand(b, generator=gen)).to(dev)

    flip = (torch.rand(b, generator=gen) < 0.5).to(dev)
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    y = torch.where(flip.view(b, 1, 1, 1), y.flip(-1), y)
    ang = u(-5.0, 5.0) * strength * math.pi / 180
    sc = 1.0 + u(-0.05, 0.05) * strength
    tx, ty = u(-0.04, 0.04) * strength, u(-0.04, 0.04) * strength
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.dtype)
    x = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), mode="bilinear",
                      padding_mode="reflection", align_corners=False)
    y = F.grid_sample(y, F.affine_grid(theta, list(y.shape), align_corners=False), mode="bilinear",
                      padding_mode="reflection", align_corners=False)
    bright = u(-0.1, 0.1).view(b, 1, 1, 1) * strength
    contrast = (1.0 + u(-0.1, 0.1) * strength).view(b, 1, 1, 1)
    sat = (1.0 + u(-0.1, 0.1) * strength).view(b, 1, 1, 1)

    def jitter(t: Tensor) -> Tensor:
        gray = t.mean(1, keepdim=True)
        t = gray + (t - gray) * sat
        mean = t.mean((1, 2, 3), keepdim=True)
        return ((t - mean) * contrast + mean + bright).clamp(-1.0, 1.0)

    return jitter(x), jitter(y)
