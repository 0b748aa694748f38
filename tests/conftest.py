"""Shared fixtures: stand-in checkpoints in the exact official file layout, built once per session."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable

import pytest
import torch

from vtoonify_core.testing import standin

sys.path.insert(0, str(Path(__file__).resolve().parent))
import comfy_stub  # noqa: E402

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
def vtoonify_t(vtoonify_t_path):
    """The VToonify-T network on the CPU in fp32, one per test module (tests may flip its switches)."""
    from vtoonify_core import load_vtoonify

    return load_vtoonify(vtoonify_t_path)


@pytest.fixture(scope="module")
def vtoonify_d(vtoonify_d_path):
    """The VToonify-D network on the CPU in fp32, one per test module (tests may flip its switches)."""
    from vtoonify_core import load_vtoonify

    return load_vtoonify(vtoonify_d_path)


@dataclass
class FakeComfy:
    """The pack loaded under the fake ComfyUI of ``tests/comfy_stub.py`` (fast unit tests only; the real
    host is in tests/host)."""

    pack: ModuleType
    root: Path      # ComfyUI's models folder (also its input folder here)
    models: Path    # models/vtoonify
    output: Path    # the output folder

    def node(self, node_id: str) -> Callable:
        """The function of a registered node, on a new instance."""
        cls = self.pack.NODE_CLASS_MAPPINGS[node_id]
        return getattr(cls(), cls.FUNCTION)

    def module(self, name: str) -> ModuleType:
        """A module of the pack (``'nodes.video'``)."""
        return sys.modules[f"{self.pack.__name__}.{name}"]

    @property
    def state(self) -> comfy_stub.StubState:
        return comfy_stub.STATE


def _fake_comfy(tmp_path_factory, links: dict[str, Path]):
    root = tmp_path_factory.mktemp("comfy_models")
    models = root / "vtoonify"
    models.mkdir()
    for name, target in links.items():
        os.symlink(target, models / name)
    comfy_stub.install(root)
    output = tmp_path_factory.mktemp("comfy_output")
    fp = sys.modules["folder_paths"]
    fp.get_output_directory = lambda: str(output)
    fp.get_input_directory = lambda: str(root)
    fp.get_annotated_filepath = lambda name, default_dir=None: os.path.join(str(root), name)
    pack = comfy_stub.load_pack()
    try:
        yield FakeComfy(pack, root, models, output)
    finally:
        pack.free_cache()
        comfy_stub.uninstall()


@pytest.fixture(scope="module")
def fake_comfy(tmp_path_factory, vtoonify_t_path, vtoonify_d_path, psp_path, bisenet_path, exstyle_path):
    """The pack under the fake ComfyUI, with models/vtoonify in the official layout (stand-in weights)."""
    yield from _fake_comfy(tmp_path_factory, {
        "vtoonify_t_cartoon": vtoonify_t_path.parent, "vtoonify_d_cartoon": vtoonify_d_path.parent,
        "encoder.pt": psp_path, "faceparsing.pth": bisenet_path})


@pytest.fixture(scope="module")
def fake_comfy_empty(tmp_path_factory):
    """The pack under the fake ComfyUI with an empty models/vtoonify."""
    yield from _fake_comfy(tmp_path_factory, {})


@pytest.fixture
def sent_previews(fake_comfy, monkeypatch) -> list:
    """The progress previews the nodes send through the fake ComfyUI's ProgressBar in this test."""
    previews = []
    bar_cls = sys.modules["comfy.utils"].ProgressBar
    original = bar_cls.update_absolute

    def spy(self, value, total=None, preview=None):
        if preview is not None:
            previews.append(preview)
        return original(self, value, total, preview)

    monkeypatch.setattr(bar_cls, "update_absolute", spy)
    return previews
