"""Style control: Exemplar Style From Image (few-shot, optional refinement), Style Mix and Style Keyframes."""
from __future__ import annotations

import torch

from . import _comfy, inputs

EXEMPLAR_NAME = "Exemplar Style From Image"
MIX_NAME = "Style Mix"
KEYFRAMES_NAME = "Style Keyframes"
#: Resolutions where the refinement's DualStyleGAN synthesis may stop (first = default).
REFINE_RESOLUTIONS = ("256", "32", "64", "128", "512", "1024")
#: Layer groups of Style Mix (label -> core selection; 'custom range' uses first_layer..last_layer).
MIX_LAYERS = {"all (0-17)": "all", "structure (0-6)": "structure", "colour (7-17)": "colour",
              "custom range": None}
KEYFRAME_LETTERS = ("a", "b", "c", "d")
DEFAULT_KEYFRAMES = "0:A@0.0, 120:B@1.0"


class ExemplarStyleFromImage:
    """VToonify-D: any portrait (a photo or an artwork) as the exemplar style, optionally refined."""

    CATEGORY = "VToonify"
    FUNCTION = "make"
    RETURN_TYPES = (inputs.STYLE, "IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("style", "aligned_references", "reconstruction", "style_info")
    OUTPUT_TOOLTIPS = (
        "The W+ style code: the face's code with the structure layers 0-6 from the reference (all 18 layers "
        "with color_transfer), as the official rule builds it from an exemplar.",
        "The FFHQ-aligned 256x256 reference faces that were encoded.",
        "What DualStyleGAN makes of the exemplar code with the (first) reference's own face code, at "
        "refine_resolution: a check of the code.",
        "What the code is made of, and the refinement loss before and after.",
    )
    DESCRIPTION = ("VToonify-D: uses any reference portrait (a photo or an artwork) instead of one of the "
                   "checkpoint's exemplar styles. The face is aligned as the official code does and encoded with pSp; "
                   "that code is the exemplar (extrinsic) style code. With refine_steps > 0 it is optimised so that the "
                   "checkpoint's DualStyleGAN reproduces the reference (pixel loss; the official codes also used LPIPS "
                   "and identity losses, whose weights are not available offline). Several reference images (a batch) "
                   "give their average code (few-shot).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vtoonify_model": inputs.vtoonify_model(tooltip="From Load VToonify Model (or VToonify Speed "
                                                                "Settings), with a VToonify-D checkpoint."),
                "reference": ("IMAGE", {"tooltip": "Reference portrait(s), photos or artworks. Every image of the batch "
                                                   "is a reference; their codes are averaged (few-shot)."}),
                "color_transfer": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "Take the reference's colours too (all 18 layers; best with a colour-transfer "
                               "checkpoint such as vtoonify_s_d_c.pt). Off: the colours come from face."}),
                "refine_steps": ("INT", {
                    "default": 0, "min": 0, "max": 2000, "step": 1,
                    "tooltip": "Optimisation steps through DualStyleGAN (0 = the pSp code as it is). 50-200 on a GPU; "
                               "each step runs the generator forward and backward."}),
                "learning_rate": ("FLOAT", {"default": 0.05, "min": 0.0001, "max": 1.0, "step": 0.001,
                                            "tooltip": "Adam learning rate of the refinement (on the z+ code)."}),
                "refine_resolution": (list(REFINE_RESOLUTIONS), {
                    "default": "256",
                    "tooltip": "Where the DualStyleGAN synthesis stops during the refinement (and for the "
                               "reconstruction): lower is faster and blurrier; 1024 is the full generator."}),
                "loss": (["l2", "l1"], {"default": "l2",
                                        "tooltip": "Pixel loss against the aligned reference (on a 256 px or "
                                                   "smaller image)."}),
            },
            "optional": {
                "face": ("IMAGE", {"tooltip": "The face whose colours are kept (a frame of the clip; the first image "
                                              "is used). Needed unless color_transfer is on."}),
            },
        }

    def make(self, vtoonify_model, reference, color_transfer=False, refine_steps=0, learning_rate=0.05,
             refine_resolution="256", loss="l2", face=None):
        from ..vtoonify_core.checks import validate_frames
        from ..vtoonify_core.errors import InputError
        from ..vtoonify_core.styles.codes import prepare_style_image
        from ..vtoonify_core.styles.exemplars import (
            exemplar_from_images,
            style_from_exemplar,
            synthesize_exemplar,
        )

        with _comfy.node_errors(EXEMPLAR_NAME):
            model = inputs.require_model(vtoonify_model)
            if model.backbone != "dualstylegan":
                raise InputError("vtoonify_model", "an exemplar style needs a VToonify-D checkpoint "
                                                   "(vtoonify_d_<style>/...): VToonify-T has no exemplar styles.")
            frames = _comfy.image_to_frames(reference, "reference")
            validate_frames(frames, "reference")
            if face is None and not color_transfer:
                raise InputError("face", "connect the face whose colours are kept (a frame of the clip), or turn "
                                         "color_transfer on.")
            face_aligned = None
            if face is not None and not color_transfer:  # with colour transfer the face is not used
                validate_frames(_comfy.image_to_frames(face, "face"), "face")
                face_aligned, _ = prepare_style_image(_comfy.image_to_uint8(face, 0))
            images = [_comfy.image_to_uint8(reference, i) for i in range(frames.shape[0])]
            size = int(refine_resolution)
            model.load("generator", "encoder")
            hooks = _comfy.run_hooks(len(images) * max(1, int(refine_steps)))
            exemplar, aligned, contents = exemplar_from_images(
                model, images, refine_steps=int(refine_steps), lr=float(learning_rate), size=size, loss=loss,
                **hooks.kwargs(output=False, oom=False))
            n = exemplar.references
            name = "exemplar from an image" if n == 1 else f"average exemplar of {n} images"
            if refine_steps:
                name += f", refined {int(refine_steps)} steps"
            style = style_from_exemplar(model, exemplar, face_aligned, bool(color_transfer), name)
            recon = synthesize_exemplar(model, contents[0], exemplar.wplus, size=size)
            _comfy.show_preview(aligned[0])
            info = [style.describe()]
            if exemplar.losses:
                info.append(f"refinement {loss} loss at {size}px: {exemplar.losses[0]:.5g} -> {exemplar.losses[-1]:.5g}")
            aligned_image = torch.cat([_comfy.uint8_to_image(a) for a in aligned])
            return (style, aligned_image, _comfy.signed_to_image(recon), "\n".join(info))


