"""A small, bounded cache of loaded networks shared by the VToonify nodes.

Entries are keyed by ``(part, real path, mtime, size, device, dtype)``, so an edited or replaced
file is read again and a different device or precision gets its own copy. At most
``VTOONIFY_CACHE_SIZE`` networks (default 4: a generator, the encoder, the parser and one more
generator) and a few exemplar-code files are kept; the least recently used is dropped first.

On a device ComfyUI manages (an accelerator) each network is read to the offload device and gets
a ComfyUI model patcher, which the loader puts into the bundle (:mod:`.bundle`): ComfyUI moves the
network to the device when a VToonify node asks for it and offloads it when other models need the
memory. A dropped network is detached (weights back to the offload device); ComfyUI forgets it
once it is garbage. :func:`free_cache` empties everything.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from . import _comfy

logger = logging.getLogger("vtoonify")


def _capacity(default: int = 4) -> int:
    try:
        return max(1, int(os.environ.get("VTOONIFY_CACHE_SIZE", default)))
    except ValueError:
        return default


@dataclass
class Entry:
    value: Any
    patcher: Any = None


class LRUCache:
    """Thread-safe least-recently-used cache with a fixed number of entries."""

    def __init__(self, capacity: int, on_evict: Optional[Callable[[Entry], None]] = None):
        self.capacity = capacity
        self._items: "OrderedDict[tuple, Entry]" = OrderedDict()
        self._lock = threading.RLock()
        self._on_evict = on_evict

    def get(self, key: tuple, load: Callable[[], Entry]) -> Entry:
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                self._items.move_to_end(key)
                return entry
        entry = load()  # outside the lock: loading takes seconds
        with self._lock:
            self._items[key] = entry
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                _, old = self._items.popitem(last=False)
                self._evict(old)
        return entry

    def keys(self) -> list:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
        for e in items:
            self._evict(e)

    def _evict(self, entry: Entry) -> None:
        if self._on_evict is not None:
            self._on_evict(entry)


def _release(entry: Entry) -> None:
    _comfy.release_patcher(entry.patcher)


NETWORKS = LRUCache(_capacity(), on_evict=_release)
EXSTYLES = LRUCache(4)


def file_key(path: Path) -> tuple:
    real = Path(os.path.realpath(path))
    st = real.stat()
    return str(real), st.st_mtime_ns, st.st_size


def load_network(part: str, path: Path, device: torch.device, dtype: torch.dtype,
                 loader: Callable[[Path, torch.device, torch.dtype], torch.nn.Module]) -> tuple[torch.nn.Module, Any]:
    """A cached network (``part`` is 'generator', 'encoder' or 'parser') and its ComfyUI patcher
    (``None`` where ComfyUI does not manage ``device``: the network is read onto ``device``)."""
    key = (part, *file_key(path), str(device), str(dtype))

    def load() -> Entry:
        if not _comfy.managed_device(device):
            return Entry(loader(path, device, dtype))
        module = loader(path, _comfy.offload_device(), dtype)
        patcher = _comfy.make_patcher(module, device)
        if patcher is None:  # this ComfyUI cannot build a patcher: the new network lives on the device
            module.to(device)
        return Entry(module, patcher)

    entry = NETWORKS.get(key, load)
    return entry.value, entry.patcher


def load_exstyles(path: Path):
    from ..vtoonify_core.models.exstyle import load_exstyles as read

    return EXSTYLES.get(("exstyle", *file_key(path)), lambda: Entry(read(path))).value


def free_cache() -> None:
    """Drop every cached network and exemplar file (weights back to the offload device), empty the
    allocator cache."""
    NETWORKS.clear()
    EXSTYLES.clear()
    try:
        _comfy.model_management().soft_empty_cache()
    except Exception:  # outside ComfyUI
        pass
