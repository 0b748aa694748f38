"""Fixtures for tests against a real ComfyUI 0.30 with this pack linked in.

* ``comfy_server`` (session): one real server on a free 127.0.0.1 port with a temporary base
  folder, set up by ``scripts/comfy_host.py`` (cached; CI runs its ``setup`` beforehand), with the
  test-only nodes of ``bad_input_nodes/`` beside the pack. It is always stopped at the end of the
  session. ``comfy_server_factory`` starts further servers with other command-line arguments or
  environment. ``VTOONIFY_SKIP_HOST=1`` skips these tests; any other
  failure to set up or start the host is a test error.
* ``chromium_browser`` (session): Debian's Chromium driven by Playwright (no downloaded browser).
* ``browser_page`` (per test): a fresh page on the server's UI as a new user sees it (blank
  workflow, the first-run template browser closed), console errors collected, requests outside
  127.0.0.1 refused, screenshots written to ``tests/host/artifacts/`` (git-ignored).

Every test under tests/host/ is marked ``slow``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import re
import shutil
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

HOST_DIR = Path(__file__).resolve().parent
REPO_ROOT = HOST_DIR.parent.parent
ARTIFACTS = HOST_DIR / "artifacts"
SKIP_ENV = "VTOONIFY_SKIP_HOST"
CHROMIUM_ENV = "VTOONIFY_CHROMIUM"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/lib/chromium/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
    # nothing but this machine: every other host name fails to resolve
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Console errors that ComfyUI 0.30 (frontend 1.47.12) logs on every fresh page, whatever the custom
# nodes: index.html links /user.css, which no route serves; a new user has no user.css, no
# workflows/ or subgraphs/ folder and no comfy.templates.json (404 is the answer); and the frontend
# itself reads app.rootGraph once before it is set.
KNOWN_PAGE_NOISE = [re.compile(p) for p in (
    r"^Failed to load resource: the server responded with a status of 404 \(Not Found\) "
    r"\(http://127\.0\.0\.1:\d+/(user\.css|api/userdata/user\.css|api/userdata/comfy\.templates\.json"
    r"|api/userdata\?dir=(workflows|subgraphs)&[^ ]*):0\)$",
    r"^ComfyApp graph accessed before initialization \(",
)]


def load_comfy_host():
    """Import ``scripts/comfy_host.py`` as the module ``comfy_host``."""
    if "comfy_host" in sys.modules:
        return sys.modules["comfy_host"]
    spec = importlib.util.spec_from_file_location("comfy_host", REPO_ROOT / "scripts" / "comfy_host.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfy_host"] = module
    spec.loader.exec_module(module)
    return module


def load_bad_inputs():
    """Import ``scripts/bad_inputs.py`` (the bad-input campaign) as the module ``bad_inputs``."""
    if "bad_inputs" in sys.modules:
        return sys.modules["bad_inputs"]
    spec = importlib.util.spec_from_file_location("bad_inputs", REPO_ROOT / "scripts" / "bad_inputs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bad_inputs"] = module
    spec.loader.exec_module(module)
    return module


def _skip_if_disabled() -> None:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: the real ComfyUI host is disabled")


class PromptRejected(AssertionError):
    """POST /prompt answered an error (validation): ``status`` and the decoded ``body``."""

    def __init__(self, status: int, body):
        super().__init__(f"/prompt rejected the prompt ({status}): {json.dumps(body, indent=1)[:4000]}")
        self.status = status
        self.body = body


class PromptFailed(AssertionError):
    """A prompt ran and ended in an error: ``entry`` is its /history entry."""

    def __init__(self, prompt_id: str, entry: dict):
        details = [data for event, data in entry.get("status", {}).get("messages", [])
                   if event == "execution_error"]
        text = ""
        if details:
            d = details[0]
            text = (f"node {d.get('node_id')} ({d.get('node_type')}): {d.get('exception_type')}: "
                    f"{d.get('exception_message')}\n{''.join(d.get('traceback') or [])}")
        super().__init__(f"prompt {prompt_id} failed: {text or json.dumps(entry.get('status'))}")
        self.prompt_id = prompt_id
        self.entry = entry


class WsListener:
    """Collects every message ComfyUI's ``/ws`` sends to one client id, on a background thread.

    Text messages are kept as decoded dicts (``{"type": ..., "data": {...}}``); binary ones (previews)
    as ``{"type": "binary", "data": {"event": <int>, "size": <bytes>}}``.
    """

    def __init__(self, base_url: str, client_id: str):
        import websocket

        self._websocket = websocket
        ws_url = base_url.replace("http://", "ws://", 1) + "/ws?" + urllib.parse.urlencode({"clientId": client_id})
        self._ws = websocket.create_connection(ws_url, timeout=10)
        self._ws.settimeout(0.5)
        self._cond = threading.Condition()
        self._messages: list[dict] = []
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="comfy-ws", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        ws_mod = self._websocket
        while not self._closed:
            try:
                opcode, data = self._ws.recv_data()
            except ws_mod.WebSocketTimeoutException:
                continue
            except (ws_mod.WebSocketException, OSError):
                break
            if opcode == ws_mod.ABNF.OPCODE_TEXT:
                try:
                    msg = json.loads(data.decode("utf-8"))
                except ValueError:
                    continue
            elif opcode == ws_mod.ABNF.OPCODE_BINARY:
                msg = {"type": "binary", "data": {"event": int.from_bytes(data[:4], "big"), "size": len(data)}}
            else:
                continue
            with self._cond:
                self._messages.append(msg)
                self._cond.notify_all()

    @staticmethod
    def _match(msg: dict, prompt_id: str | None, types, where) -> bool:
        if types is not None and msg.get("type") not in types:
            return False
        data = msg.get("data")
        if prompt_id is not None and not (isinstance(data, dict) and data.get("prompt_id") == prompt_id):
            return False
        return where is None or bool(where(msg))

    def messages(self, prompt_id: str | None = None, types=None, where=None) -> list[dict]:
        """Messages so far, optionally only those of ``prompt_id``, whose type is in ``types`` (a name
        or a collection) and for which ``where(msg)`` is true."""
        if isinstance(types, str):
            types = (types,)
        with self._cond:
            return [m for m in self._messages if self._match(m, prompt_id, types, where)]

    def wait_for(self, prompt_id: str | None = None, types=None, where=None, timeout: float = 30.0) -> dict:
        """Block until a matching message (as in :meth:`messages`) has arrived and return the first
        one; TimeoutError otherwise."""
        if isinstance(types, str):
            types = (types,)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self._messages:
                    if self._match(m, prompt_id, types, where):
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    raise TimeoutError(f"no websocket message {types} for prompt {prompt_id} in {timeout} s")
                self._cond.wait(min(left, 0.5))

    def clear(self) -> None:
        """Forget the messages collected so far."""
        with self._cond:
            self._messages.clear()

    def close(self) -> None:
        """Close the connection and stop the thread."""
        self._closed = True
        try:
            self._ws.close()
        except Exception:  # noqa: BLE001 - closing a dead socket
            pass
        self._thread.join(timeout=5)


class ComfyServer:
    """A running real ComfyUI server with helpers for its HTTP API and a ``/ws`` listener.

    Attributes: ``url`` (``http://127.0.0.1:PORT``), ``port``, ``base`` (its base folder: ``input/``,
    ``output/``, ``models/vtoonify/``, ``custom_nodes/<pack>`` -> this repo), ``log_path``,
    ``client_id`` (the id prompts are posted with) and ``ws`` (:class:`WsListener` for that id).
    """

    def __init__(self, process, host_module):
        self.process = process
        self.url = process.url
        self.port = process.port
        self.base = Path(process.base)
        self.log_path = Path(process.log_path)
        self.pack_link = self.base / "custom_nodes" / host_module.PACK_DIR_NAME
        self.pack_root = host_module.PACK_ROOT
        self._host = host_module
        self.client_id = uuid.uuid4().hex
        self.ws = WsListener(self.url, self.client_id)
        self._counter = itertools.count()
        self._posted: set[str] = set()

    # -- plain HTTP -------------------------------------------------------------------------------
    def request(self, method: str, path: str, data: bytes | None = None, headers: dict | None = None,
                timeout: float = 60.0) -> tuple[int, bytes]:
        """Send one request to the server; return ``(status, body)`` for any status code."""
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get_json(self, path: str, timeout: float = 60.0):
        """GET ``path`` and decode its JSON; AssertionError unless the status is 200."""
        status, body = self.request("GET", path, timeout=timeout)
        assert status == 200, f"GET {path}: {status} {body[:2000]!r}"
        return json.loads(body)

    def post_json(self, path: str, payload, timeout: float = 60.0):
        """POST ``payload`` as JSON to ``path``; return the decoded answer (None when empty)."""
        status, body = self.request("POST", path, json.dumps(payload).encode(),
                                    {"Content-Type": "application/json"}, timeout)
        assert status == 200, f"POST {path}: {status} {body[:2000]!r}"
        return json.loads(body) if body.strip() else None

    # -- ComfyUI API ------------------------------------------------------------------------------
    def object_info(self, node_class: str | None = None) -> dict:
        """``/object_info`` (all node classes) or ``/object_info/<node_class>``."""
        path = "/object_info" if node_class is None else "/object_info/" + urllib.parse.quote(node_class)
        return self.get_json(path)

    def post_prompt(self, prompt: dict, extra_data: dict | None = None) -> str:
        """Queue an API-format prompt under this ``client_id``; return its ``prompt_id``.

        Raises :class:`PromptRejected` when validation fails (status and ``node_errors`` in the message).
        """
        payload = {"prompt": prompt, "client_id": self.client_id}
        if extra_data:
            payload["extra_data"] = extra_data
        status, body = self.request("POST", "/prompt", json.dumps(payload).encode(),
                                    {"Content-Type": "application/json"})
        try:
            answer = json.loads(body)
        except ValueError:
            answer = body.decode("utf-8", "replace")
        if status != 200 or not isinstance(answer, dict) or "prompt_id" not in answer:
            raise PromptRejected(status, answer)
        self._posted.add(answer["prompt_id"])
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 120.0, check: bool = True) -> dict:
        """Wait until ``prompt_id`` is in ``/history`` and return its entry.

        The entry has ``outputs`` (node id -> ui dict, e.g. ``{"images": [...]}``) and ``status``
        (``status_str``, ``completed``, ``messages``). With ``check`` a failed run raises
        :class:`PromptFailed`. For prompts posted by :meth:`post_prompt` it also waits (briefly) until
        the websocket has delivered the run's last message (``executing`` with ``node`` None), so
        ``messages(prompt_id)`` is complete afterwards.
        TimeoutError after ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        path = "/history/" + urllib.parse.quote(prompt_id)
        while True:
            history = self.get_json(path)
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None \
                    and entry["status"].get("status_str") in ("success", "error"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} not finished within {timeout} s; "
                                   f"queue: {self.get_json('/queue')}")
            time.sleep(0.1)
        if prompt_id in self._posted:
            try:
                self.ws.wait_for(prompt_id, "executing", where=lambda m: m["data"].get("node") is None,
                                 timeout=5.0)
            except TimeoutError:
                pass
        if check and entry["status"]["status_str"] != "success":
            raise PromptFailed(prompt_id, entry)
        return entry

    def run_prompt(self, prompt: dict, timeout: float = 120.0, check: bool = True) -> dict:
        """``post_prompt`` then ``wait``: the finished /history entry."""
        return self.wait(self.post_prompt(prompt), timeout=timeout, check=check)

    def upload_image(self, image, name: str | None = None, subfolder: str = "", type: str = "input",
                     overwrite: bool = True) -> dict:
        """Upload a file (path, or bytes with ``name``) through ``/upload/image``.

        Returns the server's answer ``{"name", "subfolder", "type"}``; ``name`` is what a LoadImage
        input takes.
        """
        if isinstance(image, (bytes, bytearray)):
            content = bytes(image)
            name = name or f"upload_{next(self._counter)}.png"
        else:
            path = Path(image)
            content = path.read_bytes()
            name = name or path.name
        boundary = uuid.uuid4().hex
        parts = []
        for field, value in (("type", type), ("subfolder", subfolder), ("overwrite", str(overwrite).lower())):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n{value}\r\n'.encode())
        parts.append((f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                      f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        status, body = self.request("POST", "/upload/image", b"".join(parts),
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert status == 200, f"/upload/image: {status} {body[:2000]!r}"
        return json.loads(body)

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        """The bytes of a file the server serves through ``/view`` (output, input or temp)."""
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type})
        status, body = self.request("GET", "/view?" + query)
        assert status == 200, f"/view {query}: {status}"
        return body

    @staticmethod
    def output_images(entry: dict, node_id: str | None = None) -> list[dict]:
        """The ``images`` records (``filename``, ``subfolder``, ``type``) of a history entry's outputs."""
        found = []
        for nid, out in entry.get("outputs", {}).items():
            if node_id is None or str(nid) == str(node_id):
                found.extend(out.get("images", []))
        return found

    def messages(self, prompt_id: str | None = None, types=None, where=None) -> list[dict]:
        """Websocket messages received so far (see :meth:`WsListener.messages`)."""
        return self.ws.messages(prompt_id, types, where)

    # -- server side ------------------------------------------------------------------------------
    def log_text(self) -> str:
        """The server log so far, without ANSI colour codes."""
        return _ANSI.sub("", self.log_path.read_text(errors="replace"))

    def pack_import(self) -> tuple[str, str]:
        """How ComfyUI's start-up import of this pack went: ``(status, detail)``.

        ``status`` is ``"ok"``, ``"failed"`` (detail: the log's traceback/warning for the pack) or
        ``"absent"`` (the pack does not appear in the import report).
        """
        lines = self.log_text().splitlines()
        link = str(self.pack_link)
        for i, line in enumerate(lines):
            if not line.rstrip().endswith(link) or " seconds" not in line:
                continue
            if "(IMPORT FAILED)" not in line:
                return "ok", line.strip()
            # the first log line naming the pack, widened back to the traceback that precedes it
            start = next((j for j, ln in enumerate(lines[:i]) if link in ln), i)
            for j in range(start, max(-1, start - 80), -1):
                if lines[j].rstrip().endswith("Traceback (most recent call last):"):
                    start = j
                    break
            return "failed", "\n".join(lines[start:i + 1])
        return "absent", ""

    def pack_nodes(self) -> dict:
        """The ``/object_info`` entries that come from this pack (by their ``python_module``)."""
        module = f"custom_nodes.{self._host.PACK_DIR_NAME}"
        return {name: info for name, info in self.object_info().items()
                if str(info.get("python_module", "")).startswith(module)}

    def add_models(self, source, copy: bool = False) -> list[Path]:
        """Link (or copy) the entries of folder ``source`` into ``base/models/vtoonify``."""
        return self._host.install_models(self.base, Path(source), copy=copy)

    def close(self) -> None:
        """Close the websocket and stop the server."""
        try:
            self.ws.close()
        finally:
            self.process.stop()


def start_comfy_server(tmp_path_factory, name: str = "comfy_base", extra: list[str] | None = None,
                       env: dict[str, str] | None = None, helper_nodes: bool = False) -> ComfyServer:
    """Start a real ComfyUI server in a new base folder: ``extra`` command-line arguments after the
    usual ones (e.g. ``["--preview-method", "auto"]``), ``env`` added to its environment,
    ``helper_nodes``: with the test-only nodes of ``bad_input_nodes/``. The caller stops it (``close()``)."""
    _skip_if_disabled()
    host_module = load_comfy_host()
    host = host_module.setup(quiet=True)
    base = tmp_path_factory.mktemp(name)
    if helper_nodes:  # the test-only nodes of the bad-input campaign (malformed IMAGE tensors), before ComfyUI starts
        load_bad_inputs().link_helper_nodes(base)
    with pytest.MonkeyPatch.context() as patch:  # the server takes this process's environment
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        # the CPU even where the host's torch sees a GPU: these tests are written for the CPU (CI's machine)
        process = host_module.start_server(host, base, port=None, timeout=180.0, die_with_parent=True,
                                           force_cpu=True, extra=extra)
    try:
        return ComfyServer(process, host_module)
    except BaseException:
        process.stop()
        raise


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory) -> ComfyServer:
    """One real ComfyUI server for the whole session (see :class:`ComfyServer`); always stopped.

    It runs with ComfyUI's default preview method (``none``) and lists the session's temporary
    folder in ``VTOONIFY_ALLOWED_DIRS``, so Stylize Video File reads test files there by their
    absolute path (as the batch client passes them)."""
    server = start_comfy_server(tmp_path_factory, env={"VTOONIFY_ALLOWED_DIRS": str(tmp_path_factory.getbasetemp())},
                                helper_nodes=True)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def comfy_server_factory(tmp_path_factory):
    """``start(name, extra=None, env=None)``: further real servers with their own command-line
    arguments and environment (see :func:`start_comfy_server`), all stopped at the end of the session
    (stop one earlier with its ``close()``: stopping twice is harmless)."""
    started: list[ComfyServer] = []

    def start(name: str, extra: list[str] | None = None, env: dict[str, str] | None = None) -> ComfyServer:
        server = start_comfy_server(tmp_path_factory, name, extra, env)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()


