"""Style codes from faces and exemplars: the official W+ rule (pSp on the FFHQ-aligned face,
the exemplar's structure layers for VToonify-D) and the checks a code must pass.
"""
from __future__ import annotations

import logging
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import FaceBackendUnavailableError, InputError, NoFaceError
from ..faces.align import align_face
from ..faces.base import STYLE_ADVICE, no_face_message
from ..faces.crop import official_crop
from ..faces.detect import detect_faces
from ..models.bundle import VToonifyModel
from ..types import ALIGNED_SIZE, BACKBONE_NAMES, DEFAULT_FACE_PADDING, STRUCTURE_LAYERS, StyleCode
from .schedules import StyleSchedule

logger = logging.getLogger("vtoonify")


def _check_style_id(model: VToonifyModel, style_id: int) -> int:
    if model.exstyles is None or model.n_styles == 0:
        raise InputError("style_id", "this VToonify-D model has no exemplar style codes: choose exstyle_code.npy "
                                     "(or 'auto' with the file beside the checkpoint) in Load VToonify Model.")
    n = model.n_styles
    if isinstance(style_id, bool) or not isinstance(style_id, (int, np.integer)) or not 0 <= int(style_id) < n:
        raise InputError("style_id", f"{style_id!r} is out of range: the checkpoint has {n} styles, use 0..{n - 1}.")
    return int(style_id)


def exemplar_wplus(model: VToonifyModel, style_id: int) -> Tensor:
    """W+ of exemplar ``style_id``: ``zplus2wplus(exstyle[style_id])``, ``[1, 18, 512]`` float32 CPU."""
    i = _check_style_id(model, style_id)
    z = model.exstyles.codes[i:i + 1].to(model.device, model.dtype)
    with torch.inference_mode():
        return model.generator.zplus2wplus(z).float().cpu()


