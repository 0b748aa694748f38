"""Memory of one frame at its peak and the automatic chunk size that fits the free memory.

The estimate follows what the forward pass keeps alive at each step; docs/design.md gives how it
was checked against measured peaks.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch

from ..errors import InputError, OutOfMemoryError, is_oom
from ..models.bundle import VToonifyModel
from ..models.stylegan import channel_table
from ..types import BACKBONE_NAMES, MULTIPLE, N_CLASSES, SCALE, DeviceLike
from .device import free_memory_bytes

logger = logging.getLogger("vtoonify")


# ----------------------------------------------------------------------------------------------
# chunk size from free memory

#: Default cap on the peak memory of one automatic chunk (the "< 8 GB at 1024x1024 output" target).
DEFAULT_CHUNK_BUDGET = 8 * 2 ** 30
#: Default cap on the frames of one automatic chunk (larger chunks only delay the first result).
DEFAULT_MAX_BATCH = 16
#: Share of the free memory an automatic chunk may take; the rest is left for allocator
#: fragmentation, convolution workspaces and other users of the device.
FREE_MEMORY_FRACTION = 0.8


def frame_memory_bytes(backbone: str, height: int, width: int, dtype: torch.dtype) -> int:
    """Upper bound of the memory one frame of a chunk takes on the model's device at its peak, in bytes.

    For a VToonify input of ``height`` x ``width`` (rounded up to multiples of 8; the output is 4x
    that) computed in ``dtype``, with the frame parsed inside the chunk (BiSeNet on the 2x
    up-sampled frame, :func:`~vtoonify_core.models.bisenet.parse_frames`) or parsing maps given. The
    count follows what the forward pass keeps alive at each step (``VToonify._body``), taking
    the larger of the plain and the fast path (on the plain path the modulation, demodulation,
    bias and activation are separate ops, so up to five maps of the last stage are alive at once):

    * held through the chunk: the frames as transferred (float32 at most) and the prefetched next
      chunk, given parsing maps (float32) and their prefetch, the previous chunk's float32 output
      until its copy to the host ends, the frame in [-1, 1], the parsing logits, VToonify's
      22-channel input and its channels-last copy;
    * BiSeNet: the 2x frame, its scaled copy, the 64-channel stem convolution and its batch norm
      (at the input size: the stem has stride 2);
    * encoder: each block's convolution and activation outputs; the block outputs (128, 256, 512
      and 512 channels at 1, 1/2, 1/4 and 1/8 the input size) stay alive to the end for the fusions;
    * the five decoder stages (1/8 -> 4x): the fusion (VToonify-D: instance-norm statistics in
      float32 over the 2C-channel concatenation, and the gated features), the up-sampling
      convolution (transposed-convolution output, blur, demodulation, bias, activation), the
      second convolution, ToRGB and the up-sampled skip image;
    * the result: the channels-last image, its contiguous copy and its float32 copy.

    A chunk of ``n`` frames takes ``n`` times this (every activation has the batch dimension).
    Not counted: the weights (on the device already), per-layer weight temporaries that do not
    grow with the frame (the plain path's modulated weights, backend weight reorders: 10-20 MiB
    measured on CPU), allocator fragmentation and convolution workspaces; :func:`auto_batch_size`
    leaves a share of the free memory for them, and the chunk runner's out-of-memory back-off
    remains the safety net. Measured on CPU (stand-in weights, fp32 and bf16, 64-256 px, peak RSS
    with freed memory returned at once): 0.92-0.98x this per frame on the plain path, 0.45-0.75x
    on the fast path (``tests/test_pipeline_speed.py``).

    Raises:
        ValueError: unknown backbone, or a side smaller than 1.
    """
    if backbone not in BACKBONE_NAMES:
        raise ValueError(f"unknown backbone {backbone!r}; use one of {', '.join(BACKBONE_NAMES)}")
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"the frame size must be at least 1x1, got {width}x{height}")
    dual = backbone == "dualstylegan"
    e = torch.empty((), dtype=dtype).element_size()
    f32 = 4
    h, w = -(-int(height) // MULTIPLE) * MULTIPLE, -(-int(width) // MULTIPLE) * MULTIPLE
    px = h * w
    ch = channel_table(2)  # the official channel multiplier
    rgb_out = 3 * SCALE * SCALE * px  # elements of the 4x output image

    def adain(elements: int) -> int:
        """AdaIN's float32 temporaries: a float copy (unless already float32), the centred values, their square."""
        return elements * f32 * (3 if e != f32 else 2)

    held = (2 * 3 * px * f32 + 2 * N_CLASSES * px * f32 + rgb_out * f32
            + (3 + N_CLASSES + 2 * (3 + N_CLASSES)) * px * e)
    phases = [2 * 3 * 4 * px * e + 2 * 64 * px * e]  # BiSeNet: 2x frame, 2 * it, stem conv + batch norm
    features = 0  # encoder outputs kept for the fusions
    for k in range(4):  # encoder levels 1, 1/2, 1/4, 1/8 of the input size
        n, c = (h >> k) * (w >> k), ch[256 >> k]
        phases.append(features + 2 * c * n * e)  # a convolution's output and its leaky ReLU
        features += c * n * e
    n8, c8 = (h >> 3) * (w >> 3), ch[32]
    block = c8 * n8 * e  # residual blocks at 1/8 (VToonify-D: ModRes blocks with AdaIN)
    phases.append(features + block + max(4 * block, adain(c8 * n8) + block if dual else 0))
    skip = 3 * n8 * e
    masks = 0
    for s in range(5):  # decoder: up-sampling stages from 1/8 of the input to 4x
        hs, ws = (h >> 3) << s, (w >> 3) << s
        n_in, n_out = hs * ws, 4 * hs * ws
        a_in, a_out = ch[32 << s] * n_in * e, ch[64 << s] * n_out * e
        base = features + skip + masks
        if s < 4:  # fusion with the encoder feature of this size
            if dual:
                phases.append(base + max(3 * a_in + adain(2 * ch[32 << s] * n_in), 7 * a_in))
                masks += n_in * e
            else:
                phases.append(base + 4 * a_in)
        transposed = ch[64 << s] * (2 * hs + 1) * (2 * ws + 1) * e  # before the blur crops it
        phases.append(base + max(2 * a_in + transposed + a_out, a_in + 4 * a_out))  # up-sampling conv
        phases.append(base + 5 * a_out)  # second conv: input, modulated input, conv, bias, activation
        rgb = 3 * n_out * e
        phases.append(base + 2 * a_out + 5 * rgb)  # ToRGB and the up-sampled skip image
        skip = rgb
    phases.append(features + masks + rgb_out * (2 * e + (f32 if e != f32 else 0)))
    return int(held + max(phases))


