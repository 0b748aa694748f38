"""What a prompt may make the nodes do, under the fake ComfyUI of ``tests/comfy_stub.py`` (issue 18,
items 1, 3 and 4; the same through the real host: ``tests/host/test_safety.py``).

* Files: Stylize Video File reads only ComfyUI's input/output/temp folders and the folders of
  ``VTOONIFY_ALLOWED_DIRS`` (links and ``..`` resolved first); a missing file and a file it may
  not read get one message, naming the file as the prompt did; outputs stay in the output folder.
* Missing models are refused when the prompt is queued (``VALIDATE_INPUTS`` of Load VToonify
  Model) with the file, the folder it goes in and where to get it, and ComfyUI keeps its own list
  check of the other inputs.
* Previews are sent only when ComfyUI's preview method is not ``none``.
"""
from __future__ import annotations

import inspect
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

D_CKPT = "vtoonify_d_cartoon/vtoonify_s_d.pt"
T_CKPT = "vtoonify_t_cartoon/vtoonify.pt"
HUB_MISSING = "vtoonify_d_pixar/vtoonify_s_d.pt"       # official, on Hugging Face, not in the fixture
DRIVE_MISSING = "vtoonify_t_pixar/vtoonify.pt"         # official, on Google Drive only
HF_TREE = "https://huggingface.co/PKUWilliamYang/VToonify/tree/main/models"
DRIVE_T_PIXAR = "https://drive.google.com/drive/folders/19N4ddcTXhXbTEayTbrFc533EktbhOXMz"


# ---------------------------------------------------------------------------------------------- folders


def split_annotation(folders, name):
    """``(folder, name)`` of an annotated name (``clip.mp4 [output]``); no annotation: the input folder."""
    for kind in ("output", "input", "temp"):
        if name.endswith(f"[{kind}]"):
            return folders[kind], name[:-len(kind) - 3]
    return folders["input"], name


def annotated_comfy_0_30(folders):
    """``folder_paths.get_annotated_filepath`` as ComfyUI 0.30 has it: the annotation picks the folder,
    and a path that resolves (links included) outside it is a ValueError."""
    def get(name, default_dir=None):
        base, name = split_annotation(folders, name)
        path = os.path.abspath(os.path.join(base, name))
        real_base = os.path.realpath(base)
        if os.path.commonpath((real_base, os.path.realpath(path))) != real_base:
            raise ValueError(f"Invalid file path: {name!r}")
        return path
    return get


def annotated_plain(folders):
    """An older ``get_annotated_filepath``: joins the name to the folder and checks nothing (the pack's
    own check must refuse what leaves the folder)."""
    def get(name, default_dir=None):
        base, name = split_annotation(folders, name)
        return os.path.join(base, name)
    return get


@pytest.fixture(params=[annotated_comfy_0_30, annotated_plain], ids=["comfy-0.30", "plain-join"])
def folders(request, fake_comfy, tmp_path, monkeypatch):
    """input/, output/, temp/ of a ComfyUI and files around them:

    * ``input/clip.mp4``, ``input/sub/inner.mp4``, ``output/done.mp4``, ``temp/t.mp4``, a folder ``input/dir.mp4``;
    * ``outside/secret.mp4`` beside them (exists, must never be read), ``input/link.mp4`` -> it,
      ``input/linkdir`` -> ``outside/``, ``input/to_output.mp4`` -> ``output/done.mp4`` (allowed: it stays inside).
    """
    fp = sys.modules["folder_paths"]
    root = tmp_path / "comfy"
    f = {k: root / k for k in ("input", "output", "temp")}
    for d in f.values():
        d.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    for p in (f["input"] / "clip.mp4", f["input"] / "sub" / "inner.mp4", f["output"] / "done.mp4",
              f["temp"] / "t.mp4", outside / "secret.mp4"):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"video")
    (f["input"] / "dir.mp4").mkdir()
    os.symlink(outside / "secret.mp4", f["input"] / "link.mp4")
    os.symlink(outside, f["input"] / "linkdir")
    os.symlink(f["output"] / "done.mp4", f["input"] / "to_output.mp4")
    monkeypatch.setattr(fp, "get_input_directory", lambda: str(f["input"]), raising=False)
    monkeypatch.setattr(fp, "get_output_directory", lambda: str(f["output"]), raising=False)
    monkeypatch.setattr(fp, "get_temp_directory", lambda: str(f["temp"]), raising=False)
    monkeypatch.setattr(fp, "get_annotated_filepath", request.param({k: str(v) for k, v in f.items()}),
                        raising=False)
    monkeypatch.delenv("VTOONIFY_ALLOWED_DIRS", raising=False)
    return types.SimpleNamespace(paths=fake_comfy.module("nodes.paths"), video=fake_comfy.module("nodes.video"),
                                 outside=outside, tmp=tmp_path, **f)


