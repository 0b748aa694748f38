"""The official VToonify face crop of images and video clips, and pasting results back.

Details: docs/design.md, ``vtoonify_core/faces/crop.py``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np

from ..errors import NoFaceError
from ..types import DEFAULT_FACE_PADDING, SCALE
from .base import FACE_ORDERS, NUM_LANDMARKS, Face, FaceBackend, as_rgb_uint8, no_face_message, pick_face
from .detect import detect_faces

logger = logging.getLogger("vtoonify")

#: Eye distance (px) of the rescaled frame.
TARGET_EYE_DISTANCE = 64.0
#: Official crop padding around the eye midpoint: (left, right, top, bottom), in rescaled px.
DEFAULT_PADDING = (DEFAULT_FACE_PADDING,) * 4
#: The official pre-blur kernel (column vector, used for x and y).
BLUR_KERNEL = np.array([[0.125], [0.375], [0.375], [0.125]])
#: Crop modes of :func:`clip_geometry`.
CLIP_MODES = ("first", "track")

FacePadding = Union[Sequence[int], tuple[int, int, int, int]]


@dataclass(frozen=True)
class CropGeometry:
    """How a frame is blurred, resized and cropped.

    The crop is ``blur(frame, blur_passes)`` resized to ``(width, height)`` with
    ``cv2.resize`` (bilinear), then ``[top:bottom, left:right]``. In track mode the window may
    reach outside the resized frame (when it is smaller than the window); the missing part is
    filled by replicating the border.

    Attributes:
        scale: ``64 / eye distance`` (the official ``scale``).
        height, width: size of the resized frame, ``round(source * scale)``.
        top, bottom, left, right: crop window in the resized frame (bottom/right exclusive).
        source_height, source_width: size of the original frame.
        blur_passes: how many times the ``[.125, .375, .375, .125]`` blur runs first (0-2).
    """

    scale: float
    height: int
    width: int
    top: int
    bottom: int
    left: int
    right: int
    source_height: int
    source_width: int
    blur_passes: int

    @property
    def crop_height(self) -> int:
        """Height of the crop, ``bottom - top``."""
        return self.bottom - self.top

    @property
    def crop_width(self) -> int:
        """Width of the crop, ``right - left``."""
        return self.right - self.left

    @property
    def crop_shape(self) -> tuple[int, int]:
        """``(crop_height, crop_width)``."""
        return (self.crop_height, self.crop_width)

    @property
    def resize_ratio(self) -> tuple[float, float]:
        """Actual ``(x, y)`` resize factors, ``(width / source_width, height / source_height)``."""
        return (self.width / self.source_width, self.height / self.source_height)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The part of the original frame the crop shows, ``(x0, y0, x1, y1)`` (pixel edges).

        This is the crop window mapped back to original pixels, moved by :attr:`blur_shift`.
        """
        sx, sy = self.resize_ratio
        d = self.blur_shift
        return (self.left / sx - d, self.top / sy - d, self.right / sx - d, self.bottom / sy - d)

    @property
    def blur_shift(self) -> float:
        """Shift (original px, right and down) of the content caused by the pre-blur.

        The official kernel ``[.125, .375, .375, .125]`` has an even length and OpenCV anchors it
        at index 2, so each pass moves the image content by half a pixel towards +x and +y.
        """
        return 0.5 * self.blur_passes

    def to_crop(self, points: Any) -> np.ndarray:
        """Map ``(..., 2)`` ``(x, y)`` points of the original frame to where they appear in the crop.

        Includes the resize (pixel-centre convention of ``cv2.resize``), the window offset and
        :attr:`blur_shift`.
        """
        pts = np.asarray(points, dtype=np.float64)
        sx, sy = self.resize_ratio
        d = self.blur_shift
        out = np.empty_like(pts)
        out[..., 0] = (pts[..., 0] + d + 0.5) * sx - 0.5 - self.left
        out[..., 1] = (pts[..., 1] + d + 0.5) * sy - 0.5 - self.top
        return out

    def from_crop(self, points: Any) -> np.ndarray:
        """Map ``(..., 2)`` ``(x, y)`` points of the crop back to the original frame (inverse of
        :meth:`to_crop`)."""
        pts = np.asarray(points, dtype=np.float64)
        sx, sy = self.resize_ratio
        d = self.blur_shift
        out = np.empty_like(pts)
        out[..., 0] = (pts[..., 0] + self.left + 0.5) / sx - 0.5 - d
        out[..., 1] = (pts[..., 1] + self.top + 0.5) / sy - 0.5 - d
        return out


