"""Stylize Frames: VToonify on a batch of frames (official face crop, or the whole frame)."""
from __future__ import annotations

import numpy as np
import torch

from . import _comfy, inputs

DISPLAY_NAME = "Stylize Frames"


class StylizeFrames:
    """Toonifies frames with VToonify and a style code."""

    CATEGORY = "VToonify"
    FUNCTION = "stylize"
    RETURN_TYPES = ("IMAGE", "MASK", "INT", "INT", "INT", "INT", inputs.FACES)
    RETURN_NAMES = ("images", "mask", "crop_x", "crop_y", "crop_width", "crop_height", "faces")
    OUTPUT_TOOLTIPS = (
        "Stylized frames, 4x the face crop (face mode) or 4x the input frames (whole frame mode).",
        "Where the stylized region lies in the input frames (1 inside, fractional on its edges).",
        "Left of the stylized region in the input frame (pixels).",
        "Top of the stylized region in the input frame (pixels).",
        "Width of the stylized region in the input frame; scale the output to this size to composite it back.",
        "Height of the stylized region in the input frame.",
        "Where each stylized image belongs in the input frames: connect to Paste Back (VToonify) with the images.",
    )
    DESCRIPTION = ("Toonifies a batch of frames. 'face (official crop)' rescales every frame so the eyes of the face "
                   "found in the first frame are 64 px apart and crops around them (the official VToonify "
                   "pre-processing); 'whole frame (pad to 8)' stylizes the whole frames. The output is 4x the "
                   "processed size; the mask and crop box locate it in the input frames. With faces from Detect Faces "
                   "(VToonify) the chosen face(s) are stylized with their crops (fixed or tracked; several faces: all "
                   "frames of face 0, then of face 1, ...); Paste Back (VToonify) puts the result into the frames.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vtoonify_model": inputs.vtoonify_model(),
                "images": inputs.images(),
                "style": inputs.style_or_keyframes(),
                "style_degree": inputs.style_degree(),
                "crop_mode": inputs.crop_mode(),
                "batch_size": inputs.batch_size(),
            },
            "optional": {
                "face_parsing": (inputs.FACE_PARSING, {"tooltip": "Parsing maps of these frames (e.g. from Smooth "
                                                                  "Parsing); computed inside when not connected."}),
                "face_padding": inputs.face_padding(),
                "faces": inputs.faces(tooltip="From Detect Faces (VToonify) on these frames: the face(s) and their "
                                              "crop in every frame (replaces crop_mode and face_padding)."),
            },
        }

    def stylize(self, vtoonify_model, images, style, style_degree=0.5, crop_mode="face (official crop)",
                batch_size=4, face_parsing=None, face_padding=200, faces=None):
        from ..vtoonify_core.pipeline.clip import stylize_clip
        from ..vtoonify_core.checks import validate_frames
        from ..vtoonify_core.faces.tracks import FaceTracks
        from ..vtoonify_core.runtime.memory import frame_memory_bytes
        from ..vtoonify_core.styles.codes import check_style

        with _comfy.node_errors(DISPLAY_NAME):
            model = inputs.require_model(vtoonify_model)
            mode = inputs.crop_mode_of(crop_mode)
            frames = _comfy.image_to_frames(images, "images")
            validate_frames(frames, "images")  # empty or NaN frames are refused before any estimate
            check_style(model, style, allow_schedule=True)
            if faces is not None:
                return self._stylize_faces(model, frames, style, style_degree, batch_size, face_parsing, faces)
            b = frames.shape[0]
            state = {"out": None, "shown": False}
            dev, dtype = _comfy.output_device(), _comfy.output_dtype()

            def sink(i: int, y: torch.Tensor) -> None:
                if state["out"] is None:
                    state["out"] = torch.empty(b, y.shape[2], y.shape[3], 3, device=dev, dtype=dtype)
                state["out"][i:i + y.shape[0]] = ((y + 1.0) * 0.5).clamp_(0.0, 1.0).permute(0, 2, 3, 1)

            def first_frame():  # the first stylized frame is shown on the node
                if state["shown"]:
                    return None
                state["shown"] = True
                return state["out"][0]

            h, w = frames.shape[2], frames.shape[3]
            if mode == "face":  # the crop is at most 2 * face_padding a side
                h = w = min(2 * int(face_padding), 1024)
            # memory ComfyUI frees for the chunk: the chosen chunk, or for auto (0) one frame; the
            # automatic size is then taken from what is free once the networks are loaded
            per_frame = frame_memory_bytes(model.backbone, h, w, model.dtype)
            model.load("generator", "parser", memory_required=per_frame * max(1, min(int(batch_size), b)))
            hooks = _comfy.run_hooks(b, preview=first_frame)
            _, plan = stylize_clip(model, frames, style, float(style_degree), crop_mode=mode, parsing=face_parsing,
                                   batch_size=int(batch_size), face_padding=int(face_padding),
                                   input_range=_comfy.IMAGE_RANGE, sink=sink, **hooks.kwargs())
            mask = plan.region_mask().unsqueeze(0).expand(b, -1, -1)
            x, y, bw, bh = plan.box()
            if plan.mode == "face":
                tracks = FaceTracks.fixed(plan.geometry, b, plan.reference_index)
            else:
                tracks = FaceTracks.whole_frames(frames.shape[2], frames.shape[3], b)
            return (state["out"], _comfy.to_mask(mask), x, y, bw, bh, tracks)

    @staticmethod
    def _stylize_faces(model, frames, style, style_degree, batch_size, face_parsing, faces):
        """Stylize the faces Detect Faces chose (inside node_errors)."""
        from ..vtoonify_core.pipeline.tracks import stylize_tracks
        from ..vtoonify_core.runtime.memory import frame_memory_bytes
        from .faces import require_faces

        tracks = require_faces(faces)
        tracks.check_frames(frames.shape[0], frames.shape[2:4])
        n = tracks.num_items
        state = {"out": None, "shown": False}
        dev, dtype = _comfy.output_device(), _comfy.output_dtype()

        def sink(i: int, y: torch.Tensor) -> None:
            if state["out"] is None:
                state["out"] = torch.empty(n, y.shape[2], y.shape[3], 3, device=dev, dtype=dtype)
            state["out"][i:i + y.shape[0]] = ((y + 1.0) * 0.5).clamp_(0.0, 1.0).permute(0, 2, 3, 1)

        def first_frame():
            if state["shown"] or state["out"] is None:
                return None
            state["shown"] = True
            return state["out"][0]

        h, w = tracks.crop_shape
        per_frame = frame_memory_bytes(model.backbone, h, w, model.dtype)
        model.load("generator", "parser", memory_required=per_frame * max(1, min(int(batch_size), n)))
        hooks = _comfy.run_hooks(n, preview=first_frame)
        stylize_tracks(model, frames, style, tracks, float(style_degree), batch_size=int(batch_size),
                       input_range=_comfy.IMAGE_RANGE, sink=sink, parsing=face_parsing, **hooks.kwargs())
        mask = torch.from_numpy(np.stack([tracks.region_mask(i) for i in range(n)]))
        x, y, bw, bh = tracks.box(0)
        return (state["out"], _comfy.to_mask(mask), x, y, bw, bh, tracks)


NODE_CLASS_MAPPINGS = {"VToonifyStylizeFrames": StylizeFrames}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyStylizeFrames": DISPLAY_NAME}
