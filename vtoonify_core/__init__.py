"""vtoonify_core: a faithful pure-PyTorch VToonify (Yang et al., SIGGRAPH Asia 2022).

Public API::

    m = load_vtoonify(path, device, dtype)        # m(x, style, d_s) -> [B,3,4H,4W]; m.zplus2wplus(z)
    enc = load_style_encoder(path, device, dtype) # [B,3,256,256] in [-1,1] -> z+ [B,18,512]
    parser = load_face_parser(path, device, dtype)# [B,3,H,W] -> [B,19,H,W] logits
    names, codes = load_exstyles(path)            # exemplar z+ codes [N,18,512], in style_id order

No ComfyUI import anywhere in this package: it is usable and testable alone.
"""
from .bisenet import load_face_parser, parse_frames
from .exstyle import ExStyles, load_exstyles, save_exstyles
from .vtoonify import VToonify, load_vtoonify
from .weights import CheckpointError, read_checkpoint


def load_style_encoder(path, device="cpu", dtype=None):
    """Load the pSp style encoder (``encoder.pt`` or its ``.safetensors``); see :mod:`vtoonify_core.psp`."""
    import torch

    from .psp import load_style_encoder as _load

    return _load(path, device=device, dtype=dtype or torch.float32)


__all__ = [
    "CheckpointError", "ExStyles", "VToonify", "load_exstyles", "load_face_parser", "load_style_encoder",
    "load_vtoonify", "parse_frames", "read_checkpoint", "save_exstyles",
]