def _padding(padding: FacePadding) -> tuple[int, int, int, int]:
    pad = tuple(int(p) for p in padding)
    if len(pad) != 4 or min(pad) < 0:
        raise ValueError(f"padding must be 4 non-negative integers (left, right, top, bottom), got {padding!r}")
    if pad[0] + pad[1] < 8 or pad[2] + pad[3] < 8:
        raise ValueError(f"padding {padding!r} leaves no room for a crop (need at least 8 px per axis)")
    return pad  # type: ignore[return-value]


def _blur_passes(scale: float) -> int:
    return int(scale <= 0.75) + int(scale <= 0.375)


def _eye_scale_centre(landmarks: Any) -> tuple[float, np.ndarray]:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must have shape (68, 2), got {lm.shape}")
    eye_l = lm[36:42].mean(axis=0)
    eye_r = lm[42:48].mean(axis=0)
    dist = eye_r[0] - eye_l[0]
    if not (np.isfinite(dist) and dist > 0):
        raise ValueError(
            "the eyes of this face are not side by side (right eye not to the right of the left "
            "one): the face must be roughly frontal and upright"
        )
    return TARGET_EYE_DISTANCE / dist, (eye_l + eye_r) / 2.0


def crop_geometry(landmarks: Any, image_shape: Sequence[int], padding: FacePadding = DEFAULT_PADDING) -> CropGeometry:
    """The official crop geometry of a face (``get_video_crop_parameter``).

    Args:
        landmarks: ``(68, 2)`` points of the face, in pixels of the frame.
        image_shape: shape of the frame, ``(H, W[, C])``.
        padding: ``(left, right, top, bottom)`` around the eye midpoint, in rescaled pixels.

    Raises:
        ValueError: bad landmarks (e.g. not frontal) or a crop that would be empty.
    """
    pl, pr, pt, pb = _padding(padding)
    src_h, src_w = int(image_shape[0]), int(image_shape[1])
    scale, centre = _eye_scale_centre(landmarks)
    cx, cy = float(centre[0] * scale), float(centre[1] * scale)
    h, w = round(src_h * scale), round(src_w * scale)
    left = max(round(cx - pl), 0) // 8 * 8
    right = min(round(cx + pr), w) // 8 * 8
    top = max(round(cy - pt), 0) // 8 * 8
    bottom = min(round(cy + pb), h) // 8 * 8
    if right <= left or bottom <= top:
        raise ValueError(
            f"the face crop is empty (window x {left}..{right}, y {top}..{bottom} in a {w}x{h} "
            f"rescaled frame): the face is too close to the border or the frame too small"
        )
    return CropGeometry(float(scale), h, w, top, bottom, left, right, src_h, src_w, _blur_passes(scale))


def window_geometry(
    centre: Sequence[float],
    scale: float,
    image_shape: Sequence[int],
    crop_shape: Sequence[int],
    anchor: Sequence[float] = (0.5, 0.5),
    blur_passes: Optional[int] = None,
) -> CropGeometry:
    """A fixed-size crop window placed on a face (used by tracking).

    The frame is resized by ``scale``; the window of ``crop_shape = (height, width)`` is placed
    so that the eye midpoint ``centre`` (original pixels) falls at ``anchor`` (fractions of the
    window), then shifted to stay inside the resized frame where the frame is large enough.

    Args:
        centre: eye midpoint ``(x, y)`` in original pixels.
        scale: resize factor.
        image_shape: ``(H, W[, C])`` of the original frame.
        crop_shape: ``(height, width)`` of the window.
        anchor: where the eye midpoint sits in the window, ``(fx, fy)``.
        blur_passes: override of the pre-blur count (default: official rule from ``scale``).
    """
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be positive, got {scale!r}")
    src_h, src_w = int(image_shape[0]), int(image_shape[1])
    ch, cw = int(crop_shape[0]), int(crop_shape[1])
    if ch < 1 or cw < 1:
        raise ValueError(f"crop_shape must be positive, got {crop_shape!r}")
    h, w = max(round(src_h * scale), 1), max(round(src_w * scale), 1)

    def place(c: float, frac: float, size: int, extent: int) -> int:
        start = round(c * scale - frac * size)
        lo, hi = min(0, extent - size), max(0, extent - size)
        return int(min(max(start, lo), hi))

    left = place(float(centre[0]), float(anchor[0]), cw, w)
    top = place(float(centre[1]), float(anchor[1]), ch, h)
    passes = _blur_passes(scale) if blur_passes is None else int(blur_passes)
    return CropGeometry(float(scale), h, w, top, top + ch, left, left + cw, src_h, src_w, passes)