def refused_names(folders) -> list[str]:
    """Names that must be refused: absolute paths outside (existing or not), climbs out of the input
    folder, links out of it, missing files, a folder, a NUL byte."""
    secret = folders.outside / "secret.mp4"
    return [
        "/etc/passwd", "/etc/hostname", str(secret), str(folders.outside / "missing.mp4"), "/nonexistent/clip.mp4",
        "../outside/secret.mp4", "../../outside/secret.mp4", "sub/../../outside/secret.mp4",
        "../input/../../outside/secret.mp4", f"{folders.input}/../../outside/secret.mp4",
        "link.mp4", "linkdir/secret.mp4", str(folders.input / "link.mp4"), "../../outside/secret.mp4 [output]",
        "nothere.mp4", "sub/nothere.mp4", "nothere.mp4 [output]", "dir.mp4", str(folders.input / "dir.mp4"),
        "clip.mp4\x00.txt", "~/.bashrc",
    ]


def test_files_inside_comfyui_folders_are_read(folders):
    p = folders.paths
    assert p.resolve_readable("clip.mp4", "video_path") == folders.input / "clip.mp4"
    assert p.resolve_readable(" sub/inner.mp4 ", "video_path") == folders.input / "sub" / "inner.mp4"
    assert p.resolve_readable('"clip.mp4"', "video_path") == folders.input / "clip.mp4"
    assert p.resolve_readable("done.mp4 [output]", "video_path") == folders.output / "done.mp4"
    assert p.resolve_readable("t.mp4 [temp]", "video_path") == folders.temp / "t.mp4"
    assert p.resolve_readable("clip.mp4 [input]", "video_path") == folders.input / "clip.mp4"
    for absolute in (folders.input / "clip.mp4", folders.output / "done.mp4", folders.temp / "t.mp4"):
        assert p.resolve_readable(str(absolute), "video_path") == absolute
    # a name in a folder stays in that folder, as ComfyUI 0.30 reads it: a link to the output folder is
    # refused by that name, the file is read by its own
    with pytest.raises(p.FileRefused):
        p.resolve_readable("to_output.mp4", "video_path")
    assert p.resolve_readable(str(folders.input / "to_output.mp4"), "video_path") == folders.output / "done.mp4"


def test_missing_and_not_allowed_read_the_same(folders):
    """Every refused name gets the same message but for the name itself, which is the name as given:
    no other path of the server, and nothing that tells whether the file exists."""
    p = folders.paths
    texts = set()
    for name in refused_names(folders):
        with pytest.raises(FileNotFoundError) as info:
            p.resolve_readable(name, "video_path")
        assert type(info.value) is p.FileRefused, name
        msg = str(info.value)
        shown = repr(name.strip())
        assert shown in msg, (name, msg)
        generic = msg.replace(shown, "<NAME>")
        texts.add(generic)
        assert str(folders.outside) not in generic and "/etc" not in generic, msg
    assert len(texts) == 1, texts
    (generic,) = texts
    assert generic.startswith("video_path: <NAME> is not a file this ComfyUI can read.")
    assert str(folders.input) in generic and "VTOONIFY_ALLOWED_DIRS" in generic  # the user's own input folder
    with pytest.raises(ValueError, match="video_path: give the name of a file"):
        p.resolve_readable("  ", "video_path")


def test_allowed_dirs_from_the_environment(folders, monkeypatch):
    p = folders.paths
    secret = folders.outside / "secret.mp4"
    other = folders.tmp / "other"
    other.mkdir()
    (other / "b.mp4").write_bytes(b"video")
    os.symlink(Path("/etc/hostname"), other / "escape.mp4")
    monkeypatch.setenv("VTOONIFY_ALLOWED_DIRS", os.pathsep.join([str(folders.outside), "relative/dir", "",
                                                                 str(other)]))
    assert p.resolve_readable(str(secret), "video_path") == secret
    assert p.resolve_readable(str(other / "b.mp4"), "video_path") == other / "b.mp4"
    assert p.resolve_readable(str(folders.input / "link.mp4"), "video_path") == secret  # ends in an allowed folder
    assert p.extra_dirs() == [str(folders.outside), str(other)]  # the relative entry is ignored
    for name in (str(other / "escape.mp4"), "/etc/passwd", str(other / "missing.mp4"), "relative/dir/x.mp4",
                 "link.mp4"):  # a name of the input folder stays in the input folder
        with pytest.raises(p.FileRefused):
            p.resolve_readable(name, "video_path")
    monkeypatch.setenv("VTOONIFY_ALLOWED_DIRS", str(folders.outside / "secret.mp4" / ".."))
    assert p.resolve_readable(str(secret), "video_path") == secret  # '..' in the listed folder resolved


