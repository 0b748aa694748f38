"""Style control (issue 7): DualStyleGAN synthesis, exemplar codes from any image (refinement,
few-shot averaging), mixing, keyframed styles through stylize, and the three nodes through the
fake ComfyUI of ``comfy_stub``.

Stand-in weights (``conftest.py``); small sizes throughout: the DualStyleGAN synthesis stops at
8-32 px (``max_size``) and frames are 16 px, so the whole file runs in well under a minute on a CPU.
"""
from __future__ import annotations


import comfy_stub  # tests/ is on sys.path (conftest.py)
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vtoonify_core as P
from vtoonify_core import styles as SC
from vtoonify_core.models.dualstylegan import stylegan_synthesis

skdata = pytest.importorskip("skimage.data")

D_CKPT = "vtoonify_d_cartoon/vtoonify_s_d.pt"
T_CKPT = "vtoonify_t_cartoon/vtoonify.pt"


# ---------------------------------------------------------------------------------------------- fixtures


class PoolEncoder(torch.nn.Module):
    """Stands for pSp (whose stand-in costs seconds per face on a CPU): a fixed, input-dependent
    map of a [B, 3, 256, 256] face to a z+ code [B, 18, 512] (average pooling). The real encoder
    path is covered by test_nodes.py."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, (24, 128)).reshape(x.shape[0], 18, 512) * 3.0


@pytest.fixture(scope="module")
def bundle_d(vtoonify_d_path, bisenet_path, exstyle_path) -> P.VToonifyModel:
    """VToonify-D with stand-in weights and the pooling encoder."""
    m = P.load_model(vtoonify_d_path, None, bisenet_path)
    return P.VToonifyModel(m.generator, PoolEncoder(), m.parser, m.exstyles, m.device, m.dtype, dict(m.sources))


@pytest.fixture(scope="module")
def bundle_t(vtoonify_t_path, bisenet_path) -> P.VToonifyModel:
    m = P.load_model(vtoonify_t_path, None, bisenet_path)
    return P.VToonifyModel(m.generator, PoolEncoder(), m.parser, m.exstyles, m.device, m.dtype, dict(m.sources))


@pytest.fixture(scope="module")
def dlib_ok():
    from vtoonify_core import faces

    try:
        faces.get_backend("dlib")
    except faces.FaceBackendUnavailableError as exc:
        pytest.skip(f"face detection backend missing: {exc}")


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """The astronaut at 256x256 (uint8): a smaller frame keeps face detection quick."""
    x = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1)[None].float()
    return F.interpolate(x, size=(256, 256), mode="area").round()[0].permute(1, 2, 0).to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def aligned(dlib_ok, portrait) -> np.ndarray:
    """The astronaut's face, cropped and FFHQ-aligned as the official code does (256x256 uint8)."""
    return SC.prepare_style_image(portrait)[0]


def code(backbone: str, seed: int, name=None, style_id=None) -> P.StyleCode:
    g = torch.Generator().manual_seed(seed)
    return P.StyleCode(torch.randn(1, 18, 512, generator=g) * 0.5, backbone, style_id, name)


@pytest.fixture(scope="module")
def clip16() -> torch.Tensor:
    """Five different 16x16 frames [5, 3, 16, 16] in [-1, 1] (shifted crops of the astronaut)."""
    img = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    crops = [img[:, :, 40 + 10 * i:200 + 10 * i, 140 + 5 * i:300 + 5 * i] for i in range(5)]
    return torch.cat([F.interpolate(c, size=(16, 16), mode="area") for c in crops])


# ---------------------------------------------------------------------------------------------- DualStyleGAN synthesis


