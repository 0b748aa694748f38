"""Train VToonify Student, Load VToonify Student, Stylize Frames (Student) and Stylize Video
(Student): a small two-stage video network distilled from VToonify on the user's own clip
(:mod:`vtoonify_core.student`), kept in ``models/vtoonify_students``; it learns from IMAGE frames or
from a VIDEO, and stylizes IMAGE frames or a whole VIDEO, streamed chunk by chunk."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from . import _comfy, inputs, loader

logger = logging.getLogger("vtoonify")

TRAIN_NAME = "Train VToonify Student"
LOAD_NAME = "Load VToonify Student"
STYLIZE_NAME = "Stylize Frames (Student)"
VIDEO_NAME = "Stylize Video (Student)"
STUDENT = "VTOONIFY_STUDENT"
FOLDER = "vtoonify_students"
SUFFIX = ".safetensors"
DEFAULT_PREFIX = "student"
#: steps between two previews (and log lines) while training
PREVIEW_EVERY = 25
#: Train VToonify Student's video_frames: how many frames of a VIDEO it learns from by default ("a few hundred")
VIDEO_FRAMES = 300
#: Seconds between the stylized frames Stylize Video (Student) shows on the node while it runs.
PREVIEW_EVERY_S = 2.0
#: Version of what Stylize Video (Student) writes, in its output names (a change gives new names).
VIDEO_FORMAT = "vtoonify-student-video/1"


def register_folder() -> None:
    """Register ``models/vtoonify_students`` with ComfyUI unless that folder is registered already."""
    fp = _comfy.folder_paths()
    try:
        if fp.get_folder_paths(FOLDER):
            return
    except KeyError:
        pass
    fp.add_model_folder_path(FOLDER, os.path.join(fp.models_dir, FOLDER))


def folder() -> Path:
    """The first registered students folder (where new students are written)."""
    register_folder()
    return Path(_comfy.folder_paths().get_folder_paths(FOLDER)[0])


def student_choices() -> list[str]:
    """The ``.safetensors`` files of the students folder (hidden names left out)."""
    try:
        register_folder()
        names = _comfy.folder_paths().get_filename_list(FOLDER)
    except (KeyError, ImportError):
        return []
    return sorted(n for n in names if n.lower().endswith(SUFFIX)
                  and not any(p.startswith(".") for p in Path(n).parts))


def new_target(filename_prefix: str) -> tuple[Path, str]:
    """``(full path, listed name)`` of the next free ``<prefix>_NNNNN.safetensors`` in the students folder."""
    from ..vtoonify_core.errors import InputError

    name = (filename_prefix or "").strip().replace("\\", "/")
    if name.lower().endswith(SUFFIX):
        name = name[:-len(SUFFIX)]
    rel = PurePosixPath(name)
    if (not name or name.endswith("/") or rel.is_absolute() or re.match(r"[A-Za-z]:", name) or ".." in rel.parts
            or any(p.startswith(".") for p in rel.parts)):
        raise InputError("filename_prefix", f"'{filename_prefix}': give a name inside models/{FOLDER} without '..', "
                                            f"a leading '.' or an absolute path, e.g. {DEFAULT_PREFIX}.")
    base = folder().joinpath(*rel.parts)
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 100000):
        full = base.with_name(f"{base.name}_{i:05d}{SUFFIX}")
        if not full.exists():
            return full, os.path.normpath(f"{rel.as_posix()}_{i:05d}{SUFFIX}")
    raise InputError("filename_prefix", f"models/{FOLDER} holds 99999 students named {name}: choose another name.")


def require_student(value, input_name: str = "vtoonify_student"):
    """The student connected to ``input_name``; anything else is refused with what to connect."""
    from ..vtoonify_core.errors import InputError
    from ..vtoonify_core.student import Student

    if not isinstance(value, Student):
        raise InputError(input_name, f"expected a {STUDENT}, got {type(value).__name__}: connect Load VToonify Student "
                                     f"or Train VToonify Student.")
    return value


def _forget_listing() -> None:
    cache = getattr(_comfy.folder_paths(), "filename_list_cache", None)
    if isinstance(cache, dict):  # list the new file at once
        cache.pop(FOLDER, None)


class TrainStudent:
    """Distils VToonify (a model, a style code and a degree) into a fast student on the given frames:
    an IMAGE batch, or consecutive frames of a VIDEO."""

    CATEGORY = "VToonify"
    FUNCTION = "train"
    OUTPUT_NODE = True
    RETURN_TYPES = (STUDENT, "STRING")
    RETURN_NAMES = ("vtoonify_student", "student_name")
    OUTPUT_TOOLTIPS = ("The trained student, for Stylize Frames (Student) or Stylize Video (Student).",
                       f"Its file in models/{FOLDER}, as Load VToonify Student lists it.")
    DESCRIPTION = ("Stylizes the frames once with VToonify (the teacher), then trains a small two-stage video network "
                   "to reproduce them: a U-Net (5.3M parameters) and a refiner that keeps consecutive frames "
                   "coherent. Connect either images (IMAGE frames) or video (a VIDEO, e.g. Load Video: it learns "
                   f"from video_frames consecutive frames from video_start, {VIDEO_FRAMES} by default). Give a few "
                   "hundred consecutive frames of the clip (sides multiples of 8, e.g. the face crop); the student "
                   "then stylizes the rest of the clip many times faster. The progress bar shows the training with a "
                   f"preview (first frame, current loss) every {PREVIEW_EVERY} steps; Cancel stops it and still "
                   f"writes the student trained so far to models/{FOLDER}.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vtoonify_model": inputs.vtoonify_model(),
                "style": inputs.style(),
                "style_degree": inputs.style_degree(),
                "steps": ("INT", {"default": 2000, "min": 1, "max": 200000, "step": 50,
                                  "tooltip": "Training steps (about a quarter train the refiner)."}),
                "refiner": ("BOOLEAN", {"default": True, "tooltip": "Train the Stage-II refiner that keeps "
                                                                    "consecutive frames coherent."}),
                "frames_per_step": ("INT", {"default": 4, "min": 1, "max": 64,
                                       "tooltip": "Frames per training step (and per teacher chunk)."}),
                "crop_size": ("INT", {"default": 96, "min": 16, "max": 1024, "step": 8,
                                      "tooltip": "Training crops of at most this many input pixels a side (multiple "
                                                 "of 8): smaller is faster per step."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1,
                                 "tooltip": "Makes the training reproducible."}),
                "filename_prefix": ("STRING", {"default": DEFAULT_PREFIX,
                                               "tooltip": f"Name in models/{FOLDER}; _00001.safetensors (the next "
                                                          f"free number) is added."}),
            },
            "optional": {
                # one of images / video: saved workflows connect images (formerly required; same socket position)
                "images": inputs.images(tooltip="Consecutive frames of the clip to learn from (at least 3 with the "
                                                "refiner), sides multiples of 8. Connect this or video, not both."),
                "video": ("VIDEO", {"tooltip": "A clip to learn from (Load Video, Create Video or any VIDEO output), "
                                               "sides multiples of 8: video_frames consecutive frames from "
                                               "video_start are decoded (nothing else is kept in memory). Connect "
                                               "this or images, not both."}),
                "video_start": ("INT", {"default": 0, "min": 0, "max": 10 ** 7,
                                        "tooltip": "video: the first frame to learn from (0 = the first frame of "
                                                   "the clip)."}),
                "video_frames": ("INT", {"default": VIDEO_FRAMES, "min": 0, "max": 100000,
                                         "tooltip": "video: how many consecutive frames to learn from (fewer when "
                                                    "the clip ends first); 0 = every frame to the end of the clip "
                                                    "(all of them are held in memory)."}),
            },
        }

    def train(self, vtoonify_model, style, style_degree, images=None, steps=2000, refiner=True, frames_per_step=4,
              crop_size=96, seed=0, filename_prefix=DEFAULT_PREFIX, video=None, video_start=0,
              video_frames=VIDEO_FRAMES):
        from ..vtoonify_core.student import train_student, vtoonify_teacher

        with _comfy.node_errors(TRAIN_NAME):
            model = inputs.require_model(vtoonify_model)
            frames, learnt = _training_frames(images, video, int(video_start), int(video_frames))
            path, name = new_target(filename_prefix)
            model.load("generator", "parser")
            teacher = vtoonify_teacher(model, style, float(style_degree), int(frames_per_step))
            first = frames[:1].float() * 2.0 - 1.0
            holder: dict = {}
            bar = _comfy.progress(frames.shape[0] + int(steps))

            def progress(done: int, total: int) -> None:
                bar(done, total, holder.pop("preview", None))

            def on_log(step: int, logs: dict) -> None:
                logger.info("VToonify student: step %d/%d, stage %d, loss %.4f", step, steps, logs["stage"],
                            logs["loss"])
                if _comfy.previews_enabled() and "student" in holder:
                    holder["preview"] = _preview(holder["student"], first, f"step {step}  loss {logs['loss']:.4f}")

            # ComfyUI runs nodes under torch.inference_mode(): training needs autograd, and tensors made
            # outside inference mode (the frames, cloned) for the student's parameters and losses
            try:
                with torch.inference_mode(False), torch.enable_grad():
                    student = train_student(teacher, frames.clone() * 2.0 - 1.0, steps=int(steps), seed=int(seed),
                                            device=model.device, batch_size=int(frames_per_step),
                                            refiner=bool(refiner), crop_size=int(crop_size), progress=progress,
                                            check_interrupt=_comfy.check_interrupt, checkpoint=path, on_log=on_log,
                                            log_every=PREVIEW_EVERY, on_start=lambda s: holder.update(student=s))
            finally:
                _forget_listing()
            text = (f"Saved {name} in {path.parent} ({student.meta.get('steps')} steps, loss "
                    f"{student.meta.get('loss')}; learnt from {learnt}).")
            return {"ui": {"text": [text]}, "result": (student, name)}


#: what Train VToonify Student says to do with a video whose sides are not multiples of 8
TRAIN_SIZE_ADVICE = ("crop or scale it to {w}x{h} first (Get Video Components, then Upscale Image or Image Crop, "
                     "then Create Video), or connect such frames to images instead")


def _training_frames(images, video, start: int, count: int) -> tuple[torch.Tensor, str]:
    """The frames Train VToonify Student learns from, ``[T, 3, H, W]`` in [0, 1] (a view of an IMAGE, or
    the chosen frames of a VIDEO decoded), and a few words on where they came from."""
    from ..vtoonify_core.errors import InputError

    if images is None and video is None:
        raise InputError("images", "nothing to learn from: connect images (IMAGE frames of the clip) or video (a "
                                   "VIDEO, e.g. Load Video).")
    if images is not None and video is not None:
        raise InputError("video", "images and video are both connected: connect only one of them (video to learn "
                                  "from video_frames frames of a clip from video_start, images for IMAGE frames).")
    if images is not None:
        frames = _comfy.image_to_frames(images, "images")
        return frames, f"{frames.shape[0]} frames"
    from ..vtoonify_core.video.files import probe_video
    from ..vtoonify_core.video.student import check_student_video, read_frames, to_unit
    from . import video_sources

    source, _ = video_sources.source_file(video)
    info = probe_video(source)
    check_student_video(info, "video", advice=TRAIN_SIZE_ADVICE)
    if start >= info.frames:
        raise InputError("video_start", f"the video has {info.frames} frames (0 to {info.frames - 1}): choose a "
                                        f"first frame below {info.frames}.")
    rgb = read_frames(source, start, min(count, info.frames - start) if count else 0, _comfy.check_interrupt)
    if rgb.shape[0] == 0:
        raise InputError("video_start", f"no frame could be decoded from frame {start} on: choose an earlier "
                                        f"video_start.")
    return to_unit(rgb), f"frames {start}-{start + rgb.shape[0] - 1} of the video"


def _preview(student, first: torch.Tensor, text: str):
    """The student's output on the first frame (Stage I), with ``text`` written on it, ``(H, W, 3)`` uint8."""
    import cv2

    was = student.training
    student.eval()
    with torch.no_grad():
        y = student.g(first.to(student.device, student.dtype)).float().clamp(-1, 1)
    student.train(was)
    img = ((y[0] + 1.0) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy().copy()
    cv2.putText(img, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return img


class LoadStudent:
    """Loads a student from models/vtoonify_students."""

    CATEGORY = "VToonify"
    FUNCTION = "load"
    RETURN_TYPES = (STUDENT,)
    RETURN_NAMES = ("vtoonify_student",)
    OUTPUT_TOOLTIPS = ("The student, for Stylize Frames (Student).",)
    DESCRIPTION = f"Loads a student written by Train VToonify Student (models/{FOLDER}/*.safetensors)."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "student_name": (student_choices(), {"tooltip": f"A student in models/{FOLDER}."}),
                "device": (list(loader.DEVICES), {"default": "auto", "tooltip": "auto = ComfyUI's device."}),
                "precision": (list(loader.PRECISIONS), {"default": "auto",
                                                        "tooltip": "auto = the device's fast precision."}),
            }
        }

    def load(self, student_name, device="auto", precision="auto"):
        from ..vtoonify_core.errors import InputError
        from ..vtoonify_core.student import load_student

        with _comfy.node_errors(LOAD_NAME):
            path = _comfy.folder_paths().get_full_path(FOLDER, student_name) if student_name else None
            if not path:
                raise InputError("student_name", f"'{student_name}' is not in models/{FOLDER}: train one with Train "
                                                 f"VToonify Student, or put its .safetensors file there.")
            dev = _comfy.resolve_device(device)
            return (load_student(path, dev, _comfy.resolve_dtype(precision, dev)),)


