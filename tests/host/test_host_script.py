"""``scripts/comfy_host.py start`` / ``run`` / ``stop`` as a user runs them, on the real host (issue 15,
item 8): ``start`` prints the URL on stdout and the models folder, device and way to the templates on
stderr; a base that is served (by ``start`` or by ``run``) is refused by the other command and by a
second ``run``; the device follows the host venv's torch (a CPU build here: ``--cpu``).
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT, _skip_if_disabled, load_comfy_host

pytestmark = pytest.mark.slow

SCRIPT = str(REPO_ROOT / "scripts" / "comfy_host.py")
TEMPLATES = "left sidebar Templates > Extensions > comfyui-vtoonify"


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout)


def cmdline(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


def read_until(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    """The stdout of ``proc`` (a binary pipe, read unbuffered) up to ``marker``."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    data, deadline = b"", time.monotonic() + timeout
    while marker.encode() not in data:
        assert proc.poll() is None, f"run exited ({proc.returncode}):\n{data.decode()}"
        assert time.monotonic() < deadline, f"no {marker!r} within {timeout} s:\n{data.decode()}"
        if sel.select(timeout=0.5):
            data += os.read(proc.stdout.fileno(), 65536)
    return data.decode()


@pytest.fixture(scope="module")
def host():
    _skip_if_disabled()
    module = load_comfy_host()
    return module, module.setup(quiet=True)


def test_start_then_run_and_run_then_start_are_refused(host, tmp_path):
    module, h = host
    base = (tmp_path / "base").resolve()
    cpu_expected = not module.host_sees_cuda(h)  # CI: a CPU torch, so the README's first command stays on the CPU
    device = "device: CPU (--cpu)" if cpu_expected else "device: GPU"
    pid_file = base / "comfy_host.json"

    started = cli("start", "--base", str(base), "--port", "0")
    try:
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        assert url.startswith("http://127.0.0.1:") and "\n" not in url  # stdout: the URL only
        assert f"models folder: {base / 'models' / 'vtoonify'}" in started.stderr
        assert device in started.stderr and TEMPLATES in started.stderr
        info = json.loads(pid_file.read_text())
        assert info["url"] == url and info["command"] == "start"
        assert ("--cpu" in cmdline(info["pid"])) is cpu_expected
        # a second server on this base: refused at once, before any setup, and the first one keeps serving
        t0 = time.monotonic()
        again = cli("run", "--base", str(base), "--port", "0", timeout=60)
        assert again.returncode == 1 and time.monotonic() - t0 < 30
        assert f"a server for {base} is already running at {url} (pid {info['pid']})" in again.stderr, again.stderr
        assert "stop --base" in again.stderr
        assert cli("start", "--base", str(base), "--port", "0", timeout=60).returncode == 1
        assert json.loads(pid_file.read_text())["pid"] == info["pid"]
        with urllib.request.urlopen(url + "/system_stats", timeout=10) as resp:
            assert json.loads(resp.read())["devices"][0]["type"] == ("cpu" if cpu_expected else "cuda")
    finally:
        stopped = cli("stop", "--base", str(base), timeout=60)
    assert stopped.returncode == 0 and not pid_file.exists(), stopped.stderr

    # run (foreground) records itself too: start and a second run are refused while it serves
    run = subprocess.Popen([sys.executable, SCRIPT, "run", "--base", str(base), "--port", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        banner = read_until(run, "Ctrl-C stops it.", timeout=240)
        assert f"example workflows: {TEMPLATES}" in banner and device in banner
        assert f"models folder: {base / 'models' / 'vtoonify'}" in banner
        info = json.loads(pid_file.read_text())
        assert info["command"] == "run" and info["url"] in banner and "main.py" in " ".join(cmdline(info["pid"]))
        for command in ("start", "run"):
            refused = cli(command, "--base", str(base), "--port", "0", timeout=60)
            assert refused.returncode == 1 and "is already running at " + info["url"] in refused.stderr, refused.stderr
        # another base is fine to serve meanwhile (not started here: only the check)
        module.refuse_if_served(tmp_path / "other")
    finally:
        os.killpg(run.pid, signal.SIGINT)
        run.wait(timeout=60)
    assert run.returncode == 0 and not pid_file.exists()  # Ctrl-C: stopped and unrecorded
