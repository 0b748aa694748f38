"""The VToonify pipeline end to end: model bundle, style codes, parsing, chunked stylization.

This is the glue the ComfyUI nodes call; it is pure PyTorch/numpy (no ComfyUI import) and can be
used alone::

    model = load_model("vtoonify_d_cartoon/vtoonify_s_d.pt", "encoder.pt", "faceparsing.pth",
                       device="cuda", dtype=torch.float16)          # exstyle_code.npy found beside
    style, aligned = style_from_image(model, portrait_uint8, style_id=26)
    out = stylize(model, frames, style, d_s=0.5)                   # [B,3,4H,4W] in [-1, 1]

Conventions:

* *frames* are ``[B, 3, H, W]`` tensors. Float frames are in ``input_range`` (default
  ``(-1, 1)``, the official normalisation; ComfyUI images are ``(0, 1)``); ``uint8`` frames are
  0..255. They are converted to ``[-1, 1]`` in the model's dtype one chunk at a time, so a view
  of a large clip (e.g. ``image.permute(0, 3, 1, 2)``) is never copied whole.
* outputs of :func:`stylize` are float32 in ``[-1, 1]`` (clamped, as the official code does),
  4x the input size, on ``output_device`` (CPU by default), filled chunk by chunk.
* parsing maps are the raw BiSeNet logits ``[B, 19, H, W]`` as :func:`~vtoonify_core.bisenet.parse_frames`
  computes them (2x bilinear up, parse, nearest 0.5x down); VToonify receives them divided by 16.

Bad input raises :class:`InputError` (a ``ValueError``) whose message names the input (as the
nodes call it) and says what to do.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bisenet import N_CLASSES, parse_frames
from .exstyle import ExStyles

logger = logging.getLogger("vtoonify")

PathLike = Union[str, Path]
DeviceLike = Union[str, torch.device]
Progress = Callable[[int, int], None]

#: Backbone names (``VToonify.backbone``) and how they are shown.
BACKBONE_NAMES = {"toonify": "VToonify-T", "dualstylegan": "VToonify-D"}
#: VToonify's output is this many times its input.
SCALE = 4
#: Height and width of VToonify's input must be multiples of this.
MULTIPLE = 8
#: Parsing logits are divided by this before entering VToonify (official weight 1/16).
PARSING_WEIGHT = 16.0
#: W+ layers taken from the exemplar for the structure (official ``s_w[:, :7] = exstyle[:, :7]``).
STRUCTURE_LAYERS = 7
#: Size of the FFHQ-aligned pSp input.
ALIGNED_SIZE = 256
#: Official crop padding (left, right, top, bottom) around the eye centre, in rescaled pixels.
DEFAULT_FACE_PADDING = 200
#: Names of the precisions accepted by :func:`resolve_dtype`.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

#: The 19 CelebAMask-HQ classes of the BiSeNet face parser, in channel order.
CLASS_NAMES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)
#: Classes grouped the way a user picks them (group name -> class indices).
CLASS_GROUPS = {
    "skin": (1,), "brows": (2, 3), "eyes": (4, 5), "eyeglasses": (6,), "ears": (7, 8), "earrings": (9,),
    "nose": (10,), "mouth": (11,), "lips": (12, 13), "neck": (14,), "necklace": (15,), "cloth": (16,),
    "hair": (17,), "hat": (18,), "background": (0,),
}
#: A colour per class (RGB 0..255) for the colour-coded parsing image.
CLASS_COLORS = (
    (0, 0, 0), (204, 153, 119), (120, 60, 20), (150, 80, 30), (40, 120, 255), (20, 80, 220), (250, 250, 90),
    (255, 120, 160), (230, 90, 140), (255, 215, 0), (255, 140, 0), (110, 0, 30), (235, 40, 60), (190, 20, 50),
    (60, 200, 120), (0, 220, 220), (130, 130, 220), (90, 50, 150), (160, 160, 160),
)


class InputError(ValueError):
    """Bad input to the pipeline. ``input_name`` is the input it concerns (node input names)."""

    def __init__(self, input_name: str, message: str):
        super().__init__(f"{input_name}: {message}")
        self.input_name = input_name


# ----------------------------------------------------------------------------------------------
# model bundle


@dataclass(frozen=True, eq=False)
class FaceParserModel:
    """The BiSeNet face parser with the device and dtype it runs in."""

    parser: nn.Module
    device: torch.device
    dtype: torch.dtype


@dataclass(frozen=True, eq=False)
class VToonifyModel:
    """Everything the pipeline needs, loaded on one device in one dtype.

    Attributes:
        generator: the VToonify network (``backbone`` ``'toonify'`` = VToonify-T or
            ``'dualstylegan'`` = VToonify-D); ``generator(x, style, d_s)`` and
            ``generator.zplus2wplus(z)``.
        encoder: the pSp style encoder, ``[B,3,256,256]`` in [-1, 1] -> z+ ``[B,18,512]``.
        parser: the BiSeNet face parser.
        exstyles: exemplar z+ codes of VToonify-D (``None`` for VToonify-T, or when not loaded).
        device, dtype: where and in what precision the networks run.
        sources: file each part was read from (``checkpoint``, ``encoder``, ``parser``, ``exstyle``).
    """

    generator: nn.Module
    encoder: Optional[nn.Module]
    parser: nn.Module
    exstyles: Optional[ExStyles]
    device: torch.device
    dtype: torch.dtype
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def backbone(self) -> str:
        """``'toonify'`` (VToonify-T) or ``'dualstylegan'`` (VToonify-D)."""
        return self.generator.backbone

    @property
    def kind(self) -> str:
        """``'VToonify-T'`` or ``'VToonify-D'``."""
        return BACKBONE_NAMES.get(self.backbone, self.backbone)

    @property
    def n_styles(self) -> int:
        """Number of exemplar styles (0 without exemplar codes)."""
        return 0 if self.exstyles is None else int(self.exstyles.codes.shape[0])

    @property
    def face_parser(self) -> FaceParserModel:
        return FaceParserModel(self.parser, self.device, self.dtype)

    def describe(self) -> str:
        parts = [f"{self.kind} on {self.device} ({str(self.dtype).replace('torch.', '')})"]
        if self.backbone == "dualstylegan":
            parts.append(f"{self.n_styles} exemplar styles")
        return ", ".join(parts)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (Intel AMX-BF16), several times faster than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_bf16" in line for line in f)
    except OSError:
        return False


def resolve_dtype(precision: str, device: DeviceLike) -> torch.dtype:
    """``'fp32'``, ``'fp16'``, ``'bf16'`` as named; ``'auto'`` picks the fastest safe one:
    bf16 on CUDA GPUs that support it (else fp16), bf16 on CPUs with AMX-BF16 (measured 2.5x the
    fp32 speed at a mean error of 0.3 uint8 levels), fp32 elsewhere."""
    if precision == "auto":
        kind = torch.device(device).type
        if kind == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if kind == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    if precision not in DTYPES:
        raise InputError("precision", f"unknown precision {precision!r}; use auto, {', '.join(DTYPES)}.")
    return DTYPES[precision]


def find_exstyle(checkpoint: PathLike) -> Optional[Path]:
    """The exemplar codes beside a VToonify-D checkpoint (``exstyle_code.npy`` or ``.safetensors``)."""
    folder = Path(checkpoint).parent
    for name in ("exstyle_code.npy", "exstyle_code.safetensors"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_model(checkpoint: PathLike, encoder: Optional[PathLike], parser: PathLike,
               exstyle: Union[PathLike, None, str] = "auto", device: DeviceLike = "cpu",
               dtype: torch.dtype = torch.float32) -> VToonifyModel:
    """Load the whole bundle from files (official ``.pt``/``.pth``/``.npy`` or ``.safetensors``).

    Args:
        checkpoint: VToonify-T or -D checkpoint (auto-detected).
        encoder: pSp ``encoder.pt`` (``None``: no style extraction from faces).
        parser: BiSeNet ``faceparsing.pth``.
        exstyle: exemplar codes; ``'auto'`` = ``exstyle_code.*`` beside the checkpoint (required
            for VToonify-D), ``None`` = none. Ignored for VToonify-T.
        device, dtype: where and how the networks run.
    """
    from . import load_face_parser, load_style_encoder, load_vtoonify
    from .exstyle import load_exstyles

    device = torch.device(device)
    gen = load_vtoonify(checkpoint, device, dtype)
    sources = {"checkpoint": str(checkpoint), "parser": str(parser)}
    styles = None
    if gen.backbone == "dualstylegan":
        path = find_exstyle(checkpoint) if exstyle == "auto" else exstyle
        if path is not None:
            styles = load_exstyles(path)
            sources["exstyle"] = str(path)
    enc = None
    if encoder is not None:
        enc = load_style_encoder(encoder, device, dtype)
        sources["encoder"] = str(encoder)
    par = load_face_parser(parser, device, dtype)
    return VToonifyModel(gen, enc, par, styles, device, dtype, sources)


# ----------------------------------------------------------------------------------------------
# frames


def validate_frames(frames: Tensor, input_name: str = "images") -> None:
    """Check a ``[B, 3, H, W]`` frame batch: not empty, three channels, finite values.

    Raises:
        InputError: naming ``input_name`` and what to do.
    """
    if not isinstance(frames, Tensor):
        raise InputError(input_name, f"expected a tensor of frames, got {type(frames).__name__}.")
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise InputError(input_name, f"expected frames [B, 3, H, W], got shape {tuple(frames.shape)}.")
    if frames.shape[0] == 0:
        raise InputError(input_name, "the batch is empty (0 frames): connect a node that outputs at least one image.")
    if frames.shape[2] == 0 or frames.shape[3] == 0:
        raise InputError(input_name, f"the frames are empty ({frames.shape[3]}x{frames.shape[2]} px).")
    if frames.is_floating_point():
        bad = ~torch.isfinite(frames).flatten(1).all(dim=1)
        if bool(bad.any()):
            idx = torch.nonzero(bad).flatten().tolist()
            raise InputError(input_name, f"frame(s) {_few(idx)} contain NaN or infinite values; fix or drop those "
                                         f"frames upstream (e.g. a failed decode or a division by zero).")


def _few(idx: Sequence[int], n: int = 5) -> str:
    s = ", ".join(str(i) for i in idx[:n])
    return s + (f" and {len(idx) - n} more" if len(idx) > n else "")


def to_model_range(frames: Tensor, input_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
    """Frames (float in ``input_range``, or uint8 0..255) as float32 in [-1, 1].

    The result may share memory with ``frames`` (float32 frames already in [-1, 1]).
    """
    if frames.dtype == torch.uint8:
        return frames.float() / 127.5 - 1.0
    lo, hi = float(input_range[0]), float(input_range[1])
    if not hi > lo:
        raise ValueError(f"input_range must be (low, high) with high > low, got {input_range}")
    x = frames.float()
    if (lo, hi) == (-1.0, 1.0):
        return x
    return (x - lo) * (2.0 / (hi - lo)) - 1.0


class Padding(NamedTuple):
    """Pixels added on each side by :func:`pad_to_multiple`."""

    top: int
    bottom: int
    left: int
    right: int


def padding_for(height: int, width: int, multiple: int = MULTIPLE, mode: str = "reflect") -> Padding:
    """The centred padding that brings ``height`` x ``width`` to multiples of ``multiple``.

    Raises:
        ValueError: ``mode='reflect'`` and a pad is not smaller than the side it mirrors, or
            ``multiple`` < 1.
    """
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    ph, pw = (-height) % multiple, (-width) % multiple
    pad = Padding(ph // 2, ph - ph // 2, pw // 2, pw - pw // 2)
    if mode == "reflect" and (max(pad.top, pad.bottom) >= height or max(pad.left, pad.right) >= width):
        raise ValueError(
            f"a {width}x{height} frame cannot be padded to a multiple of {multiple} by reflection (it needs "
            f"{pw} px across and {ph} px down, more than the frame can mirror); use frames of at least "
            f"{multiple}x{multiple} px")
    return pad


def apply_padding(x: Tensor, pad: Padding, mode: str = "reflect") -> Tensor:
    """Pad ``[..., H, W]`` by ``pad`` (any leading dimensions; integer tensors go through float)."""
    if not any(pad):
        return x
    h, w = int(x.shape[-2]), int(x.shape[-1])
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, h, w)
    out = F.pad(flat if flat.is_floating_point() else flat.float(), (pad.left, pad.right, pad.top, pad.bottom),
                mode=mode)
    return out.to(x.dtype).reshape(*lead, h + pad.top + pad.bottom, w + pad.left + pad.right)


def pad_to_multiple(x: Tensor, multiple: int = MULTIPLE, mode: str = "reflect") -> tuple[Tensor, Padding]:
    """Pad ``[..., H, W]`` so both sides are multiples of ``multiple``, centred (odd pixel at the end).

    ``mode`` is a :func:`torch.nn.functional.pad` mode (``'reflect'`` by default, which needs each
    pad smaller than the side it mirrors; ``'replicate'`` and ``'constant'`` always work).

    Returns:
        ``(padded, padding)``; undo with :func:`crop_padding` (``scale=4`` for VToonify's output).

    Raises:
        ValueError: the frame is too small to pad by reflection, or ``multiple`` < 1.
    """
    pad = padding_for(int(x.shape[-2]), int(x.shape[-1]), multiple, mode)
    return apply_padding(x, pad, mode), pad


def crop_padding(y: Tensor, padding: Padding, scale: int = SCALE) -> Tensor:
    """Undo :func:`pad_to_multiple` on an output ``scale`` times the padded input."""
    t, b, l, r = (scale * v for v in padding)
    h, w = y.shape[-2], y.shape[-1]
    return y[..., t:h - b, l:w - r]


def make_inputs(frames: Tensor, parsing: Tensor) -> Tensor:
    """VToonify's input: ``cat(frames in [-1, 1], parsing logits / 16)`` -> ``[B, 22, H, W]``."""
    return torch.cat([frames, parsing.to(frames.dtype) / PARSING_WEIGHT], dim=1)


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
    up-sampled frame, :func:`~vtoonify_core.bisenet.parse_frames`) or parsing maps given. The
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
    from .stylegan import channel_table

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


