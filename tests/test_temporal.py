"""Temporal coherence (paper Sec. 4.1, Eq. 6-7): flow-guided parsing-map smoothing, deflicker, flicker metric.

The clips are synthetic with known motion: ``skimage.data.astronaut()`` seen through a smooth
camera path (translation, zoom, small rotation), every frame an affine warp of one base image, so
the true flow between any two frames is known analytically. Parsing maps are smooth random
19-channel logit fields on the same base image, warped the same way, plus per-frame noise (the
flicker of a per-frame parser). No network weights are needed.
"""
from __future__ import annotations

import math
import re

import cv2
import numpy as np
import pytest
import torch

from vtoonify_core.temporal import flow as vflow
from vtoonify_core.temporal.deflicker import Deflicker, deflicker, warping_error
from vtoonify_core.temporal.smoothing import chunk_with_context, fuse_window, smooth_parsing

BASE = 384  # base image size; the frames look at the face region of it


# ----------------------------------------------------------------------------------------------
# synthetic clip with analytic flow
# ----------------------------------------------------------------------------------------------

def _base_image() -> np.ndarray:
    from skimage import data

    img = data.astronaut().astype(np.float32) / 127.5 - 1.0
    return cv2.resize(img, (BASE, BASE), interpolation=cv2.INTER_AREA)


def _base_parsing(seed: int, C: int = 19) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = rng.standard_normal((12, 12, C)).astype(np.float32) * 3.0
    return cv2.resize(low, (BASE, BASE), interpolation=cv2.INTER_CUBIC).reshape(BASE, BASE, C)


def _camera(t: int, T: int, H: int, W: int) -> np.ndarray:
    """3x3 affine map from base-image pixels to frame-t pixels (a smooth camera path)."""
    ph = 2 * math.pi * t / max(T, 1)
    s = (1.0 + 0.06 * math.sin(ph)) * H / 128
    th = math.radians(2.0) * math.sin(0.7 * ph + 0.3)
    tx, ty = 5.0 * math.sin(ph + 0.5) * H / 128, 3.0 * math.cos(0.8 * ph) * H / 128
    c, si = math.cos(th) * s, math.sin(th) * s
    cx, cy = 0.46 * BASE, 0.30 * BASE
    return np.array([
        [c, -si, W / 2 + tx - (c * cx - si * cy)],
        [si, c, H / 2 + ty - (si * cx + c * cy)],
        [0.0, 0.0, 1.0],
    ])


