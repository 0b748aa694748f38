"""Shared fixtures: stand-in checkpoints in the exact official file layout, built once per session."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vtoonify_core import standin

DATA = Path(__file__).resolve().parent / "data"

torch.set_num_threads(max(1, torch.get_num_threads()))


@pytest.fixture(scope="session")
def reference_io() -> dict[str, torch.Tensor]:
    """Inputs and outputs of the official forward passes on the seed-0 stand-in weights."""
    from safetensors.torch import load_file

    return load_file(str(DATA / "reference_io_seed0.safetensors"))


@pytest.fixture(scope="session")
def official_dir(tmp_path_factory) -> Path:
    """A folder laid out like the official release, with stand-in weights (base_seed 0)."""
    root = tmp_path_factory.mktemp("official")
    return root


def _lazy(official_dir: Path, rel: str, kind: str) -> Path:
    path = official_dir / rel
    if not path.exists():
        standin.write_official_checkpoint(kind, path, base_seed=0)
    return path


@pytest.fixture(scope="session")
def vtoonify_t_path(official_dir) -> Path:
    return _lazy(official_dir, "vtoonify_t_cartoon/vtoonify.pt", "vtoonify_t")


@pytest.fixture(scope="session")
def vtoonify_d_path(official_dir) -> Path:
    return _lazy(official_dir, "vtoonify_d_cartoon/vtoonify_s_d.pt", "vtoonify_d")


@pytest.fixture(scope="session")
def psp_path(official_dir) -> Path:
    return _lazy(official_dir, "encoder.pt", "psp")


@pytest.fixture(scope="session")
def bisenet_path(official_dir) -> Path:
    return _lazy(official_dir, "faceparsing.pth", "bisenet")


@pytest.fixture(scope="session")
def exstyle_path(official_dir) -> Path:
    path = official_dir / "vtoonify_d_cartoon/exstyle_code.npy"
    if not path.exists():
        standin.write_official_exstyles(path, n=4, base_seed=0)
    return path


@pytest.fixture(scope="module")
def model_t(vtoonify_t_path):
    """VToonify-T on the CPU in fp32, one per test module (tests may flip its switches)."""
    from vtoonify_core import load_vtoonify

    return load_vtoonify(vtoonify_t_path)


@pytest.fixture(scope="module")
def model_d(vtoonify_d_path):
    """VToonify-D on the CPU in fp32, one per test module (tests may flip its switches)."""
    from vtoonify_core import load_vtoonify

    return load_vtoonify(vtoonify_d_path)
