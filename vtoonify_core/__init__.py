"""vtoonify_core: a faithful pure-PyTorch VToonify (Yang et al., SIGGRAPH Asia 2022).

Public API::

    m = load_vtoonify(path, device, dtype)        # m(x, style, d_s) -> [B,3,4H,4W]; m.zplus2wplus(z)
    enc = load_style_encoder(path, device, dtype) # [B,3,256,256] in [-1,1] -> z+ [B,18,512]
    parser = load_face_parser(path, device, dtype)# [B,3,H,W] -> [B,19,H,W] logits
    names, codes = load_exstyles(path)            # exemplar z+ codes [N,18,512], in style_id order

No ComfyUI import anywhere in this package: it is usable and testable alone.
"""
from .align import align_face, ffhq_quad
from .bisenet import load_face_parser, parse_frames
from .crop import (CLIP_MODES, DEFAULT_PADDING, ClipGeometry, CropGeometry, apply_crop, clip_geometry, crop_clip,
                   crop_geometry, official_crop, paste_back, window_geometry)
from .exstyle import ExStyles, load_exstyles, save_exstyles
from .faces import (FACE_ORDERS, DlibBackend, Face, FaceBackend, FaceBackendUnavailableError, NoFaceError,
                    available_backends, detect_faces, find_face, get_backend, order_faces, pick_face,
                    register_backend)
from .psp import load_style_encoder
from .vtoonify import VToonify, load_vtoonify
from .weights import CheckpointError, read_checkpoint

__all__ = [
    "CLIP_MODES", "DEFAULT_PADDING", "FACE_ORDERS", "CheckpointError", "ClipGeometry", "CropGeometry", "DlibBackend",
    "ExStyles", "Face", "FaceBackend", "FaceBackendUnavailableError", "NoFaceError", "VToonify", "align_face",
    "apply_crop", "available_backends", "clip_geometry", "crop_clip", "crop_geometry", "detect_faces", "ffhq_quad",
    "find_face", "get_backend", "load_exstyles", "load_face_parser", "load_style_encoder", "load_vtoonify",
    "official_crop", "order_faces", "parse_frames", "paste_back", "pick_face", "read_checkpoint", "register_backend",
    "save_exstyles", "window_geometry",
]