def free_memory_bytes(device: DeviceLike) -> Optional[int]:
    """Memory a chunk can still take on ``device``, in bytes, or ``None`` when it cannot be told.

    CUDA (and other backends with ``mem_get_info``): the device's free memory plus what PyTorch's
    caching allocator holds unused. MPS: the recommended working set minus what the driver has
    allocated. CPU: ``MemAvailable`` of ``/proc/meminfo`` (Linux), else the available physical
    pages (``os.sysconf``).
    """
    device = torch.device(device)
    try:
        if device.type == "cpu":
            return _available_system_memory()
        if device.type == "mps":
            mps = getattr(torch, "mps", None)
            if mps is None or not hasattr(mps, "recommended_max_memory"):
                return None
            return max(0, int(mps.recommended_max_memory()) - int(mps.driver_allocated_memory()))
        backend = getattr(torch, device.type, None)
        if backend is None or not hasattr(backend, "mem_get_info") or not backend.is_available():
            return None
        free, _ = backend.mem_get_info(device)
        cached = 0
        if hasattr(backend, "memory_reserved") and hasattr(backend, "memory_allocated"):
            cached = int(backend.memory_reserved(device)) - int(backend.memory_allocated(device))
        return int(free) + max(0, cached)
    except (RuntimeError, OSError, AssertionError) as exc:  # backend present but unusable
        logger.debug("VToonify: cannot read the free memory of %s: %s", device, exc)
        return None