def test_synthesis_reduces_to_stylegan(bundle_d):
    """interp_weights all 0 (and use_res=False) give the plain StyleGAN2 synthesis of the content code,
    bit for bit; the extrinsic path changes the image otherwise; shapes follow max_size."""
    dsg = bundle_d.generator.generator
    g = torch.Generator().manual_seed(3)
    w = dsg.generator.mapping(torch.randn(1, 18, 512, generator=g))
    e = dsg.generator.mapping(torch.randn(1, 18, 512, generator=g))
    with torch.no_grad():
        plain = stylegan_synthesis(dsg.generator, w, max_size=32)  # reaches layer 7 (to-RGB of 32 px)
        zero = dsg.synthesize(w, e, interp_weights=0.0, max_size=32)
        off = dsg.synthesize(w, e, use_res=False, max_size=32)
        full = dsg.synthesize(w, e, max_size=32)
        fused0 = dsg.synthesize(w, e, fuse_index=-1, interp_weights=[1.0] * 18, max_size=32)
        tiny = dsg.synthesize(w, e, max_size=8)
        as_z = dsg.synthesize(w, torch.zeros(1, 18, 512), exstyle_space="z+", max_size=8)
    assert plain.shape == zero.shape == full.shape == (1, 3, 32, 32) and tiny.shape == (1, 3, 8, 8)
    assert torch.equal(zero, plain) and torch.equal(off, plain) and torch.equal(fused0, plain)
    assert float((full - plain).abs().max()) > 1e-3
    assert torch.isfinite(as_z).all()
    with pytest.raises(ValueError, match="max_size"):
        dsg.synthesize(w, e, max_size=24)
    with pytest.raises(ValueError, match="interp_weights"):
        dsg.synthesize(w, e, interp_weights=[1.0] * 5)
    with pytest.raises(ValueError, match="exstyle"):
        dsg.synthesize(w, torch.zeros(1, 7, 512))


# ---------------------------------------------------------------------------------------------- mixing, averaging


def test_mix_endpoints_groups_and_errors():
    a, b = code("dualstylegan", 1, "a.png", 1), code("dualstylegan", 2, "b.png", 2)
    assert SC.mix_styles(a, b, 0.0) is a
    assert SC.mix_styles(a, b, 1.0) is b
    assert torch.equal(SC.mix_styles(a, b, 0.0, "structure").wplus, a.wplus)
    s = SC.mix_styles(a, b, 1.0, "structure")
    assert torch.equal(s.wplus[:, :7], b.wplus[:, :7]) and torch.equal(s.wplus[:, 7:], a.wplus[:, 7:])
    c = SC.mix_styles(a, b, 1.0, "colour")
    assert torch.equal(c.wplus[:, 7:], b.wplus[:, 7:]) and torch.equal(c.wplus[:, :7], a.wplus[:, :7])
    m = SC.mix_styles(a, b, 0.25, "3-9")
    torch.testing.assert_close(m.wplus[:, 3:10], 0.75 * a.wplus[:, 3:10] + 0.25 * b.wplus[:, 3:10])
    assert torch.equal(m.wplus[:, :3], a.wplus[:, :3]) and torch.equal(m.wplus[:, 10:], a.wplus[:, 10:])
    assert m.style_id is None and "mix of 1 (a.png) and 2 (b.png)" in m.style_name and "layers 3-9" in m.style_name
    assert "mix of" in m.describe()
    assert not torch.equal(a.wplus, code("dualstylegan", 1).wplus * 0)  # inputs untouched
    torch.testing.assert_close(a.wplus, code("dualstylegan", 1).wplus)
    with pytest.raises(ValueError, match="style_b: style_a is for VToonify-D but style_b for VToonify-T"):
        SC.mix_styles(a, code("toonify", 3), 0.5)
    with pytest.raises(ValueError, match="blend: must be between 0 and 1"):
        SC.mix_styles(a, b, 1.5)
    with pytest.raises(ValueError, match="layers"):
        SC.mix_styles(a, b, 0.5, "9-3")
    with pytest.raises(ValueError, match="layers"):
        SC.resolve_layers([0, 18])
    assert SC.resolve_layers("structure") == list(range(7)) and SC.resolve_layers("colour") == list(range(7, 18))
    assert SC.resolve_layers("5") == [5] and SC.resolve_layers((4, 2, 4)) == [2, 4]
    roles = SC.layer_roles()
    assert len(roles) == 18 and "not used" in roles[0] and roles[3].startswith("structure")
    assert "to-RGB of decoder stage 4" in roles[17] and "conv of decoder stage 0" in roles[8]


def test_average_codes():
    a, b = code("dualstylegan", 1), code("dualstylegan", 2)
    one = SC.average_codes([a.wplus])
    assert torch.equal(one, a.wplus) and one is not a.wplus
    torch.testing.assert_close(SC.average_codes([a.wplus, b.wplus]), (a.wplus + b.wplus) / 2)
    torch.testing.assert_close(SC.average_codes([a.wplus, b.wplus], [3, 1]), 0.75 * a.wplus + 0.25 * b.wplus)
    assert SC.average_styles([a]) is a
    avg = SC.average_styles([a, b])
    assert avg.style_name == "average of 2 styles" and avg.backbone == "dualstylegan"
    with pytest.raises(ValueError, match="at least one"):
        SC.average_codes([])
    with pytest.raises(ValueError, match="weights"):
        SC.average_codes([a.wplus, b.wplus], [0, 0])


