"""The ComfyUI nodes (issue 4), run through their own entry points on CPU with a fake ComfyUI.

The pack root is imported as the package ``comfyui_vtoonify`` (as ComfyUI imports
``custom_nodes/<pack>/__init__.py``) with the fake ``comfy``/``folder_paths`` modules of
``tests/comfy_stub.py``; checkpoints are the stand-in files of ``conftest.py`` linked into a
temporary ``models/vtoonify`` in the official layout. Frames are small (32-64 px, a 96 px face
crop) to keep the file fast; the real face is ``skimage.data.astronaut()``.
"""
from __future__ import annotations

import dataclasses
import gc
import os
import re
import sys
import types
import weakref
from pathlib import Path

import comfy_stub  # tests/ is on sys.path (conftest.py)
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vtoonify_core.errors import OutOfMemoryError
from vtoonify_core.frames import FramePadding, crop_padding, make_inputs, pad_to_multiple, to_model_range
from vtoonify_core.models.bundle import FaceParserModel, VToonifyModel
from vtoonify_core.pipeline.stylize import stylize
from vtoonify_core.runtime.chunks import run_chunks
from vtoonify_core.types import CLASS_COLORS, CLASS_GROUPS, CLASS_NAMES, FaceParsing, StyleCode

skdata = pytest.importorskip("skimage.data")

ROOT = Path(__file__).resolve().parents[1]
D_CKPT = "vtoonify_d_cartoon/vtoonify_s_d.pt"
T_CKPT = "vtoonify_t_cartoon/vtoonify.pt"
FACE_PAD = 48  # a 96x96 face crop instead of the official ~400x400, for speed


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def room_for_every_network(fake_comfy):
    """Room in the pack's network cache for D, T, the encoder, the parser and spares: no reloads."""
    fake_comfy.module("nodes.cache").NETWORKS.capacity = 6


@pytest.fixture
def comfy_state(fake_comfy):
    """The fake ComfyUI's record of what the nodes did, cleared for this test."""
    s = fake_comfy.state
    s.progress.clear()
    s.interrupt_checks, s.interrupt_on, s.soft_empty_cache = 0, None, 0
    s.load_models_gpu.clear()
    return s


@pytest.fixture(scope="module")
def loader_output_d(fake_comfy):
    """Load VToonify Model's outputs for VToonify-D on the CPU: (model bundle, face parser)."""
    return fake_comfy.node("VToonifyLoadModel")(D_CKPT, "encoder.pt", "faceparsing.pth", "auto", "cpu", "fp32", False)


@pytest.fixture(scope="module")
def loader_output_t(fake_comfy):
    """Load VToonify Model's outputs for VToonify-T (device auto = the CPU here): (model bundle, face parser)."""
    return fake_comfy.node("VToonifyLoadModel")(T_CKPT, "encoder.pt", "faceparsing.pth", "auto", "auto", "fp32", False)


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    """skimage's astronaut as a ComfyUI IMAGE [1, 512, 512, 3] in [0, 1]."""
    return torch.from_numpy(skdata.astronaut()).float().div(255.0)[None]


def small(image: torch.Tensor, size: int) -> torch.Tensor:
    """Downscaled IMAGE, quantised to 1/255 like decoded video frames."""
    x = F.interpolate(image.permute(0, 3, 1, 2), size=(size, size), mode="area")
    return (x * 255).round().div(255).permute(0, 2, 3, 1).contiguous()


@pytest.fixture(scope="module")
def frames32(astronaut) -> torch.Tensor:
    """Five different 32x32 frames (shifted crops of the astronaut)."""
    crops = [astronaut[:, 40 + 8 * i:200 + 8 * i, 140 + 4 * i:300 + 4 * i] for i in range(5)]
    return torch.cat([small(c, 32) for c in crops])


@pytest.fixture(scope="module")
def dlib_ok(fake_comfy):
    from vtoonify_core import faces

    try:
        faces.get_backend("dlib")
    except faces.FaceBackendUnavailableError as exc:
        pytest.skip(f"face detection backend missing: {exc}")


