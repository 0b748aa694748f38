"""Which faces of a clip are stylized: :class:`FaceOptions` (detector, face order and index, one face
or every face, crop fixed from the first frame or tracked) and :func:`track_faces`, which gives the
:class:`FaceTracks`: one crop geometry per frame and face, every crop of the same size.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence, Union

import numpy as np

from ..errors import InputError, NoFaceError
from ..types import DEFAULT_FACE_PADDING
from .base import FACE_ORDERS, Face, FaceBackend, no_face_message, order_faces
from .crop import CLIP_MODES, ClipGeometry, CropGeometry, _frames_list, clip_geometry, paste_back
from .detect import detect_faces, get_backend

logger = logging.getLogger("vtoonify")


@dataclass(frozen=True)
class FaceOptions:
    """How faces are found and chosen.

    Attributes:
        backend: face detector (a registered backend name: ``'dlib'``, ``'mediapipe'``).
        pick: face order, one of :data:`~vtoonify_core.faces.FACE_ORDERS` (``'official'``: the last face
            the detector returns, as the official code).
        index: which face in that order (0 = first); ignored with ``every_face``.
        every_face: stylize every face of the reference frame (each its own track), not one.
        mode: ``'first'`` (the official rule: the crop of the first frame with the face, for all
            frames) or ``'track'`` (a crop per frame, following the face, smoothed over time).
        smoothing: track mode: Gaussian sigma in frames of the temporal smoothing (0 = off).
        padding: pixels kept on each side of the eye centre after rescaling the eyes to 64 px apart.
        upsample: detector up-sampling steps (more finds smaller faces, slower).
    """

    backend: str = "dlib"
    pick: str = "score"
    index: int = 0
    every_face: bool = False
    mode: str = "first"
    smoothing: float = 3.0
    padding: int = DEFAULT_FACE_PADDING
    upsample: int = 1

    def checked(self) -> "FaceOptions":
        """The options, checked (each bad value raises :class:`InputError` naming it)."""
        if self.pick not in FACE_ORDERS:
            raise InputError("face", f"unknown face order {self.pick!r}; use one of {', '.join(FACE_ORDERS)}.")
        if self.mode not in CLIP_MODES:
            raise InputError("crop", f"unknown crop mode {self.mode!r}; use one of {', '.join(CLIP_MODES)}.")
        if isinstance(self.index, bool) or int(self.index) != self.index or self.index < 0:
            raise InputError("index", f"must be an integer >= 0 (0 = the first face in the order), got {self.index!r}.")
        if not np.isfinite(self.smoothing) or self.smoothing < 0:
            raise InputError("smoothing", f"must be >= 0 frames (0 = no smoothing), got {self.smoothing!r}.")
        if int(self.padding) != self.padding or self.padding < 8:
            raise InputError("face_padding", f"must be an integer >= 8, got {self.padding!r}.")
        if int(self.upsample) != self.upsample or not 0 <= self.upsample <= 4:
            raise InputError("upsample", f"must be 0..4, got {self.upsample!r}.")
        return self


def whole_frame_geometry(height: int, width: int) -> CropGeometry:
    """The 'geometry' of a whole frame stylized as it is (no rescale, no crop, no blur)."""
    return CropGeometry(1.0, int(height), int(width), 0, int(height), 0, int(width), int(height), int(width), 0)


@dataclass(frozen=True, eq=False)
class FaceTracks:
    """The crops of a clip: one :class:`ClipGeometry` per face, every crop of the same size.

    Stylized items are in *face-major* order: all frames of face 0, then all frames of face 1, ...
    (item ``k * num_frames + i`` is face ``k`` in frame ``i``).

    Attributes:
        options: the options that made them.
        source_size: ``(H, W)`` of the frames.
        clips: one clip geometry per face (same length, same crop size).
        candidates: the faces of the reference frame in the chosen order (for previews).
        whole: the frames are stylized whole (no face crop).
    """

    options: FaceOptions
    source_size: tuple[int, int]
    clips: tuple[ClipGeometry, ...]
    candidates: tuple[Face, ...] = field(default=())
    whole: bool = False

    @property
    def num_faces(self) -> int:
        """How many faces are stylized per frame."""
        return len(self.clips)

    @property
    def num_frames(self) -> int:
        """How many frames the tracks cover."""
        return len(self.clips[0])

    @property
    def num_items(self) -> int:
        """How many crops are stylized: ``num_faces * num_frames``."""
        return self.num_faces * self.num_frames

    @property
    def crop_shape(self) -> tuple[int, int]:
        """``(height, width)`` of every crop."""
        return self.clips[0].crop_shape

    def geometry(self, item: int) -> CropGeometry:
        """The crop geometry of stylized item ``item`` (face-major order)."""
        if not 0 <= item < self.num_items:
            raise IndexError(f"item {item} of {self.num_items}")
        k, i = divmod(item, self.num_frames)
        return self.clips[k].geometries[i]

    def region_mask(self, item: int) -> np.ndarray:
        """``(H, W)`` float32: where item ``item`` covers its frame (1 inside, edges fractional)."""
        H, W = self.source_size
        geo = self.geometry(item)
        dummy = np.zeros((geo.crop_height, geo.crop_width, 3), np.uint8)
        return paste_back(np.zeros((H, W, 3), np.uint8), dummy, geo)[1]

    def box(self, item: int = 0) -> tuple[int, int, int, int]:
        """``(x, y, width, height)`` in frame pixels of the region item ``item`` covers (mask >= 0.5)."""
        m = self.region_mask(item) >= 0.5
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        if len(rows) == 0:
            return 0, 0, 0, 0
        return int(cols[0]), int(rows[0]), int(cols[-1] + 1 - cols[0]), int(rows[-1] + 1 - rows[0])

    def reference(self, face: int = 0) -> tuple[int, Face]:
        """``(frame index, face)`` of the frame whose face set face ``face``'s first crop."""
        clip = self.clips[face]
        return clip.reference_index, clip.reference_face

    def check_frames(self, count: int, size: Sequence[int], input_name: str = "faces") -> None:
        """Refuse frames that are not the ones the tracks were made for (count or size)."""
        if tuple(int(v) for v in size[:2]) != tuple(self.source_size):
            raise InputError(input_name, f"the faces were found in {self.source_size[1]}x{self.source_size[0]} "
                                         f"frames but these are {int(size[1])}x{int(size[0])}: detect the faces on "
                                         f"the same frames.")
        if int(count) != self.num_frames:
            raise InputError(input_name, f"the faces were found in {self.num_frames} frame(s) but there are "
                                         f"{int(count)}: detect the faces on the same frames.")

    def describe(self) -> str:
        """One line: how many faces, crop size, mode."""
        if self.whole:
            return f"whole frames ({self.num_frames}), {self.source_size[1]}x{self.source_size[0]}"
        o = self.options
        which = "every face" if o.every_face else f"face {o.index} by {o.pick}"
        return (f"{self.num_faces} face(s) ({which}) in {self.num_frames} frame(s), crop {self.crop_shape[1]}x"
                f"{self.crop_shape[0]}, {'tracked' if o.mode == 'track' else 'fixed from the first frame'}")

    @classmethod
    def fixed(cls, geometry: CropGeometry, num_frames: int, reference_index: int = 0,
              face: Optional[Face] = None, options: Optional[FaceOptions] = None) -> "FaceTracks":
        """One face, one crop for every frame (what Stylize Frames' own face crop makes)."""
        faces = tuple(face if i == reference_index else None for i in range(num_frames))
        clip = ClipGeometry("first", (geometry,) * num_frames, faces, reference_index)
        return cls(options or FaceOptions(), (geometry.source_height, geometry.source_width), (clip,))

    @classmethod
    def whole_frames(cls, height: int, width: int, num_frames: int) -> "FaceTracks":
        """Whole frames stylized as they are (pasting back resizes them onto the frames)."""
        tracks = cls.fixed(whole_frame_geometry(height, width), num_frames)
        return replace(tracks, whole=True)


