"""The cases of the bad-input campaign (``scripts/bad_inputs.py``) and the files they use.

A case is a :class:`Case`: an id, a category, a one-line description of what is sent, what a good
answer is (``expect``: ``error``, ``ok`` or ``either``) and a function that builds the request
(an API-format prompt, or a call to a ``/vtoonify/`` route) from the :class:`Context` made by
:func:`prepare`. Everything a case needs lives under ``<base>/models/vtoonify/bad_inputs/`` and
``<base>/input/bad_inputs/``; the stand-in weights are linked, never copied.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

SUB = "bad_inputs"
D = f"{SUB}/vtoonify_d_cartoon/vtoonify_s_d.pt"
T = f"{SUB}/vtoonify_t_cartoon/vtoonify.pt"
ENC = f"{SUB}/encoder.pt"
PAR = f"{SUB}/faceparsing.pth"
N_STYLES = 8
NAN_STYLE = 3
PORTRAIT = f"{SUB}/portrait.png"
CLIP = f"{SUB}/clip.webp"
NOFACE = f"{SUB}/noface.png"
FACE = "face (official crop)"
WHOLE = "whole frame (pad to 8)"
MASKS = ("skin", "brows", "eyes", "eyeglasses", "ears", "earrings", "nose", "mouth", "lips", "neck", "necklace",
         "cloth", "hair", "hat", "background")
#: stand-in files: path in the stand-in folder -> standin kind
STANDINS = {"vtoonify_d_cartoon/vtoonify_s_d.pt": "vtoonify_d", "vtoonify_t_cartoon/vtoonify.pt": "vtoonify_t",
            "encoder.pt": "psp", "faceparsing.pth": "bisenet"}


# ---------------------------------------------------------------------------------------------- context


@dataclass
class Context:
    """Where the campaign's files are on the server machine, and how paths are hidden in reports."""

    base: Path
    models: Path
    inputs: Path
    outside: Path
    roots: list = field(default_factory=list)

    def clean(self, text: str) -> str:
        """``text`` with absolute server paths replaced by ``<...>``."""
        text = text.replace("\x1b", "\\x1b")  # terminal colour codes (torch's messages) made visible
        for root in sorted({str(r) for r in self.roots if str(r) not in ("", "/")}, key=len, reverse=True):
            text = text.replace(root, "<...>")
        return re.sub(r"(?<![\w.<>])/(?:tmp|home|root|work|usr|opt|var)/[^\s'\",;:)\]]*/([^\s'\",;:)\]/]+)",
                      r"<...>/\1", text)


@dataclass
class Request:
    """A prompt for ``POST /prompt``, or a route call; ``names`` also count as naming the input."""

    kind: str = "prompt"
    prompt: Optional[dict] = None
    method: str = "GET"
    path: str = ""
    body: Optional[bytes] = None
    headers: dict = field(default_factory=dict)
    names: tuple = ()


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    description: str
    build: Callable[[Context], Request]
    expect: str = "error"
    timeout: Optional[float] = None


# ---------------------------------------------------------------------------------------------- files