def random_style(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    return StyleCode(torch.randn(1, 18, 512, generator=g) * 0.5, model.backbone)


@pytest.fixture(scope="module")
def reference_networks(vtoonify_t_path, vtoonify_d_path, bisenet_path):
    """The core networks loaded directly (top-level vtoonify_core), for equivalence checks."""
    from vtoonify_core import load_face_parser, load_vtoonify

    return {"toonify": load_vtoonify(vtoonify_t_path), "dualstylegan": load_vtoonify(vtoonify_d_path),
            "parser": load_face_parser(bisenet_path)}


def reference_forward(nets, backbone, x01: torch.Tensor, wplus, d_s, parsing=None) -> torch.Tensor:
    """load_vtoonify + parse_frames + model(cat(x, x_p / 16), style, d_s), clamped; x01 [B,3,H,W] in [0,1]."""
    from vtoonify_core import parse_frames

    x = x01 * 2 - 1
    with torch.no_grad():
        x_p = parse_frames(nets["parser"], x) if parsing is None else parsing
        y = nets[backbone](torch.cat([x, x_p / 16.0], dim=1), wplus.repeat(x.shape[0], 1, 1), d_s=d_s)
    return y.clamp(-1, 1)


def as_image(y: torch.Tensor) -> torch.Tensor:
    return ((y + 1) / 2).permute(0, 2, 3, 1)


class CountingGenerator(torch.nn.Module):
    """Wraps a VToonify network: records batch sizes; raises CUDA OOM above ``max_batch``."""

    def __init__(self, inner, max_batch=None):
        super().__init__()
        self.inner = inner
        self.max_batch = max_batch
        self.calls: list[int] = []

    @property
    def backbone(self):
        return self.inner.backbone

    @property
    def n_latent(self):
        return self.inner.n_latent

    def zplus2wplus(self, z):
        return self.inner.zplus2wplus(z)

    def forward(self, x, style, d_s=0.5):
        self.calls.append(int(x.shape[0]))
        if self.max_batch is not None and x.shape[0] > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.inner(x, style, d_s=d_s)


# ---------------------------------------------------------------------------------------------- layout


def test_registration(fake_comfy):
    assert fake_comfy.pack.WEB_DIRECTORY == "./web"
    # the five nodes the user asked for, under their names word for word (more nodes may follow)
    asked = {"VToonifyLoadModel": "Load VToonify Model", "VToonifyExtractStyle": "Extract Style Code",
             "VToonifyFaceParse": "Face Parse", "VToonifySmoothParsing": "Smooth Parsing",
             "VToonifyStylizeFrames": "Stylize Frames"}
    assert {k: fake_comfy.pack.NODE_DISPLAY_NAME_MAPPINGS.get(k) for k in asked} == asked
    assert all(k.startswith("VToonify") for k in fake_comfy.pack.NODE_CLASS_MAPPINGS)
    assert set(fake_comfy.pack.NODE_CLASS_MAPPINGS) == set(fake_comfy.pack.NODE_DISPLAY_NAME_MAPPINGS)
    for cls in fake_comfy.pack.NODE_CLASS_MAPPINGS.values():
        assert cls.CATEGORY == "VToonify"
        assert callable(getattr(cls, cls.FUNCTION))
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
        spec = cls.INPUT_TYPES()
        for group in spec.values():
            for name, (_, opts) in group.items():
                assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
                assert opts.get("tooltip"), f"{cls.__name__}.{name} has no tooltip"
    types_out = {t for c in fake_comfy.pack.NODE_CLASS_MAPPINGS.values() for t in c.RETURN_TYPES}
    assert {"VTOONIFY_MODEL", "VTOONIFY_STYLE", "FACE_PARSER", "FACE_PARSING"} <= types_out


#: inputs declared once in nodes/inputs.py, and the nodes whose input of that name means something else
SHARED_INPUTS = ("vtoonify_model", "style_degree", "crop_mode", "batch_size", "face_padding", "style_id",
                 "color_transfer", "flow")
OWN_MEANING = {("VToonifyExemplarStyle", "vtoonify_model"): "a VToonify-D checkpoint",
               ("VToonifyExemplarStyle", "color_transfer"): "reference's colours"}


def test_shared_inputs_are_declared_once(fake_comfy):
    """Every node with one of the shared inputs takes it from nodes/inputs.py: same type, default, range
    and tooltip (a node where the input means something else says so in its own tooltip)."""
    inputs = fake_comfy.module("nodes.inputs")
    seen = set()
    for node_id, cls in fake_comfy.pack.NODE_CLASS_MAPPINGS.items():
        for group in cls.INPUT_TYPES().values():
            for name, (kind, opts) in group.items():
                if name not in SHARED_INPUTS:
                    continue
                seen.add(name)
                shared_kind, shared_opts = getattr(inputs, name)()
                assert kind == shared_kind, (node_id, name)
                own = OWN_MEANING.get((node_id, name))
                if own is None:
                    assert opts == shared_opts, (node_id, name)
                else:
                    assert {k: v for k, v in opts.items() if k != "tooltip"} == \
                        {k: v for k, v in shared_opts.items() if k != "tooltip"}, (node_id, name)
                    assert own in opts["tooltip"] and opts["tooltip"] != shared_opts["tooltip"], (node_id, name)
    assert seen == set(SHARED_INPUTS)
    assert inputs.crop_mode()[0] == list(inputs.CROP_MODES) == ["face (official crop)", "whole frame (pad to 8)"]
    assert [inputs.crop_mode_of(label) for label in inputs.CROP_MODES] == ["face", "whole"]


def test_core_imports_no_comfyui():
    pattern = re.compile(r"^\s*(?:import|from)\s+(comfy\w*|folder_paths|server|nodes|execution|node_helpers)\b",
                         re.MULTILINE)
    for path in sorted((ROOT / "vtoonify_core").rglob("*.py")):
        hits = pattern.findall(path.read_text())
        assert not hits, f"{path.name} imports ComfyUI modules {hits}"


def test_the_core_is_imported_once(fake_comfy):
    """The pack's relative imports of its core give the very modules the tests import (one copy of every
    class: a bundle made here is a VToonifyModel to the nodes)."""
    import vtoonify_core.models.bundle

    prefix = fake_comfy.pack.__name__ + "."
    core = [k for k in sys.modules if k.startswith(prefix + "vtoonify_core")]
    assert prefix + "vtoonify_core.models.bundle" in core
    assert all(sys.modules[k] is sys.modules[k[len(prefix):]] for k in core)
    assert fake_comfy.module("vtoonify_core.models.bundle") is vtoonify_core.models.bundle
    assert issubclass(fake_comfy.module("nodes.bundle").ComfyVToonifyModel, VToonifyModel)


def test_nodes_import_the_core_relatively():
    for path in sorted((ROOT / "nodes").rglob("*.py")):
        text = path.read_text()
        assert not re.search(r"^\s*(?:import|from)\s+vtoonify_core\b", text, re.MULTILINE), path.name
        assert not re.search(r"^\s*(?:import|from)\s+nodes\b", text, re.MULTILINE), path.name
        assert "sys.path" not in text, path.name


def test_folder_registered_and_choices(fake_comfy):
    import folder_paths

    folder = fake_comfy.models
    assert str(folder) in folder_paths.get_folder_paths("vtoonify")
    req = fake_comfy.pack.NODE_CLASS_MAPPINGS["VToonifyLoadModel"].INPUT_TYPES()["required"]
    ckpts = req["checkpoint"][0]
    assert D_CKPT in ckpts and T_CKPT in ckpts and "vtoonify_d_pixar/vtoonify_s_d.pt" in ckpts
    assert req["checkpoint"][1]["default"] == D_CKPT
    assert req["exstyle"][0][:2] == ["auto", "none"]
    assert "vtoonify_d_cartoon/exstyle_code.npy" in req["exstyle"][0]
    assert req["device"][0] == ["auto", "cuda", "cpu", "mps"]
    assert req["precision"][0] == ["auto", "fp32", "fp16", "bf16"]
    assert req["download_missing"] == ("BOOLEAN", req["download_missing"][1])
    assert req["download_missing"][1]["default"] is False


# ---------------------------------------------------------------------------------------------- Load VToonify Model


def test_load_detects_d_and_t(loader_output_d, loader_output_t):
    model_d, parser_d = loader_output_d
    assert isinstance(model_d, VToonifyModel) and isinstance(parser_d, FaceParserModel)
    assert model_d.backbone == "dualstylegan" and model_d.kind == "VToonify-D"
    assert model_d.n_styles == 4 and model_d.exstyles.names[0] == "000.jpg"
    assert model_d.sources["exstyle"].endswith("exstyle_code.npy")
    assert model_d.device == torch.device("cpu") and model_d.dtype == torch.float32
    assert next(model_d.generator.parameters()).dtype == torch.float32
    model_t, _ = loader_output_t
    assert model_t.backbone == "toonify" and model_t.exstyles is None and model_t.n_styles == 0
    assert model_t.dtype == torch.float32 and model_t.device == torch.device("cpu")  # auto device on CPU
    assert parser_d.parser is model_d.parser
    assert model_t.encoder is model_d.encoder and model_t.parser is model_d.parser  # shared through the cache


def test_load_is_cached_and_bounded(fake_comfy, loader_output_d):
    cache = fake_comfy.module("nodes.cache")
    load = fake_comfy.node("VToonifyLoadModel")
    again, _ = load(D_CKPT, "encoder.pt", "faceparsing.pth", "auto", "cpu", "fp32", False)
    assert again.generator is loader_output_d[0].generator and again.encoder is loader_output_d[0].encoder
    assert len(cache.NETWORKS) <= cache.NETWORKS.capacity
    part, path, mtime, size, device, dtype = cache.NETWORKS.keys()[0]
    assert part in ("generator", "encoder", "parser") and device == "cpu" and dtype == "torch.float32"
    # a changed file (new mtime) is read again
    folder = fake_comfy.models
    copy = folder / "parser_copy.pth"
    copy.write_bytes((folder / "faceparsing.pth").read_bytes())
    load = lambda: fake_comfy.node("VToonifyLoadModel")(D_CKPT, "encoder.pt", "parser_copy.pth", "auto", "cpu",  # noqa
                                                        "fp32", False)[1].parser
    first = load()
    assert load() is first
    os.utime(copy, ns=(1, 1))
    assert load() is not first
    copy.unlink()


def test_load_is_changed_follows_the_files(fake_comfy):
    cls = fake_comfy.pack.NODE_CLASS_MAPPINGS["VToonifyLoadModel"]
    folder = fake_comfy.models
    copy = folder / "parser_stamp.pth"
    copy.write_bytes(b"x")
    try:
        first = cls.IS_CHANGED(checkpoint=D_CKPT, style_encoder="encoder.pt", face_parser="parser_stamp.pth",
                               exstyle="auto", device="cpu", precision="fp32", download_missing=False)
        assert isinstance(first, str) and "auto:" in first and "auto:-" not in first
        os.utime(copy, ns=(5, 5))
        assert cls.IS_CHANGED(checkpoint=D_CKPT, style_encoder="encoder.pt", face_parser="parser_stamp.pth",
                              exstyle="auto") != first
    finally:
        copy.unlink()


def test_load_missing_file_explains_layout(fake_comfy):
    with pytest.raises(FileNotFoundError) as err:
        fake_comfy.node("VToonifyLoadModel")("vtoonify_d_pixar/vtoonify_s_d.pt", "encoder.pt", "faceparsing.pth",
                                             "auto", "cpu", "fp32", False)
    msg = str(err.value)
    for text in ("Load VToonify Model", "checkpoint", "vtoonify_d_pixar/vtoonify_s_d.pt", "vtoonify_t_<style>/vtoonify.pt",
                 "vtoonify_d_<style>/vtoonify_s_d.pt", "exstyle_code.npy", "encoder.pt", "faceparsing.pth",
                 "PKUWilliamYang/VToonify", "models/", "download_missing"):
        assert text in msg, text


def test_load_wrong_kind_and_bad_device(fake_comfy):
    load = fake_comfy.node("VToonifyLoadModel")
    with pytest.raises(ValueError, match=r"Load VToonify Model: checkpoint: .*pSp style encoder"):
        load("encoder.pt", "encoder.pt", "faceparsing.pth", "auto", "cpu", "fp32", False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device: CUDA is not available"):
            load(D_CKPT, "encoder.pt", "faceparsing.pth", "auto", "cuda", "auto", False)


def test_load_d_without_exstyle(fake_comfy, tmp_path, monkeypatch, vtoonify_d_path):
    """'auto' needs exstyle_code.* beside a D checkpoint; 'none' loads none (style extraction then refuses)."""
    folder = fake_comfy.models
    lone = folder / "lone_d"
    lone.mkdir()
    os.symlink(vtoonify_d_path, lone / "vtoonify_s_d.pt")
    try:
        load = fake_comfy.node("VToonifyLoadModel")
        with pytest.raises(FileNotFoundError, match=r"exstyle: VToonify-D needs its exemplar style codes"):
            load("lone_d/vtoonify_s_d.pt", "encoder.pt", "faceparsing.pth", "auto", "cpu", "fp32", False)
        model, _ = load("lone_d/vtoonify_s_d.pt", "encoder.pt", "faceparsing.pth", "none", "cpu", "fp32", False)
        assert model.exstyles is None
        with pytest.raises(ValueError, match=r"Extract Style Code: style_id: .*no exemplar style codes"):
            fake_comfy.node("VToonifyExtractStyle")(model, torch.rand(1, 16, 16, 3), 0, False)
    finally:
        (lone / "vtoonify_s_d.pt").unlink()
        lone.rmdir()


def test_download_missing_uses_the_hub(fake_comfy, tmp_path, monkeypatch, vtoonify_t_path, vtoonify_d_path,
                                       psp_path, bisenet_path, exstyle_path):
    import folder_paths

    dest = tmp_path / "vtoonify"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "vtoonify", ([str(dest)], set()))
    # the pack's own models/vtoonify is always listed too (after the user's folders): an empty one here
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    sources = {"models/" + T_CKPT: vtoonify_t_path, "models/" + D_CKPT: vtoonify_d_path,
               "models/encoder.pt": psp_path, "models/faceparsing.pth": bisenet_path,
               "models/vtoonify_d_cartoon/exstyle_code.npy": exstyle_path}
    calls = []

    def hf_hub_download(repo_id, filename, local_dir=None, **kwargs):
        calls.append((repo_id, filename))
        if filename not in sources:
            raise FileNotFoundError(f"404 {filename}")
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(sources[filename], target)  # stands for the downloaded copy
        return str(target)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=hf_hub_download))
    load = fake_comfy.node("VToonifyLoadModel")
    model, _ = load(D_CKPT, "encoder.pt", "faceparsing.pth", "auto", "cpu", "fp32", True)
    assert model.backbone == "dualstylegan" and model.n_styles == 4
    assert calls == [("PKUWilliamYang/VToonify", "models/" + D_CKPT), ("PKUWilliamYang/VToonify", "models/encoder.pt"),
                     ("PKUWilliamYang/VToonify", "models/faceparsing.pth"),
                     ("PKUWilliamYang/VToonify", "models/vtoonify_d_cartoon/exstyle_code.npy")]
    for rel in (D_CKPT, "encoder.pt", "faceparsing.pth", "vtoonify_d_cartoon/exstyle_code.npy"):
        assert (dest / rel).exists(), rel
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # scratch folder removed
    calls.clear()
    load(D_CKPT, "encoder.pt", "faceparsing.pth", "auto", "cpu", "fp32", True)
    assert calls == []  # present now: nothing downloaded
    with pytest.raises(FileNotFoundError, match=r"could not download models/vtoonify_t_pixar/vtoonify.pt"):
        load("vtoonify_t_pixar/vtoonify.pt", "encoder.pt", "faceparsing.pth", "auto", "cpu", "fp32", True)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(ImportError, match=r"pip install huggingface_hub"):  # a file the hub has (VToonify-T is not)
        load("vtoonify_d_pixar/vtoonify_s_d.pt", "encoder.pt", "faceparsing.pth", "auto", "cpu", "fp32", True)


