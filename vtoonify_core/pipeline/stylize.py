"""Stylization of frames that are already VToonify-sized: ``clamp(generator(cat(x, parse(x) / 16), s_w, d_s))``
chunk by chunk, with a single style code or keyframed styles.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from ..checks import check_style_degree, validate_frames
from ..errors import InputError
from ..frames import make_inputs, to_model_range
from ..host_memory import reuse_host_memory
from ..models.bisenet import parse_frames
from ..models.bundle import VToonifyModel
from ..runtime.chunks import run_chunks_overlapped
from ..runtime.memory import allocate_output, check_fits
from ..runtime.memory import chunk_size as _chunk_size
from ..styles.codes import check_style
from ..styles.schedules import StyleSchedule, forward_scheduled
from ..types import MULTIPLE, N_CLASSES, SCALE, DeviceLike, FaceParsing, Progress, StyleCode


def _logits(parsing: Union[FaceParsing, Tensor, None], n_frames: int) -> Optional[Tensor]:
    if parsing is None:
        return None
    logits = parsing.logits if isinstance(parsing, FaceParsing) else parsing
    if not isinstance(logits, Tensor) or logits.ndim != 4 or logits.shape[1] != N_CLASSES:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InputError("face_parsing", f"expected BiSeNet logits [B, {N_CLASSES}, H, W], got {shape}.")
    if logits.shape[0] != n_frames:
        raise InputError("face_parsing", f"holds {logits.shape[0]} frames but there are {n_frames} images: parse "
                                         f"the same frames that are stylized.")
    return logits


def _check_common(model: VToonifyModel, frames: Tensor, style: StyleCode, d_s: float, batch_size: int) -> float:
    validate_frames(frames, "images")
    check_style(model, style, allow_schedule=True)
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 0:
        raise InputError("batch_size", f"must be 0 (automatic, from the free memory) or at least 1, got {batch_size}.")
    return check_style_degree(d_s) if model.backbone == "dualstylegan" else float(d_s)


def _run(model: VToonifyModel, n: int, load: Callable[[int, int], Sequence[Tensor]],
         prepare: Callable[[Tensor], Tensor], prepare_parsing: Optional[Callable[[Tensor], Tensor]],
         style: StyleCode, d_s: float, batch_size: int, progress, check_interrupt, on_oom, output_device,
         emit: Callable[[int, Tensor], None], overlap: Optional[bool] = None, frame_offset: int = 0) -> None:
    """Stylize ``n`` frames chunk by chunk with :func:`run_chunks_overlapped`.

    ``load(i, j)`` gives the chunk's frames as they are transferred (and its parsing maps, second,
    when given); on the device ``prepare`` makes VToonify's frames (in [-1, 1], model dtype) and
    ``prepare_parsing`` the logits at the input size (``None``: the frames are parsed).
    """
    schedule = style if isinstance(style, StyleSchedule) else None
    s_w = None if schedule is not None else style.wplus.to(model.device, model.dtype)

    def compute(inputs: Sequence[Tensor], i: int, j: int) -> Tensor:
        x = prepare(inputs[0])
        with torch.inference_mode():
            x_p = parse_frames(model.parser, x) if prepare_parsing is None else prepare_parsing(inputs[1])
            if schedule is not None:  # per-frame styles and degrees
                y = forward_scheduled(model.generator, make_inputs(x, x_p), schedule, i + frame_offset, d_s)
            else:
                y = model.generator(make_inputs(x, x_p), s_w.expand(j - i, -1, -1), d_s=d_s)
            return y.float().clamp_(-1.0, 1.0)

    # on CPU the chunks reuse each other's activation memory instead of page-faulting it afresh
    reuse = model.device.type == "cpu" and getattr(model.generator, "reuse_host_memory", False)
    with reuse_host_memory(reuse):
        for i, y in run_chunks_overlapped(load, compute, n, batch_size, device=model.device,
                                          output_device=output_device, progress=progress,
                                          check_interrupt=check_interrupt, on_oom=on_oom, overlap=overlap):
            emit(i, y)


def stylize(model: VToonifyModel, frames: Tensor, style: StyleCode, d_s: float = 0.5,
            parsing: Union[FaceParsing, Tensor, None] = None, batch_size: int = 4,
            progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None, *,
            input_range: tuple[float, float] = (-1.0, 1.0), output_device: DeviceLike = "cpu",
            on_oom: Optional[Callable[[int], None]] = None,
            sink: Optional[Callable[[int, Tensor], None]] = None, overlap: Optional[bool] = None,
            frame_offset: int = 0) -> Optional[Tensor]:
    """Toonify frames in chunks: ``clamp(generator(cat(x, parse(x) / 16), s_w, d_s), -1, 1)``.

    Args:
        model: the bundle (computation runs on ``model.device`` in ``model.dtype``).
        frames: ``[B, 3, H, W]``, H and W multiples of 8; float in ``input_range`` (default
            [-1, 1], the official normalisation) or uint8 0..255. Any device; each chunk is
            moved to the model's device.
        style: from :func:`extract_style`; must match the model's backbone. A
            :class:`~vtoonify_core.styles.StyleSchedule` gives every frame its own style
            and degree (frame index = position in ``frames``).
        d_s: style degree in [0, 1] (VToonify-D; ignored by VToonify-T); with a schedule, the
            degree of keyframes that have none.
        parsing: BiSeNet logits ``[B, 19, H, W]`` (e.g. temporally smoothed); parsed per chunk
            when ``None`` (:func:`~vtoonify_core.models.bisenet.parse_frames`).
        batch_size: frames per chunk; 0 = automatic: as many as fit in the free memory of the
            model's device (:func:`auto_batch_size`). Halved on out-of-memory errors (and kept halved).
        progress: ``progress(frames_done, total)`` after each chunk.
        check_interrupt: called before each chunk; raise to stop.
        output_device: where the result is gathered; each chunk is moved there as it completes,
            so a long clip never holds more than one chunk of intermediates on the model's device
            (peak device memory does not grow with the clip length).
        on_oom: called with the new chunk size after an out-of-memory error.
        sink: if given, ``sink(start, chunk)`` receives each finished chunk (float32 in [-1, 1]
            on ``output_device``; from a CUDA model, in pinned host memory: copy it if it is
            kept) and nothing is gathered (returns ``None``).
        frame_offset: the clip frame of ``frames[0]``: keyframed styles follow the clip's frame
            numbers when a long clip is stylized a part at a time.
        overlap: copy the next chunk to the device and the last result back while a chunk
            computes (:func:`run_chunks_overlapped`); default: with a CUDA model. The result does
            not depend on it.

    Returns:
        ``[B, 3, 4H, 4W]`` float32 in [-1, 1] (clamped) on ``output_device``, or ``None`` with ``sink``.
    """
    d_s = _check_common(model, frames, style, d_s, batch_size)
    b, _, h, w = frames.shape
    if h % MULTIPLE or w % MULTIPLE:
        raise InputError("images", f"VToonify needs frame sides that are multiples of {MULTIPLE}, got {w}x{h}: pad "
                                   f"them (crop mode 'whole frame (pad to 8)') or crop them.")
    logits = _logits(parsing, b)
    if logits is not None and tuple(logits.shape[2:]) != (h, w):
        raise InputError("face_parsing", f"maps are {logits.shape[3]}x{logits.shape[2]} but the frames are {w}x{h}: "
                                         f"parse the same frames that are stylized.")
    check_fits(model, (h, w), frames=b, output_device=output_device,
               output_bytes_per_frame=0 if sink is not None else 3 * SCALE * h * SCALE * w * 4)
    out = None if sink is not None else allocate_output((b, 3, SCALE * h, SCALE * w), output_device)
    size = _chunk_size(model, b, batch_size, (h, w))  # after the output, which may be on the device

    def load(i: int, j: int) -> tuple[Tensor, ...]:
        return (frames[i:j],) if logits is None else (frames[i:j], logits[i:j])

    def prepare(raw: Tensor) -> Tensor:
        return to_model_range(raw, input_range).to(model.dtype)

    def emit(i: int, y: Tensor) -> None:
        if sink is not None:
            sink(i, y)
        else:
            out[i:i + y.shape[0]] = y

    _run(model, b, load, prepare, None if logits is None else (lambda raw: raw), style, d_s, size, progress,
         check_interrupt, on_oom, output_device, emit, overlap, frame_offset)
    return out
