"""The official checkpoint list of Load VToonify Model (``vtoonify_core/official.py``) and how the loader uses it.

The expected names are written out here as released (Hugging Face ``PKUWilliamYang/VToonify``,
``models/``; the official README's Google Drive folders and ``checkpoint/README.md``), not
derived from the module under test. Nothing is downloaded: the hub is replaced by a fake.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: the VToonify-D checkpoints on Hugging Face, folder by folder, as released
HUB = {
    "vtoonify_d_arcane": {"vtoonify_s_d.pt", "vtoonify_s000_d0.5.pt", "vtoonify_s077_d0.5.pt"},
    "vtoonify_d_caricature": {"vtoonify_s039_d0.5.pt", "vtoonify_s068_d0.5.pt"},
    "vtoonify_d_cartoon": {"vtoonify_s_d.pt", "vtoonify_s026_d0.5.pt", "vtoonify_s299_d0.5.pt"},
    "vtoonify_d_comic": {"vtoonify_s_d.pt"},
    "vtoonify_d_illustration": {"vtoonify_s004_d_c.pt", "vtoonify_s009_d_c.pt", "vtoonify_s043_d_c.pt",
                                "vtoonify_s054_d_c.pt", "vtoonify_s086_d_c.pt"},
    "vtoonify_d_pixar": {"vtoonify_s_d.pt", "vtoonify_s052_d0.5.pt"},
}
#: the checkpoints only on the official Google Drive
DRIVE = {"vtoonify_d_cartoon/vtoonify_s_d_c.pt", "vtoonify_d_caricature/vtoonify_s_d.pt",
         "vtoonify_d_illustration/vtoonify_s_d.pt"} | {
    f"vtoonify_t_{s}/vtoonify.pt" for s in ("arcane", "caricature", "cartoon", "comic", "pixar")}
HUB_NAMES = {f"{folder}/{f}" for folder, files in HUB.items() for f in files}
#: the names this pack offered before the full list (saved workflows may hold any of them)
EARLIER = {f"vtoonify_d_{s}/vtoonify_s_d.pt" for s in ("arcane", "caricature", "cartoon", "comic", "illustration",
                                                        "pixar")} | {n for n in DRIVE if n.startswith("vtoonify_t_")}


@pytest.fixture(scope="module")
def official():
    from vtoonify_core import official

    return official


@pytest.fixture(scope="module")
def loader_module(fake_comfy_empty):
    """nodes/loader.py of the pack under the fake ComfyUI with an empty models/vtoonify."""
    return fake_comfy_empty.module("nodes.loader")


def test_the_list_is_the_release(official):
    assert set(official.HUB_NAMES) == HUB_NAMES and len(official.HUB_NAMES) == len(HUB_NAMES)
    assert set(official.DRIVE_NAMES) == DRIVE and len(official.DRIVE_NAMES) == len(DRIVE)
    assert set(official.CHECKPOINTS) == HUB_NAMES | DRIVE and len(official.CHECKPOINTS) == 24
    assert official.EXSTYLES == tuple(f"{f}/exstyle_code.npy" for f in sorted(HUB))
    assert official.DOWNLOADABLE == HUB_NAMES | set(official.EXSTYLES) | {"encoder.pt", "faceparsing.pth"}
    assert EARLIER <= set(official.CHECKPOINTS)
    folders = {n.split("/")[0] for n in official.CHECKPOINTS}
    assert folders == set(official.DRIVE_FOLDERS)  # every folder has its Drive address
    for url in official.DRIVE_FOLDERS.values():
        assert url.startswith("https://drive.google.com/drive/folders/")


@pytest.mark.parametrize("name, kind, style, style_id, degree, colour", [
    ("vtoonify_d_cartoon/vtoonify_s_d.pt", "VToonify-D", "cartoon", None, None, False),
    ("vtoonify_d_cartoon/vtoonify_s_d_c.pt", "VToonify-D", "cartoon", None, None, True),
    ("vtoonify_d_cartoon/vtoonify_s026_d0.5.pt", "VToonify-D", "cartoon", 26, 0.5, False),
    ("vtoonify_d_arcane/vtoonify_s000_d0.5.pt", "VToonify-D", "arcane", 0, 0.5, False),
    ("vtoonify_d_illustration/vtoonify_s054_d_c.pt", "VToonify-D", "illustration", 54, None, True),
    ("vtoonify_t_pixar/vtoonify.pt", "VToonify-T", "pixar", None, None, False),
    # converted, user-trained, other folders, Windows separators
    ("vtoonify_d_cartoon/vtoonify_s_d.safetensors", "VToonify-D", "cartoon", None, None, False),
    ("mine/vtoonify_s012_d0.75_c.pt", "VToonify-D", "", 12, 0.75, True),
    ("vtoonify_d_comic\\vtoonify_s_d.pt", "VToonify-D", "comic", None, None, False),
])
def test_variant_reads_the_name(official, name, kind, style, style_id, degree, colour):
    v = official.variant(name)
    assert (v.kind, v.style, v.style_id, v.degree, v.colour_transfer) == (kind, style, style_id, degree, colour)
    assert "\\" not in v.name


@pytest.mark.parametrize("name", ["encoder.pt", "faceparsing.pth", "vtoonify_d_cartoon/exstyle_code.npy",
                                  "mine/generator.pt", "vtoonify.pt", "vtoonify_d_cartoon/vtoonify.pt",
                                  "vtoonify_d_cartoon/vtoonify_s_d_x.pt"])
def test_variant_of_other_files_is_none(official, name):
    assert official.variant(name) is None


def test_supports_names_what_applies(official):
    text = {n: official.variant(n).supports() for n in official.CHECKPOINTS}
    fixed = text["vtoonify_d_cartoon/vtoonify_s299_d0.5.pt"]
    assert "only exemplar style 299" in fixed and "style_id 299" in fixed
    assert "only style degree 0.5" in fixed and "no colour transfer" in fixed
    free = text["vtoonify_d_pixar/vtoonify_s_d.pt"]
    assert "any exemplar style_id" in free and "style_degree 0..1" in free and "no colour transfer" in free
    colour = text["vtoonify_d_illustration/vtoonify_s086_d_c.pt"]
    assert "only exemplar style 86" in colour and "style_degree 0..1" in colour and "no colour" not in colour
    assert "colour transfer" in text["vtoonify_d_cartoon/vtoonify_s_d_c.pt"]
    assert "VToonify-T comic" in text["vtoonify_t_comic/vtoonify.pt"]
    for name in official.CHECKPOINTS:
        v = official.variant(name)
        assert v.host() == ("huggingface" if name in HUB_NAMES else "google drive")
        folder = name.split("/")[0]
        assert v.source() == (f"https://huggingface.co/PKUWilliamYang/VToonify/tree/main/models/{folder}"
                              if name in HUB_NAMES else official.DRIVE_FOLDERS[folder])
    mine = official.variant("mine/vtoonify_s_d.pt")
    assert mine.host() == "" and mine.source() == ""  # not an official file


def test_node_offers_and_explains_every_variant(fake_comfy_empty, loader_module):
    cls = fake_comfy_empty.pack.NODE_CLASS_MAPPINGS["VToonifyLoadModel"]
    req = cls.INPUT_TYPES()["required"]
    choices, opts = req["checkpoint"]
    assert {os.path.normpath(n) for n in HUB_NAMES | DRIVE} <= set(choices)  # nothing downloaded yet
    assert opts["default"] in choices
    for text in ("_sNNN", "_dX", "_c", "colour transfer", "VToonify-T"):
        assert text in opts["tooltip"], text
    for name in HUB_NAMES | DRIVE:
        line = next(x for x in cls.DESCRIPTION.splitlines() if x.startswith(name + " "))
        assert ("Hugging Face" if name in HUB_NAMES else "Google Drive only") in line, line
    assert "only exemplar style 52 (use style_id 52), only style degree 0.5" in cls.DESCRIPTION
    assert "Google Drive" in req["download_missing"][1]["tooltip"]


def test_saved_workflows_stay_valid(fake_comfy_empty):
    """Every checkpoint a shipped workflow stores is still a choice (ComfyUI refuses values not in the list)."""
    loader = fake_comfy_empty.pack.NODE_CLASS_MAPPINGS["VToonifyLoadModel"]
    choices = set(loader.INPUT_TYPES()["required"]["checkpoint"][0])
    stored = set()
    for path in sorted((ROOT / "workflows").rglob("*.json")):
        data = json.loads(path.read_text())
        nodes = data.get("nodes") if isinstance(data.get("nodes"), list) else None
        if nodes is not None:  # UI format: the checkpoint is the first widget value
            stored |= {n["widgets_values"][0] for n in nodes if n.get("type") == "VToonifyLoadModel"}
        else:  # API format
            stored |= {n["inputs"]["checkpoint"] for n in data.values()
                       if isinstance(n, dict) and n.get("class_type") == "VToonifyLoadModel"}
    # templates default to the VToonify-D file the in-app download can fetch (issue 20)
    assert "vtoonify_d_cartoon/vtoonify_s_d.pt" in stored
    assert {os.path.normpath(n) for n in stored} <= choices


class FakeHub(types.ModuleType):
    """Stands for huggingface_hub: records the calls and writes a small file where the real one would."""

    def __init__(self) -> None:
        super().__init__("huggingface_hub")
        self.calls: list[tuple[str, str]] = []

    def hf_hub_download(self, repo_id, filename, local_dir=None, **kwargs):
        self.calls.append((repo_id, filename))
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"stand-in")
        return str(target)


def test_download_fetches_hub_files_and_points_to_drive_for_the_rest(fake_comfy_empty, loader_module, monkeypatch):
    folder = fake_comfy_empty.models
    hub = FakeHub()
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    name = "vtoonify_d_caricature/vtoonify_s039_d0.5.pt"
    got = loader_module.download(os.path.normpath(name), "checkpoint")
    assert hub.calls == [("PKUWilliamYang/VToonify", "models/" + name)]
    assert got == folder / name and got.read_bytes() == b"stand-in"
    got.unlink()
    hub.calls.clear()
    for name in sorted(DRIVE):
        with pytest.raises(FileNotFoundError) as err:
            loader_module.download(os.path.normpath(name), "checkpoint")
        msg = str(err.value)
        assert msg.startswith(f"checkpoint: could not download models/{name}: ")
        assert "Google Drive only" in msg and name.split("/")[0] in msg
        assert str(folder / name) in msg  # where to save it
        assert msg.count("https://drive.google.com/drive/folders/") == 1
    assert hub.calls == []  # never asked the hub for a file it does not have
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed: Drive files still explained
    with pytest.raises(FileNotFoundError, match=r"Google Drive only"):
        loader_module.download("vtoonify_t_arcane/vtoonify.pt", "checkpoint")
    with pytest.raises(ImportError, match=r"pip install huggingface_hub"):
        loader_module.download("vtoonify_d_comic/vtoonify_s_d.pt", "checkpoint")


def test_missing_file_message_says_what_the_variant_is(loader_module):
    msg = loader_module.missing_message("vtoonify_d_arcane/vtoonify_s077_d0.5.pt", "checkpoint")
    assert "only exemplar style 77" in msg and "only style degree 0.5" in msg
    assert "https://huggingface.co/PKUWilliamYang/VToonify/tree/main/models/vtoonify_d_arcane" in msg
    msg = loader_module.missing_message("vtoonify_t_cartoon/vtoonify.pt", "checkpoint")
    assert "Google Drive only" in msg and "VToonify-T cartoon" in msg
    assert "It is" not in loader_module.missing_message("encoder.pt", "style_encoder")


def test_load_logs_the_variant(fake_comfy_empty, loader_module, caplog, vtoonify_d_path, exstyle_path, psp_path,
                               bisenet_path):
    """A fixed-style checkpoint loads like any VToonify-D one and the log says what it supports."""
    folder = fake_comfy_empty.models
    d = folder / "vtoonify_d_pixar"
    d.mkdir()
    os.symlink(vtoonify_d_path, d / "vtoonify_s052_d0.5.pt")
    os.symlink(exstyle_path, d / "exstyle_code.npy")
    os.symlink(psp_path, folder / "encoder.pt")
    os.symlink(bisenet_path, folder / "faceparsing.pth")
    with caplog.at_level(logging.INFO, logger="vtoonify"):
        model, _ = loader_module.LoadVToonifyModel().load("vtoonify_d_pixar/vtoonify_s052_d0.5.pt", "encoder.pt",
                                                   "faceparsing.pth", "auto", "cpu", "fp32", False)
    assert model.backbone == "dualstylegan" and model.n_styles == 4
    assert any("only exemplar style 52" in r.getMessage() and "only style degree 0.5" in r.getMessage()
               for r in caplog.records)
