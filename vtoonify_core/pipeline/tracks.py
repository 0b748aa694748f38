"""Stylizing the faces a :class:`~vtoonify_core.faces.tracks.FaceTracks` chose: each face's crops of every
frame (fixed or tracked), one face after the other, in face-major order.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import validate_frames
from ..errors import InputError
from ..faces.crop import apply_crop
from ..faces.tracks import FaceTracks
from ..frames import frame_uint8
from ..models.bundle import VToonifyModel
from ..types import DeviceLike, FaceParsing, Progress, StyleCode
from .stylize import _logits, stylize


def face_crops(frames: Tensor, tracks: FaceTracks, face: int, input_range: tuple[float, float]) -> Tensor:
    """The uint8 crops ``[B, 3, h, w]`` of face ``face`` in every frame (each frame its own geometry)."""
    b = frames.shape[0]
    h, w = tracks.crop_shape
    crops = np.empty((b, h, w, 3), np.uint8)
    for i in range(b):
        crops[i] = apply_crop(frame_uint8(frames, i, input_range), tracks.clips[face].geometries[i])
    return torch.from_numpy(crops).permute(0, 3, 1, 2)


def parsing_crops(logits: Tensor, tracks: FaceTracks, face: int) -> Tensor:
    """Frame-sized parsing logits ``[B, 19, H, W]`` cropped like face ``face``'s frames: each frame's maps
    resized (bilinear) to its rescaled frame and cut to its window (borders replicated outside the frame)."""
    out = []
    for i in range(logits.shape[0]):
        geo = tracks.clips[face].geometries[i]
        up = F.interpolate(logits[i:i + 1].float(), size=(geo.height, geo.width), mode="bilinear",
                           align_corners=False)
        pad = (max(0, -geo.left), max(0, geo.right - geo.width), max(0, -geo.top), max(0, geo.bottom - geo.height))
        if any(pad):
            up = F.pad(up, pad, mode="replicate")
        t, l = geo.top + pad[2], geo.left + pad[0]
        out.append(up[:, :, t:t + geo.crop_height, l:l + geo.crop_width])
    return torch.cat(out)


def stylize_tracks(model: VToonifyModel, frames: Tensor, style: StyleCode, tracks: FaceTracks, d_s: float = 0.5, *,
                   batch_size: int = 4, input_range: tuple[float, float] = (-1.0, 1.0),
                   progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None,
                   on_oom: Optional[Callable[[int], None]] = None, output_device: DeviceLike = "cpu",
                   sink: Callable[[int, Tensor], None], overlap: Optional[bool] = None,
                   parsing: Union[FaceParsing, Tensor, None] = None) -> None:
    """Stylize the chosen faces of a clip with :func:`~vtoonify_core.pipeline.stylize.stylize`.

    ``sink(item, chunk)`` receives the stylized crops ``[n, 3, 4h, 4w]`` in [-1, 1]; item ``k * B + i`` is
    face ``k`` of frame ``i``. Keyframed styles follow the frame numbers, for every face. ``parsing``: BiSeNet
    logits of the frames at their size (e.g. smoothed over time), cropped like each face
    (:func:`parsing_crops`); ``None``: every crop is parsed, as the official code does.

    Raises:
        InputError: frames that are not the ones the tracks were made for (count or size), bad frames,
        parsing maps of other frames.
    """
    validate_frames(frames, "images")
    b = frames.shape[0]
    tracks.check_frames(b, frames.shape[2:4])
    if tracks.whole:
        raise InputError("faces", "these are whole-frame crops (from Stylize Frames in whole frame mode): connect "
                                  "the faces output of Detect Faces (VToonify) instead.")
    logits = _logits(parsing, b)
    if logits is not None and tuple(logits.shape[2:]) != tuple(tracks.source_size):
        raise InputError("face_parsing", f"maps are {logits.shape[3]}x{logits.shape[2]} but the frames are "
                                         f"{tracks.source_size[1]}x{tracks.source_size[0]}: parse the same frames.")
    total = tracks.num_items
    for k in range(tracks.num_faces):
        crops = face_crops(frames, tracks, k, input_range)
        cropped = None if logits is None else parsing_crops(logits, tracks, k)
        base = k * b

        def prog(done: int, _total: int, _base: int = base) -> None:
            if progress is not None:
                progress(_base + done, total)

        def emit(i: int, y: Tensor, _base: int = base) -> None:
            sink(_base + i, y)

        stylize(model, crops, style, d_s, cropped, batch_size, prog, check_interrupt, output_device=output_device,
                on_oom=on_oom, sink=emit, overlap=overlap)
