"""The student's nodes under the fake ComfyUI: Train VToonify Student writes a file to
models/vtoonify_students that Load VToonify Student lists and loads equal, Stylize Frames (Student)
gives 4x frames, Cancel leaves a loadable student, and bad input gets the node's clear error. From and
to a VIDEO: Train learns from chosen frames of a VIDEO exactly what it learns from them as an IMAGE
batch, and Stylize Video (Student) streams a clip through the student chunk by chunk (state carried)
into a video with every frame, the frame rate and the sound of the source."""
from __future__ import annotations

import numpy as np
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


# ---------------------------------------------------------------------------------------------- from and to a VIDEO

CLIP_FRAMES, CLIP_RATE = 6, 12


class FakeVideo:
    """A file-backed VIDEO as ComfyUI's ``VideoFromFile`` answers the pack (``nodes/video_sources.py``)."""

    def __init__(self, path):
        self.path = str(path)

    def get_components(self):  # pragma: no cover - never asked for a file-backed VIDEO
        raise AssertionError("the frames of a file-backed VIDEO are streamed from its file")

    def get_stream_source(self):
        return self.path

    def get_active_trim_window(self):
        return (0.0, 0.0)


@pytest.fixture
def video_host(fake_comfy, tmp_path, monkeypatch):
    """ComfyUI's temp folder and ``comfy_api``'s VideoFromFile (the nodes' VIDEO output) in the fake ComfyUI;
    returns the temp folder."""
    import sys
    import types

    temp = tmp_path / "temp"
    monkeypatch.setattr(sys.modules["folder_paths"], "get_temp_directory", lambda: str(temp), raising=False)
    latest = types.ModuleType("comfy_api.latest")
    latest.InputImpl = types.SimpleNamespace(VideoFromFile=FakeVideo)
    monkeypatch.setitem(sys.modules, "comfy_api", types.ModuleType("comfy_api"))
    monkeypatch.setitem(sys.modules, "comfy_api.latest", latest)
    return temp


def write_clip(path, n: int = CLIP_FRAMES, width: int = 32, height: int = 32):
    """``n`` frames of the moving face at ``CLIP_RATE`` fps with a sound track (a 440 Hz tone)."""
    from vtoonify_core.testing.cartoon import face_clip
    from vtoonify_core.video import write_video

    x = face_clip(n, max(width, height), travel=(20, 10))[:, :, :height, :width]
    rgb = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return write_video(path, list(rgb), CLIP_RATE, tone_hz=440)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4")


def decoded(path) -> torch.Tensor:
    """Every frame of a video as an IMAGE batch ``[T, H, W, 3]`` (uint8 / 255, as ComfyUI's VIDEO frames)."""
    from vtoonify_core.video.student import read_frames

    return torch.from_numpy(read_frames(path)).float() / 255.0


def weights(student) -> dict:
    return {k: v.clone() for k, v in student.state_dict().items()}