def apply_crop(frame: np.ndarray, geometry: CropGeometry) -> np.ndarray:
    """Blur, resize and crop a frame as the official code does.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB, the size the geometry was made for.
        geometry: from :func:`crop_geometry`, :func:`window_geometry` or :func:`clip_geometry`.

    Returns:
        ``(crop_height, crop_width, 3)`` uint8 RGB.
    """
    img = as_rgb_uint8(frame, "frame")
    if img.shape[:2] != (geometry.source_height, geometry.source_width):
        raise ValueError(
            f"frame is {img.shape[1]}x{img.shape[0]} but the crop geometry was made for "
            f"{geometry.source_width}x{geometry.source_height} frames"
        )
    for _ in range(geometry.blur_passes):
        img = cv2.sepFilter2D(img, -1, BLUR_KERNEL, BLUR_KERNEL)
    img = cv2.resize(img, (geometry.width, geometry.height))
    t, b, l, r = geometry.top, geometry.bottom, geometry.left, geometry.right
    if t >= 0 and l >= 0 and b <= geometry.height and r <= geometry.width:
        return np.ascontiguousarray(img[t:b, l:r])
    # Window partly outside the resized frame: replicate the border.
    it, ib = min(max(t, 0), geometry.height - 1), max(min(b, geometry.height), 1)
    il, ir = min(max(l, 0), geometry.width - 1), max(min(r, geometry.width), 1)
    inner = img[it:max(ib, it + 1), il:max(ir, il + 1)]
    return cv2.copyMakeBorder(
        inner,
        it - t,
        b - (it + inner.shape[0]),
        il - l,
        r - (il + inner.shape[1]),
        cv2.BORDER_REPLICATE,
    )


def official_crop(
    frame: np.ndarray, landmarks: Any, padding: FacePadding = DEFAULT_PADDING
) -> tuple[np.ndarray, CropGeometry]:
    """Rescale and crop a frame around a face, exactly as the official code does.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        landmarks: ``(68, 2)`` points of the face in pixels of ``frame``.
        padding: ``(left, right, top, bottom)`` around the eye midpoint, rescaled pixels.

    Returns:
        ``(crop, geometry)``: the ``(h, w, 3)`` uint8 crop (sides multiples of 8) and its
        :class:`CropGeometry`.
    """
    img = as_rgb_uint8(frame, "frame")
    geometry = crop_geometry(landmarks, img.shape, padding)
    return apply_crop(img, geometry), geometry


def _edge_weights(n: int, a: float, b: float, feather: float, touch_lo: bool, touch_hi: bool) -> np.ndarray:
    """Per-pixel coverage of the span [a, b) over pixels [i, i+1), optionally feathered.

    A side that touches the frame border (``touch_lo``/``touch_hi``) is extended to it and
    never feathered.
    """
    a = -math.inf if touch_lo else a
    b = math.inf if touch_hi else b
    edges = np.arange(n, dtype=np.float64)
    cover = np.clip(np.minimum(edges + 1.0, b) - np.maximum(edges, a), 0.0, 1.0)
    if feather > 0:
        centres = edges + 0.5
        if not touch_lo:
            cover = np.minimum(cover, np.clip((centres - a) / feather, 0.0, 1.0))
        if not touch_hi:
            cover = np.minimum(cover, np.clip((b - centres) / feather, 0.0, 1.0))
    return cover


