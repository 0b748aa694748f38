"""Load VToonify Model: checkpoint (T or D), pSp encoder, BiSeNet parser and exemplar codes."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from ..vtoonify_core import official
from ..vtoonify_core.official import (
    D_STYLES,
    ENCODER_FILE,
    EXSTYLE_FILE,
    HF_FOLDER,
    HF_REPO,
    PARSER_FILE,
    T_STYLES,
)
from . import _comfy, cache, inputs

logger = logging.getLogger("vtoonify")

DISPLAY_NAME = "Load VToonify Model"
FOLDER = "vtoonify"
CHECKPOINT_EXTENSIONS = (".pt", ".pth", ".safetensors")
EXSTYLE_EXTENSIONS = (".npy", ".safetensors")
DEFAULT_CHECKPOINT = "vtoonify_d_cartoon/vtoonify_s_d.pt"
#: every checkpoint of the official release (see :mod:`vtoonify_core.official`: where each is hosted, what it supports)
OFFICIAL_CHECKPOINTS = official.CHECKPOINTS
OFFICIAL_EXSTYLES = official.EXSTYLES
AUTO, NONE = "auto", "none"
#: how the official checkpoint names read, for the tooltip and the messages
NAMING = ("VToonify-D names say what the checkpoint supports: _s = any exemplar style (style_id), _sNNN = only "
          "style NNN; _d = style_degree 0..1, _dX = only degree X; _c = colour transfer. "
          "vtoonify_t_<style>/vtoonify.pt is VToonify-T (no exemplars, no degree).")
DEVICES = ("auto", "cuda", "cpu", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


# ---------------------------------------------------------------------------------------------- model folder


def register_folder() -> None:
    """Register ``models/vtoonify`` with ComfyUI, also when ``extra_model_paths.yaml`` registered other
    ``vtoonify`` folders first (ours then comes after theirs; a folder already listed is left where it is)."""
    fp = _comfy.folder_paths()
    ours = os.path.normpath(os.path.join(fp.models_dir, FOLDER))
    try:
        known = [os.path.normpath(p) for p in fp.get_folder_paths(FOLDER)]
    except KeyError:
        known = []
    if ours not in known:
        fp.add_model_folder_path(FOLDER, ours)


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
    """Files in ``models/vtoonify`` plus every official checkpoint name (see :mod:`vtoonify_core.official`)."""
    names = set(_listed(CHECKPOINT_EXTENSIONS)) | {_native(n) for n in OFFICIAL_CHECKPOINTS}
    return sorted(names)


def encoder_choices() -> list[str]:
    return sorted(set(_listed(CHECKPOINT_EXTENSIONS)) | {ENCODER_FILE})


def parser_choices() -> list[str]:
    return sorted(set(_listed(CHECKPOINT_EXTENSIONS)) | {PARSER_FILE})


def exstyle_choices() -> list[str]:
    return [AUTO, NONE] + sorted(set(_listed(EXSTYLE_EXTENSIONS)) | {_native(n) for n in OFFICIAL_EXSTYLES})


def folder_hint() -> str:
    """The folder downloads go to and messages point at: the first registered ``vtoonify`` folder."""
    fp = _comfy.folder_paths()
    try:
        paths = fp.get_folder_paths(FOLDER)
    except KeyError:
        paths = []
    return paths[0] if paths else os.path.join(fp.models_dir, FOLDER)


def variant_note(name: str) -> str:
    """What checkpoint ``name`` supports and, for an official one, where it is hosted ('' if unknown)."""
    v = official.variant(name)
    if v is None:
        return ""
    where = {"huggingface": f"official, on Hugging Face: {v.source()}",
             "google drive": f"official, on Google Drive only: {v.source()}"}.get(v.host(), "")
    return v.supports() + (f" ({where})" if where else "")


def missing_message(name: str, input_name: str) -> str:
    """Where the file should be, the official layout, and where to get it."""
    root = folder_hint()
    note = variant_note(name)
    return (
        f"{input_name}: model file '{name}' not found in {root}.{' It is ' + note + '.' if note else ''} "
        f"Put the VToonify files there in the official layout:\n"
        f"  {FOLDER}/vtoonify_t_<style>/vtoonify.pt            VToonify-T (styles: {', '.join(T_STYLES)})\n"
        f"  {FOLDER}/vtoonify_d_<style>/vtoonify_s_d.pt        VToonify-D (styles: {', '.join(D_STYLES)}; "
        f"other variants beside it)\n"
        f"  {FOLDER}/vtoonify_d_<style>/{EXSTYLE_FILE}      its exemplar style codes\n"
        f"  {FOLDER}/{ENCODER_FILE}                             pSp style encoder\n"
        f"  {FOLDER}/{PARSER_FILE}                        BiSeNet face parser\n"
        f"{NAMING}\n"
        f"The encoder, the parser, the exemplar codes and most VToonify-D checkpoints are in the Hugging Face "
        f"repository {HF_REPO}, folder {HF_FOLDER}/ ({official.HF_TREE_URL}): set download_missing to true to "
        f"download missing ones there automatically. VToonify-T and a few VToonify-D checkpoints are on the "
        f"official Google Drive only ({official.DRIVE_ALL_URL}): download those by hand.")


# ---------------------------------------------------------------------------------------------- queue-time checks

#: the loader's file inputs, with their list of choices
FILE_INPUTS = {"checkpoint": checkpoint_choices, "style_encoder": encoder_choices, "face_parser": parser_choices,
               "exstyle": exstyle_choices}


def where_to_get(name: str) -> str:
    """Where an official file is published ('' for a file that is not part of the official release)."""
    rel = PurePosixPath(Path(name).as_posix())
    folder = rel.parent.as_posix() if rel.parent != PurePosixPath(".") else ""
    if rel.as_posix() in official.DOWNLOADABLE:
        url = f"{official.HF_TREE_URL}/{folder}" if folder else official.HF_TREE_URL
        return f"It is on Hugging Face ({HF_REPO}): set download_missing to true, or download it from {url}."
    if rel.as_posix() in official.DRIVE_NAMES:
        url = official.DRIVE_FOLDERS.get(folder, official.DRIVE_ALL_URL)
        return f"It is on the official Google Drive only: download {rel.name} by hand from {url}."
    return ""


def missing_file_line(name: str, input_name: str) -> str:
    """One line for a missing file: the file, the folder it goes in and where to get it."""
    rel = Path(name).as_posix()
    where = where_to_get(name) or "It is not a file of the official release: put your own file there or pick another."
    return (f"{input_name}: '{rel}' is not in models/{FOLDER}: save it as models/{FOLDER}/{rel} "
            f"(the folder {folder_hint()}). {where}")


def _known_kind(checkpoint: str) -> str:
    """``'VToonify-T'``/``'VToonify-D'`` when the checkpoint's name says it, else ''."""
    v = official.variant(Path(checkpoint).as_posix())
    return v.kind if v is not None else ""