class StyleMix:
    """Blends two style codes on a group of W+ layers."""

    CATEGORY = "VToonify"
    FUNCTION = "mix"
    RETURN_TYPES = (inputs.STYLE, "STRING")
    RETURN_NAMES = ("style", "style_info")
    OUTPUT_TOOLTIPS = ("The mixed W+ style code.", "What the code is made of.")
    DESCRIPTION = ("Mixes two style codes made with the same model: on the chosen W+ layers the code is "
                   "(1 - blend) * A + blend * B, elsewhere A. Layers 0-6 are the structure (VToonify-D: the exemplar's "
                   "shapes, applied by the style degree; ignored by VToonify-T), layers 7-17 the colours and textures "
                   "(decoder stages from coarse to fine). blend 0 gives A, 1 on all layers gives B; 'all' is a plain "
                   "interpolation between the two styles.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "style_a": inputs.style(tooltip="Style A (kept outside the chosen layers)."),
                "style_b": inputs.style(tooltip="Style B (made with the same model as A)."),
                "blend": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "0 = A, 1 = B on the chosen layers."}),
                "layers": (list(MIX_LAYERS), {
                    "default": "all (0-17)",
                    "tooltip": "Which W+ layers are blended: all, the structure layers 0-6, the colour layers 7-17, "
                               "or first_layer..last_layer."}),
                "first_layer": ("INT", {"default": 0, "min": 0, "max": 17, "step": 1,
                                        "tooltip": "custom range: first W+ layer blended (0-17)."}),
                "last_layer": ("INT", {"default": 17, "min": 0, "max": 17, "step": 1,
                                       "tooltip": "custom range: last W+ layer blended (0-17, inclusive)."}),
            }
        }

    def mix(self, style_a, style_b, blend=0.5, layers="all (0-17)", first_layer=0, last_layer=17):
        from ..vtoonify_core.errors import InputError
        from ..vtoonify_core.styles.mixing import mix_styles

        with _comfy.node_errors(MIX_NAME):
            selection = MIX_LAYERS[layers]
            if selection is None:
                if int(first_layer) > int(last_layer):
                    raise InputError("first_layer", f"{first_layer} is after last_layer {last_layer}: set first_layer "
                                                    f"<= last_layer (e.g. {last_layer}..{first_layer}).")
                selection = list(range(int(first_layer), int(last_layer) + 1))
            style = mix_styles(style_a, style_b, float(blend), selection)
            return (style, style.describe())


class StyleKeyframes:
    """Styles and style degrees at keyframes of the clip, interpolated in between (for Stylize Frames)."""

    CATEGORY = "VToonify"
    FUNCTION = "schedule"
    RETURN_TYPES = (inputs.KEYFRAMES, "STRING")
    RETURN_NAMES = ("style", "schedule_info")
    OUTPUT_TOOLTIPS = (
        "A style that changes over the clip (VTOONIFY_KEYFRAMES): Stylize Frames takes it; nodes that take a single "
        "style code do not.",
        "The keyframes as understood.",
    )
    DESCRIPTION = ("Keyframed styles for Stylize Frames: e.g. '0:A@0.0, 120:B@1.0' = style A with style degree 0 at "
                   "frame 0, turning into style B with degree 1 at frame 120. Between keyframes the W+ codes and the "
                   "degrees are interpolated linearly; before the first and after the last keyframe they are held. "
                   "A keyframe without @degree uses Stylize Frames' style_degree.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "style_a": inputs.style(tooltip="Style A of the keyframes."),
                "keyframes": ("STRING", {
                    "default": DEFAULT_KEYFRAMES, "multiline": True,
                    "tooltip": "FRAME:LETTER[@DEGREE] entries separated by commas or new lines (frames count from "
                               "0 in the clip; DEGREE 0..1, optional)."}),
            },
            "optional": {
                f"style_{c}": inputs.style(tooltip=f"Style {c.upper()} of the keyframes.")
                for c in KEYFRAME_LETTERS[1:]
            },
        }

    def schedule(self, style_a, keyframes=DEFAULT_KEYFRAMES, style_b=None, style_c=None, style_d=None):
        from ..vtoonify_core.styles.schedules import parse_keyframes

        with _comfy.node_errors(KEYFRAMES_NAME):
            styles = {"A": style_a, "B": style_b, "C": style_c, "D": style_d}
            sched = parse_keyframes(str(keyframes), styles)
            return (sched, sched.describe())


NODE_CLASS_MAPPINGS = {
    "VToonifyExemplarStyle": ExemplarStyleFromImage,
    "VToonifyStyleMix": StyleMix,
    "VToonifyStyleKeyframes": StyleKeyframes,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VToonifyExemplarStyle": EXEMPLAR_NAME,
    "VToonifyStyleMix": MIX_NAME,
    "VToonifyStyleKeyframes": KEYFRAMES_NAME,
}