def _warp_base(img: np.ndarray, A: np.ndarray, H: int, W: int) -> np.ndarray:
    out = cv2.warpAffine(img, A[:2], (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    return out.reshape(H, W, -1)


def _true_flow(Ai: np.ndarray, Aj: np.ndarray, H: int, W: int) -> np.ndarray:
    """Flow from frame i to frame j on i's grid: x -> A_j A_i^-1 x, (2, H, W)."""
    M = Aj @ np.linalg.inv(Ai)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    px = M[0, 0] * xs + M[0, 1] * ys + M[0, 2]
    py = M[1, 0] * xs + M[1, 1] * ys + M[1, 2]
    return np.stack((px - xs, py - ys)).astype(np.float32)


class Clip:
    """A synthetic clip: frames (T,3,H,W) in [-1,1], clean and noisy logits (T,19,H,W), true flows."""

    def __init__(self, T: int, H: int, W: int, seed: int = 0, img_noise: float = 0.02, logit_noise: float = 1.0,
                 square: int = 0) -> None:
        rng = np.random.default_rng(seed + 1)
        base, pbase = _base_image(), _base_parsing(seed)
        self.T, self.H, self.W = T, H, W
        self.A = [_camera(t, T, H, W) for t in range(T)]
        frames, clean = [], []
        self.square_masks = []
        for t in range(T):
            f = _warp_base(base, self.A[t], H, W)
            p = _warp_base(pbase, self.A[t], H, W)
            m = np.zeros((H, W), bool)
            if square:
                # an opaque square sweeping across the face, independent of the camera
                x0 = int(round(4 + (W - square - 8) * t / max(T - 1, 1)))
                y0 = H // 3
                m[y0:y0 + square, x0:x0 + square] = True
                f[m] = np.array([-0.9, 0.7, -0.6], np.float32)
                p[m] = 0.0
                p[m, 0] = 10.0
            self.square_masks.append(m)
            frames.append(f)
            clean.append(p)
        frames = np.stack(frames).transpose(0, 3, 1, 2)
        clean = np.stack(clean).transpose(0, 3, 1, 2)
        noise = rng.standard_normal(clean.shape).astype(np.float32)
        noise = np.stack([[cv2.GaussianBlur(c, (0, 0), 1.5) for c in fr] for fr in noise])
        noise *= logit_noise / noise.std()
        self.frames = torch.from_numpy(frames + img_noise * rng.standard_normal(frames.shape).astype(np.float32)).clamp(-1, 1)
        self.clean = torch.from_numpy(clean)
        self.parsing = torch.from_numpy(clean + noise)

    def flow(self, i: int, j: int) -> np.ndarray:
        return _true_flow(self.A[i], self.A[j], self.H, self.W)

    def window_flows(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, 2k+1, 2, H, W) exact flows i -> i+d and back i+d -> i, zeros outside the clip."""
        T, H, W = self.T, self.H, self.W
        fw = np.zeros((T, 2 * k + 1, 2, H, W), np.float32)
        bw = np.zeros_like(fw)
        for i in range(T):
            for d in range(-k, k + 1):
                j = i + d
                if d and 0 <= j < T:
                    fw[i, k + d] = self.flow(i, j)
                    bw[i, k + d] = self.flow(j, i)
        return torch.from_numpy(fw), torch.from_numpy(bw)


class OracleFlow:
    """A FlowBackend that returns the exact flow: it recognises the clip's frames by equality."""

    def __init__(self, clip: Clip) -> None:
        self.clip = clip

    def _index(self, x: torch.Tensor) -> int:
        for t in range(self.clip.T):
            if torch.equal(x, self.clip.frames[t]):
                return t
        raise AssertionError("OracleFlow: unknown frame (use flow_scale=1)")

    def __call__(self, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.from_numpy(self.clip.flow(self._index(a), self._index(b))) for a, b in zip(src, dst)])


# ----------------------------------------------------------------------------------------------
# the slow reference of Eq. 6-7: loops over i and j, one pair at a time, numpy bilinear sampling
# ----------------------------------------------------------------------------------------------

def _ref_warp(img: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """out(p) = img(p + f(p)), bilinear, border-clamped; and the in-image mask (float64)."""
    C, H, W = img.shape
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    px, py = xs + f[0], ys + f[1]
    tol = 1e-4
    inside = (px >= -tol) & (px <= W - 1 + tol) & (py >= -tol) & (py <= H - 1 + tol)
    px, py = np.clip(px, 0, W - 1), np.clip(py, 0, H - 1)
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    wx, wy = px - x0, py - y0
    out = (img[:, y0, x0] * (1 - wx) * (1 - wy) + img[:, y0, x1] * wx * (1 - wy)
           + img[:, y1, x0] * (1 - wx) * wy + img[:, y1, x1] * wx * wy)
    return out, inside


def _reference_smoothing(P, I, flow_ij, k, sigma_t, sigma_s, fb=True, a1=0.01, a2=0.5):
    P, I = P.astype(np.float64), I.astype(np.float64)
    T = P.shape[0]
    out = np.zeros_like(P)
    for i in range(T):
        num, den = P[i].copy(), 1.0
        for j in range(max(0, i - k), min(T, i + k + 1)):
            if j == i:
                continue
            f = flow_ij(i, j).astype(np.float64)
            Pw, inside = _ref_warp(P[j], f)
            Iw, _ = _ref_warp(I[j], f)
            m = inside.astype(np.float64)
            if fb:
                bw, _ = _ref_warp(flow_ij(j, i).astype(np.float64), f)
                err = ((f + bw) ** 2).sum(0)
                m *= err <= a1 * ((f ** 2).sum(0) + (bw ** 2).sum(0)) + a2
            photo = ((I[i] - Iw) ** 2).mean(0)
            w = np.exp(-(i - j) ** 2 / (2 * sigma_t ** 2) - photo / (2 * sigma_s ** 2)) * m
            num = num + w * Pw
            den = den + w
        out[i] = num / den
    return out


@pytest.fixture(scope="module")
def small_clip() -> Clip:
    return Clip(T=7, H=40, W=48, seed=3)


@pytest.fixture(scope="module")
def clip128() -> Clip:
    return Clip(T=16, H=128, W=128, seed=0)


def _probs(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=1)


# ----------------------------------------------------------------------------------------------
# Eq. 6-7 exactly
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fb", [True, False])
def test_eq67_matches_slow_reference_with_exact_flow(small_clip, fb):
    """fuse_window (batched grid_sample over all window pairs) == explicit loops over i and j."""
    c, k = small_clip, 3
    fw, bw = c.window_flows(k)
    # a local flow error on some pairs, so that the forward-backward mask has holes
    ys, xs = np.mgrid[0:c.H, 0:c.W]
    bump = 4.0 * np.exp(-((xs - 30) ** 2 + (ys - 18) ** 2) / (2 * 5.0 ** 2)).astype(np.float32)
    bad = {(2, 4), (5, 3), (0, 1)}

    def flow_ij(i, j):
        f = c.flow(i, j)
        if (i, j) in bad:
            f = f.copy()
            f[0] += bump
        return f

    for i, j in bad:
        fw[i, k + j - i, 0] += torch.from_numpy(bump)
        bw[j, k + i - j, 0] += torch.from_numpy(bump)
    ref = _reference_smoothing(c.parsing.numpy(), c.frames.numpy(), flow_ij, k, 5.5, 0.2, fb=fb)
    # float64: the same numbers as the reference up to rounding (measured ~2e-14)
    got64 = fuse_window(c.parsing.double(), c.frames.double(), fw.double(), k, 5.5, 0.2,
                        flows_back=bw.double() if fb else None)
    assert got64.dtype == torch.float64
    assert np.abs(got64.numpy() - ref).max() < 1e-10
    # float32: within float32 rounding of the sampling positions (measured ~7e-6)
    got = fuse_window(c.parsing, c.frames, fw, k, 5.5, 0.2, flows_back=bw if fb else None)
    assert got.shape == c.parsing.shape and got.dtype == torch.float32
    assert np.abs(got.double().numpy() - ref).max() < 3e-5
    # the weights are not trivial: the result is neither the input nor a plain average
    assert (got - c.parsing).abs().mean() > 0.1
    # the batching of fuse_window does not change a bit
    again = fuse_window(c.parsing, c.frames, fw, k, 5.5, 0.2, flows_back=bw if fb else None, batch_frames=2)
    assert torch.equal(got, again)


def test_fuse_window_output_subrange_and_masks(small_clip):
    c, k = small_clip, 2
    fw, bw = c.window_flows(k)
    full = fuse_window(c.parsing, c.frames, fw, k, flows_back=bw)
    part = fuse_window(c.parsing, c.frames, fw[2:5], k, flows_back=bw[2:5], out_start=2)
    assert torch.equal(part, full[2:5])
    # masks of zeros: only the centre term is left
    zero = torch.zeros(c.T, 2 * k + 1, 1, c.H, c.W)
    assert torch.equal(fuse_window(c.parsing, c.frames, fw, k, masks=zero), c.parsing)


# ----------------------------------------------------------------------------------------------
# flow backends
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])
def test_dis_flow_follows_the_convention(clip128, scale):
    """DIS(src=I_i, dst=I_j) is the flow on i's grid that backward_warp uses to align j to i."""
    c = clip128
    i, j = 3, 5
    f = vflow.estimate_flow(vflow.DISFlow("medium"), c.frames[i:i + 1], c.frames[j:j + 1], scale=scale)
    assert f.shape == (1, 2, c.H, c.W) and f.dtype == torch.float32
    true = torch.from_numpy(c.flow(i, j))
    epe = (f[0] - true).norm(dim=0)[8:-8, 8:-8]
    assert epe.median() < (0.6 if scale == 0.5 else 0.35), float(epe.median())
    # aligning j to i with it brings the frames together
    warped, valid = vflow.backward_warp(c.frames[j:j + 1], f)
    assert (warped - c.frames[i:i + 1])[valid.expand(-1, 3, -1, -1)].abs().mean() < 0.5 * (c.frames[j] - c.frames[i]).abs().mean()