def find_chromium() -> str | None:
    """Path of Debian's Chromium (``$VTOONIFY_CHROMIUM`` first), or None."""
    env = os.environ.get(CHROMIUM_ENV)
    if env:
        return env
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium_browser():
    """A headless Debian Chromium launched through Playwright (session-wide)."""
    _skip_if_disabled()
    exe = find_chromium()
    if exe is None:
        pytest.fail("Chromium not found: install Debian's `chromium` (apt-get install -y chromium) "
                    f"or set {CHROMIUM_ENV}")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
    except BaseException:
        playwright.stop()
        raise
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()


class ComfyPage:
    """A Playwright page showing the server's UI.

    ``page`` is the Playwright page; ``console_errors`` collects console messages of type error and
    uncaught page errors (as text); ``external_requests`` lists URLs the page tried outside 127.0.0.1
    (they are refused).
    """

    def __init__(self, page, server: ComfyServer, name: str):
        self.page = page
        self.server = server
        self.name = name
        self.console_errors: list[str] = []
        self.external_requests: list[str] = []
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.console_errors.append(f"pageerror: {exc}"))

    def _on_console(self, msg) -> None:
        if msg.type == "error":
            loc = msg.location or {}
            self.console_errors.append(f"{msg.text} ({loc.get('url', '')}:{loc.get('lineNumber', '')})")

    def open(self, timeout_ms: float = 60000) -> None:
        """Load the UI as a new user sees it (blank workflow), wait until ``window.app`` has its graph
        and the node definitions, and close the first-run template browser."""
        self.server.post_json("/api/settings/Comfy.TutorialCompleted", False)
        self.page.goto(self.server.url + "/", wait_until="load", timeout=timeout_ms)
        self.page.wait_for_function(
            "() => window.app && window.app.isGraphReady && window.LiteGraph"
            " && Object.keys(window.LiteGraph.registered_node_types || {}).length > 0",
            timeout=timeout_ms)
        self.close_dialogs(appear_timeout_ms=15000)

    def close_dialogs(self, appear_timeout_ms: float = 0) -> None:
        """Close open dialogs with Escape, first waiting up to ``appear_timeout_ms`` for one to show."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        dialogs = self.page.locator("[role=dialog]")
        if appear_timeout_ms:
            try:
                dialogs.first.wait_for(state="visible", timeout=appear_timeout_ms)
            except PlaywrightTimeout:
                return
        for _ in range(5):
            if dialogs.count() == 0:
                return
            self.page.keyboard.press("Escape")
            try:
                dialogs.first.wait_for(state="detached", timeout=2000)
            except PlaywrightTimeout:
                pass
        raise AssertionError(f"{dialogs.count()} dialog(s) stay open after Escape")

    def unexpected_console_errors(self) -> list[str]:
        """``console_errors`` without the noise every fresh ComfyUI 0.30 page logs (see KNOWN_PAGE_NOISE)."""
        return [e for e in self.console_errors if not any(p.search(e) for p in KNOWN_PAGE_NOISE)]

    def evaluate(self, expression: str, arg=None):
        """Evaluate JavaScript in the page (promises are awaited)."""
        return self.page.evaluate(expression, arg)

    def registered_node_types(self) -> list[str]:
        """Names in ``LiteGraph.registered_node_types``."""
        return self.evaluate("() => Object.keys(LiteGraph.registered_node_types)")

    def load_graph(self, workflow: dict) -> None:
        """``app.loadGraphData(workflow)`` with a UI-format workflow."""
        self.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)

    def graph_to_prompt(self) -> dict:
        """``app.graphToPrompt()``: ``{"output": <API prompt>, "workflow": <UI workflow>}``."""
        return self.evaluate("async () => { const p = await window.app.graphToPrompt();"
                             " return {output: p.output, workflow: p.workflow}; }")

    def queue_prompt(self, timeout_ms: float = 30000) -> str:
        """``app.queuePrompt(0, 1)``, as the Run button does; return the ``prompt_id`` the server gave.

        Wait for the result with ``server.wait(prompt_id)`` (the page's own websocket gets its
        progress messages, not ``server.ws``).
        """
        def is_prompt_post(response) -> bool:
            return response.request.method == "POST" and urllib.parse.urlsplit(response.url).path in (
                "/prompt", "/api/prompt")

        with self.page.expect_response(is_prompt_post, timeout=timeout_ms) as info:
            self.evaluate("async () => { await window.app.queuePrompt(0, 1); }")
        response = info.value
        body = response.json()
        assert response.status == 200 and "prompt_id" in body, f"the UI's prompt was rejected: {body}"
        return body["prompt_id"]

    def screenshot(self, name: str | None = None, full_page: bool = False) -> Path:
        """Save a PNG under tests/host/artifacts/ and return its path."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name or self.name)
        path = ARTIFACTS / f"{safe}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@contextlib.contextmanager
