"""A trained student (:class:`~vtoonify_core.student.Student`) and video files: the frames it learns
from, read from a file, and a clip streamed through it chunk by chunk (decode, stylize with the
student's state carried from chunk to chunk, encode), with the source's frame count, frame rate and
audio kept. Memory holds one chunk, whatever the clip's length.

The student is taken as it is (anything with ``stylize(frames, state, ...)``): this module does not
import :mod:`vtoonify_core.student`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..host_memory import reuse_host_memory
from ..types import MULTIPLE, PathLike, Progress
from .encode import EncodeSettings
from .files import VideoInfo, iter_frame_chunks, iter_frames, probe_video, write_video
from .segments import mux_source_audio, to_uint8_hwc

logger = logging.getLogger("vtoonify")

#: What to do about a video whose sides are not multiples of 8 (callers may give their own advice).
SIZE_ADVICE = "crop or scale it to sides that are multiples of {m} (e.g. {w}x{h}) first"


def check_student_video(info: VideoInfo, input_name: str = "video", advice: str = SIZE_ADVICE) -> None:
    """Refuse a video the student cannot take whole: sides not multiples of 8.

    ``advice`` may use ``{m}`` (8), ``{w}`` and ``{h}`` (the largest such size inside the frame).

    Raises:
        InputError: naming ``input_name``, the video's size and ``advice``.
    """
    w, h = info.width, info.height
    if w % MULTIPLE or h % MULTIPLE or w < MULTIPLE or h < MULTIPLE:
        fit = advice.format(m=MULTIPLE, w=max(MULTIPLE, w - w % MULTIPLE), h=max(MULTIPLE, h - h % MULTIPLE))
        raise InputError(input_name, f"the student needs frame sides that are multiples of {MULTIPLE}; this video "
                                     f"is {w}x{h}: {fit}.")


def to_unit(rgb: np.ndarray) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 -> ``[T, 3, H, W]`` float32 in [0, 1], as ComfyUI's IMAGE holds frames
    (so frames read here and the same frames given as an IMAGE are the same numbers)."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float().div_(255.0)


def read_frames(path: PathLike, start: int = 0, count: int = 0,
                check_interrupt: Callable[[], None] | None = None) -> np.ndarray:
    """Frames ``[start, start + count)`` of a video (``count`` 0: to the end) as ``(T, H, W, 3)`` uint8.

    The frames before ``start`` are decoded and dropped; only the chosen ones are kept.
    ``check_interrupt()`` runs every 16 frames.
    """
    frames = []
    for i, (_, rgb) in enumerate(iter_frames(path, int(start), count=int(count) or None)):
        if check_interrupt is not None and i % 16 == 0:
            check_interrupt()
        frames.append(rgb)
    if not frames:
        return np.zeros((0, 1, 1, 3), np.uint8)
    return np.stack(frames)


@dataclass(frozen=True)
class StudentVideoResult:
    """What :func:`stylize_video_student` wrote: the file, its frame count, the source's facts and
    the wall time."""

    output: Path
    frames: int
    info: VideoInfo
    seconds: float


def stylize_video_student(student: Any, source: PathLike, output: PathLike, *, frames_per_chunk: int = 16,
                          refine: bool = True, encode: EncodeSettings | None = None,
                          progress: Progress | None = None, check_interrupt: Callable[[], None] | None = None,
                          on_frames: Callable[[int, np.ndarray], None] | None = None,
                          info: VideoInfo | None = None) -> StudentVideoResult:
    """Stylize a video file with a student into ``output``, ``frames_per_chunk`` frames at a time.

    Each chunk is decoded, stylized with the state of the previous chunk (the refiner reads the
    previous frames and output, so the result is the student on the whole clip at once) and fed to
    the encoder (:func:`~vtoonify_core.video.files.write_video`); the source's audio streams are
    then copied in (:func:`~vtoonify_core.video.segments.mux_source_audio`). The output has every
    frame of the source at its average frame rate, 4x its size. It is written under temporary
    names and renamed when complete: an interrupted run leaves no output and no partial file.

    Args:
        student: a trained student (:class:`~vtoonify_core.student.Student`).
        source, output: video files; the output's codec follows its extension (:class:`EncodeSettings`).
        frames_per_chunk: frames decoded, stylized and encoded at a time (also the student's batch).
        refine: apply the refiner (when the student has one).
        encode: codec settings (default: H.264 CRF 18 for MP4/MOV/MKV, VP9 for WebM).
        progress: ``progress(frames_done, total)`` after each chunk; check_interrupt: raise to stop
            (before each chunk); on_frames: ``on_frames(index, (b, 4H, 4W, 3) uint8)`` with every
            stylized chunk (``index``: its first frame), before it is encoded.
        info: the source's :func:`probe_video` when the caller has it already.

    Raises:
        InputError: sides not multiples of 8, ``frames_per_chunk`` below 1.
        VideoError: unreadable source, unsupported output container or codec.
    """
    t0 = time.perf_counter()
    if isinstance(frames_per_chunk, bool) or int(frames_per_chunk) < 1:
        raise InputError("frames_per_chunk", f"must be at least 1, got {frames_per_chunk}.")
    chunk = int(frames_per_chunk)
    output = Path(output)
    enc = (encode or EncodeSettings()).resolve(output.suffix)
    info = info or probe_video(source)
    check_student_video(info)
    total = info.frames
    done = 0

    def stylized() -> Iterator[np.ndarray]:
        nonlocal done
        state = None

        def run(batch: list[np.ndarray]) -> np.ndarray:
            nonlocal state, done
            base = done

            def prog(d: int, _t: int) -> None:
                if progress is not None:
                    progress(min(base + d, total), total)

            x = to_unit(np.stack(batch)) * 2.0 - 1.0
            y, state = student.stylize(x, state, batch_size=chunk, refine=bool(refine), progress=prog,
                                       check_interrupt=check_interrupt, output_device="cpu")
            out = to_uint8_hwc(y)
            if on_frames is not None:
                on_frames(base, out)
            done += out.shape[0]
            return out

        for batch in iter_frame_chunks(source, chunk):
            yield from run(batch)

    video_only = output.with_name(f".{output.stem}.video{output.suffix}")
    try:
        if progress is not None:
            progress(0, total)
        with reuse_host_memory():  # one scope for the clip: the chunks reuse the same heap blocks
            write_video(video_only, stylized(), info.rate, codec=enc["codec"], pix_fmt=enc["pix_fmt"],
                        options=enc["options"], full_range=info.full_range)
        if check_interrupt is not None:
            check_interrupt()
        mux_source_audio(video_only, source, output)
    finally:
        video_only.unlink(missing_ok=True)
    logger.info("VToonify: the student stylized %d frames of %s into %s", done, source, output)
    return StudentVideoResult(output, done, info, time.perf_counter() - t0)
