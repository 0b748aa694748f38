"""Server routes of the web UI (``web/js/vtoonify.js``), all under ``/vtoonify/``.

* ``GET  /vtoonify/models``: which official files are in ``models/vtoonify`` and which are missing,
  where each is hosted (``downloadable`` from Hugging Face, or on Google Drive only, with its
  Drive folder and the path to save it to), and the state of downloads;
* ``POST /vtoonify/download`` with JSON ``{"name": "<official file name>"}``: download one official
  file from Hugging Face (``PKUWilliamYang/VToonify``, folder ``models/``) into ``models/vtoonify``,
  in the background; progress in ``GET /vtoonify/downloads`` and in ``vtoonify.download``
  websocket events. A file of the release that is on Google Drive only is refused (409, with its
  Drive folder): it is downloaded by hand. Every malformed body (not JSON, not UTF-8, nested too
  deeply, not an object with a string ``name``) is answered 400, one over :data:`MAX_BODY_BYTES`
  413, another content type 415, always with a JSON ``{"error": ...}``;
* ``GET  /vtoonify/styles?checkpoint=<name>&exstyle=<auto|name>``: the exemplar style names of a
  VToonify-D checkpoint (for the style picker of Extract Style Code).

No client-supplied path ever reaches the file system: a download name must be one of the
official names (exact string match against :func:`allowed_names`; nothing is normalised or
decoded), and checkpoint / exemplar names must be in ComfyUI's own listing of the
``vtoonify`` folder. The handlers are plain functions returning ``(status, payload)`` so that
they can be tested without a server; :func:`register` wires them into aiohttp.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Optional

from ..vtoonify_core import official
from . import _comfy, loader

logger = logging.getLogger("vtoonify")

PREFIX = "/vtoonify"
#: websocket event carrying download progress
DOWNLOAD_EVENT = "vtoonify.download"
#: the largest body POST /vtoonify/download reads (a name is under 100 bytes; 413 above this)
MAX_BODY_BYTES = 16 * 1024
#: what each official file is, for the status line
ROLES = {loader.ENCODER_FILE: "pSp style encoder", loader.PARSER_FILE: "BiSeNet face parser"}


def allowed_names() -> tuple[str, ...]:
    """The official file names that may be downloaded (paths relative to ``models/vtoonify``)."""
    return (loader.ENCODER_FILE, loader.PARSER_FILE) + loader.OFFICIAL_CHECKPOINTS + loader.OFFICIAL_EXSTYLES


def _role(name: str) -> str:
    if name in ROLES:
        return ROLES[name]
    folder = name.split("/", 1)[0]
    if name.endswith(loader.EXSTYLE_FILE):
        return f"exemplar style codes of {folder}"
    return ("VToonify-D " if folder.startswith("vtoonify_d_") else "VToonify-T ") + folder.split("_", 2)[-1]


def downloadable(name: str) -> bool:
    """Whether the download route fetches ``name`` (an official name): on Hugging Face, not on
    Google Drive only."""
    return name in official.DOWNLOADABLE


def drive_folder(name: str) -> str:
    """The official Google Drive folder holding ``name`` (the folder of its model folder; the top
    folder of the release for the files at the top of ``models/vtoonify``)."""
    folder = name.rsplit("/", 1)[0] if "/" in name else ""
    return official.DRIVE_FOLDERS.get(folder, official.DRIVE_ALL_URL)


def target_path(name: str) -> str:
    """Where the file goes, as the user sees it: ``models/vtoonify/<name>``."""
    return f"models/{loader.FOLDER}/{name}"


def _present(name: str) -> bool:
    fp = _comfy.folder_paths()
    try:
        return bool(fp.get_full_path(loader.FOLDER, loader._native(name)))
    except KeyError:
        return False


# ---------------------------------------------------------------------------------------------- downloads


class Downloads:
    """Background downloads, one at a time, with their state by name.

    A state is ``{"name", "status": queued|downloading|done|error, "bytes", "total", "error"}``.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: dict[str, dict] = {}
        self._queue: "queue.Queue[str]" = queue.Queue()
        self._worker: Optional[threading.Thread] = None

    def states(self) -> dict[str, dict]:
        """A copy of every known download state, by name."""
        with self._lock:
            return {k: dict(v) for k, v in self._jobs.items()}

    def submit(self, name: str) -> dict:
        """Queue ``name`` (an allow-listed official name) unless it is queued or running already."""
        with self._lock:
            job = self._jobs.get(name)
            if job is not None and job["status"] in ("queued", "downloading"):
                return dict(job)
            job = {"name": name, "status": "queued", "bytes": 0, "total": None, "error": None}
            self._jobs[name] = job
            self._queue.put(name)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run, name="vtoonify-download", daemon=True)
                self._worker.start()
            return dict(job)

    def wait(self, timeout: float = 60.0) -> None:
        """Block until the queue is empty (for tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = any(j["status"] in ("queued", "downloading") for j in self._jobs.values())
            if not busy:
                return
            time.sleep(0.02)
        raise TimeoutError("downloads still running")

    def _update(self, name: str, only_if: Optional[str] = None, **values) -> None:
        with self._lock:
            if only_if is not None and self._jobs[name]["status"] != only_if:
                return
            self._jobs[name].update(values)
            state = dict(self._jobs[name])
        _notify(state)

    def _run(self) -> None:
        while True:
            try:
                name = self._queue.get(timeout=1.0)
            except queue.Empty:
                return
            self._update(name, status="downloading")
            stop = threading.Event()
            watcher = threading.Thread(target=self._watch, args=(name, stop), daemon=True)
            watcher.start()
            try:
                target = loader.download(loader._native(name), DOWNLOAD_INPUT)
                size = target.stat().st_size
            except Exception as exc:  # noqa: BLE001 - reported to the client, the worker goes on
                logger.warning("VToonify: download of %s failed: %s", name, exc)
                self._update(name, status="error", error=download_error_text(exc))
            else:
                self._update(name, status="done", bytes=size, total=size)
            finally:
                stop.set()
                watcher.join(timeout=5)

    def _watch(self, name: str, stop: threading.Event) -> None:
        """Report progress: the size of the scratch folders the download writes into."""
        root = Path(loader.folder_hint())
        total = _remote_size(name)
        if total:
            self._update(name, only_if="downloading", total=total)
        while not stop.wait(0.5):
            done = 0
            for scratch in root.glob(".download-*"):
                for dirpath, _dirs, files in os.walk(scratch):
                    for f in files:
                        try:
                            done += os.path.getsize(os.path.join(dirpath, f))
                        except OSError:
                            pass
            self._update(name, only_if="downloading", bytes=done)


#: the input name :func:`loader.download` prefixes its messages with (``"download: could not ..."``)
DOWNLOAD_INPUT = "download"


def download_error_text(exc: BaseException) -> str:
    """The first line of a failed download's message, without the ``download: `` prefix that
    :func:`loader.download` puts before it for node inputs (the UI says "Download failed: " itself)."""
    text = str(exc).split("\n", 1)[0].strip()
    prefix = DOWNLOAD_INPUT + ": "
    while text.startswith(prefix):
        text = text[len(prefix):]
    return text or type(exc).__name__


def _remote_size(name: str) -> Optional[int]:
    """Size of the file on Hugging Face (a HEAD request), or ``None``."""
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        meta = get_hf_file_metadata(hf_hub_url(loader.HF_REPO, f"{loader.HF_FOLDER}/{name}"))
        return int(meta.size) if meta.size else None
    except Exception:  # noqa: BLE001 - the size is only for the progress display
        return None


def _notify(state: dict) -> None:
    try:
        from server import PromptServer

        PromptServer.instance.send_sync(DOWNLOAD_EVENT, state)
    except Exception:  # noqa: BLE001 - no server (tests) or no client: polling still works
        pass


DOWNLOADS = Downloads()


# ---------------------------------------------------------------------------------------------- handlers


def model_status() -> tuple[int, dict]:
    """``GET /vtoonify/models``: the official files, present or missing, and the downloads."""
    loader.register_folder()
    files = [{"name": n, "role": _role(n), "present": _present(n), "downloadable": downloadable(n),
              "host": "huggingface" if downloadable(n) else "google drive", "drive_url": drive_folder(n),
              "path": target_path(n)} for n in allowed_names()]
    return 200, {"folder": "models/" + loader.FOLDER, "files": files,
                 "required": [loader.ENCODER_FILE, loader.PARSER_FILE], "downloads": DOWNLOADS.states()}


def request_download(name) -> tuple[int, dict]:
    """``POST /vtoonify/download``: start downloading one official file.

    ``name`` must be exactly one of :func:`allowed_names`; anything else (other files, ``..``,
    absolute paths, backslashes, encoded forms) is refused with 400 and nothing is written. An
    official file that is on Google Drive only (not :func:`downloadable`) is refused with 409, its
    Drive folder (``drive_url``) and the path to save it to (``path``); nothing is started.
    Returns 200 with the download state (``present`` when the file is there already).
    """
    if not isinstance(name, str) or name not in allowed_names():
        shown = name if isinstance(name, str) and len(name) < 200 else type(name).__name__
        return 400, {"error": f"not an official VToonify file name: {shown!r}. Allowed: the names listed by "
                              f"{PREFIX}/models."}
    if not downloadable(name):
        url, path = drive_folder(name), target_path(name)
        return 409, {"error": f"{name} is on the official Google Drive only, not on Hugging Face, so it cannot be "
                              f"downloaded from here: download it by hand from {url} and save it as {path}.",
                     "name": name, "drive_url": url, "path": path}
    loader.register_folder()
    if _present(name):
        return 200, {"name": name, "status": "present"}
    return 200, DOWNLOADS.submit(name)


BODY_HINT = 'send a JSON object {"name": "<official file name>"}'


def body_too_large() -> tuple[int, dict]:
    """The refusal of a body over :data:`MAX_BODY_BYTES` (413)."""
    return 413, {"error": f"the body is larger than {MAX_BODY_BYTES} bytes: {BODY_HINT}."}


def download_request_name(body: bytes) -> tuple[Optional[str], Optional[tuple[int, dict]]]:
    """The ``name`` of a ``POST /vtoonify/download`` body: ``(name, None)``, or ``(None, (status,
    payload))`` with the refusal for a malformed body.

    The bytes are decoded here (strict UTF-8, then JSON) so that every malformed body gets a 4xx
    with a message instead of an exception in the server: more than :data:`MAX_BODY_BYTES` gives
    413; not UTF-8, not JSON, nested too deeply for the parser (RecursionError), not an object,
    or an object without a string ``name`` give 400. Whether the name is allowed is
    :func:`request_download`'s business.
    """
    if len(body) > MAX_BODY_BYTES:
        return None, body_too_large()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, (400, {"error": f"the body is not UTF-8 ({exc.reason} at byte {exc.start}): {BODY_HINT}."})
    try:
        data = json.loads(text)
    except RecursionError:
        return None, (400, {"error": f"the body is nested too deeply to parse: {BODY_HINT}."})
    except ValueError as exc:
        return None, (400, {"error": f"the body is not valid JSON ({exc}): {BODY_HINT}."})
    if not isinstance(data, dict):
        return None, (400, {"error": f"the body is a JSON {_json_kind(data)}, not an object: {BODY_HINT}."})
    if "name" not in data:
        return None, (400, {"error": f"the body has no \"name\": {BODY_HINT}."})
    name = data["name"]
    if not isinstance(name, str):
        return None, (400, {"error": f"\"name\" is a JSON {_json_kind(name)}, not a string: {BODY_HINT}."})
    return name, None


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def download_states() -> tuple[int, dict]:
    """``GET /vtoonify/downloads``: the state of every download since the server started."""
    return 200, {"downloads": DOWNLOADS.states()}


_NAMES_CACHE: dict[tuple, list[str]] = {}


def style_names(checkpoint, exstyle="auto") -> tuple[int, dict]:
    """``GET /vtoonify/styles``: exemplar style names (index = ``style_id``) for a checkpoint.

    ``checkpoint`` and ``exstyle`` (``auto`` = beside the checkpoint, ``none``, or a file) must be
    choices of Load VToonify Model (ComfyUI's listing of the ``vtoonify`` folder, plus the official
    names): anything else gives 400 and nothing is read. An official file that is not downloaded
    yet gives ``available: false`` and no names (200, so that the UI can ask without errors); so
    does a VToonify-T checkpoint (no exemplar codes). Unreadable codes give 422.
    """
    from ..vtoonify_core.errors import CheckpointError
    from ..vtoonify_core.models.bundle import find_exstyle
    from ..vtoonify_core.models.exstyle import load_exstyles

    loader.register_folder()
    fp = _comfy.folder_paths()
    try:
        listed = set(fp.get_filename_list(loader.FOLDER))
    except KeyError:
        listed = set()
    if not isinstance(checkpoint, str) or not checkpoint:
        return 400, {"error": "give checkpoint=<a name from the checkpoint list>."}
    if checkpoint not in listed and checkpoint not in loader.checkpoint_choices():
        return 400, {"error": f"unknown checkpoint {checkpoint!r}: not a file of models/{loader.FOLDER}; use a name "
                              f"from the checkpoint list (GET {PREFIX}/models)."}
    if exstyle not in (loader.AUTO, loader.NONE) and (
            not isinstance(exstyle, str) or exstyle not in loader.exstyle_choices()
            or os.path.splitext(exstyle)[1].lower() not in loader.EXSTYLE_EXTENSIONS):
        return 400, {"error": f"unknown exstyle {exstyle!r}: use auto, none or a .npy/.safetensors file of "
                              f"models/{loader.FOLDER}."}
    answer = {"checkpoint": checkpoint, "exstyle": None, "available": False, "names": []}
    if checkpoint not in listed:
        return 200, dict(answer, note=f"{checkpoint} is not in models/{loader.FOLDER} yet: download it first.")
    if exstyle == loader.NONE:
        return 200, dict(answer, note="exstyle is 'none': no exemplar styles.")
    if exstyle == loader.AUTO:
        path = find_exstyle(fp.get_full_path(loader.FOLDER, checkpoint))
        if path is None:
            return 200, dict(answer, note="no exstyle_code beside this checkpoint (a VToonify-T checkpoint has none).")
        label = Path(loader._native(checkpoint)).parent.as_posix() + "/" + path.name
    else:
        if exstyle not in listed:
            return 200, dict(answer, note=f"{exstyle} is not in models/{loader.FOLDER} yet: download it first.")
        path, label = Path(fp.get_full_path(loader.FOLDER, exstyle)), exstyle
    try:
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in _NAMES_CACHE:
            _NAMES_CACHE.clear()
            _NAMES_CACHE[key] = list(load_exstyles(path).names)
        names = _NAMES_CACHE[key]
    except (OSError, CheckpointError) as exc:
        return 422, {"error": f"cannot read the exemplar codes {label}: {exc}"}
    return 200, dict(answer, exstyle=label, available=True, names=names)


# ---------------------------------------------------------------------------------------------- aiohttp


#: The pack's routes under :data:`PREFIX` and their method.
ROUTES = {"/models": "GET", "/downloads": "GET", "/download": "POST", "/styles": "GET"}


def wrong_method(path: str, allowed: str) -> tuple[int, dict]:
    """The answer to a request with another method than the route's."""
    how = 'POST with a JSON body {"name": "<official file name>"}' if allowed == "POST" else "GET"
    return 405, {"error": f"{PREFIX}{path} takes {allowed} requests: use {how}.", "allow": allowed}