class StylizeFramesStudent:
    """Stylizes frames with a trained student (no face crop: the student learnt the frames it was given)."""

    CATEGORY = "VToonify"
    FUNCTION = "stylize"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Stylized frames, 4x the input size.",)
    DESCRIPTION = ("Runs a student on frames of the same kind it was trained on (same framing, sides multiples of "
                   "8), in clip order: the refiner reads the previous frames and output.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vtoonify_student": (STUDENT, {"tooltip": "From Load VToonify Student or Train VToonify Student."}),
                "images": inputs.images(tooltip="Consecutive frames, sides multiples of 8."),
                "frames_per_chunk": ("INT", {"default": 8, "min": 1, "max": 256,
                                       "tooltip": "Frames per chunk on the device."}),
                "refine": ("BOOLEAN", {"default": True, "tooltip": "Apply the refiner (when the student has one)."}),
            }
        }

    def stylize(self, vtoonify_student, images, frames_per_chunk=8, refine=True):
        with _comfy.node_errors(STYLIZE_NAME):
            student = require_student(vtoonify_student)
            frames = _comfy.image_to_frames(images, "images")
            hooks = _comfy.run_hooks(frames.shape[0])
            out, _ = student.stylize(frames * 2.0 - 1.0, batch_size=int(frames_per_chunk), refine=bool(refine),
                                     progress=hooks.progress, check_interrupt=hooks.check_interrupt,
                                     output_device=_comfy.output_device())
            return (_comfy.signed_to_image(out),)


