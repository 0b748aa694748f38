"""Extract Style Code: the W+ style code of a face (pSp), with the exemplar style of VToonify-D."""
from __future__ import annotations

from . import _comfy, inputs

DISPLAY_NAME = "Extract Style Code"


class ExtractStyleCode:
    """Detects and aligns the face in an image and encodes it into the W+ style code VToonify uses."""

    CATEGORY = "VToonify"
    FUNCTION = "extract"
    RETURN_TYPES = (inputs.STYLE, "IMAGE", "STRING")
    RETURN_NAMES = ("style", "aligned_face", "style_info")
    OUTPUT_TOOLTIPS = (
        "The W+ style code (with the backbone, style id/name and colour transfer that made it).",
        "The FFHQ-aligned 256x256 face that was encoded (preview).",
        "What the code is: backbone, exemplar style id and name (VToonify-D), colour transfer.",
    )
    DESCRIPTION = ("Detects the face in the first image (a frame of the clip or any portrait), crops and aligns it "
                   "as the official code does, encodes it with pSp and maps it to W+. For VToonify-D the structure "
                   "layers come from exemplar style_id; with color_transfer the exemplar's colours are used too.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vtoonify_model": inputs.vtoonify_model(),
                "image": ("IMAGE", {"tooltip": "A portrait; the first image of the batch is used."}),
                "style_id": inputs.style_id(),
                "color_transfer": inputs.color_transfer(),
            },
            "optional": {
                "faces": inputs.faces(tooltip="From Detect Faces (VToonify) on this image (or clip): the code is "
                                              "made from the chosen face (the first face with 'every face') in "
                                              "the first frame where it was found. Not connected: the best face "
                                              "of the first image."),
            },
        }

    def extract(self, vtoonify_model, image, style_id=26, color_transfer=False, faces=None):
        from ..vtoonify_core.checks import validate_frames
        from ..vtoonify_core.styles.codes import style_from_image

        with _comfy.node_errors(DISPLAY_NAME):
            frames = _comfy.image_to_frames(image, "image")
            validate_frames(frames, "image")
            model = inputs.require_model(vtoonify_model)
            index, face = 0, None
            if faces is not None:
                from .faces import require_faces

                tracks = require_faces(faces)
                if not tracks.whole:
                    index, face = tracks.reference(0)
                # the faces' frames, or at least up to the one the face comes from
                tracks.check_frames(max(frames.shape[0], tracks.num_frames) if frames.shape[0] > index
                                    else frames.shape[0], frames.shape[2:4], "faces")
            img = _comfy.image_to_uint8(image, index)
            model.load("generator", "encoder")
            style, aligned = style_from_image(model, img, int(style_id), bool(color_transfer), face=face)
            _comfy.show_preview(aligned)  # the aligned crop, shown on the node
            return (style, _comfy.uint8_to_image(aligned), style.describe())


NODE_CLASS_MAPPINGS = {"VToonifyExtractStyle": ExtractStyleCode}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyExtractStyle": DISPLAY_NAME}