def unknown_route(tail: str) -> tuple[int, dict]:
    """The answer to a path under :data:`PREFIX` that is not one of :data:`ROUTES`."""
    listing = ", ".join(f"{m} {PREFIX}{p}" for p, m in ROUTES.items())
    return 404, {"error": f"{PREFIX}/{tail} is not a route of this pack: use one of {listing}."}


def _wrong_method(reply, path: str, allowed: str):
    async def handler(request):
        return reply(wrong_method(path, allowed))

    return handler


def register(routes) -> None:
    """Add the handlers to an aiohttp ``RouteTableDef`` (``PromptServer.instance.routes``)."""
    from aiohttp import web

    def reply(result: tuple[int, dict]):
        status, payload = result
        return web.json_response(payload, status=status)

    @routes.get(PREFIX + "/models")
    async def _models(request):
        return reply(model_status())

    @routes.get(PREFIX + "/downloads")
    async def _downloads(request):
        return reply(download_states())

    @routes.post(PREFIX + "/download")
    async def _download(request):
        if request.content_type != "application/json":
            return reply((415, {"error": f"the content type is {request.content_type!r}, not application/json: "
                                         f"{BODY_HINT}."}))
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            return reply(body_too_large())
        # at most one byte over the cap is read: enough to know it is too large, whatever the
        # Content-Length said (chunked bodies have none)
        body = await request.content.read(MAX_BODY_BYTES + 1)
        while len(body) <= MAX_BODY_BYTES and not request.content.at_eof():
            more = await request.content.read(MAX_BODY_BYTES + 1 - len(body))
            if not more:
                break
            body += more
        name, refusal = download_request_name(body)
        return reply(refusal if refusal is not None else request_download(name))

    @routes.get(PREFIX + "/styles")
    async def _styles(request):
        q = request.rel_url.query
        return reply(style_names(q.get("checkpoint"), q.get("exstyle", loader.AUTO)))

    # the wrong method, or a path that is not ours under the prefix: a JSON answer that says what to send
    for path, allowed in ROUTES.items():
        other = "GET" if allowed == "POST" else "POST"
        routes.route(other, PREFIX + path)(_wrong_method(reply, path, allowed))

    @routes.route("*", PREFIX + "/{tail:.*}")
    async def _unknown(request):
        return reply(unknown_route(request.match_info.get("tail", "")))


def _register_with_server() -> bool:
    try:
        from server import PromptServer
    except ImportError:  # not inside ComfyUI: the handlers are still importable
        return False
    instance = getattr(PromptServer, "instance", None)
    if instance is None or getattr(instance, "routes", None) is None:
        return False
    register(instance.routes)
    return True


REGISTERED = _register_with_server()
