"""Benchmark of the real-time student (issue 16), one run, ratios:

* speed: the student (Stage I alone, and with the refiner) against VToonify-D (parse + generator,
  stand-in weights of the official layout: the same compute as the release) at the same input
  size, batch, dtype and device; prints the ratio (goal >= 20x on the CPU; on CUDA the paper's
  0.011 s/frame at 256x256 is the anchor);
* quality: PSNR / SSIM against the teacher on held-out frames: a student (default size, 5.3M
  parameters) trained on the first frames of a clip of a real face (scikit-image's astronaut
  through a moving window) with the deterministic cartoon teacher, tested on the last frames;
* temporal coherence: the project's warping error (DIS flow, occlusion-masked) of the student
  with and without the refiner against the teacher's raw output on the whole clip;
* training cost: steps and seconds until Stage I reaches 28 dB on the held-out frames.

Usage: ``python bench/bench_student.py [--device cpu] [--dtype fp32] [--size 256] [--batch 1 4] [--steps 1500]``
Writes ``bench/results/student_<date>.json``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vtoonify_core.models.bundle import load_model  # noqa: E402
from vtoonify_core.student import Student, StudentConfig, VToonifyTeacher, train_student  # noqa: E402
from vtoonify_core.student.losses import psnr, ssim  # noqa: E402
from vtoonify_core.temporal.deflicker import warping_error  # noqa: E402
from vtoonify_core.testing import standin  # noqa: E402
from vtoonify_core.testing.cartoon import cartoon_teacher, face_clip  # noqa: E402
from vtoonify_core.types import StyleCode  # noqa: E402

#: frames of the clip timed in the speed test
CLIP_FRAMES = 8
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed_rounds(fns: dict, dev: torch.device, repeat: int) -> dict:
    """Median wall time of each ``fns[name]()`` (seconds) over ``repeat`` rounds after one warm-up
    round; each round calls every function once, in turn, so slow spells of a shared machine fall
    on all of them alike."""
    times: dict = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeat):
        for name, fn in fns.items():
            _sync(dev)
            t = time.perf_counter()
            fn()
            _sync(dev)
            times[name].append(time.perf_counter() - t)
    return {name: sorted(v)[len(v) // 2] for name, v in times.items()}


def speed(size: int, batch: int, dtype: torch.dtype, dev: torch.device, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = standin.write_official_checkpoint("vtoonify_d", Path(tmp) / "vtoonify_s_d.pt")
        parser = standin.write_official_checkpoint("bisenet", Path(tmp) / "faceparsing.pth")
        model = load_model(ckpt, None, parser, device=dev, dtype=dtype)
    style = StyleCode(torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(0)) * 0.5, "dualstylegan")
    teacher = VToonifyTeacher(model, style, 0.5, batch_size=batch)
    # a clip of 8 frames (or one batch) in chunks of ``batch``, as Stylize Frames (Student) runs a batch
    # and the video paths a chunk: per-call costs (the heap scope, the refiner's first frame) count
    n = max(batch, CLIP_FRAMES)
    x = face_clip(n, size).to(dev)
    student = Student(StudentConfig()).to(dev, dtype).eval()
    t = timed_rounds({"teacher": lambda: teacher(x), "g": lambda: student(x, batch_size=batch, refine=False),
                      "g_r": lambda: student(x, batch_size=batch)}, dev, repeat)
    t_teacher, t_g, t_gr = t["teacher"] / n, t["g"] / n, t["g_r"] / n
    return {"size": size, "batch": batch, "frames": n, "dtype": str(dtype).replace("torch.", ""), "device": str(dev),
            "parameters_g": sum(p.numel() for p in student.g.parameters()),
            "parameters_r": sum(p.numel() for p in student.r.parameters()),
            "vtoonify_d_s_per_frame": t_teacher, "student_g_s_per_frame": t_g, "student_g_r_s_per_frame": t_gr,
            "ratio_g": t_teacher / t_g, "ratio_g_r": t_teacher / t_gr}


def quality(frames: int, train_frames: int, size: int, steps: int, dev: torch.device, eval_every: int) -> dict:
    clip = face_clip(frames, size)
    train, held = clip[:train_frames], clip[train_frames:]
    target_held = cartoon_teacher(held)
    curve, state = [], {"reached": None, "t0": None}

    def on_start(s):
        state["student"], state["t0"] = s, time.perf_counter()

    def on_log(step: int, logs: dict) -> None:
        if logs["stage"] != 1:
            return
        s = state["student"]
        s.eval()
        with torch.no_grad():
            p = psnr(s.g(held.to(dev)).clamp(-1, 1).cpu(), target_held)
        s.g.train()
        curve.append((step, round(p, 2), round(time.perf_counter() - state["t0"], 1)))
        if state["reached"] is None and p >= 28.0:
            state["reached"] = (step, time.perf_counter() - state["t0"])

    t0 = time.perf_counter()
    student = train_student(cartoon_teacher, train, steps=steps, device=dev, batch_size=4, crop_size=size,
                            augment=0.3, on_start=on_start, on_log=on_log, log_every=eval_every)
    seconds = time.perf_counter() - t0
    whole_r = student(clip.to(dev)).cpu()
    whole_g = student(clip.to(dev), refine=False).cpu()
    teacher_all = cartoon_teacher(clip)
    h = slice(train_frames, None)
    return {
        "clip": f"{frames} frames {size}x{size} (train on the first {train_frames}, test on the last "
                f"{frames - train_frames})", "steps": steps, "train_seconds": seconds,
        "psnr_g_r": psnr(whole_r[h], teacher_all[h]), "psnr_g": psnr(whole_g[h], teacher_all[h]),
        "ssim_g_r": ssim(whole_r[h], teacher_all[h]), "ssim_g": ssim(whole_g[h], teacher_all[h]),
        "psnr_train_frames_g_r": psnr(whole_r[:train_frames], teacher_all[:train_frames]),
        "steps_to_28db": None if state["reached"] is None else state["reached"][0],
        "seconds_to_28db": None if state["reached"] is None else state["reached"][1],
        "curve_stage1_step_psnr_seconds": curve,
        "warping_error": {"teacher": warping_error(teacher_all, clip, "dis"),
                          "student_g_r": warping_error(whole_r, clip, "dis"),
                          "student_g": warping_error(whole_g, clip, "dis")},
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
    ap.add_argument("--size", type=int, default=256, help="input size of the speed test (output 4x)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes of the speed test")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--train-frames", type=int, default=32)
    ap.add_argument("--train-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="small sizes, a few steps (a smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch = args.batch[:1]
        args.size, args.repeat, args.frames, args.train_frames, args.train_size, args.steps = 64, 1, 8, 6, 32, 20
    dev = torch.device(args.device)
    res = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor()
           or platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    res["speed"] = []
    for batch in args.batch:
        res["speed"].append(s := speed(args.size, batch, DTYPES[args.dtype], dev, args.repeat))
        print(f"speed {s['size']}x{s['size']} -> {4 * s['size']}, {s['frames']} frames in batches of {s['batch']}, "
              f"{s['dtype']}, {s['device']}: "
              f"VToonify-D {s['vtoonify_d_s_per_frame']:.3f} s/frame, student G {s['student_g_s_per_frame']:.4f} "
              f"({s['ratio_g']:.1f}x), G+R {s['student_g_r_s_per_frame']:.4f} ({s['ratio_g_r']:.1f}x); "
              f"params G {s['parameters_g'] / 1e6:.2f}M R {s['parameters_r'] / 1e6:.3f}M", flush=True)
    res["quality"] = q = quality(args.frames, args.train_frames, args.train_size, args.steps, dev, args.eval_every)
    w = q["warping_error"]
    print(f"quality ({q['clip']}, {q['steps']} steps, {q['train_seconds']:.0f} s): held-out PSNR G+R "
          f"{q['psnr_g_r']:.2f} dB (G {q['psnr_g']:.2f}), SSIM G+R {q['ssim_g_r']:.3f} (G {q['ssim_g']:.3f}); "
          f"seen frames {q['psnr_train_frames_g_r']:.2f} dB")
    print(f"warping error (DIS): teacher {w['teacher']:.5f}, student G+R {w['student_g_r']:.5f}, "
          f"G {w['student_g']:.5f}")
    print("28 dB on held-out frames (Stage I): "
          + ("not reached" if q["steps_to_28db"] is None else
             f"step {q['steps_to_28db']}, {q['seconds_to_28db']:.0f} s")
          + f"; curve (step, dB, s): {q['curve_stage1_step_psnr_seconds']}")
    if not args.quick:
        out = ROOT / "bench" / "results" / f"student_{_dt.datetime.now():%Y%m%d_%H%M%S}.json"
        out.write_text(json.dumps(res, indent=1))
        print(f"wrote {out.relative_to(ROOT)}")
    return res


if __name__ == "__main__":
    main()
