"""Merge VToonify Models and Save VToonify Model (issue 17, nodes), through their entry points under the
fake ComfyUI of ``conftest.py``.

Model A is the stand-in VToonify-D of ``conftest.py`` (seed 0, 4 exemplar styles) as
``vtoonify_d_cartoon``; model B another stand-in (seed 1, 3 exemplar styles) linked in as
``vtoonify_d_arcane``. The claims of ``tests/test_merge.py`` are checked again here through the nodes,
on what Stylize Frames makes of the merged model (whole-frame mode, two 32x32 frames).
"""
from __future__ import annotations

import math
import os

import comfy_stub  # tests/ is on sys.path (conftest.py)
import pytest
import torch

from vtoonify_core.models.merge import PARTS, merge_networks, part_of
from vtoonify_core.testing import standin
from vtoonify_core.types import StyleCode

A_CKPT = "vtoonify_d_cartoon/vtoonify_s_d.pt"
B_CKPT = "vtoonify_d_arcane/vtoonify_s_d.pt"
T_CKPT = "vtoonify_t_cartoon/vtoonify.pt"
WHOLE = "whole frame (pad to 8)"
MERGE, SAVE = "VToonifyMergeModels", "VToonifySaveModel"


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models_b(fake_comfy, tmp_path_factory):
    """Model B's folder (another VToonify-D with its own 3 exemplar codes), linked into models/vtoonify."""
    folder = tmp_path_factory.mktemp("arcane")
    standin.write_official_checkpoint("vtoonify_d", folder / "vtoonify_s_d.pt", base_seed=1)
    standin.write_official_exstyles(folder / "exstyle_code.npy", n=3, base_seed=1)
    os.symlink(folder, fake_comfy.models / "vtoonify_d_arcane")
    fake_comfy.module("nodes.cache").NETWORKS.capacity = 6  # A, B, T, encoder, parser: no reloads
    return folder


def load(fake_comfy, checkpoint, exstyle="auto"):
    return fake_comfy.node("VToonifyLoadModel")(checkpoint, "encoder.pt", "faceparsing.pth", exstyle, "cpu", "fp32",
                                                False)[0]


@pytest.fixture(scope="module")
def model_a(fake_comfy, models_b):
    return load(fake_comfy, A_CKPT)


@pytest.fixture(scope="module")
def model_b(fake_comfy, models_b):
    return load(fake_comfy, B_CKPT)


@pytest.fixture(scope="module")
def frames():
    """Two 32x32 frames (an IMAGE batch), quantised like decoded video."""
    g = torch.Generator().manual_seed(3)
    return (torch.rand(2, 32, 32, 3, generator=g) * 255).round() / 255


@pytest.fixture(scope="module")
def style():
    g = torch.Generator().manual_seed(5)
    return StyleCode(torch.randn(1, 18, 512, generator=g) * 0.5, "dualstylegan")


def merge(fake_comfy, a, b, ratio, exstyles="a", **parts):
    (model,) = fake_comfy.node(MERGE)(a, b, ratio, exstyles, **parts)
    return model


def stylize(fake_comfy, model, frames, style):
    images, *_ = fake_comfy.node("VToonifyStylizeFrames")(model, frames, style, 0.5, WHOLE, 2)
    return images


@pytest.fixture(scope="module")
def images_a(fake_comfy, model_a, frames, style):
    return stylize(fake_comfy, model_a, frames, style)


@pytest.fixture(scope="module")
def images_b(fake_comfy, model_b, frames, style):
    return stylize(fake_comfy, model_b, frames, style)


def state(model) -> dict:
    return model.generator.state_dict()


def equal_states(x: dict, y: dict) -> bool:
    return x.keys() == y.keys() and all(torch.equal(v, y[k]) for k, v in x.items())


# ---------------------------------------------------------------------------------------------- the nodes


