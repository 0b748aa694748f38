"""``python -m vtoonify_core distill`` and ``stylize --student``: a student trained on the first
frames of a clip (VToonify-D stand-in as the teacher), then run over the whole clip."""
from __future__ import annotations

from fractions import Fraction

import pytest

pytest.importorskip("av", reason="PyAV (pip install av) is needed for video files")
skdata = pytest.importorskip("skimage.data")

from vtoonify_core import video  # noqa: E402
from vtoonify_core.cli import main  # noqa: E402
from vtoonify_core.student import load_student  # noqa: E402
from vtoonify_core.testing.clips import moving_window  # noqa: E402

FAST = ["--device", "cpu", "--precision", "fp32", "-q"]


def test_distill_then_stylize_with_the_student(tmp_path, official_dir, vtoonify_d_path, bisenet_path, exstyle_path,
                                               psp_path, capsys):
    clip = video.write_video(tmp_path / "walk.mp4", moving_window(skdata.astronaut(), 7, 36), 24)
    student = tmp_path / "s.safetensors"
    rc = main(["distill", str(clip), str(student), "--models-dir", str(official_dir), "--color-transfer",
               "--style-id", "1", "--frames", "4", "--steps", "3", "--batch-size", "2", "--crop-size", "32", *FAST])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    loaded = load_student(student)
    assert loaded.meta["frames"] == "4" and loaded.meta["size"] == "40x40" and loaded.has_refiner
    out = tmp_path / "toon.mp4"
    assert main(["stylize", str(clip), str(out), "--student", str(student), "--batch-size", "3", *FAST]) == 0
    got = video.probe_video(out)
    assert (got.width, got.height, got.frames, got.rate) == (144, 144, 7, Fraction(24))
    img = tmp_path / "toon.png"
    video.write_image(tmp_path / "in.png", moving_window(skdata.astronaut(), 1, 32)[0])
    assert main(["stylize", str(tmp_path / "in.png"), str(img), "--student", str(student), *FAST]) == 0
    assert video.read_image(img).shape == (128, 128, 3)


def test_distill_user_errors(tmp_path, official_dir, capsys):
    assert main(["distill", str(tmp_path / "none.mp4"), str(tmp_path / "s.safetensors"), *FAST]) == 2
    assert "input not found" in capsys.readouterr().err
    (tmp_path / "a.png").write_bytes(b"")
    assert main(["distill", str(tmp_path / "a.png"), str(tmp_path / "s.pt"), *FAST]) == 2
    assert "written as .safetensors" in capsys.readouterr().err
    assert main(["stylize", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--student",
                 str(tmp_path / "missing.safetensors"), *FAST]) == 2
    assert "no such file" in capsys.readouterr().err
