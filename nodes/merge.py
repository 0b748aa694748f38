"""Merge VToonify Models and Save VToonify Model (issue 17): two models of one kind blended part by
part, and a model written to ``models/vtoonify`` where Load VToonify Model finds it.

Thin adapters over :func:`vtoonify_core.models.bundle.merge_vtoonify` and
:func:`~vtoonify_core.models.bundle.save_model`. The merged generator is a new network (the inputs
are not touched) and gets its own ComfyUI model patcher, as the loader's networks do, so on an
accelerator ComfyUI loads and offloads it like any other model. ComfyUI's output cache keeps the
merged model while the node's inputs stay the same, so no cache of its own is needed.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import uuid
from pathlib import Path, PurePosixPath

from . import _comfy, inputs, loader

logger = logging.getLogger("vtoonify")

MERGE_NAME = "Merge VToonify Models"
SAVE_NAME = "Save VToonify Model"
#: a per-part ratio of this value (any negative one) takes ``ratio``
INHERIT = -1.0
#: the parts with a ratio input of their own, in the order of the network (input to output, then
#: the style side); the core's remaining part, ``other`` (StyleGAN layers below 64 px and the
#: constant input, which VToonify does not run), takes ``ratio``
MERGE_PARTS = ("encoder", "modres", "fusion", "decoder_64", "decoder_128", "decoder_256", "decoder_512",
               "decoder_1024", "mapping", "style_transforms")
#: parts that only VToonify-D has
D_ONLY = {"modres": "ModRes blocks", "style_transforms": "style transforms"}
DEFAULT_PREFIX = "vtoonify_merged/vtoonify_s_d"
SUFFIX = ".safetensors"

_PART_TIPS = {
    "encoder": "the encoder of the input frames (reads the pose, layout and colours of the frame).",
    "modres": "VToonify-D's ModRes blocks, which adapt the encoder features to the style and style degree. "
              "VToonify-T has none: leave it at -1.",
    "fusion": "the layers that fuse the encoder features into the decoder at four scales (with VToonify-D's "
              "style-degree masks).",
    "decoder_64": "StyleGAN decoder layers of resolution 64 (run at 1/4 of the frame size): the coarsest, face "
                  "and hair shapes.",
    "decoder_128": "StyleGAN decoder layers of resolution 128 (1/2 of the frame size): shapes of the features.",
    "decoder_256": "StyleGAN decoder layers of resolution 256 (the frame size): features and shading.",
    "decoder_512": "StyleGAN decoder layers of resolution 512 (2x the frame size): fine detail and colours.",
    "decoder_1024": "StyleGAN decoder layers of resolution 1024 (4x the frame size, the output): texture and "
                    "colours.",
    "mapping": "the mapping network z+ -> W+ that Extract Style Code uses to make style codes with this model.",
    "style_transforms": "VToonify-D's transforms of the style code into its colour and structure parts (how the "
                        "exemplar style is applied). VToonify-T has none: leave it at -1.",
}


# ---------------------------------------------------------------------------------------------- names


def model_name(model) -> str:
    """The checkpoint a bundle came from, as Load VToonify Model lists it where possible
    (``vtoonify_d_cartoon/vtoonify_s_d.pt``), or what made it (``merge of ...``)."""
    source = str(model.sources.get("checkpoint", "")) or "an unnamed model"
    if not os.path.isabs(source):
        return source
    try:
        roots = _comfy.folder_paths().get_folder_paths(loader.FOLDER)
    except (KeyError, ImportError):
        roots = []
    for root in roots:
        rel = os.path.relpath(source, root)
        if not rel.startswith(".."):
            return PurePosixPath(Path(rel).as_posix()).as_posix()
    return "/".join(Path(source).parts[-2:])


def describe(ratio: float, parts: dict) -> str:
    """``ratio 0.5; decoder_512 1, decoder_1024 1``: the ratio and the parts that have their own."""
    text = f"ratio {ratio:g}"
    if parts:
        text += "; " + ", ".join(f"{name} {value:g}" for name, value in parts.items())
    return text


# ---------------------------------------------------------------------------------------------- merging


def part_ratios(backbone: str, values: dict) -> dict:
    """The per-part ratios the core gets: the parts set to a value of their own (negative = take
    ``ratio``, left out); refuses a VToonify-D-only part set for VToonify-T and non-numbers."""
    from ..vtoonify_core.errors import InputError

    parts = {}
    for name in MERGE_PARTS:
        value = values.get(name, INHERIT)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise InputError(name, f"must be a number: -1 (use ratio) or 0..1, got {value!r}.") from None
        if value < 0:
            continue
        if backbone != "dualstylegan" and name in D_ONLY:
            raise InputError(name, f"VToonify-T has no {D_ONLY[name]}: leave {name} at -1 (use ratio).")
        parts[name] = value  # NaN and values above 1 reach the core, which refuses them
    return parts


def own_patcher(generator, device):
    """A ComfyUI patcher of its own for a new generator on ``device`` (``None`` where ComfyUI does not
    manage the device): the network waits on the offload device until a node asks ComfyUI for it."""
    if not _comfy.managed_device(device):
        return None
    patcher = _comfy.make_patcher(generator, device)
    generator.to(device if patcher is None else _comfy.offload_device())
    return patcher


def merge(model_a, model_b, ratio: float, parts: dict, exstyles: str = "a"):
    """The bundle whose generator blends model_a's and model_b's (see :class:`MergeModels`).

    Every refusal names both models.
    """
    from ..vtoonify_core.errors import InputError
    from ..vtoonify_core.models.bundle import merge_vtoonify

    a = inputs.require_model(model_a, "model_a")
    b = inputs.require_model(model_b, "model_b")
    try:
        chosen = part_ratios(a.backbone, parts)
        merged = merge_vtoonify(a, b, ratio, parts=chosen or None, exstyles=exstyles)
    except InputError as exc:
        exc.args = (f"{exc.args[0]} (model_a: {model_name(a)}, {a.kind}; model_b: {model_name(b)}, {b.kind})",)
        raise
    sources = {**merged.sources,
               "checkpoint": f"merge of {model_name(a)} and {model_name(b)} ({describe(float(ratio), chosen)})"}
    patcher = own_patcher(merged.generator, merged.device)
    merged = dataclasses.replace(merged, sources=sources, patchers={**a.patchers, "generator": patcher})
    logger.info("VToonify: %s", sources["checkpoint"])
    return merged


class MergeModels:
    """Blends two VToonify models of one kind, with one ratio or a ratio per part."""

    CATEGORY = "VToonify"
    FUNCTION = "merge"
    RETURN_TYPES = (inputs.MODEL,)
    RETURN_NAMES = ("vtoonify_model",)
    OUTPUT_TOOLTIPS = ("The merged model (model_a's encoder and face parser, the exemplar codes of exstyles).",)
    DESCRIPTION = ("Blends two VToonify models of one kind (two VToonify-D or two VToonify-T checkpoints) tensor by "
                   "tensor: (1 - r) * A + r * B, exactly model_a at r = 0 and model_b at r = 1 (ComfyUI's "
                   "ModelMergeSimple counts the other way). r is ratio, or the part's own value where it is not -1: "
                   "e.g. the coarse decoder layers (64-256) from one style and the fine ones (512, 1024) from the "
                   "other, as in Toonify's layer swapping. The encoder, face parser, device and precision are "
                   "model_a's. Both inputs stay as they are; the merged generator is a new network as large as one "
                   "checkpoint, kept by ComfyUI while the inputs do not change. Save VToonify Model writes it to "
                   "models/vtoonify.")

    @classmethod
    def INPUT_TYPES(cls):
        part = {"default": INHERIT, "min": -1.0, "max": 1.0, "step": 0.01}
        return {
            "required": {
                "model_a": inputs.vtoonify_model(tooltip="Model A (ratio 0), from Load VToonify Model; its encoder, "
                                                         "face parser, device and precision are kept."),
                "model_b": inputs.vtoonify_model(tooltip="Model B (ratio 1), of the same kind as model_a (both "
                                                         "VToonify-D or both VToonify-T)."),
                "ratio": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                    "tooltip": "How much of model_b: 0 = model_a, 1 = model_b, 0.5 = the average. "
                                               "Every part set to -1 below takes this ratio."}),
                "exstyles": (["a", "b"], {"default": "a",
                                          "tooltip": "VToonify-D: whose exemplar style codes the merged model has "
                                                     "(style_id in Extract Style Code counts in these). Ignored by "
                                                     "VToonify-T."}),
            },
            "optional": {name: ("FLOAT", {**part, "tooltip": f"Ratio of {_PART_TIPS[name]} -1 = use ratio; "
                                                            f"0 = model_a, 1 = model_b."})
                         for name in MERGE_PARTS},
        }

    def merge(self, model_a, model_b, ratio=0.5, exstyles="a", **parts):
        with _comfy.node_errors(MERGE_NAME):
            return (merge(model_a, model_b, ratio, parts, exstyles),)


# ---------------------------------------------------------------------------------------------- saving


def target(filename_prefix: str) -> tuple[Path, str]:
    """``(full path, name as Load VToonify Model lists it)`` of ``<prefix>.safetensors`` in the
    ``vtoonify`` models folder; a name that would leave the folder or that the loader would not
    list is refused."""
    from ..vtoonify_core.errors import InputError

    name = (filename_prefix or "").strip().replace("\\", "/")
    if name.lower().endswith(SUFFIX):
        name = name[:-len(SUFFIX)]
    rel = PurePosixPath(name)
    if not name or name.endswith("/") or not rel.name:
        raise InputError("filename_prefix", f"give a file name inside models/vtoonify, e.g. {DEFAULT_PREFIX}.")
    if rel.is_absolute() or re.match(r"[A-Za-z]:", name):
        raise InputError("filename_prefix", f"'{filename_prefix}' is an absolute path: give a name inside "
                                            f"models/vtoonify, e.g. {DEFAULT_PREFIX}.")
    if ".." in rel.parts:
        raise InputError("filename_prefix", f"'{filename_prefix}' leaves models/vtoonify ('..'): give a name inside "
                                            f"it, e.g. {DEFAULT_PREFIX}.")
    if any(p.startswith(".") for p in rel.parts):
        raise InputError("filename_prefix", f"'{filename_prefix}': names starting with '.' are hidden from Load "
                                            f"VToonify Model; choose another name.")
    if rel.suffix.lower() in loader.CHECKPOINT_EXTENSIONS:
        raise InputError("filename_prefix", f"'{filename_prefix}': models are saved as {SUFFIX}; leave the "
                                            f"extension out.")
    loader.register_folder()
    full = Path(loader.folder_hint()).joinpath(*rel.parts)
    full = full.with_name(full.name + SUFFIX)
    return full, os.path.normpath(rel.as_posix() + SUFFIX)


def same_weights(path: Path, generator) -> bool:
    """Whether ``path`` holds exactly this generator's tensors (names, dtypes and values)."""
    import torch
    from safetensors import SafetensorError, safe_open

    state = generator.state_dict()
    try:
        with safe_open(str(path), framework="pt") as f:
            if set(f.keys()) != set(state):
                return False
            return all(torch.equal(f.get_tensor(k), state[k].detach().cpu()) for k in state)
    except (OSError, SafetensorError):
        return False


