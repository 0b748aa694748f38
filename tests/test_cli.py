"""``python -m vtoonify_core stylize``: videos and images file to file, defaults and user errors.

The stand-in checkpoints of ``conftest.py`` sit in ``official_dir`` in the official layout, which
is passed as ``--models-dir`` (or ``$VTOONIFY_MODELS``). The video is a 16-frame 32x32 clip of the
astronaut at 30000/1001 fps with full-range H.264 and an AAC tone; whole-frame mode keeps it fast.
Most runs call ``main()`` in-process; one runs the real command in a subprocess to check the exit
status and that a user error prints no traceback.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV (pip install av) is needed for video files")
skdata = pytest.importorskip("skimage.data")

import cv2  # noqa: E402

from vtoonify_core import video  # noqa: E402
from vtoonify_core.cli import main  # noqa: E402
from vtoonify_core.testing.clips import moving_window  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RATE = Fraction(30000, 1001)
FAST = ["--device", "cpu", "--precision", "fp32", "-q"]


@pytest.fixture(scope="module")
def models(official_dir, vtoonify_d_path, vtoonify_t_path, psp_path, bisenet_path, exstyle_path) -> Path:
    """The folder of stand-in files in the official layout."""
    return official_dir


def astronaut_frames(n: int, size: int) -> list[np.ndarray]:
    return moving_window(skdata.astronaut(), n, size)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli_clip") / "walk.mp4"
    return video.write_video(path, astronaut_frames(16, 32), RATE, options={"crf": "0"}, full_range=True,
                             tone_hz=440)


def test_video_round_trip(tmp_path, models, clip, capsys):
    out = tmp_path / "toon.mp4"
    rc = main(["stylize", str(clip), str(out), "--models-dir", str(models), "--crop", "whole", "--color-transfer",
               "--style-id", "1", "--style-degree", "0.6", "--chunk-size", "6", "--batch-size", "3", *FAST])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    src, got = video.probe_video(clip), video.probe_video(out)
    assert (got.width, got.height) == (128, 128)
    assert got.frames == 16 and got.rate == RATE and got.time_base == src.time_base
    assert got.full_range  # colour range kept
    assert [a.codec for a in got.audio] == ["aac"] and got.audio[0].sample_rate == 44100
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        audio_seconds = float(sum(p.duration for p in c.demux(a) if p.size) * a.time_base)
    assert audio_seconds == pytest.approx(16 / RATE, abs=0.05)
    assert not video.default_work_dir(out).exists()


def test_models_folder_from_environment(tmp_path, models, clip, monkeypatch):
    """$VTOONIFY_MODELS is the default folder; a VToonify-D style name picks its checkpoint."""
    monkeypatch.setenv("VTOONIFY_MODELS", str(models))
    short = video.write_video(tmp_path / "short.mp4", astronaut_frames(3, 32), 25)
    out = tmp_path / "out.mkv"
    assert main(["stylize", str(short), str(out), "--model", "cartoon", "--crop", "whole", "--color-transfer",
                 "--style-id", "2", "--codec", "ffv1", *FAST]) == 0
    info = video.probe_video(out)
    assert (info.frames, info.codec, info.audio) == (3, "ffv1", ())


def test_image_face_crop(tmp_path, models):
    pytest.importorskip("dlib", reason="face detection needs dlib (pip install dlib-bin face_recognition_models)")
    src = tmp_path / "portrait.png"
    img = cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    video.write_image(src, img)
    out = tmp_path / "toon.png"
    assert main(["stylize", str(src), str(out), "--models-dir", str(models), "--model",
                 "vtoonify_t_cartoon/vtoonify.pt", "--crop", "face", "--face-padding", "48", *FAST]) == 0
    assert video.read_image(out).shape == (384, 384, 3)  # 4x the 96x96 face crop


def test_missing_models_exit_2_without_traceback(tmp_path, clip):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VTOONIFY_MODELS": str(tmp_path / "nothing")}
    proc = subprocess.run([sys.executable, "-m", "vtoonify_core", "stylize", str(clip), str(tmp_path / "o.mp4")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("vtoonify_d_cartoon/vtoonify_s_d.pt", "vtoonify_d_<style>/vtoonify_s_d.pt", "exstyle_code.npy",
                 "encoder.pt", "faceparsing.pth", "VTOONIFY_MODELS", str(tmp_path / "nothing")):
        assert name in proc.stderr


def test_user_errors(tmp_path, models, capsys):
    base = ["--models-dir", str(models), *FAST]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    assert main(["stylize", str(bad), str(tmp_path / "o.mp4"), *base]) == 2
    assert "cannot read video" in capsys.readouterr().err
    assert main(["stylize", str(tmp_path / "missing.mp4"), str(tmp_path / "o.mp4"), *base]) == 2
    assert "input not found" in capsys.readouterr().err
    blank = video.write_video(tmp_path / "blank.mp4", [np.full((32, 32, 3), 80, np.uint8)] * 2, 25)
    assert main(["stylize", str(blank), str(tmp_path / "o.png"), *base]) == 2
    assert "is a video" in capsys.readouterr().err
    assert main(["stylize", str(blank), str(tmp_path / "o.avi"), *base]) == 2
    assert "unsupported output container" in capsys.readouterr().err
    pytest.importorskip("dlib", reason="face detection needs dlib")
    assert main(["stylize", str(blank), str(tmp_path / "o.mp4"), "--crop", "face", *base]) == 2
    err = capsys.readouterr().err
    assert "No face" in err and "--crop whole" in err and "Traceback" not in err


def test_interrupt_tells_how_to_resume(tmp_path, models, clip, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(video, "stylize_video", interrupted)
    rc = main(["stylize", str(clip), str(tmp_path / "o.mp4"), "--models-dir", str(models), "--crop", "whole",
               "--color-transfer", "--style-id", "1", *FAST])
    assert rc == 130
    assert "run the same command again to resume" in capsys.readouterr().err


def test_compile_option_reaches_the_generator(tmp_path, models, monkeypatch):
    """``--compile MODE`` compiles the generator's body with that mode (compilation itself is
    covered by tests/test_fast_path.py; here torch.compile is recorded, not run)."""
    import torch

    seen = []

    def recording_compile(fn, **kwargs):
        seen.append(kwargs.get("mode"))
        return fn

    monkeypatch.setattr(torch, "compile", recording_compile)
    src = tmp_path / "frame.png"
    video.write_image(src, cv2.resize(skdata.astronaut(), (64, 64), interpolation=cv2.INTER_AREA))
    out = tmp_path / "toon.png"
    base = ["stylize", str(src), str(out), "--models-dir", str(models), "--crop", "whole", "--color-transfer", "--style-id", "1", *FAST]
    assert main(base) == 0 and seen == []
    assert main([*base, "--compile", "max-autotune"]) == 0
    assert seen == ["max-autotune"]
    assert video.read_image(out).shape == (256, 256, 3)


def test_outputs_that_cannot_be_written_are_refused_before_any_model_loads(tmp_path, clip, capsys):
    """No models folder is given: had the models been loaded first, the error would be about them."""
    nowhere = ["--models-dir", str(tmp_path / "no_models"), *FAST]
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = {
        str(a_file / "o.mp4"): "is a file, not a folder",
        str(tmp_path): "is a folder: give a file name",
        str(clip): "is the input file",
        "/proc/vtoonify/o.mp4": "cannot write to /proc/vtoonify",
    }
    for out, expect in cases.items():
        t0 = time.perf_counter()
        assert main(["stylize", str(clip), out, *nowhere]) == 2, out
        err = capsys.readouterr().err
        assert expect in err and "Traceback" not in err and "models" not in err.split("error:")[1][:40], err
        assert time.perf_counter() - t0 < 5
    deep = tmp_path / "new" / "folders" / "o.mp4"
    assert main(["stylize", str(clip), str(deep), *nowhere]) == 2
    assert deep.parent.is_dir()  # missing folders are made; the error is then the missing models
    assert "VTOONIFY_MODELS" in capsys.readouterr().err


def test_inputs_that_are_no_video_get_what_they_are(tmp_path, capsys):
    nowhere = ["--models-dir", str(tmp_path / "no_models"), *FAST]
    folder = tmp_path / "clips.mp4"
    folder.mkdir()
    assert main(["stylize", str(folder), str(tmp_path / "o.mp4"), *nowhere]) == 2
    assert "is a folder, not a video file" in capsys.readouterr().err
    still = tmp_path / "still.mp4"  # a PNG behind a video extension
    video.write_image(tmp_path / "still.png", np.full((32, 32, 3), 90, np.uint8))
    still.write_bytes((tmp_path / "still.png").read_bytes())
    assert main(["stylize", str(still), str(tmp_path / "o.mp4"), *nowhere]) == 2
    assert "is a still image (PNG), not a video" in capsys.readouterr().err


def test_help_names_each_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["stylize", "--help"])
    text = capsys.readouterr().out
    options = re.split(r"\n  (?=-)", text.split("options:")[1])
    assert len(options) > 20
    for option in options:
        assert len(re.findall(r"\(default\b", option)) <= 1, option
    assert "(default: 26)" in text and "(default: None)" not in text


def test_interrupt_message_starts_below_the_progress_bar(tmp_path, models, clip, monkeypatch, capsys):
    def interrupted(*args, progress=None, **kwargs):
        progress(3, 16)  # the bar is drawn
        raise KeyboardInterrupt

    monkeypatch.setattr(video, "stylize_video", interrupted)
    rc = main(["stylize", str(clip), str(tmp_path / "o.mp4"), "--models-dir", str(models), "--crop", "whole",
               "--color-transfer", "--style-id", "1", "--device", "cpu", "--precision", "fp32"])
    err = capsys.readouterr().err
    assert rc == 130 and "3/16" in err
    assert "\ninterrupted" in err


def test_no_face_advice_fits_the_crop_mode(tmp_path, models, capsys):
    pytest.importorskip("dlib", reason="face detection needs dlib")
    base = ["--models-dir", str(models), "--model", "vtoonify_t_cartoon/vtoonify.pt", *FAST]
    blank = video.write_video(tmp_path / "blank.mp4", [np.full((32, 32, 3), 80, np.uint8)] * 2, 25)
    assert main(["stylize", str(blank), str(tmp_path / "o.mp4"), "--crop", "whole", *base]) == 2
    err = capsys.readouterr().err
    assert "No face" in err and "'whole frame'" not in err and "--crop whole" not in err
    assert "style code extracted from another image" in err