def queue_check(checkpoint, style_encoder, face_parser, exstyle, download_missing) -> list[str]:
    """What :meth:`LoadVToonifyModel.VALIDATE_INPUTS` refuses, one line each ([] = nothing).

    * a value outside an input's list (ComfyUI's own list check is off for the inputs named in
      VALIDATE_INPUTS, so it is repeated here with ComfyUI's words);
    * a missing file when download_missing is off; with it on, a missing official file that is on
      Google Drive only (the download cannot fetch it); nothing when download_missing comes from
      another node.

    Inputs that come from another node (``None`` here) are checked when the node runs. Only the
    names and the folder are looked at (no file is read).
    """
    from ..vtoonify_core.models.bundle import find_exstyle

    register_folder()
    values = {"checkpoint": checkpoint, "style_encoder": style_encoder, "face_parser": face_parser,
              "exstyle": exstyle}
    problems = []
    for input_name, value in values.items():
        if value is not None and value not in FILE_INPUTS[input_name]():
            problems.append(f"Value not in list: {input_name}: {value!r} is neither a file of models/{FOLDER} nor an "
                            f"official file name.")
    if problems or download_missing is None:
        return problems
    fp = _comfy.folder_paths()

    def missing(name) -> bool:
        return name is not None and not fp.get_full_path(FOLDER, name)

    def refuse(name) -> bool:  # downloads fetch what is on Hugging Face, and try any unofficial name there
        return not download_missing or Path(name).as_posix() in official.DRIVE_NAMES

    for input_name in ("checkpoint", "style_encoder", "face_parser"):
        name = values[input_name]
        if missing(name) and refuse(name):
            problems.append(missing_file_line(name, input_name))
    if exstyle is None or exstyle == NONE or checkpoint is None:
        return problems
    kind = _known_kind(checkpoint)
    if exstyle != AUTO:
        if kind != official.KIND_NAMES["t"] and missing(exstyle) and refuse(exstyle):  # VToonify-T ignores it
            problems.append(missing_file_line(exstyle, "exstyle"))
    elif kind == official.KIND_NAMES["d"]:  # 'auto': the codes beside a VToonify-D checkpoint
        full = fp.get_full_path(FOLDER, checkpoint)
        beside = PurePosixPath(Path(checkpoint).as_posix()).parent.joinpath(EXSTYLE_FILE).as_posix()
        if (full is None or find_exstyle(full) is None) and (not download_missing or beside not in OFFICIAL_EXSTYLES):
            problems.append(missing_file_line(beside, "exstyle (auto: the codes beside the checkpoint)"))
    return problems


