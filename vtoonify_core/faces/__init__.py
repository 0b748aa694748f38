"""Faces: detection with pluggable backends (dlib by default, MediaPipe optional), the official
crop around the eyes, FFHQ alignment for pSp, face choice and tracking over a clip (tracks), and
pasting results back into the frame (crop, paste)."""
from ..errors import FaceBackendUnavailableError, NoFaceError
from .align import align_face, ffhq_quad
from .base import FACE_ORDERS, Face, FaceBackend, order_faces, pick_face
from .crop import (CLIP_MODES, DEFAULT_PADDING, ClipGeometry, CropGeometry, apply_crop, clip_geometry, crop_clip,
                   crop_geometry, official_crop, paste_back, window_geometry)
from .detect import available_backends, detect_faces, find_face, get_backend, register_backend
from .dlib_backend import DlibBackend
from .paste import composite_face, paste_tracks
from .tracks import FaceOptions, FaceTracks, track_faces

__all__ = ["FaceBackendUnavailableError", "NoFaceError", "CLIP_MODES", "DEFAULT_PADDING", "FACE_ORDERS", "ClipGeometry", "CropGeometry", "DlibBackend", "Face",
           "FaceBackend", "FaceOptions", "FaceTracks", "align_face", "composite_face", "paste_tracks", "track_faces", "apply_crop", "available_backends", "clip_geometry", "crop_clip",
           "crop_geometry", "detect_faces", "ffhq_quad", "find_face", "get_backend", "official_crop", "order_faces",
           "paste_back", "pick_face", "register_backend", "window_geometry"]
