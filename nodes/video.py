"""Stylize Video and Stylize Video File: VToonify over a whole video, chunk by chunk, inside ComfyUI.

An IMAGE batch holds every frame of a clip in memory; these nodes never do: they stream the video
through :func:`vtoonify_core.video.stylize_video` (decode a chunk, stylize, encode), keep the frame
count, frame rate, audio and colour range. Stylize Video takes and returns ComfyUI's VIDEO (result in
the temp folder, for Save Video); Stylize Video File takes a path and writes into the output folder
(saved workflows keep working). A cancelled run leaves its finished chunks in a work folder in the
output folder; queueing the same settings again continues from there.
"""
from __future__ import annotations

import time
from pathlib import Path

from . import _comfy, inputs, paths

DISPLAY_NAME = "Stylize Video File (VToonify)"
VIDEO_DISPLAY_NAME = "Stylize Video (VToonify)"
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
        hidden: dict[str, str] = {}  # messages name the video as the prompt did, not by its real path
        with _comfy.node_errors(DISPLAY_NAME, hide=hidden):
            model = inputs.require_model(vtoonify_model)
            source = resolve_video_path(video_path)
            hidden[str(source)] = repr(str(video_path).strip())
            output, subfolder, filename = resolve_output_path(output_name, source)
            face_choice = {}
            if faces is not None:
                from .faces import video_face_choice

                face_choice = video_face_choice(faces)
                face_padding = face_choice.pop("face_padding")
            result, previews = run_streaming(model, source, output, style=style, style_degree=style_degree,
                                             batch_size=batch_size, crop_mode=crop_mode, style_id=style_id,
                                             color_transfer=color_transfer, face_padding=face_padding,
                                             chunk_size=chunk_size, crf=crf, preview_frames=preview_frames,
                                             face_choice=face_choice)
            ui = {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": (True,)}
            return {"ui": ui, "result": (str(result.output), previews)}


def run_streaming(model, source: Path, output: Path, *, style, style_degree: float, batch_size: int, crop_mode: str,
                  style_id: int, color_transfer: bool, face_padding: int, chunk_size: int, crf: int,
                  preview_frames: int, work_dir: Path | None = None, face_choice: dict | None = None):
    """Stylize ``source`` into ``output`` with ComfyUI's progress bar, live previews and Cancel button;
    returns the core's result and ``preview_frames`` stylized frames spread over the output (IMAGE)."""
    import torch

    from ..vtoonify_core.video.encode import EncodeSettings
    from ..vtoonify_core.video.files import preview_indices, read_frames_at
    from ..vtoonify_core.video.run import stylize_video

    mode = inputs.crop_mode_of(crop_mode)
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
                           color_transfer=bool(color_transfer), crop_mode=mode, face_padding=int(face_padding),
                           batch_size=int(batch_size), chunk_size=int(chunk_size), encode=EncodeSettings(crf=int(crf)),
                           work_dir=work_dir, on_frames=on_frames, **(face_choice or {}), **hooks.kwargs(output=False))
    frames = read_frames_at(result.output, preview_indices(result.frames, int(preview_frames)))
    previews = torch.from_numpy(frames).float().div_(255.0)
    return result, previews.to(_comfy.output_device(), _comfy.output_dtype())


