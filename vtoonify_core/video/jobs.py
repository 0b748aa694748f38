"""Resumable video jobs: the settings that change the result (hashed), the crop geometry and
style found once per video, the chunks and which are done, saved as ``manifest.json``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch

from ..checks import check_batch_size, check_chunk_size, check_crop_mode, check_face_padding, check_style_degree
from ..errors import InputError, NoFaceError, VideoError
from ..faces.base import CROP_ADVICE, STYLE_ADVICE, no_face_message
from ..faces.crop import CropGeometry
from ..faces.detect import detect_faces
from ..frames import padded_size
from ..models.bundle import VToonifyModel
from ..pipeline.clip import FIT_ADVICE, plan_clip
from ..runtime.memory import check_fits
from ..styles.codes import check_style, extract_style, style_from_image
from ..styles.schedules import StyleSchedule, style_from_record, style_record, style_tensor
from ..types import DEFAULT_FACE_PADDING, PathLike, StyleCode
from .encode import EncodeSettings
from .files import VideoInfo, _probe, check_file, iter_frames

logger = logging.getLogger("vtoonify")

#: Version of the work-folder layout; a manifest of another version is not resumed.
FORMAT = "vtoonify-video/1"
#: Frames per chunk (one segment file, the unit of resumption).
DEFAULT_CHUNK_SIZE = 32
SEGMENT_FORMAT = "mp4"
MANIFEST = "manifest.json"
STYLE_FILE = "style.npy"


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
    style: Union[StyleCode, StyleSchedule]
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
            "style": dict(style_record(self.style), file=STYLE_FILE, sha256=_tensor_hash(style_tensor(self.style))),
            "chunks": [dataclasses.asdict(c) for c in self.chunks],
            "created": self.created,
        }

    def save(self) -> None:
        """Write ``style.npy`` (once) and ``manifest.json`` atomically into the work folder."""
        self.work_path.mkdir(parents=True, exist_ok=True)
        style_path = self.work_path / STYLE_FILE
        if not style_path.exists():
            tmp = style_path.with_suffix(".tmp.npy")
            np.save(tmp, style_tensor(self.style).numpy())
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
        try:
            style = style_from_record(wplus, s)
        except (InputError, KeyError, TypeError, ValueError) as exc:
            raise VideoError(f"{work / MANIFEST} holds a style that cannot be read back ({exc})") from None
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
                 chunk_size: int, encode: Mapping[str, Any], pick: str = "score", index: int = 0) -> dict:
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
        style_rule = {"code_sha256": _tensor_hash(style_tensor(style)), "backbone": style.backbone}
        if isinstance(style, StyleSchedule):
            style_rule["keyframes"] = [(int(k.frame), k.degree) for k in style.keyframes]
    elif model.backbone == "dualstylegan":
        style_rule = {"style_id": int(style_id), "color_transfer": bool(color_transfer), "from": "video"}
    else:
        style_rule = {"from": "video"}
    settings = {
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
    if (pick, int(index)) != ("score", 0):  # the default choice leaves the hashes of earlier jobs unchanged
        settings["face"] = {"pick": pick, "index": int(index)}
    return settings


def settings_hash(settings: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of :func:`job_settings`."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# preparing: geometry and style once per video


def frame_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]


def find_reference(path: PathLike, crop_mode: str, face_padding: int = DEFAULT_FACE_PADDING, *, backend="dlib",
                   pick: str = "score", index: int = 0, need_face: bool = True,
                   check_interrupt: Optional[Callable[[], None]] = None,
                   total: Optional[int] = None) -> tuple[Optional[int], Optional[np.ndarray], Optional[CropGeometry]]:
    """The first frame with a face: ``(index, frame, crop geometry)``, as the official video rule.

    Face mode: the first frame whose face gives a valid crop sets the geometry (:func:`plan_clip`
    on that frame). Whole mode with ``need_face``: the first frame with any face (for the style
    code). Whole mode without: ``(None, None, None)`` and nothing is decoded.

    Raises:
        NoFaceError: no usable face in any frame.
        InputError: faces were found but none could be cropped.
    """
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
                plan = plan_clip(frame_tensor(rgb), "face", face_padding=face_padding, backend=backend, pick=pick,
                                 index=index)
            except NoFaceError:
                continue
            except InputError as exc:
                too_small = exc
                continue
            return i, rgb, plan.geometry
        if len(detect_faces(rgb, backend=backend)) > index:
            return i, rgb, None
    if too_small is not None:
        raise InputError("video", f"faces were found in {path} but none can be cropped ({too_small}); use crop mode "
                                  f"'whole' or a larger face padding.")
    advice = CROP_ADVICE if crop_mode == "face" else STYLE_ADVICE  # whole mode needs the face for the style only
    raise NoFaceError(no_face_message(f"any of the {total or n} frames of {path}", advice=advice))


def check_settings(crop_mode: str, chunk_size: int, batch_size: int, face_padding: int) -> None:
    """The settings of a video job, each by the shared rule (:mod:`vtoonify_core.checks`)."""
    check_crop_mode(crop_mode)
    check_chunk_size(chunk_size, allow_none=False)
    check_batch_size(batch_size)
    if crop_mode == "face":
        check_face_padding(face_padding)


def prepare_job(model: VToonifyModel, source: PathLike, output: PathLike, style: Optional[StyleCode] = None,
                d_s: float = 0.5, *, style_id: int = 0, color_transfer: bool = False, crop_mode: str = "face",
                face_padding: int = DEFAULT_FACE_PADDING, chunk_size: int = DEFAULT_CHUNK_SIZE,
                encode: Optional[EncodeSettings] = None, work_dir: Optional[PathLike] = None, resume: bool = True,
                backend="dlib", check_interrupt: Optional[Callable[[], None]] = None, pick: str = "score",
                index: int = 0) -> VideoJob:
    """Plan a video job, or read back the unfinished one with the same settings.

    With ``resume`` and a manifest in ``work_dir`` whose settings hash matches, the saved job
    (geometry, style code, finished chunks) is returned and nothing is recomputed; otherwise the
    work folder is emptied and the video is probed, the first frame with a face found, the crop
    geometry (face mode) and the style code (when ``style`` is ``None``: from that frame, with
    ``style_id``/``color_transfer`` for VToonify-D) computed, and the manifest written. ``pick``/``index``
    choose the face (:func:`~vtoonify_core.faces.pick_face`) for the crop and the style code.

    Raises:
        VideoError: unreadable source, unsupported output container or codec.
        InputError: bad settings or style code.
        NoFaceError: no face where one is needed.
    """
    source, output = Path(source), Path(output)
    check_settings(crop_mode, chunk_size, 1, face_padding)
    if style is not None:
        check_style(model, style, allow_schedule=True)  # keyframed styles follow the clip's frame numbers
    if model.backbone == "dualstylegan":
        d_s = check_style_degree(d_s)
    if source.resolve() == output.resolve():
        raise InputError("output", f"the output {output} is the input video; choose another file name.")
    enc = (encode or EncodeSettings()).resolve(output.suffix)
    check_file(source, "video")
    settings = job_settings(model, source, output, style=style, style_id=style_id, color_transfer=color_transfer,
                            d_s=d_s, crop_mode=crop_mode, face_padding=face_padding, chunk_size=chunk_size,
                            encode=enc, pick=pick, index=index)
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

    info, keyframes = _probe(source)
    if crop_mode == "whole":  # one padded frame must fit on the device (the output is streamed, not gathered)
        check_fits(model, padded_size(info.height, info.width), advice=FIT_ADVICE["whole"].replace(
            "downscale the frames", "a video with smaller frames"), input_name="video_path")
    need_face = style is None and not (model.backbone == "dualstylegan" and color_transfer)
    ref, ref_frame, geometry = find_reference(source, crop_mode, face_padding, backend=backend, pick=pick, index=index,
                                              need_face=need_face, check_interrupt=check_interrupt, total=info.frames)
    if crop_mode == "face":
        check_fits(model, geometry.crop_shape, advice=FIT_ADVICE["face"], input_name="video_path")
    if style is None:
        if need_face:
            face = None if (pick, index) == ("score", 0) else detect_faces(ref_frame, backend=backend, order=pick)[index]
            style, _ = style_from_image(model, ref_frame, style_id, color_transfer, backend=backend, face=face)
        else:
            style = extract_style(model, None, style_id, True)
    if crop_mode == "face":
        logger.info("VToonify: face found in frame %d of %s; crop %dx%d", ref, source, geometry.crop_width,
                    geometry.crop_height)
    chunks = []
    for s in range(0, info.frames, int(chunk_size)):
        chunks.append(Chunk(s, min(int(chunk_size), info.frames - s), None if keyframes is None else keyframes[s]))
    job = VideoJob(source=str(source), output=str(output), work_dir=str(work), info=info, chunk_size=int(chunk_size),
                   chunks=chunks, crop_mode=crop_mode, face_padding=int(face_padding), d_s=float(d_s), encode=enc,
                   style=style_from_record(style_tensor(style), style_record(style)),
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