# ---------------------------------------------------------------------------------------------- Extract Style Code


def test_extract_style_t(fake_comfy, loader_output_t, astronaut, dlib_ok):
    """VToonify-T: s_w = zplus2wplus(pSp(aligned)); the aligned crop is the official one."""
    from vtoonify_core import faces
    from vtoonify_core.faces import align, crop

    model, _ = loader_output_t
    style, aligned, info = fake_comfy.node("VToonifyExtractStyle")(model, astronaut, 3, True)
    assert isinstance(style, StyleCode) and style.backbone == "toonify"
    assert style.wplus.shape == (1, 18, 512) and style.wplus.dtype == torch.float32
    assert style.wplus.device.type == "cpu" and style.style_id is None and not style.color_transfer
    assert aligned.shape == (1, 256, 256, 3) and aligned.dtype == torch.float32 and aligned.device.type == "cpu"
    assert 0 <= float(aligned.min()) and float(aligned.max()) <= 1
    assert "VToonify-T" in info
    # official aligned crop: official crop of the frame, landmarks found again in it, FFHQ alignment
    frame = skdata.astronaut()
    face = faces.detect_faces(frame)[0]
    cropped, geo = crop.official_crop(frame, face.landmarks)
    again = faces.detect_faces(cropped)[0]
    expected = align.align_face(cropped, again.landmarks)
    assert np.array_equal((aligned[0].numpy() * 255).round().astype(np.uint8), expected)
    # the rule, with the same encoder
    with torch.no_grad():
        x = torch.from_numpy(expected).permute(2, 0, 1)[None].float() / 127.5 - 1
        ref = model.generator.zplus2wplus(model.encoder(x))
    torch.testing.assert_close(style.wplus, ref, atol=1e-5, rtol=1e-5)


