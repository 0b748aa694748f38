"""Face parsing of clips: BiSeNet logits chunk by chunk, soft class masks and a colour-coded view.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ..checks import validate_frames
from ..errors import InputError
from ..frames import to_model_range
from ..models.bisenet import parse_frames
from ..models.bundle import FaceParserModel
from ..runtime.chunks import run_chunks_overlapped
from ..runtime.memory import allocate_output
from ..types import CLASS_COLORS, CLASS_GROUPS, CLASS_NAMES, N_CLASSES, DeviceLike, FaceParsing, Progress


def parse(parser: FaceParserModel, frames: Tensor, *, input_range: tuple[float, float] = (-1.0, 1.0),
          batch_size: int = 4, progress: Optional[Progress] = None,
          check_interrupt: Optional[Callable[[], None]] = None, on_oom: Optional[Callable[[int], None]] = None,
          output_device: DeviceLike = "cpu", overlap: Optional[bool] = None) -> FaceParsing:
    """Parse frames with the official VToonify recipe; logits float32 on ``output_device``.

    Chunks of ``batch_size`` frames run with :func:`run_chunks_overlapped` (``overlap`` as there:
    on CUDA the frames travel through pinned memory while the previous chunk is parsed).
    """
    validate_frames(frames, "images")
    b, _, h, w = frames.shape
    out = allocate_output((b, N_CLASSES, h, w), output_device)

    def compute(inputs: Sequence[Tensor], i: int, j: int) -> Tensor:
        x = to_model_range(inputs[0], input_range).to(parser.dtype)
        with torch.inference_mode():
            return parse_frames(parser.parser, x).float()

    for i, y in run_chunks_overlapped(lambda i, j: (frames[i:j],), compute, b, batch_size, device=parser.device,
                                      output_device=output_device, progress=progress,
                                      check_interrupt=check_interrupt, on_oom=on_oom, overlap=overlap):
        out[i:i + y.shape[0]] = y
    return FaceParsing(out)


def resolve_classes(selection: Union[Sequence[Union[int, str]], None]) -> list[int]:
    """Class indices from indices, class names (``'l_eye'``) or group names (``'eyes'``).

    Raises:
        InputError: unknown names or indices.
    """
    out: list[int] = []
    for item in selection or ():
        if isinstance(item, (int, np.integer)) and 0 <= int(item) < N_CLASSES:
            idx = [int(item)]
        elif isinstance(item, str) and item in CLASS_GROUPS:
            idx = list(CLASS_GROUPS[item])
        elif isinstance(item, str) and item in CLASS_NAMES:
            idx = [CLASS_NAMES.index(item)]
        else:
            raise InputError("classes", f"unknown face class {item!r}; use 0..18, a class "
                                        f"({', '.join(CLASS_NAMES)}) or a group ({', '.join(CLASS_GROUPS)}).")
        out.extend(i for i in idx if i not in out)
    return out


def class_mask(parsing: FaceParsing, classes: Sequence[Union[int, str]], chunk: int = 16) -> Tensor:
    """Soft mask ``[T, H, W]`` in [0, 1]: the summed softmax probability of the chosen classes."""
    idx = resolve_classes(classes)
    t, _, h, w = parsing.logits.shape
    out = torch.zeros(t, h, w, dtype=torch.float32, device=parsing.logits.device)
    if not idx:
        return out
    for i in range(0, t, chunk):
        prob = torch.softmax(parsing.logits[i:i + chunk].float(), dim=1)
        out[i:i + chunk] = prob[:, idx].sum(dim=1).clamp_(0.0, 1.0)
    return out


def color_map(parsing: FaceParsing, chunk: int = 16) -> Tensor:
    """Colour-coded classes (argmax), ``[T, 3, H, W]`` float32 in [0, 1] (see :data:`CLASS_COLORS`)."""
    t, _, h, w = parsing.logits.shape
    palette = torch.tensor(CLASS_COLORS, dtype=torch.float32, device=parsing.logits.device) / 255.0
    out = torch.empty(t, 3, h, w, dtype=torch.float32, device=parsing.logits.device)
    for i in range(0, t, chunk):
        labels = parsing.logits[i:i + chunk].argmax(dim=1)
        out[i:i + chunk] = palette[labels].permute(0, 3, 1, 2)
    return out
