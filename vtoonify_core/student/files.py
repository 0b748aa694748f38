"""Reading a student file (``.safetensors`` written by :meth:`Student.save`) back onto a device in
a dtype, checking its kind, config and weights."""
from __future__ import annotations

import json
from typing import Optional

import torch

from ..errors import CheckpointError
from ..types import DeviceLike, PathLike
from ..weights import check_finite, load_into, read_checkpoint
from .model import KIND, Student
from .network import StudentConfig


def read_config(metadata: dict, path: PathLike) -> StudentConfig:
    """The :class:`StudentConfig` stored in a student file's metadata."""
    if metadata.get("kind") != KIND:
        raise CheckpointError(f"{path}: not a VToonify student (its metadata says kind={metadata.get('kind')!r}); "
                              f"choose a file written by Train VToonify Student or `python -m vtoonify_core distill`.")
    try:
        raw = json.loads(metadata["config"])
        raw.setdefault("decoder_width", 0)  # written before the field: the first decoder layout
        fields = set(StudentConfig.__dataclass_fields__)
        return StudentConfig(**{k: v for k, v in raw.items() if k in fields})
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the student's config is missing or damaged ({exc}); train it again.") from None


def load_student(path: PathLike, device: DeviceLike = "cpu", dtype: Optional[torch.dtype] = torch.float32) -> Student:
    """Load a student on ``device`` in ``dtype`` (``None``: float32), in eval mode.

    Raises:
        CheckpointError: missing, unreadable, not a student, damaged or with non-finite weights.
    """
    ckpt = read_checkpoint(path)
    config = read_config(ckpt.metadata, path)
    try:
        meta = json.loads(ckpt.metadata.get("meta", "{}"))
    except ValueError:
        meta = {}
    check_finite(ckpt.tensors, path)
    with torch.device("meta"):
        student = Student(config, meta if isinstance(meta, dict) else {})
    load_into(student, ckpt.tensors, path, "VToonify student")
    return student.to(torch.device(device), dtype or torch.float32).eval()