def open_comfy_page(chromium_browser, server: ComfyServer, name: str):
    """A fresh :class:`ComfyPage` on ``server``'s UI (blank workflow, first-run dialog closed), requests
    outside that server refused; its browser context is closed on exit."""
    context = chromium_browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    comfy_page = ComfyPage(page, server, name)

    def guard(route):
        host = urllib.parse.urlsplit(route.request.url).hostname
        if host in ("127.0.0.1", "localhost") or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            comfy_page.external_requests.append(route.request.url)
            route.abort()

    context.route(re.compile(r"^(?!http://127\.0\.0\.1:%d/)" % server.port), guard)
    try:
        try:
            comfy_page.open()
        except Exception:
            comfy_page.screenshot(f"{name}-open-failed")
            raise
        yield comfy_page
    finally:
        context.close()


@pytest.fixture
def browser_page(chromium_browser, comfy_server, request):
    """A fresh :class:`ComfyPage` on the server's UI (blank workflow, first-run dialog closed); a
    failing test gets a screenshot ``<test>-failed.png`` in tests/host/artifacts/."""
    with open_comfy_page(chromium_browser, comfy_server, request.node.name) as comfy_page:
        yield comfy_page
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            comfy_page.screenshot(f"{request.node.name}-failed")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item (``item.rep_call``) for the screenshot-on-failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_collection_modifyitems(config, items):
    """Mark every test under tests/host/ as slow."""
    for item in items:
        if HOST_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.slow)