class FixedEncoder(torch.nn.Module):
    """Stands for pSp: returns a fixed z+ and records its input."""

    def __init__(self, z):
        super().__init__()
        self.z = z
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.clone())
        return self.z.to(x.dtype)


def test_extract_style_d_rule(fake_comfy, loader_output_d, astronaut, dlib_ok):
    """VToonify-D: s_w[:, :7] = exemplar W+[:, :7] (else pSp); colour transfer: s_w = exemplar W+."""
    model, _ = loader_output_d
    z = torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(1))
    enc = FixedEncoder(z)
    fake = dataclasses.replace(model, encoder=enc)
    extract = fake_comfy.node("VToonifyExtractStyle")
    style, aligned, info = extract(fake, astronaut, 2, False)
    with torch.no_grad():
        ex = model.generator.zplus2wplus(model.exstyles.codes[2:3])
        content = model.generator.zplus2wplus(z)
    assert len(enc.inputs) == 1 and enc.inputs[0].shape == (1, 3, 256, 256)
    torch.testing.assert_close(enc.inputs[0], aligned.permute(0, 3, 1, 2) * 2 - 1, atol=1e-6, rtol=0)
    torch.testing.assert_close(style.wplus[:, :7], ex[:, :7])
    torch.testing.assert_close(style.wplus[:, 7:], content[:, 7:])
    assert (style.backbone, style.style_id, style.style_name, style.color_transfer) == ("dualstylegan", 2, "002.jpg",
                                                                                        False)
    assert "style 2" in info and "002.jpg" in info
    style_c, _, info_c = extract(fake, astronaut, 3, True)
    torch.testing.assert_close(style_c.wplus, model.generator.zplus2wplus(model.exstyles.codes[3:4]))
    assert style_c.color_transfer and style_c.style_name == "003.jpg" and "exemplar colours" in info_c
    assert len(enc.inputs) == 1  # colour transfer does not need the face code


def test_extract_style_errors(fake_comfy, loader_output_d, astronaut, dlib_ok):
    model, _ = loader_output_d
    extract = fake_comfy.node("VToonifyExtractStyle")
    with pytest.raises(ValueError) as err:
        extract(model, astronaut, 7, False)
    assert "Extract Style Code: style_id" in str(err.value) and "4 styles" in str(err.value)
    assert "0..3" in str(err.value)
    with pytest.raises(ValueError, match=r"No face was detected"):  # with colour transfer no face is needed
        extract(model, torch.full((1, 96, 96, 3), 0.5), 0, False)
    with pytest.raises(ValueError, match=r"image: the batch is empty"):
        extract(model, torch.zeros(0, 64, 64, 3), 0, True)
    nan = astronaut.clone()
    nan[0, 5, 5, 0] = float("nan")
    with pytest.raises(ValueError, match=r"image: frame\(s\) 0 contain NaN"):
        extract(model, nan, 0, True)


