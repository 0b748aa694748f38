"""Encoding the stylized frames: codec settings per container and the segment writer that keeps
the source's timestamps and colour tags.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Optional

from ..errors import VideoError
from .files import _require_av

logger = logging.getLogger("vtoonify")
#: Output containers and their default video codec.
CONTAINERS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264", ".webm": "libvpx-vp9"}
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
