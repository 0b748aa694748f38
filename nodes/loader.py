"""Load VToonify Model: checkpoint (T or D), pSp encoder, BiSeNet parser and exemplar codes."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from . import _comfy, cache

logger = logging.getLogger("vtoonify")

DISPLAY_NAME = "Load VToonify Model"
FOLDER = "vtoonify"
HF_REPO = "PKUWilliamYang/VToonify"
HF_FOLDER = "models"
CHECKPOINT_EXTENSIONS = (".pt", ".pth", ".safetensors")
EXSTYLE_EXTENSIONS = (".npy", ".safetensors")
D_STYLES = ("arcane", "caricature", "cartoon", "comic", "illustration", "pixar")
T_STYLES = ("arcane", "caricature", "cartoon", "comic", "pixar")
ENCODER_FILE = "encoder.pt"
PARSER_FILE = "faceparsing.pth"
EXSTYLE_FILE = "exstyle_code.npy"
DEFAULT_CHECKPOINT = "vtoonify_d_cartoon/vtoonify_s_d.pt"
OFFICIAL_CHECKPOINTS = tuple(f"vtoonify_d_{s}/vtoonify_s_d.pt" for s in D_STYLES) + tuple(
    f"vtoonify_t_{s}/vtoonify.pt" for s in T_STYLES)
OFFICIAL_EXSTYLES = tuple(f"vtoonify_d_{s}/{EXSTYLE_FILE}" for s in D_STYLES)
AUTO, NONE = "auto", "none"
DEVICES = ("auto", "cuda", "cpu", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


# ---------------------------------------------------------------------------------------------- model folder


def register_folder() -> None:
    """Register ``models/vtoonify`` with ComfyUI unless a ``vtoonify`` folder is registered already."""
    fp = _comfy.folder_paths()
    try:
        if fp.get_folder_paths(FOLDER):
            return
    except KeyError:
        pass
    fp.add_model_folder_path(FOLDER, os.path.join(fp.models_dir, FOLDER))


def _native(name: str) -> str:
    return os.path.normpath(name)


def _listed(extensions) -> list[str]:
    fp = _comfy.folder_paths()
    try:
        names = fp.get_filename_list(FOLDER)
    except KeyError:
        return []
    out = []
    for n in names:
        parts = Path(n).parts
        if any(p.startswith(".") for p in parts):  # download scratch, Hugging Face metadata
            continue
        if os.path.splitext(n)[1].lower() in extensions:
            out.append(n)
    return out


def checkpoint_choices() -> list[str]:
    """Files in ``models/vtoonify`` plus the official names (they can be downloaded)."""
    names = set(_listed(CHECKPOINT_EXTENSIONS)) | {_native(n) for n in OFFICIAL_CHECKPOINTS}
    return sorted(names)


def encoder_choices() -> list[str]:
    return sorted(set(_listed(CHECKPOINT_EXTENSIONS)) | {ENCODER_FILE})


def parser_choices() -> list[str]:
    return sorted(set(_listed(CHECKPOINT_EXTENSIONS)) | {PARSER_FILE})


def exstyle_choices() -> list[str]:
    return [AUTO, NONE] + sorted(set(_listed(EXSTYLE_EXTENSIONS)) | {_native(n) for n in OFFICIAL_EXSTYLES})


def folder_hint() -> str:
    fp = _comfy.folder_paths()
    try:
        paths = fp.get_folder_paths(FOLDER)
    except KeyError:
        paths = []
    return paths[0] if paths else os.path.join(fp.models_dir, FOLDER)


def missing_message(name: str, input_name: str) -> str:
    root = folder_hint()
    return (
        f"{input_name}: model file '{name}' not found in {root}. Put the VToonify files there in the official "
        f"layout:\n"
        f"  {FOLDER}/vtoonify_t_<style>/vtoonify.pt            VToonify-T (styles: {', '.join(T_STYLES)})\n"
        f"  {FOLDER}/vtoonify_d_<style>/vtoonify_s_d.pt        VToonify-D (styles: {', '.join(D_STYLES)})\n"
        f"  {FOLDER}/vtoonify_d_<style>/{EXSTYLE_FILE}      its exemplar style codes\n"
        f"  {FOLDER}/{ENCODER_FILE}                             pSp style encoder\n"
        f"  {FOLDER}/{PARSER_FILE}                        BiSeNet face parser\n"
        f"They are in the Hugging Face repository {HF_REPO}, folder {HF_FOLDER}/ "
        f"(https://huggingface.co/{HF_REPO}/tree/main/{HF_FOLDER}). Or set download_missing to true to "
        f"download the missing files there automatically.")


# ---------------------------------------------------------------------------------------------- files


def download(name: str, input_name: str) -> Path:
    """Fetch ``models/<name>`` of the official Hugging Face repository into the vtoonify folder."""
    rel = PurePosixPath(Path(name).as_posix())
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"{input_name}: cannot download {name!r}: not a file name inside the vtoonify folder.")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ImportError(f"{input_name}: download_missing needs the huggingface_hub package: install it into "
                          f"ComfyUI's Python (pip install huggingface_hub), or download the file by hand.\n"
                          + missing_message(name, input_name)) from None
    root = Path(folder_hint())
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=root))
    target = root.joinpath(*rel.parts)
    try:
        logger.info("VToonify: downloading %s/%s from %s to %s", HF_FOLDER, rel, HF_REPO, target)
        try:
            got = hf_hub_download(repo_id=HF_REPO, filename=f"{HF_FOLDER}/{rel}", local_dir=str(scratch))
        except Exception as exc:  # network, missing file, authentication: all reported the same way
            raise FileNotFoundError(f"{input_name}: could not download {HF_FOLDER}/{rel} from {HF_REPO} "
                                    f"({type(exc).__name__}: {exc}).\n" + missing_message(name, input_name)) from None
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(got, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def resolve_file(name: str, input_name: str, download_missing: bool) -> Path:
    """The full path of a file of the vtoonify folder; downloaded when missing and asked for."""
    full = _comfy.folder_paths().get_full_path(FOLDER, name)
    if full:
        return Path(full)
    if download_missing:
        return download(name, input_name)
    raise FileNotFoundError(missing_message(name, input_name))


def resolve_exstyle(choice: str, checkpoint_name: str, checkpoint_path: Path, download_missing: bool):
    from ..vtoonify_core.pipeline import find_exstyle

    if choice == NONE:
        return None
    if choice != AUTO:
        return resolve_file(choice, "exstyle", download_missing)
    beside = find_exstyle(checkpoint_path)
    if beside is not None:
        return beside
    official = Path(checkpoint_name).parent.as_posix() + "/" + EXSTYLE_FILE
    if download_missing and official in OFFICIAL_EXSTYLES:
        return download(_native(official), "exstyle")
    raise FileNotFoundError(
        f"exstyle: VToonify-D needs its exemplar style codes: put {EXSTYLE_FILE} beside the checkpoint "
        f"({checkpoint_path.parent}), or pick a file in exstyle.\n" + missing_message(official, "exstyle"))


def _load(part: str, input_name: str, path: Path, device, dtype, loader):
    from ..vtoonify_core.weights import CheckpointError

    try:
        return cache.load_network(part, path, device, dtype, loader)
    except CheckpointError as exc:
        exc.args = (f"{input_name}: {exc}",)
        raise


# ---------------------------------------------------------------------------------------------- node


class LoadVToonifyModel:
    """Loads the VToonify generator (T or D, auto-detected), the pSp style encoder and the face parser."""

    CATEGORY = "VToonify"
    FUNCTION = "load"
    RETURN_TYPES = ("VTOONIFY_MODEL", "FACE_PARSER")
    RETURN_NAMES = ("vtoonify_model", "face_parser")
    OUTPUT_TOOLTIPS = (
        "The VToonify generator with its exemplar style codes (VToonify-D) and the pSp style encoder.",
        "The BiSeNet face parser (for Face Parse).",
    )
    DESCRIPTION = ("Loads a VToonify checkpoint (VToonify-T or VToonify-D, detected from the file), the pSp style "
                   "encoder and the BiSeNet face parser from models/vtoonify. Networks are cached between runs.")

    @classmethod
    def INPUT_TYPES(cls):
        register_folder()
        ckpts = checkpoint_choices()
        return {
            "required": {
                "checkpoint": (ckpts, {
                    "default": _native(DEFAULT_CHECKPOINT),
                    "tooltip": "VToonify checkpoint in models/vtoonify: vtoonify_t_<style>/vtoonify.pt (VToonify-T) or "
                               "vtoonify_d_<style>/vtoonify_s_d.pt (VToonify-D); the kind is detected from the file."}),
                "style_encoder": (encoder_choices(), {
                    "default": ENCODER_FILE, "tooltip": "The pSp style encoder (encoder.pt)."}),
                "face_parser": (parser_choices(), {
                    "default": PARSER_FILE, "tooltip": "The BiSeNet face parser (faceparsing.pth)."}),
                "exstyle": (exstyle_choices(), {
                    "default": AUTO,
                    "tooltip": "Exemplar style codes of VToonify-D: 'auto' uses exstyle_code.npy (or .safetensors) "
                               "beside the checkpoint; 'none' loads none. Ignored by VToonify-T."}),
                "device": (list(DEVICES), {
                    "default": "auto", "tooltip": "Where the networks run; auto = ComfyUI's device."}),
                "precision": (list(PRECISIONS), {
                    "default": "auto", "tooltip": "auto = fp16 on CUDA GPUs that run it fast, else fp32."}),
                "download_missing": ("BOOLEAN", {
                    "default": False,
                    "tooltip": f"Download missing official files from Hugging Face ({HF_REPO}, folder models/) into "
                               f"models/vtoonify (needs the huggingface_hub package)."}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, checkpoint, style_encoder, face_parser, exstyle="auto", **_):
        """Run again when a chosen file is replaced on disk (ComfyUI otherwise reuses the last output)."""
        stamps = []
        fp = _comfy.folder_paths()
        for name in (checkpoint, style_encoder, face_parser, exstyle):
            try:
                full = fp.get_full_path(FOLDER, name) if name not in (AUTO, NONE) else None
                if name == AUTO:
                    ck = fp.get_full_path(FOLDER, checkpoint)
                    from ..vtoonify_core.pipeline import find_exstyle

                    full = find_exstyle(ck) if ck else None
                stamps.append(f"{name}:{os.stat(full).st_mtime_ns if full else '-'}")
            except (OSError, KeyError, TypeError):
                stamps.append(f"{name}:?")
        return "|".join(stamps)

    def load(self, checkpoint, style_encoder, face_parser, exstyle="auto", device="auto", precision="auto",
             download_missing=False):
        from ..vtoonify_core import load_face_parser, load_style_encoder, load_vtoonify
        from ..vtoonify_core.pipeline import VToonifyModel

        with _comfy.node_errors(DISPLAY_NAME):
            register_folder()
            dev = _comfy.resolve_device(device)
            dtype = _comfy.resolve_dtype(precision, dev)
            ckpt_path = resolve_file(checkpoint, "checkpoint", download_missing)
            enc_path = resolve_file(style_encoder, "style_encoder", download_missing)
            par_path = resolve_file(face_parser, "face_parser", download_missing)
            gen = _load("generator", "checkpoint", ckpt_path, dev, dtype, load_vtoonify)
            sources = {"checkpoint": str(ckpt_path), "encoder": str(enc_path), "parser": str(par_path)}
            styles = None
            if gen.backbone == "dualstylegan":
                ex_path = resolve_exstyle(exstyle, checkpoint, ckpt_path, download_missing)
                if ex_path is not None:
                    from ..vtoonify_core.weights import CheckpointError

                    try:
                        styles = cache.load_exstyles(ex_path)
                    except CheckpointError as exc:
                        exc.args = (f"exstyle: {exc}",)
                        raise
                    sources["exstyle"] = str(ex_path)
            elif exstyle not in (AUTO, NONE):
                logger.info("VToonify: %s is a VToonify-T checkpoint; exstyle %s is not used", checkpoint, exstyle)
            enc = _load("encoder", "style_encoder", enc_path, dev, dtype, load_style_encoder)
            par = _load("parser", "face_parser", par_path, dev, dtype, load_face_parser)
            model = VToonifyModel(gen, enc, par, styles, dev, dtype, sources)
            logger.info("VToonify: loaded %s", model.describe())
            return (model, model.face_parser)


NODE_CLASS_MAPPINGS = {"VToonifyLoadModel": LoadVToonifyModel}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyLoadModel": DISPLAY_NAME}
