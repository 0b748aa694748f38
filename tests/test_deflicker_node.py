"""The Deflicker node: identity at strength 0, less flicker at strength > 0 (measured with the
warping error of vtoonify_core.temporal), clear errors on mismatched guides."""
from __future__ import annotations

import numpy as np
import pytest
import torch

skdata = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def pack(fake_comfy_empty):
    return fake_comfy_empty.pack


def clip_pair(n: int = 8, size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """(input clip, "stylized" clip) as IMAGE [n, size, size, 3]: the astronaut panning right 1 px per
    frame, and the same frames with a +-8% brightness flicker (what an unstable toonifier adds)."""
    import cv2

    base = cv2.resize(skdata.astronaut(), (size + n, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    gains = 1 + 0.08 * np.random.default_rng(0).choice([-1.0, 1.0], size=n).astype(np.float32)
    clean = np.stack([base[:, i:i + size] for i in range(n)])
    return torch.from_numpy(clean), torch.from_numpy(np.clip(clean * gains[:, None, None, None], 0, 1))


def run(pack, images, strength, guide=None):
    node = pack.NODE_CLASS_MAPPINGS["VToonifyDeflicker"]()
    return getattr(node, node.FUNCTION)(images, strength, "dis", 0.5, guide_images=guide)[0]


def test_strength_zero_is_the_identity(pack):
    _, clip = clip_pair()
    assert torch.equal(run(pack, clip, 0.0), clip)


def test_deflicker_lowers_the_warping_error(pack):
    from vtoonify_core.temporal.deflicker import warping_error

    clean, clip = clip_pair()
    out = run(pack, clip, 1.0, guide=clean)
    assert out.shape == clip.shape and out.min() >= 0 and out.max() <= 1
    guide = clean.permute(0, 3, 1, 2) * 2 - 1
    before = warping_error(clip.permute(0, 3, 1, 2), guide)
    after = warping_error(out.permute(0, 3, 1, 2), guide)
    assert after < 0.7 * before, (before, after)


def test_guide_with_another_frame_count_is_refused(pack):
    clean, clip = clip_pair()
    with pytest.raises(ValueError, match="Deflicker.*guide_images.*frames"):
        run(pack, clip, 0.5, guide=clean[:3])
