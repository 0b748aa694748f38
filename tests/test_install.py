"""Installs like any pack (issue 20, item 6): one OpenCV beside the packs that require ``opencv-python``.

``opencv-python``, ``opencv-python-headless`` and the contrib builds all install the same ``cv2`` package;
two of them in one environment overwrite each other's files, and removing or upgrading one breaks
``import cv2``. VideoHelperSuite and most packs require ``opencv-python``, so this pack does too:

* requirements.txt and pyproject.toml name ``opencv-python`` (the same name);
* pip resolving this pack's OpenCV requirement with a pack's ``opencv-python`` installs one distribution
  (and, the case this avoids, with ``opencv-python-headless`` it installs two);
* installed that way (``pip install --target``), ``cv2`` imports from it and works.

The resolution asks PyPI (the only network the tests may use); without it these tests skip.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CV2_DISTS = {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}
#: what a pack such as ComfyUI-VideoHelperSuite puts in its requirements.txt
OTHER_PACK = "opencv-python"


def opencv_requirements() -> list[str]:
    """The OpenCV lines of requirements.txt."""
    lines = [ln.split("#", 1)[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    return [ln for ln in lines if re.match(r"opencv", ln)]


def resolve(*requirements: str) -> list[tuple[str, str]]:
    """(name, version) of what ``pip install`` would install for ``requirements`` in an empty environment."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps",
                           "--quiet", "--report", "-", *requirements],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        if re.search(r"(?i)connection|resolve|network|No matching distribution|Could not fetch", proc.stderr):
            pytest.skip(f"PyPI not reachable: {proc.stderr.strip()[-300:]}")
        raise AssertionError(proc.stderr[-2000:])
    report = json.loads(proc.stdout)
    return [(i["metadata"]["name"].lower(), i["metadata"]["version"]) for i in report["install"]]


def test_the_pack_names_opencv_python():
    assert opencv_requirements() == ["opencv-python"], "requirements.txt: one OpenCV line, opencv-python"
    pyproject = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.M | re.S).group(1)
    assert re.findall(r'"(opencv[^">=<]*)', deps) == ["opencv-python"]


def test_with_a_pack_that_requires_opencv_python_one_cv2_is_installed():
    ours = opencv_requirements()
    together = resolve(*ours, OTHER_PACK)
    assert len([n for n, _ in together if n in CV2_DISTS]) == 1, together
    # what the headless build would do beside such a pack: two distributions writing one cv2 folder
    mixed = resolve("opencv-python-headless", OTHER_PACK)
    assert {n for n, _ in mixed} == {"opencv-python-headless", "opencv-python"}, mixed


@pytest.mark.slow
def test_cv2_imports_from_that_environment(tmp_path):
    target = tmp_path / "site"
    (name, version), = [d for d in resolve(*opencv_requirements(), OTHER_PACK) if d[0] in CV2_DISTS]
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                           f"{name}=={version}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import cv2, numpy as np; "
            "assert cv2.__file__.startswith(sys.argv[1]), cv2.__file__; "
            "img = np.zeros((8, 8, 3), np.uint8); img[2:6, 2:6] = 255; "
            "assert int(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).sum()) == 16 * 255; print(cv2.__version__)")
    run = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() and version.startswith(run.stdout.strip()), run.stdout  # 5.0.0 of 5.0.0.93
    dists = {p.name.split("-")[0].lower().replace("_", "-") for p in target.glob("*.dist-info")}
    assert dists & CV2_DISTS == {name}


@pytest.mark.slow
def test_the_host_setup_leaves_one_opencv(tmp_path):
    """``scripts/comfy_host.py`` on a venv that has both builds (a host set up when the pack required the
    headless one): opencv-python alone is left, and cv2 imports."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_comfy_host_for_install", ROOT / "scripts" / "comfy_host.py")
    host_module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = host_module
    try:
        spec.loader.exec_module(host_module)
    finally:
        sys.modules.pop(spec.name, None)
    (name, version), = [d for d in resolve(*opencv_requirements(), OTHER_PACK) if d[0] in CV2_DISTS]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    numpy = f"numpy=={__import__('numpy').__version__}"
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", numpy,
                           f"opencv-python-headless=={version}", f"{name}=={version}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    host = host_module.Host(home=tmp_path, comfy_dir=tmp_path / "ComfyUI", python=python)
    host_module._single_opencv(host, quiet=True)
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True)
    assert {d["name"].lower() for d in json.loads(listed.stdout)} & CV2_DISTS == {"opencv-python"}
    probe = subprocess.run([str(python), "-c", "import cv2; print(cv2.__version__)"], capture_output=True, text=True)
    assert probe.returncode == 0 and version.startswith(probe.stdout.strip()), probe.stderr[-2000:]
    host_module._single_opencv(host, quiet=True)  # nothing left to do: no change