# ---------------------------------------------------------------------------------------------- Face Parse, Smooth Parsing


@pytest.fixture(scope="module")
def parsed(fake_comfy, loader_output_d, frames32):
    fake_comfy.state.progress.clear()
    parse = fake_comfy.node("VToonifyFaceParse")
    out = parse(loader_output_d[1], frames32[:3], **{"mask_hair": True, "mask_skin": False})
    return out, list(fake_comfy.state.progress)


def test_face_parse(fake_comfy, parsed, frames32, reference_networks):
    from vtoonify_core import parse_frames

    (parsing, mask, colours), progress = parsed
    assert isinstance(parsing, FaceParsing) and not parsing.smoothed
    assert parsing.logits.shape == (3, 19, 32, 32) and parsing.logits.dtype == torch.float32
    with torch.no_grad():
        ref = parse_frames(reference_networks["parser"], frames32[:3].permute(0, 3, 1, 2) * 2 - 1)
    torch.testing.assert_close(parsing.logits, ref, atol=1e-5, rtol=1e-5)
    # mask: softmax probability of the default face classes (skin off) plus hair
    prob = torch.softmax(ref, dim=1)
    classes = [2, 3, 4, 5, 10, 11, 12, 13, 17]
    torch.testing.assert_close(mask, prob[:, classes].sum(1).clamp(0, 1), atol=1e-5, rtol=1e-5)
    assert mask.shape == (3, 32, 32) and mask.dtype == torch.float32 and mask.device.type == "cpu"
    assert colours.shape == (3, 32, 32, 3) and 0 <= float(colours.min()) and float(colours.max()) <= 1
    palette = torch.tensor(CLASS_COLORS, dtype=torch.float32) / 255
    torch.testing.assert_close(colours, palette[ref.argmax(1)])
    assert progress[-1] == (3, 3)


def test_face_parse_toggles_cover_all_classes(fake_comfy):
    req = fake_comfy.pack.NODE_CLASS_MAPPINGS["VToonifyFaceParse"].INPUT_TYPES()["required"]
    toggles = [k for k in req if k.startswith("mask_")]
    covered = sorted(i for k in toggles for i in CLASS_GROUPS[k[len("mask_"):]])
    assert covered == list(range(19))
    assert CLASS_NAMES[17] == "hair" and CLASS_NAMES[1] == "skin" and len(CLASS_NAMES) == 19


def test_face_parse_says_what_to_connect(fake_comfy, loader_output_d, frames32):
    with pytest.raises(ValueError, match=r"Face Parse: face_parser: expected a FACE_PARSER, got ComfyVToonifyModel: "
                                         r"connect the face_parser output of Load VToonify Model"):
        fake_comfy.node("VToonifyFaceParse")(loader_output_d[0], frames32[:1])


def test_smooth_parsing(fake_comfy, parsed, frames32):
    from vtoonify_core.temporal.smoothing import smooth_parsing

    (parsing, _, _), _ = parsed
    (smoothed,) = fake_comfy.node("VToonifySmoothParsing")(parsing, frames32[:3], 1, 1.5, 0.2)
    assert isinstance(smoothed, FaceParsing) and smoothed.smoothed
    ref = smooth_parsing(parsing.logits, frames32[:3].permute(0, 3, 1, 2) * 2 - 1, k=1, sigma_t=1.5, sigma_s=0.2)
    torch.testing.assert_close(smoothed.logits, ref, atol=1e-5, rtol=1e-5)
    assert not torch.equal(smoothed.logits, parsing.logits)
    with pytest.raises(ValueError, match=r"Smooth Parsing: images: 2 images but the parsing holds 3 frames"):
        fake_comfy.node("VToonifySmoothParsing")(parsing, frames32[:2], 1, 1.5, 0.2)


# ---------------------------------------------------------------------------------------------- Stylize Frames


def test_stylize_whole_frame_equals_core(fake_comfy, comfy_state, loader_output_t, frames32, reference_networks):
    model, _ = loader_output_t
    style = random_style(model)
    images, mask, x, y, w, h, _faces = fake_comfy.node("VToonifyStylizeFrames")(
        model, frames32[:2], style, 0.5, "whole frame (pad to 8)", 4)
    assert images.shape == (2, 128, 128, 3) and images.dtype == torch.float32 and images.device.type == "cpu"
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    ref = reference_forward(reference_networks, "toonify", frames32[:2].permute(0, 3, 1, 2), style.wplus, 0.5)
    torch.testing.assert_close(images, as_image(ref), atol=1e-5, rtol=1e-5)
    assert mask.shape == (2, 32, 32) and bool((mask == 1).all()) and (x, y, w, h) == (0, 0, 32, 32)
    assert comfy_state.progress[-1] == (2, 2) and comfy_state.interrupt_checks == 1


def test_stylize_with_parsing_and_padding(fake_comfy, loader_output_d, parsed, frames32, reference_networks):
    """Given (smoothed) parsing maps are used as they are; a 30x30 frame is padded to 32 and cropped back."""
    model, _ = loader_output_d
    (parsing, _, _), _ = parsed
    style = random_style(model, 3)
    stylize = fake_comfy.node("VToonifyStylizeFrames")
    frames = frames32[:1]
    images, *_ = stylize(model, frames, style, 0.3, "whole frame (pad to 8)", 4,
                         face_parsing=FaceParsing(parsing.logits[:1]))
    ref = reference_forward(reference_networks, "dualstylegan", frames.permute(0, 3, 1, 2), style.wplus, 0.3,
                            parsing.logits[:1])
    torch.testing.assert_close(images, as_image(ref), atol=1e-5, rtol=1e-5)
    # 30x30: reflect-padded by 1 px on each side, output cropped back to 120x120
    odd = frames32[:1, 1:31, 1:31]
    images, mask, x, y, w, h, _faces = stylize(model, odd, style, 0.3, "whole frame (pad to 8)", 4)
    assert images.shape == (1, 120, 120, 3) and mask.shape == (1, 30, 30) and (w, h) == (30, 30)
    padded = F.pad(odd.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="reflect")
    ref = reference_forward(reference_networks, "dualstylegan", padded, style.wplus, 0.3)[..., 4:-4, 4:-4]
    torch.testing.assert_close(images, as_image(ref), atol=1e-5, rtol=1e-5)