def test_training_from_a_video_equals_training_on_the_same_frames(fake_comfy, model, style, clip):
    """video_start / video_frames choose consecutive frames of the VIDEO; the student learnt from them is
    the one learnt from the same frames given as an IMAGE batch (same seed), and not the one learnt from
    other frames of the clip."""
    frames = decoded(clip)
    run = train(fake_comfy, model, style, None, video=FakeVideo(clip), video_start=1, video_frames=4,
                filename_prefix="from_video")
    student, name = run["result"]
    assert name == "from_video_00001.safetensors" and "learnt from frames 1-4 of the video" in run["ui"]["text"][0]
    assert student.meta["frames"] == "4"
    same = train(fake_comfy, model, style, frames[1:5], filename_prefix="from_images")
    assert "learnt from 4 frames" in same["ui"]["text"][0]
    other = train(fake_comfy, model, style, frames[0:4], filename_prefix="from_images")["result"][0]
    a, b, c = weights(student), weights(same["result"][0]), weights(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_video_frames_zero_takes_the_rest_and_a_short_clip_gives_what_it_has(fake_comfy, model, style, clip):
    video = FakeVideo(clip)
    rest = train(fake_comfy, model, style, None, steps=1, video=video, video_start=2, video_frames=0)
    assert "learnt from frames 2-5 of the video" in rest["ui"]["text"][0]
    many = train(fake_comfy, model, style, None, steps=1, video=video, video_start=0, video_frames=100)
    assert "learnt from frames 0-5 of the video" in many["ui"]["text"][0]
    assert many["result"][0].meta["frames"] == str(CLIP_FRAMES)


def test_training_needs_images_or_video_framed_for_the_student(fake_comfy, model, style, images, clip, tmp_path):
    students = fake_comfy.root / "vtoonify_students"
    before = sorted(students.rglob("*"))
    with pytest.raises(ValueError, match=r"^Train VToonify Student: images: nothing to learn from: connect images "
                                         r"\(IMAGE frames of the clip\) or video"):
        train(fake_comfy, model, style, None)
    with pytest.raises(ValueError, match=r"^Train VToonify Student: video: images and video are both connected: "
                                         r"connect only one"):
        train(fake_comfy, model, style, images, video=FakeVideo(clip))
    with pytest.raises(ValueError, match=r"^Train VToonify Student: video_start: the video has 6 frames \(0 to 5\)"):
        train(fake_comfy, model, style, None, video=FakeVideo(clip), video_start=6)
    wide = write_clip(tmp_path / "wide.mp4", n=4, width=36)
    with pytest.raises(ValueError, match=r"^Train VToonify Student: video: the student needs frame sides that are "
                                         r"multiples of 8; this video is 36x32: crop or scale it to 32x32 first"):
        train(fake_comfy, model, style, None, video=FakeVideo(wide))
    with pytest.raises(ValueError, match=r"^Train VToonify Student: video: expected a VIDEO"):
        train(fake_comfy, model, style, None, video="clip.mp4")
    assert sorted(students.rglob("*")) == before  # nothing written on bad input


def video_facts(path) -> dict:
    """Frame count (decoded), frame rate, size, audio codecs and video duration of a video file."""
    import av

    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
        return {"frames": len(frames), "rate": vs.average_rate, "size": frames[0].shape[:2],
                "audio": [a.codec_context.name for a in c.streams.audio],
                "duration": float(vs.duration * vs.time_base), "rgb": np.stack(frames)}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


@pytest.fixture(scope="module")
def stateful(trained):
    """The trained student with its refiner's weights stirred (3 steps leave it the identity on the
    current frame), so that its output depends on the previous frames and output."""
    import copy

    student = copy.deepcopy(trained["result"][0])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in student.r.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.15)
    return student


