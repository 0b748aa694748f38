"""CUDA correctness of the core (skipped without a GPU; run on the device machine)."""
from __future__ import annotations

import pytest
import torch

from vtoonify_core import load_face_parser, load_style_encoder, load_vtoonify, parse_frames

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_matches_the_official_reference(vtoonify_d_path, reference_io):
    m = load_vtoonify(vtoonify_d_path, device="cuda")
    x = reference_io["vtoonify_d.b.inputs"].cuda()
    s = reference_io["vtoonify_d.s_w"].cuda()
    with torch.no_grad():
        for fast in (False, True):
            m.fast = fast
            y = m(x, s, 0.5).cpu()
            assert (y - reference_io["vtoonify_d.b.y_raw.ds0.5"]).abs().max() < 1e-3  # TF32/cuDNN sums


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_precision_is_finite_and_close(vtoonify_d_path, reference_io, dtype):
    m = load_vtoonify(vtoonify_d_path, device="cuda", dtype=dtype)
    ref = reference_io["vtoonify_d.a.y_raw.ds0.5"]
    with torch.no_grad():
        y = m(reference_io["vtoonify_d.a.inputs"].cuda().to(dtype), reference_io["vtoonify_d.s_w"].cuda(), 0.5)
    assert torch.isfinite(y).all()
    assert (y.float().cpu() - ref).abs().max() / ref.abs().max() < 0.05


def test_cuda_encoder_and_parser(psp_path, bisenet_path, reference_io):
    enc = load_style_encoder(psp_path, device="cuda")
    parser = load_face_parser(bisenet_path, device="cuda")
    with torch.no_grad():
        z = enc(reference_io["psp.input"].cuda()).cpu()
        xp = parse_frames(parser, reference_io["bisenet.b.frame"].cuda()).cpu()
    assert (z - reference_io["psp.zplus"]).abs().max() < 1e-3
    assert (xp - reference_io["bisenet.b.x_p"]).abs().max() < 1e-3


# ---------------------------------------------------------------------------------------------- chunked processing
# (issue "Speed"): pinned memory and overlapped copies, peak memory flat in clip length, auto chunk size


def _cuda_model(vtoonify_d_path, bisenet_path, dtype):
    from vtoonify_core.models.bundle import load_model

    return load_model(vtoonify_d_path, None, bisenet_path, exstyle=None, device="cuda", dtype=dtype)


def _style(model):
    from vtoonify_core.types import StyleCode

    return StyleCode(torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(0)) * 0.5, model.backbone)


