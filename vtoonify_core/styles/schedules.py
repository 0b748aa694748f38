"""Keyframed styles: styles and style degrees at chosen frames, interpolated in between, and the
generator forward that follows them frame by frame.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch
from torch import Tensor

from ..checks import check_code, check_fraction
from ..errors import InputError
from ..types import BACKBONE_NAMES, N_LAYERS, StyleCode

# ----------------------------------------------------------------------------------------------
# keyframes


@dataclass(frozen=True, eq=False)
class Keyframe:
    """A style (and optionally a style degree) at a frame of the clip.

    ``degree`` ``None`` means: the style degree the stylization is given (Stylize Frames'
    ``style_degree``).
    """

    frame: int
    style: StyleCode
    degree: Optional[float] = None


@dataclass(frozen=True, eq=False)
class StyleSchedule:
    """Styles and style degrees over a clip, from keyframes (sorted by frame, distinct frames).

    Frame ``f`` between keyframes ``k0`` and ``k1`` gets ``lerp(k0.wplus, k1.wplus, t)`` and
    ``d0 + t * (d1 - d0)`` with ``t = (f - k0.frame) / (k1.frame - k0.frame)``; frames before the
    first keyframe take the first, frames after the last take the last. At a keyframe the code is
    the keyframe's own, bit for bit.
    """

    keyframes: tuple[Keyframe, ...]

    def __post_init__(self):
        kfs = tuple(self.keyframes)
        if not kfs:
            raise InputError("keyframes", "a style schedule needs at least one keyframe.")
        frames = [k.frame for k in kfs]
        if frames != sorted(set(frames)):
            raise InputError("keyframes", f"keyframe frames must be distinct and increasing, got {frames}.")
        for k in kfs:
            if isinstance(k.frame, bool) or not isinstance(k.frame, (int, np.integer)) or k.frame < 0:
                raise InputError("keyframes", f"keyframe frames must be whole numbers >= 0, got {k.frame!r}.")
            check_code(k.style, "keyframes")
            if k.degree is not None:
                check_fraction(k.degree, "keyframes")
        if len({k.style.backbone for k in kfs}) > 1:
            raise InputError("keyframes", "all keyframe styles must be made with the same kind of model "
                                          "(VToonify-T or VToonify-D).")
        object.__setattr__(self, "keyframes", kfs)

    @property
    def backbone(self) -> str:
        """The backbone of every keyframe style."""
        return self.keyframes[0].style.backbone

    @property
    def is_constant(self) -> bool:
        """True when every frame gets the same style and degree."""
        k0 = self.keyframes[0]
        return all(torch.equal(k.style.wplus, k0.style.wplus) and k.degree == k0.degree for k in self.keyframes[1:])

    def _segment(self, frame: int) -> tuple[Keyframe, Keyframe, float]:
        kfs = self.keyframes
        if frame <= kfs[0].frame:
            return kfs[0], kfs[0], 0.0
        if frame >= kfs[-1].frame:
            return kfs[-1], kfs[-1], 0.0
        for k0, k1 in zip(kfs, kfs[1:]):
            if k0.frame <= frame < k1.frame:
                return k0, k1, (frame - k0.frame) / (k1.frame - k0.frame)
        raise AssertionError("unreachable")  # pragma: no cover

    def wplus_at(self, frame: int) -> Tensor:
        """The W+ code of ``frame``, ``[1, 18, 512]`` float32."""
        k0, k1, t = self._segment(int(frame))
        if t == 0.0:
            return k0.style.wplus.float()
        return torch.lerp(k0.style.wplus.float(), k1.style.wplus.float().to(k0.style.wplus.device), t)

    def degree_at(self, frame: int, default: float) -> float:
        """The style degree of ``frame``; keyframes without one use ``default``."""
        k0, k1, t = self._segment(int(frame))
        d0 = float(default) if k0.degree is None else float(k0.degree)
        if t == 0.0:
            return d0
        d1 = float(default) if k1.degree is None else float(k1.degree)
        return d0 + t * (d1 - d0)

    def codes(self, start: int, stop: int, default_degree: float) -> tuple[Tensor, list[float]]:
        """W+ codes ``[stop - start, 18, 512]`` and style degrees of frames ``start..stop-1``."""
        frames = range(int(start), int(stop))
        return (torch.cat([self.wplus_at(f) for f in frames]) if len(frames) else torch.zeros(0, N_LAYERS, 512),
                [self.degree_at(f, default_degree) for f in frames])

    def describe(self) -> str:
        """One line per keyframe."""
        kind = BACKBONE_NAMES.get(self.backbone, self.backbone)
        lines = [f"{kind} style keyframes ({len(self.keyframes)}; linear in W+ and style degree between them, "
                 f"held before the first and after the last):"]
        for k in self.keyframes:
            deg = "the node's style_degree" if k.degree is None else f"style degree {k.degree:g}"
            lines.append(f"  frame {k.frame}: {k.style.describe()}, {deg}")
        return "\n".join(lines)


_ENTRY = re.compile(r"^(\d+)\s*:\s*([A-Za-z])\s*(?:@\s*([-+0-9.eE]+))?$")


def parse_keyframes(spec: str, styles: Mapping[str, Optional[StyleCode]]) -> StyleSchedule:
    """A schedule from a text such as ``"0:A@0.0, 120:B@1.0"``.

    Entries are separated by commas, semicolons or new lines; each is ``FRAME:LETTER`` with an
    optional ``@DEGREE`` (0..1; without it the stylization's own style degree is used). ``LETTER``
    names a style of ``styles`` (e.g. ``{'A': code, 'B': code}``, case-insensitive).

    Raises:
        InputError: syntax errors (with the entry), unknown or unconnected letters, repeated frames,
            degrees outside [0, 1].
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("keyframes", "empty: write entries such as '0:A@0.0, 120:B@1.0'.")
    named = {str(k).upper(): v for k, v in styles.items()}
    out: dict[int, Keyframe] = {}
    for raw in re.split(r"[,;\n]+", spec):
        entry = raw.strip()
        if not entry:
            continue
        m = _ENTRY.match(entry)
        if not m:
            raise InputError("keyframes", f"cannot read {entry!r}: write FRAME:LETTER or FRAME:LETTER@DEGREE, "
                                          f"e.g. '0:A@0.0, 120:B@1.0'.")
        frame, letter, degree = int(m.group(1)), m.group(2).upper(), m.group(3)
        if letter not in named:
            raise InputError("keyframes", f"{entry!r} names style {letter}; use one of "
                                          f"{', '.join(sorted(named))} (the inputs style_a, style_b, ...).")
        style = named[letter]
        if style is None:
            raise InputError("keyframes", f"{entry!r} uses style {letter}, but style_{letter.lower()} is not "
                                          f"connected.")
        deg = None
        if degree is not None:
            try:
                deg = float(degree)
            except ValueError:
                raise InputError("keyframes", f"cannot read the degree of {entry!r}.") from None
            if not math.isfinite(deg) or not 0.0 <= deg <= 1.0:
                raise InputError("keyframes", f"the style degree of {entry!r} must be between 0 and 1.")
        if frame in out:
            raise InputError("keyframes", f"frame {frame} has two keyframes: keep one entry for frame {frame}.")
        out[frame] = Keyframe(frame, check_code(style, f"style_{letter.lower()}"), deg)
    if not out:
        raise InputError("keyframes", "no keyframe: write entries such as '0:A@0.0, 120:B@1.0'.")
    return StyleSchedule(tuple(out[f] for f in sorted(out)))


def forward_scheduled(generator: torch.nn.Module, inputs: Tensor, schedule: StyleSchedule, start: int,
                      default_degree: float) -> Tensor:
    """Run VToonify on a chunk of frames ``start..start+B-1`` with their scheduled styles and degrees.

    Consecutive frames with equal degree form one call (VToonify takes a scalar ``d_s``; VToonify-T
    ignores it, so it always makes one call). Within a call every frame has its own W+ code; when
    they are all equal the generator's baked fast path applies.

    Args:
        generator: the VToonify network.
        inputs: ``[B, 22, H, W]`` on the network's device and dtype.
        schedule: the style schedule.
        start: clip index of the chunk's first frame.
        default_degree: degree for keyframes without one.

    Returns:
        ``[B, 3, 4H, 4W]``, unclamped.
    """
    n = inputs.shape[0]
    wplus, degrees = schedule.codes(start, start + n, default_degree)
    wplus = wplus.to(inputs.device, inputs.dtype)
    if generator.backbone != "dualstylegan":
        return generator(inputs, wplus, d_s=degrees[0] if degrees else default_degree)
    outs, i = [], 0
    while i < n:
        j = i + 1
        while j < n and degrees[j] == degrees[i]:
            j += 1
        outs.append(generator(inputs[i:j], wplus[i:j], d_s=degrees[i]))
        i = j
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def style_tensor(style) -> Tensor:
    """The W+ codes a style or schedule is made of, float32 CPU: ``[1, 18, 512]`` for a code,
    ``[K, 18, 512]`` (one per keyframe) for a schedule."""
    if isinstance(style, StyleSchedule):
        return torch.cat([k.style.wplus.detach().float().cpu() for k in style.keyframes])
    return style.wplus.detach().float().cpu()


def style_record(style) -> dict:
    """What a style or schedule is, besides its codes (:func:`style_tensor`), as plain JSON data."""
    def one(s: StyleCode) -> dict:
        return {"backbone": s.backbone, "style_id": s.style_id, "style_name": s.style_name,
                "color_transfer": bool(s.color_transfer)}

    if isinstance(style, StyleSchedule):
        return {"backbone": style.backbone, "keyframes": [dict(one(k.style), frame=int(k.frame), degree=k.degree)
                                                          for k in style.keyframes]}
    return one(style)


def style_from_record(codes: Tensor, record: dict):
    """A style or schedule back from :func:`style_tensor` and :func:`style_record` (a detached copy)."""
    def one(w: Tensor, r: dict) -> StyleCode:
        return StyleCode(w, r["backbone"], r.get("style_id"), r.get("style_name"), bool(r.get("color_transfer")))

    if "keyframes" in record:
        keys = record["keyframes"]
        if codes.ndim != 3 or codes.shape[0] != len(keys):
            raise InputError("style", f"{codes.shape[0]} saved codes for {len(keys)} keyframes.")
        return StyleSchedule(tuple(Keyframe(int(k["frame"]), one(codes[i:i + 1].clone(), k),
                                            None if k.get("degree") is None else float(k["degree"]))
                                   for i, k in enumerate(keys)))
    return one(codes.clone(), record)