# ---------------------------------------------------------------------------------------------- files


def download(name: str, input_name: str) -> Path:
    """Fetch ``models/<name>`` of the official Hugging Face repository into the vtoonify folder.

    An official checkpoint that is on Google Drive only is refused at once (with its folder
    address), without asking the hub; other names are asked for on the hub.
    """
    rel = PurePosixPath(Path(name).as_posix())
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"{input_name}: cannot download {name!r}: not a file name inside the vtoonify folder.")
    v = official.variant(rel.as_posix())
    if v is not None and v.host() == "google drive":
        target = Path(folder_hint()).joinpath(*rel.parts)
        raise FileNotFoundError(
            f"{input_name}: could not download {HF_FOLDER}/{rel}: the official release has it on Google Drive only, "
            f"not on Hugging Face ({HF_REPO}). Download {rel.name} by hand from {v.source()} and save it as "
            f"{target}; or pick a checkpoint that is on Hugging Face (the node's description lists them).")
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
    """The exemplar codes file of a VToonify-D checkpoint: the one chosen, the one beside it ('auto'), or None."""
    from ..vtoonify_core.models.bundle import find_exstyle

    if choice == NONE:
        return None
    if choice != AUTO:
        return resolve_file(choice, "exstyle", download_missing)
    beside = find_exstyle(checkpoint_path)
    if beside is not None:
        return beside
    beside_name = Path(checkpoint_name).parent.as_posix() + "/" + EXSTYLE_FILE
    if download_missing and beside_name in OFFICIAL_EXSTYLES:
        return download(_native(beside_name), "exstyle")
    raise FileNotFoundError(
        f"exstyle: VToonify-D needs its exemplar style codes: put {EXSTYLE_FILE} beside the checkpoint "
        f"({checkpoint_path.parent}), or pick a file in exstyle.\n" + missing_message(beside_name, "exstyle"))