#: what Stylize Video (Student) says to do with a video whose sides are not multiples of 8
VIDEO_SIZE_ADVICE = ("crop or scale it to {w}x{h} first (Get Video Components, then Upscale Image or Image Crop, "
                     "then Create Video), as the frames the student learnt were")


class StylizeVideoStudent:
    """Stylizes a ComfyUI VIDEO with a trained student into a new VIDEO, streamed chunk by chunk."""

    CATEGORY = "VToonify"
    FUNCTION = "stylize"
    OUTPUT_NODE = True
    RETURN_TYPES = ("VIDEO", "IMAGE")
    RETURN_NAMES = ("video", "previews")
    OUTPUT_TOOLTIPS = (
        ("The stylized video (an MP4 in ComfyUI's temp folder, 4x the frame, same frame count, frame rate and "
         "audio): connect Save Video to keep it, or Get Video Components for its frames."),
        "A few stylized frames spread over the video (first and last included).",
    )
    DESCRIPTION = ("Runs a student on a whole VIDEO (Load Video, Create Video or any VIDEO output) chunk by chunk: "
                   "a chunk is decoded, stylized and encoded, then the next, so memory stays flat however long the "
                   "clip is; the refiner reads the previous chunk's frames, so the result is the student on the "
                   "whole clip at once. Frame count, frame rate and audio are kept. The frames are used whole (no "
                   "face crop), framed as the student learnt them, sides multiples of 8; the output is 4x the "
                   "frame. Cancel stops between chunks and leaves no file. Save Video keeps the result.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vtoonify_student": (STUDENT, {"tooltip": "From Load VToonify Student or Train VToonify Student."}),
                "video": ("VIDEO", {"tooltip": "The clip to stylize: Load Video (streamed from its file, never loaded "
                                               "whole), Create Video, or any VIDEO output; sides multiples of 8."}),
                "frames_per_chunk": ("INT", {"default": 16, "min": 1, "max": 256,
                                             "tooltip": "Frames decoded, stylized and encoded at a time (the memory "
                                                        "bound, and the student's batch on the device)."}),
                "refine": ("BOOLEAN", {"default": True, "tooltip": "Apply the refiner (when the student has one)."}),
            },
            "optional": {
                "crf": ("INT", {"default": 18, "min": 0, "max": 51, "step": 1,
                                "tooltip": "Quality of the encoded H.264 video (lower is better; 0 = lossless "
                                           "YUV)."}),
                "preview_frames": ("INT", {"default": 4, "min": 1, "max": 64, "step": 1,
                                           "tooltip": "How many stylized frames to return as previews."}),
            },
        }

    def stylize(self, vtoonify_student, video, frames_per_chunk=16, refine=True, crf=18, preview_frames=4):
        import numpy as np

        from ..vtoonify_core.video.encode import EncodeSettings
        from ..vtoonify_core.video.files import preview_indices, probe_video
        from ..vtoonify_core.video.student import check_student_video, stylize_video_student
        from . import video_sources
        from .video import _safe_stem

        with _comfy.node_errors(VIDEO_NAME):
            student = require_student(vtoonify_student)
            source, stem = video_sources.source_file(video)
            info = probe_video(source)
            check_student_video(info, "video", advice=VIDEO_SIZE_ADVICE)
            encode = EncodeSettings(crf=int(crf))
            digest = _video_digest(student, source, bool(refine), int(frames_per_chunk), encode.resolve(".mp4"))
            name = f"{_safe_stem(stem)}_student_{digest}.mp4"
            wanted = set(preview_indices(info.frames, int(preview_frames)))
            kept: dict[int, Any] = {}  # the preview frames, by index, as they pass (uint8, before encoding)
            live: dict[str, Any] = {"frame": None, "shown": 0.0, "last": None}

            def on_frames(index: int, frames) -> None:
                for j in range(frames.shape[0]):
                    if index + j in wanted:
                        kept[index + j] = frames[j].copy()
                live["last"] = frames[-1]
                if time.monotonic() - live["shown"] >= PREVIEW_EVERY_S:
                    live["frame"] = frames[-1]

            def latest_frame():  # the latest stylized frame on the node, at most every PREVIEW_EVERY_S seconds
                frame, live["frame"] = live["frame"], None
                if frame is not None:
                    live["shown"] = time.monotonic()
                return frame

            hooks = _comfy.run_hooks(info.frames, preview=latest_frame)
            result = stylize_video_student(student, source, video_sources.temp_dir() / name,
                                           frames_per_chunk=int(frames_per_chunk), refine=bool(refine),
                                           encode=encode, progress=hooks.progress,
                                           check_interrupt=hooks.check_interrupt, on_frames=on_frames, info=info)
            # the source's frame count is counted by demuxing: should fewer frames decode, the last one stands in
            shown = [kept[i] for i in sorted(kept)] or [live["last"]]
            previews = torch.from_numpy(np.stack(shown)).float().div_(255.0)
            ui = {"images": [{"filename": name, "subfolder": video_sources.TEMP_SUBFOLDER, "type": "temp"}],
                  "animated": (True,)}
            return {"ui": ui, "result": (video_sources.video_output(result.output),
                                         previews.to(_comfy.output_device(), _comfy.output_dtype()))}


def _video_digest(student, source: Path, refine: bool, frames_per_chunk: int, encode: dict) -> str:
    """12 hex digits of everything that makes Stylize Video (Student)'s file: the student's weights,
    config and precision, the source file, and the settings. One output file per source and settings,
    so ComfyUI's cached VIDEO of another run never points at a file this run rewrote."""
    from ..vtoonify_core.video.jobs import file_fingerprint

    h = hashlib.sha256(repr((VIDEO_FORMAT, student.config.to_dict(), str(student.dtype), refine and student.has_refiner,
                             frames_per_chunk, sorted(encode.items()), file_fingerprint(source))).encode())
    for key, value in sorted(student.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


NODE_CLASS_MAPPINGS = {"VToonifyTrainStudent": TrainStudent, "VToonifyLoadStudent": LoadStudent,
                       "VToonifyStylizeFramesStudent": StylizeFramesStudent,
                       "VToonifyStylizeVideoStudent": StylizeVideoStudent}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyTrainStudent": TRAIN_NAME, "VToonifyLoadStudent": LOAD_NAME,
                              "VToonifyStylizeFramesStudent": STYLIZE_NAME, "VToonifyStylizeVideoStudent": VIDEO_NAME}