def encode_face(model: VToonifyModel, aligned: Union[Tensor, np.ndarray]) -> Tensor:
    """pSp z+ of an FFHQ-aligned face mapped to W+: ``zplus2wplus(pSp(aligned))``, ``[1,18,512]`` float32 CPU.

    ``aligned`` is a ``(256, 256, 3)`` uint8 RGB array or a ``[1, 3, 256, 256]`` tensor in [-1, 1].
    """
    if model.encoder is None:
        raise InputError("vtoonify_model", "no pSp style encoder is loaded: pick encoder.pt in Load VToonify Model.")
    if isinstance(aligned, np.ndarray):
        if aligned.shape != (ALIGNED_SIZE, ALIGNED_SIZE, 3) or aligned.dtype != np.uint8:
            raise InputError("image", f"the aligned face must be 256x256x3 uint8, got {aligned.shape} {aligned.dtype}.")
        x = torch.from_numpy(np.ascontiguousarray(aligned)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    else:
        x = aligned
    with torch.inference_mode():
        z = model.encoder(x.to(model.device, model.dtype))
        return model.generator.zplus2wplus(z).float().cpu()


def extract_style(model: VToonifyModel, aligned: Union[Tensor, np.ndarray, None], style_id: int = 0,
                  color_transfer: bool = False) -> StyleCode:
    """The official W+ rule.

    ``s_w = zplus2wplus(pSp(aligned))``; for VToonify-D with exemplar ``e = zplus2wplus(exstyle[style_id])``:
    ``s_w = e`` with colour transfer, else ``s_w[:, :7] = e[:, :7]``. For VToonify-T ``style_id`` and
    ``color_transfer`` are ignored. ``aligned`` may be ``None`` only for D with colour transfer
    (the face does not enter the code then).
    """
    if model.backbone != "dualstylegan":
        if aligned is None:
            raise InputError("image", "a face is needed to make a VToonify-T style code.")
        return StyleCode(encode_face(model, aligned), model.backbone)
    sid = _check_style_id(model, style_id)
    name = model.exstyles.names[sid]
    ex = exemplar_wplus(model, sid)
    if color_transfer:
        return StyleCode(ex, model.backbone, sid, name, True)
    if aligned is None:
        raise InputError("image", "a face is needed unless color_transfer is on.")
    s_w = encode_face(model, aligned).clone()
    s_w[:, :STRUCTURE_LAYERS] = ex[:, :STRUCTURE_LAYERS]
    return StyleCode(s_w, model.backbone, sid, name, False)


def prepare_style_image(image: np.ndarray, *, backend="dlib", face_padding: int = DEFAULT_FACE_PADDING,
                        face=None) -> tuple[np.ndarray, object]:
    """Detect the face, crop it the official way (eyes 64 px apart) and FFHQ-align it for pSp.

    As the official pipeline: the frame is rescaled and cropped around the eyes
    (:func:`~vtoonify_core.faces.crop.official_crop`), landmarks are found again in the crop, and the
    crop is aligned to 256x256. If the face is not found again in the crop, the first landmarks
    mapped into the crop are used.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        face: the :class:`~vtoonify_core.faces.Face` of ``image`` to use (e.g. chosen by
            :func:`~vtoonify_core.faces.track_faces`); ``None``: the best-scoring face found.

    Returns:
        ``(aligned (256, 256, 3) uint8, face)`` with the face found in ``image``.

    Raises:
        NoFaceError: no face in the image.
    """
    if face is None:
        faces = detect_faces(image, backend=backend)
        if not faces:
            raise NoFaceError(no_face_message("the image", advice=STYLE_ADVICE))
        face = faces[0]
    pad = (int(face_padding),) * 4
    try:
        crop, geo = official_crop(image, face.landmarks, pad)
    except ValueError as exc:
        raise InputError("image", f"cannot crop the face: {exc}.") from None
    mapped = geo.to_crop(face.landmarks)
    again = detect_faces(crop, backend=backend)
    landmarks = mapped
    if again:
        centre = mapped[36:48].mean(axis=0)
        best = min(again, key=lambda f: float(np.hypot(*(f.landmarks[36:48].mean(axis=0) - centre))))
        eye_dist = float(np.hypot(*(mapped[42:48].mean(0) - mapped[36:42].mean(0))))
        if float(np.hypot(*(best.landmarks[36:48].mean(axis=0) - centre))) < eye_dist:
            landmarks = best.landmarks
    return align_face(crop, landmarks, ALIGNED_SIZE), face


def style_from_image(model: VToonifyModel, image: np.ndarray, style_id: int = 0, color_transfer: bool = False,
                     *, backend="dlib", face=None) -> tuple[StyleCode, np.ndarray]:
    """Face in ``image`` (uint8 RGB) -> (:class:`StyleCode`, aligned 256x256 uint8 crop).

    VToonify-D with ``color_transfer``: the code is the exemplar's alone (official
    ``s_w = exstyle``), so no face is required: the aligned face is still returned when one is
    found, else (no face, a face too close to the border, or no detector installed) a 256x256
    centre crop of ``image`` stands in for it. Arguments are checked before the (slow) detection
    and encoding. ``face``: the face of ``image`` to encode (default: the best-scoring one).

    Raises:
        NoFaceError: no face in ``image`` when the code needs one.
    """
    skip_face = model.backbone == "dualstylegan" and color_transfer
    if model.backbone == "dualstylegan":
        _check_style_id(model, style_id)
    if model.encoder is None and not skip_face:
        raise InputError("vtoonify_model", "no pSp style encoder is loaded: pick encoder.pt in Load VToonify Model.")
    if skip_face:
        return extract_style(model, None, style_id, True), _preview_face(image, backend)
    aligned, _ = prepare_style_image(image, backend=backend, face=face)
    return extract_style(model, aligned, style_id, color_transfer), aligned


def _preview_face(image: np.ndarray, backend) -> np.ndarray:
    """The aligned face of ``image`` when one is found, else its 256x256 centre crop (uint8 RGB)."""
    try:
        return prepare_style_image(image, backend=backend)[0]
    except (NoFaceError, InputError, FaceBackendUnavailableError) as exc:
        logger.info("VToonify: no aligned face for the preview (%s); colour transfer does not need one", exc)
    return _centre_square(image, ALIGNED_SIZE)


def _centre_square(image: np.ndarray, size: int) -> np.ndarray:
    """The largest centred square of an ``(H, W, 3)`` uint8 image, resized to ``size`` x ``size`` (area filter)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError("image", f"expected an (H, W, 3) image, got shape {image.shape}.")
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    x = torch.from_numpy(np.ascontiguousarray(image[top:top + s, left:left + s])).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="area") if s >= size else \
        F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def check_style(model: VToonifyModel, style: StyleCode, allow_schedule: bool = False) -> None:
    """Refuse a style code made for another kind of model, or of the wrong shape.

    With ``allow_schedule`` a :class:`~vtoonify_core.styles.StyleSchedule` (keyframed
    styles) is accepted too, when every keyframe style passes.
    """
    if isinstance(style, StyleSchedule):
        if not allow_schedule:
            raise InputError("style", "this is a keyframed style (Style Keyframes), which only Stylize Frames "
                                      "takes: connect a single style code here.")
        for key in style.keyframes:
            check_style(model, key.style)
        return
    if not isinstance(style, StyleCode):
        raise InputError("style", f"expected a VToonify style code, got {type(style).__name__}: connect "
                                  f"Extract Style Code.")
    if style.backbone != model.backbone:
        raise InputError("style", f"this style code was made with a {BACKBONE_NAMES.get(style.backbone, style.backbone)} "
                                  f"model but the model is {model.kind}: extract the style with the same "
                                  f"Load VToonify Model output that feeds this node.")
    n = getattr(model.generator, "n_latent", 18)
    if style.wplus.ndim != 3 or tuple(style.wplus.shape[1:]) != (n, 512) or style.wplus.shape[0] != 1:
        raise InputError("style", f"the W+ code must be [1, {n}, 512], got {tuple(style.wplus.shape)}.")
    if not bool(torch.isfinite(style.wplus).all()):
        raise InputError("style", "the W+ code contains NaN or infinite values.")
