"""The streaming run: decode a chunk, stylize it, encode it, so memory stays flat on clips of any
length; file to file for videos and images, resumable after an interruption.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from ..faces.crop import apply_crop
from ..models.bundle import VToonifyModel
from ..pipeline.clip import stylize_clip
from ..pipeline.stylize import stylize
from ..styles.codes import check_style, extract_style, style_from_image
from ..types import DEFAULT_FACE_PADDING, PathLike, Progress, StyleCode
from .encode import EncodeSettings
from .files import iter_frames, read_image, write_image
from .jobs import DEFAULT_CHUNK_SIZE, VideoJob, check_settings, frame_tensor, prepare_job
from .segments import SegmentWriter, mux_job, to_uint8_hwc

logger = logging.getLogger("vtoonify")


def stylize_chunk(model: VToonifyModel, job: VideoJob, frames: np.ndarray, *, batch_size: int = 4,
                  sink: Callable[[int, np.ndarray], None], progress: Optional[Callable[[int], None]] = None,
                  check_interrupt: Optional[Callable[[], None]] = None,
                  on_oom: Optional[Callable[[int], None]] = None, start: int = 0) -> None:
    """Stylize ``(n, H, W, 3)`` uint8 frames of a job, ``batch_size`` at a time; ``start`` is the video
    frame of ``frames[0]`` (keyframed styles follow the video's frame numbers).

    Face mode: every frame is cropped with the job's geometry (:func:`~vtoonify_core.faces.crop.apply_crop`,
    the official rule) and :func:`~vtoonify_core.pipeline.stylize` runs on the crops; whole mode:
    :func:`~vtoonify_core.pipeline.stylize_clip` pads to multiples of 8 and crops back. Each
    finished batch goes to ``sink(start, (b, 4h, 4w, 3) uint8)`` at once; ``progress(frames)``
    after each batch.
    """
    n = int(frames.shape[0])
    if n == 0:
        return

    def emit(i: int, y: torch.Tensor) -> None:
        sink(i, to_uint8_hwc(y))

    def prog(done: int, total: int) -> None:
        if progress is not None:
            progress(done)

    if job.crop_mode == "face":
        crops = np.stack([apply_crop(f, job.geometry) for f in frames])
        x = torch.from_numpy(crops).permute(0, 3, 1, 2)
        stylize(model, x, job.style, job.d_s, batch_size=int(batch_size), progress=prog,
                check_interrupt=check_interrupt, on_oom=on_oom, sink=emit, frame_offset=start)
    else:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        stylize_clip(model, x, job.style, job.d_s, crop_mode="whole", batch_size=int(batch_size), progress=prog,
                     check_interrupt=check_interrupt, on_oom=on_oom, sink=emit, frame_offset=start)


def encode_chunk(model: VToonifyModel, job: VideoJob, k: int, frames: Sequence[np.ndarray], pts: Sequence[int],
                 path: PathLike, *, batch_size: int = 4, progress: Optional[Callable[[int], None]] = None,
                 check_interrupt: Optional[Callable[[], None]] = None,
                 on_oom: Optional[Callable[[int], None]] = None,
                 on_frames: Optional[Callable[[int, np.ndarray], None]] = None) -> tuple[int, int]:
    """Stylize decoded frames of chunk ``k`` and encode them into the segment file ``path``.

    The file is written under a temporary name and renamed when complete, so a present segment
    is always whole. ``on_frames(index, (b, H, W, 3) uint8)`` sees every stylized batch (index of
    its first frame in the video), e.g. for previews. Returns ``(frames written, timestamp offset)``.
    """
    path = Path(path)
    if len(frames) == 0:
        return 0, 0
    tmp = path.with_name(path.name + ".tmp")
    offset = int(pts[0])
    arr = np.stack(frames)
    writer = SegmentWriter(tmp, job, offset)
    try:
        def sink(i: int, batch: np.ndarray) -> None:
            for j in range(batch.shape[0]):
                writer.write(batch[j], pts[i + j])
            if on_frames is not None:
                on_frames(job.chunks[k].start + i, batch)

        stylize_chunk(model, job, arr, batch_size=batch_size, sink=sink, progress=progress,
                      check_interrupt=check_interrupt, on_oom=on_oom, start=job.chunks[k].start)
        written = writer.close()
    except BaseException:
        writer.abort()
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return written, offset


def decode_chunk(job: VideoJob, k: int) -> tuple[list[np.ndarray], list[int]]:
    """Decode the frames of chunk ``k`` alone (seeking to it): ``(frames, pts)``."""
    c = job.chunks[k]
    frames, pts = [], []
    stop = job.next_chunk_pts(k) if c.pts is not None else None
    for p, rgb in iter_frames(job.source, c.start, c.pts, stop, c.frames):
        frames.append(rgb)
        pts.append(p)
    return frames, pts


def process_chunk(model: VToonifyModel, job: VideoJob, k: int, path: Optional[PathLike] = None, *,
                  batch_size: int = 4, progress: Optional[Callable[[int], None]] = None,
                  check_interrupt: Optional[Callable[[], None]] = None,
                  on_oom: Optional[Callable[[int], None]] = None) -> tuple[int, int]:
    """Decode, stylize and encode chunk ``k`` on its own (the unit of work of a distributed run).

    Writes the segment to ``path`` (default: the job's segment file) and returns
    ``(frames written, timestamp offset)``; the caller records it with :meth:`VideoJob.mark_done`.
    """
    frames, pts = decode_chunk(job, k)
    return encode_chunk(model, job, k, frames, pts, path if path is not None else job.segment_path(k),
                        batch_size=batch_size, progress=progress, check_interrupt=check_interrupt, on_oom=on_oom)


def _iter_pending_chunks(job: VideoJob) -> Iterator[tuple[int, list[np.ndarray], list[int]]]:
    """Decode the source once from the first unfinished chunk, grouping frames by chunk.

    With timestamps a frame belongs to the chunk whose first timestamp is the last one at or
    before its own (as :func:`decode_chunk` decides); without, chunks are counted off.
    Frames of finished chunks are decoded and dropped.
    """
    pending = job.pending
    if not pending:
        return
    chunks = job.chunks
    c0 = chunks[pending[0]]
    by_pts = all(c.pts is not None for c in chunks)
    last = len(chunks) - 1
    k, assigned = pending[0], 0
    frames: list[np.ndarray] = []
    pts: list[int] = []
    for p, rgb in iter_frames(job.source, c0.start, c0.pts if by_pts else None):
        while k < last:
            full = p >= chunks[k + 1].pts if by_pts else assigned >= chunks[k].frames
            if not full:
                break
            if not chunks[k].done:
                yield k, frames, pts
            frames, pts, assigned = [], [], 0
            k += 1
        assigned += 1
        if not chunks[k].done:
            frames.append(rgb)
            pts.append(p)
    while k <= last:
        if not chunks[k].done:
            yield k, frames, pts
        frames, pts = [], []
        k += 1


# ----------------------------------------------------------------------------------------------
# the whole job


@dataclass(frozen=True)
class VideoResult:
    """What :func:`stylize_video` did.

    Attributes:
        output: the written file.
        frames: frames in the output.
        chunks: chunks of the job; ``chunks_run``: how many this call stylized (the rest were
            finished by an earlier, interrupted run).
        seconds: wall time of this call.
        job: the job (geometry, style code, settings).
    """

    output: Path
    frames: int
    chunks: int
    chunks_run: int
    seconds: float
    job: VideoJob

    @property
    def resumed(self) -> bool:
        return self.chunks_run < self.chunks


def run_job(model: VToonifyModel, job: VideoJob, *, batch_size: int = 4, progress: Optional[Progress] = None,
            check_interrupt: Optional[Callable[[], None]] = None, on_oom: Optional[Callable[[int], None]] = None,
            on_chunk: Optional[Callable[[int, VideoJob], None]] = None,
            on_frames: Optional[Callable[[int, np.ndarray], None]] = None) -> int:
    """Stylize every unfinished chunk of ``job`` in order, decoding the source once; returns chunks run.

    ``check_interrupt()`` runs before every chunk and every batch (raise to stop: finished chunks
    stay recorded and a rerun continues after them); ``on_chunk(k, job)`` after chunk ``k`` is
    recorded; ``progress(frames_done, total)`` after every batch; ``on_frames(index, frames)``
    with every stylized batch (uint8, before ``progress``).
    """
    check_settings(job.crop_mode, job.chunk_size, batch_size, job.face_padding)
    check_style(model, job.style, allow_schedule=True)
    total = job.info.frames
    base = job.frames_done
    if progress is not None:
        progress(base, total)
    run = 0
    for k, frames, pts in _iter_pending_chunks(job):
        if check_interrupt is not None:
            check_interrupt()

        def prog(done: int, _base=base) -> None:
            if progress is not None:
                progress(min(_base + done, total), total)

        written, offset = encode_chunk(model, job, k, frames, pts, job.segment_path(k), batch_size=batch_size,
                                       progress=prog, check_interrupt=check_interrupt, on_oom=on_oom,
                                       on_frames=on_frames)
        job.mark_done(k, written, offset)
        base += job.chunks[k].frames
        run += 1
        logger.info("VToonify: chunk %d/%d of %s done (%d frames)", k + 1, len(job.chunks), job.source, written)
        if on_chunk is not None:
            on_chunk(k, job)
    return run


def finish_job(job: VideoJob, keep_work: bool = False) -> Path:
    """Mux the finished job into its output and (unless ``keep_work``) delete the work folder."""
    out = mux_job(job)
    if not keep_work:
        shutil.rmtree(job.work_path, ignore_errors=True)
    return out


def stylize_video(model: VToonifyModel, source: PathLike, output: PathLike, style: Optional[StyleCode] = None,
                  d_s: float = 0.5, *, style_id: int = 0, color_transfer: bool = False, crop_mode: str = "face",
                  face_padding: int = DEFAULT_FACE_PADDING, batch_size: int = 4,
                  chunk_size: int = DEFAULT_CHUNK_SIZE, encode: Optional[EncodeSettings] = None,
                  work_dir: Optional[PathLike] = None, resume: bool = True, keep_work: bool = False,
                  progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None,
                  on_oom: Optional[Callable[[int], None]] = None,
                  on_chunk: Optional[Callable[[int, VideoJob], None]] = None,
                  on_frames: Optional[Callable[[int, np.ndarray], None]] = None, backend="dlib", pick: str = "score",
                  index: int = 0) -> VideoResult:
    """Stylize a video file into another, chunk by chunk, resuming an interrupted run.

    Memory holds one chunk of decoded frames (``chunk_size`` frames of the source) and one batch
    of stylized frames, whatever the video's length. See the module docstring for the layout.

    Args:
        model: the VToonify bundle (:func:`~vtoonify_core.models.load_model`).
        source, output: video files; the output container follows its extension (:data:`CONTAINERS`).
        style: a style code; ``None``: from the first frame with a face (``style_id`` and
            ``color_transfer`` choose the exemplar of VToonify-D).
        d_s: style degree (VToonify-D).
        crop_mode: ``'face'`` (official crop from the first frame with a face; the output is 4x
            the crop) or ``'whole'`` (the whole frame; the output is 4x the frame).
        face_padding: face mode: pixels kept around the eye centre after rescaling (official 200).
        batch_size: frames per forward pass (halved on out-of-memory errors).
        chunk_size: frames per segment (the unit of resumption and of the memory bound).
        encode: codec settings (default: H.264 CRF 18 for MP4/MOV/MKV, VP9 for WebM).
        work_dir: where segments and the manifest go (default ``.<output name>.vtoonify``).
        resume: continue a matching unfinished job (``False``: start over).
        keep_work: keep the work folder after the mux.
        progress: ``progress(frames_done, total)``; check_interrupt: raise to stop (before every
            chunk and batch); on_chunk: ``on_chunk(k, job)`` after each finished chunk;
            on_frames: ``on_frames(index, (b, H, W, 3) uint8)`` with every stylized batch.
        backend, pick, index: the face detector and which face (:func:`~vtoonify_core.faces.pick_face`)
            sets the crop and the style code.

    Raises:
        VideoError, InputError, NoFaceError: see :func:`prepare_job`.
    """
    t0 = time.perf_counter()
    check_settings(crop_mode, chunk_size, batch_size, face_padding)
    job = prepare_job(model, source, output, style, d_s, style_id=style_id, color_transfer=color_transfer,
                      crop_mode=crop_mode, face_padding=face_padding, chunk_size=chunk_size, encode=encode,
                      work_dir=work_dir, resume=resume, backend=backend, check_interrupt=check_interrupt, pick=pick,
                      index=index)
    run = run_job(model, job, batch_size=batch_size, progress=progress, check_interrupt=check_interrupt,
                  on_oom=on_oom, on_chunk=on_chunk, on_frames=on_frames)
    if check_interrupt is not None:
        check_interrupt()
    out = finish_job(job, keep_work=keep_work)
    frames = sum(c.written for c in job.chunks)
    return VideoResult(out, frames, len(job.chunks), run, time.perf_counter() - t0, job)


def stylize_image_file(model: VToonifyModel, source: PathLike, output: PathLike, style: Optional[StyleCode] = None,
                       d_s: float = 0.5, *, style_id: int = 0, color_transfer: bool = False, crop_mode: str = "face",
                       face_padding: int = DEFAULT_FACE_PADDING, batch_size: int = 1, backend="dlib",
                       progress: Optional[Progress] = None) -> np.ndarray:
    """Stylize one image file into another (the style code from the image itself unless given).

    Returns the written ``(4h, 4w, 3)`` uint8 image (4x the face crop, or 4x the image).
    """
    check_settings(crop_mode, 1, batch_size, face_padding)
    rgb = read_image(source)
    if style is None:
        if model.backbone == "dualstylegan" and color_transfer:
            style = extract_style(model, None, style_id, True)
        else:
            style, _ = style_from_image(model, rgb, style_id, color_transfer, backend=backend)
    out, _ = stylize_clip(model, frame_tensor(rgb), style, d_s, crop_mode=crop_mode, face_padding=face_padding,
                          batch_size=batch_size, progress=progress, backend=backend)
    img = to_uint8_hwc(out)[0]
    write_image(output, img)
    return img
