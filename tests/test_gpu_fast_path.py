"""CUDA: every fast-path switch, torch.compile and CUDA graphs against the plain path (skipped without a GPU)."""
from __future__ import annotations

import warnings

import pytest
import torch

from vtoonify_core import load_vtoonify

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TOL = 1e-3  # TF32 / cuDNN summation order


def run(model, x, s, **switches):
    model.set_fast_path(False, **switches)
    try:
        with torch.no_grad():
            return model(x, s, 0.5).float().cpu()
    finally:
        model.set_fast_path(True)


@pytest.mark.parametrize("switches", [dict(fast=True), dict(channels_last=True), dict(fast=True, fold_upsample=True),
                                      dict(fast=True, channels_last=True, fold_upsample=True, compile_mode="default"),
                                      dict(fast=True, channels_last=True, fold_upsample=True,
                                           compile_mode="reduce-overhead")])
def test_cuda_switch_equals_plain(vtoonify_d_path, reference_io, switches):
    m = load_vtoonify(vtoonify_d_path, device="cuda")
    x = reference_io["vtoonify_d.b.inputs"].cuda()
    s = reference_io["vtoonify_d.s_w"].cuda()
    plain = run(m, x, s)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="torch.compile")  # no silent fallback to eager
        fast = run(m, x, s, **switches)
        again = run(m, x, s, **switches)  # CUDA-graph replay: outputs are copies, not overwritten buffers
    assert (fast - plain).abs().max() < TOL
    assert torch.equal(fast, again)


def test_cuda_bf16_fold_is_finite(vtoonify_d_path, reference_io):
    m = load_vtoonify(vtoonify_d_path, device="cuda", dtype=torch.bfloat16)
    ref = reference_io["vtoonify_d.a.y_raw.ds0.5"]
    y = run(m, reference_io["vtoonify_d.a.inputs"].cuda().bfloat16(), reference_io["vtoonify_d.s_w"].cuda(),
            fast=True, channels_last=True, fold_upsample=True)
    assert torch.isfinite(y).all() and (y - ref).abs().max() / ref.abs().max() < 0.05
