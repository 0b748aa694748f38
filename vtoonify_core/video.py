"""Streaming file-to-file VToonify: decode a chunk, stylize it, encode it, so memory stays flat.

A ComfyUI IMAGE batch holds every frame in memory (1,000 frames at 1024x1024 in float32 are 12 GB
before the 4x output), and the official scripts read the whole video before they start. Here a
video is processed ``chunk_size`` frames at a time:

1. *prepare* (:func:`prepare_job`): probe the file, list its frames (a demux pass, no decoding),
   find the first frame with a face, compute the official crop geometry from it (``crop_mode
   'face'``, as :func:`~vtoonify_core.pipeline.plan_clip` does) and the style code (unless one is
   given), once per video;
2. *chunks* (:func:`run_job`): decode ``chunk_size`` frames, crop them (face mode) or pad them
   (whole mode), stylize them ``batch_size`` at a time and encode every finished frame at once
   into a numbered segment file ``chunk_00000.mp4``; a finished segment is recorded in
   ``manifest.json``;
3. *mux* (:func:`mux_job`): copy the segments' packets (no re-encoding) and the source's audio
   packets, interleaved by time, into the output file.

Resuming: the work folder (default ``.<output name>.vtoonify/`` beside the output) holds
``manifest.json`` with a hash of every setting that changes the result (source file, model files,
style, style degree, crop, chunk size, codec), the crop geometry and the style code
(``style.npy``). A rerun with the same settings reads them back and continues after the last
finished chunk; nothing finished is redone and the result is the same as an uninterrupted run
(segments are encoded independently, so even a lossy codec gives identical bytes). Different
settings start over. The folder is removed after a successful mux (``keep_work=True`` keeps it).

Library: PyAV (``av``), not OpenCV. PyAV gives exact timestamps and frame rates (rational, e.g.
30000/1001, frame by frame), lets the audio packets be copied untouched into the output, reads and
writes the colour range/matrix tags and converts YUV<->RGB with them, and exposes the display
rotation of phone videos. OpenCV's ``VideoCapture``/``VideoWriter`` drop audio, round the frame rate
to a float, ignore the colour range and cannot copy packets.

Timing, audio and colour:

* each output frame keeps its source presentation timestamp (time base of the source stream), so
  the frame rate, variable frame rates and the sync with audio are unchanged;
* every audio stream is copied packet for packet; when the output container cannot hold its codec
  (e.g. AAC in WebM) it is re-encoded (AAC, or Opus for WebM);
* frames are decoded to RGB with the stream's colour matrix and range, and encoded back with the
  same matrix, range, primaries and transfer tags (full-range sources stay full range);
* frames with a display rotation (phone videos) are turned upright before stylization; the output
  has no rotation.

Output containers: ``.mp4``, ``.m4v``, ``.mov``, ``.mkv`` (H.264 by default) and ``.webm`` (VP9).
Segments are always MP4 files in the output codec (H.264, H.265, VP9, AV1, FFV1, MPEG-4 Part 2).

Everything is pure Python/PyTorch: no ComfyUI import (the node in ``nodes/video.py`` wraps it).
"""
from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .crop import CropGeometry, apply_crop
from .pipeline import (DEFAULT_FACE_PADDING, InputError, StyleCode, VToonifyModel, check_style, plan_clip,
                       stylize, stylize_clip, style_from_image)

logger = logging.getLogger("vtoonify")

PathLike = Union[str, Path]
Progress = Callable[[int, int], None]

#: Version of the work-folder layout; a manifest of another version is not resumed.
FORMAT = "vtoonify-video/1"
#: Frames per chunk (one segment file, the unit of resumption).
DEFAULT_CHUNK_SIZE = 32
#: Output containers and their default video codec.
CONTAINERS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}
#: Extensions read as still images by :func:`is_image_path` (everything else is opened as a video).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Default encoder settings per codec: pixel format and codec options.
CODEC_DEFAULTS = {
    "libx264": ("yuv420p", {"crf": "18", "preset": "medium"}),
    "libx265": ("yuv420p", {"crf": "20", "preset": "medium"}),
    "libvpx-vp9": ("yuv420p", {"crf": "30", "b": "0"}),
    "libaom-av1": ("yuv420p", {"crf": "30", "cpu-used": "6"}),
    "libsvtav1": ("yuv420p", {"crf": "35"}),
    "ffv1": ("yuv444p", {"level": "3"}),
    "mpeg4": ("yuv420p", {"qscale": "3"}),
}
#: The option that sets the quality of each codec (``crf=`` in :class:`EncodeSettings`).
QUALITY_OPTION = {"libx264": "crf", "libx265": "crf", "libvpx-vp9": "crf", "libaom-av1": "crf",
                  "libsvtav1": "crf", "mpeg4": "qscale"}
#: Audio codec used when the output container cannot hold the source's audio codec.
AUDIO_FALLBACK = {".webm": ("libopus", 48000)}
SEGMENT_FORMAT = "mp4"
MANIFEST = "manifest.json"
STYLE_FILE = "style.npy"

# AVColorSpace values -> the names swscale's reformat accepts (unspecified/others: swscale default).
_SWS_COLORSPACE = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
_RGB_FORMATS = ("rgb24", "bgr24", "rgba", "bgra", "argb", "abgr", "rgb0", "bgr0", "0rgb", "0bgr", "gbrp")


class VideoError(ValueError):
    """A video (or image) file that cannot be read or written; the message says which and why."""


def _require_av():
    try:
        import av
    except ImportError:
        raise ImportError("reading and writing video files needs PyAV: pip install av") from None
    return av


# ----------------------------------------------------------------------------------------------
# probing and decoding