class StylizeVideo:
    """Toonifies a ComfyUI VIDEO (Load Video, Create Video, ...) into a new VIDEO, streamed chunk by chunk."""

    CATEGORY = "VToonify"
    FUNCTION = "stylize"
    OUTPUT_NODE = True
    RETURN_TYPES = ("VIDEO", "IMAGE")
    RETURN_NAMES = ("video", "previews")
    OUTPUT_TOOLTIPS = (
        "The stylized video (an MP4 in ComfyUI's temp folder, same frame count, frame rate and audio): connect Save "
        "Video to keep it, or Get Video Components for its frames.",
        "A few stylized frames spread over the video (first and last included).",
    )
    DESCRIPTION = ("Stylizes a VIDEO (from Load Video, Create Video or any node with a VIDEO output) chunk by chunk: "
                   "memory stays flat however long the video is, and the frame count, frame rate, audio and "
                   "duration are kept. The crop (face mode) and the style code (when not connected) come from the "
                   "first frame with a face. If the run is cancelled, queueing it again with the same settings "
                   "continues from the last finished chunk. Save Video keeps the result.")

    @classmethod
    def INPUT_TYPES(cls):
        spec = StylizeVideoFile.INPUT_TYPES()
        required = {"vtoonify_model": inputs.vtoonify_model(),
                    "video": ("VIDEO", {"tooltip": "The video to stylize: Load Video (streamed from its file, never "
                                                   "loaded whole), Create Video, or any VIDEO output."})}
        for name in ("style_degree", "batch_size", "crop_mode"):
            required[name] = spec["required"][name]
        return {"required": required, "optional": dict(spec["optional"])}

    def stylize(self, vtoonify_model, video, style_degree=0.5, batch_size=4, crop_mode="face (official crop)",
                style=None, style_id=26, color_transfer=False, face_padding=200, chunk_size=32, crf=18,
                preview_frames=4, faces=None):
        from ..vtoonify_core.video.jobs import default_work_dir
        from . import video_sources

        with _comfy.node_errors(VIDEO_DISPLAY_NAME):
            model = inputs.require_model(vtoonify_model)
            source, stem = video_sources.source_file(video)
            face_choice = {}
            if faces is not None:
                from .faces import video_face_choice

                face_choice = video_face_choice(faces)
                face_padding = face_choice.pop("face_padding")
            digest = self._digest(model, source, style, style_degree, crop_mode, style_id, color_transfer,
                                  face_padding, chunk_size, crf)
            if face_choice:  # another face: another output file
                import hashlib

                digest = hashlib.sha256(f"{digest}{sorted(face_choice.items())}".encode()).hexdigest()[:12]
            name = f"{_safe_stem(stem)}_vtoonify_{digest}.mp4"
            # the finished chunks of a cancelled run are kept in the output folder (the temp folder is emptied
            # when ComfyUI starts), so a run queued again after a restart continues too
            output = video_sources.temp_dir() / name
            work = default_work_dir(paths.resolve_output(f"{video_sources.TEMP_SUBFOLDER}/{name}", "video")[0])
            result, previews = run_streaming(model, source, output, style=style, style_degree=style_degree,
                                             batch_size=batch_size, crop_mode=crop_mode, style_id=style_id,
                                             color_transfer=color_transfer, face_padding=face_padding,
                                             chunk_size=chunk_size, crf=crf, preview_frames=preview_frames,
                                             work_dir=work, face_choice=face_choice)
            ui = {"images": [{"filename": name, "subfolder": video_sources.TEMP_SUBFOLDER, "type": "temp"}],
                  "animated": (True,)}
            return {"ui": ui, "result": (video_sources.video_output(result.output), previews)}

    @staticmethod
    def _digest(model, source, style, style_degree, crop_mode, style_id, color_transfer, face_padding, chunk_size,
                crf) -> str:
        """12 hex digits of the job's settings (:func:`~vtoonify_core.video.jobs.job_settings`): one output file
        per source and settings, so ComfyUI's cached VIDEO of another run never points at a file this run
        rewrote."""
        from ..vtoonify_core.checks import check_style_degree
        from ..vtoonify_core.styles.codes import check_style
        from ..vtoonify_core.video.encode import EncodeSettings
        from ..vtoonify_core.video.jobs import check_settings, job_settings, settings_hash

        mode = inputs.crop_mode_of(crop_mode)
        check_settings(mode, int(chunk_size), 1, int(face_padding))
        if style is not None:
            check_style(model, style, allow_schedule=True)
        d_s = check_style_degree(float(style_degree)) if model.backbone == "dualstylegan" else float(style_degree)
        settings = job_settings(model, source, Path("video.mp4"), style=style, style_id=int(style_id),
                                color_transfer=bool(color_transfer), d_s=d_s, crop_mode=mode,
                                face_padding=int(face_padding), chunk_size=int(chunk_size),
                                encode=EncodeSettings(crf=int(crf)).resolve(".mp4"))
        return settings_hash(settings)[:12]


def _safe_stem(stem: str) -> str:
    """A file-name stem of letters, digits, ``-`` and ``_`` only (at most 40 characters)."""
    out = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:40].strip("_")
    return out or "video"


NODE_CLASS_MAPPINGS = {"VToonifyStylizeVideoFile": StylizeVideoFile, "VToonifyStylizeVideo": StylizeVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyStylizeVideoFile": DISPLAY_NAME, "VToonifyStylizeVideo": VIDEO_DISPLAY_NAME}
