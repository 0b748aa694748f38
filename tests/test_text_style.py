"""Text-driven styles (issue 19): StyleCLIP latent optimisation of VToonify style codes.

A tiny random CLIP built from a transformers ``CLIPConfig`` and read back by the loader (the real
code path, no download), an analytic CLIP whose image embedding is the mean colour (texts are
colour directions), stand-in VToonify weights (conftest.py). Syntheses stop at 32 px.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vtoonify_core as P
from vtoonify_core.clipmodels import load_clip
from vtoonify_core.errors import CheckpointError, InputError, PackageMissingError
from vtoonify_core.styles.text import edit_style_by_text, optimise_style_by_text, reached_layers, render_style
from vtoonify_core.testing.tinyclip import write_tiny_clip

SIZE = 32


# ---------------------------------------------------------------------------------------------- stand-ins


class ColourClip:
    """Analytic CLIP: an image's embedding is its mean colour minus the grey level; texts are colour
    directions (a 3-D joint space)."""

    DIRS = {"red": (2.0, -1.0, -1.0), "green": (-1.0, 2.0, -1.0), "blue": (-1.0, -1.0, 2.0)}

    def __init__(self, text_dim: int = 3, nan: bool = False):
        self.text_dim, self.nan = text_dim, nan

    def encode_image(self, images):
        m = images.mean((2, 3))
        e = m - m.mean(1, keepdim=True)
        return e * float("nan") if self.nan else e

    def encode_text(self, texts):
        return torch.tensor([(self.DIRS[t] + (0.0,) * 3)[:self.text_dim] for t in texts])


def chroma(img: torch.Tensor) -> torch.Tensor:
    m = img.mean((0, 2, 3))
    return m - m.mean()


@pytest.fixture(scope="module")
def model_d(vtoonify_d):
    return P.VToonifyModel(vtoonify_d, None, torch.nn.Identity(), None, torch.device("cpu"), torch.float32, {})


@pytest.fixture(scope="module")
def model_t(vtoonify_t):
    return P.VToonifyModel(vtoonify_t, None, torch.nn.Identity(), None, torch.device("cpu"), torch.float32, {})


def start(model, seed: int = 1, color_transfer: bool = False) -> P.StyleCode:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = model.generator.zplus2wplus(torch.randn(1, 18, 512, generator=g))
    return P.StyleCode(w, model.backbone, 3 if model.backbone == "dualstylegan" else None, "cartoon", color_transfer)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    pytest.importorskip("transformers")  # requirements-test.txt; ComfyUI ships it
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_dir):
    return load_clip(tiny_clip_dir)


# ---------------------------------------------------------------------------------------------- optimisation


def test_tiny_clip_loss_falls_and_is_deterministic(model_d, model_t, tiny_clip):
    """Through the loaded transformers CLIP: the CLIP loss falls (global and directional, D and T);
    the same seed gives the same code, another seed (other random views) another one."""
    s = start(model_d)
    kw = dict(steps=4, size=SIZE, augmentations=2, l2_weight=0.0)
    r = optimise_style_by_text(model_d, s, "a cartoon with big eyes", tiny_clip, seed=0, **kw)
    assert r.steps == 4 and len(r.clip_losses) == 5
    assert r.clip_losses[r.best] < r.clip_losses[0] - 1e-3
    again = optimise_style_by_text(model_d, s, "a cartoon with big eyes", tiny_clip, seed=0, **kw)
    assert torch.equal(again.style.wplus, r.style.wplus) and again.losses == r.losses
    other = optimise_style_by_text(model_d, s, "a cartoon with big eyes", tiny_clip, seed=1, **kw)
    assert not torch.equal(other.style.wplus, r.style.wplus)
    d = optimise_style_by_text(model_d, s, "a grumpy old cartoon", tiny_clip, source_text="a face", steps=4,
                               size=SIZE, l2_weight=0.0)
    assert d.clip_losses[0] == pytest.approx(1.0, abs=1e-3)  # the image has not moved yet
    assert d.clip_losses[d.best] < 0.9
    t = optimise_style_by_text(model_t, start(model_t), "a cartoon with big eyes", tiny_clip, steps=3, size=SIZE,
                               l2_weight=0.0)
    assert t.clip_losses[t.best] < t.clip_losses[0] - 1e-3
    assert r.style.backbone == "dualstylegan" and "text 'a cartoon with big eyes'" in r.style.describe()


@pytest.mark.parametrize("backbone", ["dualstylegan", "toonify"])
@pytest.mark.parametrize("colour", ["red", "blue"])
def test_face_colour_moves_toward_the_text(model_d, model_t, backbone, colour):
    model = model_d if backbone == "dualstylegan" else model_t
    s = start(model)
    r = optimise_style_by_text(model, s, colour, ColourClip(), steps=8, size=SIZE, l2_weight=0.0)
    c = "rgb".index(colour[0])
    before, after = chroma(render_style(model, s, size=SIZE)), chroma(render_style(model, r.style, size=SIZE))
    assert float(after[c]) > float(before[c]) + 0.2, (before, after)
    assert int(after.argmax()) == c
    assert r.clip_losses[r.best] < 0.5 * r.clip_losses[0]


def test_large_l2_keeps_the_code_and_strength_scales(model_d):
    s = start(model_d)
    kept = edit_style_by_text(model_d, s, "red", ColourClip(), steps=3, l2_weight=1e4, size=SIZE)
    assert torch.equal(kept.wplus, s.wplus)
    free = optimise_style_by_text(model_d, s, "red", ColourClip(), steps=3, l2_weight=0.0, size=SIZE)
    change = free.style.wplus - s.wplus
    assert float(change.abs().max()) > 0.1
    half = optimise_style_by_text(model_d, s, "red", ColourClip(), steps=3, l2_weight=0.0, size=SIZE, strength=0.5)
    torch.testing.assert_close(half.style.wplus - s.wplus, 0.5 * change, atol=1e-5, rtol=0)


def changed_layers(a: P.StyleCode, b: P.StyleCode) -> set:
    return {i for i in range(18) if not torch.equal(a.wplus[:, i], b.wplus[:, i])}


def test_only_chosen_layers_change(model_d, model_t):
    s = start(model_d)
    reach = reached_layers(SIZE)
    assert reach == 7 and reached_layers(256) == 13 and reached_layers(1024) == 17
    r = optimise_style_by_text(model_d, s, "blue", ColourClip(), steps=2, size=64, l2_weight=0.0, layers="3-5")
    assert changed_layers(s, r.style) == {3, 4, 5} and r.layers == (3, 4, 5)
    r = optimise_style_by_text(model_d, s, "blue", ColourClip(), steps=2, size=64, l2_weight=0.0, layers="colour")
    assert changed_layers(s, r.style) <= set(range(7, 10)) and r.layers == (7, 8, 9)  # 64 px reaches layer 9
    r = optimise_style_by_text(model_d, s, "blue", ColourClip(), steps=2, size=SIZE, l2_weight=0.0)
    assert 0 not in r.layers and changed_layers(s, r.style) <= set(range(1, reach + 1))
    t = start(model_t)
    r = optimise_style_by_text(model_t, t, "blue", ColourClip(), steps=2, size=64, l2_weight=0.0, layers=[8, 9])
    assert changed_layers(t, r.style) == {8, 9}
    with pytest.raises(InputError, match="layers: VToonify-T reads W\\+ layers 7-17 only"):
        optimise_style_by_text(model_t, t, "blue", ColourClip(), steps=1, size=SIZE, layers="structure")
    with pytest.raises(InputError, match="resolution: the synthesis stopped at 32 px reaches W\\+ layers 0-7"):
        optimise_style_by_text(model_d, s, "blue", ColourClip(), steps=1, size=SIZE, layers="12-17")


def test_interrupt_returns_the_best_code_so_far(model_d):
    s = start(model_d)
    calls, seen = [], []

    def stop():
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("cancelled")

    r = optimise_style_by_text(model_d, s, "red", ColourClip(), steps=10, size=SIZE, l2_weight=0.0,
                               check_interrupt=stop, progress=lambda d, t: seen.append((d, t)))
    assert r.interrupted and r.steps == 2 and seen == [(1, 10), (2, 10)]
    assert r.best == int(np.argmin(r.losses)) and changed_layers(s, r.style)
    full = optimise_style_by_text(model_d, s, "red", ColourClip(), steps=2, size=SIZE, l2_weight=0.0)
    torch.testing.assert_close(r.style.wplus, full.style.wplus)


def test_identity_term_ranks_codes(model_d):
    """dlib's descriptor distance is 0 at the start; a huge identity weight keeps the start code."""
    pytest.importorskip("dlib")
    s = start(model_d)
    r = optimise_style_by_text(model_d, s, "blue", ColourClip(), steps=2, size=64, l2_weight=0.0,
                               identity_weight=0.01)
    assert len(r.identity) == 3 and r.identity[0] == 0.0 and max(r.identity) > 0
    kept = optimise_style_by_text(model_d, s, "blue", ColourClip(), steps=2, size=64, l2_weight=0.0,
                                  identity_weight=1e6)
    assert kept.best == 0 and torch.equal(kept.style.wplus, s.wplus)


