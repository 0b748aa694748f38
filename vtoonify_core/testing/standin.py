"""Deterministic stand-in weights in the exact layout of the official VToonify release.

Details: docs/design.md, ``vtoonify_core/testing/standin.py``.
"""
from __future__ import annotations

import ast
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

SPEC_DIR = Path(__file__).resolve().parents[1] / "spec"

#: The checkpoint kinds that have a key table, and the table's file name.
TABLES = {
    "vtoonify_t": "keys_vtoonify_t.tsv",
    "vtoonify_d": "keys_vtoonify_d.tsv",
    "psp": "keys_psp.tsv",
    "bisenet": "keys_bisenet.tsv",
}


@dataclass(frozen=True)
class TableRow:
    """One state-dict entry of an official checkpoint."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    kind: str  # 'param' or 'buffer'
    mean: float
    std: float
    values: Optional[list]


def read_table(kind_or_path: Union[str, Path]) -> list[TableRow]:
    """Read a key table (a kind from :data:`TABLES`, or a path to a ``.tsv``)."""
    path = SPEC_DIR / TABLES[kind_or_path] if kind_or_path in TABLES else Path(kind_or_path)
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape, dtype, kind, mean, std, values = line.split("\t")
        rows.append(
            TableRow(
                name=name,
                shape=tuple(ast.literal_eval(shape)),
                dtype=getattr(torch, dtype),
                kind=kind,
                mean=float(mean),
                std=float(std),
                values=ast.literal_eval(values) if values else None,
            )
        )
    return rows


def entry_seed(name: str, base_seed: int) -> int:
    """The generator seed of one entry under the rule."""
    return (zlib.crc32(name.encode()) + 1_000_003 * base_seed) % 2**63


def build_state_dict(kind_or_path: Union[str, Path], base_seed: int = 0) -> dict[str, torch.Tensor]:
    """Build the stand-in weights of one table, in table order."""
    out: dict[str, torch.Tensor] = {}
    for row in read_table(kind_or_path):
        if row.values is not None:
            out[row.name] = torch.tensor(row.values, dtype=row.dtype).reshape(row.shape)
        elif not row.dtype.is_floating_point:
            out[row.name] = torch.zeros(row.shape, dtype=row.dtype)
        else:
            gen = torch.Generator().manual_seed(entry_seed(row.name, base_seed))
            t = row.mean + row.std * torch.randn(row.shape, generator=gen, dtype=torch.float32)
            if row.name.endswith("running_var"):
                t = t.abs()
            out[row.name] = t.to(row.dtype)
    return out


PSP_OPTS = {
    # what the official encoder.pt carries in 'opts' that the encoder needs
    "encoder_type": "GradualStyleEncoder",
    "input_nc": 3,
    "output_size": 1024,
    "n_styles": 18,
    "label_nc": 0,
}


def official_layout(kind: str, base_seed: int = 0) -> dict:
    """The object the official release pickles for ``kind``, built from stand-in weights."""
    sd = build_state_dict(kind, base_seed)
    if kind in ("vtoonify_t", "vtoonify_d"):
        return {"g_ema": sd}
    if kind == "psp":
        latent_avg = sd.pop("latent_avg")
        return {"state_dict": sd, "latent_avg": latent_avg, "opts": dict(PSP_OPTS)}
    if kind == "bisenet":
        return sd
    raise ValueError(f"unknown checkpoint kind {kind!r}; expected one of {sorted(TABLES)}")


def write_official_checkpoint(kind: str, path: Union[str, Path], base_seed: int = 0) -> Path:
    """Save stand-in weights of ``kind`` at ``path`` in the official ``.pt`` layout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(official_layout(kind, base_seed), path)
    return path


def write_official_exstyles(path: Union[str, Path], n: int = 4, base_seed: int = 0) -> Path:
    """Save ``n`` random exemplar z+ codes as the official ``exstyle_code.npy`` (a pickled dict).

    This is how the official release makes the file: ``np.save(path, {name: (1,18,512) float32})``.
    """
    rng = np.random.default_rng(base_seed)
    codes = {f"{i:03d}.jpg": rng.standard_normal((1, 18, 512)).astype(np.float32) for i in range(n)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, codes, allow_pickle=True)
    return path
