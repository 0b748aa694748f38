"""Convert official checkpoint files to ``.safetensors``, and prove the copy equal.

``python -m vtoonify_core convert SRC DST`` handles VToonify-T/-D (``vtoonify*.pt``), the pSp
encoder (``encoder.pt``; its unused StyleGAN decoder is dropped), the BiSeNet face parser
(``faceparsing.pth``) and exemplar codes (``exstyle_code.npy``). The output carries metadata
(kind, backbone, style names) and is read back and compared tensor by tensor before the command
reports success.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from .errors import CheckpointError
from .models.exstyle import load_exstyles, save_exstyles
from .weights import read_checkpoint, save_safetensors

FORMAT = "vtoonify_core/1"
BACKBONE = {"vtoonify_t": "toonify", "vtoonify_d": "dualstylegan"}


def convert(src: Union[str, Path], dst: Union[str, Path]) -> dict[str, str]:
    """Convert ``src`` to ``dst`` (``.safetensors``); returns the metadata written.

    Raises:
        CheckpointError: unreadable or unknown source, or a copy that does not read back equal.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"{dst}: the destination must end in .safetensors")
    if src.suffix == ".npy":
        styles = load_exstyles(src)
        save_exstyles(styles, dst)
        back = load_exstyles(dst)
        if back.names != styles.names or not torch.equal(back.codes, styles.codes):
            raise CheckpointError(f"{dst}: the converted exemplar codes do not read back equal to {src}")
        return {"kind": "exstyle", "styles": str(len(styles.names))}
    ckpt = read_checkpoint(src)
    if ckpt.kind == "unknown":
        raise CheckpointError(f"{src}: not an official VToonify, pSp encoder or BiSeNet checkpoint; nothing converted.")
    meta = {"kind": ckpt.kind, "format": FORMAT, "source": src.name}
    if ckpt.kind in BACKBONE:
        meta["backbone"] = BACKBONE[ckpt.kind]
    if "opts" in ckpt.metadata:
        meta["opts"] = ckpt.metadata["opts"]
    save_safetensors(ckpt.tensors, dst, meta)
    back = read_checkpoint(dst)
    same = back.tensors.keys() == ckpt.tensors.keys() and all(
        torch.equal(back.tensors[k], v) for k, v in ckpt.tensors.items())
    if not same or back.kind != ckpt.kind:
        raise CheckpointError(f"{dst}: the converted weights do not read back equal to {src}")
    return meta