def test_registration_and_inputs(fake_comfy):
    names = fake_comfy.pack.NODE_DISPLAY_NAME_MAPPINGS
    assert (names[MERGE], names[SAVE]) == ("Merge VToonify Models", "Save VToonify Model")
    merge_cls, save_cls = fake_comfy.pack.NODE_CLASS_MAPPINGS[MERGE], fake_comfy.pack.NODE_CLASS_MAPPINGS[SAVE]
    spec = merge_cls.INPUT_TYPES()
    assert list(spec["required"]) == ["model_a", "model_b", "ratio", "exstyles"]
    assert spec["required"]["model_a"][0] == spec["required"]["model_b"][0] == "VTOONIFY_MODEL"
    assert spec["required"]["exstyles"][0] == ["a", "b"]
    ratio = spec["required"]["ratio"][1]
    assert (ratio["min"], ratio["max"], ratio["default"]) == (0.0, 1.0, 0.5)
    # a ratio input per part of the core, but the layers VToonify never runs; -1 = use ratio
    assert set(spec["optional"]) == set(PARTS) - {"other"}
    for name, (kind, opts) in spec["optional"].items():
        assert (kind, opts["default"], opts["min"], opts["max"]) == ("FLOAT", -1.0, -1.0, 1.0), name
        assert "-1 = use ratio" in opts["tooltip"], name
    assert merge_cls.RETURN_TYPES == ("VTOONIFY_MODEL",) and not getattr(merge_cls, "OUTPUT_NODE", False)
    assert save_cls.OUTPUT_NODE is True and save_cls.RETURN_TYPES == ("STRING",)
    save_spec = save_cls.INPUT_TYPES()["required"]
    assert list(save_spec) == ["vtoonify_model", "filename_prefix", "overwrite"]
    assert save_spec["filename_prefix"][1]["default"] == "vtoonify_merged/vtoonify_s_d"
    assert save_spec["overwrite"] == ("BOOLEAN", save_spec["overwrite"][1]) and not save_spec["overwrite"][1]["default"]


def test_the_ends_give_model_a_and_model_b(fake_comfy, model_a, model_b, frames, style, images_a, images_b):
    assert not torch.equal(images_a, images_b)  # two different models, or nothing below could fail
    at0 = merge(fake_comfy, model_a, model_b, 0.0)
    assert at0.generator is not model_a.generator and equal_states(state(at0), state(model_a))
    assert torch.equal(stylize(fake_comfy, at0, frames, style), images_a)
    del at0
    at1 = merge(fake_comfy, model_a, model_b, 1.0)
    assert at1.generator is not model_b.generator and equal_states(state(at1), state(model_b))
    assert torch.equal(stylize(fake_comfy, at1, frames, style), images_b)


def test_a_middle_ratio_is_the_tensor_wise_average(fake_comfy, model_a, model_b, frames, style, images_a, images_b):
    mid = merge(fake_comfy, model_a, model_b, 0.5)
    sa, sb = state(model_a), state(model_b)
    for k, v in state(mid).items():
        assert ((v - (sa[k] + sb[k]) / 2).abs() <= 1e-6 * (sa[k].abs() + sb[k].abs()) + 1e-7).all(), k
    assert sum(not torch.equal(v, sa[k]) for k, v in state(mid).items()) > len(sa) // 2
    images = stylize(fake_comfy, mid, frames, style)
    assert not torch.equal(images, images_a) and not torch.equal(images, images_b)


def test_each_part_input_sets_its_own_part(fake_comfy, model_a, model_b):
    """Every part input reaches the core as that part's ratio (values all different, so a mix-up of two
    inputs fails); -1 and any other negative value take ratio."""
    values = {name: round(0.05 + 0.09 * i, 2) for i, name in enumerate(sorted(set(PARTS) - {"other"}))}
    merged = merge(fake_comfy, model_a, model_b, 0.3, **values)
    expected = merge_networks(model_a.generator, model_b.generator, 0.3, parts=values).state_dict()
    assert equal_states(state(merged), expected)
    del merged, expected
    inherit = merge(fake_comfy, model_a, model_b, 0.3, encoder=-1.0, fusion=-0.25, decoder_64=-1.0)
    assert equal_states(state(inherit), merge_networks(model_a.generator, model_b.generator, 0.3).state_dict())


def test_a_resolution_swap_changes_only_the_chosen_layers(fake_comfy, model_a, model_b, frames, style, images_a):
    swap = merge(fake_comfy, model_a, model_b, 0.0, decoder_512=1.0, decoder_1024=1.0)
    sa, sb = state(model_a), state(model_b)
    changed = {k for k, v in state(swap).items() if not torch.equal(v, sa[k])}
    chosen = {k for k in sa if part_of(k, "dualstylegan") in ("decoder_512", "decoder_1024")}
    assert changed == {k for k in chosen if not torch.equal(sa[k], sb[k])} and changed
    assert all(torch.equal(state(swap)[k], sb[k]) for k in chosen)
    assert not torch.equal(stylize(fake_comfy, swap, frames, style), images_a)
    assert "decoder_512 1, decoder_1024 1" in swap.sources["checkpoint"]


