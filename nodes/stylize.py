"""Stylize Frames: VToonify on a batch of frames (official face crop, or the whole frame)."""
from __future__ import annotations

import torch

from . import _comfy, inputs

DISPLAY_NAME = "Stylize Frames"


class StylizeFrames:
    """Toonifies frames with VToonify and a style code."""

    CATEGORY = "VToonify"
    FUNCTION = "stylize"
    RETURN_TYPES = ("IMAGE", "MASK", "INT", "INT", "INT", "INT")
    RETURN_NAMES = ("images", "mask", "crop_x", "crop_y", "crop_width", "crop_height")
    OUTPUT_TOOLTIPS = (
        "Stylized frames, 4x the face crop (face mode) or 4x the input frames (whole frame mode).",
        "Where the stylized region lies in the input frames (1 inside, fractional on its edges).",
        "Left of the stylized region in the input frame (pixels).",
        "Top of the stylized region in the input frame (pixels).",
        "Width of the stylized region in the input frame; scale the output to this size to composite it back.",
        "Height of the stylized region in the input frame.",
    )
    DESCRIPTION = ("Toonifies a batch of frames. 'face (official crop)' rescales every frame so the eyes of the face "
                   "found in the first frame are 64 px apart and crops around them (the official VToonify "
                   "pre-processing); 'whole frame (pad to 8)' stylizes the whole frames. The output is 4x the "
                   "processed size; the mask and crop box locate it in the input frames.")

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
            },
        }

    def stylize(self, vtoonify_model, images, style, style_degree=0.5, crop_mode="face (official crop)",
                batch_size=4, face_parsing=None, face_padding=200):
        from ..vtoonify_core.pipeline.clip import stylize_clip
        from ..vtoonify_core.checks import validate_frames
        from ..vtoonify_core.runtime.memory import frame_memory_bytes
        from ..vtoonify_core.styles.codes import check_style

        with _comfy.node_errors(DISPLAY_NAME):
            model = inputs.require_model(vtoonify_model)
            mode = inputs.crop_mode_of(crop_mode)
            frames = _comfy.image_to_frames(images, "images")
            validate_frames(frames, "images")  # empty or NaN frames are refused before any estimate
            check_style(model, style, allow_schedule=True)
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
            return (state["out"], _comfy.to_mask(mask), x, y, bw, bh)


NODE_CLASS_MAPPINGS = {"VToonifyStylizeFrames": StylizeFrames}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyStylizeFrames": DISPLAY_NAME}