# ---------------------------------------------------------------------------------------------- keyframes


def test_schedule_interpolation_is_continuous():
    a, b, c = code("dualstylegan", 1), code("dualstylegan", 2), code("dualstylegan", 3)
    s = SC.parse_keyframes("10:A@0.0, 20:B@1.0;\n 30:c", {"A": a, "B": b, "C": c, "D": None})
    assert [k.frame for k in s.keyframes] == [10, 20, 30] and s.keyframes[2].degree is None
    assert s.backbone == "dualstylegan" and not s.is_constant
    for f in (0, 5, 10):
        assert torch.equal(s.wplus_at(f), a.wplus) and s.degree_at(f, 0.5) == 0.0
    assert torch.equal(s.wplus_at(20), b.wplus) and s.degree_at(20, 0.5) == 1.0
    assert torch.equal(s.wplus_at(30), c.wplus) and torch.equal(s.wplus_at(99), c.wplus)
    assert s.degree_at(30, 0.4) == 0.4 and s.degree_at(25, 0.4) == pytest.approx(0.7)
    torch.testing.assert_close(s.wplus_at(15), (a.wplus + b.wplus) / 2)
    assert s.degree_at(13, 0.5) == pytest.approx(0.3)
    # continuity: equal steps of |B - A| / 10 between the keyframes, no jump at either end
    codes, degrees = s.codes(8, 23, 0.5)
    assert codes.shape == (15, 18, 512) and len(degrees) == 15
    steps = (codes[1:] - codes[:-1]).flatten(1).norm(dim=1)
    expected = (b.wplus - a.wplus).norm() / 10
    torch.testing.assert_close(steps[2:12], expected.expand(10), rtol=1e-4, atol=1e-5)
    assert float(steps[:2].max()) == 0 and float(steps[-1]) > 0
    assert np.allclose(np.diff(degrees[2:13]), 0.1)
    assert "frame 10" in s.describe() and "style degree 1" in s.describe()
    with pytest.raises(ValueError, match="style_b is not connected"):
        SC.parse_keyframes("0:A, 5:B", {"A": a, "B": None})
    with pytest.raises(ValueError, match="cannot read"):
        SC.parse_keyframes("0=A", {"A": a})
    with pytest.raises(ValueError, match="two keyframes"):
        SC.parse_keyframes("0:A, 0:A@1", {"A": a})
    with pytest.raises(ValueError, match="between 0 and 1"):
        SC.parse_keyframes("0:A@1.5", {"A": a})
    with pytest.raises(ValueError, match="same kind of model"):
        SC.parse_keyframes("0:A, 9:B", {"A": a, "B": code("toonify", 4)})
    with pytest.raises(ValueError, match="keyframed"):
        SC.mix_styles(s, a, 0.5)


def test_stylize_schedule_equals_single_styles_at_keyframes(bundle_d, clip16):
    """Per-frame styles and degrees: at a keyframe the frame equals a run with that keyframe's style
    and degree; in between it equals a run with the interpolated code and degree; chunks of 3 frames."""
    a, b = code("dualstylegan", 11), code("dualstylegan", 12)
    sched = SC.parse_keyframes("0:A@0.2, 4:B@0.9", {"A": a, "B": b})
    out = P.stylize(bundle_d, clip16, sched, d_s=0.5, batch_size=3)
    assert out.shape == (5, 3, 64, 64)
    at0 = P.stylize(bundle_d, clip16[:1], a, d_s=0.2)
    at4 = P.stylize(bundle_d, clip16[4:], b, d_s=0.9)
    mid = P.stylize(bundle_d, clip16[2:3], SC.mix_styles(a, b, 0.5), d_s=0.55)
    torch.testing.assert_close(out[0:1], at0, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[4:5], at4, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[2:3], mid, atol=1e-4, rtol=0)
    assert float((out[0] - out[4]).abs().max()) > 1e-3
    # a constant schedule is a constant style
    const = SC.StyleSchedule((SC.Keyframe(0, a),))
    torch.testing.assert_close(P.stylize(bundle_d, clip16[:2], const, d_s=0.3),
                               P.stylize(bundle_d, clip16[:2], a, d_s=0.3), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="style: this is a keyframed style"):
        P.check_style(bundle_d, sched)