def check_exstyles_beside(model, path: Path) -> None:
    """Refuse a VToonify-D model whose exemplar codes differ from those Load VToonify Model would
    read beside ``path`` (``exstyle_code.npy`` first, then ``.safetensors``)."""
    import torch

    from ..vtoonify_core.errors import CheckpointError, InputError
    from ..vtoonify_core.models.bundle import find_exstyle
    from ..vtoonify_core.models.exstyle import load_exstyles

    if model.backbone != "dualstylegan" or model.exstyles is None:
        return
    beside = find_exstyle(path)
    if beside is None:
        return
    try:
        old = load_exstyles(beside)
        same = old.names == model.exstyles.names and torch.equal(old.codes, model.exstyles.codes.float())
    except CheckpointError:
        same = False
    if not same:
        raise InputError("filename_prefix", f"{beside} holds other exemplar style codes, which Load VToonify Model "
                                            f"would read with this model: save it in another folder.")


def save(vtoonify_model, filename_prefix: str, overwrite: bool = False) -> tuple[str, str]:
    """Write the model (see :class:`SaveModel`); ``(name for the loader, message)``."""
    from ..vtoonify_core.errors import InputError
    from ..vtoonify_core.models.bundle import find_exstyle, save_model
    from ..vtoonify_core.models.exstyle import save_exstyles

    model = inputs.require_model(vtoonify_model)
    full, name = target(filename_prefix)
    if full.is_dir():
        raise InputError("filename_prefix", f"{full} is a folder: give a file name.")
    same = full.exists() and same_weights(full, model.generator)
    if full.exists() and not same and not overwrite:
        raise InputError("filename_prefix", f"{name} already exists in {loader.folder_hint()} and holds another "
                                            f"model: choose another name, or turn overwrite on to replace it.")
    check_exstyles_beside(model, full)
    codes = model.backbone == "dualstylegan" and model.exstyles is not None
    if same:
        if codes and find_exstyle(full) is None:  # the codes beside it were removed since
            save_exstyles(model.exstyles, full.parent / "exstyle_code.safetensors")
        return name, f"{name} is already saved (same weights) in {loader.folder_hint()}."
    scratch = full.with_name(f".{full.stem}.{uuid.uuid4().hex[:8]}{SUFFIX}")
    try:
        save_model(model, scratch)  # the exemplar codes go beside it, where they belong
        os.replace(scratch, full)
    finally:
        if scratch.exists():
            scratch.unlink()
    cache = getattr(_comfy.folder_paths(), "filename_list_cache", None)
    if isinstance(cache, dict):  # list the new file at once, whatever the folders' time stamps say
        cache.pop(loader.FOLDER, None)
    logger.info("VToonify: saved %s to %s", model.describe(), full)
    beside = " with its exemplar style codes (exstyle_code.safetensors beside it)" if codes else ""
    return name, (f"Saved {name}{beside} in {loader.folder_hint()}. Pick it as checkpoint in Load VToonify Model "
                  f"(press R to refresh the lists).")


