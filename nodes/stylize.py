"""Stylize Frames: VToonify on a batch of frames (official face crop, or the whole frame)."""
from __future__ import annotations

import torch

from . import _comfy, cache

DISPLAY_NAME = "Stylize Frames"
CROP_MODES = {"face (official crop)": "face", "whole frame (pad to 8)": "whole"}


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
                "vtoonify_model": ("VTOONIFY_MODEL", {"tooltip": "From Load VToonify Model."}),
                "images": ("IMAGE", {"tooltip": "The frames (a clip or a single image)."}),
                "style": ("VTOONIFY_STYLE", {"tooltip": "From Extract Style Code, with the same model (or keyframed "
                                                        "styles from Style Keyframes)."}),
                "style_degree": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                           "tooltip": "VToonify-D: how strongly the exemplar style applies "
                                                      "(0 = least, 1 = most; keyframes without a degree use it). "
                                                      "Ignored by VToonify-T."}),
                "crop_mode": (list(CROP_MODES), {"default": "face (official crop)",
                                                 "tooltip": "face: the official crop around the face of the first "
                                                            "frame with one; whole frame: no crop, the frames are "
                                                            "padded to multiples of 8 and the output cropped back."}),
                "batch_size": ("INT", {"default": 4, "min": 0, "max": 64, "step": 1,
                                       "tooltip": "Frames per chunk on the device; 0 = auto: as many as fit in "
                                                  "the free memory (at most 16, and at most 8 GiB per chunk). "
                                                  "Halved automatically when the GPU runs out of memory."}),
            },
            "optional": {
                "face_parsing": ("FACE_PARSING", {"tooltip": "Parsing maps of these frames (e.g. from Smooth "
                                                             "Parsing); computed inside when not connected."}),
                "face_padding": ("INT", {"default": 200, "min": 8, "max": 4096, "step": 8,
                                         "tooltip": "face mode: pixels kept on each side of the eye centre after "
                                                    "rescaling the eyes to 64 px apart (official 200)."}),
            },
        }

    def stylize(self, vtoonify_model, images, style, style_degree=0.5, crop_mode="face (official crop)",
                batch_size=4, face_parsing=None, face_padding=200):
        from ..vtoonify_core.errors import InputError
        from ..vtoonify_core.pipeline.clip import stylize_clip
        from ..vtoonify_core.runtime.memory import frame_memory_bytes
        from ..vtoonify_core.styles.codes import check_style

        with _comfy.node_errors(DISPLAY_NAME):
            model = vtoonify_model
            if not hasattr(model, "generator"):
                raise InputError("vtoonify_model", "connect the VTOONIFY_MODEL output of Load VToonify Model.")
            if crop_mode not in CROP_MODES:
                raise InputError("crop_mode", f"unknown crop mode {crop_mode!r}; use one of {', '.join(CROP_MODES)}.")
            frames = _comfy.image_to_frames(images, "images")
            check_style(model, style, allow_schedule=True)
            b = frames.shape[0]
            state = {"out": None}
            dev, dtype = _comfy.output_device(), _comfy.output_dtype()

            def sink(i: int, y: torch.Tensor) -> None:
                if state["out"] is None:
                    state["out"] = torch.empty(b, y.shape[2], y.shape[3], 3, device=dev, dtype=dtype)
                state["out"][i:i + y.shape[0]] = ((y + 1.0) * 0.5).clamp_(0.0, 1.0).permute(0, 2, 3, 1)

            bar = _comfy.progress(b)

            def progress(done: int, total: int) -> None:  # the first stylized frame is shown on the node
                bar(done, total, state["out"][0] if not state.get("shown") else None)
                state["shown"] = True

            h, w = frames.shape[2], frames.shape[3]
            if CROP_MODES[crop_mode] == "face":  # the crop is at most 2 * face_padding a side
                h = w = min(2 * int(face_padding), 1024)
            # memory ComfyUI frees for the chunk: the chosen chunk, or for auto (0) one frame; the
            # automatic size is then taken from what is free once the networks are loaded
            per_frame = frame_memory_bytes(model.backbone, h, w, model.dtype)
            cache.ensure_on_device([model.generator, model.parser], model.device,
                                   per_frame * max(1, min(int(batch_size), b)))
            _, plan = stylize_clip(model, frames, style, float(style_degree), crop_mode=CROP_MODES[crop_mode],
                                   parsing=face_parsing, batch_size=int(batch_size), face_padding=int(face_padding),
                                   input_range=_comfy.IMAGE_RANGE, progress=progress,
                                   check_interrupt=_comfy.check_interrupt, on_oom=_comfy.on_oom,
                                   output_device=dev, sink=sink)
            mask = plan.region_mask().unsqueeze(0).expand(b, -1, -1)
            x, y, bw, bh = plan.box()
            return (state["out"], _comfy.to_mask(mask), x, y, bw, bh)


NODE_CLASS_MAPPINGS = {"VToonifyStylizeFrames": StylizeFrames}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyStylizeFrames": DISPLAY_NAME}
