"""Stylizing the faces a :class:`~vtoonify_core.faces.tracks.FaceTracks` chose: each face's crops of every
frame (fixed or tracked), one face after the other, in face-major order.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from ..checks import validate_frames
from ..errors import InputError
from ..faces.crop import apply_crop
from ..faces.tracks import FaceTracks
from ..frames import frame_uint8
from ..models.bundle import VToonifyModel
from ..types import DeviceLike, Progress, StyleCode
from .stylize import stylize


def face_crops(frames: Tensor, tracks: FaceTracks, face: int, input_range: tuple[float, float]) -> Tensor:
    """The uint8 crops ``[B, 3, h, w]`` of face ``face`` in every frame (each frame its own geometry)."""
    b = frames.shape[0]
    h, w = tracks.crop_shape
    crops = np.empty((b, h, w, 3), np.uint8)
    for i in range(b):
        crops[i] = apply_crop(frame_uint8(frames, i, input_range), tracks.clips[face].geometries[i])
    return torch.from_numpy(crops).permute(0, 3, 1, 2)


def stylize_tracks(model: VToonifyModel, frames: Tensor, style: StyleCode, tracks: FaceTracks, d_s: float = 0.5, *,
                   batch_size: int = 4, input_range: tuple[float, float] = (-1.0, 1.0),
                   progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None,
                   on_oom: Optional[Callable[[int], None]] = None, output_device: DeviceLike = "cpu",
                   sink: Callable[[int, Tensor], None], overlap: Optional[bool] = None) -> None:
    """Stylize the chosen faces of a clip with :func:`~vtoonify_core.pipeline.stylize.stylize`.

    ``sink(item, chunk)`` receives the stylized crops ``[n, 3, 4h, 4w]`` in [-1, 1]; item ``k * B + i`` is
    face ``k`` of frame ``i``. Keyframed styles follow the frame numbers, for every face.

    Raises:
        InputError: frames that are not the ones the tracks were made for (count or size), bad frames.
    """
    validate_frames(frames, "images")
    b = frames.shape[0]
    tracks.check_frames(b, frames.shape[2:4])
    if tracks.whole:
        raise InputError("faces", "these are whole-frame crops (from Stylize Frames in whole frame mode): connect "
                                  "the faces output of Detect Faces (VToonify) instead.")
    total = tracks.num_items
    for k in range(tracks.num_faces):
        crops = face_crops(frames, tracks, k, input_range)
        base = k * b

        def prog(done: int, _total: int, _base: int = base) -> None:
            if progress is not None:
                progress(_base + done, total)

        def emit(i: int, y: Tensor, _base: int = base) -> None:
            sink(_base + i, y)

        stylize(model, crops, style, d_s, None, batch_size, prog, check_interrupt, output_device=output_device,
                on_oom=on_oom, sink=emit, overlap=overlap)
