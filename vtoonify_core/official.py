"""The official VToonify release: every checkpoint file, where it is hosted and what it supports.

Details: docs/design.md, ``vtoonify_core/official.py``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Optional

HF_REPO = "PKUWilliamYang/VToonify"
HF_FOLDER = "models"
HF_TREE_URL = f"https://huggingface.co/{HF_REPO}/tree/main/{HF_FOLDER}"
DRIVE_ALL_URL = "https://drive.google.com/drive/folders/1Nmbz9zBM78I1nRVokhHLuBKHleDmjDxv"

ENCODER_FILE = "encoder.pt"
PARSER_FILE = "faceparsing.pth"
EXSTYLE_FILE = "exstyle_code.npy"
#: The checkpoint the loader and the command line pick when none is named (on Hugging Face).
DEFAULT_CHECKPOINT = "vtoonify_d_cartoon/vtoonify_s_d.pt"
T_FILE = "vtoonify.pt"

D_STYLES = ("arcane", "caricature", "cartoon", "comic", "illustration", "pixar")
T_STYLES = ("arcane", "caricature", "cartoon", "comic", "pixar")

#: VToonify-D checkpoints on Hugging Face, by style (folder ``vtoonify_d_<style>``).
HUB_CHECKPOINTS: dict[str, tuple[str, ...]] = {
    "arcane": ("vtoonify_s_d.pt", "vtoonify_s000_d0.5.pt", "vtoonify_s077_d0.5.pt"),
    "caricature": ("vtoonify_s039_d0.5.pt", "vtoonify_s068_d0.5.pt"),
    "cartoon": ("vtoonify_s_d.pt", "vtoonify_s026_d0.5.pt", "vtoonify_s299_d0.5.pt"),
    "comic": ("vtoonify_s_d.pt",),
    "illustration": ("vtoonify_s004_d_c.pt", "vtoonify_s009_d_c.pt", "vtoonify_s043_d_c.pt",
                     "vtoonify_s054_d_c.pt", "vtoonify_s086_d_c.pt"),
    "pixar": ("vtoonify_s_d.pt", "vtoonify_s052_d0.5.pt"),
}

#: VToonify-D checkpoints only on Google Drive, by style.
DRIVE_CHECKPOINTS: dict[str, tuple[str, ...]] = {
    "caricature": ("vtoonify_s_d.pt",),
    "cartoon": ("vtoonify_s_d_c.pt",),
    "illustration": ("vtoonify_s_d.pt",),
}

#: The Google Drive folder of each official model folder (README, "Pre-trained Models").
DRIVE_FOLDERS: dict[str, str] = {
    "vtoonify_d_cartoon": "https://drive.google.com/drive/folders/1DuZfXt6b_xhTAQSN0D8m7N1np0Web0Ky",
    "vtoonify_d_caricature": "https://drive.google.com/drive/folders/12TzTQqwBedsYX3kE_420mdTbWl9lwv4Y",
    "vtoonify_d_arcane": "https://drive.google.com/drive/folders/1MpEqS26Q1ngTPeex_4MN9qOJxfXKH-k-",
    "vtoonify_d_comic": "https://drive.google.com/drive/folders/15mxb7DxTzEBrKtx5aJ_I5WGDjSWBmcUi",
    "vtoonify_d_pixar": "https://drive.google.com/drive/folders/1Hld7OeZqYBrg6r35IA_x4sNtt1abHUMU",
    "vtoonify_d_illustration": "https://drive.google.com/drive/folders/1LQGNMDEHM70nOhm3-xY228YpJNlPnf_s",
    "vtoonify_t_cartoon": "https://drive.google.com/drive/folders/1FFtTVgiDKZ_InnwUJLDuA1wfghZp41nX",
    "vtoonify_t_caricature": "https://drive.google.com/drive/folders/1ReRxttV-macgV3epC61qg4TQ3FGAhGqG",
    "vtoonify_t_arcane": "https://drive.google.com/drive/folders/1OXU95BOCCT0f6pGbwQ4yQ1EHb2LPd2yb",
    "vtoonify_t_comic": "https://drive.google.com/drive/folders/1KvawsOXzKgwDM3Z27sagO_KGE_Kc5GZS",
    "vtoonify_t_pixar": "https://drive.google.com/drive/folders/19N4ddcTXhXbTEayTbrFc533EktbhOXMz",
}

#: ``vtoonify_s<style>_d<degree>[_c]``: the stem of a VToonify-D checkpoint name.
_D_STEM = re.compile(r"vtoonify_s(?P<style>\d+)?_d(?P<degree>\d+(?:\.\d+)?)?(?P<colour>_c)?")
_FOLDER = re.compile(r"vtoonify_(?P<kind>[dt])_(?P<style>[a-z0-9]+)")
KIND_NAMES = {"d": "VToonify-D", "t": "VToonify-T"}


@dataclass(frozen=True)
class Variant:
    """What a VToonify checkpoint supports, read from its folder and file name.

    Attributes:
        name: path relative to ``models/vtoonify`` (``/``-separated).
        kind: ``'VToonify-D'`` (DualStyleGAN backbone) or ``'VToonify-T'`` (Toonify backbone).
        style: the style dataset from the folder name (``'cartoon'``, ...), or ``''`` when the
            folder does not follow the official ``vtoonify_<d|t>_<style>`` layout.
        style_id: the one exemplar style a fixed-style checkpoint was trained for (``_sNNN``);
            ``None``: any exemplar (``_s``), or VToonify-T (no exemplars).
        degree: the one style degree a fixed-degree checkpoint was trained for (``_dX``);
            ``None``: any degree in [0, 1] (``_d``), or VToonify-T (no degree).
        colour_transfer: trained for colour transfer (``_c``).
    """

    name: str
    kind: str
    style: str
    style_id: Optional[int] = None
    degree: Optional[float] = None
    colour_transfer: bool = False

    @property
    def folder(self) -> str:
        """The folder of the file (``''`` for a file at the top of ``models/vtoonify``)."""
        parent = PurePosixPath(self.name).parent.as_posix()
        return "" if parent == "." else parent

    def supports(self) -> str:
        """What the checkpoint supports, in words for the user, e.g. for a tooltip or a log line."""
        head = f"{self.kind} {self.style}".rstrip()
        if self.kind == KIND_NAMES["t"]:
            return f"{head}: no exemplar styles (the style code comes from a face), style_degree ignored"
        style = ("any exemplar style_id" if self.style_id is None
                 else f"only exemplar style {self.style_id} (use style_id {self.style_id})")
        degree = ("style_degree 0..1" if self.degree is None
                  else f"only style degree {self.degree:g} (set style_degree to {self.degree:g})")
        colour = "colour transfer" if self.colour_transfer else "no colour transfer (keep color_transfer off)"
        return f"{head}: {style}, {degree}, {colour}"

    def host(self) -> str:
        """Where the official file is: ``'huggingface'``, ``'google drive'``, or ``''`` for a file
        that is not part of the official release."""
        if self.name in HUB_NAMES:
            return "huggingface"
        return "google drive" if self.name in DRIVE_NAMES else ""

    def source(self) -> str:
        """Where to download the official file by hand (a folder page), or ``''``."""
        host = self.host()
        if host == "huggingface":
            return f"{HF_TREE_URL}/{self.folder}"
        return DRIVE_FOLDERS.get(self.folder, DRIVE_ALL_URL) if host else ""


def variant(name: str) -> Optional[Variant]:
    """The :class:`Variant` a checkpoint name stands for, or ``None`` if the name says nothing.

    Works for any file named in the official way, downloaded or converted (``.safetensors``)
    or trained by the user (``my_style/vtoonify_s012_d0.7.pt``): the kind comes from the
    folder (``vtoonify_t_*``: VToonify-T) or from a ``vtoonify_s..._d...`` file name
    (VToonify-D), the properties from the file name.
    """
    path = PurePosixPath(str(name).replace("\\", "/"))
    folder = _FOLDER.fullmatch(path.parent.name)
    style = folder["style"] if folder else ""
    if folder and folder["kind"] == "t" and path.stem == PurePosixPath(T_FILE).stem:
        return Variant(path.as_posix(), KIND_NAMES["t"], style)
    stem = _D_STEM.fullmatch(path.stem)
    if stem is None:
        return None
    if folder and folder["kind"] != "d":
        style = ""
    return Variant(
        path.as_posix(), KIND_NAMES["d"], style,
        style_id=None if stem["style"] is None else int(stem["style"]),
        degree=None if stem["degree"] is None else float(stem["degree"]),
        colour_transfer=stem["colour"] is not None,
    )


def _names(table: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(f"vtoonify_d_{style}/{file}" for style in D_STYLES for file in table.get(style, ()))


#: Every official checkpoint on Hugging Face.
HUB_NAMES: tuple[str, ...] = _names(HUB_CHECKPOINTS)
#: Every official checkpoint only on Google Drive.
DRIVE_NAMES: tuple[str, ...] = _names(DRIVE_CHECKPOINTS) + tuple(f"vtoonify_t_{s}/{T_FILE}" for s in T_STYLES)
#: Every official checkpoint, VToonify-D by style, then VToonify-T.
CHECKPOINTS: tuple[str, ...] = tuple(sorted(HUB_NAMES + DRIVE_NAMES,
                                            key=lambda n: (n.startswith("vtoonify_t_"), n)))
#: The exemplar style codes of each VToonify-D style (all on Hugging Face).
EXSTYLES: tuple[str, ...] = tuple(f"vtoonify_d_{s}/{EXSTYLE_FILE}" for s in D_STYLES)
#: Every official file that ``download_missing`` can fetch from Hugging Face.
DOWNLOADABLE: frozenset[str] = frozenset((ENCODER_FILE, PARSER_FILE) + HUB_NAMES + EXSTYLES)


def catalogue() -> str:
    """One line per official checkpoint: its name, what it supports and where it is hosted."""
    where = {"huggingface": "Hugging Face", "google drive": "Google Drive only"}
    lines = []
    for name in CHECKPOINTS:
        v = variant(name)
        lines.append(f"{name} - {v.supports()} [{where[v.host()]}]")
    return "\n".join(lines)
