"""Running on a device: precision choice, free memory and the automatic chunk size, chunked
execution with overlapped host<->device copies and the out-of-memory back-off, run hooks."""
from .chunks import ChunkCopier, run_chunks, run_chunks_overlapped
from .device import DTYPES, cpu_has_fast_bf16, free_memory_bytes, resolve_dtype
from .hooks import RunHooks
from .memory import auto_batch_size, frame_memory_bytes

__all__ = ["DTYPES", "ChunkCopier", "RunHooks", "auto_batch_size", "cpu_has_fast_bf16", "frame_memory_bytes",
           "free_memory_bytes", "resolve_dtype", "run_chunks", "run_chunks_overlapped"]
