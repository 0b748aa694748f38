"""ComfyUI's VIDEO at the streaming node (issue 20): the example inputs the pack ships and copies into
ComfyUI's input folder, clips written with a real sound track, and the in-memory clip helpers of
``nodes/video_sources.py``. The node itself runs on the real host (tests/host/test_workflows.py)."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV (pip install av) is needed for video files")

from vtoonify_core import video  # noqa: E402
from vtoonify_core.errors import InputError, VideoError  # noqa: E402

EXAMPLES = {"vtoonify_example.png", "vtoonify_reference.png", "vtoonify_example_clip.mp4"}


def test_shipped_examples_are_small_and_the_clip_has_sound(fake_comfy):
    examples = fake_comfy.module("nodes.examples")
    files = examples.example_files()
    assert {p.name for p in files} == EXAMPLES
    assert sum(p.stat().st_size for p in files) < 400_000
    info = video.probe_video(examples.EXAMPLES_DIR / "vtoonify_example_clip.mp4")
    assert (info.frames, info.rate, info.width, info.height) == (8, Fraction(8), 256, 256)
    assert len(info.audio) == 1 and info.audio[0].codec == "aac"
    assert info.duration == pytest.approx(1.0)


def test_examples_are_copied_when_missing_and_never_over_a_user_file(fake_comfy, tmp_path):
    examples = fake_comfy.module("nodes.examples")
    inputs = tmp_path / "input"
    mine = inputs / "vtoonify_example.png"
    inputs.mkdir()
    mine.write_bytes(b"the user's own picture")
    (inputs / "vtoonify_reference.png").symlink_to(tmp_path / "dangling")  # a link counts as the user's file
    written = examples.install_examples(inputs)
    assert [p.name for p in written] == ["vtoonify_example_clip.mp4"]
    assert mine.read_bytes() == b"the user's own picture"
    assert (inputs / "vtoonify_reference.png").is_symlink()
    shipped = examples.EXAMPLES_DIR / "vtoonify_example_clip.mp4"
    assert (inputs / "vtoonify_example_clip.mp4").read_bytes() == shipped.read_bytes()
    assert examples.install_examples(inputs) == []  # nothing left to copy
    fresh = tmp_path / "fresh"  # a fresh install: every example, the folder created
    assert sorted(p.name for p in examples.install_examples(fresh)) == sorted(EXAMPLES)
    # the pack did it when it loaded: the fake ComfyUI's input folder has them
    assert all((fake_comfy.root / name).is_file() for name in EXAMPLES)


def test_write_video_keeps_a_stereo_waveform(tmp_path):
    rate, sr = Fraction(24000, 1001), 48000
    frames = [np.full((16, 16, 3), 10 * i, np.uint8) for i in range(6)]
    t = np.arange(sr) / sr
    wave = np.stack([0.2 * np.sin(2 * np.pi * 300 * t), 0.2 * np.sin(2 * np.pi * 500 * t)]).astype(np.float32)
    path = video.write_video(tmp_path / "stereo.mp4", frames, rate, options={"crf": "0"}, audio=wave, sample_rate=sr)
    info = video.probe_video(path)
    assert (info.frames, info.rate) == (6, rate)
    assert [(a.channels, a.sample_rate) for a in info.audio] == [(2, sr)]
    with av.open(str(path)) as c:  # cut to the video's length (6 frames at 23.976 fps = 0.25 s)
        s = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(s))
    assert abs(samples - round(6 / rate * sr)) <= 2048  # AAC priming and padding
    for bad in (np.zeros((3, 100), np.float32), np.zeros(100, np.float32), np.zeros((2, 0), np.float32)):
        with pytest.raises(VideoError, match="channels, samples"):
            video.write_video(tmp_path / "bad.mp4", frames, rate, audio=bad)


def test_in_memory_rates_and_names(fake_comfy):
    import importlib

    sources = importlib.import_module(f"{fake_comfy.pack.__name__}.nodes.video_sources")
    assert sources.exact_rate(24.0) == 24 and sources.exact_rate(Fraction(30000, 1001)) == Fraction(30000, 1001)
    assert sources.exact_rate(29.97002997002997) == Fraction(30000, 1001)
    assert sources.exact_rate(0) == 1
    node = fake_comfy.module("nodes.video")
    assert node._safe_stem("my clip (1).mp4") == "my_clip__1__mp4" and node._safe_stem("???") == "video"
    with pytest.raises(InputError, match="expected a VIDEO"):
        sources.source_file("clip.mp4")


def test_stylize_video_node_declares_video_in_and_out(fake_comfy):
    cls = fake_comfy.pack.NODE_CLASS_MAPPINGS["VToonifyStylizeVideo"]
    spec = cls.INPUT_TYPES()
    assert list(spec["required"]) == ["vtoonify_model", "video", "style_degree", "batch_size", "crop_mode"]
    assert spec["required"]["video"][0] == "VIDEO"
    assert spec["optional"]["style"][0] == "VTOONIFY_STYLE,VTOONIFY_KEYFRAMES"
    assert cls.RETURN_TYPES == ("VIDEO", "IMAGE") and cls.OUTPUT_NODE
    assert fake_comfy.pack.NODE_DISPLAY_NAME_MAPPINGS["VToonifyStylizeVideo"] == "Stylize Video (VToonify)"
