"""W+ arithmetic on style codes: layer groups and their roles, mixing two codes on chosen
layers, weighted averages of several.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ..checks import check_code, check_fraction
from ..errors import InputError
from ..types import BACKBONE_NAMES, N_LAYERS, STRUCTURE_LAYERS, StyleCode

#: Named layer groups (first, last), inclusive.
LAYER_GROUPS = {"all": (0, N_LAYERS - 1), "structure": (0, STRUCTURE_LAYERS - 1),
                "colour": (STRUCTURE_LAYERS, N_LAYERS - 1), "color": (STRUCTURE_LAYERS, N_LAYERS - 1)}


# ----------------------------------------------------------------------------------------------
# layers


def layer_roles() -> list[str]:
    """What each of the 18 W+ layers does in VToonify (index = layer); see the module docstring."""
    roles = ["DualStyleGAN 4x4 stage (not used by VToonify)"]
    for k in range(1, STRUCTURE_LAYERS):
        size = 2 ** (3 + (k - 1) // 2)
        roles.append(f"structure: VToonify-D ModRes {k} (DualStyleGAN {size}x{size} stage); ignored by VToonify-T")
    for k in range(STRUCTURE_LAYERS, N_LAYERS):
        parts = []
        if k % 2 == 1 and k <= 15:
            parts.append(f"up-sampling conv of decoder stage {(k - 7) // 2}")
        if k % 2 == 0:
            parts.append(f"conv of decoder stage {(k - 8) // 2}")
        if k % 2 == 1 and k >= 9:
            parts.append(f"to-RGB of decoder stage {(k - 9) // 2}")
        roles.append("colour/texture: " + " and ".join(parts))
    return roles


def resolve_layers(layers: Union[str, Sequence[int], tuple[int, int]] = "all") -> list[int]:
    """W+ layer indices from a group name (``'all'``, ``'structure'`` = 0-6, ``'colour'`` = 7-17),
    a range string ``'3-9'`` (inclusive) or ``'3'``, or a sequence of indices.

    Raises:
        InputError: unknown names, indices outside 0..17, or an empty selection.
    """
    if isinstance(layers, str):
        text = layers.strip().lower()
        if text in LAYER_GROUPS:
            first, last = LAYER_GROUPS[text]
            return list(range(first, last + 1))
        m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", text)
        if not m:
            raise InputError("layers", f"unknown layer selection {layers!r}; use all, structure (0-6), colour "
                                       f"(7-17) or a range such as '3-9'.")
        first, last = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if first > last:
            raise InputError("layers", f"the range {layers!r} is empty: the first layer must not exceed the last.")
        idx = list(range(first, last + 1))
    else:
        idx = []
        for v in layers:
            if isinstance(v, bool) or int(v) != v:
                raise InputError("layers", f"layer indices must be whole numbers, got {v!r}.")
            if int(v) not in idx:
                idx.append(int(v))
    bad = [i for i in idx if not 0 <= i < N_LAYERS]
    if bad:
        raise InputError("layers", f"W+ layers are 0..{N_LAYERS - 1}, got {bad}.")
    if not idx:
        raise InputError("layers", "no layer selected.")
    return sorted(idx)


def _layers_label(idx: Sequence[int]) -> str:
    for name in ("all", "structure", "colour"):
        first, last = LAYER_GROUPS[name]
        if list(idx) == list(range(first, last + 1)):
            return f"{name} layers {first}-{last}"
    if list(idx) == list(range(idx[0], idx[-1] + 1)):
        return f"layers {idx[0]}-{idx[-1]}"
    return "layers " + ",".join(map(str, idx))


# ----------------------------------------------------------------------------------------------
# mixing and averaging


def mix_styles(a: StyleCode, b: StyleCode, blend: float = 0.5,
               layers: Union[str, Sequence[int]] = "all") -> StyleCode:
    """Blend two style codes on a group of W+ layers: ``(1 - blend) * A + blend * B`` there, ``A`` elsewhere.

    ``blend = 0`` returns ``A`` itself; ``blend = 1`` on all layers returns ``B`` itself; on a group
    it copies those layers of ``B`` exactly. With ``layers='all'`` this is linear interpolation
    between the two codes. Both must be for the same backbone (VToonify-T or -D).

    Raises:
        InputError: not style codes, different backbones, blend outside [0, 1], bad layers.
    """
    a, b = check_code(a, "style_a"), check_code(b, "style_b")
    if a.backbone != b.backbone:
        raise InputError("style_b", f"style_a is for {BACKBONE_NAMES.get(a.backbone, a.backbone)} but style_b for "
                                    f"{BACKBONE_NAMES.get(b.backbone, b.backbone)}: mix codes made with the same model.")
    t = check_fraction(blend, "blend")
    idx = resolve_layers(layers)
    if t == 0.0:
        return a
    if t == 1.0 and len(idx) == N_LAYERS:
        return b
    w = a.wplus.detach().float().clone()
    wb = b.wplus.detach().float().to(w.device)
    w[:, idx] = wb[:, idx] if t == 1.0 else torch.lerp(w[:, idx], wb[:, idx], t)
    same = a.style_id == b.style_id and a.style_name == b.style_name
    name = a.style_name if same else f"mix of {_style_label(a)} and {_style_label(b)} ({t:g} on {_layers_label(idx)})"
    return StyleCode(w, a.backbone, a.style_id if same else None, name,
                     a.color_transfer if a.color_transfer == b.color_transfer else False)


def _style_label(s: StyleCode) -> str:
    if s.style_name:
        return str(s.style_name) if s.style_id is None else f"{s.style_id} ({s.style_name})"
    return "face code"


def average_codes(codes: Sequence[Tensor], weights: Optional[Sequence[float]] = None) -> Tensor:
    """(Weighted) mean of W+ codes ``[1, 18, 512]``; one code is returned unchanged (a copy).

    Averaging is done in W+ (where StyleGAN's codes combine linearly), not in z+.

    Raises:
        InputError: no codes, mismatched shapes, or bad weights.
    """
    if len(codes) == 0:
        raise InputError("reference", "no code to average: give at least one reference image.")
    shape = tuple(codes[0].shape)
    for c in codes:
        if tuple(c.shape) != shape:
            raise InputError("reference", f"codes to average must all be {shape}, got {tuple(c.shape)}.")
    if len(codes) == 1:
        return codes[0].detach().float().clone()
    stack = torch.stack([c.detach().float() for c in codes])
    if weights is None:
        return stack.mean(dim=0)
    if len(weights) != len(codes):
        raise InputError("weights", f"{len(weights)} weights for {len(codes)} codes.")
    wt = torch.tensor([float(x) for x in weights], dtype=torch.float32)
    if not bool(torch.isfinite(wt).all()) or bool((wt < 0).any()) or float(wt.sum()) <= 0:
        raise InputError("weights", "weights must be finite, >= 0 and not all 0.")
    wt = (wt / wt.sum()).reshape(-1, *([1] * len(shape)))
    return (stack * wt).sum(dim=0)


def average_styles(styles: Sequence[StyleCode], weights: Optional[Sequence[float]] = None) -> StyleCode:
    """The mean of several style codes of one backbone (see :func:`average_codes`)."""
    if len(styles) == 0:
        raise InputError("styles", "no style to average.")
    styles = [check_code(s, "styles") for s in styles]
    if len({s.backbone for s in styles}) > 1:
        raise InputError("styles", "all style codes must be made with the same kind of model.")
    if len(styles) == 1:
        return styles[0]
    w = average_codes([s.wplus for s in styles], weights)
    return StyleCode(w, styles[0].backbone, None, f"average of {len(styles)} styles",
                     all(s.color_transfer for s in styles))
