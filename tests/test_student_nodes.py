"""The student's nodes under the fake ComfyUI: Train VToonify Student writes a file to
models/vtoonify_students that Load VToonify Student lists and loads equal, Stylize Frames (Student)
gives 4x frames, Cancel leaves a loadable student, and bad input gets the node's clear error."""
from __future__ import annotations

import pytest
import torch

from vtoonify_core.types import StyleCode


@pytest.fixture(scope="module")
def model(fake_comfy):
    return fake_comfy.node("VToonifyLoadModel")("vtoonify_t_cartoon/vtoonify.pt", "encoder.pt", "faceparsing.pth",
                                               "auto", "cpu", "fp32", False)[0]


@pytest.fixture(scope="module")
def style():
    return StyleCode(torch.randn(1, 18, 512, generator=torch.Generator().manual_seed(5)) * 0.5, "toonify")


@pytest.fixture(scope="module")
def images():
    """Four 32x32 frames of a slowly moving face (an IMAGE batch in [0, 1])."""
    from vtoonify_core.testing.cartoon import face_clip

    return ((face_clip(4, 32, travel=(20, 10)) + 1) * 0.5).permute(0, 2, 3, 1).contiguous()


def train(fake_comfy, model, style, images, **kw):
    args = dict(steps=3, refiner=True, frames_per_step=2, crop_size=32, seed=0, filename_prefix="test/student")
    args.update(kw)
    return fake_comfy.node("VToonifyTrainStudent")(model, style, 0.5, images, **args)


@pytest.fixture(scope="module")
def trained(fake_comfy, model, style, images):
    return train(fake_comfy, model, style, images)


def test_train_writes_a_student_that_load_lists_and_loads_equal(fake_comfy, trained, images):
    student, name = trained["result"]
    assert name == "test/student_00001.safetensors" and "Saved" in trained["ui"]["text"][0]
    load = fake_comfy.pack.NODE_CLASS_MAPPINGS["VToonifyLoadStudent"]
    assert name in load.INPUT_TYPES()["required"]["student_name"][0]
    again = fake_comfy.node("VToonifyLoadStudent")(name, "cpu", "fp32")[0]
    stylize = fake_comfy.node("VToonifyStylizeFramesStudent")
    out = stylize(student, images, 2, True)[0]
    assert out.shape == (4, 128, 128, 3) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert torch.equal(out, stylize(again, images, 2, True)[0])
    assert not torch.equal(out, stylize(again, images, 2, False)[0])


def test_trains_under_comfyuis_inference_mode(fake_comfy, model, style, images):
    """ComfyUI executes every node inside torch.inference_mode(): the node still trains (the loss falls
    through autograd) and the student it returns runs there too."""
    with torch.inference_mode():
        frames = images.clone()  # an inference tensor, as ComfyUI's IMAGE batches are
        student, _ = train(fake_comfy, model, style, frames, steps=3, filename_prefix="inference")["result"]
        out = fake_comfy.node("VToonifyStylizeFramesStudent")(student, frames, 2, True)[0]
    assert out.shape == (4, 128, 128, 3)
    assert not any(p.is_inference() for p in student.parameters())


def test_progress_covers_the_teacher_and_the_steps(fake_comfy, model, style, images):
    fake_comfy.state.progress.clear()
    train(fake_comfy, model, style, images, steps=2)
    assert fake_comfy.state.progress[-1] == (6, 6)  # 4 teacher frames + 2 steps


def test_cancel_leaves_a_loadable_student(fake_comfy, model, style, images):
    from vtoonify_core.student import load_student

    fake_comfy.state.interrupt_checks, fake_comfy.state.interrupt_on = 0, 5  # 2 teacher chunks, 2 steps
    with pytest.raises(BaseException) as info:
        train(fake_comfy, model, style, images, steps=100, filename_prefix="stopped")
    assert type(info.value).__name__ == "InterruptProcessingException"
    path = fake_comfy.root / "vtoonify_students" / "stopped_00001.safetensors"
    student = load_student(path)
    assert student.meta["interrupted"] == "True" and student.meta["steps"] == "2"


def test_bad_input_gets_the_nodes_error(fake_comfy, model, style, images, trained):
    with pytest.raises(ValueError, match=r"^Train VToonify Student: frames: .*multiples of 8, got 36x32"):
        train(fake_comfy, model, style, torch.rand(3, 32, 36, 3))
    with pytest.raises(ValueError, match=r"^Train VToonify Student: frames: the refiner .*got 2"):
        train(fake_comfy, model, style, images[:2])
    with pytest.raises(ValueError, match=r"^Train VToonify Student: filename_prefix: .*'\.\.'"):
        train(fake_comfy, model, style, images, filename_prefix="../x")
    with pytest.raises(ValueError, match=r"^Stylize Frames \(Student\): vtoonify_student: expected a VTOONIFY_STUDENT"):
        fake_comfy.node("VToonifyStylizeFramesStudent")(model, images, 2, True)
    with pytest.raises(ValueError, match=r"^Load VToonify Student: student_name: 'nope.safetensors' is not in"):
        fake_comfy.node("VToonifyLoadStudent")("nope.safetensors", "cpu", "fp32")
    nan = images.clone()
    nan[1, 2, 2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^Stylize Frames \(Student\): frames: frame\(s\) 1 contain NaN"):
        fake_comfy.node("VToonifyStylizeFramesStudent")(trained["result"][0], nan, 2, True)
