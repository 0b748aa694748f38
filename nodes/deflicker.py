"""Deflicker node: flow-guided temporal blending of a stylized clip (a thin adapter over
:func:`vtoonify_core.temporal.deflicker`)."""
from __future__ import annotations

from . import _comfy, inputs

DEFLICKER_NAME = "Deflicker (VToonify)"


class Deflicker:
    """Blends the previous (deflickered) output, warped along the optical flow of the input
    frames, into the current one where the flow is consistent and the input did not change."""

    CATEGORY = "VToonify"
    FUNCTION = "deflicker"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("The stylized frames with frame-to-frame flicker reduced.",)
    DESCRIPTION = ("Reduces flicker in a stylized clip: each frame is blended with the previous result warped "
                   "along the optical flow of the guide frames, masked where the flow is occluded or the guide "
                   "changed. Strength 0 returns the frames unchanged.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": inputs.images(tooltip="The stylized frames (e.g. Stylize Frames' output), in clip order."),
                "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                       "tooltip": "0 = off; 1 = strongest temporal blending."}),
                "flow": inputs.flow(),
                "flow_scale": ("FLOAT", {"default": 0.5, "min": 0.125, "max": 1.0, "step": 0.125,
                                         "tooltip": "Compute the flow at this fraction of the guide's size (faster), "
                                                    "then scale it up."}),
            },
            "optional": {
                "guide_images": ("IMAGE", {"tooltip": "The input frames that carry the motion (any size, same count), "
                                                      "e.g. the cropped frames fed to Stylize Frames. Without it the "
                                                      "stylized frames themselves guide the flow."}),
            },
        }

    def deflicker(self, images, strength=0.5, flow="dis", flow_scale=0.5, guide_images=None):
        from ..vtoonify_core.checks import validate_frames
        from ..vtoonify_core.errors import InputError
        from ..vtoonify_core.temporal.deflicker import deflicker

        with _comfy.node_errors(DEFLICKER_NAME):
            frames = _comfy.image_to_frames(images, "images")
            validate_frames(frames, "images")
            guide = frames if guide_images is None else _comfy.image_to_frames(guide_images, "guide_images")
            if guide.shape[0] != frames.shape[0]:
                raise InputError("guide_images", f"has {guide.shape[0]} frames but images has {frames.shape[0]}; "
                                                 f"connect the frames the stylized clip was made from.")
            hooks = _comfy.run_hooks(frames.shape[0])  # the core's deflicker reports progress only
            out = deflicker(frames.float(), guide.float() * 2 - 1, float(strength), flow=flow,
                            flow_scale=float(flow_scale), progress=hooks.progress)
            return (_comfy.unit_to_image(out.clamp_(0.0, 1.0)),)


NODE_CLASS_MAPPINGS = {"VToonifyDeflicker": Deflicker}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyDeflicker": DEFLICKER_NAME}