def _peak(fn) -> int:
    """Peak bytes allocated on the GPU while ``fn`` runs."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_overlapped_copies_equal_the_plain_path(vtoonify_d_path, bisenet_path, dtype):
    from vtoonify_core.pipeline.stylize import stylize
    from vtoonify_core.runtime.chunks import ChunkCopier

    model = _cuda_model(vtoonify_d_path, bisenet_path, dtype)
    style = _style(model)
    assert ChunkCopier(model.device, "cpu").asynchronous
    x = torch.rand(7, 3, 64, 64, generator=torch.Generator().manual_seed(1))  # CPU frames
    plain = stylize(model, x, style, 0.5, batch_size=2, input_range=(0, 1), overlap=False)
    over = stylize(model, x, style, 0.5, batch_size=2, input_range=(0, 1), overlap=True)
    assert torch.equal(plain, over)
    # channels-last uint8 frames (as ComfyUI's IMAGE permuted) and parsing maps, both on the CPU;
    # the results reach the sink in pinned host buffers, in order
    u8 = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    logits = torch.randn(7, 19, 64, 64, generator=torch.Generator().manual_seed(2)) * 4
    got = {}
    for overlap in (False, True):
        chunks = []
        stylize(model, u8, style, 0.5, parsing=logits, batch_size=3, overlap=overlap,
                sink=lambda i, y: chunks.append((i, y.is_pinned(), y.clone())))
        got[overlap] = chunks
    assert [(i, pinned) for i, pinned, _ in got[True]] == [(0, True), (3, True), (6, True)]
    assert all(torch.equal(a[2], b[2]) for a, b in zip(got[False], got[True]))
    # frames already on the GPU and the output kept there: no copies, same images
    on_gpu = stylize(model, x.cuda(), style, 0.5, batch_size=2, input_range=(0, 1), output_device="cuda")
    assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), plain)


def test_cuda_overlapped_oom_backoff(vtoonify_d_path, bisenet_path):
    """A simulated OOM on chunks above 2 frames: the prefetched chunk of the old size is dropped."""
    import dataclasses

    from vtoonify_core.pipeline.stylize import stylize

    model = _cuda_model(vtoonify_d_path, bisenet_path, torch.float32)
    inner = model.generator
    calls = []

    class Limited(torch.nn.Module):
        backbone, n_latent = inner.backbone, inner.n_latent

        def forward(self, x, s, d_s=0.5):
            calls.append(x.shape[0])
            if len(calls) > 1 and x.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return inner(x, s, d_s=d_s)

    style = _style(model)
    x = torch.rand(9, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ref = stylize(model, x, style, batch_size=1, input_range=(0, 1))
    out = stylize(dataclasses.replace(model, generator=Limited()), x, style, batch_size=3, input_range=(0, 1),
                  overlap=True)
    assert calls == [3, 3, 1, 1, 1, 1, 1, 1]  # 3 frames, then OOM on the next 3 -> 1 frame a chunk for the rest
    torch.testing.assert_close(out, ref, atol=2e-3, rtol=0)  # other chunk sizes: TF32 sums may differ


def test_cuda_peak_memory_is_flat_in_clip_length(vtoonify_d_path, bisenet_path):
    """A 4-chunk clip peaks (within a few %) where a 1-chunk clip does: frames and results travel
    chunk by chunk, nothing on the GPU grows with the number of frames."""
    from vtoonify_core.pipeline.stylize import stylize

    model = _cuda_model(vtoonify_d_path, bisenet_path, torch.bfloat16)
    style = _style(model)
    x = torch.rand(8, 3, 256, 256, generator=torch.Generator().manual_seed(4))  # 1024x1024 output

    def run(n):
        return lambda: stylize(model, x[:n], style, 0.5, batch_size=2, input_range=(0, 1))

    _peak(run(2))  # warm-up: baked weights, cuDNN
    one, four = _peak(run(2)), _peak(run(8))
    assert four <= 1.05 * one, (one, four)


def test_cuda_estimate_bounds_the_measured_peak(vtoonify_d_path, bisenet_path):
    """What one more frame adds to the GPU peak is below :func:`frame_memory_bytes`, within 3x."""
    from vtoonify_core.pipeline.stylize import stylize
    from vtoonify_core.runtime.memory import frame_memory_bytes

    def per_frame(dtype: torch.dtype) -> float:
        model = _cuda_model(vtoonify_d_path, bisenet_path, dtype)
        style = _style(model)
        x = torch.rand(3, 3, 256, 256, generator=torch.Generator().manual_seed(5))
        _peak(lambda: stylize(model, x[:1], style, batch_size=1, input_range=(0, 1)))  # warm-up
        p1 = _peak(lambda: stylize(model, x[:1], style, batch_size=1, input_range=(0, 1)))
        p3 = _peak(lambda: stylize(model, x, style, batch_size=3, input_range=(0, 1)))
        return (p3 - p1) / 2

    for dtype in (torch.float32, torch.bfloat16):
        measured = per_frame(dtype)
        torch.cuda.empty_cache()
        est = frame_memory_bytes("dualstylegan", 256, 256, dtype)
        assert measured <= est <= 3 * measured, (dtype, measured, est)


def test_cuda_auto_batch_keeps_the_peak_under_8_gib(vtoonify_d_path, bisenet_path):
    """The issue's target: < 8 GB of GPU memory at 1024x1024 output, whatever the number of frames."""
    from vtoonify_core.pipeline.stylize import stylize
    from vtoonify_core.runtime.memory import auto_batch_size

    model = _cuda_model(vtoonify_d_path, bisenet_path, torch.bfloat16)
    style = _style(model)
    assert auto_batch_size(model, 256, 256) > 1
    x = torch.rand(24, 3, 256, 256, generator=torch.Generator().manual_seed(6))
    ooms, out = [], []
    peak = _peak(lambda: out.append(stylize(model, x, style, 0.5, batch_size=0, input_range=(0, 1),
                                            on_oom=ooms.append)))
    assert not ooms and peak < 8 * 2 ** 30, peak
    assert out[0].shape == (24, 3, 1024, 1024) and torch.isfinite(out[0]).all()