def test_exemplar_codes_from_a_or_b(fake_comfy, model_a, model_b):
    assert (model_a.n_styles, model_b.n_styles) == (4, 3)
    from_a = merge(fake_comfy, model_a, model_b, 0.5, "a")
    assert from_a.exstyles is model_a.exstyles
    assert from_a.encoder is model_a.encoder and from_a.parser is model_a.parser
    assert merge(fake_comfy, model_a, model_b, 0.5, "b").exstyles is model_b.exstyles
    assert from_a.sources["checkpoint"] == f"merge of {A_CKPT} and {B_CKPT} (ratio 0.5)"


def test_merging_leaves_both_inputs_and_their_outputs_unchanged(fake_comfy, model_a, model_b, frames, style,
                                                                 images_a, images_b):
    before = [{k: v.clone() for k, v in state(m).items()} for m in (model_a, model_b)]
    fields = [dict(vars(m)) for m in (model_a, model_b)]
    switches = [(m.generator.fast, m.generator.channels_last, m.generator.fold_upsample) for m in (model_a, model_b)]
    for r in (0.0, 0.4, 1.0):
        merged = merge(fake_comfy, model_a, model_b, r, "b", decoder_256=0.9, mapping=0.2)
        stylize(fake_comfy, merged, frames, style)  # the merged model runs (bake caches etc.)
        del merged
    assert equal_states(state(model_a), before[0]) and equal_states(state(model_b), before[1])
    assert [dict(vars(m)) for m in (model_a, model_b)] == fields  # same networks, codes, patchers, sources
    assert [(m.generator.fast, m.generator.channels_last, m.generator.fold_upsample)
            for m in (model_a, model_b)] == switches
    assert torch.equal(stylize(fake_comfy, model_a, frames, style), images_a)
    assert torch.equal(stylize(fake_comfy, model_b, frames, style), images_b)


def test_refusals_name_both_models(fake_comfy, model_a, model_b):
    t = load(fake_comfy, T_CKPT)
    both = rf"\(model_a: {A_CKPT}, VToonify-D; model_b: {T_CKPT}, VToonify-T\)"
    with pytest.raises(ValueError, match=rf"^Merge VToonify Models: model_b: model_a is VToonify-D and model_b is "
                                         rf"VToonify-T: merge two models of one kind\. {both}$"):
        merge(fake_comfy, model_a, t, 0.5)
    ab = rf"\(model_a: {A_CKPT}, VToonify-D; model_b: {B_CKPT}, VToonify-D\)$"
    for bad in (1.5, -0.1, math.nan):
        with pytest.raises(ValueError, match=rf"^Merge VToonify Models: ratio: must be in \[0, 1\], got .* {ab}"):
            merge(fake_comfy, model_a, model_b, bad)
    for bad in (1.5, math.nan):
        with pytest.raises(ValueError, match=rf"^Merge VToonify Models: decoder_256: must be in \[0, 1\], .*{ab}"):
            merge(fake_comfy, model_a, model_b, 0.5, decoder_256=bad)
    with pytest.raises(ValueError, match=rf"fusion: must be a number: -1 \(use ratio\) or 0\.\.1, got 'x'\. {ab}"):
        merge(fake_comfy, model_a, model_b, 0.5, fusion="x")
    tt = rf"\(model_a: {T_CKPT}, VToonify-T; model_b: {T_CKPT}, VToonify-T\)$"
    with pytest.raises(ValueError, match=rf"modres: VToonify-T has no ModRes blocks: leave modres at -1 .*{tt}"):
        merge(fake_comfy, t, t, 0.5, modres=0.0)
    with pytest.raises(ValueError, match=r"style_transforms: VToonify-T has no style transforms"):
        merge(fake_comfy, t, t, 0.5, style_transforms=1.0)
    merged_t = merge(fake_comfy, t, t, 0.5, modres=-1.0, style_transforms=-1.0)  # left at -1: fine
    assert merged_t.backbone == "toonify" and merged_t.exstyles is None
    del merged_t
    no_codes = load(fake_comfy, B_CKPT, exstyle="none")
    with pytest.raises(ValueError, match=r"exstyles: model_b has no exemplar style codes.*model_b: "
                                         + B_CKPT):
        merge(fake_comfy, model_a, no_codes, 0.5, "b")
    with pytest.raises(ValueError, match=r"^Merge VToonify Models: model_b: expected a VTOONIFY_MODEL, got Tensor"):
        merge(fake_comfy, model_a, torch.zeros(1, 8, 8, 3), 0.5)


