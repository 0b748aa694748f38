#!/usr/bin/env python3
"""Peak memory of streaming file-to-file stylization when the video gets longer (issue 8).

Each measurement runs in a fresh Python process (peak RSS is per process) on a generated clip of
the astronaut (``--size`` px square, smooth motion, AAC tone) with the deterministic stand-in
weights of ``vtoonify_core.standin`` (the real checkpoints have the same shapes, so memory and
speed are the same):

* ``stream``: :func:`vtoonify_core.video.stylize_video`, file to file, chunk by chunk;
* ``in-memory``: what an IMAGE batch does: decode every frame into one tensor, stylize with
  :func:`vtoonify_core.pipeline.stylize_clip`, gather the whole float32 output.

Both run on ``--frames`` and on twice as many frames. Streaming should use the same peak memory
for both lengths; the in-memory path grows with the length. The peak is taken while the video is
processed (reset after the model is loaded), and the children run with glibc's mmap threshold
fixed (``MALLOC_MMAP_THRESHOLD_=131072``) so that freed buffers leave the RSS at once: with the
default dynamic threshold the same run varies by ~100 MiB from process to process. Prints a table
and writes JSON::

    python bench/bench_video.py                          # 96 px, 40 vs 80 frames, chunks of 8
    python bench/bench_video.py --size 64 --frames 48 --repeat 3 --out bench/results/video_64.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_models(folder: Path) -> dict:
    """Stand-in VToonify-D checkpoint, exemplar codes and parser in the official layout."""
    from vtoonify_core.testing import standin

    ckpt = folder / "vtoonify_d_cartoon" / "vtoonify_s_d.pt"
    if not ckpt.exists():
        standin.write_official_checkpoint("vtoonify_d", ckpt)
        standin.write_official_exstyles(ckpt.parent / "exstyle_code.npy")
        standin.write_official_checkpoint("bisenet", folder / "faceparsing.pth")
    return {"checkpoint": str(ckpt), "parser": str(folder / "faceparsing.pth")}


def make_clip(path: Path, frames: int, size: int) -> Path:
    """A clip of the astronaut through a smoothly moving window, written frame by frame."""
    from skimage import data

    from vtoonify_core.testing.clips import moving_window_frame
    from vtoonify_core.video.files import write_video

    img = data.astronaut()

    def gen():  # frame by frame: a long clip is never held whole
        for i in range(frames):
            yield moving_window_frame(img, i, frames, size)

    return write_video(path, gen(), Fraction(30000, 1001), tone_hz=440)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS (Linux: ``/proc/self/clear_refs`` <- 5); ``False`` when unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_kib() -> int:
    """Peak RSS since the last :func:`reset_peak_rss` (VmHWM), else since the start (ru_maxrss)."""
    try:
        return _status_kib("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(mode: str, clip: str, out: str, models: dict, chunk: int, batch: int) -> dict:
    """One measurement in this process: run, then report peak RSS and time.

    The peak is reset after the model is loaded (loading has a transient peak of its own that
    does not depend on the video), so ``peak_rss_mib`` is the peak while the video is processed.
    """
    import gc

    import numpy as np
    import torch

    from vtoonify_core import video
    from vtoonify_core.models.bundle import load_model
    from vtoonify_core.pipeline.clip import stylize_clip
    from vtoonify_core.styles.codes import extract_style

    model = load_model(models["checkpoint"], None, models["parser"])
    style = extract_style(model, None, 1, True)
    load_peak = peak_rss_kib()
    gc.collect()
    reset = reset_peak_rss()
    rss_model = _status_kib("VmRSS") if reset else load_peak
    t0 = time.perf_counter()
    if mode == "stream":
        result = video.stylize_video(model, clip, out, style, 0.5, crop_mode="whole", chunk_size=chunk,
                                     batch_size=batch)
        frames = result.frames
    else:
        decoded = np.stack([f for _, f in video.iter_frames(clip)])
        x = torch.from_numpy(decoded).permute(0, 3, 1, 2)
        y, _ = stylize_clip(model, x, style, 0.5, crop_mode="whole", batch_size=batch)
        frames = int(y.shape[0])
    seconds = time.perf_counter() - t0
    peak = peak_rss_kib()
    return {"mode": mode, "frames": frames, "seconds": round(seconds, 2), "s_per_frame": round(seconds / frames, 3),
            "peak_rss_mib": round(peak / 1024, 1), "rss_after_model_load_mib": round(rss_model / 1024, 1),
            "model_load_peak_mib": round(load_peak / 1024, 1), "peak_reset": reset,
            "torch_threads": torch.get_num_threads()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=96, help="frame side (px); output is 4x")
    p.add_argument("--frames", type=int, default=40, help="the short clip; the long one has twice as many")
    p.add_argument("--chunk", type=int, default=8, help="frames per chunk (streaming)")
    p.add_argument("--batch", type=int, default=4, help="frames per forward pass")
    p.add_argument("--modes", default="stream,in-memory", help="comma-separated: stream, in-memory")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per measurement (the growth is computed from the medians)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "video.json"), help="JSON results")
    p.add_argument("--child", nargs=3, metavar=("MODE", "CLIP", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--models", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        mode, clip, out = args.child
        print(json.dumps(child(mode, clip, out, json.loads(args.models), args.chunk, args.batch)))
        return 0

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_video_") as tmp:
        tmp = Path(tmp)
        models = make_models(tmp / "models")
        for n in (args.frames, 2 * args.frames):
            clip = make_clip(tmp / f"clip_{n}.mp4", n, args.size)
            for mode in args.modes.split(","):
                for rep in range(max(1, args.repeat)):
                    cmd = [sys.executable, __file__, "--child", mode, str(clip), str(tmp / f"out_{mode}_{n}.mp4"),
                           "--models", json.dumps(models), "--chunk", str(args.chunk), "--batch", str(args.batch)]
                    env = {"MALLOC_MMAP_THRESHOLD_": "131072", **os.environ, "PYTHONPATH": str(ROOT)}
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    if proc.returncode != 0:
                        print(proc.stderr, file=sys.stderr)
                        return proc.returncode
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
                    row.update(size=args.size, chunk=args.chunk, batch=args.batch, run=rep)
                    rows.append(row)
                    print(f"{mode:>9}  {row['frames']:4d} frames  {row['seconds']:7.1f} s  "
                          f"peak RSS {row['peak_rss_mib']:7.1f} MiB  (after model load: "
                          f"{row['rss_after_model_load_mib']:.1f})", flush=True)
    growth = {}
    for mode in args.modes.split(","):
        peaks = [statistics.median(x["peak_rss_mib"] for x in rows if x["mode"] == mode and x["frames"] == n)
                 for n in sorted({x["frames"] for x in rows if x["mode"] == mode})]
        if len(peaks) == 2:
            growth[mode] = round(peaks[1] - peaks[0], 1)
            print(f"{mode:>9}: median peak RSS {args.frames} -> {2 * args.frames} frames: {peaks[0]:.1f} -> "
                  f"{peaks[1]:.1f} MiB ({growth[mode]:+.1f})")
    out_mib = 4 * args.size * 4 * args.size * 3 * 4 / 2**20
    print(f"(the in-memory output alone grows by {args.frames * out_mib:.1f} MiB: {args.frames} more frames of "
          f"{4 * args.size}x{4 * args.size}x3 float32)")
    result = {"bench": "video", "host": platform.node(), "python": platform.python_version(),
              "cpu_count": os.cpu_count(), "rows": rows, "median_peak_rss_growth_mib": growth,
              "in_memory_output_growth_mib": round(args.frames * out_mib, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