def test_stylize_face_crop_equals_core(fake_comfy, comfy_state, loader_output_d, astronaut, reference_networks,
                                       dlib_ok):
    from vtoonify_core import faces
    from vtoonify_core.faces import crop

    model, _ = loader_output_d
    style = random_style(model, 5)
    images, mask, x, y, w, h, _faces = fake_comfy.node("VToonifyStylizeFrames")(
        model, astronaut, style, 0.5, "face (official crop)", 2, None, FACE_PAD)
    frame = skdata.astronaut()
    face = faces.detect_faces(frame)[0]
    cropped, geo = crop.official_crop(frame, face.landmarks, (FACE_PAD,) * 4)
    assert images.shape == (1, 4 * cropped.shape[0], 4 * cropped.shape[1], 3)
    x01 = torch.from_numpy(cropped).permute(2, 0, 1)[None].float() / 255
    ref = reference_forward(reference_networks, "dualstylegan", x01, style.wplus, 0.5)
    torch.testing.assert_close(images, as_image(ref), atol=1e-5, rtol=1e-5)
    # mask and box: the crop window in the input frame
    assert mask.shape == (1, 512, 512) and 0 <= float(mask.min()) and float(mask.max()) == 1
    x0, y0, x1, y1 = geo.box
    assert abs(x - x0) <= 1 and abs(y - y0) <= 1 and abs(x + w - x1) <= 1 and abs(y + h - y1) <= 1
    assert float(mask[0, y + h // 2, x + w // 2]) == 1 and float(mask[0, 0, 0]) == 0
    assert abs(float(mask.sum()) - (x1 - x0) * (y1 - y0)) < 1e-3 * (x1 - x0) * (y1 - y0) + 1
    assert comfy_state.progress[-1] == (1, 1)


def test_stylize_face_crop_with_frame_parsing(fake_comfy, loader_output_d, astronaut, dlib_ok):
    """Parsing at the input frame size is resized and cropped with the face geometry."""
    model, parser = loader_output_d
    style = random_style(model, 6)
    frame_parsing = FaceParsing(torch.zeros(1, 19, 512, 512))
    stylize = fake_comfy.node("VToonifyStylizeFrames")
    images, *_ = stylize(model, astronaut, style, 0.5, "face (official crop)", 2, frame_parsing, FACE_PAD)
    assert images.shape[1] % 32 == 0  # 4x a crop whose sides are multiples of 8
    with pytest.raises(ValueError, match=r"face_parsing: maps are 64x64 but the frames are 512x512"):
        stylize(model, astronaut, style, 0.5, "face (official crop)", 2, FaceParsing(torch.zeros(1, 19, 64, 64)),
                FACE_PAD)


def test_stylize_interrupt_between_chunks(fake_comfy, comfy_state, loader_output_t, frames32):
    model, _ = loader_output_t
    counting = CountingGenerator(model.generator)
    wrapped = dataclasses.replace(model, generator=counting)
    comfy_state.interrupt_on = 2
    with pytest.raises(comfy_stub.InterruptProcessingException):
        fake_comfy.node("VToonifyStylizeFrames")(wrapped, frames32[:3], random_style(model), 0.5,
                                                 "whole frame (pad to 8)", 1)
    assert counting.calls == [1] and comfy_state.interrupt_checks == 2


def test_stylize_oom_backoff(fake_comfy, comfy_state, loader_output_t, frames32):
    """OOM above 2 frames: 4 -> 2 -> 2 -> 1 for 5 frames, the result complete and equal."""
    model, _ = loader_output_t
    style = random_style(model, 7)
    counting = CountingGenerator(model.generator, max_batch=2)
    wrapped = dataclasses.replace(model, generator=counting)
    images, *_ = fake_comfy.node("VToonifyStylizeFrames")(wrapped, frames32, style, 0.5, "whole frame (pad to 8)", 4)
    assert counting.calls == [4, 2, 2, 1]
    assert comfy_state.soft_empty_cache >= 1
    assert [p for p in comfy_state.progress if p[0]] == [(2, 5), (4, 5), (5, 5)]
    ref = stylize(model, frames32.permute(0, 3, 1, 2), style, 0.5, batch_size=5, input_range=(0, 1))
    torch.testing.assert_close(images, as_image(ref), atol=1e-5, rtol=1e-5)
    # OOM on a single frame: the core's OutOfMemoryError, saying what to change
    counting = CountingGenerator(model.generator, max_batch=0)
    failing = dataclasses.replace(model, generator=counting)
    with pytest.raises(OutOfMemoryError, match=r"out of memory on a single frame on cpu: use smaller frames"):
        fake_comfy.node("VToonifyStylizeFrames")(failing, frames32[:2], style, 0.5, "whole frame (pad to 8)", 2)
    assert counting.calls == [2, 1]


def test_stylize_bad_inputs(fake_comfy, loader_output_d, loader_output_t, frames32, dlib_ok):
    model, _ = loader_output_d
    style = random_style(model)
    stylize = fake_comfy.node("VToonifyStylizeFrames")
    whole = "whole frame (pad to 8)"
    cases = [
        (dict(images=torch.zeros(0, 32, 32, 3)), r"Stylize Frames: images: the batch is empty"),
        (dict(style=random_style(loader_output_t[0])),
         r"Stylize Frames: style: this style code was made with a VToonify-T model but the model is VToonify-D"),
        (dict(images=torch.rand(1, 3, 3, 3)), r"images: a 3x3 frame cannot be padded to a multiple of 8"),
        (dict(style_degree=1.5), r"style_degree: must be between 0 and 1"),
        (dict(face_parsing=FaceParsing(torch.zeros(2, 19, 32, 32))),
         r"face_parsing: holds 2 frames but there are 1 images"),
        (dict(face_parsing=FaceParsing(torch.zeros(1, 19, 16, 16))),
         r"face_parsing: maps are 16x16 but the frames are 32x32"),
        (dict(crop_mode="face (official crop)", images=torch.full((1, 64, 64, 3), 0.5)), r"No face was detected"),
        (dict(batch_size=-1), r"batch_size: must be 0 \(automatic, from the free memory\) or at least 1"),
        (dict(style="not a style"), r"style: expected a VToonify style code"),
        (dict(vtoonify_model=style), r"Stylize Frames: vtoonify_model: expected a VTOONIFY_MODEL, got StyleCode: "
                                     r"connect the vtoonify_model output of Load VToonify Model"),
    ]
    nan = frames32[:2].clone()
    nan[1, 0, 0, 2] = float("inf")
    cases.append((dict(images=nan), r"images: frame\(s\) 1 contain NaN or infinite values"))
    for override, pattern in cases:
        args = dict(vtoonify_model=model, images=frames32[:1], style=style, style_degree=0.5, crop_mode=whole,
                    batch_size=2)
        args.update(override)
        with pytest.raises(ValueError, match=pattern):
            stylize(**args)


# ---------------------------------------------------------------------------------------------- core glue


def test_pad_to_multiple_roundtrip():
    x = torch.arange(2 * 3 * 13 * 21, dtype=torch.float32).reshape(2, 3, 13, 21)
    padded, pad = pad_to_multiple(x, 8)
    assert padded.shape == (2, 3, 16, 24) and pad == FramePadding(1, 2, 1, 2)
    torch.testing.assert_close(padded[..., 1:14, 1:22], x)
    up = F.interpolate(padded, scale_factor=4, mode="nearest")
    torch.testing.assert_close(crop_padding(up, pad, 4), F.interpolate(x, scale_factor=4, mode="nearest"))
    same, pad0 = pad_to_multiple(torch.zeros(1, 3, 16, 8))
    assert same.shape == (1, 3, 16, 8) and pad0 == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="cannot be padded"):
        pad_to_multiple(torch.zeros(1, 3, 2, 16))


def test_make_inputs_and_ranges():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    p = torch.randn(2, 19, 8, 8) * 10
    inp = make_inputs(x, p)
    assert inp.shape == (2, 22, 8, 8)
    torch.testing.assert_close(inp[:, 3:], p / 16)
    u8 = torch.tensor([[0, 255]], dtype=torch.uint8)
    torch.testing.assert_close(to_model_range(u8), torch.tensor([[-1.0, 1.0]]))
    torch.testing.assert_close(to_model_range(torch.tensor([0.0, 0.5, 1.0]), (0, 1)), torch.tensor([-1.0, 0, 1]))


def test_run_chunks_keeps_the_halved_size():
    sizes = []

    def fn(i, j):
        sizes.append(j - i)
        if j - i > 3:
            raise RuntimeError("MPS backend out of memory (simulated)")
        return torch.arange(i, j)

    got = list(run_chunks(fn, 10, 8, device=torch.device("cpu")))
    assert sizes == [8, 4, 2, 2, 2, 2, 2]
    assert torch.equal(torch.cat([y for _, y in got]), torch.arange(10))
    with pytest.raises(ValueError, match="boom"):
        list(run_chunks(lambda i, j: (_ for _ in ()).throw(ValueError("boom")), 3, 2, device=torch.device("cpu")))


# ---------------------------------------------------------------------------------------------- ComfyUI memory hooks


def test_accelerator_networks_go_through_comfy_model_management(fake_comfy, comfy_state, bisenet_path):
    """Simulated CUDA: the network is read to the offload device and gets a patcher; the bundle holding it
    asks load_models_gpu (full load) for it; a dropped network is detached (weights to the offload device)
    and ComfyUI forgets it once it is garbage."""
    cache, bundle = fake_comfy.module("nodes.cache"), fake_comfy.module("nodes.bundle")
    cuda = torch.device("cuda", 0)
    reads = []

    def loader(path, device, dtype):
        reads.append(device)
        return torch.nn.Linear(2, 2)

    entries = len(comfy_state.current_loaded_models)
    module, patcher = cache.load_network("parser", Path(bisenet_path), cuda, torch.float16, loader)
    assert reads == [torch.device("cpu")]
    assert isinstance(patcher, comfy_stub.FakeModelPatcher)
    assert patcher.model is module and patcher.load_device == cuda and patcher.offload_device == torch.device("cpu")
    parser = bundle.ComfyFaceParser(module, cuda, torch.float16, patcher)
    parser.load(1234)
    assert comfy_state.load_models_gpu[-1] == ([patcher], {"memory_required": 1234, "force_full_load": True})
    assert [lm.model for lm in comfy_state.current_loaded_models[:1]] == [patcher]
    assert cache.load_network("parser", Path(bisenet_path), cuda, torch.float16, loader) == (module, patcher)
    assert len(reads) == 1
    fake_comfy.pack.free_cache()
    assert len(cache.NETWORKS) == 0 and patcher.detaches == [True] and comfy_state.soft_empty_cache >= 1
    assert len(comfy_state.current_loaded_models) == entries + 1  # ComfyUI's entry lives as long as the network
    gone = weakref.ref(module)
    comfy_state.load_models_gpu.clear()  # the stub's record of the call holds the patcher
    del parser, module, patcher
    gc.collect()
    assert gone() is None and len(comfy_state.current_loaded_models) == entries


def test_cache_eviction_releases_least_recent(fake_comfy, comfy_state):
    cache = fake_comfy.module("nodes.cache")
    released = []
    lru = cache.LRUCache(2, on_evict=released.append)
    entries = [lru.get((i,), lambda i=i: cache.Entry(i)) for i in range(3)]
    assert [e.value for e in released] == [0] and len(lru) == 2
    lru.get((1,), lambda: cache.Entry("reloaded"))  # hit: 1 becomes most recent
    lru.get((3,), lambda: cache.Entry(3))
    assert [e.value for e in released] == [0, 2] and entries[1].value == 1


def test_auto_precision_is_bf16_only_where_the_cpu_runs_it_natively(fake_comfy):
    from vtoonify_core.runtime import device as pipeline

    expected = torch.bfloat16 if pipeline.cpu_has_fast_bf16() else torch.float32
    assert pipeline.resolve_dtype("auto", "cpu") == expected
    assert fake_comfy.module("nodes._comfy").resolve_dtype("auto", torch.device("cpu")) == expected
    assert pipeline.resolve_dtype("fp16", "cpu") == torch.float16


# ---------------------------------------------------------------------------------------------- Speed Settings


def test_speed_settings_give_the_same_images_and_leave_the_loader_model_alone(fake_comfy, loader_output_d, frames32,
                                                                               monkeypatch):
    model, _ = loader_output_d
    style = random_style(model, 5)
    stylize = fake_comfy.node("VToonifyStylizeFrames")
    speed = fake_comfy.node("VToonifySpeedSettings")
    default, *_ = stylize(model, frames32[:2], style, 0.5, "whole frame (pad to 8)", 2)
    (plain_model,) = speed(model, False, False, "off", "off")
    assert plain_model is not model and plain_model.generator is not model.generator
    assert next(plain_model.generator.parameters()) is next(model.generator.parameters())  # no copy of the weights
    assert (plain_model.generator.fast, plain_model.generator.channels_last) == (False, False)
    assert (model.generator.fast, model.generator.channels_last, model.generator.compile_mode) == (True, True, None)
    plain, *_ = stylize(plain_model, frames32[:2], style, 0.5, "whole frame (pad to 8)", 2)
    assert (plain - default).abs().max() < 1e-5 and not torch.equal(plain, default)  # other sums, same images
    (folded,) = speed(model, True, True, "on", "off")
    images, *_ = stylize(folded, frames32[:2], style, 0.5, "whole frame (pad to 8)", 2)
    assert (images - default).abs().max() < 1e-5
    (same,) = speed(model, True, True, "auto", "off")  # the loader's own settings: the same computation
    images, *_ = stylize(same, frames32[:2], style, 0.5, "whole frame (pad to 8)", 2)
    assert torch.equal(images, default)
    assert same.generator.reuse_host_memory and model.generator.reuse_host_memory
    (no_reuse,) = speed(model, True, True, "auto", "off", reuse_cpu_memory=False)
    assert not no_reuse.generator.reuse_host_memory and model.generator.reuse_host_memory
    images, *_ = stylize(no_reuse, frames32[:2], style, 0.5, "whole frame (pad to 8)", 2)
    assert torch.equal(images, default)  # where the memory comes from changes no value

    modes = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: modes.append(kw.get("mode")) or fn)
    (compiled,) = speed(model, True, True, "auto", "max-autotune")
    stylize(compiled, frames32[:1], style, 0.5, "whole frame (pad to 8)", 1)
    assert modes == ["max-autotune"] and model.generator.compile_mode is None
    # an unknown compile mode never reaches the node: ComfyUI refuses values outside the list when the prompt
    # is queued (tests/host/test_workflows.py::test_speed_settings_node_runs_in_the_real_host)