def test_stylize_video_streams_the_clip_through_the_student(fake_comfy, stateful, clip, video_host, tmp_path):
    """Stylize Video (Student) in chunks of 2 frames equals the student on the whole clip at once (the
    state crosses the chunks: each chunk alone gives other frames), and its VIDEO keeps every frame, the
    frame rate and the sound of the source."""
    from vtoonify_core.video import EncodeSettings, write_video
    from vtoonify_core.video.segments import to_uint8_hwc
    from vtoonify_core.video.student import read_frames, to_unit

    student = stateful
    fake_comfy.state.progress.clear()
    run = fake_comfy.node("VToonifyStylizeVideoStudent")(student, FakeVideo(clip), 2, True, crf=0,
                                                         preview_frames=CLIP_FRAMES)
    out_video, previews = run["result"]
    (shown,) = run["ui"]["images"]
    assert (shown["subfolder"], shown["type"]) == ("vtoonify", "temp") and shown["filename"].startswith("clip_student_")
    path = video_host / "vtoonify" / shown["filename"]
    assert out_video.get_stream_source() == str(path)
    assert fake_comfy.state.progress[-1] == (CLIP_FRAMES, CLIP_FRAMES)

    x = to_unit(read_frames(clip)) * 2.0 - 1.0
    whole = to_uint8_hwc(student.stylize(x, batch_size=2)[0])
    alone = np.concatenate([to_uint8_hwc(student.stylize(x[i:i + 2], batch_size=2)[0])
                            for i in range(0, CLIP_FRAMES, 2)])
    assert np.abs(alone.astype(int) - whole.astype(int)).max() > 8  # the state matters here
    # every frame, before encoding, in previews: the whole clip's, exactly
    got = (previews * 255.0).round().to(torch.uint8).numpy()
    assert previews.shape == (CLIP_FRAMES, 128, 128, 3) and np.array_equal(got, whole)

    facts = video_facts(path)
    assert facts["frames"] == CLIP_FRAMES and facts["rate"] == CLIP_RATE and facts["size"] == (128, 128)
    assert facts["audio"] == ["aac"] and facts["duration"] == pytest.approx(CLIP_FRAMES / CLIP_RATE, abs=1e-3)
    # the encoded frames: those of the whole clip encoded alike (crf 0), not those of each chunk alone
    settings = EncodeSettings(crf=0).resolve(".mp4")
    encoded = {key: video_facts(write_video(tmp_path / f"{key}.mp4", list(frames), CLIP_RATE, codec=settings["codec"],
                                            pix_fmt=settings["pix_fmt"], options=settings["options"]))["rgb"]
               for key, frames in (("whole", whole), ("alone", alone))}
    assert psnr(facts["rgb"], encoded["whole"]) > 50.0
    assert psnr(facts["rgb"], encoded["alone"]) < 30.0
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no work file left


def test_stylize_video_cancel_leaves_no_file(fake_comfy, trained, clip, video_host):
    """Cancel stops between chunks and leaves no file; queued again, the run writes the student's frames
    of the whole clip (up to the codec's error at the default crf 18)."""
    from vtoonify_core.video.segments import to_uint8_hwc
    from vtoonify_core.video.student import read_frames, to_unit

    student = trained["result"][0]
    node = fake_comfy.node("VToonifyStylizeVideoStudent")
    fake_comfy.state.interrupt_checks, fake_comfy.state.interrupt_on = 0, 2  # in the second chunk
    with pytest.raises(BaseException) as info:
        node(student, FakeVideo(clip), 2, True)
    assert type(info.value).__name__ == "InterruptProcessingException"
    folder = video_host / "vtoonify"
    assert list(folder.iterdir()) == []  # neither the video nor a partial file
    run = node(student, FakeVideo(clip), 2, True)  # queued again: the whole video
    (path,) = folder.iterdir()
    facts = video_facts(path)
    assert path.name == run["ui"]["images"][0]["filename"] and facts["frames"] == CLIP_FRAMES
    whole = to_uint8_hwc(student.stylize(to_unit(read_frames(clip)) * 2.0 - 1.0, batch_size=2)[0])
    assert psnr(facts["rgb"], whole) > 35.0
    assert run["result"][1].shape == (4, 128, 128, 3)  # preview_frames 4: first to last


def test_stylize_video_bad_input(fake_comfy, model, trained, clip, video_host, tmp_path):
    node = fake_comfy.node("VToonifyStylizeVideoStudent")
    with pytest.raises(ValueError, match=r"^Stylize Video \(Student\): vtoonify_student: expected a VTOONIFY_STUDENT"):
        node(model, FakeVideo(clip), 2, True)
    wide = write_clip(tmp_path / "wide.mp4", n=3, width=36)
    with pytest.raises(ValueError, match=r"^Stylize Video \(Student\): video: the student needs frame sides that are "
                                         r"multiples of 8; this video is 36x32: crop or scale it to 32x32 first"):
        node(trained["result"][0], FakeVideo(wide), 2, True)
    with pytest.raises(ValueError, match=r"^Stylize Video \(Student\): video: expected a VIDEO"):
        node(trained["result"][0], None, 2, True)