def test_outputs_stay_in_the_output_folder(folders):
    video, out = folders.video, folders.output
    src = folders.input / "clip.mp4"
    assert video.resolve_output_path("vtoonify/%stem%_x.mp4", src) == (out / "vtoonify" / "clip_x.mp4", "vtoonify",
                                                                       "clip_x.mp4")
    assert video.resolve_output_path("toon", src) == (out / "toon.mp4", "", "toon.mp4")
    os.symlink(folders.outside, out / "escape")
    for bad in ("../x.mp4", "a/../../x.mp4", "/tmp/x.mp4", str(out / "x.mp4"), "..\\x.mp4", "escape/x.mp4",
                "a/../x.mp4", "%stem%/../../x.mp4", "x\x00.mp4"):
        with pytest.raises(ValueError, match="output_name: .* must be a relative file name inside the output folder"):
            video.resolve_output_path(bad, src)
    with pytest.raises(ValueError, match="unsupported extension"):
        video.resolve_output_path("x.txt", src)
    assert not list(folders.outside.glob("x*"))


def test_video_node_refuses_at_queue_time_and_at_run_time(folders, fake_comfy, loader_output):
    cls = folders.video.StylizeVideoFile
    # ComfyUI skips its own checks for exactly the inputs VALIDATE_INPUTS names
    assert inspect.getfullargspec(cls.VALIDATE_INPUTS).args == ["cls", "video_path"]
    assert cls.VALIDATE_INPUTS(video_path="clip.mp4") is True
    assert cls.VALIDATE_INPUTS(video_path="done.mp4 [output]") is True
    assert cls.VALIDATE_INPUTS(video_path=None) is True  # from another node: checked when it runs
    # ComfyUI shows "<node> failed custom validation: video_path - <message>"
    messages = {cls.VALIDATE_INPUTS(video_path=n).replace(repr(n.strip()), "<NAME>") for n in refused_names(folders)}
    assert len(messages) == 1 and next(iter(messages)).startswith("<NAME> is not a file this ComfyUI can read.")
    run = fake_comfy.node("VToonifyStylizeVideoFile")
    for name in ("/etc/passwd", "../outside/secret.mp4", "link.mp4", "nothere.mp4"):
        with pytest.raises(FileNotFoundError) as info:
            run(loader_output[0], name)
        assert str(info.value) == "Stylize Video File (VToonify): video_path: " + cls.VALIDATE_INPUTS(video_path=name)


def test_video_errors_name_the_file_as_given(folders, fake_comfy, loader_output):
    """Messages of the video reader name the file as the prompt did, not by its real path."""
    from PIL import Image

    model = loader_output[0]
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folders.output / "still.png")
    os.symlink(folders.output / "still.png", folders.input / "still_link.mp4")
    run = fake_comfy.node("VToonifyStylizeVideoFile")
    for name in (str(folders.input / "still_link.mp4"), "still.png [output]"):
        with pytest.raises(ValueError) as info:
            run(model, name, output_name="x.mp4", crop_mode="whole frame (pad to 8)")
        msg = str(info.value)
        assert msg.startswith("Stylize Video File (VToonify): ") and repr(name) in msg and "still image" in msg, msg
        assert str(folders.output / "still.png") not in msg, msg


# ---------------------------------------------------------------------------------------------- models at queue time


@pytest.fixture(scope="module")
def loader_output(fake_comfy):
    return fake_comfy.node("VToonifyLoadModel")(D_CKPT, "encoder.pt", "faceparsing.pth", "auto", "cpu", "fp32", False)