def auto_batch_size(model: VToonifyModel, height: int, width: int, *, free_bytes: Optional[int] = None,
                    budget_bytes: int = DEFAULT_CHUNK_BUDGET, max_batch: int = DEFAULT_MAX_BATCH,
                    extra_frame_bytes: int = 0, fraction: float = FREE_MEMORY_FRACTION) -> int:
    """Frames per chunk for VToonify inputs of ``height`` x ``width``, from the free memory.

    ``floor(min(fraction * free, budget) / per_frame)`` with ``per_frame`` =
    :func:`frame_memory_bytes` ``+ extra_frame_bytes``, between 1 and ``max_batch``. ``free_bytes``
    defaults to :func:`free_memory_bytes` of ``model.device``; where that cannot be told, the
    budget alone decides.

    Raises:
        ValueError: ``budget_bytes`` or ``max_batch`` < 1, ``fraction`` outside (0, 1], or negative
            ``extra_frame_bytes``.
    """
    if budget_bytes < 1 or max_batch < 1:
        raise ValueError(f"budget_bytes and max_batch must be at least 1, got {budget_bytes} and {max_batch}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if extra_frame_bytes < 0:
        raise ValueError(f"extra_frame_bytes must be >= 0, got {extra_frame_bytes}")
    per_frame = frame_memory_bytes(model.backbone, height, width, model.dtype) + int(extra_frame_bytes)
    if free_bytes is None:
        free_bytes = free_memory_bytes(model.device)
    usable = int(budget_bytes) if free_bytes is None else min(int(budget_bytes), int(max(0, free_bytes) * fraction))
    return max(1, min(int(max_batch), usable // per_frame))


def chunk_size(model: VToonifyModel, n: int, batch_size: int, input_size: tuple[int, int],
                extra_frame_bytes: int = 0) -> int:
    """``batch_size``, or for 0 the automatic size (:func:`auto_batch_size`) for ``n`` frames of ``input_size``."""
    if batch_size:
        return int(batch_size)
    h, w = input_size
    size = min(n, auto_batch_size(model, h, w, extra_frame_bytes=extra_frame_bytes))
    logger.info("VToonify: %d frame(s) per chunk (automatic, %dx%d input in %s on %s)", size, w, h,
                str(model.dtype).replace("torch.", ""), model.device)
    return size


def _gib(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB"


def check_fits(model: VToonifyModel, input_size: tuple[int, int], *, frames: int = 1,
               output_bytes_per_frame: int = 0, output_device: Optional[DeviceLike] = None,
               advice: str = "downscale the frames", free_bytes: Optional[int] = None,
               output_free_bytes: Optional[int] = None, input_name: str = "images") -> None:
    """Refuse, before any work, a clip that cannot be stylized in the free memory.

    One frame of ``input_size`` must fit on the model's device (:func:`frame_memory_bytes`), and the
    gathered output (``frames * output_bytes_per_frame``) on ``output_device``; where both are the
    same memory (a CPU model gathering on the CPU) their sum must. Where the free memory cannot be
    told nothing is refused (the out-of-memory back-off remains).

    Raises:
        InputError: naming the sizes, the memory needed and free, ``advice`` and the largest input
            that fits now.
    """
    h, w = int(input_size[0]), int(input_size[1])
    device = torch.device(model.device)
    out_dev = None if output_device is None else torch.device(output_device)
    shared = out_dev is not None and out_dev.type == device.type == "cpu"
    out_total = int(frames) * int(output_bytes_per_frame)

    def need(hh: int, ww: int) -> tuple[int, int]:
        """(bytes on the model's device, bytes on the output device) for an input of hh x ww."""
        per_frame = frame_memory_bytes(model.backbone, hh, ww, model.dtype)
        out = out_total * hh * ww // max(1, h * w)
        return (per_frame + out, 0) if shared else (per_frame, out)

    free_dev = free_memory_bytes(device) if free_bytes is None else free_bytes
    free_out = None
    if out_dev is not None and not shared and out_total:
        free_out = free_memory_bytes(out_dev) if output_free_bytes is None else output_free_bytes

    def fits(hh: int, ww: int) -> bool:
        d, o = need(hh, ww)
        return (free_dev is None or d <= free_dev) and (free_out is None or o <= free_out)

    if fits(h, w):
        return
    d, o = need(h, w)
    parts = []
    if free_dev is not None and d > free_dev:
        parts.append(f"about {_gib(d)} on {device}{' with the gathered output' if shared else ''} "
                     f"({_gib(free_dev)} free)")
    if free_out is not None and o > free_out:
        parts.append(f"{_gib(o)} for the {frames} output frame(s) on {out_dev} ({_gib(free_out)} free)")
    scale = 1.0
    best = None
    while scale > 0.02:  # the largest input that fits, at the frames' aspect ratio
        scale *= 0.9
        hh, ww = max(MULTIPLE, int(h * scale) // MULTIPLE * MULTIPLE), max(MULTIPLE, int(w * scale) // MULTIPLE * MULTIPLE)
        if fits(hh, ww):
            best = (hh, ww)
            break
    room = (f"; at most about {best[1]}x{best[0]} px fit now" if best else "; not even a small input fits now")
    raise InputError(input_name, f"a {w}x{h} px input gives a {SCALE * w}x{SCALE * h} px output and needs "
                               f"{' and '.join(parts)}: {advice}, or free memory used by other models{room}.")


def allocate_output(shape: tuple[int, ...], device: Optional[DeviceLike], dtype: torch.dtype = torch.float32
                    ) -> torch.Tensor:
    """An empty output tensor; an allocator failure becomes an :class:`~vtoonify_core.errors.OutOfMemoryError`
    that says what to change (the allocator's text goes to the log)."""
    try:
        return torch.empty(shape, dtype=dtype, device=device)
    except RuntimeError as exc:
        if not is_oom(exc):
            raise
        logger.warning("VToonify: cannot allocate the output %s on %s: %s", tuple(shape), device, exc)
        size = torch.Size(shape).numel() * dtype.itemsize
        raise OutOfMemoryError(f"the output ({shape[0]} frames of {shape[-1]}x{shape[-2]} px, {_gib(size)}) does "
                               f"not fit in the memory of {device}: stylize fewer frames at a time, smaller frames, "
                               f"or the face crop.") from None