# ---------------------------------------------------------------------------------------------- ComfyUI memory


@pytest.fixture
def managed_cpu(fake_comfy, monkeypatch):
    """The CPU as a device ComfyUI manages: networks are read to the offload device and get patchers.
    The network cache starts and ends empty, so no managed network outlives the test."""
    monkeypatch.setattr(fake_comfy.module("nodes._comfy"), "managed_device", lambda device: True)
    fake_comfy.pack.free_cache()
    yield
    fake_comfy.pack.free_cache()


def test_the_merged_generator_has_a_patcher_of_its_own(fake_comfy, managed_cpu, models_b, frames, style):
    """On a managed device ComfyUI loads and offloads the merged generator through a new patcher (not a
    clone of A's: other weights); the encoder and parser keep model_a's patchers; the inputs' patchers are
    neither detached nor replaced."""
    a, b = load(fake_comfy, A_CKPT), load(fake_comfy, B_CKPT)
    patchers_a, patchers_b = dict(a.patchers), dict(b.patchers)
    merged = merge(fake_comfy, a, b, 0.5)
    own = merged.patchers["generator"]
    assert isinstance(own, comfy_stub.FakeModelPatcher) and own.model is merged.generator and own.parent is None
    assert not own.is_clone(a.patchers["generator"]) and not own.is_clone(b.patchers["generator"])
    assert (own.load_device, own.offload_device) == (a.device, torch.device("cpu"))
    assert {k: v for k, v in merged.patchers.items() if k != "generator"} == \
        {k: v for k, v in patchers_a.items() if k != "generator"}
    assert (a.patchers, b.patchers) == (patchers_a, patchers_b)
    state_ = fake_comfy.state
    state_.load_models_gpu.clear()
    stylize(fake_comfy, merged, frames, style)
    assert state_.load_models_gpu[-1][0] == [own, patchers_a["parser"]]
    assert all(p.detaches == [] for p in (*patchers_a.values(), *patchers_b.values()))
    state_.load_models_gpu.clear()


# ---------------------------------------------------------------------------------------------- saving


def save(fake_comfy, model, prefix, overwrite=False):
    out = fake_comfy.node(SAVE)(model, prefix, overwrite)
    return out["result"][0], out["ui"]["text"][0]


def test_save_and_load_back_equal(fake_comfy, model_a, model_b, frames, style, monkeypatch):
    merged = merge(fake_comfy, model_a, model_b, 0.3, "b", decoder_1024=1.0)
    import folder_paths

    stale = {"vtoonify": ([A_CKPT], {}, 0.0)}  # a filename cache as ComfyUI's folder_paths keeps one
    monkeypatch.setattr(folder_paths, "filename_list_cache", stale, raising=False)
    name, text = save(fake_comfy, merged, "vtoonify_merged/vtoonify_s_d")
    assert name == os.path.normpath("vtoonify_merged/vtoonify_s_d.safetensors")
    saved = fake_comfy.models / "vtoonify_merged" / "vtoonify_s_d.safetensors"
    assert saved.is_file() and (saved.parent / "exstyle_code.safetensors").is_file()
    assert [p.name for p in saved.parent.iterdir() if p.name.startswith(".")] == []  # no scratch file left
    assert f"Saved {name} with its exemplar style codes" in text and "Load VToonify Model" in text
    assert "vtoonify" not in stale  # the stale listing is dropped
    listed = fake_comfy.pack.NODE_CLASS_MAPPINGS["VToonifyLoadModel"].INPUT_TYPES()["required"]["checkpoint"][0]
    assert name in listed
    back = load(fake_comfy, name)
    assert back.backbone == "dualstylegan" and equal_states(state(back), state(merged))
    assert back.exstyles.names == model_b.exstyles.names and torch.equal(back.exstyles.codes, model_b.exstyles.codes)
    assert torch.equal(stylize(fake_comfy, back, frames, style), stylize(fake_comfy, merged, frames, style))
    # the same model again: nothing is written
    mtime = saved.stat().st_mtime_ns
    name2, text2 = save(fake_comfy, merged, "vtoonify_merged/vtoonify_s_d.safetensors")
    assert name2 == name and "already saved" in text2 and saved.stat().st_mtime_ns == mtime


