"""Shared constants (one name each) and the two value types the pipeline passes around.

:class:`StyleCode` is a W+ style code and what made it; :class:`FaceParsing` holds BiSeNet
logits of a clip. Nothing here imports another module of the package.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch import Tensor

PathLike = Union[str, Path]
DeviceLike = Union[str, torch.device]
#: ``progress(done, total)``
Progress = Callable[[int, int], None]

#: Backbone names (``VToonify.backbone``) and how they are shown.
BACKBONE_NAMES = {"toonify": "VToonify-T", "dualstylegan": "VToonify-D"}
#: VToonify's output is this many times its input (crop or padded frame).
SCALE = 4
#: Height and width of VToonify's input must be multiples of this.
MULTIPLE = 8
#: Parsing logits are divided by this before entering VToonify (official weight 1/16).
PARSING_WEIGHT = 16.0
#: Number of W+ layers of the 1024 px StyleGAN2 behind VToonify.
N_LAYERS = 18
#: W+ layers taken from the exemplar for the structure (official ``s_w[:, :7] = exstyle[:, :7]``).
STRUCTURE_LAYERS = 7
#: Size of the FFHQ-aligned pSp input.
ALIGNED_SIZE = 256
#: Official crop padding around the eye centre, in rescaled pixels (the same on all four sides).
DEFAULT_FACE_PADDING = 200
#: How a clip is fed to VToonify: the official face crop, or the whole frame padded to multiples of 8.
CROP_MODES = ("face", "whole")
#: Extensions of still images (everything else is opened as a video).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

#: Number of classes of the BiSeNet face parser (CelebAMask-HQ).
N_CLASSES = 19
#: The 19 CelebAMask-HQ classes of the BiSeNet face parser, in channel order.
CLASS_NAMES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)
#: Classes grouped the way a user picks them (group name -> class indices).
CLASS_GROUPS = {
    "skin": (1,), "brows": (2, 3), "eyes": (4, 5), "eyeglasses": (6,), "ears": (7, 8), "earrings": (9,),
    "nose": (10,), "mouth": (11,), "lips": (12, 13), "neck": (14,), "necklace": (15,), "cloth": (16,),
    "hair": (17,), "hat": (18,), "background": (0,),
}
#: A colour per class (RGB 0..255) for the colour-coded parsing image.
CLASS_COLORS = (
    (0, 0, 0), (204, 153, 119), (120, 60, 20), (150, 80, 30), (40, 120, 255), (20, 80, 220), (250, 250, 90),
    (255, 120, 160), (230, 90, 140), (255, 215, 0), (255, 140, 0), (110, 0, 30), (235, 40, 60), (190, 20, 50),
    (60, 200, 120), (0, 220, 220), (130, 130, 220), (90, 50, 150), (160, 160, 160),
)


@dataclass(frozen=True, eq=False)
class StyleCode:
    """A W+ style code and what made it.

    Attributes:
        wplus: ``[1, 18, 512]`` float32 (CPU).
        backbone: ``'toonify'`` or ``'dualstylegan'``: the model family it is for.
        style_id, style_name: the exemplar style (VToonify-D), else ``None``.
        color_transfer: whether the exemplar's colours are used (VToonify-D).
    """

    wplus: Tensor
    backbone: str
    style_id: Optional[int] = None
    style_name: Optional[str] = None
    color_transfer: bool = False

    def describe(self) -> str:
        kind = BACKBONE_NAMES.get(self.backbone, self.backbone)
        if self.backbone != "dualstylegan":
            return f"{kind} style code (from the face)"
        colour = "exemplar colours" if self.color_transfer else "colours of the face"
        if self.style_id is None:  # an exemplar from an image, a mix or an average (styles)
            return f"{kind} style '{self.style_name}', {colour}"
        return f"{kind} exemplar style {self.style_id} ({self.style_name}), {colour}"


@dataclass(frozen=True, eq=False)
class FaceParsing:
    """BiSeNet logits of a clip, ``[T, 19, H, W]`` float32 (as ``parse_frames`` computes them).

    ``smoothed`` tells whether the maps went through temporal smoothing.
    """

    logits: Tensor
    smoothed: bool = False

    def __post_init__(self):
        if self.logits.ndim != 4 or self.logits.shape[1] != N_CLASSES:
            raise ValueError(f"face parsing logits must be [T, {N_CLASSES}, H, W], got {tuple(self.logits.shape)}")

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the maps."""
        return int(self.logits.shape[2]), int(self.logits.shape[3])

    def __len__(self) -> int:
        return int(self.logits.shape[0])

