"""Reading and writing video and image files with PyAV: probing (exact frame rate, colour tags,
rotation, audio streams), frame-accurate decoding to RGB, and plain writers.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import VideoError
from ..types import IMAGE_EXTENSIONS, PathLike

logger = logging.getLogger("vtoonify")

# AVColorSpace values -> the names swscale's reformat accepts (unspecified/others: swscale default).
_SWS_COLORSPACE = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
#: Audio channel layouts by channel count (as ComfyUI writes them).
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}
_RGB_FORMATS = ("rgb24", "bgr24", "rgba", "bgra", "argb", "abgr", "rgb0", "bgr0", "0rgb", "0bgr", "gbrp")


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


def check_file(path: PathLike, what: str = "video") -> Path:
    """``path`` as a :class:`Path` when it names an existing file; else a :class:`VideoError` that says
    whether it is missing or a folder."""
    p = Path(path)
    if p.is_dir():
        raise VideoError(f"{p} is a folder, not a {what} file: give the path of a {what} file.")
    if not p.is_file():
        raise VideoError(f"{what} file not found: {p}")
    return p


def _open_input(path: PathLike):
    av = _require_av()
    p = check_file(path, "video")
    try:
        container = av.open(str(p), "r")
    except av.FFmpegError as exc:
        logger.info("VToonify: FFmpeg cannot open %s: %s", p, exc)
        raise VideoError(f"cannot read video {p}: it is not a video FFmpeg can open (empty, damaged or another kind of "
                         f"file): choose a .mp4, .mov, .mkv or .webm file.") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p} has no video stream")
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):  # FFmpeg's still-image demuxers (png_pipe, jpeg_pipe, ...)
        codec = container.streams.video[0].codec_context.name.upper()
        container.close()
        raise VideoError(f"{p} is a still image ({codec}), not a video: stylize it as an image (Load Image and "
                         f"Stylize Frames, or an image file as output on the command line).")
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
        except av.FFmpegError:
            raise VideoError(f"cannot read video {path}: it is damaged or truncated: choose another "
                             f"file, or encode it again.") from None
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
        except av.FFmpegError:
            raise VideoError(f"cannot decode video {path}: it is damaged or truncated: choose another file, or "
                             f"encode it again.") from None
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
        except av.FFmpegError:
            raise VideoError(f"cannot decode video {path}: it is damaged or truncated: choose another file, or "
                             f"encode it again.") from None
    finally:
        if container is not None:
            container.close()


def iter_frame_chunks(path: PathLike, size: int) -> Iterator[list[np.ndarray]]:
    """The frames of a video as lists of ``size`` consecutive ``(H, W, 3)`` uint8 RGB frames (the
    last list may be shorter), decoded one at a time."""
    chunk: list[np.ndarray] = []
    for _, rgb in iter_frames(path):
        chunk.append(rgb)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _SeekMissed(Exception):
    """The seek landed after the wanted frame: decode from the start instead."""


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
                rotation: Optional[int] = None, audio: Optional[np.ndarray] = None) -> Path:
    """Write ``(H, W, 3)`` uint8 RGB frames to a video, optionally with an audio track.

    Frames are encoded one at a time (an iterator keeps memory flat); ``full_range`` tags and
    converts full-range YUV; ``rotation`` sets a display rotation (degrees). Audio: ``audio``, a
    ``(channels, samples)`` float waveform in [-1, 1] at ``sample_rate`` (cut to the video's
    length), or ``tone_hz``, a mono sine track exactly as long as the video.

    Raises:
        VideoError: no frame, or an audio waveform that is not ``(channels, samples)`` with 1, 2 or
            6 channels.
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
        if audio is not None:
            audio = np.asarray(audio, dtype=np.float32)
            if audio.ndim != 2 or audio.shape[0] not in _LAYOUTS or audio.shape[1] == 0:
                raise VideoError(f"the audio waveform must be (channels, samples) with 1, 2 or 6 channels and at "
                                 f"least one sample, got shape {audio.shape}")
            a = c.add_stream(audio_codec, rate=sample_rate, layout=_LAYOUTS[audio.shape[0]])
        elif tone_hz:
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
            if audio is not None:
                wave = np.ascontiguousarray(np.clip(audio[:, :total], -1.0, 1.0))
                total = wave.shape[1]
            else:
                t = np.arange(total) / sample_rate
                wave = (0.3 * np.sin(2 * np.pi * float(tone_hz) * t)).astype(np.float32)[None]
            for s in range(0, total, size):
                block = np.ascontiguousarray(wave[:, s:s + size])
                af = av.AudioFrame.from_ndarray(block, format="fltp", layout=_LAYOUTS[wave.shape[0]])
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

    p = check_file(path, "image")
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
