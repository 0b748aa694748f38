"""Whole clips of any size: the official face crop (eyes 64 px apart, fixed from the first face)
or the whole frame padded to multiples of 8, then stylized; the plan says where the output goes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import check_crop_mode, check_face_padding, validate_frames
from ..errors import InputError, NoFaceError
from ..faces.base import no_face_message
from ..faces.crop import apply_crop, crop_geometry, paste_back
from ..faces.detect import detect_faces
from ..frames import FramePadding, apply_padding, crop_padding, frame_uint8, padding_for, to_model_range
from ..models.bundle import VToonifyModel
from ..runtime.memory import allocate_output, check_fits
from ..runtime.memory import chunk_size as _chunk_size
from ..types import DEFAULT_FACE_PADDING, MULTIPLE, N_CLASSES, SCALE, DeviceLike, FaceParsing, Progress, StyleCode
from .stylize import _check_common, _logits, _run

#: What to change when a clip does not fit in memory, by crop mode.
FIT_ADVICE = {"whole": "use crop mode 'face' (the official crop around the face) or downscale the frames",
              "face": "use a smaller face_padding or downscale the frames"}


@dataclass(frozen=True, eq=False)
class ClipPlan:
    """How a clip is fed to VToonify.

    Attributes:
        mode: ``'face'`` (official crop) or ``'whole'`` (whole frame padded to multiples of 8).
        source_size: ``(H, W)`` of the input frames.
        input_size: ``(h, w)`` of what VToonify receives (the crop, or the padded frame).
        crops: face mode: the uint8 crops ``[B, 3, h, w]``; whole mode: ``None`` (frames are
            padded chunk by chunk).
        geometry: face mode: the :class:`~vtoonify_core.faces.crop.CropGeometry`.
        padding: whole mode: the :class:`FramePadding`.
        reference_index: face mode: the frame whose face set the crop.
    """

    mode: str
    source_size: tuple[int, int]
    input_size: tuple[int, int]
    crops: Optional[Tensor] = None
    geometry: object = None
    padding: Optional[FramePadding] = None
    reference_index: int = 0

    @property
    def output_size(self) -> tuple[int, int]:
        """``(height, width)`` of the stylized frames: 4x the crop, or 4x the original frame."""
        if self.mode == "face":
            return SCALE * self.input_size[0], SCALE * self.input_size[1]
        return SCALE * self.source_size[0], SCALE * self.source_size[1]

    def region_mask(self) -> Tensor:
        """``[H, W]`` float32: where the input frame is covered by the output (1 inside, edges fractional)."""
        H, W = self.source_size
        if self.mode != "face":
            return torch.ones(H, W, dtype=torch.float32)
        geo = self.geometry
        dummy = np.zeros((geo.crop_height, geo.crop_width, 3), np.uint8)
        _, mask = paste_back(np.zeros((H, W, 3), np.uint8), dummy, geo)
        return torch.from_numpy(mask)

    def box(self) -> tuple[int, int, int, int]:
        """``(x, y, width, height)`` in input pixels of the covered region (mask >= 0.5)."""
        H, W = self.source_size
        if self.mode != "face":
            return 0, 0, W, H
        m = self.region_mask() >= 0.5
        rows, cols = torch.nonzero(m.any(1)).flatten(), torch.nonzero(m.any(0)).flatten()
        if len(rows) == 0:
            return 0, 0, 0, 0
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        return x0, y0, x1 - x0, y1 - y0

    def raw_frames(self, frames: Tensor, i: int, j: int) -> Tensor:
        """Frames ``i..j`` as they are transferred to the device: the uint8 crops (face mode) or the
        input frames (whole mode)."""
        return self.crops[i:j] if self.mode == "face" else frames[i:j]

    def prepare_frames(self, raw: Tensor, dtype: torch.dtype, input_range: tuple[float, float]) -> Tensor:
        """VToonify's frames in [-1, 1] in ``dtype`` from :meth:`raw_frames` (on any device)."""
        if self.mode == "face":
            return to_model_range(raw).to(dtype)
        x = to_model_range(raw, input_range)
        return apply_padding(x, self.padding, "reflect").to(dtype)

    def load(self, frames: Tensor, i: int, j: int, device: DeviceLike, dtype: torch.dtype,
             input_range: tuple[float, float]) -> Tensor:
        """VToonify's frames ``i..j`` in [-1, 1], on ``device`` in ``dtype``."""
        return self.prepare_frames(self.raw_frames(frames, i, j).to(device), dtype, input_range)

    def parsing(self, logits: Tensor, i: int, j: int, device: DeviceLike) -> Tensor:
        """Parsing logits of frames ``i..j`` at VToonify's input size (see :func:`stylize_clip`)."""
        return self.prepare_parsing(logits[i:j].to(device))

    def parsing_bytes(self, logits_size: tuple[int, int]) -> int:
        """Memory per frame that :meth:`prepare_parsing` adds for maps of ``logits_size`` beyond what
        :func:`frame_memory_bytes` counts (maps at the input size add nothing)."""
        h, w = self.input_size
        if self.mode == "whole":  # the float32 padded copy
            return 0 if tuple(logits_size) == (h, w) else N_CLASSES * 4 * h * w
        if tuple(logits_size) != tuple(self.source_size):  # parsed on the crops
            return 0
        geo, (sh, sw) = self.geometry, logits_size  # resized to the rescaled frame, then cropped
        return N_CLASSES * 4 * (geo.height * geo.width + 3 * sh * sw)

    def prepare_parsing(self, lg: Tensor) -> Tensor:
        """Parsing logits at VToonify's input size from the maps of some frames (on any device)."""
        size = tuple(lg.shape[2:])
        if self.mode == "whole":
            return lg if size == self.input_size else apply_padding(lg.float(), self.padding, "reflect")
        if size != self.source_size:  # already parsed on the crops
            return lg
        geo = self.geometry
        up = F.interpolate(lg.float(), size=(geo.height, geo.width), mode="bilinear", align_corners=False)
        return up[:, :, geo.top:geo.bottom, geo.left:geo.right]

    def finish(self, y: Tensor) -> Tensor:
        """A stylized chunk as returned to the caller (whole mode: cropped back to 4x the original)."""
        if self.mode == "whole":
            return crop_padding(y, self.padding, SCALE)
        return y


