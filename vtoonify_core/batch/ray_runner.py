"""Scale a video job out on Ray: one Ray task per chunk of frames, the same core pipeline in each.

Details: docs/design.md, ``vtoonify_core/batch/ray_runner.py``.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

from ..models.bundle import VToonifyModel, load_model
from ..runtime.device import resolve_dtype
from ..types import DEFAULT_FACE_PADDING, StyleCode
from ..video.encode import EncodeSettings
from ..video.jobs import DEFAULT_CHUNK_SIZE, VideoJob, prepare_job
from ..video.run import VideoResult, finish_job, process_chunk

logger = logging.getLogger("vtoonify")

PathLike = Union[str, Path]
RAY_HINT = 'Ray is not installed: pip install "ray[default]" (or the extra: pip install "comfyui-vtoonify[ray]")'


def require_ray():
    """Import Ray, or raise ImportError with the install command."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_HINT) from None
    return ray


@dataclass(frozen=True)
class ModelSpec:
    """How a worker loads the model: file paths (readable by every worker), device and precision.

    Attributes:
        checkpoint, encoder, parser: as for :func:`~vtoonify_core.models.load_model`
            (``encoder`` may be ``None`` when the style code is given or needs no face).
        exstyle: ``'auto'`` (beside the checkpoint), a path, or ``None``.
        device: ``'cpu'``, ``'cuda'``, ...; precision: ``'fp32'``, ``'fp16'``, ``'bf16'`` or ``'auto'``.
    """

    checkpoint: str
    encoder: Optional[str]
    parser: str
    exstyle: Optional[str] = "auto"
    device: str = "cpu"
    precision: str = "fp32"

    def load(self, device: Optional[str] = None) -> VToonifyModel:
        """Load the bundle (on ``device`` instead of the spec's when given)."""
        dev = device or self.device
        return load_model(self.checkpoint, self.encoder, self.parser, exstyle=self.exstyle, device=dev,
                          dtype=resolve_dtype(self.precision, dev))

    @classmethod
    def from_model(cls, model: VToonifyModel, device: Optional[str] = None,
                   precision: Optional[str] = None) -> "ModelSpec":
        """The spec of a bundle loaded from files (its ``sources``)."""
        src = dict(model.sources)
        if "checkpoint" not in src or "parser" not in src:
            raise ValueError("this model was not loaded from files (no sources): build a ModelSpec by hand")
        names = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}
        return cls(src["checkpoint"], src.get("encoder"), src["parser"], src.get("exstyle"),
                   device or str(model.device), precision or names.get(str(model.dtype), "fp32"))


class ChunkWorker:
    """A Ray actor body: loads the model once, then stylizes chunks of a job into segment bytes."""

    def __init__(self, spec: ModelSpec, torch_threads: Optional[int] = None):
        import torch

        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        self.model = spec.load()

    def run(self, job: VideoJob, k: int, batch_size: int) -> tuple[int, bytes, int, int]:
        """Chunk ``k`` of ``job`` -> ``(k, segment file bytes, frames written, timestamp offset)``."""
        fd, tmp = tempfile.mkstemp(suffix=".mp4", prefix=f"vtoonify_chunk_{k:05d}_")
        os.close(fd)
        try:
            written, offset = process_chunk(self.model, job, k, tmp, batch_size=batch_size)
            data = Path(tmp).read_bytes() if written else b""
        finally:
            Path(tmp).unlink(missing_ok=True)
        return k, data, written, offset


