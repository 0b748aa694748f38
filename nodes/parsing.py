"""Face Parse and Smooth Parsing: BiSeNet parsing maps of frames, and their temporal smoothing."""
from __future__ import annotations

from . import _comfy, inputs

PARSE_NAME = "Face Parse"
SMOOTH_NAME = "Smooth Parsing"

#: Mask toggles of Face Parse: input name -> class group (see vtoonify_core.pipeline.CLASS_GROUPS).
MASK_TOGGLES = {
    "mask_skin": ("skin", True), "mask_brows": ("brows", True), "mask_eyes": ("eyes", True),
    "mask_eyeglasses": ("eyeglasses", False), "mask_ears": ("ears", False), "mask_earrings": ("earrings", False),
    "mask_nose": ("nose", True), "mask_mouth": ("mouth", True), "mask_lips": ("lips", True),
    "mask_neck": ("neck", False), "mask_necklace": ("necklace", False), "mask_cloth": ("cloth", False),
    "mask_hair": ("hair", False), "mask_hat": ("hat", False), "mask_background": ("background", False),
}
_CLASS_TEXT = {
    "skin": "skin (1)", "brows": "left and right eyebrows (2, 3)", "eyes": "left and right eyes (4, 5)",
    "eyeglasses": "eyeglasses (6)", "ears": "left and right ears (7, 8)", "earrings": "earrings (9)",
    "nose": "nose (10)", "mouth": "mouth, between the lips (11)", "lips": "upper and lower lips (12, 13)",
    "neck": "neck (14)", "necklace": "necklace (15)", "cloth": "clothes (16)", "hair": "hair (17)", "hat": "hat (18)",
    "background": "background (0)",
}


class FaceParse:
    """Parses frames into the 19 CelebAMask-HQ classes with BiSeNet, as VToonify does."""

    CATEGORY = "VToonify"
    FUNCTION = "parse"
    RETURN_TYPES = (inputs.FACE_PARSING, "MASK", "IMAGE")
    RETURN_NAMES = ("face_parsing", "mask", "parsing_image")
    OUTPUT_TOOLTIPS = (
        "BiSeNet logits [frames, 19, H, W] as the official pipeline computes them (for Smooth Parsing and "
        "Stylize Frames).",
        "Soft mask of the selected classes (sum of their softmax probabilities), one per frame.",
        "The most likely class of each pixel, colour-coded.",
    )
    DESCRIPTION = ("Face parsing with the BiSeNet of VToonify (frames up-sampled 2x, parsed, sampled back). Outputs the "
                   "parsing maps, a soft mask of the ticked classes and a colour-coded preview.")

    @classmethod
    def INPUT_TYPES(cls):
        required = {
            "face_parser": (inputs.FACE_PARSER, {"tooltip": "From Load VToonify Model."}),
            "images": inputs.images(),
        }
        for name, (group, default) in MASK_TOGGLES.items():
            required[name] = ("BOOLEAN", {"default": default, "tooltip": f"Include {_CLASS_TEXT[group]} in the mask."})
        return {"required": required}

    def parse(self, face_parser, images, **toggles):
        from ..vtoonify_core.errors import InputError
        from ..vtoonify_core.pipeline.parsing import class_mask, color_map, parse

        with _comfy.node_errors(PARSE_NAME):
            parser = inputs.require_face_parser(face_parser)
            unknown = sorted(set(toggles) - set(MASK_TOGGLES))
            if unknown:
                raise InputError(unknown[0], f"unknown input; the mask classes are {', '.join(MASK_TOGGLES)}.")
            frames = _comfy.image_to_frames(images, "images")
            parser.load()
            hooks = _comfy.run_hooks(frames.shape[0])
            parsing = parse(parser, frames, input_range=_comfy.IMAGE_RANGE, **hooks.kwargs())
            groups = [group for name, (group, default) in MASK_TOGGLES.items() if toggles.get(name, default)]
            mask = class_mask(parsing, groups)
            return (parsing, _comfy.to_mask(mask), _comfy.unit_to_image(color_map(parsing)))


class SmoothParsing:
    """Smooths parsing maps over time with optical flow (VToonify, Sec. 4.1)."""

    CATEGORY = "VToonify"
    FUNCTION = "smooth"
    RETURN_TYPES = (inputs.FACE_PARSING,)
    RETURN_NAMES = ("face_parsing",)
    OUTPUT_TOOLTIPS = ("The parsing maps averaged over neighbouring frames along the optical flow.",)
    DESCRIPTION = ("Reduces flicker of the parsing maps of a clip: each frame's maps are averaged with those of the k "
                   "frames before and after, warped along the optical flow and weighted by temporal distance "
                   "(sigma_t) and colour difference (sigma_s).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "face_parsing": (inputs.FACE_PARSING, {"tooltip": "From Face Parse, computed on these frames."}),
                "images": inputs.images(tooltip="The frames that were parsed, in order."),
                "k": ("INT", {"default": 5, "min": 0, "max": 30, "step": 1,
                              "tooltip": "Half window: frames before and after that are averaged (official 5)."}),
                "sigma_t": ("FLOAT", {"default": 5.5, "min": 0.01, "max": 100.0, "step": 0.1,
                                      "tooltip": "Temporal weight width in frames (official 5.5)."}),
                "sigma_s": ("FLOAT", {"default": 0.2, "min": 0.001, "max": 10.0, "step": 0.01,
                                      "tooltip": "Colour-difference weight width (frames in [-1, 1]; official 0.2)."}),
            },
            "optional": {
                "flow": inputs.flow(),
            },
        }

    def smooth(self, face_parsing, images, k=5, sigma_t=5.5, sigma_s=0.2, flow="dis"):
        from ..vtoonify_core.temporal.smoothing import smooth_clip

        with _comfy.node_errors(SMOOTH_NAME):
            frames = _comfy.image_to_frames(images, "images")
            hooks = _comfy.run_hooks(frames.shape[0])
            out = smooth_clip(face_parsing, frames, k=int(k), sigma_t=float(sigma_t), sigma_s=float(sigma_s),
                              flow=flow, input_range=_comfy.IMAGE_RANGE, **hooks.kwargs(output=False, oom=False))
            return (out,)


NODE_CLASS_MAPPINGS = {"VToonifyFaceParse": FaceParse, "VToonifySmoothParsing": SmoothParsing}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyFaceParse": PARSE_NAME, "VToonifySmoothParsing": SMOOTH_NAME}