def test_save_refuses_names_outside_the_folder(fake_comfy, model_a):
    before = set(fake_comfy.root.rglob("*"))
    bad = {"../escaped": "leaves models/vtoonify", "a/../../escaped": "leaves models/vtoonify",
           "..\\escaped": "leaves models/vtoonify", "/tmp/vtoonify_abs": "absolute path",
           "C:\\models\\x": "absolute path", "": "give a file name", "  ": "give a file name",
           "merged/": "give a file name", ".hidden/x": "hidden", "merged/.x": "hidden", "merged/x.pt": ".safetensors"}
    for prefix, why in bad.items():
        with pytest.raises(ValueError, match=rf"^Save VToonify Model: filename_prefix: .*{why}"):
            save(fake_comfy, model_a, prefix)
    assert set(fake_comfy.root.rglob("*")) == before
    assert not (fake_comfy.root / "escaped.safetensors").exists()


def test_save_overwrites_only_when_asked(fake_comfy, model_a, model_b):
    first = merge(fake_comfy, model_a, model_b, 0.2)
    name, _ = save(fake_comfy, first, "overwrite_test/vtoonify_s_d")
    path = fake_comfy.models / "overwrite_test" / "vtoonify_s_d.safetensors"
    content = path.read_bytes()
    other = merge(fake_comfy, model_a, model_b, 0.8)
    with pytest.raises(ValueError, match=r"overwrite_test/vtoonify_s_d\.safetensors already exists .* holds another "
                                         r"model: choose another name, or turn overwrite on"):
        save(fake_comfy, other, "overwrite_test/vtoonify_s_d")
    assert path.read_bytes() == content
    del content
    assert save(fake_comfy, other, "overwrite_test/vtoonify_s_d", overwrite=True)[0] == name
    assert equal_states(state(load(fake_comfy, name)), state(other))
    del first
    # exemplar codes of another model beside the file are never replaced
    with pytest.raises(ValueError, match=r"exstyle_code\.safetensors holds other exemplar style codes"):
        save(fake_comfy, merge(fake_comfy, model_a, model_b, 0.8, "b"), "overwrite_test/vtoonify_s_d",
             overwrite=True)
    assert equal_states(state(load(fake_comfy, name)), state(other))


def test_save_refuses_codes_the_loader_would_mix_up(fake_comfy, model_a, model_b, tmp_path):
    """Beside an exstyle_code.npy (which the loader reads first) a model with other codes is refused."""
    folder = fake_comfy.models / "npy_beside"
    folder.mkdir()
    standin.write_official_exstyles(folder / "exstyle_code.npy", n=4, base_seed=0)  # model A's codes
    with pytest.raises(ValueError, match=r"exstyle_code\.npy holds other exemplar style codes"):
        save(fake_comfy, model_b, "npy_beside/vtoonify_s_d")
    assert sorted(p.name for p in folder.iterdir()) == ["exstyle_code.npy"]
    name, _ = save(fake_comfy, model_a, "npy_beside/vtoonify_s_d")  # the same codes: saved
    assert load(fake_comfy, name).exstyles.names == model_a.exstyles.names


def test_save_is_changed_follows_the_file(fake_comfy, model_a):
    cls = fake_comfy.pack.NODE_CLASS_MAPPINGS[SAVE]
    prefix = "is_changed/vtoonify_s_d"
    assert cls.IS_CHANGED(filename_prefix=prefix, overwrite=False) == "missing"
    save(fake_comfy, model_a, prefix)
    stamp = cls.IS_CHANGED(filename_prefix=prefix, overwrite=False)
    assert stamp != "missing" and cls.IS_CHANGED(filename_prefix=prefix) == stamp
    (fake_comfy.models / "is_changed" / "vtoonify_s_d.safetensors").unlink()
    assert cls.IS_CHANGED(filename_prefix=prefix) == "missing"
    assert cls.IS_CHANGED(filename_prefix="../x") == "missing"  # a bad name is refused when the node runs