class _FrameMemo(FaceBackend):
    """A backend that detects each frame of a clip once (every face's track reuses the result) and reports
    each new frame: ``on_frame(frames_seen, total)`` before its detection (raise there to stop)."""

    def __init__(self, inner: FaceBackend, frames: Sequence[np.ndarray],
                 on_frame: Optional[Callable[[int, int], None]]) -> None:
        self.inner, self.name, self.on_frame = inner, inner.name, on_frame
        self.index = {id(f): i for i, f in enumerate(frames)}
        self.total = len(frames)
        self.found: dict[tuple[int, int], list[Face]] = {}

    def detect(self, image: np.ndarray, upsample: int = 1) -> list[Face]:
        i = self.index.get(id(image))
        if i is not None and (i, upsample) in self.found:
            return self.found[(i, upsample)]
        if self.on_frame is not None:
            self.on_frame(len(self.found), self.total)
        faces = self.inner.detect(image, upsample)
        if i is not None:
            self.found[(i, upsample)] = faces
        return faces


def _common_window(geo: CropGeometry, shape: tuple[int, int]) -> CropGeometry:
    """``geo``'s window resized (about its centre) to ``shape = (height, width)``."""
    ch, cw = shape
    top = int(round((geo.top + geo.bottom - ch) / 2))
    left = int(round((geo.left + geo.right - cw) / 2))
    return replace(geo, top=top, bottom=top + ch, left=left, right=left + cw)