def _write_segment(job: VideoJob, k: int, data: bytes) -> None:
    path = job.segment_path(k)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def stylize_video_ray(spec: ModelSpec, source: PathLike, output: PathLike, style: Optional[StyleCode] = None,
                      d_s: float = 0.5, *, style_id: int = 0, color_transfer: bool = False, crop_mode: str = "face",
                      face_padding: int = DEFAULT_FACE_PADDING, batch_size: int = 4,
                      chunk_size: int = DEFAULT_CHUNK_SIZE, encode: Optional[EncodeSettings] = None,
                      work_dir: Optional[PathLike] = None, resume: bool = True, keep_work: bool = False,
                      num_workers: Optional[int] = None, num_cpus_per_worker: float = 1,
                      num_gpus_per_worker: float = 0, torch_threads: Optional[int] = None,
                      planner: Optional[VToonifyModel] = None, progress: Optional[Callable[[int, int], None]] = None,
                      on_chunk: Optional[Callable[[int, VideoJob], None]] = None, backend="dlib") -> VideoResult:
    """:func:`~vtoonify_core.video.stylize_video` with the chunks stylized by Ray actors.

    Ray must be initialised (``ray.init(...)``) or it is started locally. Arguments as for
    ``stylize_video``, plus:

    Args:
        spec: how workers load the model.
        num_workers: actors to start (default: as many as the cluster's CPUs/GPUs allow, at most
            one per unfinished chunk).
        num_cpus_per_worker, num_gpus_per_worker: Ray resources of each actor.
        torch_threads: ``torch.set_num_threads`` in each actor (default: Ray's, i.e. its CPUs).
        planner: a model already loaded in the driver for planning (style code from the first
            face); default: ``spec`` loaded on the CPU.
        progress: ``progress(frames_done, total)`` as chunks arrive; on_chunk: ``on_chunk(k, job)``
            after chunk ``k`` is written and recorded.

    Returns:
        The :class:`~vtoonify_core.video.VideoResult` (``chunks_run``: chunks done by this call).
    """
    ray = require_ray()
    from ray.util import ActorPool

    t0 = time.perf_counter()
    if not ray.is_initialized():
        logger.info("VToonify: starting a local Ray instance")
        ray.init()
    model = planner if planner is not None else spec.load(device="cpu")
    job = prepare_job(model, source, output, style, d_s, style_id=style_id, color_transfer=color_transfer,
                      crop_mode=crop_mode, face_padding=face_padding, chunk_size=chunk_size, encode=encode,
                      work_dir=work_dir, resume=resume, backend=backend)
    pending = job.pending
    total = job.info.frames
    done = job.frames_done
    if progress is not None:
        progress(done, total)
    if pending:
        if num_workers is None:
            res = ray.cluster_resources()
            by_cpu = int(res.get("CPU", 1) // max(num_cpus_per_worker, 1e-9)) if num_cpus_per_worker else len(pending)
            by_gpu = int(res.get("GPU", 0) // num_gpus_per_worker) if num_gpus_per_worker else len(pending)
            num_workers = max(1, min(by_cpu, by_gpu))
        n = max(1, min(int(num_workers), len(pending)))
        actor_cls = ray.remote(num_cpus=num_cpus_per_worker, num_gpus=num_gpus_per_worker)(ChunkWorker)
        actors = [actor_cls.remote(spec, torch_threads) for _ in range(n)]
        job_ref = ray.put(job)
        logger.info("VToonify: %d chunks of %s on %d Ray workers", len(pending), source, n)
        try:
            pool = ActorPool(actors)
            results = pool.map_unordered(lambda a, k: a.run.remote(job_ref, k, int(batch_size)), pending)
            for k, data, written, offset in results:
                if written:
                    _write_segment(job, k, data)
                job.mark_done(k, written, offset)
                done += job.chunks[k].frames
                if progress is not None:
                    progress(min(done, total), total)
                if on_chunk is not None:
                    on_chunk(k, job)
        finally:
            for a in actors:
                ray.kill(a)
    out = finish_job(job, keep_work=keep_work)
    frames = sum(c.written for c in job.chunks)
    return VideoResult(out, frames, len(job.chunks), len(pending), time.perf_counter() - t0, job)


__all__ = ["ChunkWorker", "ModelSpec", "RAY_HINT", "require_ray", "stylize_video_ray"]
