"""The inputs several nodes share, declared once (type, default, range, one tooltip each), and
:func:`require_model` for the model sockets.

Every entry is a function returning the ``(type, options)`` pair of ``INPUT_TYPES``; keyword
arguments replace options where a node needs another one (e.g. another default). Input names,
defaults and order are part of saved workflows: change them only with a migration.
"""
from __future__ import annotations

from typing import Any, Callable

from ..vtoonify_core.errors import InputError
from ..vtoonify_core.models.bundle import FaceParserModel, VToonifyModel
from .bundle import ComfyFaceParser, ComfyVToonifyModel

# ---------------------------------------------------------------------------------------------- socket types

MODEL = "VTOONIFY_MODEL"
FACE_PARSER = "FACE_PARSER"
FACE_PARSING = "FACE_PARSING"
STYLE = "VTOONIFY_STYLE"
#: keyframed styles (Style Keyframes): their own type, so the graph connects them only where they work
KEYFRAMES = "VTOONIFY_KEYFRAMES"
#: an input that takes a single style code or keyframed styles (ComfyUI and its frontend read the
#: comma as "either type")
STYLE_OR_KEYFRAMES = f"{STYLE},{KEYFRAMES}"

#: the faces chosen by Detect Faces (VToonify) and the crops Stylize Frames made (a core FaceTracks)
FACES = "VTOONIFY_FACES"

#: crop_mode labels -> the core's crop modes
CROP_MODES = {"face (official crop)": "face", "whole frame (pad to 8)": "whole"}
#: optical flows of the temporal nodes (OpenCV DIS presets)
FLOWS = ("dis", "dis_fast")


def _entry(kind, **options) -> Callable[..., tuple[Any, dict]]:
    def make(**overrides) -> tuple[Any, dict]:
        return (list(kind) if isinstance(kind, (tuple, list, dict)) else kind, {**options, **overrides})

    return make


# ---------------------------------------------------------------------------------------------- shared inputs

vtoonify_model = _entry(MODEL, tooltip="From Load VToonify Model (or VToonify Speed Settings).")
images = _entry("IMAGE", tooltip="The frames: a clip in order, or a single image (any size).")
style = _entry(STYLE, tooltip="From Extract Style Code (or Exemplar Style From Image, Style Mix), made with the same "
                              "model.")
style_or_keyframes = _entry(STYLE_OR_KEYFRAMES,
                            tooltip="From Extract Style Code, made with the same model (or Exemplar Style From Image, "
                                    "Style Mix), or keyframed styles from Style Keyframes.")
style_degree = _entry("FLOAT", default=0.5, min=0.0, max=1.0, step=0.01,
                      tooltip="VToonify-D: how strongly the exemplar style applies (0 = least, 1 = most; keyframes "
                              "without their own degree use it). Ignored by VToonify-T.")
crop_mode = _entry(CROP_MODES, default="face (official crop)",
                   tooltip="face: the official crop around the face of the first frame that has one (output 4x the "
                           "crop); whole frame: no crop, the frames are padded to multiples of 8 and the output (4x) "
                           "cropped back.")
batch_size = _entry("INT", default=4, min=0, max=64, step=1,
                    tooltip="Frames per chunk on the device; 0 = auto: as many as fit in the free memory (at most "
                            "16, and at most 8 GiB per chunk). Halved automatically when the GPU runs out of memory.")
face_padding = _entry("INT", default=200, min=8, max=4096, step=8,
                      tooltip="face mode: pixels kept on each side of the eye centre after rescaling the eyes to "
                              "64 px apart (official 200).")
style_id = _entry("INT", default=26, min=0, max=9999, step=1,
                  tooltip="VToonify-D: index of the exemplar style (0..N-1, N depends on the checkpoint: e.g. 317 "
                          "cartoon, 199 caricature, 100 arcane styles); Extract Style Code gives its name in "
                          "style_info. Ignored by VToonify-T.")
color_transfer = _entry("BOOLEAN", default=False,
                        tooltip="VToonify-D: take the exemplar's colours as well (best with a colour-transfer "
                                "checkpoint such as vtoonify_s_d_c.pt). Ignored by VToonify-T.")
faces = _entry(FACES, tooltip="From Detect Faces (VToonify), made on these frames: which face(s) and their crop in "
                              "every frame (fixed or tracked). Not connected: the best face of the first frame.")
flow = _entry(FLOWS, default="dis", tooltip="Optical flow: OpenCV DIS (medium preset) or its faster preset.")


def crop_mode_of(label: str) -> str:
    """The core's crop mode of a crop_mode label (ComfyUI has validated the label against the list)."""
    return CROP_MODES[label]


# ---------------------------------------------------------------------------------------------- model sockets


def require_model(value, input_name: str = "vtoonify_model") -> ComfyVToonifyModel:
    """The VToonify bundle connected to ``input_name``, with its ComfyUI patchers (a plain core
    bundle gets none); anything else is refused with what to connect."""
    if not isinstance(value, VToonifyModel):
        raise InputError(input_name, f"expected a VTOONIFY_MODEL, got {type(value).__name__}: connect the "
                                     f"vtoonify_model output of Load VToonify Model (or of VToonify Speed Settings).")
    return ComfyVToonifyModel.of(value)


def require_face_parser(value, input_name: str = "face_parser") -> ComfyFaceParser:
    """The face parser connected to ``input_name`` (a plain core one gets no patcher)."""
    if not isinstance(value, FaceParserModel):
        raise InputError(input_name, f"expected a FACE_PARSER, got {type(value).__name__}: connect the face_parser "
                                     f"output of Load VToonify Model.")
    if isinstance(value, ComfyFaceParser):
        return value
    return ComfyFaceParser(value.parser, value.device, value.dtype)