def test_schedule_with_vtoonify_t(bundle_t, clip16):
    a, b = code("toonify", 1), code("toonify", 2)
    sched = SC.parse_keyframes("0:A, 2:B", {"A": a, "B": b})
    out = P.stylize(bundle_t, clip16[:3], sched, batch_size=2)
    torch.testing.assert_close(out[2:3], P.stylize(bundle_t, clip16[2:3], b), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="VToonify-D"):
        P.stylize(bundle_t, clip16[:1], SC.parse_keyframes("0:A", {"A": code("dualstylegan", 3)}))


# ---------------------------------------------------------------------------------------------- exemplars


def test_refinement_lowers_its_loss(bundle_d, aligned):
    """A few Adam steps at a truncated resolution (8 px synthesis) lower the pixel loss; the code
    returned is the best one and its loss is the recorded one; progress and interruption work."""
    calls = []
    r = SC.refine_exemplar(bundle_d, aligned, steps=3, lr=0.1, size=8, progress=lambda d, t: calls.append((d, t)))
    assert len(r.losses) == 4 and calls == [(1, 3), (2, 3), (3, 3)]
    assert r.losses[r.best] == min(r.losses) and r.losses[r.best] < 0.9 * r.losses[0]
    assert r.zplus.shape == r.wplus.shape == (1, 18, 512)
    with torch.no_grad():
        torch.testing.assert_close(r.wplus, bundle_d.generator.zplus2wplus(r.zplus), atol=1e-5, rtol=1e-5)
        content = bundle_d.generator.zplus2wplus(SC.encode_zplus(bundle_d, aligned))
        img = bundle_d.generator.generator.synthesize(content, r.wplus, max_size=8)
        target = F.adaptive_avg_pool2d(torch.from_numpy(aligned).permute(2, 0, 1)[None].float() / 127.5 - 1, 8)
    assert float(F.mse_loss(img, target)) == pytest.approx(r.losses[r.best], rel=1e-3)

    class Stop(Exception):
        pass

    def check():
        raise Stop()

    with pytest.raises(Stop):
        SC.refine_exemplar(bundle_d, aligned, r.zplus, content, steps=2, size=8, check_interrupt=check)
    # as inside ComfyUI: everything under inference mode, weights made there too
    with torch.inference_mode():
        r1 = SC.refine_exemplar(bundle_d, aligned, r.zplus, content, steps=1, lr=0.1, size=8, loss="l1")
    assert len(r1.losses) == 2 and not r1.zplus.is_inference()
    with pytest.raises(ValueError, match="refine_resolution"):
        SC.refine_exemplar(bundle_d, aligned, steps=1, size=24)


def test_exemplar_code_rule_and_few_shot(bundle_d, bundle_t, aligned, portrait):
    """One reference: its pSp code is the exemplar code; two: the mean of their codes (W+)."""
    img = portrait
    mirrored = np.ascontiguousarray(img[:, ::-1])
    ex2, crops, contents = SC.exemplar_from_images(bundle_d, [img, mirrored])
    assert ex2.references == 2 and ex2.zplus is None and ex2.losses == () and len(crops) == 2
    assert np.array_equal(crops[0], aligned) and not np.array_equal(crops[1], aligned)
    with torch.no_grad():
        torch.testing.assert_close(contents[0], bundle_d.generator.zplus2wplus(SC.encode_zplus(bundle_d, aligned)))
    torch.testing.assert_close(ex2.wplus, (contents[0] + contents[1]) / 2)
    ex1, _ = SC.exemplar_from_aligned(bundle_d, aligned)
    assert ex1.references == 1 and torch.equal(ex1.wplus, contents[0]) and ex1.zplus.shape == (1, 18, 512)
    face = code("dualstylegan", 7).wplus
    s = SC.style_from_exemplar(bundle_d, ex2, face)
    assert torch.equal(s.wplus[:, :7], ex2.wplus[:, :7]) and torch.equal(s.wplus[:, 7:], face[:, 7:])
    assert s.style_id is None and not s.color_transfer
    sc = SC.style_from_exemplar(bundle_d, ex2, color_transfer=True)
    assert torch.equal(sc.wplus, ex2.wplus) and sc.color_transfer
    with pytest.raises(ValueError, match="face: a face is needed"):
        SC.style_from_exemplar(bundle_d, ex2)
    with pytest.raises(ValueError, match="VToonify-D"):
        SC.exemplar_from_images(bundle_t, [img])
    with pytest.raises(ValueError, match="reference image 1 of 1"):
        SC.exemplar_from_images(bundle_d, [np.full((96, 96, 3), 128, np.uint8)])


