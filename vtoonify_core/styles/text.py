"""Text-driven styles (StyleCLIP latent optimisation, as in CPTR): a style code is moved so that the
face its backbone synthesises matches a sentence under CLIP, while it stays near the start code.

VToonify-D: the exemplar (extrinsic) code through DualStyleGAN with the face's content code fixed;
VToonify-T: the W+ code through the Toonify StyleGAN. Only layers the VToonify generator reads move.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_code
from ..clipmodels.loaders import check_embeddings
from ..errors import InputError
from ..models.bundle import VToonifyModel
from ..models.dualstylegan import stylegan_synthesis
from ..types import BACKBONE_NAMES, N_LAYERS, Progress, StyleCode
from .exemplars import REFINE_SIZES, _grad_tensors
from .mixing import resolve_layers

logger = logging.getLogger("vtoonify")

#: W+ layers each backbone's VToonify generator reads: VToonify-D its ModRes blocks (1-6) and
#: decoder (7-17); VToonify-T the decoder only (the frame gives the structure).
READ_LAYERS = {"dualstylegan": tuple(range(1, N_LAYERS)), "toonify": tuple(range(7, N_LAYERS))}
#: StyleCLIP's defaults (latent optimisation): Adam lr 0.1, lambda_L2 0.008 on the summed squares.
DEFAULT_STEPS, DEFAULT_LR, DEFAULT_L2 = 100, 0.1, 0.008
#: Softening of the directional loss where the image has not moved yet (unit-sphere distance).
DIRECTION_EPS = 1e-3


@dataclass(frozen=True, eq=False)
class TextEdit:
    """Result of :func:`optimise_style_by_text`.

    Attributes:
        style: the edited code (start + ``strength`` x the best change found).
        start: the code it started from.
        layers: the W+ layers that were optimised.
        losses: total loss (CLIP + L2) at every evaluated step; ``losses[0]`` is the start.
        clip_losses: the CLIP part of ``losses``.
        identity: dlib descriptor distance to the start face at every step (empty without the term).
        best: index of the step whose code is returned (lowest loss + identity penalty).
        interrupted: stopped early by ``check_interrupt``; the best code so far is returned.
    """

    style: StyleCode
    start: StyleCode
    layers: tuple[int, ...]
    losses: tuple[float, ...]
    clip_losses: tuple[float, ...]
    identity: tuple[float, ...]
    best: int
    interrupted: bool = False

    @property
    def steps(self) -> int:
        """Optimisation steps taken."""
        return len(self.losses) - 1


class _Toonify(nn.Module):
    """The Toonify StyleGAN2 as a module whose forward is the synthesis (for ``functional_call``)."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.g = generator

    def forward(self, wplus: Tensor, max_size: int) -> Tensor:
        return stylegan_synthesis(self.g, wplus, max_size=max_size)


def _synthesis(model: VToonifyModel) -> nn.Module:
    return model.generator.generator if model.backbone == "dualstylegan" else _Toonify(model.generator.generator)


def reached_layers(size: int) -> int:
    """Last W+ layer the synthesis reads when it stops at ``size`` px (32: 7, 256: 13, 1024: 17):
    finer layers cannot change that image, so they keep their start values."""
    return min(N_LAYERS - 1, 2 * int(math.log2(int(size))) - 3)


def _check_size(size: int) -> int:
    if isinstance(size, bool) or int(size) != size or int(size) not in REFINE_SIZES:
        raise InputError("resolution", f"must be one of {', '.join(map(str, REFINE_SIZES))}, got {size}.")
    return int(size)