def _load(part: str, input_name: str, path: Path, device, dtype, loader):
    """A cached network and its ComfyUI patcher; a checkpoint error names the node input it came from."""
    from ..vtoonify_core.errors import CheckpointError

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
    RETURN_TYPES = (inputs.MODEL, inputs.FACE_PARSER)
    RETURN_NAMES = ("vtoonify_model", "face_parser")
    OUTPUT_TOOLTIPS = (
        "The VToonify generator with its exemplar style codes (VToonify-D) and the pSp style encoder.",
        "The BiSeNet face parser (for Face Parse).",
    )
    DESCRIPTION = ("Loads a VToonify checkpoint (VToonify-T or VToonify-D, detected from the file), the pSp style "
                   "encoder and the BiSeNet face parser from models/vtoonify. Networks are cached between runs.\n\n"
                   + NAMING + "\n\nThe official checkpoints:\n" + official.catalogue())

    @classmethod
    def INPUT_TYPES(cls):
        register_folder()
        ckpts = checkpoint_choices()
        return {
            "required": {
                "checkpoint": (ckpts, {
                    "default": _native(DEFAULT_CHECKPOINT),
                    "tooltip": "VToonify checkpoint in models/vtoonify: vtoonify_t_<style>/vtoonify.pt (VToonify-T) or "
                               "vtoonify_d_<style>/vtoonify_s*_d*.pt (VToonify-D); the kind is detected from the file. "
                               + NAMING + " Every official one, what it supports and where it is hosted: see the "
                               "node's description."}),
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
                               f"models/vtoonify (needs the huggingface_hub package). VToonify-T and the few "
                               f"VToonify-D checkpoints on Google Drive only are not downloaded: the error says "
                               f"where to get them by hand."}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint=None, style_encoder=None, face_parser=None, exstyle=AUTO,
                        download_missing=False):
        """Refuse missing model files when the prompt is queued (ComfyUI's "errors found" dialog),
        naming each file, the folder it goes in and where to get it (see :func:`queue_check`).

        ComfyUI skips its own list check for the inputs named here (and only for them):
        :func:`queue_check` does it again; device and precision keep ComfyUI's check. ComfyUI reports
        a refusal once for each input named here ("<node> failed custom validation: <input> -
        <message>"), so the message names the input each line is about."""
        download = None if download_missing is None else bool(download_missing)
        problems = queue_check(checkpoint, style_encoder, face_parser, exstyle, download)
        return True if not problems else "\n".join(problems)

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
                    from ..vtoonify_core.models.bundle import find_exstyle

                    full = find_exstyle(ck) if ck else None
                stamps.append(f"{name}:{os.stat(full).st_mtime_ns if full else '-'}")
            except (OSError, KeyError, TypeError):
                stamps.append(f"{name}:?")
        return "|".join(stamps)

    def load(self, checkpoint, style_encoder, face_parser, exstyle="auto", device="auto", precision="auto",
             download_missing=False):
        from ..vtoonify_core import load_face_parser, load_style_encoder, load_vtoonify
        from .bundle import ComfyVToonifyModel

        with _comfy.node_errors(DISPLAY_NAME):
            register_folder()
            dev = _comfy.resolve_device(device)
            dtype = _comfy.resolve_dtype(precision, dev)
            ckpt_path = resolve_file(checkpoint, "checkpoint", download_missing)
            enc_path = resolve_file(style_encoder, "style_encoder", download_missing)
            par_path = resolve_file(face_parser, "face_parser", download_missing)
            gen, gen_patcher = _load("generator", "checkpoint", ckpt_path, dev, dtype, load_vtoonify)
            sources = {"checkpoint": str(ckpt_path), "encoder": str(enc_path), "parser": str(par_path)}
            styles = None
            if gen.backbone == "dualstylegan":
                ex_path = resolve_exstyle(exstyle, checkpoint, ckpt_path, download_missing)
                if ex_path is not None:
                    from ..vtoonify_core.errors import CheckpointError

                    try:
                        styles = cache.load_exstyles(ex_path)
                    except CheckpointError as exc:
                        exc.args = (f"exstyle: {exc}",)
                        raise
                    sources["exstyle"] = str(ex_path)
            elif exstyle not in (AUTO, NONE):
                logger.info("VToonify: %s is a VToonify-T checkpoint; exstyle %s is not used", checkpoint, exstyle)
            enc, enc_patcher = _load("encoder", "style_encoder", enc_path, dev, dtype, load_style_encoder)
            par, par_patcher = _load("parser", "face_parser", par_path, dev, dtype, load_face_parser)
            model = ComfyVToonifyModel(gen, enc, par, styles, dev, dtype, sources,
                                       patchers={"generator": gen_patcher, "encoder": enc_patcher,
                                                 "parser": par_patcher})
            note = variant_note(checkpoint)
            logger.info("VToonify: loaded %s%s", model.describe(), f" ({note})" if note else "")
            return (model, model.face_parser)


NODE_CLASS_MAPPINGS = {"VToonifyLoadModel": LoadVToonifyModel}
NODE_DISPLAY_NAME_MAPPINGS = {"VToonifyLoadModel": DISPLAY_NAME}