def paste_back(
    original: np.ndarray, stylized: np.ndarray, geometry: CropGeometry, feather: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Put a stylized crop back into the original frame.

    The stylized image covers the crop (usually at :data:`~vtoonify_core.types.SCALE` = 4 times its size;
    any factor equal on both axes is accepted); it is resampled onto :attr:`CropGeometry.box`
    in the original frame (area-averaged when shrinking, then bilinear), the exact inverse of
    the crop's resize, offset and pre-blur shift.

    Args:
        original: ``(H, W, 3)`` uint8 RGB frame the geometry was made for.
        stylized: ``(k * crop_height, k * crop_width, 3)`` uint8 RGB.
        geometry: the geometry of the crop.
        feather: width in original pixels of a linear fade at the window edges that lie inside
            the frame (0: hard edge; edges on the frame border are never faded).

    Returns:
        ``(composite, mask)``: the ``(H, W, 3)`` uint8 frame and the ``(H, W)`` float32 weight
        of the stylized image in it (1 inside the window, fractional on its edge pixels).
    """
    base = as_rgb_uint8(original, "original")
    sty = as_rgb_uint8(stylized, "stylized")
    H, W = base.shape[:2]
    warped, m, (iy0, iy1, ix0, ix1) = warp_to_frame(sty, geometry, (H, W), feather)
    composite = base.copy()
    mask = np.zeros((H, W), np.float32)
    if warped is None:
        return composite, mask
    region = base[iy0:iy1, ix0:ix1].astype(np.float32)
    blended = region + (warped.astype(np.float32) - region) * m[:, :, None]
    composite[iy0:iy1, ix0:ix1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    mask[iy0:iy1, ix0:ix1] = m
    return composite, mask


def warp_to_frame(
    stylized: np.ndarray, geometry: CropGeometry, frame_size: Sequence[int], feather: float = 0.0
) -> tuple[Optional[np.ndarray], np.ndarray, tuple[int, int, int, int]]:
    """Resample a stylized crop onto the part of the original frame it covers (see :func:`paste_back`).

    Args:
        stylized: ``(k * crop_height, k * crop_width, 3)`` uint8 or float32 image.
        geometry: the geometry of the crop.
        frame_size: ``(H, W)`` of the original frame (must be the geometry's).
        feather: linear fade width (original px) at window edges inside the frame.

    Returns:
        ``(warped, weight, (y0, y1, x0, x1))``: the stylized image on the frame rows ``y0:y1`` and
        columns ``x0:x1`` (``None`` when the window misses the frame), its coverage weight there
        (float32, 1 inside, fractional/faded on the edges), and the region.
    """
    H, W = int(frame_size[0]), int(frame_size[1])
    if (H, W) != (geometry.source_height, geometry.source_width):
        raise ValueError(
            f"original is {W}x{H} but the crop geometry was made for "
            f"{geometry.source_width}x{geometry.source_height} frames"
        )
    if feather < 0:
        raise ValueError(f"feather must be >= 0, got {feather!r}")
    sty = stylized
    hs, ws = sty.shape[:2]
    fx, fy = ws / geometry.crop_width, hs / geometry.crop_height
    if abs(fx - fy) > 0.01 * max(fx, fy):
        raise ValueError(
            f"stylized image {ws}x{hs} does not have the aspect of the crop "
            f"{geometry.crop_width}x{geometry.crop_height} (expected e.g. "
            f"{SCALE * geometry.crop_width}x{SCALE * geometry.crop_height})"
        )
    sx, sy = geometry.resize_ratio
    d = geometry.blur_shift
    # Original pixel x -> stylized pixel u (the inverse of the crop, see CropGeometry.to_crop):
    #   u = ((x + d + 0.5) * sx - left) * fx - 0.5
    ax, bx = sx * fx, ((d + 0.5) * sx - geometry.left) * fx - 0.5
    ay, by = sy * fy, ((d + 0.5) * sy - geometry.top) * fy - 0.5
    if ax > 1.0 or ay > 1.0:  # shrinking: average first, so bilinear sampling does not alias
        nw, nh = max(1, round(ws / max(ax, 1.0))), max(1, round(hs / max(ay, 1.0)))
        rx, ry = nw / ws, nh / hs
        sty = cv2.resize(sty, (nw, nh), interpolation=cv2.INTER_AREA)
        ax, bx = ax * rx, (bx + 0.5) * rx - 0.5
        ay, by = ay * ry, (by + 0.5) * ry - 0.5

    x0, y0, x1, y1 = geometry.box
    # Window sides on the resized frame's border reach the original frame's border.
    t_x0, t_x1 = geometry.left <= 0, geometry.right >= geometry.width
    t_y0, t_y1 = geometry.top <= 0, geometry.bottom >= geometry.height
    ix0, iy0 = (0 if t_x0 else max(int(math.floor(x0)), 0)), (0 if t_y0 else max(int(math.floor(y0)), 0))
    ix1, iy1 = (W if t_x1 else min(int(math.ceil(x1)), W)), (H if t_y1 else min(int(math.ceil(y1)), H))
    if ix1 <= ix0 or iy1 <= iy0:
        return None, np.zeros((0, 0), np.float32), (0, 0, 0, 0)
    matrix = np.array([[ax, 0.0, bx + ax * ix0], [0.0, ay, by + ay * iy0]], dtype=np.float64)
    warped = cv2.warpAffine(
        sty, matrix, (ix1 - ix0, iy1 - iy0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    wx = _edge_weights(W, x0, x1, feather, t_x0, t_x1)[ix0:ix1]
    wy = _edge_weights(H, y0, y1, feather, t_y0, t_y1)[iy0:iy1]
    m = (wy[:, None] * wx[None, :]).astype(np.float32)
    return warped, m, (iy0, iy1, ix0, ix1)


@dataclass(frozen=True, eq=False)
class ClipGeometry:
    """Crop geometry of every frame of a clip.

    Attributes:
        mode: ``'first'`` or ``'track'``.
        geometries: one :class:`CropGeometry` per frame; all crops have the same size.
        faces: per frame, the face the geometry follows (``None`` where no face was found or,
            in ``'first'`` mode, where none was searched).
        reference_index: the first frame with a usable face. The official code drops the
            frames before it; here they get the first geometry (drop them for strict parity).
    """

    mode: str
    geometries: tuple[CropGeometry, ...]
    faces: tuple[Optional[Face], ...]
    reference_index: int

    @property
    def reference_face(self) -> Face:
        """The face of :attr:`reference_index` (e.g. for the pSp style code)."""
        face = self.faces[self.reference_index]
        if face is None:  # only possible for a hand-made ClipGeometry
            raise ValueError(f"no face recorded for reference frame {self.reference_index}")
        return face

    @property
    def crop_shape(self) -> tuple[int, int]:
        """``(height, width)`` of every crop."""
        return self.geometries[0].crop_shape

    def __len__(self) -> int:
        return len(self.geometries)


def _smooth(t: np.ndarray, values: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted local linear regression of ``values`` (n, k) sampled at times ``t``."""
    if sigma <= 0 or len(t) < 2:
        return values.copy()
    out = np.empty_like(values)
    for i, ti in enumerate(t):
        dt = t - ti
        wgt = np.exp(-0.5 * (dt / sigma) ** 2)
        s0, s1, s2 = wgt.sum(), (wgt * dt).sum(), (wgt * dt * dt).sum()
        y0 = (wgt[:, None] * values).sum(axis=0)
        y1 = ((wgt * dt)[:, None] * values).sum(axis=0)
        det = s0 * s2 - s1 * s1
        if det <= 1e-9 * s0 * s0:  # one effective sample: weighted mean
            out[i] = y0 / s0
        else:
            out[i] = (s2 * y0 - s1 * y1) / det
    return out


def _frames_list(frames: Any) -> list[np.ndarray]:
    if isinstance(frames, np.ndarray):
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4:
            raise ValueError(f"frames must be (N, H, W, 3), got {frames.shape}")
    seq = [as_rgb_uint8(f, f"frame {i}") for i, f in enumerate(frames)]
    if not seq:
        raise ValueError("the clip has no frames")
    shape = seq[0].shape
    for i, f in enumerate(seq):
        if f.shape != shape:
            raise ValueError(f"all frames must have the same size: frame 0 is {shape}, frame {i} is {f.shape}")
    return seq


def clip_geometry(
    frames: Union[np.ndarray, Sequence[np.ndarray]],
    mode: str = "first",
    *,
    padding: FacePadding = DEFAULT_PADDING,
    backend: Union[str, FaceBackend] = "dlib",
    upsample: int = 1,
    pick: str = "score",
    index: int = 0,
    smoothing: float = 3.0,
) -> ClipGeometry:
    """Crop geometry of every frame of a clip.

    Args:
        frames: ``(N, H, W, 3)`` uint8 RGB array or a sequence of such frames.
        mode: ``'first'``: the official rule, the geometry of the first frame with a face for
            all frames (only frames up to that one are searched). ``'track'``: a face is detected
            in every frame and followed (the nearest face to the previous one), its eye midpoint
            and log-scale are smoothed over time (Gaussian-weighted local linear fit,
            ``smoothing`` = sigma in frames, 0 = off), and a window of the reference crop size
            is placed on it; frames without a face keep the previous geometry.
        padding: ``(left, right, top, bottom)`` as in :func:`crop_geometry`.
        backend, upsample: as in :func:`vtoonify_core.faces.detect_faces`.
        pick, index: which face when there are several (:func:`vtoonify_core.faces.pick_face`);
            ``pick='official'`` reproduces the official choice. Frames with fewer than
            ``index + 1`` faces do not count as having a face for the reference.
        smoothing: temporal smoothing sigma in frames (track mode).

    Returns:
        A :class:`ClipGeometry` with one geometry per frame, all of the same crop size.

    Raises:
        NoFaceError: no face in any frame (the message says what to do).
        FaceBackendUnavailableError: the backend is not installed.
        ValueError: bad arguments or frames of different sizes.
    """
    if mode not in CLIP_MODES:
        raise ValueError(f"Unknown crop mode {mode!r}; use one of {', '.join(CLIP_MODES)}")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing!r}")
    if pick not in FACE_ORDERS:
        raise ValueError(f"Unknown face order {pick!r}; use one of {', '.join(FACE_ORDERS)}")
    pad = _padding(padding)
    seq = _frames_list(frames)
    n, shape = len(seq), seq[0].shape
    where = "the image" if n == 1 else f"any of the {n} frames"

    def usable(faces: list[Face]) -> Optional[Face]:
        try:
            face = pick_face(faces, pick, index)
            crop_geometry(face.landmarks, shape, pad)
            return face
        except (NoFaceError, IndexError, ValueError):
            return None

    if mode == "first":
        for i, frame in enumerate(seq):
            face = usable(detect_faces(frame, backend=backend, upsample=upsample))
            if face is not None:
                geo = crop_geometry(face.landmarks, shape, pad)
                faces = tuple(face if k == i else None for k in range(n))
                logger.debug("clip crop from frame %d: %s", i, geo)
                return ClipGeometry("first", (geo,) * n, faces, i)
        raise NoFaceError(no_face_message(where, upsample))

    # Track mode: detect and follow.
    tracked: list[Optional[Face]] = [None] * n
    prev: Optional[Face] = None
    prev_i = -1
    for i, frame in enumerate(seq):
        faces = detect_faces(frame, backend=backend, upsample=upsample)
        chosen: Optional[Face] = None
        if prev is None:
            chosen = usable(faces)
        elif faces:
            eye_dist = float(np.hypot(*(prev.eye_right - prev.eye_left)))
            gate = 2.0 * eye_dist * max(1, i - prev_i)
            near = min(faces, key=lambda f: float(np.hypot(*(f.eye_center - prev.eye_center))))
            if float(np.hypot(*(near.eye_center - prev.eye_center))) <= gate:
                chosen = near
            else:
                chosen = usable(faces)
            if chosen is not None:
                try:
                    _eye_scale_centre(chosen.landmarks)
                except ValueError:
                    chosen = None
        if chosen is not None:
            tracked[i], prev, prev_i = chosen, chosen, i
    found = [i for i in range(n) if tracked[i] is not None]
    if not found:
        raise NoFaceError(no_face_message(where, upsample))
    ref = found[0]
    ref_geo = crop_geometry(tracked[ref].landmarks, shape, pad)  # type: ignore[union-attr]
    anchor = (pad[0] / (pad[0] + pad[1]), pad[2] / (pad[2] + pad[3]))
    samples = []
    for i in found:
        scale, centre = _eye_scale_centre(tracked[i].landmarks)  # type: ignore[union-attr]
        samples.append((centre[0], centre[1], math.log(scale)))
    smooth = _smooth(np.array(found, dtype=np.float64), np.array(samples, dtype=np.float64), smoothing)
    per_found = {
        i: window_geometry(
            (row[0], row[1]), math.exp(row[2]), shape, ref_geo.crop_shape, anchor, ref_geo.blur_passes
        )
        for i, row in zip(found, smooth)
    }
    geometries: list[CropGeometry] = []
    last = per_found[ref]
    for i in range(n):
        last = per_found.get(i, last)
        geometries.append(last)
    logger.debug("tracked a face in %d of %d frames", len(found), n)
    return ClipGeometry("track", tuple(geometries), tuple(tracked), ref)


def crop_clip(frames: Union[np.ndarray, Sequence[np.ndarray]], clip: ClipGeometry) -> np.ndarray:
    """Crop every frame of a clip with its geometry.

    Returns:
        ``(N, crop_height, crop_width, 3)`` uint8 RGB.
    """
    seq = _frames_list(frames)
    if len(seq) != len(clip):
        raise ValueError(f"{len(seq)} frames but the clip geometry has {len(clip)}")
    return np.stack([apply_crop(f, g) for f, g in zip(seq, clip.geometries)])
