"""Model interpolation (issue 17, core): two VToonify networks of one kind blended layer by layer,
saved, and loaded back like an official checkpoint."""
from __future__ import annotations

import pytest
import torch

from vtoonify_core import InputError, load_model, load_vtoonify, merge_vtoonify, save_model
from vtoonify_core.models.exstyle import ExStyles
from vtoonify_core.models.merge import BACKBONE_PARTS, merge_networks, part_of
from vtoonify_core.testing import standin


@pytest.fixture(scope="module")
def second_d(tmp_path_factory):
    """A VToonify-D checkpoint with other weights (stand-in seed 1): model B."""
    root = tmp_path_factory.mktemp("b")
    path = standin.write_official_checkpoint("vtoonify_d", root / "vtoonify_d_b" / "vtoonify_s_d.pt", base_seed=1)
    standin.write_official_exstyles(path.parent / "exstyle_code.npy", n=3, base_seed=1)
    return path


@pytest.fixture(scope="module")
def nets_d(vtoonify_d_path, second_d):
    return load_vtoonify(vtoonify_d_path), load_vtoonify(second_d)


def inputs(seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 22, size, size, generator=g) * 0.5, torch.randn(1, 18, 512, generator=g) * 0.5


def run(net, x, s, d_s=0.5):
    with torch.no_grad():
        return net(x, s, d_s)


def snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_ends_of_the_ratio_give_each_model_exactly(nets_d):
    a, b = nets_d
    x, s = inputs()
    for ratio, ref in ((0.0, a), (1.0, b)):
        m = merge_networks(a, b, ratio)
        assert m is not a and m is not b
        assert all(torch.equal(v, ref.state_dict()[k]) for k, v in m.state_dict().items())
        assert torch.equal(run(m, x, s), run(ref, x, s))


def test_a_middle_ratio_is_the_tensor_wise_blend(nets_d):
    a, b = nets_d
    m = merge_networks(a, b, 0.25)
    sa, sb = a.state_dict(), b.state_dict()
    for k, v in m.state_dict().items():
        scale = sa[k].abs() + sb[k].abs()  # float rounding of either way of writing the blend
        assert ((v - (0.75 * sa[k] + 0.25 * sb[k])).abs() <= 1e-6 * scale + 1e-7).all(), k
    x, s = inputs(1)
    y = run(m, x, s)
    assert not torch.equal(y, run(a, x, s)) and not torch.equal(y, run(b, x, s))


def test_a_resolution_swap_changes_only_the_chosen_layers(nets_d):
    a, b = nets_d
    m = merge_networks(a, b, 0.0, parts={"decoder_512": 1.0, "decoder_1024": 1.0})
    sa, sb = a.state_dict(), b.state_dict()
    changed = {k for k, v in m.state_dict().items() if not torch.equal(v, sa[k])}
    assert changed and all(part_of(k, "dualstylegan") in ("decoder_512", "decoder_1024") for k in changed)
    assert all(torch.equal(m.state_dict()[k], sb[k]) for k in changed)
    expected = {k for k in sa if part_of(k, "dualstylegan") in ("decoder_512", "decoder_1024")
                and not torch.equal(sa[k], sb[k])}
    assert changed == expected
    # the layers named by resolution are the StyleGAN convs and to-RGBs of that size
    assert "generator.generator.convs.14.conv.weight" in changed and "generator.generator.to_rgbs.7.bias" in changed
    assert "generator.generator.convs.12.conv.weight" in changed  # 512: convs 12 and 13, to_rgbs 6


def test_every_entry_belongs_to_a_known_part(nets_d, vtoonify_t):
    for net in (nets_d[0], vtoonify_t):
        parts = {part_of(k, net.backbone) for k in net.state_dict()}
        assert parts <= set(BACKBONE_PARTS[net.backbone])
        assert {"encoder", "fusion", "decoder_64", "decoder_1024", "mapping"} <= parts


def test_merging_leaves_both_inputs_untouched(nets_d):
    a, b = nets_d
    x, s = inputs(2)
    before = [snapshot(a), snapshot(b)]
    ya, yb = run(a, x, s), run(b, x, s)
    merge_networks(a, b, 0.5, parts={"encoder": 0.1})
    assert all(torch.equal(v, before[0][k]) for k, v in a.state_dict().items())
    assert all(torch.equal(v, before[1][k]) for k, v in b.state_dict().items())
    assert torch.equal(run(a, x, s), ya) and torch.equal(run(b, x, s), yb)


