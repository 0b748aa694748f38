"""Chunked processing (issue "Speed"): automatic chunk size from free memory, overlapped copies.

CPU only (the CUDA side, pinned memory and streams, is in ``tests/test_gpu.py``):

* :func:`frame_memory_bytes` against the peak RSS of the real network (stand-in weights) in a
  fresh subprocess;
* :func:`auto_batch_size` from injected free memory and budgets, and ``batch_size=0`` in
  :func:`stylize` / :func:`stylize_clip`;
* :func:`run_chunks_overlapped` (prefetch, results handed out one chunk late) against the plain
  schedule: same results in the same order, after out-of-memory back-offs and interrupts;
* :func:`style_from_image` with colour transfer needs no face.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import vtoonify_core as P
from vtoonify_core.errors import OutOfMemoryError
from vtoonify_core.runtime import chunks, device, memory

ROOT = Path(__file__).resolve().parents[1]
GiB = 2 ** 30


@pytest.fixture(scope="module")
def bundle_t(vtoonify_t_path, bisenet_path) -> P.VToonifyModel:
    return P.load_model(vtoonify_t_path, None, bisenet_path)


@pytest.fixture(scope="module")
def bundle_d(vtoonify_d_path, bisenet_path, exstyle_path) -> P.VToonifyModel:
    return P.load_model(vtoonify_d_path, None, bisenet_path)


def frames(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` random frames ``[n, 3, size, size]`` in [0, 1]."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def random_style(model: P.VToonifyModel, seed: int = 0) -> P.StyleCode:
    return P.StyleCode(torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(seed)) * 0.5, model.backbone)


class Counting(torch.nn.Module):
    """Wraps a VToonify network: records the batch of each call; raises CUDA OOM above ``max_batch``."""

    def __init__(self, inner: torch.nn.Module, max_batch: int | None = None):
        super().__init__()
        self.inner, self.max_batch, self.calls = inner, max_batch, []

    @property
    def backbone(self) -> str:
        return self.inner.backbone

    @property
    def n_latent(self) -> int:
        return self.inner.n_latent

    def forward(self, x, style, d_s=0.5):
        self.calls.append(int(x.shape[0]))
        if self.max_batch is not None and x.shape[0] > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.inner(x, style, d_s=d_s)


# ---------------------------------------------------------------------------------------------- memory estimate


def test_frame_memory_estimate_follows_the_network():
    fp32 = memory.frame_memory_bytes("dualstylegan", 256, 256, torch.float32)
    bf16 = memory.frame_memory_bytes("dualstylegan", 256, 256, torch.bfloat16)
    # activations scale with the pixels (4x the pixels: 4x the bytes, up to the (2h+1) borders)
    ratio = memory.frame_memory_bytes("dualstylegan", 512, 512, torch.float32) / fp32
    assert 3.95 < ratio < 4.05
    # half precision halves the maps; the float32 parts (AdaIN statistics, outputs) remain
    assert 0.5 < bf16 / fp32 < 0.6
    # the last stage dominates: at least five 32-channel maps at 4x the input size
    assert fp32 > 5 * 32 * (4 * 256) ** 2 * 4
    # sides are rounded up to the multiple of 8 VToonify runs at
    assert memory.frame_memory_bytes("toonify", 250, 249, torch.float32) == memory.frame_memory_bytes("toonify", 256, 256,
                                                                                            torch.float32)
    # one frame of the 1024x1024 target fits the 8 GiB budget several times over
    assert 16 * bf16 < 8 * GiB
    with pytest.raises(ValueError, match="unknown backbone"):
        memory.frame_memory_bytes("stylegan3", 64, 64, torch.float32)
    with pytest.raises(ValueError, match="at least 1x1"):
        memory.frame_memory_bytes("toonify", 0, 64, torch.float32)


MEASURE = textwrap.dedent('''
    """Peak RSS of one-frame chunks of VToonify-D on CPU, by size and path (fast / plain)."""
    import json, re, sys
    import torch
    import vtoonify_core as P

    def status(key):
        with open("/proc/self/status") as f:
            return int(re.search(key + r":\\s+(\\d+)", f.read()).group(1)) * 1024

    torch.set_num_threads(2)
    checkpoint, parser, sizes = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3].split(",")]
    model = P.load_model(checkpoint, None, parser, exstyle=None)
    style = P.StyleCode(torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(0)) * 0.5, model.backbone)

    def peak(size):
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak (VmHWM) restarts from the current RSS
        before = status("VmRSS")
        P.stylize(model, x, style, 0.5, batch_size=1, sink=lambda i, y: None)
        return status("VmHWM") - before

    result = {}
    for path in ("fast", "plain"):
        # without host-memory reuse: the RSS then follows the live tensors, not the heap's high-water mark
        model.generator.set_fast_path(path == "fast", reuse_host_memory=False)
        peak(16), peak(16)  # weights re-laid out, baked styles and kernels cached
        result[path] = {size: peak(size) for size in sizes}
    print(json.dumps(result))
''')


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status and clear_refs (Linux)")
def test_estimate_bounds_the_measured_peak(vtoonify_d_path, bisenet_path):
    """In a fresh process, the peak RSS of a one-frame chunk (VToonify-D, parsed inside, fp32) at
    64x64 and 128x128, on the fast and the plain path, against :func:`frame_memory_bytes`.

    glibc's mmap threshold is fixed so that freed blocks go back to the system at once: the RSS
    then follows the live tensors (as ``torch.cuda.max_memory_allocated`` does on a GPU) rather
    than the heap's high-water mark. A 16x16 frame measures what does not grow with the frame
    (per-layer weight temporaries: the plain path's modulated weights, oneDNN reorders).
    """
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("cannot reset the peak RSS (/proc/self/clear_refs not writable)")
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    run = subprocess.run([sys.executable, "-c", MEASURE, str(vtoonify_d_path), str(bisenet_path), "16,64,128"],
                         env=env, capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert run.returncode == 0, run.stderr[-3000:]
    measured = {path: {int(k): v for k, v in sizes.items()} for path, sizes in json.loads(run.stdout).items()}
    est = {s: memory.frame_memory_bytes("dualstylegan", s, s, torch.float32) for s in (64, 128)}
    report = {path: {s: f"{m[s] / 2 ** 20:.1f} MiB" for s in m} for path, m in measured.items()}
    print("measured peak", report, "estimate", {s: f"{v / 2 ** 20:.1f} MiB" for s, v in est.items()})
    for path, m in measured.items():
        fixed = m[16]
        for s in (64, 128):
            assert m[s] <= est[s] + fixed, (path, s, report)
        # what grows with the frame: bounded by the estimate, which is not loose by more than 3x
        grown, grown_est = m[128] - m[64], est[128] - est[64]
        assert 0 < grown <= grown_est <= 3 * grown, (path, grown, grown_est)


# ---------------------------------------------------------------------------------------------- automatic chunk size


def fake_model(backbone: str = "dualstylegan", dtype: torch.dtype = torch.bfloat16, device: str = "cpu"):
    return SimpleNamespace(backbone=backbone, dtype=dtype, device=torch.device(device))


def test_auto_batch_size_from_free_memory_and_budget():
    m = fake_model()
    per = memory.frame_memory_bytes(m.backbone, 256, 256, m.dtype)
    big = 1 << 50

    def auto(**kw):
        return memory.auto_batch_size(m, 256, 256, **kw)

    # free memory: 80% of it, whole frames only
    assert auto(free_bytes=int(5.5 * per / 0.8), budget_bytes=big) == 5
    assert auto(free_bytes=int(5.5 * per / 0.5), budget_bytes=big, fraction=0.5) == 5
    assert auto(free_bytes=int(4.99 * per / 0.8), budget_bytes=big) == 4
    # the budget caps what the free memory allows
    assert auto(free_bytes=big, budget_bytes=int(3.5 * per)) == 3
    assert auto(free_bytes=int(2.2 * per / 0.8), budget_bytes=int(3.5 * per)) == 2
    # at least one frame (the out-of-memory back-off is the safety net), at most max_batch
    assert auto(free_bytes=per // 10, budget_bytes=big) == 1
    assert auto(free_bytes=0, budget_bytes=big) == 1
    assert auto(free_bytes=big, budget_bytes=big) == memory.DEFAULT_MAX_BATCH
    assert auto(free_bytes=big, budget_bytes=big, max_batch=5) == 5
    # memory a frame needs beyond the network (e.g. resizing given parsing maps) counts
    assert auto(free_bytes=int(6.5 * per / 0.8), budget_bytes=big, extra_frame_bytes=per) == 3
    # the default budget: the 8 GiB target at 1024x1024 output
    n = auto(free_bytes=big, max_batch=1000)
    assert n * per <= 8 * GiB < (n + 1) * per
    assert auto(free_bytes=big) == min(n, memory.DEFAULT_MAX_BATCH)
    # fp32 frames are larger: fewer of them
    m32 = fake_model(dtype=torch.float32)
    assert memory.auto_batch_size(m32, 256, 256, free_bytes=int(5.5 * per / 0.8), budget_bytes=big) < 5
    for kw, msg in ((dict(budget_bytes=0), "budget_bytes"), (dict(max_batch=0), "max_batch"),
                    (dict(fraction=0.0), "fraction"), (dict(fraction=1.5), "fraction"),
                    (dict(extra_frame_bytes=-1), "extra_frame_bytes")):
        with pytest.raises(ValueError, match=msg):
            auto(free_bytes=big, **kw)


def test_auto_batch_size_reads_free_memory_of_the_device(monkeypatch):
    m = fake_model(device="cpu")
    per = memory.frame_memory_bytes(m.backbone, 128, 128, m.dtype)
    monkeypatch.setattr(device, "_available_system_memory", lambda: int(3.3 * per / 0.8))
    assert device.free_memory_bytes("cpu") == int(3.3 * per / 0.8)
    assert memory.auto_batch_size(m, 128, 128) == 3
    monkeypatch.setattr(device, "_available_system_memory", lambda: None)  # unknown: the budget decides
    assert memory.auto_batch_size(m, 128, 128, budget_bytes=int(2.5 * per)) == 2
    assert device.free_memory_bytes("meta") is None


@pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="Linux /proc/meminfo")
def test_free_system_memory_is_meminfo_available():
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
    total = int(fields["MemTotal"].split()[0]) * 1024
    free = device.free_memory_bytes(torch.device("cpu"))
    assert 0 < free <= total


def test_stylize_auto_batch_equals_batch_one(bundle_t, monkeypatch):
    x = frames(5, 32, seed=3)
    style = random_style(bundle_t, 1)
    ref = P.stylize(bundle_t, x, style, batch_size=1, input_range=(0, 1))
    counting = Counting(bundle_t.generator)
    wrapped = dataclasses.replace(bundle_t, generator=counting)
    auto = P.stylize(wrapped, x, style, batch_size=0, input_range=(0, 1))
    assert counting.calls == [5]  # tiny frames, plenty of memory: one chunk
    torch.testing.assert_close(auto, ref, atol=1e-5, rtol=1e-5)
    # with room for two frames: chunks of 2, 2, 1 and the same images
    per = memory.frame_memory_bytes("toonify", 32, 32, torch.float32)
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: int(2.5 * per / memory.FREE_MEMORY_FRACTION))
    counting.calls.clear()
    auto2 = P.stylize(wrapped, x, style, batch_size=0, input_range=(0, 1))
    assert counting.calls == [2, 2, 1]
    torch.testing.assert_close(auto2, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"batch_size: must be 0 \(automatic"):
        P.stylize(bundle_t, x, style, batch_size=-1)


def test_stylize_clip_auto_batch_uses_the_planned_size(bundle_t, monkeypatch):
    """Whole mode pads 20x20 frames to 24x24: the automatic size is computed for 24x24."""
    seen = []
    real = memory.auto_batch_size

    def spy(model, height, width, **kw):
        seen.append((height, width, kw.get("extra_frame_bytes", 0)))
        return real(model, height, width, free_bytes=int(2.5 * memory.frame_memory_bytes(model.backbone, height, width,
                                                                                    model.dtype) / 0.8), **kw)

    monkeypatch.setattr(memory, "auto_batch_size", spy)
    counting = Counting(bundle_t.generator)
    wrapped = dataclasses.replace(bundle_t, generator=counting)
    x = frames(3, 20, seed=4)
    style = random_style(bundle_t, 2)
    out, plan = P.stylize_clip(wrapped, x, style, crop_mode="whole", batch_size=0, input_range=(0, 1))
    assert seen == [(24, 24, 0)] and counting.calls == [2, 1] and out.shape == (3, 3, 80, 80)
    ref, _ = P.stylize_clip(bundle_t, x, style, crop_mode="whole", batch_size=3, input_range=(0, 1))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # parsing maps at the frame size are padded (a float32 copy at the input size): counted per frame
    seen.clear()
    logits = torch.randn(3, 19, 20, 20)
    P.stylize_clip(wrapped, x, style, crop_mode="whole", parsing=logits, batch_size=0, input_range=(0, 1))
    assert seen == [(24, 24, 19 * 4 * 24 * 24)]


# ---------------------------------------------------------------------------------------------- overlapped runner


def run_schedule(overlap: bool, total: int = 10, batch: int = 4, *, oom=None, fail_at=None, interrupt_at=None,
                 load_oom=None):
    """Run a synthetic job through run_chunks_overlapped; return (events, results, progress, error)."""
    data = torch.arange(total * 2, dtype=torch.float32).reshape(total, 2)
    events, results, progress = [], [], []
    checks = [0]

    def load(i, j):
        events.append(("load", i, j))
        if load_oom is not None and load_oom(i, j):
            raise RuntimeError("CUDA out of memory (simulated, while uploading)")
        return (data[i:j],)

    def compute(inputs, i, j):
        events.append(("compute", i, j))
        assert torch.equal(inputs[0], data[i:j]), "the chunk's own inputs"  # never a stale prefetch
        if oom is not None and oom(i, j):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        if fail_at is not None and i >= fail_at:
            raise ValueError("boom")
        return inputs[0] * 3 + 1

    def check():
        checks[0] += 1
        if interrupt_at is not None and checks[0] == interrupt_at:
            raise KeyError("interrupted")

    error = None
    try:
        for i, y in chunks.run_chunks_overlapped(load, compute, total, batch, device="cpu", output_device="cpu",
                                            progress=lambda d, t: progress.append((d, t)), check_interrupt=check,
                                            on_oom=lambda n: events.append(("oom", n)), overlap=overlap):
            events.append(("yield", i))
            results.append((i, y.clone()))
    except Exception as exc:  # noqa: BLE001
        error = exc
    return events, results, progress, error


def same_results(a, b):
    return len(a) == len(b) and all(i == j and torch.equal(x, y) for (i, x), (j, y) in zip(a, b))


def expected(total: int, starts_stops) -> list:
    data = torch.arange(total * 2, dtype=torch.float32).reshape(total, 2)
    return [(i, data[i:j] * 3 + 1) for i, j in starts_stops]


def test_overlapped_runner_prefetches_and_keeps_order():
    ev_plain, res_plain, prog_plain, err = run_schedule(False)
    assert err is None
    ev, res, prog, err = run_schedule(True)
    assert err is None
    want = expected(10, [(0, 4), (4, 8), (8, 10)])
    assert same_results(res_plain, want) and same_results(res, want)
    assert prog == prog_plain == [(4, 10), (8, 10), (10, 10)]
    # plain: load, compute, hand out, one chunk after the other
    assert ev_plain == [("load", 0, 4), ("compute", 0, 4), ("yield", 0), ("load", 4, 8), ("compute", 4, 8),
                        ("yield", 4), ("load", 8, 10), ("compute", 8, 10), ("yield", 8)]
    # overlapped: the next chunk is loaded right after a chunk is launched, and a result is handed
    # out once the next chunk has been launched (its copy runs alongside)
    assert ev == [("load", 0, 4), ("compute", 0, 4), ("load", 4, 8), ("compute", 4, 8), ("load", 8, 10),
                  ("yield", 0), ("compute", 8, 10), ("yield", 4), ("yield", 8)]


@pytest.mark.parametrize("overlap", [False, True])
def test_overlapped_runner_oom_backoff(overlap):
    """OOM above 2 frames once past frame 4: 4 -> (4 OOM) -> 2, 2, 2; same results as without OOM."""
    ev, res, prog, err = run_schedule(overlap, oom=lambda i, j: i >= 4 and j - i > 2)
    assert err is None
    assert same_results(res, expected(10, [(0, 4), (4, 6), (6, 8), (8, 10)]))
    assert prog == [(4, 10), (6, 10), (8, 10), (10, 10)]
    computes = [e[1:] for e in ev if e[0] == "compute"]
    assert computes == [(0, 4), (4, 8), (4, 6), (6, 8), (8, 10)]
    assert ("oom", 2) in ev
    if overlap:  # the chunk of 4 prefetched before the back-off is reloaded at the new size
        assert ev.index(("load", 4, 8)) < ev.index(("oom", 2)) < ev.index(("load", 4, 6))
        # the finished chunk is still handed out (first) although the next one failed
        assert ev.index(("yield", 0)) < ev.index(("compute", 4, 6))


@pytest.mark.parametrize("overlap", [False, True])
def test_overlapped_runner_failed_prefetch_is_retried_in_turn(overlap):
    """An upload that runs out of memory: dropped as a prefetch, then backed off when its turn comes."""
    ev, res, prog, err = run_schedule(overlap, load_oom=lambda i, j: i >= 4 and j - i > 2)
    assert err is None
    assert same_results(res, expected(10, [(0, 4), (4, 6), (6, 8), (8, 10)]))
    assert [e[1:] for e in ev if e[0] == "compute"] == [(0, 4), (4, 6), (6, 8), (8, 10)]
    assert ev.count(("load", 4, 8)) == (2 if overlap else 1)  # the prefetch, then the chunk's own try


@pytest.mark.parametrize("overlap", [False, True])
def test_overlapped_runner_interrupt_and_errors_after_finished_chunks(overlap):
    # interrupted before the third chunk: the first two are handed out, then the interrupt propagates
    ev, res, prog, err = run_schedule(overlap, batch=2, interrupt_at=3)
    assert isinstance(err, KeyError)
    assert same_results(res, expected(10, [(0, 2), (2, 4)])) and prog == [(2, 10), (4, 10)]
    assert [e for e in ev if e[0] == "compute"] == [("compute", 0, 2), ("compute", 2, 4)]
    # an error in the third chunk: the same
    ev, res, prog, err = run_schedule(overlap, batch=2, fail_at=4)
    assert isinstance(err, ValueError) and same_results(res, expected(10, [(0, 2), (2, 4)]))
    # a single frame out of memory: re-raised with advice, after the finished chunks
    ev, res, prog, err = run_schedule(overlap, batch=2, oom=lambda i, j: i >= 4)
    assert isinstance(err, OutOfMemoryError) and "single frame" in str(err)
    assert "CUDA out of memory" not in str(err) and err.__suppress_context__  # the allocator's text is logged
    assert same_results(res, expected(10, [(0, 2), (2, 4)]))
    with pytest.raises(P.InputError, match="batch_size"):
        list(chunks.run_chunks_overlapped(lambda i, j: (), lambda _, i, j: torch.zeros(1), 3, 0, device="cpu"))


def test_cpu_copies_never_pin(monkeypatch):
    """On CPU the copier makes plain copies: no pinned memory (a CPU-only PyTorch has none)."""
    def no_pin(self, *a, **k):
        raise AssertionError("pin_memory called on CPU")

    monkeypatch.setattr(torch.Tensor, "pin_memory", no_pin)
    copier = chunks.ChunkCopier("cpu", "cpu")
    assert not copier.asynchronous
    x = torch.arange(6.0).reshape(2, 3).t()  # a strided view keeps its strides, as .to() does
    up = copier.upload((x,))
    assert up.event is None and up.tensors[0] is x and copier.ready(up)[0] is x
    down = copier.download(x * 2)
    assert down.event is None and torch.equal(copier.collect(down), x * 2)
    assert chunks.ChunkCopier("cpu", None).download(x).tensor is x


# ---------------------------------------------------------------------------------------------- stylize end to end


def test_stylize_overlap_is_bit_identical(bundle_d):
    x = frames(5, 32, seed=5)
    style = random_style(bundle_d, 3)
    plain = P.stylize(bundle_d, x, style, 0.4, batch_size=2, input_range=(0, 1), overlap=False)
    over = P.stylize(bundle_d, x, style, 0.4, batch_size=2, input_range=(0, 1), overlap=True)
    assert torch.equal(plain, over)
    # uint8 frames, given parsing maps, a sink: the same chunks, in order
    u8 = (x * 255).round().to(torch.uint8)
    logits = torch.randn(5, 19, 32, 32, generator=torch.Generator().manual_seed(6)) * 4
    got = {}
    for overlap in (False, True):
        chunks = []
        P.stylize(bundle_d, u8, style, 0.4, parsing=logits, batch_size=2, overlap=overlap,
                  sink=lambda i, y: chunks.append((i, y.clone())))
        got[overlap] = chunks
    assert [i for i, _ in got[True]] == [0, 2, 4]
    assert same_results(got[False], got[True])


def test_stylize_overlap_oom_backoff_and_interrupt(bundle_t):
    x = frames(5, 32, seed=7)
    style = random_style(bundle_t, 4)
    ref = P.stylize(bundle_t, x, style, batch_size=5, input_range=(0, 1))
    for overlap in (False, True):
        counting = Counting(bundle_t.generator, max_batch=2)
        wrapped = dataclasses.replace(bundle_t, generator=counting)
        progress, sizes = [], []
        out = P.stylize(wrapped, x, style, batch_size=4, input_range=(0, 1), overlap=overlap,
                        progress=lambda d, t: progress.append(d), on_oom=sizes.append)
        assert counting.calls == [4, 2, 2, 1] and sizes == [2] and progress == [2, 4, 5]
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        # interrupted before the second chunk: the first one reached the sink, nothing else ran
        counting = Counting(bundle_t.generator)
        wrapped = dataclasses.replace(bundle_t, generator=counting)
        calls, chunks = [0], []

        def check():
            calls[0] += 1
            if calls[0] == 2:
                raise InterruptedError("stop")

        with pytest.raises(InterruptedError):
            P.stylize(wrapped, x, style, batch_size=2, input_range=(0, 1), overlap=overlap, check_interrupt=check,
                      sink=lambda i, y: chunks.append(i))
        assert counting.calls == [2] and chunks == [0]


def test_stylize_clip_overlap_whole_and_face_mode(bundle_t):
    """Whole mode pads on the device; face mode moves the uint8 crops and resizes and crops given
    frame-size parsing maps on the device: the same images with and without overlap."""
    style = random_style(bundle_t, 5)
    x = frames(3, 44, seed=8)
    got = [P.stylize_clip(bundle_t, x, style, crop_mode="whole", batch_size=2, input_range=(0, 1), overlap=o)[0]
           for o in (False, True)]
    assert torch.equal(got[0], got[1]) and got[0].shape == (3, 3, 176, 176)
    skdata = pytest.importorskip("skimage.data")
    from vtoonify_core import faces

    try:
        faces.get_backend("dlib")
    except faces.FaceBackendUnavailableError as exc:
        pytest.skip(f"face detection backend missing: {exc}")
    face = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1)[None].float() / 255
    clip = torch.nn.functional.interpolate(face, size=(160, 160), mode="area").repeat(3, 1, 1, 1)
    clip[1:] = clip[1:].roll(2 * 1, dims=3)  # frames that differ a little
    logits = torch.randn(3, 19, 160, 160, generator=torch.Generator().manual_seed(9))
    got = [P.stylize_clip(bundle_t, clip, style, crop_mode="face", parsing=logits, face_padding=32, batch_size=2,
                          input_range=(0, 1), overlap=o) for o in (False, True)]
    assert got[0][1].mode == "face" and torch.equal(got[0][0], got[1][0])


# ---------------------------------------------------------------------------------------------- style from an image


def test_colour_transfer_style_needs_no_face(bundle_d, monkeypatch):
    """VToonify-D with colour transfer: the code is the exemplar's alone (official ``s_w = exstyle``),
    so an image without a face (or without a face detector) still gives it; without colour transfer
    the face is needed."""
    from vtoonify_core import faces
    from vtoonify_core.styles import codes

    blank = np.full((120, 160, 3), 128, np.uint8)
    blank[:, :80] = 30
    with torch.no_grad():
        ex = bundle_d.generator.zplus2wplus(bundle_d.exstyles.codes[1:2]).float()

    def no_face(image, backend="dlib", **kw):
        return []

    monkeypatch.setattr(codes, "detect_faces", no_face)
    style, preview = P.style_from_image(bundle_d, blank, 1, True)
    assert style.color_transfer and style.style_id == 1 and torch.equal(style.wplus, ex)
    assert preview.shape == (256, 256, 3) and preview.dtype == np.uint8
    assert preview[:, :64].max() <= 31 and preview[:, -64:].min() >= 127  # the centre square of the image, resized
    with pytest.raises(faces.NoFaceError):
        P.style_from_image(dataclasses.replace(bundle_d, encoder=torch.nn.Identity()), blank, 1, False)

    def no_backend(image, backend="dlib", **kw):
        raise faces.FaceBackendUnavailableError("dlib is not installed (simulated)")

    monkeypatch.setattr(codes, "detect_faces", no_backend)
    style2, _ = P.style_from_image(bundle_d, blank, 1, True)
    assert torch.equal(style2.wplus, ex)
    with pytest.raises(P.InputError, match="style_id"):  # arguments are still checked first
        P.style_from_image(bundle_d, blank, 9, True)