def plan_clip(frames: Tensor, mode: str = "face", *, input_range: tuple[float, float] = (-1.0, 1.0),
              face_padding: int = DEFAULT_FACE_PADDING, backend="dlib", pick: str = "score",
              index: int = 0) -> ClipPlan:
    """Decide how a clip is fed to VToonify.

    * ``'face'``: the official rule: the first frame with a face sets the geometry (frame rescaled
      so the eyes are 64 px apart, a window ``face_padding`` px on each side of the eye centre,
      sides multiples of 8, pre-blur when shrinking) and every frame is cropped with it, in uint8
      as the official code does (one frame converted at a time).
    * ``'whole'``: the whole frame, padded by reflection to multiples of 8 (chunk by chunk); the
      output is cropped back to 4x the original.

    ``pick``/``index`` choose the face (:func:`~vtoonify_core.faces.pick_face`); by default the best-scoring
    face that can be cropped.

    Raises:
        InputError: empty batch, NaNs, a frame too small to pad or to crop.
        NoFaceError: face mode and no face in any frame.
    """
    validate_frames(frames, "images")
    check_crop_mode(mode)
    b, _, H, W = frames.shape
    if mode == "whole":
        try:
            pad = padding_for(H, W, MULTIPLE, "reflect")
        except ValueError as exc:
            raise InputError("images", f"{exc}.") from None
        return ClipPlan("whole", (H, W), (H + pad.top + pad.bottom, W + pad.left + pad.right), padding=pad)
    pad = (check_face_padding(face_padding),) * 4
    geometry, ref, too_small = None, -1, None
    for i in range(b):
        img = frame_uint8(frames, i, input_range)
        found = detect_faces(img, backend=backend, order=pick)
        for face in (found if index == 0 else found[index:index + 1]):
            try:
                geometry = crop_geometry(face.landmarks, img.shape, pad)
                break
            except ValueError as exc:
                too_small = exc
        if geometry is not None:
            ref = i
            break
    if geometry is None:
        if too_small is not None:
            raise InputError("images", f"a face was found but cannot be cropped: {too_small}; use crop mode "
                                       f"'whole frame (pad to 8)' or a larger face_padding.")
        raise NoFaceError(no_face_message("the image" if b == 1 else f"any of the {b} frames"))
    crops = np.empty((b, geometry.crop_height, geometry.crop_width, 3), np.uint8)
    for i in range(b):
        crops[i] = apply_crop(frame_uint8(frames, i, input_range), geometry)
    return ClipPlan("face", (H, W), geometry.crop_shape, crops=torch.from_numpy(crops).permute(0, 3, 1, 2),
                    geometry=geometry, reference_index=ref)