# ---------------------------------------------------------------------------------------------- errors


def test_bad_inputs_get_clear_errors(model_d, model_t):
    s = start(model_d)
    run = lambda **kw: optimise_style_by_text(model_d, kw.pop("style", s), kw.pop("text", "red"),
                                              kw.pop("clip", ColourClip()), steps=1, size=SIZE, **kw)
    for text in ("", "   "):
        with pytest.raises(InputError, match="text: is empty"):
            run(text=text)
    with pytest.raises(CheckpointError, match="image embeddings have 3 values and the text embeddings 5"):
        run(clip=ColourClip(text_dim=5))
    with pytest.raises(CheckpointError, match="image tower gives non-finite embeddings"):
        run(clip=ColourClip(nan=True))
    nan = P.StyleCode(torch.full((1, 18, 512), float("nan")), "dualstylegan")
    with pytest.raises(InputError, match="vtoonify_style: the W\\+ code contains NaN"):
        run(style=nan)
    with pytest.raises(InputError, match="made for VToonify-T but the model is VToonify-D"):
        run(style=start(model_t))
    with pytest.raises(InputError, match="learning_rate: must be a finite number"):
        run(lr=float("inf"))
    with pytest.raises(InputError, match="clip: a CLIP model with encode_image and encode_text"):
        run(clip=object())
    with pytest.raises(InputError, match="source_text: the text and the source text give the same"):
        run(source_text="red")
    with pytest.raises(InputError, match="learning_rate: the loss became nan"):
        run(lr=1e300, l2_weight=1e300)


