"""Checkpoint files: safe reading, clear refusals, exemplar codes and conversion to safetensors."""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vtoonify_core import CheckpointError, load_exstyles, read_checkpoint
from vtoonify_core.convert import convert
from vtoonify_core.testing import standin
from vtoonify_core.weights import detect_kind

ROOT = Path(__file__).resolve().parents[1]


class _Evil:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", sorted(standin.TABLES))
def test_kind_is_detected_from_the_official_keys(kind):
    names = [r.name for r in standin.read_table(kind)]
    assert detect_kind(names) == kind


def test_truncated_checkpoint_is_refused(bisenet_path, tmp_path):
    bad = tmp_path / "faceparsing.pth"
    bad.write_bytes(bisenet_path.read_bytes()[: 1 << 20])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(bad)


def test_truncated_safetensors_is_refused(bisenet_path, tmp_path):
    good = tmp_path / "fp.safetensors"
    convert(bisenet_path, good)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(bad)


@pytest.mark.parametrize("content", [os.urandom(4096), b"", b"\x80\x02" + os.urandom(512), b"PK\x03\x04" + os.urandom(64)],
                         ids=["random", "empty", "pickle-like", "zip-like"])
def test_bytes_that_are_no_checkpoint_are_called_damaged_not_foreign(content, tmp_path):
    """Random bytes are a damaged or wrong file, not "Python objects other than tensors"."""
    path = tmp_path / "vtoonify.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    msg = str(err.value)
    assert "download it again" in msg and "Python objects" not in msg and str(path) in msg


def test_exemplar_codes_with_nan_are_refused_naming_the_file(exstyle_path, tmp_path):
    styles = load_exstyles(exstyle_path)
    for bad_rows, expect in (([1], "style(s) 1"), (list(range(len(styles.names))), "every style")):
        codes = styles.codes.clone()
        codes[bad_rows] = float("nan")
        path = tmp_path / f"exstyle_code_{len(bad_rows)}.safetensors"
        from vtoonify_core.models.exstyle import ExStyles, save_exstyles

        save_exstyles(ExStyles(styles.names, codes), path)
        with pytest.raises(CheckpointError, match=re.escape(expect)) as err:
            load_exstyles(path)
        assert str(path) in str(err.value) and "NaN" in str(err.value)


def test_pickle_with_a_foreign_global_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "vtoonify.pt"
    torch.save({"g_ema": {"x": torch.zeros(1)}, "payload": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match="never unpickles code"):
        read_checkpoint(path)
    assert not marker.exists()


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "vtoonify.pt")


def test_exstyle_codes_keep_the_official_order(exstyle_path):
    raw = np.load(exstyle_path, allow_pickle=True).item()  # our own test file: safe to unpickle here
    names, codes = load_exstyles(exstyle_path)
    assert names == list(raw)
    assert codes.shape == (len(raw), 18, 512) and codes.dtype == torch.float32
    for i, v in enumerate(raw.values()):
        assert torch.equal(codes[i], torch.from_numpy(v[0]))


def test_exstyle_pickle_with_a_foreign_global_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "exstyle_code.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(_Evil(marker), f, protocol=3)
    with pytest.raises(CheckpointError, match="may only contain numpy arrays"):
        load_exstyles(path)
    assert not marker.exists()


def test_exstyle_conversion_round_trips(exstyle_path, tmp_path):
    dst = tmp_path / "exstyle_code.safetensors"
    meta = convert(exstyle_path, dst)
    assert meta["kind"] == "exstyle"
    a, b = load_exstyles(exstyle_path), load_exstyles(dst)
    assert a.names == b.names and torch.equal(a.codes, b.codes)


def test_exstyle_loader_refuses_a_network_file(bisenet_path, tmp_path):
    dst = tmp_path / "fp.safetensors"
    convert(bisenet_path, dst)
    with pytest.raises(CheckpointError, match="not exemplar style codes"):
        load_exstyles(dst)


def test_cli_convert_writes_metadata_and_reads_back_equal(bisenet_path, tmp_path):
    dst = tmp_path / "faceparsing.safetensors"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "vtoonify_core", "convert", str(bisenet_path), str(dst)],
                       capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "read back equal" in r.stdout
    ck = read_checkpoint(dst)
    assert ck.metadata["kind"] == "bisenet" and ck.kind == "bisenet"
    src = read_checkpoint(bisenet_path)
    assert all(torch.equal(src.tensors[k], ck.tensors[k]) for k in src.tensors)


def test_cli_convert_refuses_unknown_files(tmp_path):
    src = tmp_path / "other.pt"
    torch.save({"w": torch.zeros(2)}, src)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "vtoonify_core", "convert", str(src), str(tmp_path / "o.safetensors")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "not an official" in r.stderr


def test_psp_conversion_keeps_latent_avg_and_opts(psp_path, tmp_path):
    dst = tmp_path / "encoder.safetensors"
    meta = convert(psp_path, dst)
    ck = read_checkpoint(dst)
    assert ck.kind == "psp" and "latent_avg" in ck.tensors
    assert json.loads(meta["opts"])["n_styles"] == 18
    assert not any(k.startswith("decoder.") for k in ck.tensors)
