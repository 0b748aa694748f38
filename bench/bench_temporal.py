"""Benchmark of temporal coherence: flicker of parsing maps and of an output clip, and flow backend speed.

On the synthetic clip of ``tests/test_temporal.py`` (astronaut seen through a smooth camera path,
analytic flow, noisy 19-channel parsing logits) it prints and stores:

* the warping error (flicker metric) of the softmax parsing maps without and with
  ``smooth_parsing`` (DIS flow at flow_scale 1 and 0.5), measured with the exact flow and with
  DIS flow;
* the warping error of an output clip without and with ``deflicker`` (strengths 0.5 and 1.0);
  the output comes from ``make_output(frames) -> frames_out`` (default: the clip up-scaled 2x
  with an injected per-frame brightness/colour flicker; pass the Stylize Frames output later);
* the time per frame of each available flow backend (DIS medium/fast at flow_scale 1 and 0.5,
  RAFT with ``--raft PATH`` when torchvision is installed) and of the whole smoothing.

Usage::

    python bench/bench_temporal.py [--quick] [--size 256] [--frames 24] [--raft raft_large.pth] [--device cuda]

Writes ``bench/results/temporal_<date>.json`` (machine, torch version, date, all numbers).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vtoonify_core.temporal import flow as vflow  # noqa: E402
from vtoonify_core.temporal.deflicker import deflicker, warping_error  # noqa: E402
from vtoonify_core.temporal.smoothing import smooth_parsing


def _load_test_module():
    spec = importlib.util.spec_from_file_location("_temporal_synth", ROOT / "tests" / "test_temporal.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def default_output(frames: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A stand-in stylized output: the frames up-scaled 2x with a per-frame gain/colour-shift flicker."""
    T = frames.shape[0]
    g = torch.Generator().manual_seed(seed)
    up = torch.nn.functional.interpolate(frames, scale_factor=2, mode="bilinear", align_corners=False)
    gain = (1 + 0.15 * (torch.rand(T, 1, 1, 1, generator=g) - 0.5)).to(frames)
    shift = (0.12 * (torch.rand(T, 3, 1, 1, generator=g) - 0.5)).to(frames)
    return (up * gain + shift).clamp(-1, 1)


def _timed(fn: Callable[[], object], device: torch.device, repeat: int = 1) -> tuple[object, float]:
    """Result of ``fn()`` and its best wall time over ``repeat`` runs (seconds)."""
    best = float("inf")
    for _ in range(max(1, repeat)):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        r = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return r, best


def run(
    size: int = 256,
    frames: int = 24,
    k: int = 5,
    raft: Optional[str] = None,
    device: str = "cpu",
    make_output: Callable[[torch.Tensor], torch.Tensor] = default_output,
    repeat: int = 2,
    stylize: bool = False,
) -> dict:
    """Run the benchmark and return the results as a dict (see the module docstring)."""
    mod = _load_test_module()
    dev = torch.device(device)
    clip = mod.Clip(T=frames, H=size, W=size, seed=0)
    fr, par = clip.frames.to(dev), clip.parsing.to(dev)
    oracle = mod.OracleFlow(clip)
    probs = lambda x: torch.softmax(x.float(), dim=1)  # noqa: E731

    def exact_err(x: torch.Tensor) -> float:
        return warping_error(x.cpu(), clip.frames, oracle)

    res: dict = {"size": size, "frames": frames, "k": k, "repeat": repeat, "parsing": {}, "output": {}, "flow_ms_per_pair": {}}
    smooth_parsing(par[:4], fr[:4], k=2)  # warm-up (thread pools, allocator, OpenCV)

    # parsing maps
    res["parsing"]["input"] = {"exact": exact_err(probs(par)), "dis": warping_error(probs(par), fr, "dis")}
    for scale in (1.0, 0.5):
        sm, secs = _timed(lambda: smooth_parsing(par, fr, k=k, flow="dis", flow_scale=scale), dev, repeat)
        res["parsing"][f"smoothed_dis_s{scale:g}"] = {
            "exact": exact_err(probs(sm)),
            "dis": warping_error(probs(sm), fr, "dis"),
            "ms_per_frame": 1000 * secs / frames,
            "err_vs_clean": float((probs(sm).cpu() - probs(clip.clean)).abs().mean()),
        }
    res["parsing"]["input"]["err_vs_clean"] = float((probs(par).cpu() - probs(clip.clean)).abs().mean())
    if raft:
        try:
            rb = vflow.RAFTFlow(raft)
            sm, secs = _timed(lambda: smooth_parsing(par, fr, k=k, flow=rb), dev, repeat)
            res["parsing"]["smoothed_raft_s1"] = {
                "exact": exact_err(probs(sm)), "dis": warping_error(probs(sm), fr, "dis"),
                "ms_per_frame": 1000 * secs / frames,
            }
        except (ImportError, ValueError, OSError) as e:
            res["raft_error"] = str(e)

    # output clip
    out = make_output(fr)
    res["output"]["input"] = {"exact": exact_err(out), "dis": warping_error(out, fr, "dis")}
    for s in (0.5, 1.0):
        d, secs = _timed(lambda: deflicker(out, fr, s), dev, repeat)
        res["output"][f"deflicker_{s:g}"] = {
            "exact": exact_err(d), "dis": warping_error(d, fr, "dis"), "ms_per_frame": 1000 * secs / frames,
        }

    if stylize:
        res["stylize"] = stylize_section(fr, par, k, exact_err)

    # flow backends: one pair per consecutive frames
    backends: dict[str, vflow.FlowBackend] = {"dis_medium": vflow.DISFlow("medium"), "dis_fast": vflow.DISFlow("fast")}
    if raft and "raft_error" not in res:
        backends["raft"] = vflow.RAFTFlow(raft)
    for name, b in backends.items():
        for scale in (1.0, 0.5):
            vflow.estimate_flow(b, fr[:2], fr[1:3], scale)  # warm-up
            _, secs = _timed(lambda: vflow.estimate_flow(b, fr[:-1], fr[1:], scale), dev, repeat)
            res["flow_ms_per_pair"][f"{name}_s{scale:g}"] = 1000 * secs / (frames - 1)
    return res


