"""The Ray path (vtoonify_core.batch.ray_runner) on a local Ray instance gives the single-process frames.

A 6-frame 32x32 clip is cut into 3 chunks; each chunk is a Ray task on one of two actors. The
outputs are lossless (FFV1 in RGB) so decoded frames compare exactly. The actors run torch with
the driver's thread count, so both paths take the same floating-point route.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray", reason="Ray is not installed (optional extra: pip install 'ray[default]')")
pytest.importorskip("av", reason="PyAV (pip install av) is needed for video files")
skdata = pytest.importorskip("skimage.data")


from vtoonify_core import video  # noqa: E402
from vtoonify_core.batch.ray_runner import ModelSpec, stylize_video_ray  # noqa: E402
from vtoonify_core.styles.codes import extract_style  # noqa: E402
from vtoonify_core.testing.clips import linear_pan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOSSLESS = video.EncodeSettings("ffv1", pix_fmt="bgr0")
SETTINGS = dict(crop_mode="whole", chunk_size=2, batch_size=2, encode=LOSSLESS)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs whose workers can import this checkout."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    frames = linear_pan(skdata.astronaut(), 6, 32)
    return video.write_video(tmp_path_factory.mktemp("ray_clip") / "clip.mp4", frames, Fraction(24000, 1001),
                             options={"crf": "0"}, tone_hz=220)


@pytest.fixture(scope="module")
def spec(vtoonify_d_path, bisenet_path, exstyle_path) -> ModelSpec:
    return ModelSpec(str(vtoonify_d_path), None, str(bisenet_path), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def planner(spec):
    return spec.load()


@pytest.fixture(scope="module")
def style(planner):
    return extract_style(planner, None, 2, True)


@pytest.fixture(scope="module")
def local_frames(tmp_path_factory, planner, style, clip) -> np.ndarray:
    out = tmp_path_factory.mktemp("local") / "local.mkv"
    video.stylize_video(planner, clip, out, style, 0.3, **SETTINGS)
    return np.stack([f for _, f in video.iter_frames(out)])


def test_ray_equals_single_process(tmp_path, local_ray, spec, planner, style, clip, local_frames):
    out = tmp_path / "ray.mkv"
    seen = []
    result = stylize_video_ray(spec, clip, out, style, 0.3, num_workers=2, torch_threads=torch.get_num_threads(),
                               planner=planner, progress=lambda d, t: seen.append((d, t)), **SETTINGS)
    assert result.chunks == 3 and result.chunks_run == 3 and result.frames == 6
    assert seen[0] == (0, 6) and seen[-1] == (6, 6)
    got = np.stack([f for _, f in video.iter_frames(out)])
    assert got.shape == (6, 128, 128, 3)
    assert np.array_equal(got, local_frames)
    info = video.probe_video(out)
    assert info.rate == Fraction(24000, 1001) and len(info.audio) == 1


def test_model_spec_from_a_loaded_model(planner, spec):
    again = ModelSpec.from_model(planner)
    assert (again.checkpoint, again.parser, again.device, again.precision) == (spec.checkpoint, spec.parser, "cpu",
                                                                              "fp32")
