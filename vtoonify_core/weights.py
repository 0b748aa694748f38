"""Reading and checking checkpoint files, safely.

Details: docs/design.md, ``vtoonify_core/weights.py``.
"""
from __future__ import annotations

import json
import re
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from torch import nn

from .errors import CheckpointError

PathLike = Union[str, Path]

#: Human names of the checkpoint kinds, for messages.
KIND_NAMES = {
    "vtoonify_t": "VToonify-T (Toonify backbone) generator, e.g. vtoonify_t_cartoon/vtoonify.pt",
    "vtoonify_d": "VToonify-D (DualStyleGAN backbone) generator, e.g. vtoonify_d_cartoon/vtoonify_s_d.pt",
    "psp": "pSp style encoder, encoder.pt",
    "bisenet": "BiSeNet face parser, faceparsing.pth",
    "exstyle": "exemplar style codes, exstyle_code.npy",
}


@dataclass
class Checkpoint:
    """A checkpoint reduced to flat tensors.

    Attributes:
        path: the file it was read from.
        tensors: ``{name: tensor}``; for VToonify the ``g_ema`` state dict, for pSp the
            ``encoder.*`` entries plus ``latent_avg``, for BiSeNet the raw state dict.
        metadata: string metadata (safetensors header, or what the ``.pt`` layout told).
        kind: one of :data:`KIND_NAMES`, or ``'unknown'``.
    """

    path: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    kind: str = "unknown"


def detect_kind(keys) -> str:
    """Recognise an official checkpoint from its state-dict keys.

    Returns ``'vtoonify_d'``, ``'vtoonify_t'``, ``'psp'``, ``'bisenet'`` or ``'unknown'``.
    """
    keys = set(keys)
    if any(k.startswith("generator.generator.") for k in keys) and any(k.startswith("fusion_out.") for k in keys):
        return "vtoonify_d"
    if any(k.startswith("generator.convs.") for k in keys) and any(k.startswith("fusion_out.") for k in keys):
        return "vtoonify_t"
    if any(k.startswith("encoder.body.") for k in keys) and any(k.startswith("encoder.styles.") for k in keys):
        return "psp"
    if any(k.startswith("cp.resnet.") for k in keys) and any(k.startswith("conv_out.") for k in keys):
        return "bisenet"
    return "unknown"


def _describe(kind: str) -> str:
    return KIND_NAMES.get(kind, "a file this library does not recognise")


#: How files written by ``torch.save`` begin: a zip archive, or (legacy format) the pickled magic number.
PT_SIGNATURES = (b"PK\x03\x04", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19")


def _check_pt_signature(path: Path) -> None:
    """Refuse a file that does not begin like a ``torch.save`` file, before any unpickling."""
    try:
        with open(path, "rb") as f:
            head = f.read(max(len(s) for s in PT_SIGNATURES))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot open this file ({e.strerror or e}).") from None
    if not any(head.startswith(s) for s in PT_SIGNATURES):
        what = "it is empty" if not head else "it does not begin like a file written by torch.save"
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({what}). The file is corrupt, truncated or of "
                              f"another kind: download it again.")


