"""Chunked execution over a clip: host<->device copies overlapped with compute on CUDA,
interruption between chunks, and the out-of-memory back-off that halves the chunk.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator, NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from ..errors import InputError, OutOfMemoryError, is_oom
from ..types import DeviceLike, Progress
from .device import empty_device_cache

logger = logging.getLogger("vtoonify")


class Upload(NamedTuple):
    """A chunk's inputs on their way to the device (:meth:`ChunkCopier.upload`)."""

    tensors: tuple[Tensor, ...]
    #: recorded on the copy stream after the copies (CUDA); ``None`` when the copies were synchronous
    event: Optional[object] = None
    #: positions of the tensors that the copy stream allocated (they need ``record_stream``)
    copied: tuple[int, ...] = ()


class Download(NamedTuple):
    """A chunk's result on its way to the output device (:meth:`ChunkCopier.download`)."""

    tensor: Tensor
    #: recorded on the copy stream after the copy (CUDA); ``None`` when the copy was synchronous
    event: Optional[object] = None


class ChunkCopier:
    """Moves chunk inputs to the model's device and results to the output device.

    With a CUDA model, CPU tensors are staged in pinned (page-locked) host memory and copied with
    ``non_blocking=True`` on a side stream, so the next chunk's input travels while the current
    one computes; results are copied into pinned host buffers on a second side stream. The
    compute stream waits for an upload's event before its tensors are used, and every tensor used
    on a stream other than the one that allocated it is marked with ``record_stream``, so the
    caching allocator never hands its memory out while a copy or kernel still uses it. A result is
    handed out only after its copy has finished (:meth:`collect`).

    Anywhere else (a CPU model, tensors already on the device, output on the device, other
    accelerators) the same calls are plain synchronous ``.to()`` copies and nothing is pinned
    (a CPU-only PyTorch has no pinned-memory allocator).
    """

    def __init__(self, device: DeviceLike, output_device: Optional[DeviceLike]):
        self.device = torch.device(device)
        self.output_device = None if output_device is None else torch.device(output_device)
        self.cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self._up = torch.cuda.Stream(self.device) if self.cuda else None
        self._down = torch.cuda.Stream(self.device) if self.cuda else None

    @property
    def asynchronous(self) -> bool:
        """Whether copies overlap computation (CUDA)."""
        return self.cuda

    def upload(self, tensors: Sequence[Tensor]) -> Upload:
        """Start moving ``tensors`` to the device (CPU ones through pinned memory on CUDA)."""
        if not self.cuda:
            return Upload(tuple(t.to(self.device) for t in tensors))
        out: list[Tensor] = []
        copied: list[int] = []
        for k, t in enumerate(tensors):
            if t.device.type != "cpu":
                out.append(t.to(self.device))  # already on an accelerator: on the current stream
                continue
            staged = t if t.is_pinned() else t.pin_memory()  # same sizes and strides as ``t``
            with torch.cuda.stream(self._up):
                out.append(staged.to(self.device, non_blocking=True))
            copied.append(k)
        if not copied:
            return Upload(tuple(out))
        event = torch.cuda.Event()
        event.record(self._up)
        return Upload(tuple(out), event, tuple(copied))

    def ready(self, upload: Upload) -> tuple[Tensor, ...]:
        """The uploaded tensors, usable on the current (compute) stream."""
        if upload.event is None:
            return upload.tensors
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(upload.event)
        for k in upload.copied:
            upload.tensors[k].record_stream(stream)  # allocated on the copy stream, used on this one
        return upload.tensors

    def download(self, y: Tensor) -> Download:
        """Start moving a result to the output device (``None``: left where it is)."""
        if self.output_device is None:
            return Download(y)
        if not (self.cuda and y.device.type == "cuda" and self.output_device.type == "cpu"):
            return Download(y.to(self.output_device))
        computed = torch.cuda.Event()
        computed.record(torch.cuda.current_stream(y.device))
        with torch.cuda.stream(self._down):
            self._down.wait_event(computed)
            host = torch.empty_like(y, device="cpu", pin_memory=True)
            host.copy_(y, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._down)
        y.record_stream(self._down)  # allocated on the compute stream, read by the copy stream
        return Download(host, done)

    @staticmethod
    def collect(download: Download) -> Tensor:
        """The result, once its copy has finished."""
        if download.event is not None:
            download.event.synchronize()
        return download.tensor


class _Chunk(NamedTuple):
    start: int
    stop: int
    transfer: object  # Upload (inputs) or Download (result)


def _prefetch(copier: ChunkCopier, load: Callable[[int, int], Sequence[Tensor]], start: int, stop: int
              ) -> Optional[_Chunk]:
    """Start uploading chunk ``start..stop``; ``None`` if that fails (it is retried, and any error
    raised, when the chunk's turn comes)."""
    try:
        return _Chunk(start, stop, copier.upload(load(start, stop)))
    except Exception as exc:  # noqa: BLE001 - best effort; the synchronous retry reports the error
        logger.debug("VToonify: prefetch of %d..%d failed (%s); loading it in turn", start, stop, exc)
        return None


