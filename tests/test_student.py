"""The real-time student (issue 16): distillation of a deterministic cartoon-like teacher reaches
28 dB on held-out frames, the file round trip, refiner on and off, interruption, streaming, the
VToonify teacher, and the errors on bad input."""
from __future__ import annotations

import pytest
import torch

from vtoonify_core.errors import CheckpointError, InputError
from vtoonify_core.models.bundle import load_model
from vtoonify_core.student import StudentConfig, load_student, train_student, vtoonify_teacher
from vtoonify_core.student.data import run_teacher
from vtoonify_core.student.losses import psnr
from vtoonify_core.testing.cartoon import cartoon_teacher, face_clip
from vtoonify_core.types import StyleCode

TINY = StudentConfig(width=4, blocks=1, refiner_width=4)


@pytest.fixture(scope="module")
def clip():
    """24 frames of 32x32 of a real face moving slowly, in [-1, 1]."""
    return face_clip(24, 32, travel=(20, 10))


def train_tiny(frames, steps=3, **kw):
    kw.setdefault("config", TINY)
    kw.setdefault("crop_size", 32)
    return train_student(cartoon_teacher, frames, steps=steps, batch_size=2, **kw)


@pytest.mark.slow
def test_distilled_student_reaches_28_db_on_held_out_frames(clip):
    held = list(range(2, clip.shape[0], 3))                 # every third frame is never seen in training
    seen = [i for i in range(clip.shape[0]) if i not in held]
    student = train_student(cartoon_teacher, clip[seen], steps=700, batch_size=4, crop_size=32, augment=0.3, lr=2e-3,
                            config=StudentConfig(width=8, blocks=2, refiner_width=8), seed=0)
    target = cartoon_teacher(clip)
    refined = student(clip)                                  # the whole clip in order: the refiner's context
    stage1 = student(clip, refine=False)
    assert psnr(refined[held], target[held]) >= 28.0
    assert psnr(stage1[held], target[held]) >= 28.0
    assert not torch.equal(refined, stage1)                  # the refiner does something
    assert psnr(torch.nn.functional.interpolate(clip[held], scale_factor=4, mode="bicubic"), target[held]) < 20


def test_save_load_round_trip_is_equal(clip, tmp_path):
    student = train_tiny(clip[:4], checkpoint=tmp_path / "s.safetensors")
    again = load_student(tmp_path / "s.safetensors", "cpu", torch.float32)
    assert again.config == student.config and again.has_refiner
    assert again.meta["steps"] == "3" and again.meta["frames"] == "4"
    for k, v in student.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    assert torch.equal(student(clip[:5]), again(clip[:5]))
    half = load_student(tmp_path / "s.safetensors", "cpu", torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half(clip[:2]).dtype == torch.float32


def test_a_file_of_the_first_layout_still_loads(clip, tmp_path):
    """Students written before ``decoder_width`` existed (no such key in their config) load with the
    first decoder layout and stylize as they did."""
    import json

    from vtoonify_core.student import Student
    from vtoonify_core.weights import read_checkpoint, save_safetensors

    old = Student(StudentConfig(width=4, blocks=1, refiner_width=4, decoder_width=0)).eval()
    old.save(tmp_path / "new.safetensors")
    ckpt = read_checkpoint(tmp_path / "new.safetensors")
    config = json.loads(ckpt.metadata["config"])
    del config["decoder_width"]
    save_safetensors(dict(ckpt.tensors), tmp_path / "old.safetensors", {**ckpt.metadata, "config": json.dumps(config)})
    again = load_student(tmp_path / "old.safetensors")
    assert again.config.decoder_width == 0 and "g.up.3.2.weight" not in again.state_dict()
    assert torch.equal(again(clip[:3]), old(clip[:3]))


def test_refiner_off_trains_on_two_frames_and_refiner_on_needs_three(clip, tmp_path):
    student = train_tiny(clip[:2], refiner=False, checkpoint=tmp_path / "g.safetensors")
    assert student.r is None and not load_student(tmp_path / "g.safetensors").has_refiner
    assert student(clip[:3]).shape == (3, 3, 128, 128)
    with pytest.raises(InputError, match=r"refiner.*3 consecutive frames.*got 2.*refiner=False"):
        train_tiny(clip[:2], refiner=True)


def test_chunked_stylize_with_state_equals_the_whole_clip(clip):
    student = train_tiny(clip[:4])
    whole = student(clip[:7], batch_size=3)
    a, state = student.stylize(clip[:4], batch_size=2)
    b, _ = student.stylize(clip[4:7], state, batch_size=2)
    assert torch.allclose(torch.cat([a, b]), whole, atol=1e-6)
    assert whole.min() >= -1 and whole.max() <= 1


@pytest.mark.parametrize("h, w", [(8, 8), (24, 40), (5, 7)])
def test_the_folded_layout_is_the_4x_output_folded(h, w):
    """The student stylizes in the folded layout (pixel unshuffle x4) and unfolds each frame once:
    the bilinear x4 skip computed there equals PyTorch's up-sampling folded, edges included, and
    the refiner's folded form equals its image form."""
    from vtoonify_core.student.network import Refiner, folded_upsample

    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h))
    want = torch.nn.functional.pixel_unshuffle(
        torch.nn.functional.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False), 4)
    assert torch.allclose(folded_upsample(x), want, atol=1e-6)
    r = Refiner(4)
    torch.nn.init.normal_(r.out.weight, std=0.1)  # not the identity it starts as
    g, prev = torch.randn(2, 3, 4 * h, 4 * w), torch.randn(2, 3, 4 * h, 4 * w)
    src = torch.randn(2, 9, h, w)
    fold = torch.nn.functional.pixel_unshuffle
    with torch.no_grad():
        assert torch.allclose(fold(r(g, prev, src), 4), r.folded(fold(g, 4), fold(prev, 4), src), atol=1e-6)
        # the refiner as written in the paper's terms: one network over the concatenated inputs
        z = torch.nn.functional.pad(torch.cat([fold(g, 4), fold(prev, 4), src], 1), (0, w % 2, 0, h % 2),
                                    mode="reflect" if h > 1 and w > 1 else "replicate")
        a = r.inp(z)
        b = torch.nn.functional.interpolate(r.down(a), size=a.shape[-2:], mode="bilinear", align_corners=False)
        o = r.out(r.up(torch.cat([a, b], 1)))[..., :h, :w]
        weight = torch.sigmoid(o[:, :16]).repeat(1, 3, 1, 1)
        want = torch.lerp(fold(g, 4), fold(prev, 4), weight) + o[:, 16:]
        assert torch.allclose(r.folded(fold(g, 4), fold(prev, 4), src), want, atol=1e-5)


