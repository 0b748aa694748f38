"""Keyframed styles through the streaming video path: each video frame gets the style of its own
frame number, whatever chunk it falls in, and an interrupted run resumes with the same schedule."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

pytest.importorskip("av", reason="PyAV is needed for video files")
skdata = pytest.importorskip("skimage.data")

from vtoonify_core import load_model, stylize_clip, video  # noqa: E402
from vtoonify_core.styles import parse_keyframes  # noqa: E402
from vtoonify_core.testing.clips import moving_window  # noqa: E402
from vtoonify_core.types import StyleCode  # noqa: E402

LOSSLESS = video.EncodeSettings("ffv1", pix_fmt="bgr0")
N = 10


@pytest.fixture(scope="module")
def bundle_d(vtoonify_d_path, bisenet_path, exstyle_path):
    return load_model(vtoonify_d_path, None, bisenet_path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames = moving_window(skdata.astronaut(), N, 32)
    return video.write_video(tmp_path_factory.mktemp("kf") / "clip.mp4", frames, Fraction(25), options={"crf": "0"})


def code(seed: int) -> StyleCode:
    return StyleCode(torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(seed)) * 0.5, "dualstylegan")


@pytest.fixture(scope="module")
def schedule():
    return parse_keyframes("0:A@0.2, 9:B@0.9", {"A": code(1), "B": code(2)})


def decode(path) -> np.ndarray:
    return np.stack([f for _, f in video.iter_frames(path)])


def test_chunks_follow_the_video_frame_numbers(bundle_d, clip, schedule, tmp_path):
    out = video.stylize_video(bundle_d, clip, tmp_path / "o.mkv", schedule, 0.5, crop_mode="whole", chunk_size=4,
                              batch_size=2, encode=LOSSLESS).output
    got = decode(out)
    frames = torch.from_numpy(decode(clip)).permute(0, 3, 1, 2)
    ref, _ = stylize_clip(bundle_d, frames, schedule, 0.5, crop_mode="whole", batch_size=2)
    assert np.array_equal(got, video.to_uint8_hwc(ref))
    # the last frame is keyframe B at its degree, although it is the second frame of the third chunk
    last, _ = stylize_clip(bundle_d, frames[-1:], code(2), 0.9, crop_mode="whole", batch_size=1)
    assert np.array_equal(got[-1], video.to_uint8_hwc(last)[0])
    # restarting the schedule in each chunk would give other frames (what the frame offset prevents)
    restarted, _ = stylize_clip(bundle_d, frames[4:8], schedule, 0.5, crop_mode="whole", batch_size=2)
    assert not np.array_equal(got[4:8], video.to_uint8_hwc(restarted))


def test_interrupted_keyframed_run_resumes_with_the_same_schedule(bundle_d, clip, schedule, tmp_path):
    whole = video.stylize_video(bundle_d, clip, tmp_path / "a.mkv", schedule, 0.5, crop_mode="whole", chunk_size=4,
                                batch_size=2, encode=LOSSLESS).output

    class Stop(Exception):
        pass

    def stop(k, job):
        if k == 1:
            raise Stop()

    out = tmp_path / "b.mkv"
    with pytest.raises(Stop):
        video.stylize_video(bundle_d, clip, out, schedule, 0.5, crop_mode="whole", chunk_size=4, batch_size=2,
                            encode=LOSSLESS, on_chunk=stop)
    job = video.VideoJob.load(video.default_work_dir(out))
    assert [k.frame for k in job.style.keyframes] == [0, 9] and [k.degree for k in job.style.keyframes] == [0.2, 0.9]
    assert all(torch.equal(a.style.wplus, b.style.wplus) for a, b in zip(job.style.keyframes, schedule.keyframes))
    result = video.stylize_video(bundle_d, clip, out, schedule, 0.5, crop_mode="whole", chunk_size=4, batch_size=2,
                                 encode=LOSSLESS)
    assert result.resumed and result.chunks_run == 1
    assert np.array_equal(decode(out), decode(whole))


def test_another_schedule_is_another_job(bundle_d, clip, schedule, tmp_path):
    other = parse_keyframes("0:A@0.2, 5:B@0.9", {"A": code(1), "B": code(2)})
    settings = [video.job_settings(bundle_d, clip, tmp_path / "o.mkv", style=s, style_id=0, color_transfer=False,
                                   d_s=0.5, crop_mode="whole", face_padding=200, chunk_size=4, encode={})
                for s in (schedule, other, code(1))]
    assert len({video.settings_hash(s) for s in settings}) == 3