def validate(fake_comfy, checkpoint=D_CKPT, style_encoder="encoder.pt", face_parser="faceparsing.pth", exstyle="auto",
             download_missing=False):
    cls = fake_comfy.pack.NODE_CLASS_MAPPINGS["VToonifyLoadModel"]
    return cls.VALIDATE_INPUTS(checkpoint=checkpoint, style_encoder=style_encoder, face_parser=face_parser,
                               exstyle=exstyle, download_missing=download_missing)


def test_loader_validation_names_only_the_file_inputs(fake_comfy):
    """ComfyUI 0.30 skips its list check for the inputs VALIDATE_INPUTS takes: device and precision
    must not be among them."""
    cls = fake_comfy.pack.NODE_CLASS_MAPPINGS["VToonifyLoadModel"]
    spec = inspect.getfullargspec(cls.VALIDATE_INPUTS)
    assert spec.args == ["cls", "checkpoint", "style_encoder", "face_parser", "exstyle", "download_missing"]
    assert spec.varkw is None
    required = cls.INPUT_TYPES()["required"]
    assert isinstance(required["device"][0], list) and isinstance(required["precision"][0], list)


def test_present_files_pass(fake_comfy):
    assert validate(fake_comfy) is True
    assert validate(fake_comfy, checkpoint=T_CKPT) is True
    assert validate(fake_comfy, exstyle="none") is True
    assert validate(fake_comfy, exstyle="vtoonify_d_cartoon/exstyle_code.npy") is True
    # inputs that come from another node arrive as None: checked when the node runs
    assert validate(fake_comfy, checkpoint=None, style_encoder=None, face_parser=None, exstyle=None) is True
    assert validate(fake_comfy, checkpoint=HUB_MISSING, download_missing=None) is True


def test_missing_checkpoint_on_hugging_face(fake_comfy):
    msg = validate(fake_comfy, checkpoint=HUB_MISSING, exstyle="none")
    folder = fake_comfy.module("nodes.loader").folder_hint()
    assert msg == (f"checkpoint: '{HUB_MISSING}' is not in models/vtoonify: save it as "
                   f"models/vtoonify/{HUB_MISSING} (the folder {folder}). It is on Hugging Face "
                   f"(PKUWilliamYang/VToonify): set download_missing to true, or download it from "
                   f"{HF_TREE}/vtoonify_d_pixar.")
    assert validate(fake_comfy, checkpoint=HUB_MISSING, exstyle="none", download_missing=True) is True
    # 'auto' needs the codes beside the checkpoint: also missing, also on Hugging Face
    both = validate(fake_comfy, checkpoint=HUB_MISSING).split("\n")
    assert len(both) == 2 and both[1].startswith("exstyle (auto: the codes beside the checkpoint): "
                                                 "'vtoonify_d_pixar/exstyle_code.npy' is not in models/vtoonify")
    assert validate(fake_comfy, checkpoint=HUB_MISSING, download_missing=True) is True


def test_missing_checkpoint_on_google_drive_only(fake_comfy):
    for download in (False, True):  # the download cannot fetch it either
        msg = validate(fake_comfy, checkpoint=DRIVE_MISSING, download_missing=download)
        assert isinstance(msg, str) and msg.count("\n") == 0, msg  # VToonify-T: no exemplar codes needed
        assert f"checkpoint: '{DRIVE_MISSING}' is not in models/vtoonify: save it as models/vtoonify/{DRIVE_MISSING}" \
            in msg
        assert msg.endswith(f"It is on the official Google Drive only: download vtoonify.pt by hand from "
                            f"{DRIVE_T_PIXAR}.")
    # VToonify-T ignores exstyle: a missing one is not refused
    assert "exstyle" not in validate(fake_comfy, checkpoint=DRIVE_MISSING,
                                     exstyle="vtoonify_d_pixar/exstyle_code.npy")


