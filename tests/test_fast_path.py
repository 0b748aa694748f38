"""Every fast-path switch of the generator equals the plain path (fp32 max abs difference < 1e-4).

The plain path is the official computation order (per-sample modulation, FIR blur after the
transposed convolution, contiguous tensors, eager). Each switch is turned on alone against it,
and all together; the folded kernels are also checked as operators on random weights with a
non-symmetric FIR kernel, so that a flipped tap cannot hide behind StyleGAN2's symmetric blur.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from vtoonify_core import load_vtoonify
from vtoonify_core.models.ops import make_kernel, upfirdn2d
from vtoonify_core.models.stylegan import (POLYPHASE_MAX_PIXELS, ModulatedConv2d, ToRGB, fold_upsample_kernel,
                                           polyphase_kernel)

TOL = 1e-4


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def run(model, x, s, **switches):
    model.set_fast_path(False, **switches)
    try:
        with torch.no_grad():
            return model(x, s, 0.5)
    finally:
        model.set_fast_path(True)


# ---------------------------------------------------------------- operators


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 5, 3)])
def test_folded_upsampling_conv_equals_conv_transpose_then_blur(taps):
    torch.manual_seed(0)
    conv = ModulatedConv2d(16, 8, 3, 512, upsample=True, blur_kernel=taps)
    w = torch.randn(8, 16, 3, 3)
    x = torch.randn(2, 16, 9, 7)
    ref = upfirdn2d(F.conv_transpose2d(x, w.transpose(0, 1), stride=2), conv.blur.kernel, pad=conv.blur.pad)
    folded = fold_upsample_kernel(w, conv.blur.kernel)
    assert folded.shape == (8, 16, 6, 6)
    out = F.conv_transpose2d(x, folded.transpose(0, 1), stride=2, padding=conv.fold_padding)
    assert out.shape == ref.shape == (2, 8, 18, 14)
    assert maxdiff(out, ref) < 1e-4  # values up to ~15: float32 rounding of 144-term sums
    phases = polyphase_kernel(folded, conv.fold_padding)
    assert phases.shape == (32, 16, 3, 3)
    assert maxdiff(F.pixel_shuffle(F.conv2d(x, phases, padding=1), 2), ref) < 1e-4
    # both forms through the layer itself, on either side of the size threshold
    small = x[..., :4, :4]
    big = torch.randn(1, 16, 80, 64)
    assert small.shape[-1] * small.shape[-2] <= POLYPHASE_MAX_PIXELS < big.shape[-1] * big.shape[-2]
    for inp in (small, big):
        plain = conv.conv_baked(inp, w)
        assert maxdiff(conv.conv_folded(inp, folded, phases), plain) < 1e-4


def test_a_flipped_fold_is_caught():
    """The operator test above can fail: folding with the wrong orientation differs."""
    k = make_kernel((1, 2, 5, 3)) * 4
    w = torch.randn(4, 4, 3, 3)
    x = torch.randn(1, 4, 6, 6)
    ref = upfirdn2d(F.conv_transpose2d(x, w.transpose(0, 1), stride=2), k, pad=(1, 1))
    wrong = fold_upsample_kernel(w, torch.flip(k, [0, 1]))
    assert maxdiff(F.conv_transpose2d(x, wrong.transpose(0, 1), stride=2, padding=2), ref) > 1e-2


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 5, 3)])
def test_precomputed_torgb_upsampling_equals_upfirdn(taps):
    torch.manual_seed(1)
    rgb = ToRGB(8, 512, blur_kernel=taps)
    style = torch.randn(1, 512)
    x, skip = torch.randn(2, 8, 10, 12), torch.randn(2, 3, 5, 6)
    plain = rgb.forward_baked(x, rgb.bake(style, torch.float32), skip.clone())
    folded = rgb.forward_baked(x, rgb.bake(style, torch.float32, fold=True), skip.clone())
    assert maxdiff(folded, plain) < 1e-5
    assert maxdiff(plain, rgb(x, style.expand(2, -1), skip)) < 1e-5


# ---------------------------------------------------------------- each switch on the whole network


SWITCHES = {
    "bake": dict(fast=True),
    "channels_last": dict(channels_last=True),
    "bake+fold": dict(fast=True, fold_upsample=True),
    "all": dict(fast=True, channels_last=True, fold_upsample=True),
}


@pytest.mark.parametrize("kind", ["vtoonify_t", "vtoonify_d"])
@pytest.mark.parametrize("name", list(SWITCHES))
def test_each_switch_equals_the_plain_path(kind, name, reference_io, request):
    m = request.getfixturevalue("vtoonify_" + kind[-1])
    x = reference_io[f"{kind}.b.inputs"]
    s = reference_io[f"{kind}.s_w"]
    plain = run(m, x, s)
    fast = run(m, x, s, **SWITCHES[name])
    assert maxdiff(fast, plain) < TOL
    assert maxdiff(plain, reference_io[f"{kind}.b.y_raw" + (".ds0.5" if kind == "vtoonify_d" else "")]) < TOL


def test_fold_is_auto_in_half_precision_only(vtoonify_d):
    assert vtoonify_d.fold_upsample is None
    assert vtoonify_d.folds_upsample(torch.bfloat16) and vtoonify_d.folds_upsample(torch.float16)
    assert not vtoonify_d.folds_upsample(torch.float32)


def test_folding_in_bf16_stays_as_close_to_fp32_as_the_unfolded_bf16(vtoonify_d_path, reference_io):
    m = load_vtoonify(vtoonify_d_path, dtype=torch.bfloat16)
    x = reference_io["vtoonify_d.a.inputs"].bfloat16()
    s = reference_io["vtoonify_d.s_w"].bfloat16()
    ref = reference_io["vtoonify_d.a.y_raw.ds0.5"]
    with torch.no_grad():
        m.fold_upsample = False
        unfolded = m(x, s, 0.5)
        m.fold_upsample = None
        folded = m(x, s, 0.5)
    err_unfolded, err_folded = maxdiff(unfolded, ref), maxdiff(folded, ref)
    assert torch.isfinite(folded).all()
    assert err_folded < 1.5 * err_unfolded + 1e-3, (err_folded, err_unfolded)


def test_unknown_switch_is_refused(vtoonify_t):
    with pytest.raises(ValueError, match="unknown fast-path switch.*fold_upsampel"):
        vtoonify_t.set_fast_path(True, fold_upsampel=True)


# ---------------------------------------------------------------- torch.compile


@pytest.mark.slow
def test_compiled_body_equals_the_plain_path(vtoonify_d_path, reference_io):
    """torch.compile (inductor, C++ on CPU) of the fast path; about a minute of compilation."""
    m = load_vtoonify(vtoonify_d_path)
    x = reference_io["vtoonify_d.b.inputs"]
    s = reference_io["vtoonify_d.s_w"]
    plain = run(m, x, s)
    with warnings.catch_warnings():
        # a fallback to eager would make this test vacuous
        warnings.filterwarnings("error", message="torch.compile")
        compiled = run(m, x, s, fast=True, channels_last=True, fold_upsample=True, compile_mode="default")
    assert maxdiff(compiled, plain) < TOL
    assert m.__dict__.get("_compiled") is None or all(fn is not m._body for fn in m._compiled.values())


def test_compile_failure_falls_back_to_eager_with_a_warning(vtoonify_t, reference_io, monkeypatch):
    x = reference_io["vtoonify_t.a.inputs"]
    s = reference_io["vtoonify_t.s_w"]
    m = vtoonify_t
    expected = run(m, x, s, fast=True)

    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("InductorError: no working C++ compiler found")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    m.clear_bake_cache()
    with pytest.warns(UserWarning, match="torch.compile.*failed.*runs eagerly"):
        y = run(m, x, s, fast=True, compile_mode="default")
    assert torch.equal(y, expected)
    assert m._compiled["default"] == m._body  # remembered: no second failing attempt


def test_out_of_memory_inside_the_compiled_body_is_not_swallowed(vtoonify_t, reference_io, monkeypatch):
    """The chunk runner halves the chunk on OOM: the compile fallback must let OOM through."""
    def oom_compile(fn, **kwargs):
        def call(*args):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return call

    monkeypatch.setattr(torch, "compile", oom_compile)
    vtoonify_t.clear_bake_cache()  # forget compiled bodies (and fallbacks) of earlier tests
    with pytest.raises(torch.OutOfMemoryError):
        run(vtoonify_t, reference_io["vtoonify_t.a.inputs"], reference_io["vtoonify_t.s_w"], compile_mode="default")


def test_memoised_equal_conv_weight_follows_changes_and_moves(vtoonify_d, reference_io):
    """The ModRes convs reuse ``weight * scale`` between calls; an in-place edit or a move drops it."""
    conv = vtoonify_d.res[3].conv[0]
    x = reference_io["vtoonify_d.a.inputs"]
    s = reference_io["vtoonify_d.s_w"]
    saved = conv.weight.detach().clone()
    with torch.no_grad():
        before = vtoonify_d(x, s, 0.5)
        memo = conv.__dict__["_scaled"][1]
        conv.weight.mul_(1.5)
        try:
            after = vtoonify_d(x, s, 0.5)
        finally:
            conv.weight.copy_(saved)
        restored = vtoonify_d(x, s, 0.5)
    assert conv.__dict__["_scaled"][1] is not memo
    assert maxdiff(after, before) > 1e-4 and maxdiff(restored, before) < 1e-6  # stale memo: after == before
    vtoonify_d.float()  # any _apply (ComfyUI offloading moves the model) must not keep a stale copy
    assert "_scaled" not in conv.__dict__


def test_channels_last_weights_keep_their_values(vtoonify_t_path, reference_io):
    m = load_vtoonify(vtoonify_t_path)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        m(reference_io["vtoonify_t.a.inputs"], reference_io["vtoonify_t.s_w"])
    assert m.encoder[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    after = m.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], v) for k, v in state.items())
    with torch.no_grad():  # the plain path goes back to the plain layout
        run(m, reference_io["vtoonify_t.a.inputs"], reference_io["vtoonify_t.s_w"])
        m.set_fast_path(False)
        m(reference_io["vtoonify_t.a.inputs"], reference_io["vtoonify_t.s_w"])
    assert m.encoder[0][0].weight.is_contiguous() and m.fusion_out[0].weight.is_contiguous()


def test_folded_conv_adds_the_bias_inside(reference_io):
    torch.manual_seed(2)
    conv = ModulatedConv2d(8, 4, 3, 512, upsample=True)
    w, bias = torch.randn(4, 8, 3, 3), torch.randn(4)
    folded = fold_upsample_kernel(w, conv.blur.kernel)
    phases = polyphase_kernel(folded, conv.fold_padding)
    for x in (torch.randn(2, 8, 5, 6), torch.randn(1, 8, 72, 64)):  # polyphase and transposed forms
        expected = conv.conv_baked(x, w) + bias[:, None, None]
        assert maxdiff(conv.conv_folded(x, folded, phases, bias), expected) < 1e-4