def run_chunks_overlapped(load: Callable[[int, int], Sequence[Tensor]],
                          compute: Callable[[Sequence[Tensor], int, int], Tensor], total: int, batch_size: int, *,
                          device: DeviceLike, output_device: Optional[DeviceLike] = "cpu",
                          progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None,
                          on_oom: Optional[Callable[[int], None]] = None, what: str = "frames",
                          overlap: Optional[bool] = None) -> Iterator[tuple[int, Tensor]]:
    """Run ``compute`` over ``[0, total)`` in chunks with the copies overlapped; yield ``(start, result)`` in order.

    For each chunk, ``load(start, stop)`` gives its input tensors as they are (e.g. slices of CPU
    frames); they are moved to ``device`` by a :class:`ChunkCopier`, ``compute(inputs, start,
    stop)`` returns the result on the device, and the result is moved to ``output_device``
    (``None``: left where ``compute`` puts it) and yielded.

    With ``overlap`` (default: where copies are asynchronous, i.e. a CUDA device) the next chunk is
    uploaded while the current one computes, and each result is yielded once the next chunk has
    been launched, so its copy to the host runs alongside. The results, their order and the
    ``progress`` values do not depend on ``overlap``.

    ``check_interrupt()`` runs before every chunk (it raises to stop; the chunk finished before
    is still yielded first, as is the last finished chunk before any other error). On an
    out-of-memory error the chunk is halved and retried and the smaller size kept for the rest
    (a prefetched chunk of the old size is dropped); ``on_oom(new_size)`` is called first. An
    out-of-memory error on a single frame is re-raised with a note on what to change.
    """
    if batch_size < 1:
        raise InputError("batch_size", f"must be at least 1, got {batch_size}.")
    device = torch.device(device)
    copier = ChunkCopier(device, output_device)
    overlap = copier.asynchronous if overlap is None else bool(overlap)
    size, start = int(batch_size), 0
    prefetched: Optional[_Chunk] = None  # next chunk's inputs, already travelling
    pending: Optional[_Chunk] = None  # finished chunk whose result is not handed out yet
    while start < total:
        stop = min(start + size, total)
        finished: Optional[_Chunk] = None
        error: Optional[Exception] = None
        out_of_memory = False
        staged = inputs = result = None
        try:
            if check_interrupt is not None:
                check_interrupt()
            staged, prefetched = prefetched, None
            if staged is None or (staged.start, staged.stop) != (start, stop):
                staged = None  # a prefetch made for another chunk size (after a back-off) is dropped
                staged = _Chunk(start, stop, copier.upload(load(start, stop)))
            inputs = copier.ready(staged.transfer)
            staged = None
            result = compute(inputs, start, stop)
            inputs = None
            if overlap and stop < total:
                prefetched = _prefetch(copier, load, stop, min(stop + size, total))
            finished = _Chunk(start, stop, copier.download(result))
            result = None
        except Exception as exc:  # noqa: BLE001 - only OOM is handled, everything else re-raised
            staged = inputs = result = prefetched = None
            if not is_oom(exc):
                error = exc
            elif stop - start <= 1:
                logger.warning("VToonify: out of memory on a single frame on %s: %s", device, exc)
                error = OutOfMemoryError(
                    f"VToonify ran out of memory on a single frame on {device}: use smaller frames (a smaller "
                    f"face_padding, or a downscaled clip), a lower precision (fp16/bf16), or free memory used by "
                    f"other models.")
            else:
                out_of_memory = True  # the exception and the chunk's tensors are released here
        if pending is not None:  # complete whatever happened to this chunk
            yield pending.start, copier.collect(pending.transfer)
            if progress is not None:
                progress(pending.stop, total)
            pending = None
        if error is not None:
            if isinstance(error, OutOfMemoryError):
                raise error from None  # the allocator's text is in the log, not in front of the user
            raise error
        if out_of_memory:
            n = stop - start
            size = max(1, n // 2)
            empty_device_cache(device)
            if on_oom is not None:
                on_oom(size)
            logger.warning("VToonify: out of memory with %d %s per chunk on %s; retrying with %d", n, what, device, size)
            continue
        start = stop
        if overlap:
            pending = finished
            continue
        yield finished.start, copier.collect(finished.transfer)
        if progress is not None:
            progress(finished.stop, total)
    if pending is not None:
        yield pending.start, copier.collect(pending.transfer)
        if progress is not None:
            progress(pending.stop, total)


def run_chunks(fn: Callable[[int, int], Tensor], total: int, batch_size: int, *, device: torch.device,
               progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None,
               on_oom: Optional[Callable[[int], None]] = None, what: str = "frames") -> Iterator[tuple[int, Tensor]]:
    """Run ``fn(start, stop)`` over ``[0, total)`` in chunks; yield ``(start, result)`` as each completes.

    ``check_interrupt()`` runs before every chunk (it raises to stop). On an out-of-memory error the
    chunk is halved and retried, and the smaller size is kept for the rest; ``on_oom(new_size)``
    is called first (e.g. to empty the allocator cache). An OOM on a single frame is re-raised
    with a note on what to change. (:func:`run_chunks_overlapped` without copies or overlap.)
    """
    return run_chunks_overlapped(lambda i, j: (), lambda _, i, j: fn(i, j), total, batch_size, device=device,
                                 output_device=None, progress=progress, check_interrupt=check_interrupt,
                                 on_oom=on_oom, what=what, overlap=False)