def test_resize_flow_rescales_vectors():
    f = torch.zeros(1, 2, 10, 20)
    f[:, 0], f[:, 1] = 1.5, -2.0
    g = vflow.resize_flow(f, (30, 40))
    assert g.shape == (1, 2, 30, 40)
    assert torch.allclose(g[:, 0], torch.full((1, 30, 40), 3.0)) and torch.allclose(g[:, 1], torch.full((1, 30, 40), -6.0))


def test_backward_warp_and_occlusion_mask_conventions():
    x = torch.arange(20.0).view(1, 1, 4, 5)
    f = torch.zeros(1, 2, 4, 5)
    f[:, 0] = 1.0  # sample one pixel to the right
    out, valid = vflow.backward_warp(x, f)
    assert torch.equal(out[0, 0, :, :4], x[0, 0, :, 1:])
    assert valid[0, 0, :, :4].all() and not valid[0, 0, :, 4].any()
    assert torch.equal(vflow.occlusion_mask(f, -f)[0, 0, :, :4], torch.ones(4, 4))
    assert not vflow.occlusion_mask(f, f)[0, 0].any()  # forward and backward agree nowhere


def test_raft_backend_is_optional_and_local_only(tmp_path):
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(ImportError, match="torchvision"):
            vflow.RAFTFlow(tmp_path / "raft.pth")
    with pytest.raises(ValueError, match="weights"):
        vflow.get_flow_backend("raft")

    class FakeRAFT(torch.nn.Module):
        """torchvision's RAFT call signature; predicts a constant flow (1, -2) on its padded input."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.seen = None

        def forward(self, a, b, num_flow_updates=12):
            self.seen = (tuple(a.shape), num_flow_updates)
            f = torch.zeros(a.shape[0], 2, *a.shape[-2:])
            f[:, 0], f[:, 1] = 1.0, -2.0
            return [f * 0, f]

    fake = FakeRAFT()
    back = vflow.RAFTFlow(model=fake, num_flow_updates=20)
    x = torch.rand(2, 3, 37, 50) * 2 - 1
    f = vflow.estimate_flow(back, x, x, scale=0.5)
    assert fake.seen == ((2, 3, 24, 32), 20)  # 19x25 padded to multiples of 8
    assert f.shape == (2, 2, 37, 50)
    assert torch.allclose(f[:, 0], torch.tensor(1.0 * 50 / 25)) and torch.allclose(f[:, 1], torch.tensor(-2.0 * 37 / 19))


# ----------------------------------------------------------------------------------------------
# the paper's claims, with real (DIS) flow
# ----------------------------------------------------------------------------------------------

def test_smoothing_reduces_flicker_of_parsing_maps(clip128, record_property):
    """Sec. 4.1: the smoothed maps flicker much less along the motion, and are closer to the truth."""
    c = clip128
    smoothed = smooth_parsing(c.parsing, c.frames)  # official defaults, DIS flow
    oracle = OracleFlow(c)
    before_dis = warping_error(_probs(c.parsing), c.frames, "dis")
    after_dis = warping_error(_probs(smoothed), c.frames, "dis")
    before = warping_error(_probs(c.parsing), c.frames, oracle)
    after = warping_error(_probs(smoothed), c.frames, oracle)
    record_property("flicker_factor_exact_flow", before / after)
    record_property("flicker_factor_dis_flow", before_dis / after_dis)
    print(f"warping error of softmax maps: exact flow {before:.4f} -> {after:.4f} ({before / after:.2f}x); "
          f"DIS {before_dis:.4f} -> {after_dis:.4f} ({before_dis / after_dis:.2f}x)")
    assert before / after > 1.5
    assert before_dis / after_dis > 1.5
    # not by blurring the content away: closer to the clean maps than the per-frame maps are
    err_in = (_probs(c.parsing) - _probs(c.clean)).abs().mean()
    err_out = (_probs(smoothed) - _probs(c.clean)).abs().mean()
    assert err_out < 0.8 * err_in


def test_occluder_is_not_smeared():
    """Near a moving opaque square the smoothed maps follow the current frame, not the square's history."""
    c = Clip(T=14, H=96, W=96, seed=5, square=24, logit_noise=0.5)
    smoothed = smooth_parsing(c.parsing, c.frames, k=5)
    naive = smooth_parsing(c.parsing, c.frames, k=5, sigma_s=1e6, occlusion="bounds")  # no occlusion handling
    P, S, Nv = _probs(c.clean), _probs(smoothed), _probs(naive)
    errs, errs_naive, errs_in = [], [], []
    for i in range(3, c.T - 3):
        m = c.square_masks[i].astype(np.uint8)
        ring = cv2.dilate(m, np.ones((9, 9), np.uint8)) - cv2.erode(m, np.ones((9, 9), np.uint8))
        band = torch.from_numpy(ring.astype(bool))
        errs.append((S[i] - P[i]).abs().sum(0)[band].mean())
        errs_naive.append((Nv[i] - P[i]).abs().sum(0)[band].mean())
        errs_in.append((_probs(c.parsing)[i] - P[i]).abs().sum(0)[band].mean())
    err, err_naive, err_in = (float(torch.stack(e).mean()) for e in (errs, errs_naive, errs_in))
    print(f"band error vs the current frame: smoothed {err:.3f}, per-frame input {err_in:.3f}, naive {err_naive:.3f}")
    assert err < err_in  # no worse than no smoothing, where the occluder moves
    assert err < 0.5 * err_naive  # and far from the smear of a flow average without the masks