# ---------------------------------------------------------------------------------------------- nodes


@pytest.fixture(scope="module")
def astronaut_image() -> torch.Tensor:
    """The astronaut as a 256x256 IMAGE (a smaller frame keeps face detection quick)."""
    x = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1)[None].float().div(255.0)
    return F.interpolate(x, size=(256, 256), mode="area").mul(255).round().div(255).permute(0, 2, 3, 1).contiguous()


def test_nodes_registered(fake_comfy):
    names = {"VToonifyExemplarStyle": "Exemplar Style From Image", "VToonifyStyleMix": "Style Mix",
             "VToonifyStyleKeyframes": "Style Keyframes"}
    assert names.items() <= fake_comfy.pack.NODE_DISPLAY_NAME_MAPPINGS.items()
    for node_id in names:
        cls = fake_comfy.pack.NODE_CLASS_MAPPINGS[node_id]
        assert cls.CATEGORY == "VToonify"
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
        for group in cls.INPUT_TYPES().values():
            for name, (_, opts) in group.items():
                assert name.islower() and opts.get("tooltip"), (node_id, name)


def socket_types(cls, name: str) -> set:
    """The types an input accepts (ComfyUI and its frontend read a comma as "either")."""
    spec = {**cls.INPUT_TYPES()["required"], **cls.INPUT_TYPES().get("optional", {})}
    return set(spec[name][0].split(","))


def test_keyframes_have_their_own_socket_type(fake_comfy):
    """Style Keyframes' output connects only where keyframes work: Stylize Frames; the single-code inputs
    (Style Mix, Style Keyframes itself, the video node, whose job keeps one style for the file) refuse it
    when the graph is queued. Output names stay, so saved links keep their slots."""
    nodes = fake_comfy.pack.NODE_CLASS_MAPPINGS
    assert nodes["VToonifyStyleKeyframes"].RETURN_TYPES == ("VTOONIFY_KEYFRAMES", "STRING")
    assert nodes["VToonifyStyleKeyframes"].RETURN_NAMES == ("style", "schedule_info")
    for node_id in ("VToonifyExtractStyle", "VToonifyExemplarStyle", "VToonifyStyleMix"):
        assert nodes[node_id].RETURN_TYPES[0] == "VTOONIFY_STYLE", node_id
    for node_id in ("VToonifyStylizeFrames", "VToonifyStylizeVideoFile"):  # the video follows its frame numbers
        assert socket_types(nodes[node_id], "style") == {"VTOONIFY_STYLE", "VTOONIFY_KEYFRAMES"}, node_id
    single = [(n, i) for n, names in (("VToonifyStyleMix", ("style_a", "style_b")),
                                      ("VToonifyStyleKeyframes", ("style_a", "style_b", "style_c", "style_d")))
              for i in names]
    for node_id, name in single:
        assert socket_types(nodes[node_id], name) == {"VTOONIFY_STYLE"}, (node_id, name)


