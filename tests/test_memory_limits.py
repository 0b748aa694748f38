"""Frames too large for the memory are refused before any work, with what fits and what to change;
no allocator or CUDA out-of-memory text reaches the user (issue 15, item 2)."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from vtoonify_core import InputError, load_model, stylize, stylize_clip
from vtoonify_core.errors import OutOfMemoryError, is_oom
from vtoonify_core.runtime import memory
from vtoonify_core.types import StyleCode

GIB = 2 ** 30


@pytest.fixture(scope="module")
def bundle_t(vtoonify_t_path, bisenet_path):
    return load_model(vtoonify_t_path, None, bisenet_path)


def style_of(bundle) -> StyleCode:
    return StyleCode(torch.zeros(1, 18, 512), bundle.backbone)


def test_a_4096_px_frame_in_whole_mode_is_refused_at_once(bundle_t):
    """The case of the issue: 4096x4096 whole frame asks for a 16384x16384 output (185 GiB estimated)."""
    free = memory.free_memory_bytes("cpu")
    if free is not None and free > 200 * GIB:
        pytest.skip("this machine could hold it")
    frame = torch.zeros(1, 3, 4096, 4096, dtype=torch.uint8)
    t0 = time.perf_counter()
    with pytest.raises(InputError) as err:
        stylize_clip(bundle_t, frame, style_of(bundle_t), crop_mode="whole", batch_size=1)
    assert time.perf_counter() - t0 < 5
    msg = str(err.value)
    assert msg.startswith("images:") and "4096x4096 px input gives a 16384x16384 px output" in msg
    assert "crop mode 'face'" in msg and "downscale" in msg and "at most about" in msg
    assert "allocate" not in msg.lower()


def test_refusal_names_the_largest_input_that_fits_and_it_does_fit(bundle_t, monkeypatch):
    budget = 3 * GIB
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: budget)
    frames = torch.zeros(1, 3, 720, 1280, dtype=torch.uint8)
    with pytest.raises(InputError, match=r"at most about (\d+)x(\d+) px fit now") as err:
        stylize_clip(bundle_t, frames, style_of(bundle_t), crop_mode="whole", batch_size=1)
    w, h = (int(v) for v in err.value.args[0].split("at most about ")[1].split(" px")[0].split("x"))
    assert w % 8 == 0 and h % 8 == 0 and 0.5 < (w / h) / (1280 / 720) < 1.5
    # the suggested size passes the same check, a size 10% larger does not
    memory.check_fits(bundle_t, (h, w), free_bytes=budget)
    with pytest.raises(InputError):
        memory.check_fits(bundle_t, (int(h * 1.2), int(w * 1.2)), free_bytes=budget)


def test_face_mode_advice_is_the_padding(bundle_t):
    with pytest.raises(InputError, match="smaller face_padding"):
        memory.check_fits(bundle_t, (2048, 2048), advice="use a smaller face_padding or downscale the frames",
                          free_bytes=GIB)


def test_gathered_output_counts_against_the_output_memory(bundle_t, monkeypatch):
    """Many small frames: each fits on the device but their gathered output does not fit the host."""
    per_frame = memory.frame_memory_bytes(bundle_t.backbone, 64, 64, bundle_t.dtype)
    out_frame = 3 * 256 * 256 * 4
    frames = torch.zeros(40, 3, 64, 64)
    # a CPU model gathering on the CPU: one pool for the frame's peak and the output
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: per_frame + 20 * out_frame)
    with pytest.raises(InputError, match="with the gathered output"):
        stylize(bundle_t, frames, style_of(bundle_t), batch_size=1)
    # nothing gathered (a sink takes each chunk): the same clip fits
    seen = []
    stylize(bundle_t, frames[:2], style_of(bundle_t), batch_size=1, sink=lambda i, y: seen.append(i))
    assert seen == [0, 1]


def test_unknown_free_memory_refuses_nothing(bundle_t, monkeypatch):
    """Where the free memory cannot be told (some accelerators), the check stays out of the way."""
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: None)
    memory.check_fits(bundle_t, (8192, 8192), frames=100, output_bytes_per_frame=GIB, output_device="cpu")


def test_single_frame_oom_is_a_clear_error_without_the_allocator_text(bundle_t, monkeypatch):
    class Exhausted(torch.nn.Module):
        backbone, n_latent = bundle_t.generator.backbone, 18

        def zplus2wplus(self, z):
            return z

        def forward(self, x, style, d_s=0.5):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 68719476736 bytes. Error code 12")

    import dataclasses

    broken = dataclasses.replace(bundle_t, generator=Exhausted())
    with pytest.raises(OutOfMemoryError) as err:
        stylize(broken, torch.zeros(2, 3, 32, 32), style_of(bundle_t), batch_size=2)
    msg = str(err.value)
    assert "single frame" in msg and "smaller frames" in msg and "allocate" not in msg
    assert err.value.__suppress_context__ and err.value.__cause__ is None


@pytest.mark.parametrize("text", ["CUDA out of memory. Tried to allocate 2.00 GiB",
                                  "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes",
                                  "DefaultCPUAllocator: not enough memory: you tried to allocate 8 bytes"])
def test_allocator_failures_are_recognised(text):
    assert is_oom(RuntimeError(text))
    assert not is_oom(RuntimeError("shape mismatch"))


def test_an_output_that_cannot_be_allocated_says_what_to_do(monkeypatch):
    real = torch.empty

    def failing(*shape, **kw):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 bytes")

    monkeypatch.setattr(torch, "empty", failing)
    with pytest.raises(OutOfMemoryError, match="does not fit in the memory of cpu") as err:
        memory.allocate_output((300, 3, 4096, 4096), "cpu")
    monkeypatch.setattr(torch, "empty", real)
    assert "allocate memory" not in str(err.value) and "300 frames" in str(err.value)


def test_a_video_with_huge_frames_is_refused_before_stylizing(bundle_t, tmp_path, monkeypatch):
    from vtoonify_core import video

    path = video.write_video(tmp_path / "big.mp4", [np.zeros((720, 1280, 3), np.uint8)] * 2, 25)
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: GIB)
    with pytest.raises(InputError, match="video_path: a 1280x720 px input gives a 5120x2880 px output"):
        video.prepare_job(bundle_t, path, tmp_path / "o.mp4", style_of(bundle_t), crop_mode="whole")
    assert not (tmp_path / "o.mp4").exists()