# ----------------------------------------------------------------------------------------------
# chunks, edge cases, errors
# ----------------------------------------------------------------------------------------------

def test_chunk_with_context():
    chunks = list(chunk_with_context(10, 4, 2))
    assert chunks == [(0, 6, 0, 4), (2, 10, 4, 8), (6, 10, 8, 10)]
    assert list(chunk_with_context(5, None, 3)) == [(0, 5, 0, 5)]
    assert list(chunk_with_context(0, 4, 1)) == []
    with pytest.raises(ValueError):
        list(chunk_with_context(5, 0, 1))
    with pytest.raises(ValueError):
        list(chunk_with_context(5, 2, -1))


def test_chunked_equals_one_shot():
    c = Clip(T=11, H=48, W=56, seed=7)
    one = smooth_parsing(c.parsing, c.frames, k=3)
    calls = []
    for n in (1, 4, 5):
        chunked = smooth_parsing(c.parsing, c.frames, k=3, chunk_size=n, progress=lambda d, t: calls.append((d, t)))
        assert torch.equal(chunked, one), (n, float((chunked - one).abs().max()))
    assert calls[-1] == (11, 11)
    # streaming: each chunk from its context slice alone
    parts = [smooth_parsing(c.parsing[cs:ce], c.frames[cs:ce], k=3, out_range=(os_ - cs, oe - cs))
             for cs, ce, os_, oe in chunk_with_context(c.T, 4, 3)]
    assert torch.equal(torch.cat(parts), one)