def _available_system_memory() -> Optional[int]:
    """``MemAvailable`` (Linux), else available physical pages times the page size, else ``None``."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


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


# ----------------------------------------------------------------------------------------------
# chunked execution: overlapped host <-> device copies, out-of-memory back-off


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator out-of-memory error (CUDA, or MPS/XPU messages)."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _empty_device_cache(device: torch.device) -> None:
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        try:
            torch.mps.empty_cache()
        except Exception:  # pragma: no cover - MPS only
            pass


class Upload(NamedTuple):
    """A chunk's inputs on their way to the device (:meth:`ChunkCopier.upload`)."""

    tensors: tuple[Tensor, ...]
    #: recorded on the copy stream after the copies (CUDA); ``None`` when the copies were synchronous
    event: Optional[object] = None
    #: positions of the tensors that the copy stream allocated (they need ``record_stream``)
    copied: tuple[int, ...] = ()


class Download(NamedTuple):
    """A chunk's result on its way to the output device (:meth:`ChunkCopier.download`)."""

    tensor: Tensor
    #: recorded on the copy stream after the copy (CUDA); ``None`` when the copy was synchronous
    event: Optional[object] = None


class ChunkCopier:
    """Moves chunk inputs to the model's device and results to the output device.

    With a CUDA model, CPU tensors are staged in pinned (page-locked) host memory and copied with
    ``non_blocking=True`` on a side stream, so the next chunk's input travels while the current
    one computes; results are copied into pinned host buffers on a second side stream. The
    compute stream waits for an upload's event before its tensors are used, and every tensor used
    on a stream other than the one that allocated it is marked with ``record_stream``, so the
    caching allocator never hands its memory out while a copy or kernel still uses it. A result is
    handed out only after its copy has finished (:meth:`collect`).

    Anywhere else (a CPU model, tensors already on the device, output on the device, other
    accelerators) the same calls are plain synchronous ``.to()`` copies and nothing is pinned
    (a CPU-only PyTorch has no pinned-memory allocator).
    """

    def __init__(self, device: DeviceLike, output_device: Optional[DeviceLike]):
        self.device = torch.device(device)
        self.output_device = None if output_device is None else torch.device(output_device)
        self.cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self._up = torch.cuda.Stream(self.device) if self.cuda else None
        self._down = torch.cuda.Stream(self.device) if self.cuda else None

    @property
    def asynchronous(self) -> bool:
        """Whether copies overlap computation (CUDA)."""
        return self.cuda

    def upload(self, tensors: Sequence[Tensor]) -> Upload:
        """Start moving ``tensors`` to the device (CPU ones through pinned memory on CUDA)."""
        if not self.cuda:
            return Upload(tuple(t.to(self.device) for t in tensors))
        out: list[Tensor] = []
        copied: list[int] = []
        for k, t in enumerate(tensors):
            if t.device.type != "cpu":
                out.append(t.to(self.device))  # already on an accelerator: on the current stream
                continue
            staged = t if t.is_pinned() else t.pin_memory()  # same sizes and strides as ``t``
            with torch.cuda.stream(self._up):
                out.append(staged.to(self.device, non_blocking=True))
            copied.append(k)
        if not copied:
            return Upload(tuple(out))
        event = torch.cuda.Event()
        event.record(self._up)
        return Upload(tuple(out), event, tuple(copied))

    def ready(self, upload: Upload) -> tuple[Tensor, ...]:
        """The uploaded tensors, usable on the current (compute) stream."""
        if upload.event is None:
            return upload.tensors
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(upload.event)
        for k in upload.copied:
            upload.tensors[k].record_stream(stream)  # allocated on the copy stream, used on this one
        return upload.tensors

    def download(self, y: Tensor) -> Download:
        """Start moving a result to the output device (``None``: left where it is)."""
        if self.output_device is None:
            return Download(y)
        if not (self.cuda and y.device.type == "cuda" and self.output_device.type == "cpu"):
            return Download(y.to(self.output_device))
        computed = torch.cuda.Event()
        computed.record(torch.cuda.current_stream(y.device))
        with torch.cuda.stream(self._down):
            self._down.wait_event(computed)
            host = torch.empty_like(y, device="cpu", pin_memory=True)
            host.copy_(y, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._down)
        y.record_stream(self._down)  # allocated on the compute stream, read by the copy stream
        return Download(host, done)

    @staticmethod
    def collect(download: Download) -> Tensor:
        """The result, once its copy has finished."""
        if download.event is not None:
            download.event.synchronize()
        return download.tensor