def stylize_section(fr: torch.Tensor, par: torch.Tensor, k: int, exact_err) -> dict:
    """Warping error of the Stylize Frames output (VToonify-T, stand-in weights of the official
    layout, one style for the clip) with raw parsing maps, with smoothed maps (Eq. 6-7), and with
    smoothing plus deflicker."""
    from vtoonify_core.models.vtoonify import build_vtoonify
    from vtoonify_core.testing import standin

    model = build_vtoonify("vtoonify_t")
    model.load_state_dict(standin.build_state_dict("vtoonify_t"), assign=True)
    model.eval().to(fr.device)
    style = model.zplus2wplus(torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(0)).to(fr.device))

    def toonify(parsing: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            outs = [model(torch.cat([fr[i:i + 4], parsing[i:i + 4] / 16], 1), style).clamp(-1, 1)
                    for i in range(0, fr.shape[0], 4)]
        return torch.cat(outs)

    raw = toonify(par)
    smoothed = toonify(smooth_parsing(par, fr, k=k, flow="dis"))
    both = deflicker(smoothed, fr, 0.5)
    return {name: {"exact": exact_err(x), "dis": warping_error(x, fr, "dis")}
            for name, x in (("raw_parsing", raw), ("smoothed_parsing", smoothed), ("smoothed+deflicker0.5", both))}


def _table(res: dict) -> str:
    lines = [f"synthetic clip {res['frames']} frames {res['size']}x{res['size']}, k={res['k']} "
             f"(times: best of {res['repeat']}, wall clock)", ""]
    lines.append(f"{'parsing maps (softmax)':28s} {'warp err (exact flow)':>22s} {'warp err (DIS)':>15s} {'vs clean':>9s} {'ms/frame':>9s}")
    base = res["parsing"]["input"]["exact"]
    for name, r in res["parsing"].items():
        fac = f"({base / r['exact']:.1f}x)" if name != "input" else ""
        lines.append(f"{name:28s} {r['exact']:13.5f} {fac:>8s} {r['dis']:15.5f} {r.get('err_vs_clean', float('nan')):9.4f} "
                     f"{r.get('ms_per_frame', float('nan')):9.1f}")
    lines.append("")
    lines.append(f"{'output clip':28s} {'warp err (exact flow)':>22s} {'warp err (DIS)':>15s} {'':9s} {'ms/frame':>9s}")
    base = res["output"]["input"]["exact"]
    for name, r in res["output"].items():
        fac = f"({base / r['exact']:.1f}x)" if name != "input" else ""
        lines.append(f"{name:28s} {r['exact']:13.5f} {fac:>8s} {r['dis']:15.5f} {'':9s} {r.get('ms_per_frame', float('nan')):9.1f}")
    lines.append("")
    lines.append("flow backend (ms per pair, flow returned at full resolution)")
    for name, ms in res["flow_ms_per_pair"].items():
        lines.append(f"  {name:24s} {ms:8.2f}")
    if "raft_error" in res:
        lines.append(f"  raft: unavailable ({res['raft_error'][:100]})")
    if "stylize" in res:
        lines.append("")
        lines.append(f"{'Stylize Frames output':28s} {'warp err (exact flow)':>22s} {'warp err (DIS)':>15s}")
        base = res["stylize"]["raw_parsing"]["exact"]
        for name, r in res["stylize"].items():
            fac = f"({base / r['exact']:.1f}x)" if name != "raw_parsing" else ""
            lines.append(f"{name:28s} {r['exact']:13.5f} {fac:>8s} {r['dis']:15.5f}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small clip (128x128, 12 frames)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--raft", default=None, help="local torchvision RAFT weights (optional)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=2, help="timings: best of N runs")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--no-stylize", action="store_true", help="skip the Stylize Frames (VToonify-T) section")
    a = ap.parse_args(argv)
    if a.quick:
        a.size, a.frames, a.repeat = 128, 12, 1
    res = run(a.size, a.frames, a.k, a.raft, a.device, repeat=a.repeat, stylize=not a.no_stylize)
    now = _dt.datetime.now(_dt.timezone.utc)
    res["meta"] = {
        "date": now.isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": a.device if a.device == "cpu" else torch.cuda.get_device_name(0),
        "quick": a.quick,
    }
    print(_table(res))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"temporal_{now.strftime('%Y%m%d_%H%M%S')}{'_quick' if a.quick else ''}.json"
    path.write_text(json.dumps(res, indent=2))
    print(f"\nwritten {path}")
    return res


if __name__ == "__main__":
    main()
