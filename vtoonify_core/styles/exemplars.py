"""Exemplar (extrinsic) styles of VToonify-D from any image: pSp codes of aligned references,
optionally refined through the checkpoint's DualStyleGAN, averaged over a few shots.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError, NoFaceError
from ..models.bundle import VToonifyModel
from ..types import ALIGNED_SIZE, N_LAYERS, STRUCTURE_LAYERS, Progress, StyleCode
from .codes import encode_face, prepare_style_image
from .mixing import average_codes

logger = logging.getLogger("vtoonify")
#: Resolutions at which the refinement may stop the DualStyleGAN synthesis.
REFINE_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)
#: Pixel losses of the refinement.
LOSSES = ("l2", "l1")


# ----------------------------------------------------------------------------------------------
# exemplar codes from any image


@dataclass(frozen=True, eq=False)
class ExemplarCode:
    """An extrinsic (exemplar) style code made from reference images.

    Attributes:
        wplus: ``[1, 18, 512]`` float32 CPU: the exemplar code in W+ (what the official pipeline
            computes as ``zplus2wplus(exstyle[style_id])``).
        zplus: ``[1, 18, 512]`` z+ code it maps from (``None`` for an average of several).
        references: how many reference images it was made from.
        losses: ``(before, after)`` refinement losses (averaged over the references), empty
            without refinement.
    """

    wplus: Tensor
    zplus: Optional[Tensor] = None
    references: int = 1
    losses: tuple[float, ...] = ()


@dataclass(frozen=True, eq=False)
class Refinement:
    """Result of :func:`refine_exemplar`: the best code found and the loss at every step.

    ``losses[0]`` is the loss of the initial code, ``losses[i]`` after ``i`` steps; ``best`` is the
    index of the returned code (the lowest loss).
    """

    zplus: Tensor
    wplus: Tensor
    losses: tuple[float, ...]
    best: int


def _require_dual(model: VToonifyModel, what: str) -> None:
    if model.backbone != "dualstylegan":
        raise InputError("vtoonify_model", f"{what} needs a VToonify-D checkpoint (vtoonify_d_<style>/...): "
                                           f"VToonify-T has no extrinsic style path.")


def _aligned_tensor(aligned: Union[np.ndarray, Tensor]) -> Tensor:
    if isinstance(aligned, np.ndarray):
        if aligned.shape != (ALIGNED_SIZE, ALIGNED_SIZE, 3) or aligned.dtype != np.uint8:
            raise InputError("reference", f"the aligned face must be 256x256x3 uint8, got {aligned.shape} "
                                          f"{aligned.dtype}.")
        return torch.from_numpy(np.ascontiguousarray(aligned)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    if aligned.ndim != 4 or aligned.shape[:2] != (1, 3):
        raise InputError("reference", f"the aligned face must be [1, 3, H, W] in [-1, 1], got {tuple(aligned.shape)}.")
    return aligned.float()


def encode_zplus(model: VToonifyModel, aligned: Union[np.ndarray, Tensor]) -> Tensor:
    """pSp z+ code ``[1, 18, 512]`` (float32 CPU) of an FFHQ-aligned face (256x256 uint8 or tensor in [-1, 1])."""
    if model.encoder is None:
        raise InputError("vtoonify_model", "no pSp style encoder is loaded: pick encoder.pt in Load VToonify Model.")
    x = _aligned_tensor(aligned)
    with torch.inference_mode():
        return model.encoder(x.to(model.device, model.dtype)).float().cpu()


def _dual_generator(model: VToonifyModel):
    return model.generator.generator


def _grad_tensors(module: torch.nn.Module, device: torch.device) -> dict[str, Tensor]:
    """float32 copies of the parameters/buffers that autograd cannot use as they are (inference
    tensors, as ComfyUI creates them, or half precision), for :func:`torch.func.functional_call`."""
    out = {}
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        same_device = t.device.type == device.type and (device.index is None or t.device.index == device.index)
        if t.is_floating_point() and (t.is_inference() or t.dtype != torch.float32 or not same_device):
            out[name] = t.detach().to(device=device, dtype=torch.float32).clone()
    return out


def _downsample(x: Tensor, size: int) -> Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if x.shape[-1] > size:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def refine_exemplar(model: VToonifyModel, aligned: Union[np.ndarray, Tensor], zplus: Optional[Tensor] = None,
                    content_wplus: Optional[Tensor] = None, *, steps: int = 100, lr: float = 0.05,
                    size: int = 256, loss_size: Optional[int] = None, loss: str = "l2", latent_weight: float = 0.0,
                    interp_weights: Union[float, Sequence[float]] = 1.0, progress: Optional[Progress] = None,
                    check_interrupt: Optional[Callable[[], None]] = None) -> Refinement:
    """Optimise an exemplar z+ code so that DualStyleGAN reproduces the aligned reference.

    Minimises ``pixel_loss(down(DualStyleGAN.synthesize(content, mapping(z), interp_weights,
    max_size=size)), down(reference)) + latent_weight * mean((z - z_0)^2)`` over ``z`` with Adam,
    where ``content`` is the reference's own W+ (its pSp code: the intrinsic face) and ``down``
    averages to ``loss_size``. The checkpoint's DualStyleGAN (frozen) runs without noise on the
    model's device in float32; its weights are copied when autograd cannot use them (half
    precision, or inference tensors as ComfyUI makes them), the shared model is never modified.

    Args:
        model: a VToonify-D bundle (with the pSp encoder unless ``zplus`` and ``content_wplus`` are given).
        aligned: the FFHQ-aligned reference (256x256x3 uint8, or ``[1, 3, H, W]`` in [-1, 1]).
        zplus: initial z+ ``[1, 18, 512]`` (default: pSp of ``aligned``).
        content_wplus: intrinsic W+ ``[1, 18, 512]`` (default: ``mapping(pSp(aligned))``).
        steps: optimisation steps (0 only evaluates the loss).
        lr: Adam learning rate on z+.
        size: resolution where the synthesis stops (power of two, 16..1024; the full 1024 px
            forward is heavy on a CPU: 64-256 is a good trade-off there).
        loss_size: resolution of the loss (default ``min(size, 256)``).
        loss: ``'l2'`` (mean squared error) or ``'l1'``.
        latent_weight: weight of the pull towards the initial code (0 = none).
        interp_weights: DualStyleGAN's per-layer weights of the extrinsic path (1 = full style).
        progress: ``progress(step, steps)`` after each step.
        check_interrupt: called before each step; raise to stop.

    Returns:
        :class:`Refinement` with the lowest-loss code (z+ and W+, float32 CPU) and the loss history.

    Raises:
        InputError: VToonify-T model, bad sizes, steps or loss name.
    """
    _require_dual(model, "Refining an exemplar code")
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise InputError("refine_steps", f"must be a whole number >= 0, got {steps}.")
    if int(size) not in REFINE_SIZES:
        raise InputError("refine_resolution", f"must be one of {', '.join(map(str, REFINE_SIZES))}, got {size}.")
    loss_size = min(int(size), 256) if loss_size is None else int(loss_size)
    if loss_size < 4:
        raise InputError("loss_size", f"must be at least 4, got {loss_size}.")
    if loss not in LOSSES:
        raise InputError("loss", f"unknown loss {loss!r}; use {' or '.join(LOSSES)}.")
    if not math.isfinite(float(lr)) or float(lr) <= 0:
        raise InputError("learning_rate", f"must be > 0, got {lr}.")
    steps, size = int(steps), int(size)
    target = _aligned_tensor(aligned)
    if zplus is None or content_wplus is None:
        z_face = encode_zplus(model, aligned)
        zplus = z_face if zplus is None else zplus
        if content_wplus is None:
            with torch.inference_mode():
                content_wplus = model.generator.zplus2wplus(z_face.to(model.device, model.dtype)).float().cpu()
    dsg = _dual_generator(model)
    device = model.device
    pixel = F.mse_loss if loss == "l2" else F.l1_loss
    with torch.inference_mode(False), torch.enable_grad():
        tensors = _grad_tensors(dsg, device)
        tgt = _downsample(target.detach().clone().to(device), loss_size)
        content = content_wplus.detach().float().clone().to(device)
        z0 = zplus.detach().float().clone().to(device)
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=float(lr), betas=(0.9, 0.999))

        def objective() -> Tensor:
            img = torch.func.functional_call(dsg, tensors, (content, z), {
                "exstyle_space": "z+", "interp_weights": interp_weights, "max_size": size})
            value = pixel(_downsample(img.float(), loss_size), tgt)
            if latent_weight:
                value = value + float(latent_weight) * (z - z0).square().mean()
            return value

        losses: list[float] = []
        best, best_z, best_i = math.inf, z0.clone(), 0
        for step in range(steps + 1):
            if step < steps and check_interrupt is not None:
                check_interrupt()
            opt.zero_grad(set_to_none=True)
            value = objective()
            v = float(value.detach())
            if not math.isfinite(v):
                raise FloatingPointError(f"the refinement loss became {v} at step {step}: lower the learning rate.")
            losses.append(v)
            if v < best:
                best, best_z, best_i = v, z.detach().clone(), step
            if step == steps:
                break
            value.backward()
            opt.step()
            if progress is not None:
                progress(step + 1, steps)
        best_z = best_z.detach()
    with torch.inference_mode():
        w = model.generator.zplus2wplus(best_z.to(model.device, model.dtype)).float().cpu()
    return Refinement(best_z.float().cpu(), w, tuple(losses), best_i)


def synthesize_exemplar(model: VToonifyModel, content_wplus: Tensor, exemplar_wplus: Tensor, *, size: int = 256,
                        interp_weights: Union[float, Sequence[float]] = 1.0) -> Tensor:
    """DualStyleGAN image of an intrinsic code with an exemplar code (both W+ ``[1, 18, 512]``),
    stopped at ``size``: ``[1, 3, size, size]`` float32 CPU in [-1, 1] (a preview of the exemplar)."""
    _require_dual(model, "Rendering an exemplar")
    if int(size) not in REFINE_SIZES:
        raise InputError("refine_resolution", f"must be one of {', '.join(map(str, REFINE_SIZES))}, got {size}.")
    dsg = _dual_generator(model)
    with torch.inference_mode():
        img = dsg.synthesize(content_wplus.to(model.device), exemplar_wplus.to(model.device),
                             interp_weights=interp_weights, max_size=int(size))
        return img.float().clamp(-1.0, 1.0).cpu()


def exemplar_from_aligned(model: VToonifyModel, aligned: Union[np.ndarray, Tensor], *, refine_steps: int = 0,
                          lr: float = 0.05, size: int = 256, loss: str = "l2", latent_weight: float = 0.0,
                          progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None
                          ) -> tuple[ExemplarCode, Tensor]:
    """Exemplar code of one aligned reference: its pSp z+ as the extrinsic code, optionally refined.

    Returns:
        ``(exemplar, content_wplus)``: the :class:`ExemplarCode` and the reference's own W+
        (its intrinsic code, for previews).
    """
    _require_dual(model, "An exemplar style from an image")
    z = encode_zplus(model, aligned)
    with torch.inference_mode():
        content = model.generator.zplus2wplus(z.to(model.device, model.dtype)).float().cpu()
    if refine_steps:
        r = refine_exemplar(model, aligned, z, content, steps=refine_steps, lr=lr, size=size, loss=loss,
                            latent_weight=latent_weight, progress=progress, check_interrupt=check_interrupt)
        return ExemplarCode(r.wplus, r.zplus, 1, (r.losses[0], r.losses[r.best])), content
    return ExemplarCode(content.clone(), z, 1, ()), content


def exemplar_from_images(model: VToonifyModel, images: Sequence[np.ndarray], *, refine_steps: int = 0,
                         lr: float = 0.05, size: int = 256, loss: str = "l2", latent_weight: float = 0.0,
                         weights: Optional[Sequence[float]] = None, backend="dlib",
                         progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None
                         ) -> tuple[ExemplarCode, list[np.ndarray], list[Tensor]]:
    """Exemplar code from one or several reference portraits (uint8 RGB ``(H, W, 3)``).

    Each reference is detected, cropped and aligned as the official code aligns faces
    (:func:`~vtoonify_core.styles.prepare_style_image`), encoded, optionally refined
    (:func:`refine_exemplar`); several references give the (weighted) mean W+ (few-shot).

    Returns:
        ``(exemplar, aligned crops, intrinsic W+ of each reference)``.

    Raises:
        NoFaceError: a reference without a face (the message names which).
        InputError: VToonify-T model, no encoder, bad settings.
    """
    _require_dual(model, "An exemplar style from an image")
    if model.encoder is None:
        raise InputError("vtoonify_model", "no pSp style encoder is loaded: pick encoder.pt in Load VToonify Model.")
    if len(images) == 0:
        raise InputError("reference", "no reference image.")
    n = len(images)
    steps = max(1, int(refine_steps))
    codes, zs, aligned_all, contents, first_losses, last_losses = [], [], [], [], [], []
    for i, img in enumerate(images):
        if check_interrupt is not None:
            check_interrupt()
        try:
            aligned, _ = prepare_style_image(img, backend=backend)
        except NoFaceError as exc:
            raise NoFaceError(f"reference image {i + 1} of {n}: {exc}") from None
        prog = None if progress is None else (lambda d, t, i=i: progress(i * steps + d, n * steps))
        ex, content = exemplar_from_aligned(model, aligned, refine_steps=refine_steps, lr=lr, size=size, loss=loss,
                                            latent_weight=latent_weight, progress=prog,
                                            check_interrupt=check_interrupt)
        if progress is not None and not refine_steps:
            progress((i + 1) * steps, n * steps)
        codes.append(ex.wplus)
        zs.append(ex.zplus)
        aligned_all.append(aligned)
        contents.append(content)
        if ex.losses:
            first_losses.append(ex.losses[0])
            last_losses.append(ex.losses[-1])
    losses = (float(np.mean(first_losses)), float(np.mean(last_losses))) if first_losses else ()
    if n == 1:
        return ExemplarCode(codes[0], zs[0], 1, losses), aligned_all, contents
    return ExemplarCode(average_codes(codes, weights), None, n, losses), aligned_all, contents


def style_from_exemplar(model: VToonifyModel, exemplar: Union[ExemplarCode, Tensor],
                        face: Union[np.ndarray, Tensor, None] = None, color_transfer: bool = False,
                        name: str = "exemplar from an image") -> StyleCode:
    """A VToonify-D style code from an exemplar code, by the official rule.

    With ``color_transfer`` the code is the exemplar's W+; otherwise the face's W+ with layers 0-6
    (structure) from the exemplar. ``face`` is an aligned face (256x256 uint8, encoded with pSp)
    or its W+ ``[1, 18, 512]``.

    Raises:
        InputError: VToonify-T model, or no face without colour transfer.
    """
    _require_dual(model, "An exemplar style")
    ex = exemplar.wplus if isinstance(exemplar, ExemplarCode) else exemplar
    if ex.ndim != 3 or tuple(ex.shape) != (1, N_LAYERS, 512):
        raise InputError("exemplar", f"the exemplar W+ must be [1, {N_LAYERS}, 512], got {tuple(ex.shape)}.")
    ex = ex.detach().float().cpu()
    if color_transfer:
        return StyleCode(ex.clone(), model.backbone, None, name, True)
    if face is None:
        raise InputError("face", "a face is needed for the colours unless color_transfer is on: connect the face "
                                 "(a frame of the clip) or turn color_transfer on.")
    if isinstance(face, Tensor) and face.ndim == 3 and tuple(face.shape) == (1, N_LAYERS, 512):
        s_w = face.detach().float().cpu().clone()
    else:
        s_w = encode_face(model, face).clone()
    s_w[:, :STRUCTURE_LAYERS] = ex[:, :STRUCTURE_LAYERS]
    return StyleCode(s_w, model.backbone, None, name, False)