class _Chunk(NamedTuple):
    start: int
    stop: int
    transfer: object  # Upload (inputs) or Download (result)


def _prefetch(copier: ChunkCopier, load: Callable[[int, int], Sequence[Tensor]], start: int, stop: int
              ) -> Optional[_Chunk]:
    """Start uploading chunk ``start..stop``; ``None`` if that fails (it is retried, and any error
    raised, when the chunk's turn comes)."""
    try:
        return _Chunk(start, stop, copier.upload(load(start, stop)))
    except Exception as exc:  # noqa: BLE001 - best effort; the synchronous retry reports the error
        logger.debug("VToonify: prefetch of %d..%d failed (%s); loading it in turn", start, stop, exc)
        return None


def run_chunks_overlapped(load: Callable[[int, int], Sequence[Tensor]],
                          compute: Callable[[Sequence[Tensor], int, int], Tensor], total: int, batch_size: int, *,
                          device: DeviceLike, output_device: Optional[DeviceLike] = "cpu",
                          progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None,
                          on_oom: Optional[Callable[[int], None]] = None, what: str = "frames",
                          overlap: Optional[bool] = None) -> Iterator[tuple[int, Tensor]]:
    """Run ``compute`` over ``[0, total)`` in chunks with the copies overlapped; yield ``(start, result)`` in order.

    For each chunk, ``load(start, stop)`` gives its input tensors as they are (e.g. slices of CPU
    frames); they are moved to ``device`` by a :class:`ChunkCopier`, ``compute(inputs, start,
    stop)`` returns the result on the device, and the result is moved to ``output_device``
    (``None``: left where ``compute`` puts it) and yielded.

    With ``overlap`` (default: where copies are asynchronous, i.e. a CUDA device) the next chunk is
    uploaded while the current one computes, and each result is yielded once the next chunk has
    been launched, so its copy to the host runs alongside. The results, their order and the
    ``progress`` values do not depend on ``overlap``.

    ``check_interrupt()`` runs before every chunk (it raises to stop; the chunk finished before
    is still yielded first, as is the last finished chunk before any other error). On an
    out-of-memory error the chunk is halved and retried and the smaller size kept for the rest
    (a prefetched chunk of the old size is dropped); ``on_oom(new_size)`` is called first. An
    out-of-memory error on a single frame is re-raised with a note on what to change.
    """
    if batch_size < 1:
        raise InputError("batch_size", f"must be at least 1, got {batch_size}.")
    device = torch.device(device)
    copier = ChunkCopier(device, output_device)
    overlap = copier.asynchronous if overlap is None else bool(overlap)
    size, start = int(batch_size), 0
    prefetched: Optional[_Chunk] = None  # next chunk's inputs, already travelling
    pending: Optional[_Chunk] = None  # finished chunk whose result is not handed out yet
    while start < total:
        stop = min(start + size, total)
        finished: Optional[_Chunk] = None
        error: Optional[Exception] = None
        out_of_memory = False
        staged = inputs = result = None
        try:
            if check_interrupt is not None:
                check_interrupt()
            staged, prefetched = prefetched, None
            if staged is None or (staged.start, staged.stop) != (start, stop):
                staged = None  # a prefetch made for another chunk size (after a back-off) is dropped
                staged = _Chunk(start, stop, copier.upload(load(start, stop)))
            inputs = copier.ready(staged.transfer)
            staged = None
            result = compute(inputs, start, stop)
            inputs = None
            if overlap and stop < total:
                prefetched = _prefetch(copier, load, stop, min(stop + size, total))
            finished = _Chunk(start, stop, copier.download(result))
            result = None
        except Exception as exc:  # noqa: BLE001 - only OOM is handled, everything else re-raised
            staged = inputs = result = prefetched = None
            if not is_oom(exc):
                error = exc
            elif stop - start <= 1:
                if hasattr(exc, "add_note"):
                    exc.add_note(f"VToonify ran out of memory on a single frame on {device}: use smaller frames "
                                 f"(a smaller face_padding or a downscaled clip), a lower precision (fp16/bf16), "
                                 f"or free memory used by other models.")
                error = exc
            else:
                out_of_memory = True  # the exception and the chunk's tensors are released here
        if pending is not None:  # complete whatever happened to this chunk
            yield pending.start, copier.collect(pending.transfer)
            if progress is not None:
                progress(pending.stop, total)
            pending = None
        if error is not None:
            raise error
        if out_of_memory:
            n = stop - start
            size = max(1, n // 2)
            _empty_device_cache(device)
            if on_oom is not None:
                on_oom(size)
            logger.warning("VToonify: out of memory with %d %s per chunk on %s; retrying with %d", n, what, device, size)
            continue
        start = stop
        if overlap:
            pending = finished
            continue
        yield finished.start, copier.collect(finished.transfer)
        if progress is not None:
            progress(finished.stop, total)
    if pending is not None:
        yield pending.start, copier.collect(pending.transfer)
        if progress is not None:
            progress(pending.stop, total)


def run_chunks(fn: Callable[[int, int], Tensor], total: int, batch_size: int, *, device: torch.device,
               progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None,
               on_oom: Optional[Callable[[int], None]] = None, what: str = "frames") -> Iterator[tuple[int, Tensor]]:
    """Run ``fn(start, stop)`` over ``[0, total)`` in chunks; yield ``(start, result)`` as each completes.

    ``check_interrupt()`` runs before every chunk (it raises to stop). On an out-of-memory error the
    chunk is halved and retried, and the smaller size is kept for the rest; ``on_oom(new_size)``
    is called first (e.g. to empty the allocator cache). An OOM on a single frame is re-raised
    with a note on what to change. (:func:`run_chunks_overlapped` without copies or overlap.)
    """
    return run_chunks_overlapped(lambda i, j: (), lambda _, i, j: fn(i, j), total, batch_size, device=device,
                                 output_device=None, progress=progress, check_interrupt=check_interrupt,
                                 on_oom=on_oom, what=what, overlap=False)


# ----------------------------------------------------------------------------------------------
# parsing


@dataclass(frozen=True, eq=False)
class FaceParsing:
    """BiSeNet logits of a clip, ``[T, 19, H, W]`` float32 (as :func:`parse_frames` computes them).

    ``smoothed`` tells whether the maps went through temporal smoothing.
    """

    logits: Tensor
    smoothed: bool = False

    def __post_init__(self):
        if self.logits.ndim != 4 or self.logits.shape[1] != N_CLASSES:
            raise ValueError(f"face parsing logits must be [T, {N_CLASSES}, H, W], got {tuple(self.logits.shape)}")

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the maps."""
        return int(self.logits.shape[2]), int(self.logits.shape[3])

    def __len__(self) -> int:
        return int(self.logits.shape[0])


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
    out = torch.empty(b, N_CLASSES, h, w, dtype=torch.float32, device=output_device)

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


# ----------------------------------------------------------------------------------------------
# style codes


@dataclass(frozen=True, eq=False)
class StyleCode:
    """A W+ style code and what made it.

    Attributes:
        wplus: ``[1, 18, 512]`` float32 (CPU).
        backbone: ``'toonify'`` or ``'dualstylegan'``: the model family it is for.
        style_id, style_name: the exemplar style (VToonify-D), else ``None``.
        color_transfer: whether the exemplar's colours are used (VToonify-D).
    """

    wplus: Tensor
    backbone: str
    style_id: Optional[int] = None
    style_name: Optional[str] = None
    color_transfer: bool = False

    def describe(self) -> str:
        kind = BACKBONE_NAMES.get(self.backbone, self.backbone)
        if self.backbone != "dualstylegan":
            return f"{kind} style code (from the face)"
        colour = "exemplar colours" if self.color_transfer else "colours of the face"
        if self.style_id is None:  # an exemplar from an image, a mix or an average (style_control)
            return f"{kind} style '{self.style_name}', {colour}"
        return f"{kind} exemplar style {self.style_id} ({self.style_name}), {colour}"


def _check_style_id(model: VToonifyModel, style_id: int) -> int:
    if model.exstyles is None or model.n_styles == 0:
        raise InputError("style_id", "this VToonify-D model has no exemplar style codes: choose exstyle_code.npy "
                                     "(or 'auto' with the file beside the checkpoint) in Load VToonify Model.")
    n = model.n_styles
    if isinstance(style_id, bool) or not isinstance(style_id, (int, np.integer)) or not 0 <= int(style_id) < n:
        raise InputError("style_id", f"{style_id!r} is out of range: the checkpoint has {n} styles, use 0..{n - 1}.")
    return int(style_id)


def exemplar_wplus(model: VToonifyModel, style_id: int) -> Tensor:
    """W+ of exemplar ``style_id``: ``zplus2wplus(exstyle[style_id])``, ``[1, 18, 512]`` float32 CPU."""
    i = _check_style_id(model, style_id)
    z = model.exstyles.codes[i:i + 1].to(model.device, model.dtype)
    with torch.inference_mode():
        return model.generator.zplus2wplus(z).float().cpu()


def encode_face(model: VToonifyModel, aligned: Union[Tensor, np.ndarray]) -> Tensor:
    """pSp z+ of an FFHQ-aligned face mapped to W+: ``zplus2wplus(pSp(aligned))``, ``[1,18,512]`` float32 CPU.

    ``aligned`` is a ``(256, 256, 3)`` uint8 RGB array or a ``[1, 3, 256, 256]`` tensor in [-1, 1].
    """
    if model.encoder is None:
        raise InputError("vtoonify_model", "no pSp style encoder is loaded: pick encoder.pt in Load VToonify Model.")
    if isinstance(aligned, np.ndarray):
        if aligned.shape != (ALIGNED_SIZE, ALIGNED_SIZE, 3) or aligned.dtype != np.uint8:
            raise InputError("image", f"the aligned face must be 256x256x3 uint8, got {aligned.shape} {aligned.dtype}.")
        x = torch.from_numpy(np.ascontiguousarray(aligned)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    else:
        x = aligned
    with torch.inference_mode():
        z = model.encoder(x.to(model.device, model.dtype))
        return model.generator.zplus2wplus(z).float().cpu()


def extract_style(model: VToonifyModel, aligned: Union[Tensor, np.ndarray, None], style_id: int = 0,
                  color_transfer: bool = False) -> StyleCode:
    """The official W+ rule.

    ``s_w = zplus2wplus(pSp(aligned))``; for VToonify-D with exemplar ``e = zplus2wplus(exstyle[style_id])``:
    ``s_w = e`` with colour transfer, else ``s_w[:, :7] = e[:, :7]``. For VToonify-T ``style_id`` and
    ``color_transfer`` are ignored. ``aligned`` may be ``None`` only for D with colour transfer
    (the face does not enter the code then).
    """
    if model.backbone != "dualstylegan":
        if aligned is None:
            raise InputError("image", "a face is needed to make a VToonify-T style code.")
        return StyleCode(encode_face(model, aligned), model.backbone)
    sid = _check_style_id(model, style_id)
    name = model.exstyles.names[sid]
    ex = exemplar_wplus(model, sid)
    if color_transfer:
        return StyleCode(ex, model.backbone, sid, name, True)
    if aligned is None:
        raise InputError("image", "a face is needed unless color_transfer is on.")
    s_w = encode_face(model, aligned).clone()
    s_w[:, :STRUCTURE_LAYERS] = ex[:, :STRUCTURE_LAYERS]
    return StyleCode(s_w, model.backbone, sid, name, False)


def prepare_style_image(image: np.ndarray, *, backend="dlib", face_padding: int = DEFAULT_FACE_PADDING
                        ) -> tuple[np.ndarray, object]:
    """Detect the face, crop it the official way (eyes 64 px apart) and FFHQ-align it for pSp.

    As the official pipeline: the frame is rescaled and cropped around the eyes
    (:func:`~vtoonify_core.crop.official_crop`), landmarks are found again in the crop, and the
    crop is aligned to 256x256. If the face is not found again in the crop, the first landmarks
    mapped into the crop are used.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.

    Returns:
        ``(aligned (256, 256, 3) uint8, face)`` with the face found in ``image``.

    Raises:
        NoFaceError: no face in the image.
    """
    from .align import align_face
    from .crop import official_crop
    from .faces import NoFaceError, detect_faces, no_face_message

    faces = detect_faces(image, backend=backend)
    if not faces:
        raise NoFaceError(no_face_message("the image"))
    face = faces[0]
    pad = (int(face_padding),) * 4
    try:
        crop, geo = official_crop(image, face.landmarks, pad)
    except ValueError as exc:
        raise InputError("image", f"cannot crop the face: {exc}.") from None
    mapped = geo.to_crop(face.landmarks)
    again = detect_faces(crop, backend=backend)
    landmarks = mapped
    if again:
        centre = mapped[36:48].mean(axis=0)
        best = min(again, key=lambda f: float(np.hypot(*(f.landmarks[36:48].mean(axis=0) - centre))))
        eye_dist = float(np.hypot(*(mapped[42:48].mean(0) - mapped[36:42].mean(0))))
        if float(np.hypot(*(best.landmarks[36:48].mean(axis=0) - centre))) < eye_dist:
            landmarks = best.landmarks
    return align_face(crop, landmarks, ALIGNED_SIZE), face


def style_from_image(model: VToonifyModel, image: np.ndarray, style_id: int = 0, color_transfer: bool = False,
                     *, backend="dlib") -> tuple[StyleCode, np.ndarray]:
    """Face in ``image`` (uint8 RGB) -> (:class:`StyleCode`, aligned 256x256 uint8 crop).

    VToonify-D with ``color_transfer``: the code is the exemplar's alone (official
    ``s_w = exstyle``), so no face is required: the aligned face is still returned when one is
    found, else (no face, a face too close to the border, or no detector installed) a 256x256
    centre crop of ``image`` stands in for it. Arguments are checked before the (slow) detection
    and encoding.

    Raises:
        NoFaceError: no face in ``image`` when the code needs one.
    """
    skip_face = model.backbone == "dualstylegan" and color_transfer
    if model.backbone == "dualstylegan":
        _check_style_id(model, style_id)
    if model.encoder is None and not skip_face:
        raise InputError("vtoonify_model", "no pSp style encoder is loaded: pick encoder.pt in Load VToonify Model.")
    if skip_face:
        return extract_style(model, None, style_id, True), _preview_face(image, backend)
    aligned, _ = prepare_style_image(image, backend=backend)
    return extract_style(model, aligned, style_id, color_transfer), aligned


def _preview_face(image: np.ndarray, backend) -> np.ndarray:
    """The aligned face of ``image`` when one is found, else its 256x256 centre crop (uint8 RGB)."""
    from .faces import FaceBackendUnavailableError, NoFaceError

    try:
        return prepare_style_image(image, backend=backend)[0]
    except (NoFaceError, InputError, FaceBackendUnavailableError) as exc:
        logger.info("VToonify: no aligned face for the preview (%s); colour transfer does not need one", exc)
    return _centre_square(image, ALIGNED_SIZE)


def _centre_square(image: np.ndarray, size: int) -> np.ndarray:
    """The largest centred square of an ``(H, W, 3)`` uint8 image, resized to ``size`` x ``size`` (area filter)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError("image", f"expected an (H, W, 3) image, got shape {image.shape}.")
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = torch.from_numpy(np.ascontiguousarray(image[top:top + s, left:left + s])).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="area") if s >= size else \
        F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def check_style(model: VToonifyModel, style: StyleCode, allow_schedule: bool = False) -> None:
    """Refuse a style code made for another kind of model, or of the wrong shape.

    With ``allow_schedule`` a :class:`~vtoonify_core.style_control.StyleSchedule` (keyframed
    styles) is accepted too, when every keyframe style passes.
    """
    from .style_control import StyleSchedule

    if isinstance(style, StyleSchedule):
        if not allow_schedule:
            raise InputError("style", "this is a keyframed style (Style Keyframes), which only Stylize Frames "
                                      "takes: connect a single style code here.")
        for key in style.keyframes:
            check_style(model, key.style)
        return
    if not isinstance(style, StyleCode):
        raise InputError("style", f"expected a VToonify style code, got {type(style).__name__}: connect "
                                  f"Extract Style Code.")
    if style.backbone != model.backbone:
        raise InputError("style", f"this style code was made with a {BACKBONE_NAMES.get(style.backbone, style.backbone)} "
                                  f"model but the model is {model.kind}: extract the style with the same "
                                  f"Load VToonify Model output that feeds this node.")
    n = getattr(model.generator, "n_latent", 18)
    if style.wplus.ndim != 3 or tuple(style.wplus.shape[1:]) != (n, 512) or style.wplus.shape[0] != 1:
        raise InputError("style", f"the W+ code must be [1, {n}, 512], got {tuple(style.wplus.shape)}.")
    if not bool(torch.isfinite(style.wplus).all()):
        raise InputError("style", "the W+ code contains NaN or infinite values.")


