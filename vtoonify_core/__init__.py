"""vtoonify_core: a faithful pure-PyTorch VToonify (Yang et al., SIGGRAPH Asia 2022); no ComfyUI import.

The public API; everything else is reached through its subpackage (README, "Architecture")::

    model = load_model(checkpoint, encoder, parser, device=..., dtype=...)   # the bundle of networks
    style, aligned = style_from_image(model, portrait_uint8, style_id=26)     # W+ code of a face
    out, plan = stylize_clip(model, frames, style, d_s=0.5)                   # [B,3,4H,4W] in [-1,1]
    m = load_vtoonify(path, device, dtype)                                    # m(x, style, d_s)
"""
from .errors import CheckpointError, FaceBackendUnavailableError, InputError, NoFaceError, VideoError, VToonifyError
from .faces import (CLIP_MODES, DEFAULT_PADDING, FACE_ORDERS, ClipGeometry, CropGeometry, DlibBackend, Face,
                    FaceBackend, align_face, apply_crop, available_backends, clip_geometry, crop_clip, crop_geometry,
                    detect_faces, ffhq_quad, find_face, get_backend, official_crop, order_faces, paste_back, pick_face,
                    register_backend, window_geometry)
from .models import (ExStyles, FaceParserModel, VToonify, VToonifyModel, load_exstyles, load_face_parser, load_model,
                     load_style_encoder, load_vtoonify, merge_vtoonify, parse_frames, save_exstyles, save_model)
from .pipeline import ClipPlan, class_mask, color_map, parse, plan_clip, stylize, stylize_clip
from .runtime import RunHooks, resolve_dtype
from .styles import check_style, extract_style, style_from_image
from .styles.text import edit_style_by_text
from .clipmodels import load_clip
from .temporal import deflicker, smooth_clip, smooth_parsing
from .types import FaceParsing, StyleCode
from .weights import read_checkpoint

__all__ = [
    "CLIP_MODES", "DEFAULT_PADDING", "FACE_ORDERS", "CheckpointError", "ClipGeometry", "ClipPlan", "CropGeometry",
    "DlibBackend", "ExStyles", "Face", "FaceBackend", "FaceBackendUnavailableError", "FaceParserModel", "FaceParsing",
    "InputError", "NoFaceError", "RunHooks", "StyleCode", "VToonify", "VToonifyError", "VToonifyModel", "VideoError",
    "align_face", "apply_crop", "available_backends", "check_style", "class_mask", "clip_geometry", "color_map",
    "crop_clip", "crop_geometry", "deflicker", "detect_faces", "extract_style", "ffhq_quad", "find_face",
    "get_backend", "load_exstyles", "load_face_parser", "load_model", "load_style_encoder", "load_vtoonify", "merge_vtoonify", "save_model", "merge_vtoonify", "save_model",
    "official_crop", "order_faces", "parse", "parse_frames", "paste_back", "pick_face", "plan_clip",
    "read_checkpoint", "register_backend", "resolve_dtype", "save_exstyles", "smooth_clip", "smooth_parsing",
    "style_from_image", "stylize", "stylize_clip", "window_geometry",
    "edit_style_by_text", "load_clip",
]
