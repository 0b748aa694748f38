"""Stylize Video File: VToonify from a video file to a video file, chunk by chunk, inside ComfyUI.

An IMAGE batch holds every frame of a clip in memory; this node never does: it streams the file
through :func:`vtoonify_core.video.stylize_video` (decode a chunk, stylize, encode), keeps the frame
rate, audio and colour range, and writes into ComfyUI's output folder. A cancelled or failed run
leaves its finished chunks in a work folder beside the output; queueing the same settings again
continues from there.
"""
from __future__ import annotations

import time
from pathlib import Path

from . import _comfy, inputs, paths

DISPLAY_NAME = "Stylize Video File (VToonify)"
DEFAULT_OUTPUT = "vtoonify/%stem%_vtoonify.mp4"
#: Seconds between the stylized frames shown on the node while it runs.
PREVIEW_EVERY_S = 2.0


def resolve_video_path(name: str) -> Path:
    """The real path of the video ``name`` names: a file of ComfyUI's input folder (``name``, or
    ``name [output]`` etc.), or an absolute path inside a folder this pack may read (see
    :mod:`.paths`). Missing and not allowed give one message."""
    return paths.resolve_readable(name, "video_path")


def resolve_output_path(output_name: str, source: Path) -> tuple[Path, str, str]:
    """``(full path, subfolder, file name)`` of the output inside ComfyUI's output folder.

    ``%stem%`` is replaced by the source file's name without extension; without an extension
    ``.mp4`` is added. Names that lead out of the output folder are refused.
    """
    from ..vtoonify_core.errors import InputError
    from ..vtoonify_core.video.encode import CONTAINERS

    name = (output_name or DEFAULT_OUTPUT).strip().replace("%stem%", source.stem).replace("\\", "/")
    if not Path(name).suffix:
        name += ".mp4"
    if Path(name).suffix.lower() not in CONTAINERS:
        raise InputError("output_name", f"unsupported extension {Path(name).suffix!r}; use {', '.join(CONTAINERS)}.")
    return paths.resolve_output(name, "output_name", shown=output_name)