def test_clip_folders_without_a_tower_are_refused(tmp_path, tiny_clip_dir):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tiny_clip_dir / "model.safetensors"))
    for tower, drop in (("image", ("vision_model.", "visual_projection.")), ("text", ("text_model.", "text_proj"))):
        folder = tmp_path / f"no_{tower}"
        folder.mkdir()
        for f in tiny_clip_dir.iterdir():
            if f.name != "model.safetensors":
                (folder / f.name).write_bytes(f.read_bytes())
        save_file({k: v for k, v in tensors.items() if not k.startswith(drop)}, str(folder / "model.safetensors"))
        with pytest.raises(CheckpointError, match=f"no_{tower}: the CLIP weights have no {tower} tower"):
            load_clip(folder)
    text_only = tmp_path / "clip_l"
    text_only.mkdir()
    cfg = json.loads((tiny_clip_dir / "config.json").read_text())
    (text_only / "config.json").write_text(json.dumps({**cfg["text_config"], "model_type": "clip_text_model"}))
    with pytest.raises(CheckpointError, match="a CLIP text model only \\(no image tower"):
        load_clip(text_only)
    sd_file = tmp_path / "clip_l.safetensors"  # a Stable Diffusion text encoder, as models/clip holds them
    save_file({k: v for k, v in tensors.items() if k.startswith("text_model.")}, str(sd_file))
    with pytest.raises(CheckpointError, match="clip_l.safetensors: holds only a text tower"):
        load_clip(sd_file)
    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tok / name).write_bytes((tiny_clip_dir / name).read_bytes())
    with pytest.raises(CheckpointError, match="tokenizer files are missing"):
        load_clip(no_tok)
    with pytest.raises(CheckpointError, match="neither config.json"):
        load_clip(tmp_path)


