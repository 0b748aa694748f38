"""Host-memory reuse for CPU forwards: large tensors from the heap instead of fresh ``mmap``s.

glibc serves every allocation over its mmap threshold (at most 32 MiB) with a new ``mmap`` and
unmaps it on free, so each large activation of a CPU forward is page-faulted and zeroed by the
kernel again on every call (about 300k faults, 0.6 CPU-s per 4-frame 128 px VToonify-D forward).
:func:`reuse_host_memory` lets glibc keep such blocks in its heap for the duration of a forward
(``mallopt(M_MMAP_MAX, 0)``), then restores the default. Nested and concurrent scopes share one
count; outside glibc (macOS, Windows, musl) it does nothing. See docs/design.md.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

#: ``mallopt`` parameter numbers and glibc's defaults for them (``MALLOC_TRIM_THRESHOLD_`` in the
#: environment overrides the trim threshold's default, as it does for glibc)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 << 10
#: free heap memory kept (not trimmed) while a scope is open
KEEP_WHILE_OPEN = (1 << 31) - 1


def _default_trim_threshold() -> int:
    value = os.environ.get("MALLOC_TRIM_THRESHOLD_", "")
    return int(value) if value.isdigit() else DEFAULT_TRIM_THRESHOLD

_lock = threading.Lock()
_state = {"depth": 0, "libc": None, "probed": False}


def _libc() -> Optional[ctypes.CDLL]:
    """glibc with ``mallopt`` and ``malloc_trim`` typed, or ``None`` where the C library is not glibc."""
    if not _state["probed"]:
        _state["probed"] = True
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
                _state["libc"] = libc
            except (OSError, AttributeError):
                _state["libc"] = None
    return _state["libc"]


def host_memory_reuse_available() -> bool:
    """Whether :func:`reuse_host_memory` can act here (Linux with glibc)."""
    return _libc() is not None


def host_memory_reuse_active() -> bool:
    """Whether a :func:`reuse_host_memory` scope is open in this process."""
    return _state["depth"] > 0


@contextmanager
def reuse_host_memory(enabled: bool = True) -> Iterator[bool]:
    """Keep large CPU allocations in the heap while the ``with`` block runs.

    Yields whether reuse is in effect. Freed blocks stay in the heap (no trimming) while any scope
    is open, so wrap a whole clip (the pipeline does) for the forwards to reuse each other's
    memory; when the last scope closes, glibc's defaults return (``M_MMAP_MAX`` and the trim
    threshold, or ``MALLOC_TRIM_THRESHOLD_`` where set) and the heap's free memory goes back to
    the system (``malloc_trim``). Blocks over 64 MiB made by a non-main thread are still mapped
    (glibc caps per-thread heaps); smaller ones are reused.
    """
    libc = _libc() if enabled else None
    if libc is None:
        yield False
        return
    with _lock:
        _state["depth"] += 1
        if _state["depth"] == 1:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP_WHILE_OPEN)
    try:
        yield True
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, _default_trim_threshold())
                libc.malloc_trim(0)
