"""Blending two VToonify networks of one kind layer by layer, as Toonify's resolution-dependent
interpolation (Pinkney and Adler, 2020) and CPTR do: one ratio for the whole network, or a ratio
per part (encoder, fusion, ModRes, decoder by resolution); and saving a network to load it again.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from ..errors import CheckpointError, InputError
from ..types import BACKBONE_NAMES, PathLike
from ..weights import save_safetensors
from .vtoonify import VToonify, build_vtoonify

#: The parts a ratio can be given for. ``decoder_<r>``: the StyleGAN layers of nominal resolution r
#: (VToonify runs them at 4x/2x/1x/0.5x/0.25x... of the input; ``decoder_1024`` makes the output);
#: ``mapping``: the mapping network z+ -> W+; ``style_transforms``: VToonify-D's colour and structure
#: transforms of the style code; ``modres``: VToonify-D's ModRes blocks on the encoder features;
#: ``other``: the StyleGAN layers VToonify does not run and the constant input.
PARTS = ("encoder", "modres", "fusion", "mapping", "style_transforms", "decoder_64", "decoder_128", "decoder_256",
         "decoder_512", "decoder_1024", "other")
#: Parts of each backbone (VToonify-T has no ModRes blocks and no style transforms).
BACKBONE_PARTS = {"dualstylegan": PARTS, "toonify": tuple(p for p in PARTS if p not in ("modres", "style_transforms"))}
_LAYER = re.compile(r"(convs|to_rgbs)\.(\d+)\.")
KIND_OF = {"toonify": "vtoonify_t", "dualstylegan": "vtoonify_d"}
#: The switches of the fast path a merged network takes over from its first parent.
SWITCHES = ("fast", "channels_last", "fold_upsample", "compile_mode", "reuse_host_memory", "bake_cache_size")


def part_of(key: str, backbone: str) -> str:
    """The part (:data:`PARTS`) a state-dict entry of a VToonify network belongs to."""
    if key.startswith("encoder."):
        return "encoder"
    if key.startswith("res."):
        return "modres"
    if key.startswith(("fusion_out.", "fusion_skip.")):
        return "fusion"
    stylegan = "generator.generator." if backbone == "dualstylegan" else "generator."
    if not key.startswith(stylegan):
        return "style_transforms"  # VToonify-D: generator.style (colour) and generator.res (structure)
    rest = key[len(stylegan):]
    if rest.startswith("style."):
        return "mapping"
    m = _LAYER.match(rest)
    if m:
        index = int(m.group(2))
        resolution = 8 * 2 ** (index // 2 if m.group(1) == "convs" else index)
        if resolution >= 64:
            return f"decoder_{resolution}"
    return "other"


def part_ratios(backbone: str, ratio: float, parts: Optional[Mapping[str, float]] = None) -> dict[str, float]:
    """The ratio of every part: ``parts`` where named, ``ratio`` elsewhere (each in [0, 1])."""
    valid = BACKBONE_PARTS[backbone]
    unknown = sorted(set(parts or {}) - set(valid))
    if unknown:
        raise InputError("parts", f"unknown part(s) {unknown} of {BACKBONE_NAMES[backbone]}; use {', '.join(valid)}.")
    out = {}
    for name in valid:
        value = (parts or {}).get(name, ratio)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InputError(name if name in (parts or {}) else "ratio", f"must be a number in [0, 1], "
                                                                         f"got {value!r}.") from None
        if not 0.0 <= value <= 1.0:
            raise InputError(name if name in (parts or {}) else "ratio", f"must be in [0, 1], got {value}.")
        out[name] = value
    return out


def _blend(a: torch.Tensor, b: torch.Tensor, r: float) -> torch.Tensor:
    """``(1 - r) * a + r * b`` in float32 (at least), in ``a``'s dtype; exactly ``a`` at 0 and ``b`` at 1."""
    if r == 0.0 or not a.is_floating_point():
        return a.detach().clone()
    if r == 1.0:
        return b.detach().to(a.device, a.dtype, copy=True)
    work = torch.promote_types(a.dtype, torch.float32)
    return torch.lerp(a.detach().to(work), b.detach().to(a.device, work), r).to(a.dtype)


def merge_networks(a: VToonify, b: VToonify, ratio: float = 0.5, parts: Optional[Mapping[str, float]] = None
                   ) -> VToonify:
    """A new VToonify network whose every tensor is ``(1 - r) * A + r * B`` with the ratio ``r`` of its part.

    ``a`` and ``b`` are left untouched; the new network lives on ``a``'s device in ``a``'s dtype,
    in eval mode without gradients, with ``a``'s fast-path switches and no baked caches.

    Raises:
        InputError: networks of different kinds or shapes, unknown parts, ratios outside [0, 1].
    """
    for name, net in (("model_a", a), ("model_b", b)):
        if not isinstance(net, VToonify):
            raise InputError(name, f"expected a VToonify network, got {type(net).__name__}.")
    if a.backbone != b.backbone:
        raise InputError("model_b", f"model_a is {BACKBONE_NAMES[a.backbone]} and model_b is "
                                    f"{BACKBONE_NAMES[b.backbone]}: merge two models of one kind.")
    ratios = part_ratios(a.backbone, ratio, parts)
    sa, sb = a.state_dict(), b.state_dict()
    for key, t in sa.items():
        if key not in sb or sb[key].shape != t.shape:
            shape = tuple(sb[key].shape) if key in sb else "missing"
            raise InputError("model_b", f"{key} is {tuple(t.shape)} in model_a but {shape} in model_b: the two "
                                        f"networks are not of one architecture.")
    merged = {key: _blend(t, sb[key], ratios[part_of(key, a.backbone)]) for key, t in sa.items()}
    with torch.device("meta"):
        net = build_vtoonify(KIND_OF[a.backbone])
    net.load_state_dict(merged, strict=True, assign=True)
    for name in SWITCHES:
        setattr(net, name, getattr(a, name))
    return net.eval().requires_grad_(False)


def save_network(net: VToonify, path: PathLike, metadata: Optional[Mapping[str, str]] = None) -> Path:
    """Write a VToonify network to ``.safetensors`` with the official keys, so :func:`load_vtoonify`
    (and Load VToonify Model) read it like a converted official checkpoint."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: a saved model must end in .safetensors")
    meta = {"kind": KIND_OF[net.backbone], "backbone": net.backbone, "format": "vtoonify_core/1"}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    return save_safetensors(net.state_dict(), path, meta)


def describe_ratios(ratios: Union[float, Mapping[str, float]]) -> str:
    """A short text of the ratios (for the saved file's metadata and the node's summary)."""
    if isinstance(ratios, Mapping):
        return ", ".join(f"{k}={v:g}" for k, v in ratios.items())
    return f"{float(ratios):g}"