# ----------------------------------------------------------------------------------------------
# stylization


def _check_degree(d_s: float) -> float:
    d_s = float(d_s)
    if not math.isfinite(d_s) or not 0.0 <= d_s <= 1.0:
        raise InputError("style_degree", f"must be between 0 and 1, got {d_s}.")
    return d_s


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
    return _check_degree(d_s) if model.backbone == "dualstylegan" else float(d_s)


def _chunk_size(model: VToonifyModel, n: int, batch_size: int, input_size: tuple[int, int],
                extra_frame_bytes: int = 0) -> int:
    """``batch_size``, or for 0 the automatic size (:func:`auto_batch_size`) for ``n`` frames of ``input_size``."""
    if batch_size:
        return int(batch_size)
    h, w = input_size
    size = min(n, auto_batch_size(model, h, w, extra_frame_bytes=extra_frame_bytes))
    logger.info("VToonify: %d frame(s) per chunk (automatic, %dx%d input in %s on %s)", size, w, h,
                str(model.dtype).replace("torch.", ""), model.device)
    return size


def _run(model: VToonifyModel, n: int, load: Callable[[int, int], Sequence[Tensor]],
         prepare: Callable[[Tensor], Tensor], prepare_parsing: Optional[Callable[[Tensor], Tensor]],
         style: StyleCode, d_s: float, batch_size: int, progress, check_interrupt, on_oom, output_device,
         emit: Callable[[int, Tensor], None], overlap: Optional[bool] = None) -> None:
    """Stylize ``n`` frames chunk by chunk with :func:`run_chunks_overlapped`.

    ``load(i, j)`` gives the chunk's frames as they are transferred (and its parsing maps, second,
    when given); on the device ``prepare`` makes VToonify's frames (in [-1, 1], model dtype) and
    ``prepare_parsing`` the logits at the input size (``None``: the frames are parsed).
    """
    from .style_control import StyleSchedule, forward_scheduled

    schedule = style if isinstance(style, StyleSchedule) else None
    s_w = None if schedule is not None else style.wplus.to(model.device, model.dtype)

    def compute(inputs: Sequence[Tensor], i: int, j: int) -> Tensor:
        x = prepare(inputs[0])
        with torch.inference_mode():
            x_p = parse_frames(model.parser, x) if prepare_parsing is None else prepare_parsing(inputs[1])
            if schedule is not None:  # per-frame styles and degrees
                y = forward_scheduled(model.generator, make_inputs(x, x_p), schedule, i, d_s)
            else:
                y = model.generator(make_inputs(x, x_p), s_w.expand(j - i, -1, -1), d_s=d_s)
            return y.float().clamp_(-1.0, 1.0)

    for i, y in run_chunks_overlapped(load, compute, n, batch_size, device=model.device, output_device=output_device,
                                      progress=progress, check_interrupt=check_interrupt, on_oom=on_oom,
                                      overlap=overlap):
        emit(i, y)