def _link(dest: Path, source: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    dest.symlink_to(source)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class _Printer:
    """Pickles as a call of ``print``: code in a file that must only hold weights."""

    def __reduce__(self):
        return (print, ("a checkpoint ran code",))


def build_standins(folder: Path) -> dict[str, Path]:
    """The stand-in model files in ``folder`` (official layout), built when missing."""
    from vtoonify_core.testing import standin

    out = {}
    for rel, kind in STANDINS.items():
        path = folder / rel
        if not path.exists():
            standin.write_official_checkpoint(kind, path, base_seed=0)
        out[rel] = path
    return out


def _model_files(models: Path, standins: dict[str, Path]) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from vtoonify_core.testing import standin

    d, t = standins["vtoonify_d_cartoon/vtoonify_s_d.pt"], standins["vtoonify_t_cartoon/vtoonify.pt"]
    _link(models / "vtoonify_d_cartoon/vtoonify_s_d.pt", d)
    standin.write_official_exstyles(models / "vtoonify_d_cartoon/exstyle_code.npy", n=N_STYLES)
    _link(models / "vtoonify_t_cartoon/vtoonify.pt", t)
    _link(models / "encoder.pt", standins["encoder.pt"])
    _link(models / "faceparsing.pth", standins["faceparsing.pth"])
    # VToonify-D beside exemplar codes with NaN in one style, beside none, beside random bytes
    for folder in ("vtoonify_d_nanstyle", "vtoonify_d_noexstyle", "vtoonify_d_badexstyle"):
        _link(models / folder / "vtoonify_s_d.pt", d)
    nan_path = standin.write_official_exstyles(models / "vtoonify_d_nanstyle/exstyle_code.npy", n=N_STYLES)
    codes = np.load(nan_path, allow_pickle=True).item()
    codes[f"{NAN_STYLE:03d}.jpg"][0, 5, :7] = np.nan
    np.save(nan_path, codes, allow_pickle=True)
    rng = np.random.default_rng(0)
    _write(models / "vtoonify_d_badexstyle/exstyle_code.npy", rng.bytes(4096))
    broken = models / "broken"
    _write(broken / "random_bytes.pt", rng.bytes(64 * 1024))
    _write(broken / "empty.pt", b"")
    with open(d, "rb") as f:
        _write(broken / "truncated.pt", f.read(4 << 20))
    _write(broken / "text.pth", b"this is not a checkpoint\n")
    torch.save({"g_ema": {"weight": torch.zeros(2)}, "hook": _Printer()}, broken / "pickled_code.pt")
    torch.save({"g_ema": {"foo.weight": torch.zeros(4, 4), "bar.bias": torch.zeros(4)}}, broken / "wrong_keys.pt")
    keys = [row.name for row in standin.read_table("vtoonify_t")]
    torch.save({"g_ema": {k: torch.zeros(1) for k in keys}}, broken / "wrong_shapes.pt")
    _write(broken / "random.safetensors", rng.bytes(4096))
    save_file({"x": torch.zeros(3)}, str(broken / "wrong_kind.safetensors"))
    ex = models / "exstyles"
    _write(ex / "empty.npy", b"")
    np.save(ex / "plain_array.npy", rng.standard_normal((N_STYLES, 1, 18, 512)).astype(np.float32))
    np.save(ex / "wrong_shape.npy", {"000.jpg": np.zeros((1, 18, 256), np.float32)}, allow_pickle=True)
    np.save(ex / "empty_dict.npy", {}, allow_pickle=True)
    np.save(ex / "strings.npy", {"000.jpg": "not a code"}, allow_pickle=True)
    with open(ex / "pickled_code.npy", "wb") as f:  # an object array whose pickle calls print
        f.write(b"\x93NUMPY\x01\x00")
        header = "{'descr': '|O', 'fortran_order': False, 'shape': (), }"
        header = header + " " * (63 - (10 + len(header)) % 64) + "\n"
        f.write(len(header).to_bytes(2, "little") + header.encode())
        pickle.dump(_Printer(), f, protocol=2)


def _portrait(size: int = 256, shift: int = 0):
    import numpy as np
    from PIL import Image
    from skimage import data

    img = data.astronaut()[10 + shift:450 + shift, 20 + shift:460 + shift]
    return np.asarray(Image.fromarray(img).resize((size, size), Image.LANCZOS))


def _png(image, mode: Optional[str] = None, **kw) -> bytes:
    from PIL import Image

    im = Image.fromarray(image) if not isinstance(image, Image.Image) else image
    if mode:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def _input_files(inputs: Path, outside: Path) -> None:
    import numpy as np
    from PIL import Image

    from vtoonify_core import video

    face = _portrait()
    _write(inputs / "portrait.png", _png(face))
    frames = [_portrait(256, 4 * i) for i in range(3)]
    buf = io.BytesIO()
    Image.fromarray(frames[0]).save(buf, "WEBP", save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]],
                                    lossless=True, duration=40, loop=0)
    _write(inputs / "clip.webp", buf.getvalue())
    grad = np.tile(np.linspace(60, 200, 256, dtype=np.uint8)[None, :, None], (256, 1, 3))
    _write(inputs / "noface.png", _png(grad))
    _write(inputs / "grey.png", _png(face, "L"))
    grey16 = Image.fromarray((np.asarray(Image.fromarray(face).convert("L")).astype(np.uint16) * 257))
    _write(inputs / "grey16.png", _png(grey16))
    pal = Image.fromarray(face).convert("P", palette=Image.ADAPTIVE, colors=64)
    _write(inputs / "palette.png", _png(pal, transparency=0))
    buf = io.BytesIO()
    Image.fromarray(face).convert("CMYK").save(buf, "JPEG", quality=90)
    _write(inputs / "cmyk.jpg", buf.getvalue())
    rate = Fraction(24, 1)
    video.write_video(inputs / "face.mp4", frames[:2], rate, options={"crf": "18"})
    small = [np.asarray(Image.fromarray(f).resize((32, 32), Image.LANCZOS)) for f in frames]
    video.write_video(inputs / "small.mp4", small, rate, options={"crf": "18"})
    video.write_video(inputs / "noface.mp4", [grad[:64, :64]] * 3, rate, options={"crf": "18"})
    video.write_video(inputs / "huge.mp4", [np.zeros((4096, 4096, 3), np.uint8)], rate, options={"crf": "30"})
    data = (inputs / "face.mp4").read_bytes()
    _write(inputs / "truncated.mp4", data[:len(data) // 2])
    rng = np.random.default_rng(1)
    _write(inputs / "random.mp4", rng.bytes(64 * 1024))
    _write(inputs / "empty.mp4", b"")
    video.write_video(outside / "outside.mp4", small, rate, options={"crf": "18"})


def prepare(base: Path, standin_dir: Path, outside: Path, roots=()) -> Context:
    """Put every file the cases use on the server (``base``): stand-in models (built in
    ``standin_dir`` when missing) and broken files under ``models/vtoonify/bad_inputs``, images and
    videos under ``input/bad_inputs``, one video ``outside`` ComfyUI's folders."""
    base, outside = Path(base).resolve(), Path(outside).resolve()
    models = base / "models" / "vtoonify" / SUB
    inputs = base / "input" / SUB
    for d in (models, inputs, outside):
        d.mkdir(parents=True, exist_ok=True)
    _model_files(models, build_standins(Path(standin_dir)))
    _input_files(inputs, outside)
    home = Path.home()
    all_roots = [base, standin_dir, outside, *roots, home / ".cache" / "vtoonify-comfyui", home]
    all_roots = [str(Path(r)) for r in all_roots] + [os.path.realpath(str(r)) for r in all_roots]
    return Context(base, models, inputs, outside, all_roots)


# ---------------------------------------------------------------------------------------------- graphs


class Graph:
    """An API-format prompt under construction; :meth:`add` returns the new node's id."""

    def __init__(self):
        self.nodes: dict[str, dict] = {}

    def add(self, class_type: str, **inputs) -> str:
        nid = str(len(self.nodes) + 1)
        self.nodes[nid] = {"class_type": class_type, "inputs": inputs}
        return nid

    def request(self) -> Request:
        return Request("prompt", self.nodes)


def out(nid: str, index: int = 0) -> list:
    return [nid, index]


def loader(g: Graph, **kw) -> str:
    inputs = dict(checkpoint=D, style_encoder=ENC, face_parser=PAR, exstyle="auto", device="auto",
                  precision="auto", download_missing=False)
    inputs.update(kw)
    return g.add("VToonifyLoadModel", **inputs)


def image(g: Graph, name: str = PORTRAIT) -> list:
    return out(g.add("LoadImage", image=name))


def scaled(g: Graph, img: list, width: int = 64, height: Optional[int] = None) -> list:
    return out(g.add("ImageScale", image=img, upscale_method="area", width=width, height=height or width,
                     crop="disabled"))


def empty_image(g: Graph, width: int, height: int, frames: int = 1) -> list:
    return out(g.add("EmptyImage", width=width, height=height, batch_size=frames, color=0x808080))


def bad_image(g: Graph, kind: str, img: Optional[list] = None, **kw) -> list:
    inputs = dict(kind=kind, width=64, height=64, frames=1, **kw)
    if img is not None:
        inputs["image"] = img
    return out(g.add("BadInputImage", **inputs))


def extract(g: Graph, model: str, img: list, **kw) -> str:
    inputs = dict(vtoonify_model=out(model), image=img, style_id=0, color_transfer=False)
    inputs.update(kw)
    return g.add("VToonifyExtractStyle", **inputs)


def stylize(g: Graph, model, images: list, style: list, **kw) -> str:
    inputs = dict(vtoonify_model=out(model) if isinstance(model, str) else model, images=images, style=style,
                  style_degree=0.5, crop_mode=WHOLE, batch_size=4, face_padding=200)
    inputs.update(kw)
    return g.add("VToonifyStylizeFrames", **inputs)


def face_parse(g: Graph, model: str, images: list) -> str:
    return g.add("VToonifyFaceParse", face_parser=out(model, 1), images=images,
                 **{f"mask_{m}": m in ("skin", "eyes", "nose", "mouth") for m in MASKS})


def preview(g: Graph, images: list) -> str:
    return g.add("PreviewImage", images=images)


def switch(g: Graph, value: list) -> list:
    """Core's If/Else Switch: its match-type output passes ComfyUI's validation into any input."""
    return out(g.add("ComfySwitchNode", switch=True, on_true=value, on_false=value))


def pipeline(loader_kw=None, extract_kw=None, stylize_kw=None, frames: Optional[Callable] = None,
             style_image: str = PORTRAIT) -> Request:
    """Load -> Extract Style Code (the portrait) -> Stylize Frames (64x64 frames, whole frame) -> Preview.
    ``frames(g, portrait)`` gives other frames."""
    g = Graph()
    m = loader(g, **(loader_kw or {}))
    img = image(g, style_image)
    st = extract(g, m, img, **(extract_kw or {}))
    frames_ref = frames(g, img) if frames else scaled(g, image(g, PORTRAIT) if style_image != PORTRAIT else img)
    preview(g, out(stylize(g, m, frames_ref, out(st), **(stylize_kw or {}))))
    return g.request()


def video_graph(video_path, style: bool = False, model_kw=None, style_model_kw=None, **kw) -> Request:
    """Load -> Stylize Video File (whole frame, small chunks); ``style`` connects a style code made by
    a loader with ``style_model_kw``."""
    g = Graph()
    m = loader(g, **(model_kw or {}))
    inputs = dict(vtoonify_model=out(m), video_path=video_path, output_name="bad_inputs/%stem%_out.mp4",
                  style_degree=0.5, batch_size=4, crop_mode=WHOLE, style_id=0, color_transfer=False,
                  face_padding=200, chunk_size=8, crf=23, preview_frames=1)
    if style:
        sm = loader(g, **style_model_kw) if style_model_kw else m
        inputs["style"] = out(extract(g, sm, image(g)))
    inputs.update(kw)
    g.add("VToonifyStylizeVideoFile", **inputs)
    return g.request()


def keyframes(text: str, b: bool = True) -> Request:
    """Style Keyframes with styles A (and B) from the portrait -> Stylize Frames."""
    def frames(g, img):
        return scaled(g, img, 32)

    g = Graph()
    m = loader(g)
    img = image(g)
    a = extract(g, m, img)
    kw = {"style_b": out(extract(g, m, img, style_id=1))} if b else {}
    k = g.add("VToonifyStyleKeyframes", style_a=out(a), keyframes=text, **kw)
    preview(g, out(stylize(g, m, frames(g, img), out(k))))
    return g.request()


def route(method: str, path: str, body: Optional[bytes] = None, content_type: Optional[str] = "application/json",
          names=("name", "checkpoint", "exstyle", "body")) -> Callable[[Context], Request]:
    headers = {"Content-Type": content_type} if content_type and body is not None else {}
    return lambda ctx: Request("route", method=method, path=path, body=body, headers=headers, names=tuple(names))


def q(**params) -> str:
    from urllib.parse import urlencode

    return "/vtoonify/styles?" + urlencode(params)


# ---------------------------------------------------------------------------------------------- cases

CASES: list[Case] = []


def case(id: str, category: str, description: str, build, expect: str = "error", timeout: Optional[float] = None):
    CASES.append(Case(id, category, description, build, expect, timeout))


def _const(req_fn):
    return lambda ctx: req_fn()


# -- model files -------------------------------------------------------------------------------
for cid, name, what in (
        ("model_random_bytes", "broken/random_bytes.pt", "64 KiB of random bytes"),
        ("model_empty_file", "broken/empty.pt", "an empty file (0 bytes)"),
        ("model_truncated", "broken/truncated.pt", "the first 4 MiB of the VToonify-D checkpoint (truncated)"),
        ("model_text_file", "broken/text.pth", "a text file"),
        ("model_pickled_code", "broken/pickled_code.pt", "a torch.save pickle that calls print() when loaded"),
        ("model_wrong_keys", "broken/wrong_keys.pt", "{'g_ema': {...}} with unknown keys"),
        ("model_wrong_shapes", "broken/wrong_shapes.pt", "VToonify-T keys, every tensor of shape (1,)"),
        ("model_random_safetensors", "broken/random.safetensors", "a .safetensors of random bytes"),
        ("model_wrong_safetensors", "broken/wrong_kind.safetensors", "a valid .safetensors with one tensor 'x'"),
        ("model_parser_as_generator", "faceparsing.pth", "the BiSeNet face parser"),
        ("model_encoder_as_generator", "encoder.pt", "the pSp encoder")):
    case(cid, "models", f"checkpoint = {what}",
         (lambda n: _const(lambda: pipeline({"checkpoint": f"{SUB}/{n}"})))(name))
for cid, inp, name, what in (
        ("model_generator_as_encoder", "style_encoder", D, "the VToonify-D generator"),
        ("model_parser_as_encoder", "style_encoder", PAR, "the face parser"),
        ("model_random_encoder", "style_encoder", f"{SUB}/broken/random_bytes.pt", "random bytes"),
        ("model_generator_as_parser", "face_parser", T, "the VToonify-T generator"),
        ("model_encoder_as_parser", "face_parser", ENC, "the pSp encoder"),
        ("model_empty_parser", "face_parser", f"{SUB}/broken/empty.pt", "an empty file")):
    case(cid, "models", f"{inp} = {what}", (lambda i, n: _const(lambda: pipeline({i: n})))(inp, name))
case("model_not_listed", "models", "checkpoint = a name that is not in models/vtoonify",
     _const(lambda: pipeline({"checkpoint": f"{SUB}/nothere.pt"})))
case("model_path_traversal", "models", "checkpoint = '../../comfyui.log' (path traversal)",
     _const(lambda: pipeline({"checkpoint": "../../comfyui.log"})))
case("model_absolute_path", "models", "checkpoint = '/etc/hostname' (absolute path)",
     _const(lambda: pipeline({"checkpoint": "/etc/hostname"})))
case("model_empty_name", "models", "checkpoint = '' (empty)", _const(lambda: pipeline({"checkpoint": ""})))
case("model_official_missing", "models", "checkpoint = an official name offered in the list but not downloaded "
     "(vtoonify_d_arcane/vtoonify_s_d.pt)",
     _const(lambda: pipeline({"checkpoint": "vtoonify_d_arcane/vtoonify_s_d.pt"})))
case("model_drive_only_download", "models", "download_missing on for a Google-Drive-only checkpoint "
     "(vtoonify_t_pixar/vtoonify.pt)",
     _const(lambda: pipeline({"checkpoint": "vtoonify_t_pixar/vtoonify.pt", "download_missing": True})))
case("model_device_cuda_on_cpu", "models", "device = cuda on a server without CUDA",
     _const(lambda: pipeline({"device": "cuda"})))
case("model_device_unknown", "models", "device = 'tpu' (not a choice)", _const(lambda: pipeline({"device": "tpu"})))
case("model_precision_unknown", "models", "precision = 'fp8' (not a choice)",
     _const(lambda: pipeline({"precision": "fp8"})))

# -- exemplar style codes ----------------------------------------------------------------------
case("exstyle_missing", "exstyle", "VToonify-D with exstyle auto and no exstyle_code.npy beside it",
     _const(lambda: pipeline({"checkpoint": f"{SUB}/vtoonify_d_noexstyle/vtoonify_s_d.pt"})))
case("exstyle_nan", "exstyle", f"exstyle_code.npy beside the checkpoint with NaN in style {NAN_STYLE}",
     _const(lambda: pipeline({"checkpoint": f"{SUB}/vtoonify_d_nanstyle/vtoonify_s_d.pt"}, {"style_id": NAN_STYLE})))
case("exstyle_nan_other_style", "exstyle", f"exemplar codes with NaN in style {NAN_STYLE}, style_id 0 used",
     _const(lambda: pipeline({"checkpoint": f"{SUB}/vtoonify_d_nanstyle/vtoonify_s_d.pt"})))
case("exstyle_random_bytes", "exstyle", "exstyle_code.npy beside the checkpoint = 4 KiB of random bytes",
     _const(lambda: pipeline({"checkpoint": f"{SUB}/vtoonify_d_badexstyle/vtoonify_s_d.pt"})))
for cid, name, what in (
        ("exstyle_empty_file", "empty.npy", "an empty file"),
        ("exstyle_plain_array", "plain_array.npy", "a plain (8, 1, 18, 512) array, not a dict of named codes"),
        ("exstyle_wrong_shape", "wrong_shape.npy", "a dict with a (1, 18, 256) code"),
        ("exstyle_empty_dict", "empty_dict.npy", "an empty dict"),
        ("exstyle_strings", "strings.npy", "a dict of strings"),
        ("exstyle_pickled_code", "pickled_code.npy", "an object array whose pickle calls print()")):
    case(cid, "exstyle", f"exstyle = {what}",
         (lambda n: _const(lambda: pipeline({"exstyle": f"{SUB}/exstyles/{n}"})))(name),
         expect="either" if cid == "exstyle_plain_array" else "error")
case("exstyle_wrong_kind", "exstyle", "exstyle = a .safetensors that holds one tensor 'x'",
     _const(lambda: pipeline({"exstyle": f"{SUB}/broken/wrong_kind.safetensors"})))
case("exstyle_not_listed", "exstyle", "exstyle = a name not in models/vtoonify",
     _const(lambda: pipeline({"exstyle": f"{SUB}/nothere.npy"})))
case("exstyle_none_with_d", "exstyle", "exstyle = none with a VToonify-D checkpoint, style_id 0",
     _const(lambda: pipeline({"exstyle": "none"})))

# -- styles ------------------------------------------------------------------------------------
case("style_id_past_end", "style", f"style_id = {N_STYLES} with {N_STYLES} exemplar styles (0..{N_STYLES - 1})",
     _const(lambda: pipeline(extract_kw={"style_id": N_STYLES})))
case("style_id_huge", "style", "style_id = 9999", _const(lambda: pipeline(extract_kw={"style_id": 9999})))
case("style_id_negative", "style", "style_id = -1", _const(lambda: pipeline(extract_kw={"style_id": -1})))
case("style_color_transfer_plain_ckpt", "style", "color_transfer on with vtoonify_s_d.pt (not a _c checkpoint)",
     _const(lambda: pipeline(extract_kw={"color_transfer": True})), expect="either")


def _cross(style_model: str, frames_model: str) -> Callable[[Context], Request]:
    def build(ctx):
        g = Graph()
        ms, mf = loader(g, checkpoint=style_model), loader(g, checkpoint=frames_model)
        img = image(g)
        preview(g, out(stylize(g, mf, scaled(g, img), out(extract(g, ms, img)))))
        return g.request()
    return build


case("style_t_into_d", "style", "a VToonify-T style code into Stylize Frames with a VToonify-D model", _cross(T, D))
case("style_d_into_t", "style", "a VToonify-D style code into Stylize Frames with a VToonify-T model", _cross(D, T))


def _mix(t_and_d: bool = False, **kw) -> Callable[[Context], Request]:
    def build(ctx):
        g = Graph()
        md, mt = loader(g), loader(g, checkpoint=T if t_and_d else D)
        img = image(g)
        inputs = dict(style_a=out(extract(g, md, img)), style_b=out(extract(g, mt, img, style_id=1)), blend=0.5,
                      layers="all (0-17)", first_layer=0, last_layer=17)
        inputs.update(kw)
        mix = g.add("VToonifyStyleMix", **inputs)
        preview(g, out(stylize(g, md, scaled(g, img, 32), out(mix))))
        return g.request()
    return build


case("style_mix_t_and_d", "style", "Style Mix of a VToonify-T and a VToonify-D code", _mix(t_and_d=True))
case("style_mix_first_after_last", "style", "Style Mix, custom range first_layer 10 > last_layer 5",
     _mix(layers="custom range", first_layer=10, last_layer=5))
case("style_mix_layer_18", "style", "Style Mix, first_layer 18 (layers are 0-17)",
     _mix(layers="custom range", first_layer=18))
case("style_mix_blend_2", "style", "Style Mix, blend 2.0 (0..1)", _mix(blend=2.0))


def _exemplar(model: str = D, reference: str = PORTRAIT, face: bool = True, **kw) -> Callable[[Context], Request]:
    def build(ctx):
        g = Graph()
        m = loader(g, checkpoint=model)
        img = image(g)
        inputs = dict(vtoonify_model=out(m), reference=image(g, reference), color_transfer=False, refine_steps=0,
                      learning_rate=0.05, refine_resolution="256", loss="l2")
        if face:
            inputs["face"] = img
        inputs.update(kw)
        ex = g.add("VToonifyExemplarStyle", **inputs)
        preview(g, out(stylize(g, m, scaled(g, img, 32), out(ex))))
        return g.request()
    return build


case("exemplar_with_t", "style", "Exemplar Style From Image with a VToonify-T model", _exemplar(T))
case("exemplar_no_face", "style", "Exemplar Style From Image, color_transfer off and no face connected",
     _exemplar(face=False))
case("exemplar_reference_without_face", "style", "Exemplar Style From Image, a reference without a face",
     _exemplar(reference=NOFACE))
case("exemplar_bad_resolution", "style", "Exemplar Style From Image, refine_resolution '300' (not a choice)",
     _exemplar(refine_resolution="300"))
case("exemplar_refine_negative", "numbers", "Exemplar Style From Image, refine_steps -5", _exemplar(refine_steps=-5))
case("exemplar_learning_rate_nan", "numbers", "Exemplar Style From Image, learning_rate NaN, refine_steps 1",
     _exemplar(refine_steps=1, refine_resolution="32", learning_rate=float("nan")))
case("extract_no_face", "style", "Extract Style Code on an image without a face",
     _const(lambda: pipeline(style_image=NOFACE)))


def _keyframed_into(target: str) -> Callable[[Context], Request]:
    def build(ctx):
        g = Graph()
        m = loader(g)
        img = image(g)
        a = extract(g, m, img)
        k = g.add("VToonifyStyleKeyframes", style_a=out(a), keyframes="0:A@0.2")
        if target == "mix":
            mix = g.add("VToonifyStyleMix", style_a=out(k), style_b=out(a), blend=0.5, layers="all (0-17)",
                        first_layer=0, last_layer=17)
            preview(g, out(stylize(g, m, scaled(g, img, 32), out(mix))))
        else:
            g.add("VToonifyStylizeVideoFile", vtoonify_model=out(m), video_path=f"{SUB}/small.mp4",
                  output_name="bad_inputs/keyframed.mp4", style_degree=0.5, batch_size=4, crop_mode=WHOLE,
                  style=out(k), chunk_size=8, crf=23, preview_frames=1)
        return g.request()
    return build


case("style_keyframed_into_mix", "style", "a keyframed style (Style Keyframes) into Style Mix", _keyframed_into("mix"))
case("style_keyframed_into_video", "style", "a keyframed style into Stylize Video File", _keyframed_into("video"),
     expect="either")

# -- keyframes ---------------------------------------------------------------------------------
for cid, text, what, expect in (
        ("keyframes_empty", "", "keyframes = '' (empty)", "error"),
        ("keyframes_garbage", "hello world", "keyframes = 'hello world'", "error"),
        ("keyframes_missing_degree", "0:A@", "keyframes = '0:A@' (no degree after @)", "error"),
        ("keyframes_degree_2", "0:A@2.0", "keyframes = '0:A@2.0' (degree out of 0..1)", "error"),
        ("keyframes_degree_nan", "0:A@nan", "keyframes = '0:A@nan'", "error"),
        ("keyframes_negative_frame", "-5:A", "keyframes = '-5:A' (negative frame)", "error"),
        ("keyframes_unknown_letter", "0:Z", "keyframes = '0:Z' (no style Z)", "error"),
        ("keyframes_unconnected_letter", "0:A, 10:C", "keyframes = '0:A, 10:C' (style_c not connected)", "error"),
        ("keyframes_duplicate_frame", "0:A, 0:B", "keyframes = '0:A, 0:B' (frame 0 twice)", "error"),
        ("keyframes_no_colon", "0 A", "keyframes = '0 A' (no colon)", "error"),
        ("keyframes_fullwidth_digit", "\uff10:A", "keyframes = '０:A' (a full-width digit)", "either"),
        ("keyframes_huge_frame", "0:A, 99999999999999999999:B", "keyframes = '0:A, 99999999999999999999:B'", "either"),
        ("keyframes_lowercase", "0:a, 10:b", "keyframes = '0:a, 10:b' (lower-case letters)", "either"),
        ("keyframes_unsorted", "10:B, 0:A", "keyframes = '10:B, 0:A' (not in order)", "either"),
        ("keyframes_very_long", ",".join(f"{i}:A" for i in range(20000)), "keyframes = 20000 entries", "either")):
    case(cid, "keyframes", what, (lambda t: _const(lambda: keyframes(t)))(text), expect=expect, timeout=120)

# -- images ------------------------------------------------------------------------------------


def _frames_of(kind: str, source: str = "portrait", **kw) -> Callable:
    def frames(g, img):
        return bad_image(g, kind, scaled(g, img) if source == "portrait" else None, **kw)
    return frames


for kind, expect in (("nan", "error"), ("nan_all", "error"), ("inf", "error"), ("one_channel", "either"),
                     ("two_channel", "error"), ("four_channel", "ok"), ("five_channel", "error"), ("uint8", "either"),
                     ("float16", "either"), ("float64", "either"), ("empty_batch", "error"), ("zero_size", "error"),
                     ("negative", "either"), ("above_one", "either"), ("three_dims", "either"),
                     ("five_dims", "error"), ("bool", "either"), ("not_a_tensor", "error")):
    case(f"images_{kind}_stylize", "images", f"Stylize Frames images = {kind.replace('_', ' ')} IMAGE",
         (lambda k: _const(lambda: pipeline(frames=_frames_of(k))))(kind), expect=expect)


def _on_node(node: str, kind: str) -> Callable[[Context], Request]:
    def build(ctx):
        g = Graph()
        m = loader(g)
        img = image(g)
        bad = bad_image(g, kind, img)
        if node == "extract":
            preview(g, out(extract(g, m, bad), 1))
        elif node == "parse":
            preview(g, out(face_parse(g, m, bad), 2))
        elif node == "deflicker":
            preview(g, out(g.add("VToonifyDeflicker", images=bad, strength=0.5, flow="dis", flow_scale=0.5)))
        return g.request()
    return build


for node, kind in (("extract", "nan"), ("extract", "empty_batch"), ("extract", "one_channel"), ("parse", "nan"),
                   ("parse", "empty_batch"), ("parse", "two_channel"), ("deflicker", "nan"),
                   ("deflicker", "empty_batch")):
    label = {"extract": "Extract Style Code image", "parse": "Face Parse images", "deflicker": "Deflicker images"}
    case(f"images_{kind}_{node}", "images", f"{label[node]} = {kind.replace('_', ' ')} IMAGE", _on_node(node, kind),
         expect="either" if kind == "one_channel" else "error")

case("images_huge_whole_frame", "images", "a 4096x4096 frame, whole-frame mode (must be refused fast)",
     _const(lambda: pipeline(frames=lambda g, img: empty_image(g, 4096, 4096))), timeout=30)
case("images_huge_face_mode", "images", "a 4096x4096 frame without a face, face mode",
     _const(lambda: pipeline(frames=lambda g, img: empty_image(g, 4096, 4096), stylize_kw={"crop_mode": FACE})),
     timeout=60)
case("images_one_pixel_whole", "images", "a 1x1 frame, whole-frame mode",
     _const(lambda: pipeline(frames=lambda g, img: empty_image(g, 1, 1))), expect="either")
case("images_thin_whole", "images", "an 8x2048 frame, whole-frame mode",
     _const(lambda: pipeline(frames=lambda g, img: empty_image(g, 8, 2048))), expect="either")
case("images_odd_size_whole", "images", "a 33x47 frame (not a multiple of 8), whole-frame mode",
     _const(lambda: pipeline(frames=lambda g, img: scaled(g, img, 33, 47))), expect="ok")
case("images_no_face_face_mode", "images", "frames without a face, face mode",
     _const(lambda: pipeline(frames=lambda g, img: image(g, NOFACE), stylize_kw={"crop_mode": FACE})))
case("images_one_pixel_face_mode", "images", "a 1x1 frame, face mode",
     _const(lambda: pipeline(frames=lambda g, img: empty_image(g, 1, 1), stylize_kw={"crop_mode": FACE})))
for cid, name, what in (("images_grey_png", "grey.png", "a greyscale (1-channel) PNG"),
                        ("images_grey16_png", "grey16.png", "a 16-bit greyscale PNG"),
                        ("images_palette_png", "palette.png", "a palette PNG with transparency"),
                        ("images_cmyk_jpeg", "cmyk.jpg", "a CMYK JPEG")):
    case(cid, "images", f"Extract Style Code on {what} of the portrait (LoadImage)",
         (lambda n: _const(lambda: pipeline(style_image=f"{SUB}/{n}")))(name), expect="ok")
case("images_rgba_join_alpha", "images", "an RGBA IMAGE from core Join Image with Alpha into Stylize Frames",
     _const(lambda: pipeline(frames=lambda g, img: out(g.add(
         "JoinImageWithAlpha", image=scaled(g, img), alpha=out(g.add("SolidMask", value=0.5, width=64, height=64)))))),
     expect="ok")


def _deflicker_mismatch(ctx):
    g = Graph()
    clip = image(g, CLIP)
    one = image(g)
    preview(g, out(g.add("VToonifyDeflicker", images=scaled(g, clip), strength=0.5, flow="dis", flow_scale=0.5,
                         guide_images=one)))
    return g.request()


case("images_deflicker_guide_count", "images", "Deflicker: 3 frames, guide_images of 1 frame", _deflicker_mismatch)

# -- parsing -----------------------------------------------------------------------------------


def _parsing(parse_src: str, frames_src: str, smooth_src: Optional[str] = None, size: int = 64,
             parse_size: int = 64) -> Callable[[Context], Request]:
    def build(ctx):
        g = Graph()
        m = loader(g)
        img = image(g)
        st = extract(g, m, img)
        srcs = {"portrait": img, "clip": image(g, CLIP)}
        parsing = out(face_parse(g, m, scaled(g, srcs[parse_src], parse_size)))
        if smooth_src:
            parsing = out(g.add("VToonifySmoothParsing", face_parsing=parsing,
                                images=scaled(g, srcs[smooth_src], parse_size), k=5, sigma_t=5.5, sigma_s=0.2,
                                flow="dis"))
        preview(g, out(stylize(g, m, scaled(g, srcs[frames_src], size), out(st), face_parsing=parsing)))
        return g.request()
    return build


case("parsing_more_maps_than_frames", "parsing", "Face Parse of 3 frames into Stylize Frames of 1 frame",
     _parsing("clip", "portrait"))
case("parsing_fewer_maps_than_frames", "parsing", "Face Parse of 1 frame into Stylize Frames of 3 frames",
     _parsing("portrait", "clip"))
case("parsing_other_size", "parsing", "parsing of 64x64 frames into Stylize Frames of 32x32 frames",
     _parsing("portrait", "portrait", size=32))
case("parsing_smooth_count_mismatch", "parsing", "Smooth Parsing: maps of 3 frames, images of 1 frame",
     _parsing("clip", "clip", smooth_src="portrait"))
case("parsing_smooth_size_mismatch", "parsing", "Smooth Parsing: maps of 64x64 frames, images of 32x32",
     lambda ctx: _smooth_size(ctx))


def _smooth_size(ctx):
    g = Graph()
    m = loader(g)
    clip = image(g, CLIP)
    parsing = out(face_parse(g, m, scaled(g, clip, 64)))
    sm = g.add("VToonifySmoothParsing", face_parsing=parsing, images=scaled(g, clip, 32), k=5, sigma_t=5.5,
               sigma_s=0.2, flow="dis")
    st = extract(g, m, image(g))
    preview(g, out(stylize(g, m, scaled(g, clip, 64), out(st), face_parsing=out(sm))))
    return g.request()


def _switched(target: str, value: str) -> Callable[[Context], Request]:
    """A wrong object through core's If/Else Switch (it passes validation) into ``target``."""
    def build(ctx):
        g = Graph()
        m = loader(g)
        img = image(g)
        st = extract(g, m, img)
        values = {"image": img, "model": out(m), "parser": out(m, 1), "string": out(st, 2), "style": out(st)}
        wrong = switch(g, values[value])
        if target == "face_parser":
            preview(g, out(g.add("VToonifyFaceParse", face_parser=wrong, images=scaled(g, img),
                                 **{f"mask_{k}": True for k in MASKS}), 2))
            return g.request()
        kw = {"images": scaled(g, img), "style": out(st)}
        if target == "vtoonify_model":
            preview(g, out(stylize(g, wrong, kw["images"], kw["style"])))
            return g.request()
        kw[target] = wrong
        preview(g, out(stylize(g, m, **kw)))
        return g.request()
    return build


case("parsing_switch_image_as_parsing", "parsing", "an IMAGE into Stylize Frames' face_parsing (through a Switch "
     "node, which passes validation)", _switched("face_parsing", "image"))
case("parsing_switch_model_as_parser", "parsing", "a VTOONIFY_MODEL into Face Parse's face_parser (through a "
     "Switch)", _switched("face_parser", "model"))

# -- numbers -----------------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")
for cid, kw, what, expect in (
        ("numbers_style_degree_1_5", {"style_degree": 1.5}, "style_degree = 1.5 (0..1)", "error"),
        ("numbers_style_degree_negative", {"style_degree": -0.1}, "style_degree = -0.1", "error"),
        ("numbers_style_degree_nan", {"style_degree": NAN}, "style_degree = NaN (JSON NaN)", "error"),
        ("numbers_style_degree_inf", {"style_degree": INF}, "style_degree = Infinity", "error"),
        ("numbers_style_degree_text", {"style_degree": "abc"}, "style_degree = 'abc'", "error"),
        ("numbers_style_degree_null", {"style_degree": None}, "style_degree = null", "error"),
        ("numbers_batch_size_negative", {"batch_size": -1}, "batch_size = -1", "error"),
        ("numbers_batch_size_65", {"batch_size": 65}, "batch_size = 65 (max 64)", "error"),
        ("numbers_batch_size_text", {"batch_size": "four"}, "batch_size = 'four'", "error"),
        ("numbers_batch_size_fraction", {"batch_size": 2.5}, "batch_size = 2.5", "either"),
        ("numbers_batch_size_auto", {"batch_size": 0}, "batch_size = 0 (auto)", "ok"),
        ("numbers_face_padding_4", {"face_padding": 4, "crop_mode": FACE}, "face_padding = 4 (min 8)", "error"),
        ("numbers_face_padding_5000", {"face_padding": 5000, "crop_mode": FACE}, "face_padding = 5000 (max 4096)",
         "error"),
        ("numbers_face_padding_13", {"face_padding": 13, "crop_mode": FACE}, "face_padding = 13 (not a multiple of 8), "
         "face mode", "either"),
        ("numbers_face_padding_nan", {"face_padding": NAN}, "face_padding = NaN", "error"),
        ("numbers_crop_mode_unknown", {"crop_mode": "middle"}, "crop_mode = 'middle' (not a choice)", "error")):
    case(cid, "numbers", f"Stylize Frames {what}",
         (lambda k: _const(lambda: pipeline(stylize_kw=k, frames=(
             (lambda g, img: image(g)) if k.get("crop_mode") == FACE else None))))(kw), expect=expect)
case("numbers_style_id_fraction", "numbers", "Extract Style Code style_id = 1.5",
     _const(lambda: pipeline(extract_kw={"style_id": 1.5})), expect="either")
case("numbers_style_id_text", "numbers", "Extract Style Code style_id = 'first'",
     _const(lambda: pipeline(extract_kw={"style_id": "first"})))
case("numbers_color_transfer_text", "numbers", "Extract Style Code color_transfer = 'maybe'",
     _const(lambda: pipeline(extract_kw={"color_transfer": "maybe"})), expect="either")


def _smooth(**kw) -> Callable[[Context], Request]:
    def build(ctx):
        g = Graph()
        m = loader(g)
        clip = scaled(g, image(g, CLIP), 32)
        inputs = dict(face_parsing=out(face_parse(g, m, clip)), images=clip, k=5, sigma_t=5.5, sigma_s=0.2, flow="dis")
        inputs.update(kw)
        sm = g.add("VToonifySmoothParsing", **inputs)
        st = extract(g, m, image(g))
        preview(g, out(stylize(g, m, clip, out(st), face_parsing=out(sm))))
        return g.request()
    return build


case("numbers_k_negative", "numbers", "Smooth Parsing k = -1", _smooth(k=-1))
case("numbers_k_larger_than_clip", "numbers", "Smooth Parsing k = 30 on a 3-frame clip", _smooth(k=30), expect="ok")
case("numbers_sigma_t_zero", "numbers", "Smooth Parsing sigma_t = 0 (min 0.01)", _smooth(sigma_t=0.0))
case("numbers_sigma_s_nan", "numbers", "Smooth Parsing sigma_s = NaN", _smooth(sigma_s=NAN))
case("numbers_flow_unknown", "numbers", "Smooth Parsing flow = 'raft' (not a choice)", _smooth(flow="raft"))


def _deflicker(**kw) -> Callable[[Context], Request]:
    def build(ctx):
        g = Graph()
        inputs = dict(images=scaled(g, image(g, CLIP), 32), strength=0.5, flow="dis", flow_scale=0.5)
        inputs.update(kw)
        preview(g, out(g.add("VToonifyDeflicker", **inputs)))
        return g.request()
    return build


case("numbers_deflicker_strength_nan", "numbers", "Deflicker strength = NaN", _deflicker(strength=NAN))
case("numbers_deflicker_flow_scale_0", "numbers", "Deflicker flow_scale = 0 (min 0.125)", _deflicker(flow_scale=0.0))

# -- types and wiring --------------------------------------------------------------------------


def _wired(change: Callable[[Graph, dict], None]) -> Callable[[Context], Request]:
    """The standard pipeline with one link or input changed by ``change(g, ids)``."""
    def build(ctx):
        g = Graph()
        m = loader(g)
        img = image(g)
        st = extract(g, m, img)
        frames = scaled(g, img)
        sty = stylize(g, m, frames, out(st))
        pv = preview(g, out(sty))
        change(g, {"model": m, "image": img, "style": st, "frames": frames, "stylize": sty, "preview": pv})
        return g.request()
    return build


def _set(node: str, name: str, value) -> Callable[[Graph, dict], None]:
    def change(g, ids):
        v = value(g, ids) if callable(value) else value
        if v is _DROP:
            del g.nodes[ids[node]]["inputs"][name]
        else:
            g.nodes[ids[node]]["inputs"][name] = v
    return change


_DROP = object()
for cid, node, name, value, what in (
        ("wiring_mask_into_images", "stylize", "images",
         lambda g, ids: out(g.add("SolidMask", value=1.0, width=64, height=64)), "a MASK into Stylize Frames' images"),
        ("wiring_image_into_model", "stylize", "vtoonify_model", lambda g, ids: ids["image"],
         "an IMAGE into vtoonify_model"),
        ("wiring_parser_into_model", "stylize", "vtoonify_model", lambda g, ids: out(ids["model"], 1),
         "the loader's FACE_PARSER output into vtoonify_model"),
        ("wiring_string_into_style", "stylize", "style", lambda g, ids: out(ids["style"], 2),
         "Extract Style Code's style_info (STRING) into style"),
        ("wiring_aligned_face_into_style", "stylize", "style", lambda g, ids: out(ids["style"], 1),
         "Extract Style Code's aligned_face (IMAGE) into style"),
        ("wiring_missing_images", "stylize", "images", _DROP, "Stylize Frames without images"),
        ("wiring_missing_model", "stylize", "vtoonify_model", _DROP, "Stylize Frames without vtoonify_model"),
        ("wiring_dangling_link", "stylize", "images", ["99", 0], "images linked to node 99, which does not exist"),
        ("wiring_bad_output_index", "stylize", "images", lambda g, ids: out(ids["frames"][0], 5),
         "images linked to output 5 of a node with one output"),
        ("wiring_link_as_string", "stylize", "vtoonify_model", lambda g, ids: ids["model"],
         "vtoonify_model = the loader's id as a plain string, not a link"),
        ("wiring_widget_as_link", "stylize", "style_degree", lambda g, ids: out(ids["frames"][0]),
         "style_degree linked to an IMAGE output")):
    case(cid, "wiring", what, (lambda c: lambda ctx: _wired(c)(ctx))(_set(node, name, value)))


def _unknown_class(g, ids):
    g.nodes[ids["stylize"]]["class_type"] = "VToonifyStylizeFramez"


def _no_output(g, ids):
    del g.nodes[ids["preview"]]


def _cycle(g, ids):
    a = g.add("ImageScale", image=None, upscale_method="area", width=64, height=64, crop="disabled")
    b = g.add("ImageScale", image=out(a), upscale_method="area", width=64, height=64, crop="disabled")
    g.nodes[a]["inputs"]["image"] = out(b)
    g.nodes[ids["stylize"]]["inputs"]["images"] = out(b)


case("wiring_unknown_node", "wiring", "a node type that does not exist (VToonifyStylizeFramez)",
     lambda ctx: _wired(_unknown_class)(ctx))
case("wiring_no_output_node", "wiring", "a prompt without an output node", lambda ctx: _wired(_no_output)(ctx))
case("wiring_cycle", "wiring", "Stylize Frames fed by two nodes that feed each other",
     lambda ctx: _wired(_cycle)(ctx))
case("wiring_empty_prompt", "wiring", "an empty prompt {}", lambda ctx: Request("prompt", {}))
for target, value, what in (("vtoonify_model", "image", "an IMAGE into vtoonify_model"),
                            ("vtoonify_model", "parser", "a FACE_PARSER into vtoonify_model"),
                            ("style", "string", "a STRING into style"),
                            ("style", "image", "an IMAGE into style"),
                            ("images", "model", "a VTOONIFY_MODEL into images"),
                            ("images", "style", "a VTOONIFY_STYLE into images")):
    case(f"wiring_switch_{value}_into_{target}", "wiring", f"{what} of Stylize Frames, through core's If/Else "
         "Switch (passes validation)", _switched(target, value))

# -- video file --------------------------------------------------------------------------------
for cid, path, what, expect in (
        ("video_empty_path", "", "video_path = '' (empty)", "error"),
        ("video_missing_relative", f"{SUB}/nothere.mp4", "video_path = a name not in the input folder", "error"),
        ("video_missing_absolute", "/nonexistent/clip.mp4", "video_path = an absolute path that does not exist",
         "error"),
        ("video_folder_relative", SUB, "video_path = a folder of the input folder", "error"),
        ("video_still_image", f"{SUB}/portrait.png", "video_path = a still PNG", "error"),
        ("video_random_bytes", f"{SUB}/random.mp4", "video_path = 64 KiB of random bytes named .mp4", "error"),
        ("video_empty_file", f"{SUB}/empty.mp4", "video_path = an empty .mp4", "error"),
        ("video_truncated", f"{SUB}/truncated.mp4", "video_path = the first half of an .mp4", "either"),
        ("video_text_file_absolute", "/etc/hostname", "video_path = /etc/hostname (a text file outside ComfyUI)",
         "error"),
        ("video_traversal_log", "../comfyui.log", "video_path = '../comfyui.log' (path traversal out of input/)",
         "error"),
        ("video_traversal_deep", "../" * 16 + "etc/hostname", "video_path = '../../…/etc/hostname'", "error"),
        ("video_traversal_model", f"../models/vtoonify/{SUB}/faceparsing.pth",
         "video_path = '../models/vtoonify/…/faceparsing.pth' (traversal into models/)", "error"),
        ("video_no_face", f"{SUB}/noface.mp4", "a video without a face, face mode, no style connected", "error")):
    kw = {"crop_mode": FACE} if cid == "video_no_face" else {}
    case(cid, "video file", what, (lambda p, k: _const(lambda: video_graph(p, **k)))(path, kw), expect=expect)
case("video_folder_absolute", "video file", "video_path = an absolute path to a folder",
     lambda ctx: video_graph(str(ctx.inputs)))
case("video_outside_absolute", "video file", "video_path = a real video at an absolute path outside ComfyUI's "
     "folders", lambda ctx: video_graph(str(ctx.outside / "outside.mp4"), style=True), expect="either")
case("video_no_face_whole_no_style", "video file", "a video without a face, whole frame, no style connected",
     _const(lambda: video_graph(f"{SUB}/noface.mp4")))
for cid, name, what in (("video_output_avi", "out.avi", "'out.avi' (unsupported container)"),
                        ("video_output_gif", "out.gif", "'out.gif'"),
                        ("video_output_absolute", "/tmp/vtoonify_bad_inputs_out.mp4", "an absolute path"),
                        ("video_output_traversal", "../../escape.mp4", "'../../escape.mp4' (traversal)"),
                        ("video_output_folder_only", "bad_inputs/", "'bad_inputs/' (a folder, no file name)")):
    case(cid, "video file", f"output_name = {what}",
         (lambda n: _const(lambda: video_graph(f"{SUB}/small.mp4", style=True, output_name=n)))(name))
case("video_style_id_huge", "video file", "style_id = 9999, no style connected (face video)",
     _const(lambda: video_graph(f"{SUB}/face.mp4", style_id=9999)))
case("video_t_style_into_d", "video file", "a VToonify-T style into Stylize Video File with a VToonify-D model",
     _const(lambda: video_graph(f"{SUB}/small.mp4", style=True, style_model_kw={"checkpoint": T})))
case("video_huge_frame_whole", "video file", "a 4096x4096 video, whole frame (must be refused fast)",
     _const(lambda: video_graph(f"{SUB}/huge.mp4", style=True)), timeout=60)
case("video_crf_64", "video file", "crf = 64 (max 63)", _const(lambda: video_graph(f"{SUB}/small.mp4", crf=64)))
case("video_chunk_size_0", "video file", "chunk_size = 0 (min 1)",
     _const(lambda: video_graph(f"{SUB}/small.mp4", chunk_size=0)))

# -- the pack's HTTP routes --------------------------------------------------------------------
DL = "/vtoonify/download"
for cid, body, what in (
        ("routes_download_not_json", b"{not json", "body '{not json'"),
        ("routes_download_empty_body", b"", "an empty body"),
        ("routes_download_array", b'["encoder.pt"]', "a JSON array"),
        ("routes_download_no_name", b'{"file": "encoder.pt"}', "an object without name"),
        ("routes_download_name_number", b'{"name": 42}', "name = 42"),
        ("routes_download_traversal", b'{"name": "../encoder.pt"}', "name = '../encoder.pt'"),
        ("routes_download_absolute", b'{"name": "/etc/passwd"}', "name = '/etc/passwd'"),
        ("routes_download_unknown_file", b'{"name": "my_model.pt"}', "name = a file that is not official"),
        ("routes_download_drive_only", b'{"name": "vtoonify_t_cartoon/vtoonify.pt"}',
         "name = a Google-Drive-only official file"),
        ("routes_download_bad_utf8", b'{"name": "encoder.pt\xff"}', "a body that is not UTF-8"),
        ("routes_download_nested", b"[" * 8000 + b"]" * 8000, "an array nested 8000 deep"),
        ("routes_download_huge", json.dumps({"name": "x" * (1 << 20)}).encode(), "a 1 MiB body")):
    case(cid, "routes", f"POST {DL}: {what}", route("POST", DL, body))
case("routes_download_text_plain", "routes", f"POST {DL} with Content-Type text/plain",
     route("POST", DL, b'{"name": "encoder.pt"}', "text/plain"))
case("routes_download_get", "routes", f"GET {DL} (the route takes POST)", route("GET", DL))
case("routes_models_post", "routes", "POST /vtoonify/models (the route takes GET)",
     route("POST", "/vtoonify/models", b"{}"))
case("routes_unknown", "routes", "GET /vtoonify/nothing (no such route)", route("GET", "/vtoonify/nothing"))
for cid, params, what, expect in (
        ("routes_styles_no_checkpoint", {}, "no checkpoint parameter", "error"),
        ("routes_styles_unknown_checkpoint", {"checkpoint": f"{SUB}/nothere.pt"}, "an unknown checkpoint", "error"),
        ("routes_styles_traversal", {"checkpoint": "../../comfyui.log"}, "checkpoint = '../../comfyui.log'", "error"),
        ("routes_styles_exstyle_unknown", {"checkpoint": D, "exstyle": f"{SUB}/nothere.npy"}, "an unknown exstyle",
         "error"),
        ("routes_styles_exstyle_checkpoint", {"checkpoint": D, "exstyle": D}, "exstyle = a .pt checkpoint", "error"),
        ("routes_styles_exstyle_traversal", {"checkpoint": D, "exstyle": "../../../etc/passwd.npy"},
         "exstyle = '../../../etc/passwd.npy'", "error"),
        ("routes_styles_corrupt_exstyle", {"checkpoint": f"{SUB}/vtoonify_d_badexstyle/vtoonify_s_d.pt"},
         "a checkpoint whose exstyle_code.npy is random bytes", "error"),
        ("routes_styles_nan_exstyle", {"checkpoint": f"{SUB}/vtoonify_d_nanstyle/vtoonify_s_d.pt"},
         "a checkpoint whose exemplar codes hold NaN", "either"),
        ("routes_styles_empty_exstyle", {"checkpoint": D, "exstyle": f"{SUB}/exstyles/empty.npy"},
         "exstyle = an empty .npy", "error"),
        ("routes_styles_t_checkpoint", {"checkpoint": T}, "a VToonify-T checkpoint (no exemplar styles)", "ok")):
    case(cid, "routes", f"GET /vtoonify/styles: {what}", route("GET", q(**params)), expect=expect)