def test_missing_encoder_parser_and_codes(fake_comfy, tmp_path, monkeypatch):
    import folder_paths

    empty = tmp_path / "vtoonify"
    empty.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "vtoonify", ([str(empty)], set()))
    # the pack's own models/vtoonify is always listed too (after the user's folders): an empty one here
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    lines = validate(fake_comfy, checkpoint=D_CKPT).split("\n")
    assert [line.split(":")[0] for line in lines] == ["checkpoint", "style_encoder", "face_parser", "exstyle (auto"]
    assert lines[1] == (f"style_encoder: 'encoder.pt' is not in models/vtoonify: save it as models/vtoonify/encoder.pt "
                        f"(the folder {empty}). It is on Hugging Face (PKUWilliamYang/VToonify): set download_missing "
                        f"to true, or download it from {HF_TREE}.")
    assert lines[2].startswith("face_parser: 'faceparsing.pth' is not in models/vtoonify")
    assert validate(fake_comfy, checkpoint=D_CKPT, download_missing=True) is True
    # an explicit exstyle file that is missing
    msg = validate(fake_comfy, checkpoint=D_CKPT, exstyle="vtoonify_d_arcane/exstyle_code.npy")
    assert "exstyle: 'vtoonify_d_arcane/exstyle_code.npy' is not in models/vtoonify" in msg
    # a checkpoint of one's own without its codes: no official source to name
    (empty / "mine").mkdir()
    (empty / "mine" / "vtoonify_s_d.pt").write_bytes(b"x")
    msg = validate(fake_comfy, checkpoint="mine/vtoonify_s_d.pt", style_encoder="encoder.pt")
    assert "exstyle (auto: the codes beside the checkpoint): 'mine/exstyle_code.npy' is not in models/vtoonify" in msg
    assert msg.endswith("It is not a file of the official release: put your own file there or pick another.")


def test_values_outside_the_lists(fake_comfy):
    """The list check ComfyUI leaves to VALIDATE_INPUTS for the file inputs."""
    for name, value in (("checkpoint", "vtoonify_t_cartoon/no_such.pt"), ("style_encoder", "../encoder.pt"),
                        ("face_parser", "/etc/passwd"), ("exstyle", "other.npy"), ("checkpoint", 3)):
        msg = validate(fake_comfy, **{name: value})
        assert msg == (f"Value not in list: {name}: {value!r} is neither a file of "
                       f"models/vtoonify nor an official file name."), msg


def test_loading_still_reports_at_run_time(fake_comfy):
    """A file that disappears after the prompt was queued is still explained when the node runs."""
    with pytest.raises(FileNotFoundError, match="checkpoint: model file 'vtoonify_d_pixar/vtoonify_s_d.pt' not found"):
        fake_comfy.node("VToonifyLoadModel")(HUB_MISSING, "encoder.pt", "faceparsing.pth", "none", "cpu", "fp32", False)


# ---------------------------------------------------------------------------------------------- previews


@pytest.fixture
def preview_method(monkeypatch):
    """Sets ComfyUI's preview method (a stand-in ``comfy.cli_args``, as ComfyUI 0.30 has it)."""
    import enum

    class LatentPreviewMethod(enum.Enum):
        NoPreviews = "none"
        Auto = "auto"
        Latent2RGB = "latent2rgb"
        TAESD = "taesd"

    module = types.ModuleType("comfy.cli_args")
    module.LatentPreviewMethod = LatentPreviewMethod
    module.args = types.SimpleNamespace(preview_method=LatentPreviewMethod.NoPreviews, preview_size=512)
    monkeypatch.setitem(sys.modules, "comfy.cli_args", module)

    def set_method(value: str, size: int = 512):
        module.args.preview_method = LatentPreviewMethod(value)
        module.args.preview_size = size
    return set_method


def test_previews_follow_comfyui_preview_method(fake_comfy, loader_output, preview_method, sent_previews):
    from vtoonify_core import StyleCode

    comfy = fake_comfy.module("nodes._comfy")
    model = loader_output[0]
    frames = torch.rand(2, 16, 16, 3)
    style = StyleCode(torch.zeros(1, 18, 512), "dualstylegan")
    stylize = fake_comfy.node("VToonifyStylizeFrames")
    for method, expected in (("none", 0), ("auto", 1), ("latent2rgb", 1), ("taesd", 1), ("none", 0)):
        preview_method(method, size=256)
        assert comfy.previews_enabled() is (expected > 0)
        sent_previews.clear()
        fake_comfy.state.progress.clear()
        out = stylize(model, frames, style, 0.5, "whole frame (pad to 8)", 1)[0]
        assert len(sent_previews) == expected, method
        assert fake_comfy.state.progress[-1] == (2, 2)  # the progress itself is always sent
        if expected:
            kind, image, size = sent_previews[0]
            assert (kind, image.size, size) == ("JPEG", (64, 64), 256)  # ComfyUI's --preview-size
            assert np.abs(np.asarray(image).astype(int) - (out[0].numpy() * 255).round().astype(int)).max() <= 1
        sent_previews.clear()
        comfy.show_preview(np.zeros((4, 4, 3), np.uint8))  # Extract Style Code's aligned face
        assert len(sent_previews) == expected, method
