"""VToonify-T and VToonify-D equal the official forward on official-layout checkpoints.

The reference outputs were computed by the official code on the seed-0 stand-in weights; the
weights here are rebuilt from the key tables by our own builder and saved in the official file
layout, then loaded through the public API.
"""
from __future__ import annotations

import pytest
import torch

import vtoonify_core
from vtoonify_core import CheckpointError, load_vtoonify
from vtoonify_core.convert import convert
from vtoonify_core.testing import standin

TOL = 1e-4


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


def test_backbone_is_detected_from_keys(vtoonify_t, vtoonify_d):
    assert vtoonify_t.backbone == "toonify" and vtoonify_t.kind == "vtoonify_t"
    assert vtoonify_d.backbone == "dualstylegan" and vtoonify_d.kind == "vtoonify_d"


@pytest.mark.parametrize("kind", ["vtoonify_t", "vtoonify_d"])
def test_state_dict_layout_is_the_official_one(kind):
    rows = standin.read_table(kind)
    with torch.device("meta"):
        sd = vtoonify_core.models.build_vtoonify(kind).state_dict()
    assert list(sd) == [r.name for r in rows]
    assert [tuple(v.shape) for v in sd.values()] == [r.shape for r in rows]


@pytest.mark.parametrize("kind", ["vtoonify_t", "vtoonify_d"])
def test_zplus2wplus_is_the_mapping_network(kind, reference_io, request):
    m = request.getfixturevalue("vtoonify_" + kind[-1])
    with torch.no_grad():
        w = m.zplus2wplus(reference_io["psp.zplus"])
    assert maxdiff(w, reference_io[f"{kind}.wplus_content"]) < TOL


@pytest.mark.parametrize("case", ["a", "b"])
def test_vtoonify_t_equals_official(vtoonify_t, reference_io, case):
    x = reference_io[f"vtoonify_t.{case}.inputs"]
    with torch.no_grad():
        y = vtoonify_t(x, reference_io["vtoonify_t.s_w"], d_s=0.5)
    assert y.shape == (x.shape[0], 3, 4 * x.shape[2], 4 * x.shape[3])
    assert maxdiff(y, reference_io[f"vtoonify_t.{case}.y_raw"]) < TOL


def test_vtoonify_t_ignores_style_degree(vtoonify_t, reference_io):
    x = reference_io["vtoonify_t.a.inputs"]
    s = reference_io["vtoonify_t.s_w"]
    with torch.no_grad():
        assert torch.equal(vtoonify_t(x, s, d_s=0.0), vtoonify_t(x, s, d_s=1.0))


@pytest.mark.parametrize("case", ["a", "b"])
@pytest.mark.parametrize("d_s", ["0.0", "0.5", "1.0"])
def test_vtoonify_d_equals_official_at_each_style_degree(vtoonify_d, reference_io, case, d_s):
    x = reference_io[f"vtoonify_d.{case}.inputs"]
    with torch.no_grad():
        y, masks = vtoonify_d(x, reference_io["vtoonify_d.s_w"], d_s=float(d_s), return_mask=True)
    assert maxdiff(y, reference_io[f"vtoonify_d.{case}.y_raw.ds{d_s}"]) < TOL
    if d_s == "0.5":
        for i, m_E in enumerate(masks):
            assert maxdiff(m_E, reference_io[f"vtoonify_d.{case}.mask{i}.ds0.5"]) < TOL
            assert m_E.shape[-1] == x.shape[-1] // 2 ** (3 - i)


@pytest.mark.parametrize("case", ["a", "b"])
def test_vtoonify_d_color_transfer_uses_the_exemplar_code(vtoonify_d, reference_io, case):
    with torch.no_grad():
        w_ex = vtoonify_d.zplus2wplus(reference_io["vtoonify_d.zplus_exstyle"])
        assert maxdiff(w_ex, reference_io["vtoonify_d.wplus_exstyle"]) < TOL
        # without colour transfer: structure layers 0-6 from the exemplar, the rest from the face
        s_w = vtoonify_d.zplus2wplus(reference_io["psp.zplus"])
        s_w[:, :7] = w_ex[:, :7]
        assert maxdiff(s_w, reference_io["vtoonify_d.s_w"]) < TOL
        y = vtoonify_d(reference_io[f"vtoonify_d.{case}.inputs"], w_ex, d_s=0.5)
    assert maxdiff(y, reference_io[f"vtoonify_d.{case}.y_raw.color_transfer.ds0.5"]) < TOL