def stylize(model: VToonifyModel, frames: Tensor, style: StyleCode, d_s: float = 0.5,
            parsing: Union[FaceParsing, Tensor, None] = None, batch_size: int = 4,
            progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None, *,
            input_range: tuple[float, float] = (-1.0, 1.0), output_device: DeviceLike = "cpu",
            on_oom: Optional[Callable[[int], None]] = None,
            sink: Optional[Callable[[int, Tensor], None]] = None, overlap: Optional[bool] = None) -> Optional[Tensor]:
    """Toonify frames in chunks: ``clamp(generator(cat(x, parse(x) / 16), s_w, d_s), -1, 1)``.

    Args:
        model: the bundle (computation runs on ``model.device`` in ``model.dtype``).
        frames: ``[B, 3, H, W]``, H and W multiples of 8; float in ``input_range`` (default
            [-1, 1], the official normalisation) or uint8 0..255. Any device; each chunk is
            moved to the model's device.
        style: from :func:`extract_style`; must match the model's backbone. A
            :class:`~vtoonify_core.style_control.StyleSchedule` gives every frame its own style
            and degree (frame index = position in ``frames``).
        d_s: style degree in [0, 1] (VToonify-D; ignored by VToonify-T); with a schedule, the
            degree of keyframes that have none.
        parsing: BiSeNet logits ``[B, 19, H, W]`` (e.g. temporally smoothed); parsed per chunk
            when ``None`` (:func:`~vtoonify_core.bisenet.parse_frames`).
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
    out = None if sink is not None else torch.empty(b, 3, SCALE * h, SCALE * w, dtype=torch.float32,
                                                    device=output_device)
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
         check_interrupt, on_oom, output_device, emit, overlap)
    return out


# ----------------------------------------------------------------------------------------------
# whole clips: the official face crop, or the whole frame padded to multiples of 8


CROP_MODES = ("face", "whole")


@dataclass(frozen=True, eq=False)
class ClipPlan:
    """How a clip is fed to VToonify.

    Attributes:
        mode: ``'face'`` (official crop) or ``'whole'`` (whole frame padded to multiples of 8).
        source_size: ``(H, W)`` of the input frames.
        input_size: ``(h, w)`` of what VToonify receives (the crop, or the padded frame).
        crops: face mode: the uint8 crops ``[B, 3, h, w]``; whole mode: ``None`` (frames are
            padded chunk by chunk).
        geometry: face mode: the :class:`~vtoonify_core.crop.CropGeometry`.
        padding: whole mode: the :class:`Padding`.
        reference_index: face mode: the frame whose face set the crop.
    """

    mode: str
    source_size: tuple[int, int]
    input_size: tuple[int, int]
    crops: Optional[Tensor] = None
    geometry: object = None
    padding: Optional[Padding] = None
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
        from .crop import paste_back

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


def _frame_uint8(frames: Tensor, i: int, input_range: tuple[float, float]) -> np.ndarray:
    f = frames[i]
    if f.dtype != torch.uint8:
        f = ((to_model_range(f, input_range) + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)
    return np.ascontiguousarray(f.permute(1, 2, 0).cpu().numpy())


def plan_clip(frames: Tensor, mode: str = "face", *, input_range: tuple[float, float] = (-1.0, 1.0),
              face_padding: int = DEFAULT_FACE_PADDING, backend="dlib") -> ClipPlan:
    """Decide how a clip is fed to VToonify.

    * ``'face'``: the official rule: the first frame with a face sets the geometry (frame rescaled
      so the eyes are 64 px apart, a window ``face_padding`` px on each side of the eye centre,
      sides multiples of 8, pre-blur when shrinking) and every frame is cropped with it, in uint8
      as the official code does (one frame converted at a time).
    * ``'whole'``: the whole frame, padded by reflection to multiples of 8 (chunk by chunk); the
      output is cropped back to 4x the original.

    Raises:
        InputError: empty batch, NaNs, a frame too small to pad or to crop.
        NoFaceError: face mode and no face in any frame.
    """
    validate_frames(frames, "images")
    b, _, H, W = frames.shape
    if mode == "whole":
        try:
            pad = padding_for(H, W, MULTIPLE, "reflect")
        except ValueError as exc:
            raise InputError("images", f"{exc}.") from None
        return ClipPlan("whole", (H, W), (H + pad.top + pad.bottom, W + pad.left + pad.right), padding=pad)
    if mode != "face":
        raise InputError("crop_mode", f"unknown crop mode {mode!r}; use one of {', '.join(CROP_MODES)}.")
    if face_padding < MULTIPLE:
        raise InputError("face_padding", f"must be at least {MULTIPLE} px, got {face_padding}.")
    from .crop import apply_crop, crop_geometry
    from .faces import NoFaceError, detect_faces, no_face_message

    pad = (int(face_padding),) * 4
    geometry, ref, too_small = None, -1, None
    for i in range(b):
        img = _frame_uint8(frames, i, input_range)
        for face in detect_faces(img, backend=backend):
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
        crops[i] = apply_crop(_frame_uint8(frames, i, input_range), geometry)
    return ClipPlan("face", (H, W), geometry.crop_shape, crops=torch.from_numpy(crops).permute(0, 3, 1, 2),
                    geometry=geometry, reference_index=ref)


def stylize_clip(model: VToonifyModel, frames: Tensor, style: StyleCode, d_s: float = 0.5, *,
                 crop_mode: str = "face", parsing: Union[FaceParsing, Tensor, None] = None, batch_size: int = 4,
                 face_padding: int = DEFAULT_FACE_PADDING, input_range: tuple[float, float] = (-1.0, 1.0),
                 progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None,
                 on_oom: Optional[Callable[[int], None]] = None, output_device: DeviceLike = "cpu",
                 sink: Optional[Callable[[int, Tensor], None]] = None, backend="dlib", overlap: Optional[bool] = None
                 ) -> tuple[Optional[Tensor], ClipPlan]:
    """Crop (face mode) or pad (whole mode) a clip with :func:`plan_clip`, then stylize it.

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
    out = None if sink is not None else torch.empty(b, 3, oh, ow, dtype=torch.float32, device=output_device)
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
         check_interrupt, on_oom, output_device, emit, overlap)
    return out, plan


# ----------------------------------------------------------------------------------------------
# temporal smoothing of parsing maps


def smooth_clip(parsing: FaceParsing, frames: Tensor, *, k: int = 5, sigma_t: float = 5.5, sigma_s: float = 0.2,
                flow="dis", input_range: tuple[float, float] = (-1.0, 1.0), chunk_size: int = 32,
                progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None
                ) -> FaceParsing:
    """Smooth parsing maps over time (:func:`~vtoonify_core.temporal.smooth_parsing`), chunk by chunk.

    Each chunk of ``chunk_size`` output frames is computed from its frames plus ``k`` frames of
    context on each side (identical to the one-shot result); frames are converted to [-1, 1] one
    chunk at a time and ``check_interrupt`` runs between chunks.
    """
    from .temporal import chunk_with_context, smooth_parsing

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
    for name, v in (("sigma_t", sigma_t), ("sigma_s", sigma_s)):
        if not float(v) > 0:
            raise InputError(name, f"must be > 0, got {v}.")
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise InputError("k", f"must be a whole number >= 0, got {k}.")
    k = int(k)
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