def test_open_clip_folder_names_its_package(tmp_path):
    try:
        import open_clip  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("open_clip_torch is installed")
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(PackageMissingError, match="pip install open_clip_torch"):
        load_clip(tmp_path)


# ---------------------------------------------------------------------------------------------- node


def test_node(fake_comfy, model_d, tiny_clip_dir, sent_previews):
    import shutil

    clip_root = fake_comfy.models / "clip"
    if not (clip_root / "tiny").exists():
        clip_root.mkdir(exist_ok=True)
        shutil.copytree(tiny_clip_dir, clip_root / "tiny")
    cls = fake_comfy.pack.NODE_CLASS_MAPPINGS["VToonifyEditStyleByText"]
    assert fake_comfy.pack.NODE_DISPLAY_NAME_MAPPINGS["VToonifyEditStyleByText"] == "Edit Style by Text (VToonify)"
    spec = cls.INPUT_TYPES()
    assert spec["required"]["clip_model"][0] == ["tiny"]
    for group in spec.values():
        for name, (_, opts) in group.items():
            assert opts.get("tooltip"), name
    loaded = model_d
    edit = fake_comfy.node("VToonifyEditStyleByText")
    s = start(loaded)
    args = dict(steps=3, layers="colour (7-17)", l2_weight=0.0, resolution="32")
    style, pair, info = edit(loaded, s, "a cartoon with big eyes", "tiny", **args)
    assert isinstance(style, P.StyleCode) and changed_layers(s, style) <= set(range(7, 18))
    assert pair.shape == (2, 32, 32, 3) and 0 <= float(pair.min()) and float(pair.max()) <= 1
    assert "CLIP tiny; layers 7-7" in info and "CLIP loss" in info
    assert sent_previews and sent_previews[-1][1].size == (64, 32)
    fake_comfy.state.interrupt_checks, fake_comfy.state.interrupt_on = 0, 2
    try:  # Cancel: the best code so far comes back
        stopped, _, info = edit(loaded, s, "a cartoon with big eyes", "tiny", **{**args, "steps": 20})
    finally:
        fake_comfy.state.interrupt_on = None
    assert "stopped by Cancel after" in info and isinstance(stopped, P.StyleCode)
    with pytest.raises(ValueError, match="Edit Style by Text \\(VToonify\\): text: is empty"):
        edit(loaded, s, "  ", "tiny", **args)
    with pytest.raises(ValueError, match="Edit Style by Text \\(VToonify\\): clip_model: 'other' is not a CLIP"):
        edit(loaded, s, "a face", "other", **args)


def test_node_keeps_the_face_content_fixed(fake_comfy, vtoonify_d, tiny_clip_dir):
    """VToonify-D with a face connected: the content code is the face's (pSp of its aligned crop), so the
    renders differ from those of the code alone; the edit still moves only the code."""
    pytest.importorskip("dlib")
    import shutil

    import torch.nn.functional as F
    from skimage import data

    class PoolEncoder(torch.nn.Module):  # stands for pSp (its stand-in takes seconds), as in test_style_control
        def forward(self, x):
            return F.adaptive_avg_pool2d(x, (24, 128)).reshape(x.shape[0], 18, 512) * 3.0

    clip_root = fake_comfy.models / "clip"
    if not (clip_root / "tiny").exists():
        clip_root.mkdir(exist_ok=True)
        shutil.copytree(tiny_clip_dir, clip_root / "tiny")
    model = P.VToonifyModel(vtoonify_d, PoolEncoder(), torch.nn.Identity(), None, torch.device("cpu"),
                            torch.float32, {})
    face = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    face = F.interpolate(face, size=(256, 256), mode="area").permute(0, 2, 3, 1).contiguous()
    edit = fake_comfy.node("VToonifyEditStyleByText")
    s = start(model)
    args = dict(steps=1, l2_weight=0.0, resolution="32")
    _, alone, _ = edit(model, s, "a face", "tiny", **args)
    style, with_face, _ = edit(model, s, "a face", "tiny", face=face, **args)
    assert float((alone[0] - with_face[0]).abs().max()) > 0.05
    assert isinstance(style, P.StyleCode) and style.backbone == "dualstylegan"
