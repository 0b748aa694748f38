"""``scripts/comfy_host.py`` without a ComfyUI host (issue 15, item 8): which device the server command
asks for, and ``run`` / ``start`` refusing a base directory that already has a server.

The same through the real host (a CPU torch here): ``tests/host/test_host_script.py``.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "comfy_host.py"


@pytest.fixture(scope="module")
def comfy_host():
    if "comfy_host" in sys.modules:  # tests/host/conftest.py loads it under this name too
        return sys.modules["comfy_host"]
    spec = importlib.util.spec_from_file_location("comfy_host", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfy_host"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def host(comfy_host, tmp_path):
    return comfy_host.Host(home=tmp_path / "home", comfy_dir=tmp_path / "home" / "ComfyUI",
                           python=tmp_path / "home" / "venv" / "bin" / "python")


def device_args(command: list[str]) -> list[str]:
    """The arguments between main.py and --listen (where the device choice goes)."""
    start = next(i for i, a in enumerate(command) if a.endswith("main.py")) + 1
    return command[start:command.index("--listen")]


def test_server_command_uses_the_gpu_when_the_host_torch_sees_one(comfy_host, host, tmp_path):
    base = tmp_path / "base"
    gpu = comfy_host.server_command(host, base, 8188, cuda_available=True)
    cpu = comfy_host.server_command(host, base, 8188, cuda_available=False)
    assert device_args(gpu) == [] and "--cpu" not in gpu
    assert device_args(cpu) == ["--cpu"]
    assert [a for a in gpu] == [a for a in cpu if a != "--cpu"]  # nothing else differs
    assert gpu[gpu.index("--port") + 1] == "8188" and gpu[gpu.index("--base-directory") + 1] == str(base)
    # --cpu forces the CPU whatever the probe says; given again after '--' it is not doubled
    assert device_args(comfy_host.server_command(host, base, 1, force_cpu=True, cuda_available=True)) == ["--cpu"]
    forced_extra = comfy_host.server_command(host, base, 1, extra=["--cpu"], cuda_available=True)
    assert forced_extra.count("--cpu") == 1 and forced_extra[-1] == "--cpu"
    assert comfy_host.device_text(gpu).startswith("GPU") and comfy_host.device_text(cpu).startswith("CPU")


@pytest.mark.parametrize("returncode, stdout, cpu", [
    (0, "cuda-available\n", False),
    (0, "some warning\ncuda-available\n", False),
    (0, "no-cuda\n", True),
    (1, "ModuleNotFoundError: No module named 'torch'\n", True),  # no torch answer: the CPU, not a guess
])
def test_the_probe_asks_the_host_python(comfy_host, host, tmp_path, monkeypatch, returncode, stdout, cpu):
    asked = []

    def probe(h, code):
        asked.append((h, code))
        return subprocess.CompletedProcess([str(h.python), "-c", code], returncode, stdout, None)

    monkeypatch.setattr(comfy_host, "_probe", probe)
    command = comfy_host.server_command(host, tmp_path, 8188)
    assert ("--cpu" in command) is cpu
    assert len(asked) == 1 and asked[0][0] is host and "torch.cuda.is_available()" in asked[0][1]
    asked.clear()
    assert "--cpu" in comfy_host.server_command(host, tmp_path, 8188, force_cpu=True)
    assert asked == []  # forced: no probe


def test_cli_has_a_cpu_flag(comfy_host):
    parser = comfy_host.build_parser()
    for command in ("run", "start"):
        assert parser.parse_args([command]).cpu is False
        assert parser.parse_args([command, "--cpu"]).cpu is True
        assert parser.parse_args([command, "--cpu", "--", "--preview-method", "auto"]).comfy_args[-2:] == \
            ["--preview-method", "auto"]


def sleeper(*args: str) -> subprocess.Popen:
    """A sleeping process with ``args`` on its command line, once /proc shows them (Popen returns
    when exec has begun, a moment before the kernel sets the new command line)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *args])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/cmdline").read_bytes().count(b"\0") < 3 + len(args):
        assert time.monotonic() < deadline, "the test process did not start"
        time.sleep(0.01)
    return proc


@pytest.fixture
def fake_server(tmp_path):
    """A process that looks like a ComfyUI server of ``base`` (its command line has main.py and the
    base folder), recorded in the base's pid file as ``start`` records one."""
    base = (tmp_path / "served").resolve()
    base.mkdir()
    proc = sleeper("ComfyUI/main.py", "--base-directory", str(base))
    (base / "comfy_host.json").write_text(json.dumps({"pid": proc.pid, "port": 8199, "url": "http://127.0.0.1:8199",
                                                      "base": str(base), "log": None, "command": "start"}))
    try:
        yield base, proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the server check reads /proc")
@pytest.mark.parametrize("command", ["run", "start"])
def test_a_served_base_is_refused(comfy_host, fake_server, monkeypatch, capsys, command):
    base, proc = fake_server

    def setup(**kwargs):
        raise AssertionError("the refusal comes before any setup")

    monkeypatch.setattr(comfy_host, "setup", setup)
    assert comfy_host.main([command, "--base", str(base), "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert f"a server for {base} is already running at http://127.0.0.1:8199 (pid {proc.pid})" in err, err
    assert "stop --base" in err and "another --base" in err  # says what to do
    assert proc.poll() is None  # the running one is left alone
    assert json.loads((base / "comfy_host.json").read_text())["pid"] == proc.pid


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the server check reads /proc")
def test_a_stale_pid_file_is_not_a_server(comfy_host, fake_server, monkeypatch, capsys):
    base, proc = fake_server
    proc.kill()
    proc.wait()
    calls = []

    def setup(**kwargs):
        calls.append(kwargs)
        raise comfy_host.HostError("stub setup reached")

    monkeypatch.setattr(comfy_host, "setup", setup)
    for command in ("run", "start"):
        assert comfy_host.main([command, "--base", str(base), "--port", "0"]) == 1
        assert "stub setup reached" in capsys.readouterr().err
    assert len(calls) == 2
    # a live process that is not a server of this base is not one either
    other = sleeper("ComfyUI/main.py")
    try:
        info = json.loads((base / "comfy_host.json").read_text())
        info["pid"] = other.pid
        (base / "comfy_host.json").write_text(json.dumps(info))
        assert comfy_host.main(["run", "--base", str(base), "--port", "0"]) == 1
        assert "stub setup reached" in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()