def _index_error(found: int, o: FaceOptions) -> InputError:
    """The error for a face index beyond the ``found`` faces."""
    return InputError("index", f"face {o.index} (in {o.pick!r} order) was asked for, but no frame has that many "
                               f"faces (the first frame with faces has {found}: indices 0..{found - 1}): lower the "
                               f"index.")


def track_faces(frames: Union[np.ndarray, Sequence[np.ndarray]], options: FaceOptions = FaceOptions(), *,
                on_frame: Optional[Callable[[int, int], None]] = None) -> FaceTracks:
    """Find and choose the faces of a clip and their crop in every frame.

    One face: :func:`~vtoonify_core.faces.crop.clip_geometry` with the options. Every face: the faces of the
    first frame that has any, in the order ``options.pick``, each followed as its own track; their crops
    are brought to the size of the first face's crop (about the same centre), so all crops stack.

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB array or a sequence of such frames.
        options: see :class:`FaceOptions`.
        on_frame: ``on_frame(frames_detected, total)`` before each frame's detection (each frame is
            detected once, whatever the number of faces); raise there to stop (e.g. a cancelled run).

    Raises:
        NoFaceError: no face in any frame.
        InputError: bad options, or a face index beyond the faces found.
        FaceBackendUnavailableError: the detector is not installed (the message has the pip line).
    """
    o = options.checked()
    seq = _frames_list(frames)
    n = len(seq)
    pad = (int(o.padding),) * 4
    memo = _FrameMemo(get_backend(o.backend), seq, on_frame)
    kw = dict(mode=o.mode, padding=pad, backend=memo, upsample=o.upsample, smoothing=float(o.smoothing))
    where = "the image" if n == 1 else f"any of the {n} frames"
    candidates: list[Face] = []
    for frame in seq:
        candidates = order_faces(detect_faces(frame, backend=memo, upsample=o.upsample), o.pick)
        if candidates:
            break
    if not candidates:
        raise NoFaceError(no_face_message(where, o.upsample))
    indices = range(len(candidates)) if o.every_face else [int(o.index)]
    clips: list[ClipGeometry] = []
    for k in indices:
        try:
            clips.append(clip_geometry(seq, pick=o.pick, index=k, **kw))
        except NoFaceError:
            if o.every_face and clips:
                continue  # a face that cannot be cropped (too close to the border) is left out
            if not o.every_face and o.index >= len(candidates):
                raise _index_error(len(candidates), o) from None
            raise
    shape = clips[0].crop_shape
    clips = [c if c.crop_shape == shape else replace(c, geometries=tuple(_common_window(g, shape)
                                                                          for g in c.geometries)) for c in clips]
    tracks = FaceTracks(o, (seq[0].shape[0], seq[0].shape[1]), tuple(clips), tuple(candidates))
    logger.info("VToonify: %s", tracks.describe())
    return tracks