def _check_number(value: float, name: str, low: float = 0.0, strict: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(name, f"must be a number, got {value!r}.") from None
    if not math.isfinite(v) or v < low or (strict and v == low):
        raise InputError(name, f"must be a finite number {'>' if strict else '>='} {low:g}, got {value!r}.")
    return v


def _content(model: VToonifyModel, style: StyleCode, content: Optional[Tensor]) -> Tensor:
    if content is None:
        return style.wplus.detach().float()
    if content.ndim != 3 or tuple(content.shape) != (1, N_LAYERS, 512) or not bool(torch.isfinite(content).all()):
        raise InputError("face", f"the content code must be a finite W+ [1, {N_LAYERS}, 512], got "
                                 f"{tuple(content.shape)}.")
    return content.detach().float()


def render_style(model: VToonifyModel, style: StyleCode, *, size: int = 256,
                 content: Optional[Tensor] = None) -> Tensor:
    """The face a style code makes with the model's backbone at ``size``: ``[1, 3, S, S]`` float32
    CPU in [-1, 1]. VToonify-D: DualStyleGAN of ``content`` (default: the code itself) with the
    code as the exemplar; VToonify-T: the Toonify StyleGAN2 of the code. No noise."""
    check_code(style, "vtoonify_style")
    size = _check_size(size)
    net = _synthesis(model)
    w = style.wplus.detach().float().to(model.device)
    with torch.inference_mode():
        if model.backbone == "dualstylegan":
            img = net(_content(model, style, content).to(model.device), w, interp_weights=1.0, max_size=size)
        else:
            img = net(w, size)
    return img.float().clamp(-1.0, 1.0).cpu()


def _crops(gen: torch.Generator, n: int) -> list[tuple[float, float, float, bool]]:
    """``n`` random views (top, left, side as fractions; horizontal flip) drawn from ``gen``."""
    out = []
    for _ in range(n):
        side = 0.8 + 0.2 * float(torch.rand((), generator=gen))
        top, left = (float(v) * (1.0 - side) for v in torch.rand(2, generator=gen))
        out.append((top, left, side, bool(torch.rand((), generator=gen) < 0.5)))
    return out


def _views(x: Tensor, crops: Sequence[tuple[float, float, float, bool]]) -> Tensor:
    if not crops:
        return x
    s = x.shape[-1]
    out = []
    for top, left, side, flip in crops:
        n = max(2, int(round(side * s)))
        y0, x0 = int(round(top * s)), int(round(left * s))
        v = x[..., y0:y0 + n, x0:x0 + n]
        v = F.interpolate(v, size=(s, s), mode="bilinear", align_corners=False) if n != s else v
        out.append(v.flip(-1) if flip else v)
    return torch.cat(out)


def _check_clip(clip) -> None:
    for name in ("encode_image", "encode_text"):
        if not callable(getattr(clip, name, None)):
            raise InputError("clip", f"a CLIP model with encode_image and encode_text is needed (both towers); "
                                     f"got {type(clip).__name__} without {name}.")


def _text_target(clip, text: str, source_text: Optional[str], image: Tensor) -> Tensor:
    """Unit target direction: the text embedding, or the change from ``source_text`` to ``text``."""
    with torch.no_grad():
        texts = [text] if source_text is None else [text, source_text]
        e_txt = clip.encode_text(texts).float()
        check_embeddings(image, e_txt, "clip")
        t = F.normalize(e_txt, dim=-1)
        if source_text is None:
            return t[0]
        d = t[0] - t[1]
        if float(d.norm()) < 1e-6:
            raise InputError("source_text", "the text and the source text give the same CLIP embedding: describe "
                                            "the change (e.g. 'a face' -> 'a grumpy old cartoon').")
        return d / d.norm()


def optimise_style_by_text(
        model: VToonifyModel, style: StyleCode, text: str, clip, *, steps: int = DEFAULT_STEPS,
        lr: float = DEFAULT_LR, l2_weight: float = DEFAULT_L2, layers: Union[str, Sequence[int]] = "all",
        source_text: Optional[str] = None, seed: int = 0, size: int = 256, strength: float = 1.0,
        augmentations: int = 0, identity_weight: float = 0.0, content: Optional[Tensor] = None,
        progress: Optional[Progress] = None, check_interrupt: Optional[Callable[[], None]] = None) -> TextEdit:
    """StyleCLIP latent optimisation of a style code: ``L(w) = L_CLIP(w) + l2_weight * ||w - w_s||^2``.

    ``L_CLIP`` is ``1 - cos(E_I(G(w)), E_T(text))`` on unit embeddings, or with ``source_text`` the
    directional form ``1 - cos(E_I(G(w)) - E_I(G(w_s)), E_T(text) - E_T(source_text))``. ``G`` is
    the backbone's synthesis at ``size`` (see :func:`render_style`), frozen, run in float32 on the
    model's device; the images reach CLIP in [0, 1] (``(G + 1) / 2``). Adam moves only ``layers``
    (those the VToonify generator reads: 1-17 for VToonify-D, 7-17 for VToonify-T) that the
    synthesis at ``size`` reaches (:func:`reached_layers`; 256 px: up to 13).

    The identity term (``identity_weight`` > 0) is dlib's 128-D face descriptor distance to the start
    face (:mod:`.identity`). dlib is not differentiable, so it does not steer the steps: it is added to
    the loss of each visited code when the best one is chosen (the person stays recognisable in the
    code returned, not along the way).

    Args:
        model: VToonify-T or -D bundle; ``style`` must be made for its backbone.
        text: what the face should look like ("a cartoon with big eyes").
        clip: any object with ``encode_image`` / ``encode_text`` (see :mod:`~vtoonify_core.clipmodels`).
        steps, lr, l2_weight: Adam steps, learning rate, weight of the summed squared change.
        layers: ``'all'``, ``'structure'`` (0-6), ``'colour'`` (7-17), ``'3-9'`` or indices.
        source_text: switch to the directional loss (what the start face is, "a face").
        seed: draws the random views when ``augmentations`` > 0 (same seed, same result).
        size: synthesis resolution (power of two, 8..1024; 256 as in StyleCLIP's CLIP input).
        strength: the returned code is ``start + strength * (best - start)``.
        augmentations: random crops/flips per step, each scored by CLIP (0: the whole image only).
        identity_weight: weight of the dlib identity distance when choosing the best step.
        content: VToonify-D content (face) W+ ``[1, 18, 512]``; default the start code itself.
        progress: ``progress(step, steps)`` after each step.
        check_interrupt: called before each step; if it raises (anything but ``KeyboardInterrupt`` /
            ``SystemExit``), the steps stop and the best code so far is returned.

    Raises:
        InputError: empty text, a code of another backbone or non-finite, bad numbers, layers that
            the generator does not read, a loss that becomes non-finite.
        CheckpointError: CLIP towers whose embeddings differ in size or are not finite.
    """
    check_code(style, "vtoonify_style")
    if style.backbone != model.backbone:
        raise InputError("vtoonify_style", f"the code was made for {BACKBONE_NAMES.get(style.backbone, style.backbone)}"
                                           f" but the model is {model.kind}: extract it with this model.")
    if not isinstance(text, str) or not text.strip():
        raise InputError("text", "is empty: write what the style should look like, e.g. 'a cartoon with big eyes'.")
    text = text.strip()
    source_text = source_text.strip() if isinstance(source_text, str) and source_text.strip() else None
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise InputError("steps", f"must be a whole number >= 0, got {steps}.")
    steps, size = int(steps), _check_size(size)
    lr = _check_number(lr, "learning_rate", strict=True)
    l2_weight = _check_number(l2_weight, "l2_weight")
    identity_weight = _check_number(identity_weight, "identity_weight")
    strength = _check_number(strength, "strength")
    augmentations = int(_check_number(augmentations, "augmentations"))
    _check_clip(clip)
    read = READ_LAYERS[model.backbone]
    idx = [i for i in resolve_layers(layers) if i in read]
    if not idx:
        raise InputError("layers", f"{model.kind} reads W+ layers {read[0]}-{read[-1]} only; {layers!r} selects none "
                                   f"of them.")
    reached = reached_layers(size)
    if not [i for i in idx if i <= reached]:
        raise InputError("resolution", f"the synthesis stopped at {size} px reaches W+ layers 0-{reached} only, and "
                                       f"{layers!r} selects layers {idx[0]}-{idx[-1]}: raise the resolution.")
    idx = [i for i in idx if i <= reached]
    device = model.device
    net = _synthesis(model)
    ident = None
    if identity_weight > 0:
        from .identity import shared_identity

        ident = shared_identity()
    dual = model.backbone == "dualstylegan"
    with torch.inference_mode(False), torch.enable_grad():
        tensors = {k: v.detach() for k, v in list(net.named_parameters()) + list(net.named_buffers())}
        tensors.update(_grad_tensors(net, device))
        w0 = style.wplus.detach().float().clone().to(device)
        base = _content(model, style, content).clone().to(device)
        index = torch.tensor(idx, device=device)
        delta = torch.zeros(1, len(idx), 512, device=device, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=lr)
        gen = torch.Generator().manual_seed(int(seed))

        def synth(w: Tensor) -> Tensor:
            args = (base, w) if dual else (w, size)
            kwargs = {"interp_weights": 1.0, "max_size": size} if dual else {}
            return (torch.func.functional_call(net, tensors, args, kwargs).float() + 1.0) * 0.5

        with torch.no_grad():
            img0 = synth(w0)
            e0_full = clip.encode_image(img0).float()
        target = _text_target(clip, text, source_text, e0_full)
        start_id = ident.embed(img0) if ident is not None else None

        losses: list[float] = []
        clip_losses: list[float] = []
        distances: list[float] = []
        best, best_delta, best_i, interrupted = math.inf, delta.detach().clone(), 0, False
        for step in range(steps + 1):
            opt.zero_grad(set_to_none=True)
            w = w0.index_add(1, index, delta)
            img = synth(w)
            crops = _crops(gen, augmentations)
            e = F.normalize(clip.encode_image(_views(img, crops)).float(), dim=-1)
            if source_text is None:
                l_clip = (1.0 - e @ target).mean()
            else:
                with torch.no_grad():
                    e0 = F.normalize(clip.encode_image(_views(img0, crops)).float(), dim=-1)
                d = e - e0
                l_clip = (1.0 - (d @ target) / torch.sqrt(d.square().sum(-1) + DIRECTION_EPS ** 2)).mean()
            l2 = delta.square().sum()
            value = l_clip + l2_weight * l2
            v = float(value.detach())
            if not math.isfinite(v):
                raise InputError("learning_rate", f"the loss became {v} at step {step} (the synthesised face or its "
                                                  f"CLIP embedding went non-finite): lower the learning rate.")
            losses.append(v)
            clip_losses.append(float(l_clip.detach()))
            score = v
            if ident is not None:
                distances.append(ident.distance(ident.embed(img.detach()), start_id))
                score += identity_weight * distances[-1]
            if score < best:
                best, best_delta, best_i = score, delta.detach().clone(), step
            if step == steps:
                break
            if check_interrupt is not None:
                try:
                    check_interrupt()
                except (KeyboardInterrupt, SystemExit, GeneratorExit):
                    raise
                except BaseException as exc:  # noqa: BLE001 - the host's own type (ComfyUI's is a BaseException)
                    logger.info("VToonify: text edit stopped after %d of %d steps (%s)", step, steps,
                                type(exc).__name__)
                    interrupted = True
                    break
            value.backward()
            opt.step()
            if progress is not None:
                progress(step + 1, steps)
        w_out = w0.index_add(1, index, strength * best_delta).detach().cpu()
    name = style.style_name or (f"exemplar {style.style_id}" if style.style_id is not None else "face")
    edited = StyleCode(w_out, style.backbone, None, f"{name} + text '{text}'", style.color_transfer)
    return TextEdit(edited, style, tuple(idx), tuple(losses), tuple(clip_losses), tuple(distances), best_i,
                    interrupted)


def edit_style_by_text(model: VToonifyModel, style: StyleCode, text: str, clip, *, steps: int = DEFAULT_STEPS,
                       lr: float = DEFAULT_LR, l2_weight: float = DEFAULT_L2, layers: Union[str, Sequence[int]] = "all",
                       source_text: Optional[str] = None, seed: int = 0, progress: Optional[Progress] = None,
                       check_interrupt: Optional[Callable[[], None]] = None, **options) -> StyleCode:
    """The style code edited by a sentence: :func:`optimise_style_by_text`'s code (``options``: its
    ``size``, ``strength``, ``augmentations``, ``identity_weight``, ``content``)."""
    return optimise_style_by_text(model, style, text, clip, steps=steps, lr=lr, l2_weight=l2_weight, layers=layers,
                                  source_text=source_text, seed=seed, progress=progress,
                                  check_interrupt=check_interrupt, **options).style
