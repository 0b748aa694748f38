"""The errors the core raises, under one base class :class:`VToonifyError`.

Each subclass also derives from the built-in exception it stands for (``ValueError``,
``ImportError``), so ``except ValueError`` still catches bad input. Messages say what to do.
"""
from __future__ import annotations

from typing import Optional

import torch


class VToonifyError(Exception):
    """Base of every error of this package: catch it to report any of them as a user error."""


class InputError(VToonifyError, ValueError):
    """Bad input to the pipeline. ``input_name`` is the input it concerns (node input names)."""

    def __init__(self, input_name: str, message: str):
        super().__init__(f"{input_name}: {message}")
        self.input_name = input_name


class NoFaceError(VToonifyError, ValueError):
    """No usable face was found where one is needed."""


class FaceBackendUnavailableError(VToonifyError, ImportError):
    """A face backend cannot run because its package (or model file) is not installed."""


class PackageMissingError(VToonifyError, ImportError):
    """An optional package a feature needs (``transformers``, ``open_clip_torch``) is not installed;
    the message names it and the pip line."""


class CheckpointError(VToonifyError, ValueError):
    """A checkpoint file is missing, unreadable, of the wrong kind or does not fit the network."""


class VideoError(VToonifyError, ValueError):
    """A video (or image) file that cannot be read or written; the message says which and why."""


class OutOfMemoryError(VToonifyError, MemoryError):
    """The device (or the host, for the gathered output) ran out of memory; the message says what to
    change. The allocator's own text is logged, not shown."""


class UsageError(VToonifyError):
    """A user error of the command line: printed as one message, exit status 2."""


class QueueError(VToonifyError):
    """A user error of the batch client (bad workflow, no matching input node, ...)."""


class PromptError(VToonifyError):
    """A prompt failed: rejected by ``/prompt``, failed while running, timed out or unreachable."""

    def __init__(self, message: str, retriable: bool = True, traceback: Optional[list] = None):
        super().__init__(message)
        self.retriable = retriable
        self.traceback = traceback or []


#: Phrases of allocator failures: CUDA/MPS/XPU ("out of memory"), PyTorch's CPU allocator ("can't allocate
#: memory" on Linux, "not enough memory" on Windows).
OOM_PHRASES = ("out of memory", "can't allocate memory", "not enough memory")


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error of an accelerator or of PyTorch's CPU allocator."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(p in str(exc).lower() for p in OOM_PHRASES)