@pytest.fixture
def managed_cpu(fake_comfy, monkeypatch):
    """The CPU as a device ComfyUI manages (an accelerator that runs here): networks are read to the
    offload device, get patchers and reach the device only through load_models_gpu. The network cache
    starts and ends empty, so no managed network outlives the test."""
    monkeypatch.setattr(fake_comfy.module("nodes._comfy"), "managed_device", lambda device: True)
    fake_comfy.pack.free_cache()
    yield
    fake_comfy.pack.free_cache()


def test_speed_settings_copy_is_loaded_and_accounted_by_comfy(fake_comfy, comfy_state, managed_cpu, frames32,
                                                              monkeypatch):
    """On a managed device the Speed Settings copy of the generator reaches the device through
    load_models_gpu with a clone of the loader's patcher (never a .to() by the pack on the weights it shares
    with the loader's model); ComfyUI holds the shared weights once; the loader's model keeps its switches."""
    model, parser = fake_comfy.node("VToonifyLoadModel")(D_CKPT, "encoder.pt", "faceparsing.pth", "auto", "cpu",
                                                          "fp32", False)
    loader_patcher = model.patchers["generator"]
    assert isinstance(loader_patcher, comfy_stub.FakeModelPatcher) and loader_patcher.model is model.generator
    assert model.patchers["parser"].model is model.parser and parser.patcher is model.patchers["parser"]
    (copied,) = fake_comfy.node("VToonifySpeedSettings")(model, True, False, "off", "off")
    copy_patcher = copied.patchers["generator"]
    assert copy_patcher.parent is loader_patcher and copy_patcher.is_clone(loader_patcher)
    assert {k: v for k, v in copied.patchers.items() if k != "generator"} == \
        {k: v for k, v in model.patchers.items() if k != "generator"}

    watched = {m for net in (model.generator, copied.generator, model.parser) for m in net.modules()}
    moved = []
    apply = torch.nn.Module._apply

    def spy(self, fn, *args, **kwargs):  # .to(), .cuda(), .half() ... all go through _apply
        if self in watched:
            moved.append(type(self).__name__)
        return apply(self, fn, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "_apply", spy)
    stylize = fake_comfy.node("VToonifyStylizeFrames")
    style = random_style(model, 5)
    reference, *_ = stylize(model, frames32[:2], style, 0.5, "whole frame (pad to 8)", 2)
    images, *_ = stylize(copied, frames32[:2], style, 0.5, "whole frame (pad to 8)", 2)
    assert moved == []
    patchers, options = comfy_state.load_models_gpu[-1]
    assert patchers == [copy_patcher, model.patchers["parser"]]
    assert options["force_full_load"] and options["memory_required"] > 0
    holders = [lm.model for lm in comfy_state.current_loaded_models if lm.model.model is model.generator]
    assert holders == [copy_patcher] and loader_patcher.detaches == [False]  # handed over, weights not moved
    assert (images - reference).abs().max() < 1e-5
    assert (model.generator.fast, model.generator.channels_last) == (True, True)
    assert (copied.generator.fast, copied.generator.channels_last, copied.generator.fold_upsample) == \
        (True, False, False)
    # when ComfyUI moves the weights off the device through the clone, the copy's baked weights go too
    assert "_bake_cache" in copied.generator.__dict__
    copy_patcher.detach(unpatch_all=False)  # handed to another clone: the weights stay
    assert "_bake_cache" in copied.generator.__dict__
    copy_patcher.detach()
    assert "_bake_cache" not in copied.generator.__dict__