@dataclass(frozen=True)
class AudioInfo:
    """One audio stream of a source: its index, codec, sample rate and channel count."""

    index: int
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` finds in a file.

    Attributes:
        path: the file.
        width, height: frame size as stylized (after the display rotation is applied).
        frames: number of frames (counted by demuxing, not the container's estimate).
        rate: average frame rate, exact (e.g. ``Fraction(30000, 1001)``).
        time_base: time base of the video stream; timestamps are kept in it.
        codec, pix_fmt: codec and pixel format of the video stream.
        color_range, colorspace, color_primaries, color_trc: the stream's colour tags (FFmpeg enum
            values; 0 or 2 = unspecified).
        rotation: display rotation (degrees counter-clockwise) applied to every frame.
        audio: the audio streams.
        duration: seconds (from the frame timestamps), or ``None`` when unknown.
    """

    path: str
    width: int
    height: int
    frames: int
    rate: Fraction
    time_base: Fraction
    codec: str
    pix_fmt: str
    color_range: int = 0
    colorspace: int = 2
    color_primaries: int = 2
    color_trc: int = 2
    rotation: int = 0
    audio: tuple[AudioInfo, ...] = ()
    duration: Optional[float] = None

    @property
    def full_range(self) -> bool:
        """Whether the video uses the full (JPEG, 0..255) YUV range."""
        return self.color_range == 2

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["rate"], d["time_base"] = str(self.rate), str(self.time_base)
        d["audio"] = [dataclasses.asdict(a) for a in self.audio]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "VideoInfo":
        d = dict(d)
        d["rate"], d["time_base"] = Fraction(d["rate"]), Fraction(d["time_base"])
        d["audio"] = tuple(AudioInfo(**a) for a in d.get("audio", ()))
        return cls(**d)


def is_image_path(path: PathLike) -> bool:
    """Whether ``path`` names a still image (by its extension, see :data:`IMAGE_EXTENSIONS`)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _open_input(path: PathLike):
    av = _require_av()
    p = Path(path)
    if not p.exists():
        raise VideoError(f"video file not found: {p}")
    if not p.is_file():
        raise VideoError(f"not a file: {p}")
    try:
        container = av.open(str(p), "r")
    except av.FFmpegError as exc:
        raise VideoError(f"cannot read video {p}: {exc} (not a video file, or a format FFmpeg cannot open)") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p} has no video stream")
    return container


def _video_stream(container):
    vs = container.streams.video[0]
    vs.thread_type = "AUTO"
    return vs


def _rotation(frame) -> int:
    rot = getattr(frame, "rotation", 0) or 0
    return int(round(float(rot) / 90.0)) % 4 * 90


def frame_to_rgb(frame) -> np.ndarray:
    """A decoded PyAV video frame as ``(H, W, 3)`` uint8 RGB.

    YUV frames are converted with their own colour matrix and range (a full-range frame is not
    squeezed as if it were limited range); a display rotation is applied so the frame is upright.
    """
    kwargs: dict[str, Any] = {"format": "rgb24"}
    if frame.format.name not in _RGB_FORMATS:
        cs = _SWS_COLORSPACE.get(int(frame.colorspace or 2))
        if cs is not None:
            kwargs["src_colorspace"] = cs
        if int(frame.color_range or 0) in (1, 2):
            kwargs["src_color_range"] = int(frame.color_range)
        kwargs["dst_color_range"] = 2
    rgb = frame.reformat(**kwargs).to_ndarray()
    rot = _rotation(frame)
    if rot:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=rot // 90))
    return rgb


def _frame_index(path: PathLike) -> tuple[int, Optional[list[int]]]:
    """Count the video frames by demuxing (no decoding); their timestamps when all are known and unique."""
    av = _require_av()
    container = _open_input(path)
    try:
        vs = container.streams.video[0]
        pts: list[Optional[int]] = []
        try:
            for packet in container.demux(vs):
                if packet.size == 0 or packet.is_discard:
                    continue
                pts.append(packet.pts)
        except av.FFmpegError as exc:
            raise VideoError(f"cannot read video {path}: {exc}") from None
    finally:
        container.close()
    if any(p is None for p in pts) or len(set(pts)) != len(pts):
        return len(pts), None
    return len(pts), sorted(pts)  # type: ignore[arg-type]


def probe_video(path: PathLike) -> VideoInfo:
    """Read a video's size, exact frame rate, frame count, colour tags and audio streams.

    The frames are counted by demuxing the whole file (fast, nothing is decoded); the first frame
    is decoded for its size after rotation and its colour tags.

    Raises:
        VideoError: missing, unreadable or empty file, or no video stream.
    """
    info, _ = _probe(path)
    return info


def _probe(path: PathLike) -> tuple[VideoInfo, Optional[list[int]]]:
    av = _require_av()
    n, index = _frame_index(path)
    if n == 0:
        raise VideoError(f"{path} has no video frames")
    container = _open_input(path)
    try:
        vs = _video_stream(container)
        try:
            first = next(container.decode(vs), None)
        except av.FFmpegError as exc:
            raise VideoError(f"cannot decode video {path}: {exc}") from None
        if first is None:
            raise VideoError(f"{path}: no frame could be decoded")
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        if not rate:
            rate = Fraction(25)
            logger.warning("VToonify: %s has no frame rate; assuming 25 fps", path)
        tb = vs.time_base if vs.time_base else Fraction(1, 90000)
        rot = _rotation(first)
        w, h = (first.height, first.width) if rot in (90, 270) else (first.width, first.height)
        cc = vs.codec_context
        audio = tuple(AudioInfo(s.index, s.codec_context.name, int(s.codec_context.sample_rate or 0),
                                int(getattr(s.codec_context, "channels", 0) or s.codec_context.layout.nb_channels))
                      for s in container.streams.audio)
        duration = None
        if index is not None and len(index) > 1:
            duration = float((index[-1] - index[0]) * tb + 1 / Fraction(rate))
        elif vs.duration is not None:
            duration = float(vs.duration * tb)
        info = VideoInfo(
            path=str(path), width=int(w), height=int(h), frames=n, rate=Fraction(rate), time_base=Fraction(tb),
            codec=cc.name, pix_fmt=first.format.name,
            color_range=int(first.color_range or cc.color_range or 0),
            colorspace=int(first.colorspace or cc.colorspace or 2),
            color_primaries=int(first.color_primaries or cc.color_primaries or 2),
            color_trc=int(first.color_trc or cc.color_trc or 2),
            rotation=rot, audio=audio, duration=duration)
    finally:
        container.close()
    return info, index


def iter_frames(path: PathLike, start: int = 0, start_pts: Optional[int] = None,
                stop_pts: Optional[int] = None, count: Optional[int] = None) -> Iterator[tuple[int, np.ndarray]]:
    """Decode frames as ``(pts, (H, W, 3) uint8 RGB)``, one at a time (constant memory).

    Args:
        start: index of the first frame to yield (frames before it are decoded and dropped when
            ``start_pts`` is not given).
        start_pts: timestamp of the first frame: the decoder seeks to the key frame before it and
            drops the frames before it (fast for chunks deep into a long video).
        stop_pts: stop before the first frame at or after this timestamp.
        count: stop after this many frames.

    Frames without a timestamp get ``pts = index / rate`` in the stream's time base.
    """
    av = _require_av()
    container = _open_input(path)
    try:
        vs = _video_stream(container)
        tb = vs.time_base
        rate = vs.average_rate or vs.guessed_rate or Fraction(25)
        step = max(1, round(1 / (Fraction(rate) * tb))) if tb else 1
        skip_by_index = start
        if start_pts is not None and start > 0:
            try:
                container.seek(int(start_pts), stream=vs, backward=True, any_frame=False)
                skip_by_index = None
            except av.FFmpegError:
                logger.debug("VToonify: seek failed in %s; decoding from the start", path)
        done, index, last = 0, 0, None
        try:
            for frame in container.decode(vs):
                pts = frame.pts
                if pts is None:
                    pts = index * step if last is None else last + step
                if skip_by_index is None:
                    if pts < start_pts:
                        continue
                    if index == 0 and pts > start_pts:
                        raise _SeekMissed()
                elif index < skip_by_index:
                    index += 1
                    last = pts
                    continue
                if stop_pts is not None and pts >= stop_pts:
                    break
                if count is not None and done >= count:
                    break
                index += 1
                last = pts
                done += 1
                yield pts, frame_to_rgb(frame)
        except _SeekMissed:
            container.close()
            container = None
            yield from iter_frames(path, start, None, stop_pts, count)
        except av.FFmpegError as exc:
            raise VideoError(f"cannot decode video {path}: {exc}") from None
    finally:
        if container is not None:
            container.close()


class _SeekMissed(Exception):
    """The seek landed after the wanted frame: decode from the start instead."""


# ----------------------------------------------------------------------------------------------
# encoding settings


@dataclass(frozen=True)
class EncodeSettings:
    """How the stylized video is encoded.

    Attributes:
        codec: FFmpeg encoder name (default: by container, :data:`CONTAINERS`).
        crf: quality (CRF for x264/x265/VP9/AV1, qscale for MPEG-4; lower is better); ``None``:
            the codec's default from :data:`CODEC_DEFAULTS`.
        pix_fmt: pixel format (default by codec: ``yuv420p``; ``yuv444p`` for FFV1; ``bgr0`` makes
            FFV1 lossless in RGB).
        options: further encoder options (strings), e.g. ``{"preset": "slow"}``.
    """

    codec: Optional[str] = None
    crf: Optional[int] = None
    pix_fmt: Optional[str] = None
    options: Mapping[str, str] = field(default_factory=dict)

    def resolve(self, container_ext: str) -> dict:
        """The concrete ``{"codec", "pix_fmt", "options"}`` for an output with this extension.

        Raises:
            VideoError: unknown container, a codec PyAV lacks, or one the container cannot hold.
        """
        av = _require_av()
        ext = container_ext.lower()
        if ext not in CONTAINERS:
            raise VideoError(f"unsupported output container {ext or '(no extension)'!r}: use one of "
                             f"{', '.join(CONTAINERS)}")
        codec = self.codec or CONTAINERS[ext]
        if codec not in av.codecs_available:
            raise VideoError(f"the video encoder {codec!r} is not available in this PyAV build; try "
                             f"{', '.join(c for c in CODEC_DEFAULTS if c in av.codecs_available)}")
        if ext == ".webm" and codec not in ("libvpx-vp9", "libvpx", "libaom-av1", "libsvtav1"):
            raise VideoError(f"WebM holds VP8/VP9/AV1 only, not {codec!r}: use .mkv or .mp4")
        pix_fmt, options = CODEC_DEFAULTS.get(codec, ("yuv420p", {}))
        options = dict(options)
        if self.crf is not None:
            options[QUALITY_OPTION.get(codec, "crf")] = str(int(self.crf))
        options.update({str(k): str(v) for k, v in self.options.items()})
        return {"codec": codec, "pix_fmt": self.pix_fmt or pix_fmt, "options": options}


# ----------------------------------------------------------------------------------------------
# the job: settings, geometry, style and progress of one video, saved as the manifest


@dataclass
class Chunk:
    """One chunk of the video: frames ``[start, start + frames)``; ``pts`` of its first frame
    (``None`` when the source has no usable timestamps). ``done`` when its segment is written;
    ``written`` frames in it and ``offset`` the timestamp its segment's times are relative to."""

    start: int
    frames: int
    pts: Optional[int] = None
    done: bool = False
    written: int = 0
    offset: int = 0


@dataclass
class VideoJob:
    """Everything needed to stylize one video in chunks and resume it: the manifest's content.

    Built by :func:`prepare_job`; picklable (sent to Ray workers by :mod:`vtoonify_core.distributed`).
    """

    source: str
    output: str
    work_dir: str
    info: VideoInfo
    chunk_size: int
    chunks: list[Chunk]
    crop_mode: str
    face_padding: int
    d_s: float
    encode: dict
    style: StyleCode
    geometry: Optional[CropGeometry] = None
    reference_index: Optional[int] = None
    settings: dict = field(default_factory=dict)
    settings_hash: str = ""
    created: float = field(default_factory=time.time)

    # -- files ----------------------------------------------------------------------------------
    @property
    def work_path(self) -> Path:
        return Path(self.work_dir)

    def segment_path(self, k: int) -> Path:
        """The segment file of chunk ``k``."""
        return self.work_path / f"chunk_{k:05d}.{SEGMENT_FORMAT}"

    @property
    def output_size(self) -> tuple[int, int]:
        """``(height, width)`` of the stylized frames."""
        if self.crop_mode == "face":
            return 4 * self.geometry.crop_height, 4 * self.geometry.crop_width
        return 4 * self.info.height, 4 * self.info.width

    @property
    def frames_done(self) -> int:
        return sum(c.frames for c in self.chunks if c.done)

    @property
    def pending(self) -> list[int]:
        """Indices of the chunks still to do."""
        return [k for k, c in enumerate(self.chunks) if not c.done]

    def next_chunk_pts(self, k: int) -> Optional[int]:
        """Timestamp where chunk ``k`` ends (the next chunk's first frame), ``None`` for the last."""
        return self.chunks[k + 1].pts if k + 1 < len(self.chunks) else None

    # -- manifest -------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "settings_hash": self.settings_hash,
            "settings": self.settings,
            "source": self.source,
            "output": self.output,
            "info": self.info.to_json(),
            "chunk_size": self.chunk_size,
            "crop_mode": self.crop_mode,
            "face_padding": self.face_padding,
            "d_s": self.d_s,
            "encode": self.encode,
            "geometry": None if self.geometry is None else dataclasses.asdict(self.geometry),
            "reference_index": self.reference_index,
            "style": {"file": STYLE_FILE, "sha256": _tensor_hash(self.style.wplus), "backbone": self.style.backbone,
                      "style_id": self.style.style_id, "style_name": self.style.style_name,
                      "color_transfer": self.style.color_transfer},
            "chunks": [dataclasses.asdict(c) for c in self.chunks],
            "created": self.created,
        }

    def save(self) -> None:
        """Write ``style.npy`` (once) and ``manifest.json`` atomically into the work folder."""
        self.work_path.mkdir(parents=True, exist_ok=True)
        style_path = self.work_path / STYLE_FILE
        if not style_path.exists():
            tmp = style_path.with_suffix(".tmp.npy")
            np.save(tmp, self.style.wplus.detach().float().cpu().numpy())
            os.replace(tmp, style_path)
        _write_json_atomic(self.work_path / MANIFEST, self.to_json())

    @classmethod
    def load(cls, work_dir: PathLike) -> "VideoJob":
        """Read a job back from its work folder.

        Raises:
            VideoError: no manifest, another layout version, or a style file that does not match.
        """
        work = Path(work_dir)
        try:
            d = json.loads((work / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise VideoError(f"no readable {MANIFEST} in {work}: {exc}") from None
        if d.get("format") != FORMAT:
            raise VideoError(f"{work / MANIFEST} has layout {d.get('format')!r}, not {FORMAT!r}")
        s = d["style"]
        try:
            wplus = torch.from_numpy(np.load(work / s["file"]))
        except (OSError, ValueError) as exc:
            raise VideoError(f"cannot read the saved style code {work / s['file']}: {exc}") from None
        if _tensor_hash(wplus) != s["sha256"]:
            raise VideoError(f"{work / s['file']} does not match the manifest (changed or corrupt)")
        style = StyleCode(wplus, s["backbone"], s.get("style_id"), s.get("style_name"), bool(s.get("color_transfer")))
        geo = d.get("geometry")
        return cls(
            source=d["source"], output=d["output"], work_dir=str(work), info=VideoInfo.from_json(d["info"]),
            chunk_size=int(d["chunk_size"]), chunks=[Chunk(**c) for c in d["chunks"]], crop_mode=d["crop_mode"],
            face_padding=int(d["face_padding"]), d_s=float(d["d_s"]), encode=d["encode"], style=style,
            geometry=None if geo is None else CropGeometry(**geo), reference_index=d.get("reference_index"),
            settings=d.get("settings", {}), settings_hash=d.get("settings_hash", ""),
            created=float(d.get("created", 0.0)))

    def mark_done(self, k: int, written: int, offset: int) -> None:
        """Record chunk ``k`` as finished (its segment already in place) and save the manifest."""
        c = self.chunks[k]
        c.done, c.written, c.offset = True, int(written), int(offset)
        self.save()


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _tensor_hash(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def file_fingerprint(path: PathLike, block: int = 1 << 20) -> dict:
    """Size and a SHA-256 of the first and last MiB of a file: cheap, and changes when the file does."""
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256()
    with open(p, "rb") as f:
        h.update(f.read(block))
        if size > block:
            f.seek(max(block, size - block))
            h.update(f.read(block))
    return {"name": p.name, "size": size, "sha256_ends": h.hexdigest()}


def default_work_dir(output: PathLike) -> Path:
    """The work folder of an output file: ``.<name>.vtoonify`` beside it."""
    out = Path(output)
    return out.parent / f".{out.name}.vtoonify"


def job_settings(model: VToonifyModel, source: PathLike, output: PathLike, *, style: Optional[StyleCode],
                 style_id: int, color_transfer: bool, d_s: float, crop_mode: str, face_padding: int,
                 chunk_size: int, encode: Mapping[str, Any]) -> dict:
    """Every setting that changes the frames or the bytes of a video job (hashed for resumption).

    The batch size, device and work folder are not included: they do not change the result
    (beyond floating-point noise between devices), so a job may be resumed with other ones.
    """
    models = {}
    for part, path in sorted(dict(model.sources).items()):
        if part == "encoder" and style is not None:
            continue  # the encoder does not enter a given style code
        try:
            models[part] = file_fingerprint(path)
        except OSError:
            models[part] = {"name": str(path)}
    if style is not None:
        style_rule = {"code_sha256": _tensor_hash(style.wplus), "backbone": style.backbone}
    elif model.backbone == "dualstylegan":
        style_rule = {"style_id": int(style_id), "color_transfer": bool(color_transfer), "from": "video"}
    else:
        style_rule = {"from": "video"}
    return {
        "format": FORMAT,
        "source": file_fingerprint(source),
        "output_container": Path(output).suffix.lower(),
        "model": {"backbone": model.backbone, "dtype": str(model.dtype).replace("torch.", ""), "files": models},
        "style": style_rule,
        "style_degree": float(d_s) if model.backbone == "dualstylegan" else None,
        "crop_mode": crop_mode,
        "face_padding": int(face_padding) if crop_mode == "face" else None,
        "chunk_size": int(chunk_size),
        "encode": dict(encode),
    }


def settings_hash(settings: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of :func:`job_settings`."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# preparing: geometry and style once per video


def _frame_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]


def find_reference(path: PathLike, crop_mode: str, face_padding: int = DEFAULT_FACE_PADDING, *, backend="dlib",
                   need_face: bool = True, check_interrupt: Optional[Callable[[], None]] = None,
                   total: Optional[int] = None) -> tuple[Optional[int], Optional[np.ndarray], Optional[CropGeometry]]:
    """The first frame with a face: ``(index, frame, crop geometry)``, as the official video rule.

    Face mode: the first frame whose face gives a valid crop sets the geometry (:func:`plan_clip`
    on that frame). Whole mode with ``need_face``: the first frame with any face (for the style
    code). Whole mode without: ``(None, None, None)`` and nothing is decoded.

    Raises:
        NoFaceError: no usable face in any frame.
        InputError: faces were found but none could be cropped.
    """
    from .faces import NoFaceError, detect_faces, no_face_message

    if crop_mode == "whole" and not need_face:
        return None, None, None
    too_small: Optional[Exception] = None
    n = 0
    for i, (_, rgb) in enumerate(iter_frames(path)):
        n = i + 1
        if check_interrupt is not None:
            check_interrupt()
        if crop_mode == "face":
            try:
                plan = plan_clip(_frame_tensor(rgb), "face", face_padding=face_padding, backend=backend)
            except NoFaceError:
                continue
            except InputError as exc:
                too_small = exc
                continue
            return i, rgb, plan.geometry
        if detect_faces(rgb, backend=backend):
            return i, rgb, None
    if too_small is not None:
        raise InputError("video", f"faces were found in {path} but none can be cropped ({too_small}); use crop mode "
                                  f"'whole' or a larger face padding.")
    raise NoFaceError(no_face_message(f"any of the {total or n} frames of {path}"))


def _check_settings(crop_mode: str, chunk_size: int, batch_size: int, face_padding: int) -> None:
    if crop_mode not in ("face", "whole"):
        raise InputError("crop_mode", f"unknown crop mode {crop_mode!r}; use face or whole.")
    if isinstance(chunk_size, bool) or int(chunk_size) < 1:
        raise InputError("chunk_size", f"must be at least 1, got {chunk_size}.")
    if isinstance(batch_size, bool) or int(batch_size) < 0:
        raise InputError("batch_size", f"must be 0 (automatic, from the free memory) or at least 1, got {batch_size}.")
    if crop_mode == "face" and int(face_padding) < 8:
        raise InputError("face_padding", f"must be at least 8 px, got {face_padding}.")


def prepare_job(model: VToonifyModel, source: PathLike, output: PathLike, style: Optional[StyleCode] = None,
                d_s: float = 0.5, *, style_id: int = 0, color_transfer: bool = False, crop_mode: str = "face",
                face_padding: int = DEFAULT_FACE_PADDING, chunk_size: int = DEFAULT_CHUNK_SIZE,
                encode: Optional[EncodeSettings] = None, work_dir: Optional[PathLike] = None, resume: bool = True,
                backend="dlib", check_interrupt: Optional[Callable[[], None]] = None) -> VideoJob:
    """Plan a video job, or read back the unfinished one with the same settings.

    With ``resume`` and a manifest in ``work_dir`` whose settings hash matches, the saved job
    (geometry, style code, finished chunks) is returned and nothing is recomputed; otherwise the
    work folder is emptied and the video is probed, the first frame with a face found, the crop
    geometry (face mode) and the style code (when ``style`` is ``None``: from that frame, with
    ``style_id``/``color_transfer`` for VToonify-D) computed, and the manifest written.

    Raises:
        VideoError: unreadable source, unsupported output container or codec.
        InputError: bad settings or style code.
        NoFaceError: no face where one is needed.
    """
    source, output = Path(source), Path(output)
    _check_settings(crop_mode, chunk_size, 1, face_padding)
    if style is not None:
        check_style(model, style)
    if model.backbone == "dualstylegan":
        d_s = float(d_s)
        if not 0.0 <= d_s <= 1.0:
            raise InputError("style_degree", f"must be between 0 and 1, got {d_s}.")
    if source.resolve() == output.resolve():
        raise InputError("output", f"the output {output} is the input video; choose another file name.")
    enc = (encode or EncodeSettings()).resolve(output.suffix)
    if not source.is_file():
        raise VideoError(f"video file not found: {source}")
    settings = job_settings(model, source, output, style=style, style_id=style_id, color_transfer=color_transfer,
                            d_s=d_s, crop_mode=crop_mode, face_padding=face_padding, chunk_size=chunk_size,
                            encode=enc)
    digest = settings_hash(settings)
    work = Path(work_dir) if work_dir is not None else default_work_dir(output)
    if (work / MANIFEST).exists():
        if resume:
            try:
                old = VideoJob.load(work)
            except VideoError as exc:
                logger.warning("VToonify: cannot resume from %s (%s); starting over", work, exc)
                old = None
            if old is not None and old.settings_hash == digest:
                old.source, old.output, old.work_dir = str(source), str(output), str(work)
                for k, c in enumerate(old.chunks):
                    if c.done and c.written and not old.segment_path(k).is_file():
                        c.done = False
                logger.info("VToonify: resuming %s: %d of %d chunks already done", source, len(old.chunks)
                            - len(old.pending), len(old.chunks))
                return old
            if old is not None:
                logger.warning("VToonify: the settings changed since %s was started; starting over", work)
        _clear_work_dir(work)
    elif work.exists() and any(work.iterdir()):
        _clear_work_dir(work)

    info, index = _probe(source)
    need_face = style is None and not (model.backbone == "dualstylegan" and color_transfer)
    ref, ref_frame, geometry = find_reference(source, crop_mode, face_padding, backend=backend, need_face=need_face,
                                              check_interrupt=check_interrupt, total=info.frames)
    if style is None:
        if need_face:
            style, _ = style_from_image(model, ref_frame, style_id, color_transfer, backend=backend)
        else:
            from .pipeline import extract_style

            style = extract_style(model, None, style_id, True)
    if crop_mode == "face":
        logger.info("VToonify: face found in frame %d of %s; crop %dx%d", ref, source, geometry.crop_width,
                    geometry.crop_height)
    chunks = []
    for s in range(0, info.frames, int(chunk_size)):
        chunks.append(Chunk(s, min(int(chunk_size), info.frames - s), None if index is None else index[s]))
    job = VideoJob(source=str(source), output=str(output), work_dir=str(work), info=info, chunk_size=int(chunk_size),
                   chunks=chunks, crop_mode=crop_mode, face_padding=int(face_padding), d_s=float(d_s), encode=enc,
                   style=StyleCode(style.wplus.detach().float().cpu().clone(), style.backbone, style.style_id,
                                   style.style_name, style.color_transfer),
                   geometry=geometry, reference_index=ref, settings=settings, settings_hash=digest)
    job.save()
    return job


def _clear_work_dir(work: Path) -> None:
    if not work.exists():
        return
    for p in work.iterdir():
        if p.is_file() and (p.name in (MANIFEST, STYLE_FILE) or p.name.startswith("chunk_") or p.suffix == ".tmp"
                            or p.name.endswith((".tmp", ".tmp.npy", ".json.tmp"))):
            p.unlink()
    logger.debug("VToonify: cleared %s", work)


# ----------------------------------------------------------------------------------------------
# stylizing and encoding one chunk


class SegmentWriter:
    """Encodes RGB frames of one chunk into a segment file with the job's codec and colour tags.

    Frame timestamps are written relative to ``offset`` (the chunk's first timestamp); the mux
    adds it back. Use as a context manager; :meth:`close` flushes the encoder.
    """

    def __init__(self, path: PathLike, job: VideoJob, offset: int):
        av = _require_av()
        self.path = Path(path)
        self.offset = int(offset)
        self.job = job
        self.written = 0
        self._last: Optional[int] = None
        info = job.info
        h, w = job.output_size
        try:
            self._container = av.open(str(self.path), "w", format=SEGMENT_FORMAT)
            st = self._container.add_stream(job.encode["codec"], rate=info.rate)
            st.width, st.height = w, h
            st.pix_fmt = job.encode["pix_fmt"]
            st.time_base = info.time_base
            st.options = dict(job.encode["options"])
            cc = st.codec_context
            if self._yuv:
                cc.color_range = info.color_range if info.color_range in (1, 2) else 1
            for attr in ("colorspace", "color_primaries", "color_trc"):
                value = getattr(info, attr)
                if value not in (0, 2):
                    setattr(cc, attr, value)
        except (av.FFmpegError, ValueError) as exc:
            raise VideoError(f"cannot create the segment {self.path} with {job.encode}: {exc}") from None
        self._stream = st

    @property
    def _yuv(self) -> bool:
        return self.job.encode["pix_fmt"] not in _RGB_FORMATS

    def _frame(self, rgb: np.ndarray):
        av = _require_av()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        info = self.job.info
        if self._yuv:
            kwargs: dict[str, Any] = {"format": self.job.encode["pix_fmt"], "src_color_range": 2,
                                      "dst_color_range": info.color_range if info.color_range in (1, 2) else 1}
            cs = _SWS_COLORSPACE.get(info.colorspace)
            if cs is not None:
                kwargs["dst_colorspace"] = cs
            frame = frame.reformat(**kwargs)
        else:
            frame = frame.reformat(format=self.job.encode["pix_fmt"])
        return frame

    def write(self, rgb: np.ndarray, pts: int) -> None:
        """Encode one ``(H, W, 3)`` uint8 RGB frame shown at ``pts`` (source time base)."""
        av = _require_av()
        rel = int(pts) - self.offset
        if self._last is not None and rel <= self._last:
            rel = self._last + 1  # never seen with sane files: timestamps must increase
        self._last = rel
        frame = self._frame(rgb)
        frame.pts = rel
        frame.time_base = self.job.info.time_base
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except av.FFmpegError as exc:
            raise VideoError(f"cannot encode into {self.path}: {exc}") from None
        self.written += 1

    def close(self) -> int:
        """Flush the encoder and close the file; returns the number of frames written."""
        if self._container is None:
            return self.written
        av = _require_av()
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        except av.FFmpegError as exc:
            raise VideoError(f"cannot finish {self.path}: {exc}") from None
        finally:
            self._container.close()
            self._container = None
        return self.written

    def abort(self) -> None:
        """Close without flushing (the file is incomplete; the caller deletes it)."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - closing a half-written file
                pass
            self._container = None

    def __enter__(self) -> "SegmentWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def to_uint8_hwc(y: torch.Tensor) -> np.ndarray:
    """Stylized ``[B, 3, H, W]`` in [-1, 1] -> ``(B, H, W, 3)`` uint8 (rounded)."""
    return ((y.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def stylize_chunk(model: VToonifyModel, job: VideoJob, frames: np.ndarray, *, batch_size: int = 4,
                  sink: Callable[[int, np.ndarray], None], progress: Optional[Callable[[int], None]] = None,
                  check_interrupt: Optional[Callable[[], None]] = None,
                  on_oom: Optional[Callable[[int], None]] = None) -> None:
    """Stylize ``(n, H, W, 3)`` uint8 frames of a job, ``batch_size`` at a time.

    Face mode: every frame is cropped with the job's geometry (:func:`~vtoonify_core.crop.apply_crop`,
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
                check_interrupt=check_interrupt, on_oom=on_oom, sink=emit)
    else:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        stylize_clip(model, x, job.style, job.d_s, crop_mode="whole", batch_size=int(batch_size), progress=prog,
                     check_interrupt=check_interrupt, on_oom=on_oom, sink=emit)


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
                      check_interrupt=check_interrupt, on_oom=on_oom)
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
# muxing


def _audio_plan(inp, out, ext: str, transcode: bool = False) -> list[tuple[Any, Any, bool]]:
    """``(input stream, output stream, transcode)`` for every audio stream of the source.

    Streams are copied when the container takes their codec (unless ``transcode``), else
    re-encoded (:data:`AUDIO_FALLBACK`, AAC by default).
    """
    av = _require_av()
    plan = []
    supported = out.supported_codecs
    for s in inp.streams.audio:
        name = s.codec_context.name
        webm_ok = ext != ".webm" or name in ("opus", "libopus", "vorbis", "libvorbis")
        if not transcode and name in supported and webm_ok:
            plan.append((s, out.add_stream_from_template(s), False))
            continue
        codec, rate = AUDIO_FALLBACK.get(ext, ("aac", None))
        rate = rate or int(s.codec_context.sample_rate or 48000)
        layout = s.codec_context.layout.name if s.codec_context.layout else "stereo"
        try:
            o = out.add_stream(codec, rate=rate, layout=layout)
        except (av.FFmpegError, ValueError):
            o = out.add_stream(codec, rate=rate)
        logger.info("VToonify: re-encoding audio stream %d (%s) as %s for %s", s.index, name, codec, ext)
        plan.append((s, o, True))
    return plan


def _packet_time(p) -> Fraction:
    t = p.dts if p.dts is not None else p.pts
    return Fraction(t or 0) * p.time_base


def _open_segment(job: VideoJob, k: int):
    av = _require_av()
    try:
        return av.open(str(job.segment_path(k)), "r")
    except av.FFmpegError as exc:
        raise VideoError(f"cannot read segment {job.segment_path(k)}: {exc}; delete it to redo chunk {k}") from None


def _segment_packets(job: VideoJob) -> Iterator[tuple[Any, int]]:
    """Every video packet of the segments in order, with its pts in the source time base (global)."""
    for k, c in enumerate(job.chunks):
        if c.written:
            yield from _segment_packets_of(job, k)


def _timeline(job: VideoJob) -> tuple[list[int], int]:
    """All presentation timestamps (sorted) and the largest reordering delay (frames) of the segments.

    Segments are encoded independently, so their decoding delays differ (x264 keeps fewer
    B-frames in a short last segment); the joined stream gets one consistent decode timeline.
    """
    all_pts: list[int] = []
    delay = 0
    for k, c in enumerate(job.chunks):
        if c.written == 0:
            continue
        local = [pts for _, pts in _segment_packets_of(job, k)]
        rank = {p: r for r, p in enumerate(sorted(local))}
        delay = max([delay] + [i - rank[p] for i, p in enumerate(local)])
        all_pts.extend(local)
    return sorted(all_pts), delay


def _segment_packets_of(job: VideoJob, k: int) -> Iterator[tuple[Any, int]]:
    tb = job.info.time_base
    c = job.chunks[k]
    seg = _open_segment(job, k)
    try:
        for p in seg.demux(seg.streams.video[0]):
            if p.size:
                yield p, round(Fraction(p.pts) * p.time_base / tb) + c.offset
    finally:
        seg.close()


def _video_packets(job: VideoJob, out_stream) -> Iterator[Any]:
    """The segments' packets with global timestamps and one monotonic decode timeline.

    ``dts`` of the i-th packet in decoding order is the ``(i - delay)``-th presentation time (the
    usual construction for B-frame streams), which keeps ``dts <= pts`` and equal frame steps.
    """
    tb = job.info.time_base
    timeline, delay = _timeline(job)
    step = max(1, round(1 / (job.info.rate * tb)))
    i = 0
    for p, pts in _segment_packets(job):
        p.pts = pts
        p.dts = timeline[i - delay] if i >= delay else timeline[0] - (delay - i) * step
        p.time_base = tb
        p.stream = out_stream
        i += 1
        yield p


def _audio_packets(inp, plan) -> Iterator[Any]:
    av = _require_av()
    streams = [s for s, _, _ in plan]
    if not streams:
        return
    by_index = {s.index: (o, tr) for s, o, tr in plan}
    for p in inp.demux(*streams):
        o, transcode = by_index[p.stream.index]
        if not transcode:
            if p.size == 0 or p.dts is None and p.pts is None:
                continue
            p.stream = o
            yield p
            continue
        try:
            frames = p.decode()
        except av.FFmpegError:
            continue
        for f in frames:
            for q in o.encode(f):
                yield q
    for _, o, transcode in plan:
        if transcode:
            for q in o.encode(None):
                yield q


def _mux(job: VideoJob, tmp: Path, first: int, transcode_audio: bool) -> None:
    av = _require_av()
    ext = Path(job.output).suffix.lower()
    with av.open(job.source, "r") as inp:
        options = {"movflags": "+faststart"} if ext in (".mp4", ".m4v", ".mov") else {}
        with av.open(str(tmp), "w", options=options) as out:
            with av.open(str(job.segment_path(first)), "r") as seg:
                vstream = out.add_stream_from_template(seg.streams.video[0])
            vstream.time_base = job.info.time_base
            vstream.codec_context.framerate = job.info.rate  # the frame rate tag (e.g. Matroska's default duration)
            plan = _audio_plan(inp, out, ext, transcode_audio)
            for p in heapq.merge(_video_packets(job, vstream), _audio_packets(inp, plan), key=_packet_time):
                out.mux(p)


def mux_job(job: VideoJob) -> Path:
    """Join the job's segments (packets copied, not re-encoded) and the source's audio into the output.

    Packets are interleaved by time; the output is written under a temporary name and renamed.
    When the container refuses a copied audio track, the mux is redone with the audio re-encoded.

    Raises:
        VideoError: a chunk is not finished, or a file cannot be read or written.
    """
    av = _require_av()
    missing = job.pending
    if missing:
        raise VideoError(f"cannot mux {job.output}: chunks {missing[:5]} are not finished")
    dst = Path(job.output)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    first = next((k for k, c in enumerate(job.chunks) if c.written), None)
    if first is None:
        raise VideoError(f"no frame was stylized for {job.output} (the source decoded to 0 frames)")
    try:
        try:
            _mux(job, tmp, first, transcode_audio=False)
        except av.FFmpegError as exc:
            if not job.info.audio:
                raise
            logger.warning("VToonify: copying the audio into %s failed (%s); re-encoding it", dst, exc)
            tmp.unlink(missing_ok=True)
            _mux(job, tmp, first, transcode_audio=True)
    except av.FFmpegError as exc:
        tmp.unlink(missing_ok=True)
        raise VideoError(f"cannot write {dst}: {exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)
    return dst


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
    _check_settings(job.crop_mode, job.chunk_size, batch_size, job.face_padding)
    check_style(model, job.style)
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
                  on_frames: Optional[Callable[[int, np.ndarray], None]] = None, backend="dlib") -> VideoResult:
    """Stylize a video file into another, chunk by chunk, resuming an interrupted run.

    Memory holds one chunk of decoded frames (``chunk_size`` frames of the source) and one batch
    of stylized frames, whatever the video's length. See the module docstring for the layout.

    Args:
        model: the VToonify bundle (:func:`~vtoonify_core.pipeline.load_model`).
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

    Raises:
        VideoError, InputError, NoFaceError: see :func:`prepare_job`.
    """
    t0 = time.perf_counter()
    _check_settings(crop_mode, chunk_size, batch_size, face_padding)
    job = prepare_job(model, source, output, style, d_s, style_id=style_id, color_transfer=color_transfer,
                      crop_mode=crop_mode, face_padding=face_padding, chunk_size=chunk_size, encode=encode,
                      work_dir=work_dir, resume=resume, backend=backend, check_interrupt=check_interrupt)
    run = run_job(model, job, batch_size=batch_size, progress=progress, check_interrupt=check_interrupt,
                  on_oom=on_oom, on_chunk=on_chunk, on_frames=on_frames)
    if check_interrupt is not None:
        check_interrupt()
    out = finish_job(job, keep_work=keep_work)
    frames = sum(c.written for c in job.chunks)
    return VideoResult(out, frames, len(job.chunks), run, time.perf_counter() - t0, job)


def read_frames_at(path: PathLike, indices: Sequence[int]) -> np.ndarray:
    """Decode the frames at ``indices`` of a video: ``(len(indices), H, W, 3)`` uint8.

    Each frame is reached by seeking to the key frame before it (a demux pass finds the
    timestamps), so a few previews of a long video cost a few GOPs of decoding, not the video.

    Raises:
        VideoError: an index out of range.
    """
    n, index = _frame_index(path)
    bad = [int(i) for i in indices if not 0 <= int(i) < n]
    if bad:
        raise VideoError(f"{path} has {n} frames; there is no frame {bad[0]}")
    out = []
    for i in indices:
        i = int(i)
        start_pts = None if index is None else index[i]
        got = next(iter(iter_frames(path, i, start_pts, None, 1)), None)
        if got is None:
            raise VideoError(f"frame {i} of {path} could not be decoded")
        out.append(got[1])
    return np.stack(out) if out else np.zeros((0, 1, 1, 3), np.uint8)


def preview_indices(n_frames: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``n_frames`` (first and last included)."""
    count = max(0, min(int(count), int(n_frames)))
    if count == 0:
        return []
    if count == 1:
        return [0]
    return sorted({round(i * (n_frames - 1) / (count - 1)) for i in range(count)})


def write_video(path: PathLike, frames: Union[np.ndarray, Sequence[np.ndarray], Iterator[np.ndarray]],
                rate: Union[Fraction, int, str] = 25, *, codec: str = "libx264", pix_fmt: str = "yuv420p",
                options: Optional[Mapping[str, str]] = None, full_range: bool = False,
                tone_hz: Optional[float] = None, audio_codec: str = "aac", sample_rate: int = 44100,
                rotation: Optional[int] = None) -> Path:
    """Write ``(H, W, 3)`` uint8 RGB frames to a video, optionally with a sine tone as audio.

    A small helper for test clips and benchmarks: frames are encoded one at a time (an iterator
    keeps memory flat); ``full_range`` tags and converts full-range YUV; ``tone_hz`` adds a mono
    sine track exactly as long as the video; ``rotation`` sets a display rotation (degrees).
    """
    av = _require_av()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(rate)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise VideoError("write_video needs at least one frame")
    h, w = first.shape[:2]
    with av.open(str(path), "w") as c:
        vs = c.add_stream(codec, rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, pix_fmt
        vs.time_base = 1 / rate
        if options:
            vs.options = dict(options)
        yuv = pix_fmt not in _RGB_FORMATS
        if yuv:
            vs.codec_context.color_range = 2 if full_range else 1
        if rotation:
            vs.set_display_rotation(int(rotation))
        a = None
        if tone_hz:
            a = c.add_stream(audio_codec, rate=sample_rate, layout="mono")
        n = 0

        def frames_all():
            yield first
            yield from it

        for rgb in frames_all():
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            f = f.reformat(format=pix_fmt, src_color_range=2, dst_color_range=2 if full_range else 1) if yuv \
                else f.reformat(format=pix_fmt)
            f.pts, f.time_base = n, 1 / rate
            for p in vs.encode(f):
                c.mux(p)
            n += 1
        for p in vs.encode(None):
            c.mux(p)
        if a is not None:
            total = int(round(n / rate * sample_rate))
            size = a.codec_context.frame_size or 1024
            t = np.arange(total) / sample_rate
            tone = (0.3 * np.sin(2 * np.pi * float(tone_hz) * t)).astype(np.float32)
            for s in range(0, total, size):
                block = tone[s:s + size]
                af = av.AudioFrame.from_ndarray(block[None], format="flt", layout="mono")
                af.sample_rate, af.pts, af.time_base = sample_rate, s, Fraction(1, sample_rate)
                for p in a.encode(af):
                    c.mux(p)
            for p in a.encode(None):
                c.mux(p)
    return path


# ----------------------------------------------------------------------------------------------
# still images


def read_image(path: PathLike) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB (EXIF orientation applied).

    Raises:
        VideoError: missing or unreadable file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise VideoError(f"image file not found: {p}")
    try:
        with Image.open(p) as img:
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise VideoError(f"cannot read image {p}: {exc}") from None


def write_image(path: PathLike, rgb: np.ndarray) -> Path:
    """Save ``(H, W, 3)`` uint8 RGB; the format follows the extension (JPEG at quality 95)."""
    from PIL import Image

    p = Path(path)
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        raise VideoError(f"unsupported image format {p.suffix or '(no extension)'!r}: use one of "
                         f"{', '.join(IMAGE_EXTENSIONS)}")
    p.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.ascontiguousarray(rgb))
    kwargs = {"quality": 95} if p.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    try:
        img.save(p, **kwargs)
    except (OSError, ValueError) as exc:
        raise VideoError(f"cannot write image {p}: {exc}") from None
    return p


def stylize_image_file(model: VToonifyModel, source: PathLike, output: PathLike, style: Optional[StyleCode] = None,
                       d_s: float = 0.5, *, style_id: int = 0, color_transfer: bool = False, crop_mode: str = "face",
                       face_padding: int = DEFAULT_FACE_PADDING, batch_size: int = 1, backend="dlib",
                       progress: Optional[Progress] = None) -> np.ndarray:
    """Stylize one image file into another (the style code from the image itself unless given).

    Returns the written ``(4h, 4w, 3)`` uint8 image (4x the face crop, or 4x the image).
    """
    _check_settings(crop_mode, 1, batch_size, face_padding)
    rgb = read_image(source)
    if style is None:
        if model.backbone == "dualstylegan" and color_transfer:
            from .pipeline import extract_style

            style = extract_style(model, None, style_id, True)
        else:
            style, _ = style_from_image(model, rgb, style_id, color_transfer, backend=backend)
    out, _ = stylize_clip(model, _frame_tensor(rgb), style, d_s, crop_mode=crop_mode, face_padding=face_padding,
                          batch_size=batch_size, progress=progress, backend=backend)
    img = to_uint8_hwc(out)[0]
    write_image(output, img)
    return img


__all__ = [
    "AudioInfo", "CONTAINERS", "Chunk", "DEFAULT_CHUNK_SIZE", "EncodeSettings", "IMAGE_EXTENSIONS", "SegmentWriter",
    "VideoError", "VideoInfo", "VideoJob", "VideoResult", "decode_chunk", "default_work_dir", "encode_chunk",
    "file_fingerprint", "find_reference", "finish_job", "frame_to_rgb", "is_image_path", "iter_frames", "job_settings",
    "mux_job", "prepare_job", "preview_indices", "probe_video", "process_chunk", "read_frames_at", "read_image",
    "run_job", "settings_hash", "stylize_chunk", "stylize_image_file", "stylize_video", "to_uint8_hwc",
    "write_image",
]