def test_interrupt_leaves_a_loadable_checkpoint(clip, tmp_path):
    class Stop(BaseException):
        pass

    calls = {"n": 0}

    def check():
        calls["n"] += 1
        if calls["n"] > 6:  # 2 teacher chunks, then 4 steps
            raise Stop()

    path = tmp_path / "stopped.safetensors"
    with pytest.raises(Stop):
        train_tiny(clip[:4], steps=50, check_interrupt=check, checkpoint=path)
    student = load_student(path)
    assert student.meta["interrupted"] == "True" and student.meta["steps"] == "4"
    assert student(clip[:2]).shape == (2, 3, 128, 128)
    assert not list(tmp_path.glob(".*partial"))


def test_training_is_deterministic_and_the_disk_cache_changes_nothing(clip, tmp_path):
    a = train_tiny(clip[:4])
    b = train_tiny(clip[:4], cache_memory=0, cache_dir=str(tmp_path))
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert list(tmp_path.iterdir()) == []  # the cache file is gone
    cache = run_teacher(cartoon_teacher, clip[:3], batch_size=2, memory_limit=0, folder=str(tmp_path))
    assert cache.on_disk and torch.allclose(cache.get([2], torch.device("cpu")), cartoon_teacher(clip[2:3]), atol=4e-3)
    cache.close()


@pytest.mark.parametrize("case, match", [
    ("size", "multiples of 8, got 36x32"),
    ("nan", "NaN"),
    ("shape", r"teacher: must map frames.*returned \(4, 3, 64, 64\), expected \(4, 3, 128, 128\)"),
    ("teacher_nan", "teacher: returned NaN"),
    ("steps", "steps: must be an integer"),
])
def test_bad_input_gets_a_clear_error(clip, case, match):
    frames, teacher = clip[:4], cartoon_teacher
    if case == "size":
        frames = torch.zeros(4, 3, 32, 36)
    elif case == "nan":
        frames = frames.clone()
        frames[1, 0, 3, 3] = float("nan")
    elif case == "shape":
        teacher = lambda x: torch.nn.functional.interpolate(x, scale_factor=2)  # noqa: E731
    elif case == "teacher_nan":
        teacher = lambda x: cartoon_teacher(x) * float("nan")  # noqa: E731
    with pytest.raises(InputError, match=match):
        train_student(teacher, frames, steps=0 if case == "steps" else 2, config=TINY, crop_size=32)


def test_student_refuses_bad_frames_and_files(clip, tmp_path):
    student = train_tiny(clip[:3], steps=1)
    with pytest.raises(InputError, match="multiples of 8"):
        student(torch.zeros(2, 3, 20, 24))
    with pytest.raises(CheckpointError, match="no such file"):
        load_student(tmp_path / "missing.safetensors")
    from vtoonify_core.weights import save_safetensors

    save_safetensors({"x": torch.zeros(2)}, tmp_path / "other.safetensors", {"kind": "psp"})
    with pytest.raises(CheckpointError, match="not a VToonify student"):
        load_student(tmp_path / "other.safetensors")


def test_vtoonify_teacher_parses_inside_and_trains(vtoonify_t_path, bisenet_path, clip):
    model = load_model(vtoonify_t_path, None, bisenet_path)
    style = StyleCode(torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(1)) * 0.5, "toonify")
    teacher = vtoonify_teacher(model, style, 0.5)
    y = teacher(clip[:2])
    assert y.shape == (2, 3, 128, 128) and y.abs().max() <= 1
    assert teacher.face_parser is not None  # the warp loss's background mask comes from BiSeNet
    student = train_student(teacher, clip[:3], steps=2, batch_size=3, config=TINY, crop_size=32)
    assert student.meta["teacher"].startswith("VToonify-T") and student.meta["stage"] == "2"
    with pytest.raises(ValueError, match="style"):
        vtoonify_teacher(model, StyleCode(style.wplus, "dualstylegan"), 0.5)
