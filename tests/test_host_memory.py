"""Host-memory reuse on the CPU: a freed large block is handed out again without page faults
while a scope is open, glibc's usual behaviour returns when it closes, and the pipeline opens
one per clip (vtoonify_core/host_memory.py)."""
from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vtoonify_core.host_memory import host_memory_reuse_active, host_memory_reuse_available, reuse_host_memory

from vtoonify_core.models.bundle import load_model

glibc_only = pytest.mark.skipif(not host_memory_reuse_available(), reason="needs Linux with glibc")
BLOCK = 96 << 20  # over glibc's 32 MiB cap on its mmap threshold: always a fresh mapping by default


@pytest.fixture(scope="module")
def bundle_d(vtoonify_d_path, bisenet_path):
    return load_model(vtoonify_d_path, None, bisenet_path)


def faults_of_second_block() -> int:
    """Minor page faults of allocating and writing a large block right after freeing one alike."""
    first = torch.empty(BLOCK // 4, dtype=torch.float32)
    first.fill_(1.0)
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = torch.empty(BLOCK // 4, dtype=torch.float32)
    second.fill_(2.0)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    del second
    return after - before


SEQUENCE = """
import resource, sys
sys.path.insert(0, {root!r})
import torch
from tests.test_host_memory import faults_of_second_block
from vtoonify_core.host_memory import reuse_host_memory
pages = {block} // resource.getpagesize()
before = faults_of_second_block()
with reuse_host_memory():
    faults_of_second_block()  # the heap grows once
    inside = faults_of_second_block()
after = faults_of_second_block()
print(pages, before, inside, after)
"""


@glibc_only
def test_a_freed_block_is_reused_without_page_faults_inside_the_scope():
    # in a fresh process: this one's heap depends on the tests that ran before
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", SEQUENCE.format(root=root, block=BLOCK)], capture_output=True,
                         text=True, check=True, cwd=root).stdout.split()
    pages, before, inside, after = map(int, out[-4:])
    assert before > pages // 2  # default: the kernel maps and zeroes it again
    assert inside < pages // 20  # in the scope: the heap's block, no faults
    assert after > pages // 2  # closed: glibc's rules (and the memory) are back


@glibc_only
def test_scopes_nest_and_disabled_does_nothing():
    with reuse_host_memory(enabled=False) as active:
        assert not active and not host_memory_reuse_active()
    with reuse_host_memory():
        with reuse_host_memory():
            assert host_memory_reuse_active()
        assert host_memory_reuse_active()  # the inner scope does not close the outer one
    assert not host_memory_reuse_active()


@glibc_only
@pytest.mark.parametrize("reuse", [True, False])
def test_the_pipeline_keeps_memory_for_the_whole_clip_on_cpu(bundle_d, reuse):
    from vtoonify_core.pipeline.stylize import stylize
    from vtoonify_core.types import StyleCode

    bundle_d.generator.reuse_host_memory = reuse
    seen = []
    try:
        code = StyleCode(wplus=torch.zeros(1, 18, 512), backbone=bundle_d.generator.backbone)
        frames = torch.rand(3, 3, 32, 32) * 2 - 1
        out = stylize(bundle_d, frames, code, 0.5, batch_size=1,
                      progress=lambda done, total: seen.append(host_memory_reuse_active()))
    finally:
        bundle_d.generator.reuse_host_memory = True
    assert out.shape == (3, 3, 128, 128)
    assert seen and all(flag == reuse for flag in seen)
    assert not host_memory_reuse_active()


def test_the_generator_gives_the_same_frames_with_and_without_reuse(vtoonify_d):
    x = torch.rand(2, 22, 16, 16) * 2 - 1
    style = torch.randn(1, 18, 512)
    with torch.no_grad():
        vtoonify_d.set_fast_path(True, reuse_host_memory=False)
        plain = vtoonify_d(x, style, 0.5)
        vtoonify_d.set_fast_path(True)
        assert vtoonify_d.reuse_host_memory
        reused = vtoonify_d(x, style, 0.5)
    assert torch.equal(plain, reused)
    assert not vtoonify_d.set_fast_path(False).reuse_host_memory  # the plain path is the official computation
    vtoonify_d.set_fast_path(True)
