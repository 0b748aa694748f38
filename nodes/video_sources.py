"""ComfyUI's VIDEO objects as files the streaming video job reads, and its result as a VIDEO.

A VIDEO from Load Video is a file: its path is used as it is (nothing is decoded or copied). One
held in memory (Create Video's frames and audio, a trimmed or uploaded clip) is written once,
chunk by chunk, to a lossless file in ComfyUI's temp folder, named by its content so that a
cancelled run queued again finds the same file and resumes.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from . import _comfy

logger = logging.getLogger("vtoonify")

#: Sub-folder of ComfyUI's temp folder for the stylized videos and the in-memory sources.
TEMP_SUBFOLDER = "vtoonify"
#: Frames of an in-memory clip converted to uint8 at a time when it is written out.
CHUNK = 16
#: Lossless intermediate for in-memory clips: H.264 in RGB at qp 0 (frame rate kept exactly in MP4).
LOSSLESS = {"codec": "libx264rgb", "pix_fmt": "rgb24", "options": {"qp": "0", "preset": "veryfast"}}
_CONTAINER_EXT = {"mov": ".mp4", "mp4": ".mp4", "matroska": ".mkv", "webm": ".webm", "avi": ".avi", "gif": ".gif"}


def temp_dir() -> Path:
    """``<ComfyUI temp>/vtoonify``, created."""
    folder = Path(_comfy.folder_paths().get_temp_directory()) / TEMP_SUBFOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _trim_window(video: Any) -> tuple[float, float]:
    get = getattr(video, "get_active_trim_window", None)
    return tuple(float(v) for v in get()) if callable(get) else (0.0, 0.0)  # type: ignore[return-value]


def _is_in_memory(video: Any) -> bool:
    """A VIDEO that holds decoded frames (Create Video's ``VideoFromComponents``) rather than a file."""
    return type(video).__name__ == "VideoFromComponents" or not callable(getattr(video, "get_stream_source", None))


def source_file(video: Any, input_name: str = "video") -> tuple[Path, str]:
    """A file holding exactly the frames, frame rate and audio of ``video``, and a short name for it
    (the source file's stem, for output names).

    * a file-backed VIDEO without a trim window: its own file (not copied);
    * an uploaded clip held as bytes: copied once into the temp folder (named by its SHA-256);
    * a trimmed clip: ComfyUI's own ``save_to`` writes the window (streamed, frame by frame);
    * frames in memory: :func:`write_components` (lossless, in chunks).

    Raises:
        InputError: not a VIDEO, or a VIDEO without frames.
    """
    from ..vtoonify_core.errors import InputError

    if video is None or not callable(getattr(video, "get_components", None)):
        raise InputError(input_name, f"expected a VIDEO (from Load Video or Create Video), got "
                                     f"{type(video).__name__}.")
    if _is_in_memory(video):
        return write_components(video.get_components(), input_name), "video"
    source = video.get_stream_source()
    window = _trim_window(video)
    if isinstance(source, (str, os.PathLike)) and window == (0.0, 0.0):
        path = Path(source)
        if not path.is_file():
            raise InputError(input_name, f"the video file {path.name!r} no longer exists: load it again.")
        return path, path.stem
    if window == (0.0, 0.0) and isinstance(source, io.IOBase):
        return _copy_stream(source, video), "video"
    # a trimmed clip: ComfyUI's transcode of the window, named by the file and the window
    digest = hashlib.sha256(repr((_source_key(source), window)).encode()).hexdigest()[:20]
    out = temp_dir() / f"source_{digest}.mp4"
    if not out.is_file():
        tmp = out.with_name(f".{out.name}.partial.mp4")
        try:
            video.save_to(str(tmp), crf=0)
        except TypeError:  # a VIDEO type without the crf option
            video.save_to(str(tmp))
        os.replace(tmp, out)
    stem = Path(source).stem if isinstance(source, (str, os.PathLike)) else "video"
    return out, stem


def _source_key(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        st = os.stat(source)
        return f"{os.path.realpath(source)}:{st.st_size}:{st.st_mtime_ns}"
    h = hashlib.sha256()
    source.seek(0)
    for block in iter(lambda: source.read(1 << 20), b""):
        h.update(block)
    source.seek(0)
    return h.hexdigest()


def _copy_stream(stream: Any, video: Any) -> Path:
    """Bytes of an uploaded clip into ``temp/vtoonify/source_<sha>.<ext>`` (once)."""
    digest = _source_key(stream)[:20]
    try:
        fmt = str(video.get_container_format()).split(",")[0]
    except Exception:  # noqa: BLE001 - the extension is only a hint for players
        fmt = ""
    out = temp_dir() / f"source_{digest}{_CONTAINER_EXT.get(fmt, '.mkv')}"
    if not out.is_file():
        tmp = out.with_name(f".{out.name}.partial")
        stream.seek(0)
        with open(tmp, "wb") as f:
            shutil.copyfileobj(stream, f, 1 << 20)
        stream.seek(0)
        os.replace(tmp, out)
    return out


def exact_rate(rate: Any) -> Fraction:
    """A frame rate as a small exact fraction (Create Video turns its float into a binary fraction:
    ``Fraction(29.97)`` has a 50-digit denominator; 30000/1001 and 24 stay as they are)."""
    r = Fraction(rate).limit_denominator(1001)
    return r if r > 0 else Fraction(1)


def _frames_u8(images, chunk: int = CHUNK) -> Iterator[np.ndarray]:
    """``(H, W, 3)`` uint8 frames of an IMAGE batch, converted ``chunk`` frames at a time."""
    import torch

    for s in range(0, int(images.shape[0]), chunk):
        x = images[s:s + chunk, ..., :3]
        if x.is_floating_point():
            x = (x.float().clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)
        if x.shape[-1] == 1:
            x = x.expand(*x.shape[:-1], 3)
        yield from x.cpu().numpy()


def _content_digest(images, audio: Optional[np.ndarray], sample_rate: int, rate: Fraction) -> str:
    h = hashlib.sha256(repr((tuple(images.shape), str(images.dtype), rate, sample_rate)).encode())
    for s in range(0, int(images.shape[0]), CHUNK):
        h.update(images[s:s + CHUNK].detach().cpu().contiguous().numpy().tobytes())
    if audio is not None:
        h.update(audio.tobytes())
    return h.hexdigest()[:20]


def write_components(components: Any, input_name: str = "video") -> Path:
    """Frames, frame rate and audio of a VIDEO held in memory as a lossless file in the temp folder,
    written ``CHUNK`` frames at a time; an existing file with the same content is reused.

    The audio is cut to the clip's length (as ComfyUI's own writer does) and encoded once as AAC.

    Raises:
        InputError: no frames, or an image batch that is not ``[N, H, W, C]``.
    """
    from ..vtoonify_core.errors import InputError
    from ..vtoonify_core.video.files import write_video

    images = components.images
    if images is None or images.ndim != 4 or int(images.shape[0]) == 0:
        shape = None if images is None else tuple(images.shape)
        raise InputError(input_name, f"the VIDEO has no frames (images {shape}): connect a clip with at least one "
                                     f"frame.")
    rate = exact_rate(components.frame_rate)
    audio, sample_rate = None, 44100
    if components.audio is not None:
        sample_rate = int(components.audio["sample_rate"])
        wave = components.audio["waveform"][0].float().cpu().numpy()
        wave = wave[:, :math.ceil(sample_rate / rate * int(images.shape[0]))]
        if wave.shape[1] > 0:
            audio = np.ascontiguousarray(wave[:2] if wave.shape[0] not in (1, 2, 6) else wave)
    out = temp_dir() / f"frames_{_content_digest(images, audio, sample_rate, rate)}.mp4"
    if out.is_file():
        return out
    tmp = out.with_name(f".{out.name}.partial.mp4")
    write_video(tmp, _frames_u8(images), rate, codec=LOSSLESS["codec"], pix_fmt=LOSSLESS["pix_fmt"],
                options=LOSSLESS["options"], audio=audio, sample_rate=sample_rate)
    os.replace(tmp, out)
    logger.info("VToonify: wrote the in-memory clip (%d frames, %s fps) to %s", int(images.shape[0]), rate, out)
    return out


def video_output(path: Path) -> Any:
    """ComfyUI's VIDEO for a written file (``VideoFromFile``), which Save Video, Get Video Components
    and the preview take."""
    from comfy_api.latest import InputImpl

    return InputImpl.VideoFromFile(str(path))
