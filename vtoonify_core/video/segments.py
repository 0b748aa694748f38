"""Segment files and the final mux: each chunk's frames encoded into a segment with the source's
timestamps and colour tags, then the segments' packets (no re-encoding) and the source's audio
packets interleaved by time into the output file.
"""
from __future__ import annotations

import heapq
import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from ..errors import VideoError
from ..types import PathLike
from .encode import AUDIO_FALLBACK
from .files import _RGB_FORMATS, _SWS_COLORSPACE, _require_av
from .jobs import SEGMENT_FORMAT, VideoJob

logger = logging.getLogger("vtoonify")


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


def _mux_with_audio(tmp: Path, ext: str, source: PathLike, template: Any, rate: Any,
                    video_packets: Callable[[Any], Iterator[Any]], transcode_audio: bool,
                    time_base: Any = None) -> None:
    """Write ``tmp``: a video stream made from ``template`` (a stream whose codec is copied) fed by
    ``video_packets(out_stream)``, and the audio streams of ``source`` (:func:`_audio_plan`), the
    packets interleaved by time. ``rate`` (unless ``None``) sets the frame rate tag (e.g. Matroska's
    default duration)."""
    av = _require_av()
    options = {"movflags": "+faststart"} if ext in (".mp4", ".m4v", ".mov") else {}
    with av.open(str(source), "r") as inp, av.open(str(tmp), "w", options=options) as out:
        vstream = out.add_stream_from_template(template)
        if time_base is not None:
            vstream.time_base = time_base
        if rate is not None:
            vstream.codec_context.framerate = rate
        plan = _audio_plan(inp, out, ext, transcode_audio)
        for p in heapq.merge(video_packets(vstream), _audio_packets(inp, plan), key=_packet_time):
            out.mux(p)


def _mux(job: VideoJob, tmp: Path, first: int, transcode_audio: bool) -> None:
    av = _require_av()
    with av.open(str(job.segment_path(first)), "r") as seg:  # the segments share one codec setup
        _mux_with_audio(tmp, Path(job.output).suffix.lower(), job.source, seg.streams.video[0], job.info.rate,
                        lambda vstream: _video_packets(job, vstream), transcode_audio, job.info.time_base)


def mux_job(job: VideoJob) -> Path:
    """Join the job's segments (packets copied, not re-encoded) and the source's audio into the output.

    Packets are interleaved by time; the output is written under a temporary name and renamed.
    When the container refuses a copied audio track, the mux is redone with the audio re-encoded.

    Raises:
        VideoError: a chunk is not finished, or a file cannot be read or written.
    """
    _require_av()
    missing = job.pending
    if missing:
        raise VideoError(f"cannot mux {job.output}: chunks {missing[:5]} are not finished")
    first = next((k for k, c in enumerate(job.chunks) if c.written), None)
    if first is None:
        raise VideoError(f"no frame was stylized for {job.output} (the source decoded to 0 frames)")
    return _write_muxed(Path(job.output), lambda tmp, transcode: _mux(job, tmp, first, transcode_audio=transcode),
                        retry_audio=bool(job.info.audio))


def _write_muxed(dst: Path, mux: Callable[[Path, bool], None], retry_audio: bool = True) -> Path:
    """Run ``mux(tmp, transcode_audio)`` into a temporary file beside ``dst`` and rename it to ``dst``:
    when copying the audio packets fails, once more with the audio re-encoded (``retry_audio``);
    on any failure the temporary file is removed and ``dst`` is left as it was."""
    av = _require_av()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.stem}.partial{dst.suffix}")
    try:
        try:
            mux(tmp, False)
        except av.FFmpegError as exc:
            if not retry_audio:
                raise
            logger.warning("VToonify: copying the audio into %s failed (%s); re-encoding it", dst, exc)
            tmp.unlink(missing_ok=True)
            mux(tmp, True)
    except av.FFmpegError as exc:
        tmp.unlink(missing_ok=True)
        raise VideoError(f"cannot write {dst}: {exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dst)
    return dst


def mux_source_audio(video_file: PathLike, source: PathLike, output: PathLike) -> Path:
    """Write ``output``: the video stream of ``video_file`` and every audio stream of ``source``,
    packets copied (not re-encoded) and interleaved by time, as :func:`mux_job` joins a job's
    segments and audio. For a video encoded in one piece (e.g. by
    :func:`~vtoonify_core.video.files.write_video`) from the frames of ``source``.

    The output is written under a temporary name and renamed; when its container refuses a copied
    audio track, the audio is re-encoded (:data:`AUDIO_FALLBACK`, AAC by default).

    Raises:
        VideoError: a file cannot be read or written.
    """
    av = _require_av()
    ext = Path(output).suffix.lower()

    def mux(tmp: Path, transcode_audio: bool) -> None:
        with av.open(str(video_file), "r") as vid:
            vin = vid.streams.video[0]

            def video_packets(vout: Any) -> Iterator[Any]:
                for p in vid.demux(vin):
                    if p.size:
                        p.stream = vout
                        yield p

            _mux_with_audio(tmp, ext, source, vin, vin.average_rate or None, video_packets, transcode_audio)

    return _write_muxed(Path(output), mux)