def test_k0_one_frame_and_errors(small_clip):
    c = small_clip
    out = smooth_parsing(c.parsing, c.frames, k=0)
    assert torch.equal(out, c.parsing) and out.data_ptr() != c.parsing.data_ptr()
    one = smooth_parsing(c.parsing[:1], c.frames[:1])
    assert torch.equal(one, c.parsing[:1])
    with pytest.raises(ValueError, match="k"):
        smooth_parsing(c.parsing, c.frames, k=-1)
    with pytest.raises(ValueError, match="numbers of frames"):
        smooth_parsing(c.parsing, c.frames[:-1])
    with pytest.raises(ValueError, match="size"):
        smooth_parsing(c.parsing, c.frames[..., :-1])
    bad = c.parsing.clone()
    bad[1, 2, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        smooth_parsing(bad, c.frames)
    with pytest.raises(ValueError, match="unknown flow"):
        smooth_parsing(c.parsing, c.frames, flow="farneback")
    with pytest.raises(ValueError, match="sigma_s"):
        smooth_parsing(c.parsing, c.frames, sigma_s=0)


def _bad_window_args(c: Clip) -> list[tuple[str, dict]]:
    """(argument, keyword overrides) pairs that fuse_window and smooth_parsing both refuse."""
    nan = c.parsing.clone()
    nan[0, 0, 0, 0] = float("inf")
    return [
        ("k", dict(k=-1)), ("k", dict(k=1.5)), ("k", dict(k=True)), ("k", dict(k="2")),
        ("sigma_t", dict(sigma_t=0.0)), ("sigma_t", dict(sigma_t=float("nan"))), ("sigma_s", dict(sigma_s=-0.2)),
        ("parsing", dict(parsing=c.parsing.numpy())), ("parsing", dict(parsing=c.parsing[0])),
        ("parsing", dict(parsing=c.parsing[:0])), ("parsing", dict(parsing=c.parsing.long())),
        ("parsing", dict(parsing=nan)),
        ("frames", dict(frames=c.frames[:, :2])), ("frames", dict(frames=c.frames.int())),
        ("frames", dict(frames=c.frames[:-1])), ("frames", dict(frames=c.frames[..., :-1])),
    ]


def _refusal(call, **kwargs) -> str:
    with pytest.raises((TypeError, ValueError)) as err:
        call(**kwargs)
    return str(err.value)


def test_each_bad_argument_is_named(small_clip):
    """fuse_window and smooth_parsing share their checks: every refusal names the argument at fault."""
    c, k = small_clip, 2
    fw, bw = c.window_flows(k)

    def fuse(**kw):
        args = dict(parsing=c.parsing, frames=c.frames, flows=fw, k=k)
        args.update(kw)
        return fuse_window(**args)

    def smooth(**kw):
        args = dict(parsing=c.parsing, frames=c.frames, k=k)
        args.update(kw)
        return smooth_parsing(**args)

    for name, kw in _bad_window_args(c):
        for call in (fuse, smooth):
            msg = _refusal(call, **kw)
            assert re.search(rf"\b{name}\b", msg), (call.__name__, name, msg)
    bad_nan = fw.clone()
    bad_nan[0, 0, 0, 0, 0] = float("nan")
    for name, kw in [("flows", dict(flows=fw[:, 1:])), ("flows", dict(flows=bad_nan)),
                     ("flows_back", dict(flows_back=bw[:, :, :1])), ("masks", dict(masks=torch.ones(1, 1, 1, 1, 1))),
                     ("out_start", dict(out_start=1)), ("out_start", dict(out_start=-1)),
                     ("batch_frames", dict(batch_frames=0))]:
        assert re.search(rf"\b{name}\b", _refusal(fuse, **kw)), name
    for name, kw in [("occlusion", dict(occlusion="mask")), ("flow_scale", dict(flow_scale=0.0)),
                     ("flow_scale", dict(flow_scale=float("inf"))), ("out_range", dict(out_range=(3, 2))),
                     ("out_range", dict(out_range=(0, c.T + 1))), ("chunk_size", dict(chunk_size=0))]:
        assert re.search(rf"\b{name}\b", _refusal(smooth, **kw)), name
    assert re.search(r"\bchunk_size\b", _refusal(lambda **kw: list(chunk_with_context(**kw)), T=5, chunk_size=0, k=1))
    assert re.search(r"\bflow_scale\b", _refusal(Deflicker, strength=0.5, flow_scale=-1.0))


def test_half_precision_inputs(small_clip):
    """fp16/bf16 maps are fused in float32 and returned in their own dtype."""
    c = small_clip
    ref = smooth_parsing(c.parsing, c.frames, k=2)
    for dt in (torch.float16, torch.bfloat16):
        out = smooth_parsing(c.parsing.to(dt), c.frames.to(dt), k=2)
        assert out.dtype == dt
        assert (out.float() - ref).abs().mean() < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(clip128):
    c = clip128
    cpu = smooth_parsing(c.parsing, c.frames, k=3)
    gpu = smooth_parsing(c.parsing.cuda(), c.frames.cuda(), k=3)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().mean() < 1e-4
    out = _flickering_output(c)
    d_cpu, d_gpu = deflicker(out, c.frames, 0.5), deflicker(out.cuda(), c.frames.cuda(), 0.5)
    assert (d_gpu.cpu() - d_cpu).abs().mean() < 1e-4
    assert abs(warping_error(out.cuda(), c.frames.cuda()) - warping_error(out, c.frames)) < 1e-4


# ----------------------------------------------------------------------------------------------
# deflicker and the metric on stylized output
# ----------------------------------------------------------------------------------------------

def _flickering_output(c: Clip, scale: int = 2, seed: int = 0) -> torch.Tensor:
    """A stand-in "stylized" output at 2x the guide: the clip with a per-frame brightness/colour flicker."""
    g = torch.Generator().manual_seed(seed)
    up = torch.nn.functional.interpolate(c.frames, scale_factor=scale, mode="bilinear", align_corners=False)
    gain = 1 + 0.15 * (torch.rand(c.T, 1, 1, 1, generator=g) - 0.5)
    shift = 0.12 * (torch.rand(c.T, 3, 1, 1, generator=g) - 0.5)
    return (up * gain + shift).clamp(-1, 1)


def test_deflicker_identity_and_reduction(clip128):
    c = clip128
    out = _flickering_output(c)
    assert torch.equal(deflicker(out, c.frames, 0.0), out)
    exact = OracleFlow(c)  # measured with the true motion, not with the DIS flow deflicker used
    base = warping_error(out, c.frames, exact)
    errs = {s: warping_error(deflicker(out, c.frames, s), c.frames, exact) for s in (0.5, 1.0)}
    print(f"output warping error: {base:.4f} -> strength 0.5: {errs[0.5]:.4f}, 1.0: {errs[1.0]:.4f}")
    assert errs[0.5] < 0.8 * base and errs[1.0] < errs[0.5]
    # streaming over chunks gives the same frames
    d = Deflicker(0.7)
    parts = torch.cat([d(out[s:s + 5], c.frames[s:s + 5]) for s in range(0, c.T, 5)])
    assert torch.equal(parts, deflicker(out, c.frames, 0.7))
    with pytest.raises(ValueError, match="strength"):
        deflicker(out, c.frames, 1.5)
    with pytest.raises(ValueError, match="length"):
        deflicker(out, c.frames[:-1], 0.5)


def test_deflicker_does_not_smear_a_moving_occluder():
    """The occlusion mask and the photometric gate keep the history out where the content changed."""
    c = Clip(T=12, H=96, W=96, seed=5, square=24)
    out = torch.nn.functional.interpolate(c.frames, scale_factor=2, mode="bilinear", align_corners=False)
    gated = deflicker(out, c.frames, 1.0)
    ungated = deflicker(out, c.frames, 1.0, sigma_g=1e6, occlusion=False)

    def band_err(x):
        errs = []
        for i in range(3, c.T):
            m = cv2.resize(c.square_masks[i].astype(np.uint8), (192, 192), interpolation=cv2.INTER_NEAREST)
            ring = torch.from_numpy((cv2.dilate(m, np.ones((13, 13), np.uint8)) - cv2.erode(m, np.ones((13, 13), np.uint8))).astype(bool))
            errs.append((x[i] - out[i]).abs().mean(0)[ring].mean())
        return float(torch.stack(errs).mean())

    e_gated, e_ungated = band_err(gated), band_err(ungated)
    print(f"deflicker change around the square: gated {e_gated:.3f}, ungated {e_ungated:.3f}")
    assert e_gated < 0.06 and e_gated < 0.25 * e_ungated


def test_warping_error_is_zero_for_a_static_clip_and_counts_motion(clip128):
    c = clip128
    static = c.frames[:1].repeat(4, 1, 1, 1)
    assert warping_error(static, static) < 1e-6  # DIS finds (almost exactly) no motion
    # the clean moving clip, with the exact flow, is far below its flickering version
    assert warping_error(c.frames, c.frames, OracleFlow(c)) < 0.5 * warping_error(_flickering_output(c, 1), c.frames, OracleFlow(c))
    with pytest.raises(ValueError, match="2 frames"):
        warping_error(c.frames[:1], c.frames[:1])