class SaveModel:
    """Saves a VToonify model (e.g. a merged one) to models/vtoonify as .safetensors."""

    CATEGORY = "VToonify"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("checkpoint",)
    OUTPUT_TOOLTIPS = ("The saved file's name as Load VToonify Model lists it.",)
    DESCRIPTION = ("Writes the model's generator to models/vtoonify/<filename_prefix>.safetensors (in the model's "
                   "precision: load with precision fp32 to keep a merge at full precision) and, for VToonify-D, "
                   "its exemplar style codes beside it as exstyle_code.safetensors. Load VToonify Model lists the "
                   "file and loads it back equal. An existing file with other weights is replaced only with "
                   "overwrite on; exemplar codes of another model in the folder are never replaced.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vtoonify_model": inputs.vtoonify_model(),
                "filename_prefix": ("STRING", {
                    "default": DEFAULT_PREFIX,
                    "tooltip": "Name inside models/vtoonify, without extension (.safetensors is added); sub-folders "
                               "allowed, '..' and absolute paths are refused. Give each VToonify-D model a folder "
                               "of its own: its exemplar codes are saved beside it. For VToonify-T e.g. "
                               "vtoonify_t_merged/vtoonify."}),
                "overwrite": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "Replace an existing file of this name that holds other weights (off: refuse). A file "
                               "with the same weights is left as it is."}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, filename_prefix=DEFAULT_PREFIX, **_):
        """Run again when the saved file was removed or replaced (ComfyUI otherwise reuses the last run)."""
        try:
            st = target(filename_prefix)[0].stat()
            return f"{st.st_mtime_ns}:{st.st_size}"
        except (OSError, ValueError):
            return "missing"

    def save(self, vtoonify_model, filename_prefix=DEFAULT_PREFIX, overwrite=False):
        with _comfy.node_errors(SAVE_NAME):
            name, message = save(vtoonify_model, filename_prefix, bool(overwrite))
            return {"ui": {"text": [message]}, "result": (name,)}


NODE_CLASS_MAPPINGS = {"VToonifyMergeModels": MergeModels, "VToonifySaveModel": SaveModel}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyMergeModels": MERGE_NAME, "VToonifySaveModel": SAVE_NAME}