def stylize_clip(model: VToonifyModel, frames: Tensor, style: StyleCode, d_s: float = 0.5, *,
                 crop_mode: str = "face", parsing: Union[FaceParsing, Tensor, None] = None, batch_size: int = 4,
                 face_padding: int = DEFAULT_FACE_PADDING, input_range: tuple[float, float] = (-1.0, 1.0),
                 progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None,
                 on_oom: Optional[Callable[[int], None]] = None, output_device: DeviceLike = "cpu",
                 sink: Optional[Callable[[int, Tensor], None]] = None, backend="dlib", overlap: Optional[bool] = None,
                 gathered: Optional[bool] = None, frame_offset: int = 0) -> tuple[Optional[Tensor], ClipPlan]:
    """Crop (face mode) or pad (whole mode) a clip with :func:`plan_clip`, then stylize it.

    Before any stylization the memory is checked (:func:`~vtoonify_core.runtime.memory.check_fits`):
    one frame on the model's device and, when ``gathered`` (default: without ``sink``), the float32
    output of every frame on ``output_device``; what cannot fit is refused with what to change.

    Arguments are as for :func:`stylize` (frames of any size). ``parsing`` may be at VToonify's
    input size (the crop / padded frame) or at the input frame size: then it is padded the same
    way (whole mode), or resized bilinearly and cropped with the face geometry (face mode; for
    exact official parity leave it ``None``: the crop itself is parsed, as the official code does).
    All arguments are checked before any face detection. ``batch_size=0`` picks the chunk size
    from the free memory for the planned input size (:func:`auto_batch_size`).

    Returns:
        ``(images, plan)``: ``[B, 3, 4h, 4w]`` float32 in [-1, 1] on ``output_device`` (``None``
        with ``sink``; whole mode chunks are cropped back to 4x the original before they reach
        ``sink``), and the :class:`ClipPlan` (region mask and box in the input frame).
    """
    d_s = _check_common(model, frames, style, d_s, batch_size)
    b = frames.shape[0]
    logits = _logits(parsing, b)
    if logits is not None and tuple(logits.shape[2:]) != tuple(frames.shape[2:]):
        if crop_mode != "face":
            raise InputError("face_parsing", f"maps are {logits.shape[3]}x{logits.shape[2]} but the frames are "
                                             f"{frames.shape[3]}x{frames.shape[2]}: parse the same frames.")
    plan = plan_clip(frames, crop_mode, input_range=input_range, face_padding=face_padding, backend=backend)
    if logits is not None and tuple(logits.shape[2:]) not in (plan.source_size, plan.input_size):
        raise InputError("face_parsing", f"maps are {logits.shape[3]}x{logits.shape[2]} but the frames are "
                                         f"{plan.source_size[1]}x{plan.source_size[0]} (crop "
                                         f"{plan.input_size[1]}x{plan.input_size[0]}): parse the same frames.")
    oh, ow = plan.output_size
    check_fits(model, plan.input_size, frames=b, output_device=output_device,
               output_bytes_per_frame=3 * oh * ow * 4 if (sink is None if gathered is None else gathered) else 0,
               advice=FIT_ADVICE[plan.mode])
    out = None if sink is not None else allocate_output((b, 3, oh, ow), output_device)
    extra = 0 if logits is None else plan.parsing_bytes(tuple(logits.shape[2:]))
    size = _chunk_size(model, b, batch_size, plan.input_size, extra)  # after the output (maybe on the device)

    def emit(i: int, y: Tensor) -> None:
        y = plan.finish(y)
        if sink is not None:
            sink(i, y)
        else:
            out[i:i + y.shape[0]] = y

    def load(i: int, j: int) -> tuple[Tensor, ...]:
        raw = plan.raw_frames(frames, i, j)
        return (raw,) if logits is None else (raw, logits[i:j])

    def prepare(raw: Tensor) -> Tensor:
        return plan.prepare_frames(raw, model.dtype, input_range)

    _run(model, b, load, prepare, None if logits is None else plan.prepare_parsing, style, d_s, size, progress,
         check_interrupt, on_oom, output_device, emit, overlap, frame_offset)
    return out, plan