def _read_pt(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read an official ``.pt``/``.pth`` file without unpickling code."""
    _check_pt_signature(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):  # a pickle stream torch cannot parse: damaged, not foreign
            raise CheckpointError(f"{path}: cannot read this checkpoint: its data is damaged (the file is corrupt "
                                  f"or truncated): download it again.") from None
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: refused to load: the file contains Python objects{what} other than tensors and plain "
            f"containers, and this library never unpickles code. Use the official checkpoint files, or "
            f"convert a trusted file to .safetensors with `python -m vtoonify_core convert SRC DST`."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError):
        raise CheckpointError(f"{path}: cannot read this checkpoint: the file is truncated or corrupt: download "
                              f"it again.") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}.")
    meta: dict[str, str] = {}
    if "g_ema" in obj and isinstance(obj["g_ema"], dict):
        meta["layout"] = "g_ema"
        tensors = dict(obj["g_ema"])
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        meta["layout"] = "psp"
        tensors = {k: v for k, v in obj["state_dict"].items() if k.startswith("encoder.")}
        if "latent_avg" in obj:
            tensors["latent_avg"] = obj["latent_avg"]
        opts = obj.get("opts")
        if isinstance(opts, dict):
            meta["opts"] = json.dumps({k: v for k, v in opts.items() if isinstance(v, (str, int, float, bool, type(None)))})
    else:
        meta["layout"] = "raw"
        tensors = dict(obj)
    bad = [k for k, v in tensors.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {bad[:5]}")
    return tensors, meta


#: Byte alignment of tensors handed to the networks: what PyTorch's CPU allocator gives.
ALIGNMENT = 64


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t``, copied into freshly allocated memory when its data is not ``ALIGNMENT``-aligned.

    Tensors read from a ``.safetensors`` file can start at any byte offset; oneDNN then takes other
    code paths for the weights than for the same values read from a ``.pt`` file, and the outputs
    differ in the last bits (measured 6e-8 on pSp). Aligned copies make both files give identical
    outputs.
    """
    return t if t.data_ptr() % ALIGNMENT == 0 else t.clone()


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: _aligned(f.get_tensor(k)) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: cannot read this .safetensors file ({e}). It is probably truncated or corrupt: "
            f"convert or download it again."
        ) from None
    return tensors, meta


def read_checkpoint(path: PathLike) -> Checkpoint:
    """Read a ``.pt``, ``.pth`` or ``.safetensors`` checkpoint into flat CPU tensors.

    Raises:
        CheckpointError: the file is missing, unreadable, or holds anything but tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    if path.suffix == ".safetensors":
        tensors, meta = _read_safetensors(path)
    elif path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
        tensors, meta = _read_pt(path)
    else:
        raise CheckpointError(f"{path}: unknown checkpoint extension {path.suffix!r}; expected .pt, .pth or .safetensors.")
    kind = meta.get("kind") or detect_kind(tensors)
    return Checkpoint(path=path, tensors=tensors, metadata=meta, kind=kind)


def expect_kind(ckpt: Checkpoint, expected: Union[str, tuple[str, ...]]) -> None:
    """Raise a clear error when ``ckpt`` is not of the expected kind(s)."""
    expected = (expected,) if isinstance(expected, str) else expected
    if ckpt.kind in expected:
        return
    want = " or ".join(_describe(k) for k in expected)
    raise CheckpointError(
        f"{ckpt.path}: this is {'a ' + _describe(ckpt.kind) if ckpt.kind != 'unknown' else _describe(ckpt.kind)}, "
        f"not a {want}. Pick the right file for this input."
    )


def check_state_dict(
    module: nn.Module, tensors: Mapping[str, torch.Tensor], path: PathLike, what: str
) -> None:
    """Compare keys and shapes of ``tensors`` with ``module.state_dict()`` exactly.

    Raises:
        CheckpointError: naming missing and unexpected keys and shape mismatches.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    shapes = [
        f"{k}: file {tuple(tensors[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:2]})")
    raise CheckpointError(f"{path}: does not fit the {what}: " + "; ".join(parts) + ". The file is damaged or "
                          "not a checkpoint of this kind: choose the right file, or download it again.")


def load_into(module: nn.Module, tensors: Mapping[str, torch.Tensor], path: PathLike, what: str) -> nn.Module:
    """Check, then load ``tensors`` into ``module`` with ``strict=True``.

    The tensors are assigned (not copied), so ``module`` may be built on the meta device.
    """
    check_state_dict(module, tensors, path, what)
    module.load_state_dict(dict(tensors), strict=True, assign=True)
    return module


def check_finite(tensors: Mapping[str, torch.Tensor], path: PathLike) -> None:
    """Refuse weights that hold NaN or infinite values (a corrupt download)."""
    # a NaN or Inf anywhere makes the sum non-finite (an all-finite sum can overflow only in
    # pathological files: those get the element-wise check)
    bad = [k for k, v in tensors.items()
           if v.is_floating_point() and not torch.isfinite(v.sum()) and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} weights hold NaN or Inf (e.g. {bad[:3]}); the file is corrupt.")


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: PathLike, metadata: Optional[dict[str, str]] = None) -> Path:
    """Write flat tensors (made contiguous) with string metadata to ``.safetensors``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata or {})
    return path
