"""Distillation of a teacher (VToonify, or any ``[B,3,H,W] -> [B,3,4H,4W]`` callable) into a
:class:`Student` on one clip: Stage I (``G``: L1 + multi-scale gradient, optional VGG), then,
with ``G`` frozen, Stage II (the refiner: L1 + the warp loss Eq. 2 + the temporal loss Eq. 3)."""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..pipeline.parsing import parse
from ..types import SCALE, DeviceLike, PathLike, Progress
from .data import CACHE_MEMORY, Motion, TeacherCache, augment_pair, compute_motion, random_box, run_teacher
from .losses import background_mask, maybe_vgg, reconstruction_loss, warp_loss
from .model import Student, check_student_frames
from .network import CONTEXT, StudentConfig
from .teacher import teacher_parser

logger = logging.getLogger("vtoonify")

#: ``on_log(step, logs)``: logs has ``stage`` (1 or 2), ``loss`` and the terms of the stage
OnLog = Callable[[int, dict], None]


def _check(teacher, frames: Tensor, steps: int, batch_size: int, refiner: bool, crop_size: int) -> None:
    if not callable(teacher):
        raise InputError("teacher", f"expected a callable frames -> stylized frames, got {type(teacher).__name__}.")
    check_student_frames(frames, "frames")
    for name, value, low in (("steps", steps, 1), ("batch_size", batch_size, 1), ("crop_size", crop_size, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(name, f"must be an integer of at least {low}, got {value!r}.")
    if crop_size % 8:
        raise InputError("crop_size", f"must be a multiple of 8, got {crop_size}.")
    if refiner and frames.shape[0] < CONTEXT + 1:
        raise InputError("frames", f"the refiner learns from {CONTEXT + 1} consecutive frames or more (frame t and "
                                   f"its {CONTEXT} predecessors), got {frames.shape[0]}: give more frames of the clip, "
                                   f"or train without the refiner (refiner=False).")


#: the learning rate rises linearly over this many first steps of a stage (at most a tenth of them)
WARMUP_STEPS = 100
#: gradients are scaled down to this norm at most (a rare bad batch cannot throw training off)
MAX_GRAD_NORM = 1.0


def _lr(step: int, total: int, lr: float) -> float:
    """A linear warm-up over the first ``min(WARMUP_STEPS, total / 10)`` steps, then a cosine decay
    from ``lr`` to ``lr / 20`` over ``total`` steps."""
    warm = max(1, min(WARMUP_STEPS, total // 10))
    cosine = 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    return lr * cosine * min(1.0, (step + 1) / warm)


def train_student(teacher: Callable[[Tensor], Tensor], frames: Tensor, *, steps: int, seed: int = 0,
                  device: DeviceLike = "cpu", batch_size: int = 4, progress: Optional[Progress] = None,
                  check_interrupt: Optional[Callable[[], None]] = None, refiner: bool = True,
                  config: Optional[StudentConfig] = None, lr: float = 1e-3, crop_size: int = 96,
                  augment: float = 1.0, refiner_fraction: float = 0.25, vgg: Optional[PathLike] = None,
                  vgg_weight: float = 0.05, parser=None, flow=None, warp_weight: float = 1.0,
                  temporal_weight: float = 0.5, cache_memory: int = CACHE_MEMORY, cache_dir: Optional[str] = None,
                  checkpoint: Optional[PathLike] = None, on_log: Optional[OnLog] = None,
                  log_every: int = 25, on_start: Optional[Callable[[Student], None]] = None) -> Student:
    """Distil ``teacher`` into a student on the clip ``frames``.

    Args:
        teacher: frames ``[B, 3, H, W]`` in [-1, 1] -> stylized frames ``[B, 3, 4H, 4W]`` in [-1, 1]
            (e.g. :func:`~vtoonify_core.student.vtoonify_teacher`). Run once per frame; the outputs
            are cached (float16, in memory up to ``cache_memory`` bytes, else in a file under
            ``cache_dir``, deleted at the end).
        frames: the clip ``[T, 3, H, W]`` in [-1, 1], consecutive (the refiner learns from the
            order), H and W multiples of 8; any device.
        steps: optimisation steps in all (with the refiner, ``refiner_fraction`` of them train it).
        seed: makes the run deterministic (sampling, crops, augmentation, initial weights).
        device: where the student trains.
        batch_size: frames per step (and per teacher chunk).
        progress: ``progress(done, total)``: the teacher pass, then each step (total = frames + steps).
        check_interrupt: called before each step; what it raises stops training, after the
            student is written to ``checkpoint`` (when given), so an interrupted run leaves a
            usable file.
        refiner: train the Stage-II refiner (needs at least 3 frames).
        config: the networks' sizes (default :class:`StudentConfig`: 5.3M parameters).
        lr: Adam learning rate (a warm-up, then a cosine decay to lr / 20 in each stage; gradients
            clipped to norm 1). 1e-3 suits the default size (bench: 2e-3 diverged at first); small
            configs (width 8) learn faster with 2e-3.
        crop_size: training crops of at most this many input pixels a side (multiple of 8).
        augment: strength of flips, affine and colour jitter in Stage I (0 = off).
        vgg: a local torchvision VGG-16 checkpoint: adds a perceptual term (``vgg_weight``).
        parser: BiSeNet face parser (:class:`~vtoonify_core.models.bundle.FaceParserModel`) for
            the background mask of the warp loss; default the teacher's ``face_parser``; without
            one the whole frame counts as background.
        flow: the flow backend (default the project's DIS flow, medium preset).
        warp_weight, temporal_weight: weights of Eq. 2 and Eq. 3.
        checkpoint: write the student there (``.safetensors``) at the end and when interrupted.
        on_log: ``on_log(step, logs)`` every ``log_every`` steps and at the last step.
        on_start: ``on_start(student)`` once the networks are built (e.g. to show previews).

    Returns:
        The student, in eval mode on ``device``; ``student.meta`` says how it was trained.

    Raises:
        InputError: bad frames (NaN, sides not multiples of 8, fewer than 3 frames with the
            refiner), bad numbers, a teacher whose output is not ``[B, 3, 4H, 4W]`` or not finite.
    """
    config = config or StudentConfig()
    refiner = bool(refiner)
    _check(teacher, frames, steps, batch_size, refiner, crop_size)
    if config.refiner != refiner:
        config = StudentConfig(**{**config.to_dict(), "refiner": refiner})
    dev = torch.device(device)
    t_all, _, h, w = frames.shape
    steps2 = min(steps - 1, max(1, int(round(steps * refiner_fraction)))) if refiner and steps > 1 else 0
    steps1 = steps - steps2
    total = t_all + steps
    started = time.perf_counter()
    torch.manual_seed(seed)
    student = Student(config).to(dev)
    if on_start is not None:
        on_start(student)
    gen = torch.Generator().manual_seed(seed)
    frames = frames.detach()
    cache = run_teacher(teacher, frames, batch_size=batch_size, memory_limit=cache_memory, folder=cache_dir,
                        progress=progress, check_interrupt=check_interrupt)
    state = {"step": 0, "stage": 1, "loss": float("nan")}
    try:
        motion = None
        if refiner and steps2:
            motion = _motion(frames, teacher_parser(teacher, parser), flow, batch_size)
        perceptual = maybe_vgg(vgg, dev)

        def tick(logs: dict) -> None:
            state["step"] += 1
            state["loss"] = logs["loss"]
            if progress is not None:
                progress(t_all + state["step"], total)
            if on_log is not None and (state["step"] % max(1, log_every) == 0 or state["step"] == steps):
                on_log(state["step"], logs)

        _stage1(student, cache, frames, steps1, batch_size, crop_size, augment, lr, gen, dev, perceptual,
                vgg_weight, check_interrupt, tick)
        if steps2:
            state["stage"] = 2
            _stage2(student, cache, frames, motion, steps2, batch_size, crop_size, lr, gen, dev, warp_weight,
                    temporal_weight, check_interrupt, tick)
    except BaseException:
        if checkpoint is not None and state["step"] > 0:
            _finish(student, teacher, frames, state, started, interrupted=True).save(checkpoint)
            logger.info("VToonify student: interrupted at step %d; wrote %s", state["step"], checkpoint)
        raise
    finally:
        cache.close()
    _finish(student, teacher, frames, state, started, interrupted=False)
    if checkpoint is not None:
        student.save(checkpoint)
    return student


def _finish(student: Student, teacher, frames: Tensor, state: dict, started: float, interrupted: bool) -> Student:
    describe = getattr(teacher, "describe", None)
    student.meta.update({k: str(v) for k, v in {
        "teacher": describe() if callable(describe) else type(teacher).__name__,
        "steps": state["step"], "stage": state["stage"], "loss": f"{state['loss']:.5f}",
        "frames": frames.shape[0], "size": f"{frames.shape[3]}x{frames.shape[2]}",
        "seconds": f"{time.perf_counter() - started:.1f}", "interrupted": interrupted}.items()})
    return student.eval()


def _motion(frames: Tensor, parser, flow, batch_size: int) -> Motion:
    background = None
    if parser is not None:
        logits = parse(parser, frames, batch_size=batch_size).logits
        background = background_mask(logits)
    return compute_motion(frames, background, flow)


def _crop(x: Tensor, box: tuple[int, int, int, int], scale: int = 1) -> Tensor:
    y0, x0, h, w = (v * scale for v in box)
    return x[..., y0:y0 + h, x0:x0 + w]


def _schedule(opt: torch.optim.Optimizer, steps: int, lr: float, check_interrupt) -> Iterator[int]:
    """The head of each step of a stage: the interrupt check, then the step's learning rate."""
    for step in range(steps):
        if check_interrupt is not None:
            check_interrupt()
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, lr)
        yield step


def _update(opt: torch.optim.Optimizer, loss: Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], MAX_GRAD_NORM)
    opt.step()


def _stage1(student: Student, cache: TeacherCache, frames: Tensor, steps: int, batch_size: int, crop: int,
            augment: float, lr: float, gen: torch.Generator, dev: torch.device, perceptual, vgg_weight: float,
            check_interrupt, tick) -> None:
    g = student.g.train()
    opt = torch.optim.Adam(g.parameters(), lr=lr, betas=(0.9, 0.99))
    t_all, _, h, w = frames.shape
    for _ in _schedule(opt, steps, lr, check_interrupt):
        idx = torch.randint(0, t_all, (batch_size,), generator=gen).tolist()
        box = random_box(h, w, crop, gen)
        x = _crop(frames[idx], box).to(dev, torch.float32)
        target = _crop(cache.get(idx, dev), box, SCALE)
        x, target = augment_pair(x, target, augment, gen)
        y = g(x)
        rec = reconstruction_loss(y, target)
        loss = rec if perceptual is None else rec + vgg_weight * perceptual(y, target)
        _update(opt, loss)
        tick({"stage": 1, "loss": float(loss.detach()), "reconstruction": float(rec.detach())})
    g.eval()


def _stage2(student: Student, cache: TeacherCache, frames: Tensor, motion: Motion, steps: int, batch_size: int,
            crop: int, lr: float, gen: torch.Generator, dev: torch.device, warp_weight: float,
            temporal_weight: float, check_interrupt, tick) -> None:
    g, r = student.g.eval(), student.r.train()
    opt = torch.optim.Adam(r.parameters(), lr=lr, betas=(0.9, 0.99))
    t_all, _, h, w = frames.shape
    for _ in _schedule(opt, steps, lr, check_interrupt):
        t = torch.randint(CONTEXT, t_all, (batch_size,), generator=gen)
        box = random_box(h, w, crop, gen)
        # frames t - k of the batch, k = 0 .. L + 1 (the clip's first frame repeats before it)
        xs = [_crop(frames[(t - k).clamp(min=0).tolist()], box).to(dev, torch.float32) for k in range(CONTEXT + 2)]
        with torch.no_grad():  # G is frozen; the refiner works in the folded layout, as when stylizing
            g0, g1, g2 = (g.folded(x) for x in xs[:3])
        r1 = r.folded(g1, g2, torch.cat(xs[1:4], 1))     # frame t-1 after a refined predecessor ~ G(x_{t-2})
        r0 = r.folded(g0, r1, torch.cat(xs[0:3], 1))     # frame t after the refined t-1
        r0, r1, g0 = (F.pixel_shuffle(v, SCALE) for v in (r0, r1, g0))
        y0 = _crop(cache.get(t.tolist(), dev), box, SCALE)
        y1 = _crop(cache.get((t - 1).tolist(), dev), box, SCALE)
        rec = reconstruction_loss(r0, y0) + reconstruction_loss(r1, y1)
        flow, valid, background = motion.at(t.tolist(), box, dev)
        l_warp, l_temp = warp_loss(r0, r1, g0, flow, valid, background)
        loss = rec + warp_weight * l_warp + temporal_weight * l_temp
        _update(opt, loss)
        tick({"stage": 2, "loss": float(loss.detach()), "reconstruction": float(rec.detach()),
              "warp": float(l_warp.detach()), "temporal": float(l_temp.detach())})
    r.eval()
