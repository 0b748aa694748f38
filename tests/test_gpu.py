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
