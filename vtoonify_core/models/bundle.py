"""The model bundle: VToonify, the pSp encoder, the BiSeNet parser and the exemplar codes,
loaded together on one device in one dtype.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from torch import nn

from ..errors import CheckpointError, InputError
from ..types import BACKBONE_NAMES, DeviceLike, PathLike
from .bisenet import load_face_parser
from .exstyle import ExStyles, load_exstyles, save_exstyles
from .merge import describe_ratios, merge_networks, save_network
from .psp import load_style_encoder
from .vtoonify import load_vtoonify

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


def merge_vtoonify(a: VToonifyModel, b: VToonifyModel, ratio: float = 0.5, *,
                   parts: Optional[Mapping[str, float]] = None, exstyles: str = "a") -> VToonifyModel:
    """A bundle whose generator blends ``a``'s and ``b``'s (:func:`~vtoonify_core.models.merge.merge_networks`).

    The encoder and parser are ``a``'s; the exemplar codes of VToonify-D are ``a``'s, or ``b``'s with
    ``exstyles='b'``. ``a`` and ``b`` are left untouched.

    Raises:
        InputError: models of different kinds, unknown parts, ratios outside [0, 1], ``exstyles``
            not ``'a'``/``'b'`` or naming a model without exemplar codes.
    """
    if exstyles not in ("a", "b"):
        raise InputError("exstyles", f"use 'a' or 'b', got {exstyles!r}.")
    source = a if exstyles == "a" else b
    if a.backbone == "dualstylegan" and source.exstyles is None:  # checked before the (long) merge
        raise InputError("exstyles", f"model_{exstyles} has no exemplar style codes: load it with its "
                                     f"exstyle_code.npy, or take them from the other model.")
    generator = merge_networks(a.generator, b.generator, ratio, parts)

    def name(m: VToonifyModel, default: str) -> str:  # the style folder and the file: vtoonify_d_arcane/vtoonify_s_d.pt
        path = Path(m.sources.get("checkpoint", default))
        return f"{path.parent.name}/{path.name}" if path.parent.name else path.name

    ratios = describe_ratios(ratio) + (f"; {describe_ratios(parts)}" if parts else "")
    sources = dict(a.sources)
    sources["checkpoint"] = f"merge of {name(a, 'A')} and {name(b, 'B')} ({ratios})"
    if "exstyle" in source.sources:
        sources["exstyle"] = source.sources["exstyle"]
    return dataclasses.replace(a, generator=generator, exstyles=source.exstyles if generator.backbone ==
                               "dualstylegan" else None, sources=sources)


def save_model(model: VToonifyModel, path: PathLike) -> Path:
    """Save the generator to ``path`` (``.safetensors``) and, for VToonify-D, its exemplar codes beside
    it as ``exstyle_code.safetensors`` (where Load VToonify Model looks for them).

    Raises:
        CheckpointError: not ``.safetensors``, or exemplar codes of another model already beside it.
    """
    path = Path(path)
    meta = {"source": model.sources.get("checkpoint", "")}
    if model.backbone == "dualstylegan" and model.exstyles is not None:
        present = find_exstyle(path)  # what Load VToonify Model would read beside the file (.npy first)
        if present is not None:
            old = load_exstyles(present)
            if old.names != model.exstyles.names or not torch.equal(old.codes, model.exstyles.codes.float()):
                raise CheckpointError(f"{present} holds the exemplar codes of another model: save this one in "
                                      f"another folder.")
        else:
            save_exstyles(model.exstyles, path.parent / "exstyle_code.safetensors")
    return save_network(model.generator, path, meta)
