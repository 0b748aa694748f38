"""Detect Faces (VToonify) and Paste Back (VToonify): which faces are stylized, and the stylized crops
put back into the frames; adapters over :mod:`vtoonify_core.faces` (tracks, paste)."""
from __future__ import annotations

import torch

from . import _comfy, inputs

DETECT_NAME = "Detect Faces (VToonify)"
PASTE_NAME = "Paste Back (VToonify)"

#: face labels -> the core's face orders
FACE_CHOICES = {"best score": "score", "largest": "largest", "left to right": "left_to_right",
                "official (last detected)": "official"}
#: how many faces labels -> every_face
HOW_MANY = {"the chosen face": False, "every face": True}
#: crop labels -> the core's clip modes
CROPS = {"fixed (first frame)": "first", "tracked (smoothed)": "track"}
#: colours of the preview boxes (RGB): chosen faces, other faces of the reference frame
CHOSEN, OTHER = (64, 220, 64), (200, 200, 200)


def _backends() -> list[str]:
    from ..vtoonify_core.faces.detect import available_backends

    names = available_backends()
    return ["dlib"] + [n for n in names if n != "dlib"]


def draw_preview(frames_u8, tracks):
    """The frames with the crop box of every chosen face (green, numbered) and, on the reference frame,
    the detector box of the other faces found there (grey, with their index in the chosen order)."""
    import cv2

    out = frames_u8.copy()
    ref = tracks.clips[0].reference_index
    chosen = {tracks.reference(k)[1].box for k in range(tracks.num_faces)}
    for n, face in enumerate(tracks.candidates):
        if face.box in chosen:
            continue
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.rectangle(out[ref], (x0, y0), (x1, y1), OTHER, 2)
        cv2.putText(out[ref], str(n), (x0 + 4, y0 + 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, OTHER, 2)
    b = out.shape[0]
    for k in range(tracks.num_faces):
        label = str(k if tracks.options.every_face else tracks.options.index)
        for i in range(b):
            x, y, w, h = tracks.box(k * b + i)
            cv2.rectangle(out[i], (x, y), (x + w - 1, y + h - 1), CHOSEN, 3)
            cv2.putText(out[i], label, (x + 6, y + 28), cv2.FONT_HERSHEY_SIMPLEX, 0.9, CHOSEN, 2)
    return out


class DetectFaces:
    """Finds the faces of a clip and chooses which are stylized and how they are cropped."""

    CATEGORY = "VToonify"
    FUNCTION = "detect"
    RETURN_TYPES = (inputs.FACES, "IMAGE", "INT")
    RETURN_NAMES = ("faces", "preview", "face_count")
    OUTPUT_TOOLTIPS = (
        "The chosen face(s) and their crop in every frame: connect to Extract Style Code, Stylize Frames (and "
        "from Stylize Frames to Paste Back).",
        "The frames with the crop of each chosen face (green, numbered) and the other faces of the first frame "
        "with faces (grey, with the index to pick them).",
        "How many faces the first frame with faces has.",
    )
    DESCRIPTION = ("Detects the faces in the frames and chooses which are stylized: one face (by detector score, "
                   "size, left to right, or the one the official code uses) or every face, each cropped the "
                   "official way (eyes 64 px apart, face_padding around them). The crop is fixed from the first "
                   "frame with the face (official) or follows the face in every frame, smoothed over time. The "
                   "preview shows the faces and their indices.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": inputs.images(),
                "detector": (_backends(), {"default": "dlib", "tooltip": "Face detector: dlib (68 landmarks, the "
                                                                         "official one) or MediaPipe when it is "
                                                                         "installed (pip install mediapipe)."}),
                "face": (list(FACE_CHOICES), {"default": "best score",
                                              "tooltip": "How faces are ordered; index picks in that order. "
                                                         "'official (last detected)' is the face the official "
                                                         "VToonify code uses."}),
                "index": ("INT", {"default": 0, "min": 0, "max": 63, "step": 1,
                                  "tooltip": "Which face in that order (0 = first; left to right: 0 = leftmost). "
                                             "The preview numbers the faces."}),
                "stylize": (list(HOW_MANY), {"default": "the chosen face",
                                             "tooltip": "The chosen face only, or every face of the first frame "
                                                        "with faces (each stylized and pasted back on its own)."}),
                "crop": (list(CROPS), {"default": "fixed (first frame)",
                                       "tooltip": "fixed: the crop of the first frame with the face for every frame "
                                                  "(official); tracked: a crop per frame following the face."}),
                "smoothing": ("FLOAT", {"default": 3.0, "min": 0.0, "max": 60.0, "step": 0.5,
                                        "tooltip": "tracked: how much the crop's movement is smoothed over time "
                                                   "(Gaussian sigma in frames; 0 = none)."}),
                "face_padding": inputs.face_padding(),
                "upsample": ("INT", {"default": 1, "min": 0, "max": 4, "step": 1,
                                     "tooltip": "dlib: how often the image is doubled before the search (more "
                                                "finds smaller faces, about 4x slower per step)."}),
            }
        }

    def detect(self, images, detector="dlib", face="best score", index=0, stylize="the chosen face",
               crop="fixed (first frame)", smoothing=3.0, face_padding=200, upsample=1):
        from ..vtoonify_core.checks import validate_frames
        from ..vtoonify_core.faces.tracks import FaceOptions, track_faces

        with _comfy.node_errors(DETECT_NAME):
            frames = _comfy.image_to_frames(images, "images")
            validate_frames(frames, "images")
            u8 = (frames.float() * 255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            options = FaceOptions(backend=detector, pick=FACE_CHOICES[face], index=int(index),
                                  every_face=HOW_MANY[stylize], mode=CROPS[crop], smoothing=float(smoothing),
                                  padding=int(face_padding), upsample=int(upsample))
            hooks = _comfy.run_hooks(u8.shape[0])

            def on_frame(done: int, total: int) -> None:  # Cancel works between frames; the bar counts them
                hooks.check_interrupt()
                hooks.progress(done, total)

            tracks = track_faces(u8, options, on_frame=on_frame)
            hooks.progress(u8.shape[0], u8.shape[0])
            preview = torch.from_numpy(draw_preview(u8, tracks)).float().div_(255.0)
            preview = preview.to(_comfy.output_device(), _comfy.output_dtype())
            return (tracks, preview, len(tracks.candidates))


def require_faces(value, input_name: str = "faces"):
    """The FaceTracks connected to ``input_name``, or a clear error."""
    from ..vtoonify_core.errors import InputError
    from ..vtoonify_core.faces.tracks import FaceTracks

    if not isinstance(value, FaceTracks):
        raise InputError(input_name, f"expected VTOONIFY_FACES, got {type(value).__name__}: connect the faces output "
                                     f"of Detect Faces (VToonify) or of Stylize Frames.")
    return value


def video_face_choice(value) -> dict:
    """The keyword arguments of the streaming video run for the faces connected to it: detector, face
    order, index and face_padding. The stream is cropped like its first frame with a face, so tracked
    crops and every face are refused (the IMAGE path does those)."""
    from ..vtoonify_core.errors import InputError

    o = require_faces(value).options
    if o.every_face or o.mode != "first":
        raise InputError("faces", "the video file is cropped like its first frame with a face, one face: set Detect "
                                  "Faces to 'the chosen face' and 'fixed (first frame)', or use the IMAGE path (Stylize "
                                  "Frames with these faces, then Paste Back) for tracked crops or every face.")
    return {"backend": o.backend, "pick": o.pick, "index": int(o.index), "face_padding": int(o.padding)}


class PasteBack:
    """Puts stylized crops back into the original frames."""

    CATEGORY = "VToonify"
    FUNCTION = "paste"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("images", "mask")
    OUTPUT_TOOLTIPS = (
        "The original frames with the stylized face(s) blended in.",
        "Where and how much of the stylized image shows in each frame (the blend weight).",
    )
    DESCRIPTION = ("Puts the stylized crops of Stylize Frames back into the original frames: each crop is scaled "
                   "onto its box in its frame (per frame when the crop is tracked, every face when several were "
                   "stylized), blended through the crop region, or a face mask (e.g. Face Parse) softened by "
                   "feather, with an optional colour match at the seam.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The original frames that were stylized (the images input of "
                                                "Stylize Frames)."}),
                "stylized": ("IMAGE", {"tooltip": "The images output of Stylize Frames."}),
                "faces": (inputs.FACES, {"tooltip": "The faces output of the same Stylize Frames: where each "
                                                    "stylized crop belongs."}),
                "feather": ("FLOAT", {"default": 16.0, "min": 0.0, "max": 256.0, "step": 1.0,
                                      "tooltip": "Width in frame pixels of the fade at the crop's edges and of the "
                                                 "softening of the mask's edge (0 = hard edge)."}),
                "color_match": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                          "tooltip": "How far the stylized colours along the seam move to the "
                                                     "frame's (0 = not at all, 1 = same mean colour)."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Only these parts are pasted (e.g. the mask of Face Parse on the same "
                                             "frames), one per frame or one for all; not connected: the whole "
                                             "crop region."}),
            },
        }

    def paste(self, images, stylized, faces, feather=16.0, color_match=0.0, mask=None):
        from ..vtoonify_core.errors import InputError
        from ..vtoonify_core.faces.paste import paste_tracks

        with _comfy.node_errors(PASTE_NAME):
            tracks = require_faces(faces)
            frames = _comfy.image_to_frames(images, "images").permute(0, 2, 3, 1).float().cpu().numpy()
            sty = _comfy.image_to_frames(stylized, "stylized").permute(0, 2, 3, 1).float().cpu().numpy()
            masks = None
            if mask is not None:
                if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
                    raise InputError("mask", f"expected a MASK [B, H, W], got {getattr(mask, 'shape', mask)}.")
                masks = (mask[None] if mask.ndim == 2 else mask).float().cpu().numpy()
            out, weights = paste_tracks(frames, sty, tracks, feather=float(feather), masks=masks,
                                        color_match=float(color_match))
            result = torch.from_numpy(out).to(_comfy.output_device(), _comfy.output_dtype())
            return (result, _comfy.to_mask(torch.from_numpy(weights)))


NODE_CLASS_MAPPINGS = {"VToonifyDetectFaces": DetectFaces, "VToonifyPasteBack": PasteBack}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyDetectFaces": DETECT_NAME, "VToonifyPasteBack": PASTE_NAME}
