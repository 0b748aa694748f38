"""Speed of the VToonify pipeline, per stage and end to end, each fast-path switch vs the plain path in one run.

Usage::

    python bench/bench_pipeline.py --quick              # CPU, small sizes, a few minutes at most
    python bench/bench_pipeline.py --device cuda --compile --profile
                                                        # full table: 256->1024 and 320x400->1280x1600,
                                                        # T and D, fp32/fp16/bf16, batch 1/4/16
    python bench/bench_pipeline.py --plain              # only the plain path

Stages: face parse (BiSeNet on the 2x frame, official), parsing smoothing (Eq. 6-7, DIS flow),
style extraction (pSp on a 256 crop + mapping), generator (VToonify), end to end (parse +
generator on device-resident frames) and the pipeline (``vtoonify_core.pipeline.stylize`` from
host frames: chunking, host<->device copies, clamping, gathering).

Generator rows are measured, one block after another in one process, for the plain path (per-sample
modulation, contiguous, eager: the official computation) and for the fast-path switches added
one at a time (``bake``: style baked into the weights once per clip; ``+channels_last``;
``+fold``: FIR blur folded into the up-sampling kernels; ``+compile``: torch.compile, with
``--compile``; on CUDA ``+cudagraphs``: compile mode reduce-overhead). Each row prints its
speed-up over the plain path. The default fast path (what the nodes run) is the ``fast`` row.
``--profile`` prints where the time of the default fast path goes (torch.profiler, by op).
``--interleave`` times the sets call by call in alternating rounds instead (issue 18's protocol);
generator rows of VToonify-D fp32 also print the speed-up over the official code: measured
anchors at B=4 128x128 and B=1 256x256, estimated per input pixel elsewhere (marked ``est.``).
The fast path keeps its activations in the heap on the CPU (``vtoonify_core/host_memory.py``); a
set with that switch is timed inside one scope, as the pipeline runs a clip.
Weights are the deterministic stand-ins of the official layout (speed does not depend on the
values). Prints a table and writes JSON to bench/results/.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vtoonify_core import parse_frames
from vtoonify_core.host_memory import reuse_host_memory
from vtoonify_core.models.bisenet import FaceParser  # noqa: E402
from vtoonify_core.models.bundle import VToonifyModel  # noqa: E402
from vtoonify_core.models.psp import StyleEncoder  # noqa: E402
from vtoonify_core.models.vtoonify import build_vtoonify  # noqa: E402
from vtoonify_core.pipeline.stylize import stylize
from vtoonify_core.runtime.device import cpu_has_fast_bf16
from vtoonify_core.testing import standin  # noqa: E402
from vtoonify_core.types import StyleCode

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build(module: torch.nn.Module, kind: str, device, dtype) -> torch.nn.Module:
    # the key tables are flat (for pSp: encoder.* plus latent_avg), as the loaders see the files
    module.load_state_dict(standin.build_state_dict(kind), strict=True, assign=True)
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device, repeat: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: max allocated since the last reset; CPU: the process's peak RSS (VmHWM) since the
    last reset where Linux allows resetting it, else since the start."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def ablation(device: torch.device, plain_only: bool, compile_: bool) -> dict[str, dict]:
    """The switch sets to time: the plain path, then each switch added on top of the previous ones."""
    configs: dict[str, dict] = {"plain": {}}
    if plain_only:
        return configs
    configs["bake"] = dict(fast=True)
    configs["+channels_last"] = dict(fast=True, channels_last=True)
    configs["+fold"] = dict(fast=True, channels_last=True, fold_upsample=True)
    configs["fast"] = dict(fast=True, channels_last=True, fold_upsample=None, reuse_host_memory=True)  # the default
    if compile_:
        configs["+compile"] = dict(fast=True, channels_last=True, fold_upsample=None, reuse_host_memory=True,
                                   compile_mode="default")
        if device.type == "cuda":
            configs["+cudagraphs"] = dict(fast=True, channels_last=True, fold_upsample=None,
                                          reuse_host_memory=True, compile_mode="reduce-overhead")
    return configs


#: s/frame of the official VToonify-D code (its forward, fp32, 2 threads, this CPU kind) measured
#: side by side with this project's on identical weights (issue 18): (kind, dtype, H, W, batch) -> s
OFFICIAL_S_PER_FRAME = {("vtoonify_d", "fp32", 128, 128, 4): 1.585, ("vtoonify_d", "fp32", 256, 256, 1): 6.78}


def official_anchor(kind: str, dname: str, h: int, w: int, batch: int) -> Optional[tuple[float, bool]]:
    """The official code's s/frame for a generator row: ``(seconds, measured)``; other sizes and
    batches of VToonify-D fp32 are estimated from the anchors' mean time per input pixel (the
    official forward is fully convolutional, so its time grows with the pixels)."""
    key = (kind, dname, h, w, batch)
    if key in OFFICIAL_S_PER_FRAME:
        return OFFICIAL_S_PER_FRAME[key], True
    if kind != "vtoonify_d" or dname != "fp32":
        return None
    per_pixel = sum(s / (k[2] * k[3]) for k, s in OFFICIAL_S_PER_FRAME.items()) / len(OFFICIAL_S_PER_FRAME)
    return per_pixel * h * w, False


def interleaved(model: torch.nn.Module, x: torch.Tensor, style: torch.Tensor, configs: dict[str, dict],
                device: torch.device, repeat: int) -> tuple[dict, dict]:
    """Median seconds per call of each switch set, called in alternating rounds (one warm-up round).

    Each set runs on its own copy of the network (identical weights), laid out for it once, as
    the official code and this project would run side by side: switching one network's layout
    on every call would time the re-layout. One host-memory scope is open for all of them when
    the default set reuses host memory.
    """
    reuse = device.type == "cpu" and any(c.get("reuse_host_memory") for c in configs.values())
    nets = {name: copy.deepcopy(model).set_fast_path(False, **c) for name, c in configs.items()}
    samples: dict[str, list[float]] = {name: [] for name in configs}
    peaks: dict[str, float] = {}
    with reuse_host_memory(reuse):
        for round_ in range(repeat + 1):
            for name, net in nets.items():
                reset_peak(device)
                sync(device)
                t = time.perf_counter()
                net(x, style, 0.5)
                sync(device)
                if round_:
                    samples[name].append(time.perf_counter() - t)
                peaks[name] = max(peaks.get(name, 0.0), peak_memory_mb(device))
    return {name: sorted(v)[len(v) // 2] for name, v in samples.items()}, peaks


def profile_generator(model, x, style, device, kind, dname, size, batch, top: int = 12) -> dict:
    """Where the time of the default fast path goes: torch.profiler self time by op."""
    from torch.profiler import ProfilerActivity, profile

    model.set_fast_path(True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.no_grad():
        model(x, style, 0.5)
        sync(device)
        with profile(activities=activities) as prof:
            for _ in range(3):
                model(x, style, 0.5)
            sync(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    total = sum(getattr(e, key, 0) for e in events) or 1
    rows = [{"op": e.key, "share": getattr(e, key, 0) / total, "ms_per_call": getattr(e, key, 0) / 1e3 / 3,
             "calls": e.count // 3} for e in events[:top]]
    print(f"# profile: {kind} {dname} {size} B={batch}, default fast path, self {'GPU' if device.type == 'cuda' else 'CPU'} time by op")
    for r in rows:
        print(f"#   {r['op']:<40} {100 * r['share']:5.1f}%  {r['ms_per_call']:9.2f} ms/forward  {r['calls']:4d} calls")
    return {"kind": kind, "dtype": dname, "size": size, "batch": batch, "ops": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, one dtype and batch (for CI on CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", default=None, help="comma list of fp32,fp16,bf16")
    ap.add_argument("--batches", default=None, help="comma list of batch sizes")
    ap.add_argument("--kinds", default="vtoonify_t,vtoonify_d")
    ap.add_argument("--plain", action="store_true", help="measure only the plain path")
    ap.add_argument("--sizes", default=None, help="comma list of HxW inputs, e.g. 256x256,320x400")
    ap.add_argument("--stages", default="parse,smooth,style,generator",
                    help="comma list of stages to run (generator includes end to end)")
    ap.add_argument("--compile", action="store_true",
                    help="also time torch.compile (and CUDA graphs on CUDA); compiling takes minutes")
    ap.add_argument("--profile", action="store_true", help="print where the generator's time goes")
    ap.add_argument("--interleave", action="store_true",
                    help="time the generator's switch sets call by call in alternating rounds (one host-memory "
                         "scope for all of them) instead of one block per set")
    ap.add_argument("--sets", default=None, help="comma list of the generator's switch sets to time (default: all), "
                                                 "e.g. plain,fast")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    quick = args.quick
    sizes = [(64, 64), (80, 64)] if quick else [(256, 256), (320, 400)]
    if args.sizes:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    stages = set(args.stages.split(","))
    if args.dtypes:
        dtypes = args.dtypes.split(",")
    elif device.type == "cuda":
        dtypes = ["fp32", "fp16", "bf16"]
    else:  # fp16 convolutions are slow on CPU; bf16 only where the CPU has native bf16 (AMX)
        dtypes = ["fp32"] + (["bf16"] if cpu_has_fast_bf16() else [])
    batches = [int(b) for b in (args.batches or ("1" if quick else ("1,4,16" if device.type == "cuda" else "1,2"))).split(",")]
    repeat = args.repeat or (3 if quick else 5)
    rows: list[dict] = []
    profiles: list[dict] = []

    def record(**row):
        rows.append(row)
        fps = row["batch"] / row["seconds"]
        extra = f"  x{row['speedup']:.2f} vs plain" if row.get("speedup") else ""
        if row.get("official"):
            official, measured = row["official"]
            extra += f"  x{official / (row['seconds'] / row['batch']):.2f} vs official{'' if measured else ' (est.)'}"
        print(f"{row['stage']:<26} {row.get('kind', ''):<11} {row['dtype']:<5} {row['size']:<12} B={row['batch']:<3} "
              f"{row['seconds'] / row['batch']:8.4f} s/frame {fps:8.2f} fps  peak {row['peak_mb']:8.0f} MB{extra}",
              flush=True)

    print(f"# device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for dname in dtypes:
        dtype = DTYPES[dname]
        parser = build(FaceParser(), "bisenet", device, dtype)
        for (h, w) in (sizes if "parse" in stages else []):
            for b in batches:
                x = torch.rand(b, 3, h, w, device=device, dtype=dtype) * 2 - 1
                with torch.no_grad():
                    reset_peak(device)
                    s = timeit(lambda: parse_frames(parser, x), device, repeat)
                    record(stage="face parse", dtype=dname, size=f"{h}x{w}", batch=b, seconds=s, peak_mb=peak_memory_mb(device))
        # parsing smoothing (Eq. 6-7), on a short clip
        try:
            from vtoonify_core.temporal.smoothing import smooth_parsing
        except ImportError:
            smooth_parsing = None
        if smooth_parsing is not None and "smooth" in stages:
            h, w = sizes[0]
            t = 8 if quick else 16
            frames = torch.rand(t, 3, h, w, device=device) * 2 - 1
            with torch.no_grad():
                parsing = parse_frames(parser, frames.to(dtype)).float()
                reset_peak(device)
                s = timeit(lambda: smooth_parsing(parsing, frames, k=5), device, max(1, repeat // 2), warmup=0)
            record(stage="smooth parsing (DIS)", dtype="fp32", size=f"{h}x{w}", batch=t, seconds=s, peak_mb=peak_memory_mb(device))
        del parser
        if "style" in stages:
            encoder = build(StyleEncoder(), "psp", device, dtype)
            with torch.no_grad():
                crop = torch.rand(1, 3, 256, 256, device=device, dtype=dtype) * 2 - 1
                reset_peak(device)
                s = timeit(lambda: encoder(crop), device, repeat)
            record(stage="style extraction (pSp)", dtype=dname, size="256x256", batch=1, seconds=s,
                   peak_mb=peak_memory_mb(device))
            del encoder
        for kind in (args.kinds.split(",") if "generator" in stages else []):
            model = build(build_vtoonify(kind), kind, device, dtype)
            style = torch.randn(1, 18, 512, device=device, dtype=dtype)
            parser = build(FaceParser(), "bisenet", device, dtype)
            configs = ablation(device, args.plain, args.compile)
            if args.sets:
                wanted = args.sets.split(",")
                unknown = set(wanted) - set(configs)
                if unknown:
                    ap.error(f"--sets must name sets of {sorted(configs)}, got {args.sets}")
                configs = {name: c for name, c in configs.items() if name in wanted}
            for (h, w) in sizes:
                size = f"{h}x{w}->{4 * h}x{4 * w}"
                for b in batches:
                    x = torch.rand(b, 22, h, w, device=device, dtype=dtype) * 2 - 1
                    frames = x[:, :3].contiguous()
                    with torch.no_grad():
                        def run(switches):
                            model.set_fast_path(False, **switches)
                            return model(x, style, 0.5)

                        # one block per switch set, as a clip runs (switching channels_last re-lays the
                        # weights out, which must not land inside the timed calls; alternating sets call
                        # by call also re-allocates buffers of other shapes and measured 20-40% slower)
                        # a set with host-memory reuse is timed inside one scope, as the pipeline runs a clip
                        times, peaks = {}, {}
                        if args.interleave:
                            times, peaks = interleaved(model, x, style, configs, device, repeat)
                        for name, c in ({} if args.interleave else configs).items():
                            with reuse_host_memory(bool(c.get("reuse_host_memory")) and device.type == "cpu"):
                                run(c)
                                reset_peak(device)
                                times[name] = timeit(lambda c=c: run(c), device, repeat)
                                peaks[name] = peak_memory_mb(device)
                        for name in configs:
                            record(stage=f"generator {name}", kind=kind, dtype=dname, size=size, batch=b,
                                   seconds=times[name], peak_mb=peaks[name], plain_seconds=times.get("plain"),
                                   speedup=times["plain"] / times[name] if name != "plain" and "plain" in times
                                   else None,
                                   official=official_anchor(kind, dname, h, w, b), interleaved=args.interleave)
                        model.set_fast_path(not args.plain)

                        def end_to_end():
                            xp = parse_frames(parser, frames)
                            return model(torch.cat([frames, xp / 16], 1), style, 0.5)

                        reset_peak(device)
                        s = timeit(end_to_end, device, repeat)
                        record(stage="end to end", kind=kind, dtype=dname, size=size, batch=b,
                               seconds=s, peak_mb=peak_memory_mb(device))

                        bundle = VToonifyModel(generator=model, encoder=None, parser=parser, exstyles=None,
                                               device=device, dtype=dtype)
                        code = StyleCode(wplus=style.float().cpu(), backbone=model.backbone)
                        clip = torch.rand(2 * b, 3, h, w) * 2 - 1  # host frames, two chunks
                        reset_peak(device)
                        s = timeit(lambda: stylize(bundle, clip, code, 0.5, batch_size=b), device, max(1, repeat // 2))
                        record(stage="pipeline (host frames)", kind=kind, dtype=dname, size=size, batch=2 * b,
                               seconds=s, peak_mb=peak_memory_mb(device))
                        if args.profile and b == batches[-1] and (h, w) == sizes[0]:
                            profiles.append(profile_generator(model, x, style, device, kind, dname, size, b))
            del model, parser
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc)
    result = {
        "machine": {"device": str(device), "name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
                    "platform": platform.platform(), "cpu_threads": torch.get_num_threads()},
        "torch": torch.__version__, "date": stamp.isoformat(timespec="seconds"), "quick": quick, "rows": rows,
        "profiles": profiles,
    }
    path = out / f"pipeline-{device.type}-{stamp.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
