"""Exemplar (extrinsic) style codes of VToonify-D, read without unpickling code.

The official ``exstyle_code.npy`` is ``np.save(path, {style image name: float32 (1,18,512) z+})``:
a 0-d object array whose payload is a pickle. ``np.load(allow_pickle=True)`` would run any code a
tampered file carries, so :func:`load_exstyles` parses the ``.npy`` header itself and unpickles
the payload with an allow-list of the numpy reconstruction globals only. The dict order is the
official ``style_id``. :func:`save_exstyles` writes the safe ``.safetensors`` form.
"""
from __future__ import annotations

import importlib
import json
import pickle
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np
import torch

from ..errors import CheckpointError
from ..weights import detect_kind, read_checkpoint, save_safetensors

#: the only globals an exemplar-code pickle may name: numpy array/dtype reconstruction
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class ExStyles(NamedTuple):
    """Exemplar codes: ``names[i]`` is the style image of ``style_id`` i; ``codes`` ``[N, 18, 512]`` z+."""

    names: list[str]
    codes: torch.Tensor


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise CheckpointError(
                f"{self._path}: refused: the pickle inside this .npy names {module}.{name}, but exemplar style "
                f"codes may only contain numpy arrays. The file is not an official exstyle_code.npy (or was "
                f"tampered with): download the official exstyle_code.npy again, or choose exstyle 'auto'.")
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core"):] if hasattr(np, "_core") else module
        return getattr(importlib.import_module(module), name)


def _read_npy(path: Path):
    fmt = np.lib.format
    with open(path, "rb") as f:
        try:
            version = fmt.read_magic(f)
            header = fmt.read_array_header_1_0(f) if version == (1, 0) else fmt.read_array_header_2_0(f)
        except ValueError as e:
            raise CheckpointError(f"{path}: not a .npy file ({e}).") from None
        shape, fortran, dtype = header
        if dtype.hasobject:
            try:
                return _NumpyOnlyUnpickler(f, path).load()
            except CheckpointError:
                raise
            except Exception as e:  # truncated or malformed pickle payloads raise many types
                raise CheckpointError(f"{path}: cannot read the exemplar codes ({type(e).__name__}: {e}); "
                                      f"the file is probably truncated: download it again.") from None
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise CheckpointError(f"{path}: cannot read the array ({e}); the file is probably truncated.") from None


def _codes_from_obj(obj, path: Path) -> ExStyles:
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.ndim == 0:
        obj = obj.item()
    if isinstance(obj, dict):
        names = [str(k) for k in obj]
        try:
            arrays = [np.asarray(v, dtype=np.float32).reshape(18, 512) for v in obj.values()]
        except ValueError:
            raise CheckpointError(f"{path}: every exemplar code must be a (1, 18, 512) z+ array.") from None
        codes = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0, 18, 512)
        return ExStyles(names, codes)
    if isinstance(obj, np.ndarray) and obj.ndim >= 2 and obj.shape[-2:] == (18, 512):
        codes = torch.from_numpy(np.ascontiguousarray(obj, dtype=np.float32).reshape(-1, 18, 512))
        return ExStyles([f"style {i}" for i in range(codes.shape[0])], codes)
    raise CheckpointError(f"{path}: expected a dict of exemplar codes {{name: (1,18,512)}}, found {type(obj).__name__}.")


def load_exstyles(path: Union[str, Path]) -> ExStyles:
    """Read exemplar style codes from the official ``exstyle_code.npy`` or our ``.safetensors``.

    Returns:
        ``(names, codes)``: the style image names in ``style_id`` order and ``[N, 18, 512]`` float32
        z+ codes (map them with ``model.zplus2wplus``).

    Raises:
        CheckpointError: missing, truncated, tampered (foreign pickle globals) or wrong-kind file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file.")
    if path.suffix == ".safetensors":
        ckpt = read_checkpoint(path)
        if "codes" not in ckpt.tensors or ckpt.metadata.get("kind", "exstyle") != "exstyle":
            kind = ckpt.metadata.get("kind") or detect_kind(ckpt.tensors)
            raise CheckpointError(f"{path}: this is {'an unknown kind of' if kind == 'unknown' else 'a ' + kind} file, "
                                  f"not exemplar style codes: choose the checkpoint's exstyle_code.npy (or "
                                  f".safetensors), or 'auto'.")
        codes = ckpt.tensors["codes"].float()
        names = json.loads(ckpt.metadata.get("names", "[]")) or [f"style {i}" for i in range(codes.shape[0])]
        if codes.ndim != 3 or codes.shape[1:] != (18, 512) or len(names) != codes.shape[0]:
            raise CheckpointError(f"{path}: malformed exemplar codes {tuple(codes.shape)} with {len(names)} names.")
        return _checked(ExStyles(names, codes), path)
    if path.suffix != ".npy":
        raise CheckpointError(f"{path}: exemplar codes are read from exstyle_code.npy or .safetensors.")
    return _checked(_codes_from_obj(_read_npy(path), path), path)


def _checked(styles: ExStyles, path: Path) -> ExStyles:
    """Refuse codes with NaN or infinite values, naming the file and the styles."""
    bad = (~torch.isfinite(styles.codes).flatten(1).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        which = "every style" if len(bad) == len(styles.names) else \
            "style(s) " + ", ".join(f"{i} ({styles.names[i]})" for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise CheckpointError(f"{path}: the exemplar codes of {which} contain NaN or infinite values: the file is "
                              f"damaged; download exstyle_code.npy again.")
    return styles


def save_exstyles(styles: ExStyles, path: Union[str, Path]) -> Path:
    """Write exemplar codes to ``.safetensors`` (tensor ``codes``; names in the metadata, in order)."""
    return save_safetensors({"codes": styles.codes.float()}, path,
                            {"kind": "exstyle", "names": json.dumps(list(styles.names)), "format": "vtoonify_core/1"})