def test_mix_and_keyframes_nodes_into_stylize(fake_comfy, bundle_d, astronaut_image):
    """Style Mix and Style Keyframes feed Stylize Frames; at a keyframe the frame equals a plain run."""
    g = torch.Generator().manual_seed(5)
    a = P.StyleCode(torch.randn(1, 18, 512, generator=g) * 0.5, "dualstylegan", 1, "a.png")
    b = P.StyleCode(torch.randn(1, 18, 512, generator=g) * 0.5, "dualstylegan", 2, "b.png")
    mix = fake_comfy.node("VToonifyStyleMix")
    assert mix(a, b, 0.0, "all (0-17)", 0, 17)[0] is a
    custom, info = mix(a, b, 1.0, "custom range", 2, 4)
    assert torch.equal(custom.wplus[:, 2:5], b.wplus[:, 2:5]) and torch.equal(custom.wplus[:, 5:], a.wplus[:, 5:])
    assert "layers 2-4" in info
    with pytest.raises(ValueError, match="Style Mix: first_layer"):
        mix(a, b, 0.5, "custom range", 5, 4)
    sched, text = fake_comfy.node("VToonifyStyleKeyframes")(a, "0:A@0.1\n2:B@0.8", style_b=b)
    assert "frame 2" in text and len(sched.keyframes) == 2
    frames = F.interpolate(astronaut_image.permute(0, 3, 1, 2)[:, :, 50:130, 90:170], size=(16, 16),
                           mode="area").permute(0, 2, 3, 1).repeat(3, 1, 1, 1)
    stylize = fake_comfy.node("VToonifyStylizeFrames")
    out = stylize(bundle_d, frames, sched, 0.5, "whole frame (pad to 8)", 2)[0]
    ref0 = stylize(bundle_d, frames[:1], a, 0.1, "whole frame (pad to 8)", 2)[0]
    ref2 = stylize(bundle_d, frames[:1], b, 0.8, "whole frame (pad to 8)", 2)[0]
    torch.testing.assert_close(out[0:1], ref0, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[2:3], ref2, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="Style Mix: style_a: this is a keyframed style"):
        mix(sched, b, 0.5, "all (0-17)", 0, 17)
    with pytest.raises(ValueError, match="Style Keyframes: keyframes: .*style_c is not connected"):
        fake_comfy.node("VToonifyStyleKeyframes")(a, "0:A, 5:C")


def test_stylize_shows_first_frame_preview(fake_comfy, bundle_d, astronaut_image, sent_previews):
    previews = sent_previews
    frames = F.interpolate(astronaut_image.permute(0, 3, 1, 2), size=(16, 16), mode="area").permute(0, 2, 3, 1)
    style = P.StyleCode(torch.zeros(1, 18, 512), "dualstylegan")
    out = fake_comfy.node("VToonifyStylizeFrames")(bundle_d, frames.repeat(3, 1, 1, 1), style, 0.5,
                                                   "whole frame (pad to 8)", 1)[0]
    assert len(previews) == 1
    kind, image, size = previews[0]
    assert kind == "JPEG" and image.size == (64, 64) and size == 512
    assert np.abs(np.asarray(image).astype(int) - (out[0].numpy() * 255).round().astype(int)).max() <= 1


def test_exemplar_node(fake_comfy, bundle_d, bundle_t, astronaut_image, dlib_ok):
    make = fake_comfy.node("VToonifyExemplarStyle")
    style, crops, recon, info = make(bundle_d, astronaut_image, True, 0, 0.05, "32", "l2")
    assert isinstance(style, P.StyleCode) and style.color_transfer and style.backbone == "dualstylegan"
    assert crops.shape == (1, 256, 256, 3) and recon.shape == (1, 32, 32, 3)
    assert 0 <= float(recon.min()) and float(recon.max()) <= 1
    assert "exemplar from an image" in info
    # with a face: layers 7-17 are the face's code, 0-6 the reference's (here the same portrait)
    mixed, *_ = make(bundle_d, astronaut_image, False, 0, 0.05, "32", "l2", face=astronaut_image)
    face_code = SC.encode_face(bundle_d, (crops[0].numpy() * 255).round().astype(np.uint8))
    torch.testing.assert_close(mixed.wplus[:, 7:], face_code[:, 7:])
    torch.testing.assert_close(mixed.wplus[:, :7], style.wplus[:, :7])
    # one refinement step at 32 px: progress bar, loss reported; cancel stops it
    fake_comfy.state.progress.clear()
    refined, _, _, info = make(bundle_d, astronaut_image, True, 1, 0.05, "32", "l1")
    assert "refinement l1 loss at 32px" in info and (1, 1) in fake_comfy.state.progress
    fake_comfy.state.interrupt_checks, fake_comfy.state.interrupt_on = 0, 1
    with pytest.raises(comfy_stub.InterruptProcessingException):
        make(bundle_d, astronaut_image, True, 3, 0.05, "32", "l2")
    fake_comfy.state.interrupt_on = None
    with pytest.raises(ValueError, match="Exemplar Style From Image: face: connect the face"):
        make(bundle_d, astronaut_image, False, 0, 0.05, "32", "l2")
    with pytest.raises(ValueError, match="Exemplar Style From Image: vtoonify_model: .*VToonify-D"):
        make(bundle_t, astronaut_image, True, 0, 0.05, "32", "l2")