@pytest.mark.parametrize("key", [
    "encoder.0.0.weight",                          # first encoder conv
    "res.6.conv2.0.weight",                        # last ModRes block (d_s path)
    "fusion_out.3.linear.2.weight",                # style-degree MLP of the last fusion
    "generator.generator.to_rgbs.7.conv.modulation.bias",  # style vector 17
])
def test_reference_check_catches_a_wrong_layer(vtoonify_d, reference_io, key):
    """The equivalence check is not a tolerance game: 10% off in any one tensor fails it."""
    x = reference_io["vtoonify_d.a.inputs"]
    p = dict(vtoonify_d.named_parameters())[key]
    saved = p.detach().clone()
    with torch.no_grad():
        p.mul_(1.1)
        try:
            y = vtoonify_d(x, reference_io["vtoonify_d.s_w"], d_s=0.5)
        finally:
            p.copy_(saved)
    assert maxdiff(y, reference_io["vtoonify_d.a.y_raw.ds0.5"]) > TOL


def test_size_not_multiple_of_8_is_a_clear_error(vtoonify_t, reference_io):
    x = torch.zeros(1, 22, 60, 64)
    with pytest.raises(ValueError, match="multiples of 8"):
        vtoonify_t(x, reference_io["vtoonify_t.s_w"])


def test_style_must_be_wplus(vtoonify_t):
    with pytest.raises(ValueError, match=r"W\+ code"):
        vtoonify_t(torch.zeros(1, 22, 64, 64), torch.zeros(1, 14, 512))


def test_converted_safetensors_gives_identical_outputs(vtoonify_d_path, vtoonify_d, reference_io, tmp_path):
    dst = tmp_path / "vtoonify_s_d.safetensors"
    meta = convert(vtoonify_d_path, dst)
    assert meta["kind"] == "vtoonify_d" and meta["backbone"] == "dualstylegan"
    m2 = load_vtoonify(dst)
    x = reference_io["vtoonify_d.b.inputs"]
    with torch.no_grad():
        assert torch.equal(m2(x, reference_io["vtoonify_d.s_w"], 0.5), vtoonify_d(x, reference_io["vtoonify_d.s_w"], 0.5))


def test_wrong_kind_is_refused(bisenet_path):
    with pytest.raises(CheckpointError, match="BiSeNet face parser.*not a VToonify"):
        load_vtoonify(bisenet_path)


@pytest.mark.parametrize("dtype,rel_tol", [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_half_precision_stays_close_to_fp32(vtoonify_d_path, reference_io, dtype, rel_tol):
    """fp16/bf16 stay within a stated fraction of the output range of fp32, with no NaN."""
    m = load_vtoonify(vtoonify_d_path, dtype=dtype)
    x = reference_io["vtoonify_d.a.inputs"]
    ref = reference_io["vtoonify_d.a.y_raw.ds0.5"]
    with torch.no_grad():
        y = m(x.to(dtype), reference_io["vtoonify_d.s_w"].to(dtype), 0.5)
    assert y.dtype == dtype and torch.isfinite(y).all()
    rel = maxdiff(y, ref) / ref.abs().max().item()
    assert rel < rel_tol, rel


@pytest.mark.parametrize("kind", ["vtoonify_t", "vtoonify_d"])
def test_fast_path_equals_plain_path(kind, reference_io, request):
    """Baking the style into the decoder weights once per clip changes nothing but the speed."""
    m = request.getfixturevalue("vtoonify_" + kind[-1])
    x = reference_io[f"{kind}.b.inputs"]
    s = reference_io[f"{kind}.s_w"]
    with torch.no_grad():
        m.fast = False
        plain = m(x, s.expand(2, -1, -1), 0.5)
        m.fast = True
        fast = m(x, s, 0.5)
        fast_again = m(x, s, 0.5)  # served from the bake cache
        mixed = m(x, torch.cat([s, s * 0.9]), 0.5)  # two styles: falls back to per-sample modulation
        m.fast = False
        mixed_plain = m(x, torch.cat([s, s * 0.9]), 0.5)
        m.fast = True
    assert maxdiff(fast, plain) < TOL and torch.equal(fast, fast_again)
    assert maxdiff(mixed, mixed_plain) < TOL  # channels-last only reorders the sums


def test_bake_cache_follows_weight_changes(vtoonify_t, reference_io):
    x = reference_io["vtoonify_t.a.inputs"]
    s = reference_io["vtoonify_t.s_w"]
    p = vtoonify_t.generator.to_rgbs[7].bias
    saved = p.detach().clone()
    with torch.no_grad():
        before = vtoonify_t(x, s)
        p.add_(0.5)
        try:
            after = vtoonify_t(x, s)
        finally:
            p.copy_(saved)
        restored = vtoonify_t(x, s)
    assert maxdiff(after, before) > 0.4
    assert maxdiff(restored, before) < 1e-6


def test_fast_path_runs_on_weights_loaded_in_inference_mode(vtoonify_t_path, reference_io):
    """ComfyUI runs nodes under torch.inference_mode(): weights loaded there have no version counter."""
    with torch.inference_mode():
        m = load_vtoonify(vtoonify_t_path)
        x = reference_io["vtoonify_t.a.inputs"]
        y = m(x, reference_io["vtoonify_t.s_w"])
        again = m(x, reference_io["vtoonify_t.s_w"])
    assert maxdiff(y, reference_io["vtoonify_t.a.y_raw"]) < TOL and torch.equal(y, again)
