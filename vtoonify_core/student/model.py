"""The trained student: Stage I (``G``) and the optional Stage-II refiner (``R``) applied over a
clip in order, with a state carried between calls so a long clip can run a chunk at a time, and
its ``.safetensors`` file (weights plus the config in the metadata)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import validate_frames
from ..errors import InputError
from ..host_memory import reuse_host_memory
from ..types import MULTIPLE, SCALE, DeviceLike, PathLike, Progress
from ..weights import save_safetensors
from .network import CONTEXT, Refiner, StudentConfig, StudentUNet, context_frames

#: ``kind`` in the metadata of a student file
KIND = "vtoonify_student"
FORMAT_VERSION = "1"


@dataclass
class StudentState:
    """What the refiner carries from one call to the next: the last ``L`` source frames (oldest
    first) and the last refined output (folded: ``[1, 48, H, W]``, pixel unshuffle x4), on the
    student's device."""

    history: Optional[Tensor] = None
    prev: Optional[Tensor] = None


def check_student_frames(frames: Tensor, input_name: str = "frames") -> None:
    """Frames ``[T, 3, H, W]`` with finite values and sides that are multiples of 8."""
    validate_frames(frames, input_name)
    h, w = frames.shape[-2:]
    if h % MULTIPLE or w % MULTIPLE:
        raise InputError(input_name, f"the student needs frame sides that are multiples of {MULTIPLE}, got {w}x{h}: "
                                     f"crop or pad the frames (e.g. to {w - w % MULTIPLE}x{h - h % MULTIPLE}).")


def _unfold(folded: Tensor) -> Tensor:
    """Folded frames ``[B, 48, H, W]`` -> output frames ``[B, 3, 4H, 4W]``, float32 in [-1, 1]."""
    return F.pixel_shuffle(folded, SCALE).float().clamp_(-1.0, 1.0)


class Student(nn.Module):
    """``student(frames) -> [T, 3, 4H, 4W]`` in [-1, 1]: ``G`` on every frame, then the refiner in order.

    Attributes:
        config: the :class:`StudentConfig` it was built from.
        g: the Stage-I U-Net. r: the Stage-II refiner (``None`` without one).
        meta: free-form strings saved with it (teacher, steps, clip size ...).
    """

    def __init__(self, config: StudentConfig = StudentConfig(), meta: Optional[dict] = None) -> None:
        super().__init__()
        self.config = config
        self.g = StudentUNet(config.width, config.blocks, config.decoder_width)
        self.r: Optional[Refiner] = Refiner(config.refiner_width) if config.refiner else None
        self.meta: dict = dict(meta or {})

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def has_refiner(self) -> bool:
        return self.r is not None

    def forward(self, frames: Tensor, batch_size: int = 8, **kwargs) -> Tensor:  # noqa: D102 - see stylize
        return self.stylize(frames, batch_size=batch_size, **kwargs)[0]

    @torch.no_grad()
    def stylize(self, frames: Tensor, state: Optional[StudentState] = None, *, batch_size: int = 8,
                refine: bool = True, progress: Optional[Progress] = None,
                check_interrupt: Optional[Callable[[], None]] = None,
                output_device: Optional[DeviceLike] = None) -> tuple[Tensor, StudentState]:
        """Stylize a clip (or the next part of one) in order.

        Args:
            frames: ``[T, 3, H, W]`` in [-1, 1], consecutive, H and W multiples of 8, any device.
            state: from the previous call on the same clip (``None``: the clip starts here).
            batch_size: frames per ``G`` chunk on the device.
            refine: apply the refiner when there is one (``False``: Stage I alone).
            progress: ``progress(done, T)`` after each chunk; check_interrupt: before each chunk.
            output_device: where the result goes (default: the frames' device).

        Returns:
            ``([T, 3, 4H, 4W]`` float32 in [-1, 1], the state to pass with the next part).
        """
        check_student_frames(frames)
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise InputError("batch_size", f"must be at least 1, got {batch_size}.")
        t_all, _, h, w = frames.shape
        out_dev = torch.device(output_device) if output_device is not None else frames.device
        out = torch.empty(t_all, 3, SCALE * h, SCALE * w, device=out_dev, dtype=torch.float32)
        state = StudentState() if state is None else state
        dev, dt = self.device, self.dtype
        use_r = refine and self.r is not None
        with reuse_host_memory():  # the same large blocks every frame: reused, not mapped and zeroed anew
            for i in range(0, t_all, int(batch_size)):
                if check_interrupt is not None:
                    check_interrupt()
                # channels-last: the convolutions' native layout (about 1.3x faster on the CPU here)
                x = frames[i:i + batch_size].to(dev, dt).contiguous(memory_format=torch.channels_last)
                g = self.g.folded(x)
                if use_r:
                    for k in range(x.shape[0]):
                        prev = g[k:k + 1] if state.prev is None else state.prev
                        state.prev = y = self.r.folded(g[k:k + 1], prev, context_frames(x, k, state.history))
                        out[i + k:i + k + 1] = _unfold(y)
                    hist = x if state.history is None else torch.cat([state.history, x], 0)
                    state.history = hist[-CONTEXT:]
                else:
                    out[i:i + x.shape[0]] = _unfold(g)
                if progress is not None:
                    progress(min(i + x.shape[0], t_all), t_all)
        return out, state

    def save(self, path: PathLike) -> Path:
        """Write the weights (float32) and the config to ``path`` (``.safetensors``)."""
        meta = {"kind": KIND, "format": FORMAT_VERSION, "config": json.dumps(self.config.to_dict()),
                "meta": json.dumps({k: str(v) for k, v in self.meta.items()})}
        tensors = {k: v.detach().float() for k, v in self.state_dict().items()}
        path = Path(path)
        tmp = path.with_name(f".{path.name}.partial")  # written whole, then renamed: never a half file
        save_safetensors(tensors, tmp, meta)
        os.replace(tmp, path)
        return path