class StylizeVideoFile:
    """Toonifies a video file into a new video file in the output folder, without loading it whole."""

    CATEGORY = "VToonify"
    FUNCTION = "stylize"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("video_path", "previews")
    OUTPUT_TOOLTIPS = (
        "Full path of the written video.",
        "A few stylized frames spread over the video (first and last included).",
    )
    DESCRIPTION = ("Stylizes a whole video file chunk by chunk: memory stays flat however long the video is, and the "
                   "frame rate, audio and colour range are kept. The crop (face mode) and the style code (when not "
                   "connected) come from the first frame with a face. If the run is cancelled, queueing it again with "
                   "the same settings continues from the last finished chunk.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vtoonify_model": inputs.vtoonify_model(),
                "video_path": ("STRING", {"default": "", "tooltip": "Video file: a file of ComfyUI's input folder "
                                                                    "('name [output]' for one of the output folder), "
                                                                    "or an absolute path inside the input, output or "
                                                                    "temp folder or a folder listed in "
                                                                    f"{paths.ALLOWED_DIRS_ENV}."}),
                "output_name": ("STRING", {"default": DEFAULT_OUTPUT,
                                           "tooltip": "Output file inside the output folder (.mp4, .m4v, .mov, .mkv "
                                                      "or .webm); %stem% is the input's name. An existing file is "
                                                      "replaced."}),
                "style_degree": inputs.style_degree(),
                "batch_size": inputs.batch_size(),
                "crop_mode": inputs.crop_mode(),
            },
            "optional": {
                # a single code, or keyframes that follow the video's frame numbers (the job saves the schedule)
                "style": inputs.style_or_keyframes(
                    tooltip="From Extract Style Code (or Exemplar Style From Image, Style Mix), made with the same "
                            "model, or keyframed styles from Style Keyframes (frame numbers of the video); when not "
                            "connected the style is computed from the first frame with a face (style_id, "
                            "color_transfer)."),
                "style_id": inputs.style_id(),
                "color_transfer": inputs.color_transfer(),
                "face_padding": inputs.face_padding(),
                "chunk_size": ("INT", {"default": 32, "min": 1, "max": 4096, "step": 1,
                                       "tooltip": "Frames decoded and encoded at a time; also how much work a "
                                                  "cancelled run can lose."}),
                "crf": ("INT", {"default": 18, "min": 0, "max": 63, "step": 1,
                                "tooltip": "Quality of the encoded video (lower is better; 0 = lossless H.264)."}),
                "preview_frames": ("INT", {"default": 4, "min": 1, "max": 64, "step": 1,
                                           "tooltip": "How many stylized frames to return as previews."}),
                "faces": inputs.faces(tooltip="From Detect Faces (VToonify) (e.g. on the first frame): its detector, "
                                              "face order, index and face_padding choose the face of the video's "
                                              "first frame with one (fixed crop, one face)."),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, video_path=None):
        """Refuse, when the prompt is queued, a video this pack may not read or that is missing (one
        message for both); a video_path coming from another node is checked when the node runs.

        Only ``video_path`` is named here: ComfyUI then skips its own checks for that input alone (a
        STRING has none but its type), the others keep theirs. ComfyUI shows the message as
        "<node> failed custom validation: video_path - <message>"."""
        if video_path is None:
            return True
        try:
            resolve_video_path(video_path)
        except (ValueError, FileNotFoundError) as exc:
            return str(exc).removeprefix("video_path: ")
        return True

    @classmethod
    def IS_CHANGED(cls, video_path="", **kwargs):
        """Rerun when the source file changes (its size and modification time)."""
        try:
            p = resolve_video_path(video_path)
            st = p.stat()
            return f"{p}:{st.st_size}:{st.st_mtime_ns}"
        except Exception:  # noqa: BLE001 - let validation report it
            return video_path

    def stylize(self, vtoonify_model, video_path, output_name=DEFAULT_OUTPUT, style_degree=0.5, batch_size=4,
                crop_mode="face (official crop)", style=None, style_id=26, color_transfer=False, face_padding=200,
                chunk_size=32, crf=18, preview_frames=4, faces=None):
        import torch

        from ..vtoonify_core.video.encode import EncodeSettings
        from ..vtoonify_core.video.files import preview_indices, read_frames_at
        from ..vtoonify_core.video.run import stylize_video

        hidden: dict[str, str] = {}  # messages name the video as the prompt did, not by its real path
        with _comfy.node_errors(DISPLAY_NAME, hide=hidden):
            model = inputs.require_model(vtoonify_model)
            mode = inputs.crop_mode_of(crop_mode)
            source = resolve_video_path(video_path)
            hidden[str(source)] = repr(str(video_path).strip())
            output, subfolder, filename = resolve_output_path(output_name, source)
            face_choice = {}
            if faces is not None:
                from .faces import video_face_choice

                face_choice = video_face_choice(faces)
                face_padding = face_choice.pop("face_padding")
            model.load("generator", "parser", "encoder")
            state = {"frame": None, "shown": 0.0}

            def on_frames(index: int, frames) -> None:
                if time.monotonic() - state["shown"] >= PREVIEW_EVERY_S:
                    state["frame"] = frames[-1]

            def latest_frame():  # the latest stylized frame on the node, at most every PREVIEW_EVERY_S seconds
                frame, state["frame"] = state["frame"], None
                if frame is not None:
                    state["shown"] = time.monotonic()
                return frame

            hooks = _comfy.run_hooks(preview=latest_frame)  # sized when the job knows its frame count
            result = stylize_video(model, source, output, style, float(style_degree), style_id=int(style_id),
                                   color_transfer=bool(color_transfer), crop_mode=mode,
                                   face_padding=int(face_padding), batch_size=int(batch_size),
                                   chunk_size=int(chunk_size), encode=EncodeSettings(crf=int(crf)),
                                   on_frames=on_frames, **face_choice, **hooks.kwargs(output=False))
            frames = read_frames_at(result.output, preview_indices(result.frames, int(preview_frames)))
            previews = torch.from_numpy(frames).float().div_(255.0)
            previews = previews.to(_comfy.output_device(), _comfy.output_dtype())
            ui = {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": (True,)}
            return {"ui": ui, "result": (str(result.output), previews)}


NODE_CLASS_MAPPINGS = {"VToonifyStylizeVideoFile": StylizeVideoFile}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyStylizeVideoFile": DISPLAY_NAME}