def test_fast_path_switches_and_baked_caches(nets_d):
    """The merge reads the weights, never a baked cache; it takes model A's switches and starts with no cache."""
    a, b = nets_d
    x, s = inputs(3)
    run(a, x, s)
    run(b, x, s)  # both have baked caches now
    assert a.__dict__.get("_bake_cache") and b.__dict__.get("_bake_cache")
    a.set_fast_path(True, fold_upsample=True)
    try:
        m = merge_networks(a, b, 1.0)
        assert "_bake_cache" not in m.__dict__ and m.fold_upsample is True and m.fast
        torch.testing.assert_close(run(m, x, s), run(b.set_fast_path(True, fold_upsample=True), x, s),
                                   rtol=0, atol=0)
    finally:
        a.set_fast_path(True)
        b.set_fast_path(True)


def test_dtype_and_device_follow_model_a(nets_d, vtoonify_d_path):
    a, b = nets_d
    half = load_vtoonify(vtoonify_d_path, dtype=torch.bfloat16)
    m = merge_networks(half, b, 0.5)
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    assert torch.equal(merge_networks(half, b, 0.0).encoder[0][0].weight, half.encoder[0][0].weight)


def test_refusals(nets_d, vtoonify_t):
    a, b = nets_d
    with pytest.raises(InputError, match="model_a is VToonify-D and model_b is VToonify-T"):
        merge_networks(a, vtoonify_t, 0.5)
    with pytest.raises(InputError, match="unknown part.*modres"):  # VToonify-T has no ModRes blocks
        merge_networks(vtoonify_t, vtoonify_t, 0.5, parts={"modres": 0.5})
    with pytest.raises(InputError, match="unknown part"):
        merge_networks(a, b, 0.5, parts={"decoder_2048": 1.0})
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match=r"\[0, 1\]"):
            merge_networks(a, b, bad)
    with pytest.raises(InputError, match=r"decoder_64: must be in \[0, 1\]"):
        merge_networks(a, b, 0.5, parts={"decoder_64": 2})
    with pytest.raises(InputError, match="expected a VToonify network"):
        merge_networks(a, torch.nn.Linear(2, 2), 0.5)


def test_bundles_take_exemplar_codes_from_a_or_b(vtoonify_d_path, second_d, bisenet_path, exstyle_path):
    a = load_model(vtoonify_d_path, None, bisenet_path)
    b = load_model(second_d, None, bisenet_path)
    m = merge_vtoonify(a, b, 0.5)
    assert m.exstyles is a.exstyles and m.parser is a.parser and "merge of" in m.sources["checkpoint"]
    assert merge_vtoonify(a, b, 0.5, exstyles="b").exstyles is b.exstyles
    with pytest.raises(InputError, match="model_b has no exemplar style codes"):
        merge_vtoonify(a, load_model(second_d, None, bisenet_path, exstyle=None), 0.5, exstyles="b")
    with pytest.raises(InputError, match="'a' or 'b'"):
        merge_vtoonify(a, b, 0.5, exstyles="c")


def test_save_and_load_round_trip(vtoonify_d_path, second_d, bisenet_path, tmp_path):
    a = load_model(vtoonify_d_path, None, bisenet_path)
    b = load_model(second_d, None, bisenet_path)
    m = merge_vtoonify(a, b, 0.3, parts={"decoder_1024": 1.0}, exstyles="b")
    path = save_model(m, tmp_path / "merged" / "vtoonify_s_d.safetensors")
    back = load_model(path, None, bisenet_path)  # exstyle_code.safetensors found beside it
    assert back.backbone == "dualstylegan" and back.exstyles.names == b.exstyles.names
    assert torch.equal(back.exstyles.codes, b.exstyles.codes)
    assert all(torch.equal(v, m.generator.state_dict()[k]) for k, v in back.generator.state_dict().items())
    x, s = inputs(4)
    assert torch.equal(run(back.generator, x, s), run(m.generator, x, s))
    # another model's codes are never overwritten
    other = merge_vtoonify(a, b, 0.3, exstyles="a")
    with pytest.raises(ValueError, match="exemplar codes of another model"):
        save_model(other, tmp_path / "merged" / "other.safetensors")
    with pytest.raises(ValueError, match=".safetensors"):
        save_model(m, tmp_path / "merged.pt")


def test_vtoonify_t_merge_and_save(vtoonify_t, vtoonify_t_path, tmp_path):
    other = load_vtoonify(standin.write_official_checkpoint("vtoonify_t", tmp_path / "b.pt", base_seed=2))
    m = merge_networks(vtoonify_t, other, 0.5)
    from vtoonify_core.models.merge import save_network

    back = load_vtoonify(save_network(m, tmp_path / "t" / "vtoonify.safetensors"))
    x, s = inputs(5)
    assert back.backbone == "toonify" and torch.equal(run(back, x, s), run(m, x, s))


def test_exstyles_type_is_kept(vtoonify_d_path, second_d, bisenet_path):
    m = merge_vtoonify(load_model(vtoonify_d_path, None, bisenet_path), load_model(second_d, None, bisenet_path))
    assert isinstance(m.exstyles, ExStyles)
