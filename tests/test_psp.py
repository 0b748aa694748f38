"""The pSp style encoder against the official forward (reference numbers on seed-0 stand-in weights)."""
from __future__ import annotations

import pytest
import torch

from vtoonify_core.errors import CheckpointError
from vtoonify_core.models.psp import GradualStyleEncoder, StyleEncoder, load_style_encoder
from vtoonify_core.testing import standin
from vtoonify_core.weights import read_checkpoint, save_safetensors


@pytest.fixture(scope="module")
def encoder(psp_path) -> StyleEncoder:
    return load_style_encoder(psp_path)


@pytest.fixture(scope="module")
def zplus(encoder, reference_io) -> torch.Tensor:
    """The fp32 output on the reference input."""
    with torch.no_grad():
        return encoder(reference_io["psp.input"])


def test_state_dict_layout_matches_official_table():
    rows = standin.read_table("psp")
    with torch.device("meta"):
        model = StyleEncoder()
        bare = GradualStyleEncoder(50, "ir_se", input_nc=3, n_styles=18)
    sd = model.state_dict()
    assert sorted(sd) == sorted(r.name for r in rows)
    assert all(tuple(sd[r.name].shape) == r.shape for r in rows)
    # the encoder alone carries the official names without the prefix (util.load_psp_standalone)
    assert list(bare.state_dict()) == [r.name[len("encoder."):] for r in rows if r.name.startswith("encoder.")]


def test_matches_official_reference(encoder, zplus, reference_io):
    assert not encoder.training
    assert all(not p.requires_grad for p in encoder.parameters())
    ref = reference_io["psp.zplus"]
    assert zplus.shape == ref.shape == (1, 18, 512) and zplus.dtype == torch.float32
    # measured 6e-8 (the official forward on the same weights); align_corners=False in the
    # pyramid gives 2.8e-4, BatchNorm eps 1e-3 2.7e-4, LeakyReLU slope 0.2 9e-3
    assert (zplus - ref).abs().max().item() < 1e-4


def test_latent_avg_is_added(encoder, zplus, reference_io):
    with torch.no_grad():
        raw = encoder.encoder(reference_io["psp.input"])
    assert torch.allclose(raw + encoder.latent_avg, zplus, atol=1e-6, rtol=0)


def test_batch_is_per_sample(encoder, zplus, reference_io):
    x = reference_io["psp.input"]
    with torch.no_grad():
        out = encoder(torch.cat([x, x.flip(-1)]))
    assert out.shape == (2, 18, 512)
    assert (out[:1] - zplus).abs().max().item() < 1e-5
    assert (out[1] - out[0]).abs().max().item() > 1e-3


def test_safetensors_gives_identical_output(encoder, zplus, psp_path, reference_io, tmp_path):
    st = save_safetensors(read_checkpoint(psp_path).tensors, tmp_path / "encoder.safetensors", {"kind": "psp"})
    encoder_st = load_style_encoder(st)
    with torch.no_grad():
        assert torch.equal(encoder_st(reference_io["psp.input"]), zplus)


def test_wrong_kind_is_refused(tmp_path):
    p = tmp_path / "faceparsing.pth"
    torch.save({"cp.resnet.conv1.weight": torch.zeros(1), "conv_out.conv.conv.weight": torch.zeros(1)}, p)
    with pytest.raises(CheckpointError) as e:
        load_style_encoder(p)
    msg = str(e.value)
    assert "BiSeNet face parser" in msg
    assert "not a pSp style encoder" in msg


def test_missing_keys_are_refused(tmp_path):
    p = tmp_path / "encoder.pt"
    sd = {"encoder.body.0.res_layer.1.weight": torch.zeros(64, 64, 3, 3), "encoder.styles.0.linear.weight": torch.zeros(512, 512)}
    torch.save({"state_dict": sd, "latent_avg": torch.zeros(18, 512), "opts": {}}, p)
    with pytest.raises(CheckpointError, match="does not fit the pSp style encoder.*missing keys"):
        load_style_encoder(p)


def test_input_checks(encoder):
    with pytest.raises(ValueError, match=r"256x256 FFHQ-aligned crops \(align the face first\)"):
        encoder(torch.zeros(1, 3, 128, 128))
    with pytest.raises(ValueError, match="256x256"):
        encoder(torch.zeros(1, 3, 256, 200))
    with pytest.raises(ValueError, match="expects a"):
        encoder(torch.zeros(3, 256, 256))
    with pytest.raises(ValueError, match="expects a"):
        encoder(torch.zeros(1, 4, 256, 256))


# Measured on the seed-0 stand-in weights, max |out - fp32 reference| / max |reference|
# (0.577): fp16 5.5e-4, bf16 4.7e-3. The tolerances leave ~3x margin.
HALF_TOL = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2}


def _check_half(half: StyleEncoder, reference_io, dtype: torch.dtype) -> None:
    assert not half.training
    assert all(t.dtype == dtype for t in half.state_dict().values() if t.is_floating_point())
    ref = reference_io["psp.zplus"]
    with torch.no_grad():
        out = half(reference_io["psp.input"])  # the fp32 input is cast to the encoder's dtype
    assert out.dtype == dtype and out.shape == ref.shape
    assert torch.isfinite(out).all()
    rel = (out.float() - ref).abs().max().item() / ref.abs().max().item()
    assert rel < HALF_TOL[dtype], f"{dtype}: relative error {rel:.2e}"


def test_bf16_through_loader(psp_path, reference_io):
    _check_half(load_style_encoder(psp_path, dtype=torch.bfloat16), reference_io, torch.bfloat16)


def test_fp16(encoder, reference_io):
    # the loader loads in fp32 and then casts (``.to(dtype)``); cast the loaded fp32 weights the
    # same way instead of reading the 1 GB file again (fp16 convolutions are slow on CPU, ~8 s)
    with torch.device("meta"):
        half = StyleEncoder().to(torch.float16)
    half = half.to_empty(device="cpu")
    half.load_state_dict(encoder.state_dict())
    half.eval()
    if torch.ops.mkldnn._is_mkldnn_fp16_supported():
        _check_half(half, reference_io, torch.float16)
        return
    # without fp16 convolutions in oneDNN (no AVX512-FP16 / AMX-FP16) the whole forward takes about
    # 4 minutes on 2 cores: check the fp16 weights and the first stages (input layer, first blocks)
    # against fp32 instead; the whole fp16 forward is checked on CUDA (tests/test_gpu.py) and here
    # on CPUs that have fp16
    assert all(t.dtype == torch.float16 for t in half.state_dict().values() if t.is_floating_point())
    x = reference_io["psp.input"]
    stages = lambda e: torch.nn.Sequential(e.encoder.input_layer, *e.encoder.body[:3])  # noqa: E731
    with torch.no_grad():
        want, got = stages(encoder)(x), stages(half)(x.half())
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    rel = (got.float() - want).abs().max().item() / want.abs().max().item()
    assert rel < HALF_TOL[torch.float16], f"fp16 first stages: relative error {rel:.2e}"
