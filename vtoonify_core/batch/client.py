"""Batch client for ComfyUI's HTTP API: one prompt per input file, spread over one or more servers.

Usage: :data:`USAGE` (shown by ``--help``).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import mimetypes
import os
import queue as stdlib_queue
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from ..errors import PromptError, QueueError
from ..types import IMAGE_EXTENSIONS

#: What ``--help`` prints above the options.
USAGE = """Batch client for ComfyUI's HTTP API: one prompt per input file, spread over one or more servers.

    python -m vtoonify_core.batch WORKFLOW INPUT... --server http://127.0.0.1:8188 [--server URL ...] --out DIR

``WORKFLOW`` is an API-format workflow (ComfyUI: *Export (API)*), e.g. ``workflows/api/stylize_image.json``
(``LoadImage`` -> VToonify -> ``SaveImage``) or ``workflows/api/stylize_video_file.json`` (the
*Stylize Video File* node). For every input the client

1. uploads it through ``/upload/image`` (images; and videos with ``--upload-videos``) or sets the
   video node's ``video_path`` to its absolute path (the server must see the same file system),
2. names the outputs after the input (``SaveImage`` prefix, the video node's ``%stem%``) and
   applies ``--set NODE.INPUT=VALUE`` overrides,
3. queues the prompt with ``POST /prompt`` on the next free server (one worker thread per
   server slot pulls inputs from a shared list, so faster servers take more),
4. follows it on ``/ws`` (progress is logged; without the ``websocket-client`` package it polls
   ``/history``), reads the outputs from ``/history/<id>`` and downloads them with ``/view``,
5. retries a failed or timed-out prompt up to ``--retries`` times (on any server),

and writes ``summary.json`` in ``--out`` (per input: status, server, prompt ids, attempts,
errors, downloaded files). Exit status: 0 all done, 1 some failed, 2 bad arguments.

Only the standard library is needed (``websocket-client`` is optional). No ComfyUI import.
"""

logger = logging.getLogger("vtoonify")

PathLike = Union[str, Path]
#: Files sent to ComfyUI's Load Image (still images, and GIFs, which it reads as a batch of frames).
LOAD_IMAGE_EXTENSIONS = IMAGE_EXTENSIONS + (".gif",)
VIDEO_INPUT = "video_path"
DEFAULT_SERVER = "http://127.0.0.1:8188"


# ----------------------------------------------------------------------------------------------
# workflow handling


def load_workflow(path: PathLike) -> dict:
    """Read an API-format workflow (``{node_id: {"class_type", "inputs"}}``).

    Raises:
        QueueError: unreadable, or a UI-format workflow (``nodes``/``links``) instead of API format.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise QueueError(f"cannot read workflow {path}: {exc}") from None
    if isinstance(data, dict) and "prompt" in data and isinstance(data["prompt"], dict):
        data = data["prompt"]
    if not isinstance(data, dict) or "nodes" in data or not data or not all(
            isinstance(v, dict) and "class_type" in v for v in data.values()):
        raise QueueError(f"{path} is not an API-format workflow: in ComfyUI use File > Export (API)")
    return data


def is_image(path: PathLike) -> bool:
    """Whether an input is an image (by extension); everything else is treated as a video."""
    return Path(path).suffix.lower() in LOAD_IMAGE_EXTENSIONS


def find_input_node(workflow: Mapping[str, Any], kind: str, node_id: Optional[str] = None) -> str:
    """The node that takes the input: ``LoadImage`` for images, a node with ``video_path`` for videos.

    Raises:
        QueueError: none, or ``node_id`` not in the workflow.
    """
    if node_id is not None:
        if str(node_id) not in workflow:
            raise QueueError(f"--input-node {node_id}: no such node in the workflow")
        return str(node_id)
    for nid, node in workflow.items():
        inputs = node.get("inputs", {})
        if kind == "image" and node.get("class_type") in ("LoadImage", "LoadImageOutput"):
            return str(nid)
        if kind == "video" and VIDEO_INPUT in inputs:
            return str(nid)
    what = "a LoadImage node" if kind == "image" else f"a node with a '{VIDEO_INPUT}' input (Stylize Video File)"
    raise QueueError(f"the workflow has no {what} for {kind} inputs")


def parse_override(text: str) -> tuple[str, str, Any]:
    """``NODE.INPUT=VALUE`` -> ``(node, input, value)``; the value is JSON when it parses, else a string."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise QueueError(f"--set {text!r}: expected NODE.INPUT=VALUE, e.g. 3.style_degree=0.8")
    key, raw = text.split("=", 1)
    node, name = key.split(".", 1)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return node.strip(), name.strip(), value


def apply_overrides(workflow: dict, overrides: Sequence[tuple[str, str, Any]]) -> None:
    """Set ``inputs[name] = value`` of the named nodes (in place).

    Raises:
        QueueError: unknown node.
    """
    for node, name, value in overrides:
        if node not in workflow:
            raise QueueError(f"--set {node}.{name}: no node {node} in the workflow (nodes: {', '.join(workflow)})")
        workflow[node].setdefault("inputs", {})[name] = value


def name_outputs(workflow: dict, stem: str) -> None:
    """Make output names unique per input: ``SaveImage`` prefixes get ``_<stem>``; a video node's
    ``output_name`` gets ``%stem%`` if it has none."""
    for node in workflow.values():
        inputs = node.get("inputs", {})
        if node.get("class_type") in ("SaveImage", "SaveAnimatedWEBP", "SaveAnimatedPNG") and isinstance(
                inputs.get("filename_prefix"), str):
            inputs["filename_prefix"] = f"{inputs['filename_prefix']}_{stem}"
        name = inputs.get("output_name")
        if VIDEO_INPUT in inputs and isinstance(name, str) and "%stem%" not in name:
            p = Path(name)
            inputs["output_name"] = str(p.with_name(f"{p.stem}_%stem%{p.suffix}"))


def output_files(entry: Mapping[str, Any]) -> list[dict]:
    """Every file record (``filename``, ``subfolder``, ``type``) in a ``/history`` entry's outputs."""
    found = []
    for nid, out in (entry.get("outputs") or {}).items():
        for key, values in (out or {}).items():
            if not isinstance(values, list):
                continue
            for v in values:
                if isinstance(v, dict) and "filename" in v:
                    found.append({"node": str(nid), "key": key, "filename": v["filename"],
                                  "subfolder": v.get("subfolder", ""), "type": v.get("type", "output")})
    return found


def error_text(entry: Mapping[str, Any]) -> str:
    """The error of a failed ``/history`` entry (node, exception type and message)."""
    for event, data in (entry.get("status") or {}).get("messages", []):
        if event == "execution_error":
            return (f"node {data.get('node_id')} ({data.get('node_type')}): {data.get('exception_type')}: "
                    f"{data.get('exception_message', '').strip()}")
        if event == "execution_interrupted":
            return "interrupted on the server"
    return f"status {json.dumps((entry.get('status') or {}).get('status_str'))}"


def error_traceback(entry: Mapping[str, Any]) -> list[str]:
    """The server-side traceback lines of a failed ``/history`` entry (empty when none)."""
    for event, data in (entry.get("status") or {}).get("messages", []):
        if event == "execution_error":
            return [str(line) for line in data.get("traceback") or []]
    return []


# ----------------------------------------------------------------------------------------------
# one server


class ComfyClient:
    """Talks to one ComfyUI server: ``/prompt``, ``/upload/image``, ``/history``, ``/view``, ``/ws``."""

    def __init__(self, url: str, timeout: float = 60.0, use_websocket: bool = True):
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            self.url = "http://" + self.url
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex
        self._ws = None
        self._use_ws = use_websocket

    # -- HTTP -----------------------------------------------------------------------------------
    def request(self, method: str, path: str, data: Optional[bytes] = None,
                headers: Optional[dict] = None) -> tuple[int, bytes]:
        """One request; ``(status, body)`` for any HTTP status. Network errors raise PromptError."""
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except (urllib.error.URLError, OSError) as exc:
            raise PromptError(f"{self.url} unreachable: {getattr(exc, 'reason', exc)}") from None

    def get_json(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise PromptError(f"GET {path} on {self.url}: HTTP {status} {body[:300]!r}")
        return json.loads(body)

    def queue_prompt(self, prompt: Mapping[str, Any]) -> str:
        """``POST /prompt``; returns the prompt id. A validation error is not retriable."""
        payload = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        status, body = self.request("POST", "/prompt", payload, {"Content-Type": "application/json"})
        try:
            answer = json.loads(body)
        except ValueError:
            answer = body.decode("utf-8", "replace")
        if status == 200 and isinstance(answer, dict) and "prompt_id" in answer:
            return str(answer["prompt_id"])
        detail = answer
        if isinstance(answer, dict):
            err = answer.get("error", {})
            detail = err.get("message", "") if isinstance(err, dict) else str(err)
            for nid, ne in (answer.get("node_errors") or {}).items():
                for e in ne.get("errors", []):
                    detail += f"; node {nid} ({ne.get('class_type')}): {e.get('message')}: {e.get('details')}"
        raise PromptError(f"{self.url} rejected the prompt (HTTP {status}): {detail}", retriable=status >= 500)

    def upload(self, path: PathLike, subfolder: str = "", kind: str = "input") -> str:
        """Upload a file through ``/upload/image``; returns the name a ``LoadImage`` takes (``sub/name``)."""
        p = Path(path)
        boundary = uuid.uuid4().hex
        ctype = mimetypes.guess_type(p.name)[0] or "application/octet-stream"
        parts = []
        for name, value in (("type", kind), ("subfolder", subfolder), ("overwrite", "true")):
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        parts.append((f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{p.name}"\r\n'
                      f"Content-Type: {ctype}\r\n\r\n").encode() + p.read_bytes() + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        status, body = self.request("POST", "/upload/image", b"".join(parts),
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        if status != 200:
            raise PromptError(f"upload of {p} to {self.url} failed: HTTP {status} {body[:300]!r}")
        answer = json.loads(body)
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    def history(self, prompt_id: str) -> Optional[dict]:
        """The finished ``/history`` entry of a prompt, or ``None`` while it is queued or running."""
        entry = self.get_json("/history/" + urllib.parse.quote(prompt_id)).get(prompt_id)
        if not entry:
            return None
        status = entry.get("status") or {}
        if status.get("completed") is None and status.get("status_str") not in ("success", "error"):
            return None
        return entry

    def download(self, record: Mapping[str, Any], path: PathLike, block: int = 1 << 20) -> Path:
        """Save an output file record (``/view``) to ``path``, streamed (videos can be large)."""
        query = urllib.parse.urlencode({"filename": record["filename"], "subfolder": record.get("subfolder", ""),
                                        "type": record.get("type", "output")})
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        try:
            with urllib.request.urlopen(self.url + "/view?" + query, timeout=self.timeout) as resp, \
                    open(tmp, "wb") as f:
                while chunk := resp.read(block):
                    f.write(chunk)
        except urllib.error.HTTPError as err:
            tmp.unlink(missing_ok=True)
            raise PromptError(f"/view {record['filename']} on {self.url}: HTTP {err.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise PromptError(f"{self.url} unreachable: {getattr(exc, 'reason', exc)}") from None
        os.replace(tmp, path)
        return path

    def cancel(self, prompt_id: str) -> None:
        """Best effort: drop a prompt from the queue, and interrupt it if it is running."""
        try:
            self.request("POST", "/queue", json.dumps({"delete": [prompt_id]}).encode(),
                         {"Content-Type": "application/json"})
            self.request("POST", "/interrupt", json.dumps({"prompt_id": prompt_id}).encode(),
                         {"Content-Type": "application/json"})
        except PromptError:
            pass

    # -- websocket ------------------------------------------------------------------------------
    def connect(self) -> bool:
        """Open ``/ws`` for this client id (before queueing, so no message is missed); ``False``
        when ``websocket-client`` is missing or the connection fails (then :meth:`wait` polls)."""
        if not self._use_ws:
            return False
        try:
            import websocket
        except ImportError:
            logger.info("VToonify queue: websocket-client not installed; polling /history instead")
            self._use_ws = False
            return False
        ws_url = self.url.replace("http", "ws", 1) + "/ws?" + urllib.parse.urlencode({"clientId": self.client_id})
        try:
            self._ws = websocket.create_connection(ws_url, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - any failure means: poll instead
            logger.info("VToonify queue: no websocket on %s (%s); polling /history", self.url, exc)
            self._ws = None
            return False
        return True

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001
                pass
            self._ws = None

    def wait(self, prompt_id: str, timeout: float,
             on_progress: Optional[Callable[[str, int, int], None]] = None, poll: float = 0.5) -> dict:
        """Wait until the prompt has finished; returns its ``/history`` entry.

        Follows ``/ws`` (``progress``, ``executing``, ``execution_*`` messages) when connected, else
        polls ``/history``.

        Raises:
            PromptError: timed out (the prompt is cancelled on the server), or the server vanished.
        """
        deadline = time.monotonic() + timeout
        if self._ws is not None:
            self._follow_ws(prompt_id, deadline, on_progress)
        while True:
            entry = self.history(prompt_id)
            if entry is not None:
                return entry
            if time.monotonic() > deadline:
                self.cancel(prompt_id)
                raise PromptError(f"prompt {prompt_id} on {self.url} did not finish within {timeout:.0f} s")
            time.sleep(poll)

    def _follow_ws(self, prompt_id: str, deadline: float, on_progress) -> None:
        import websocket

        last_check = time.monotonic()
        while self._ws is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._ws.settimeout(min(left, 2.0))
            try:
                msg = self._ws.recv()
            except websocket.WebSocketTimeoutException:
                msg = None
            except (websocket.WebSocketException, OSError):
                logger.info("VToonify queue: websocket to %s closed; polling /history", self.url)
                self.close()
                return
            if time.monotonic() - last_check > 10.0:  # a missed end message must not hang us
                last_check = time.monotonic()
                if self.history(prompt_id) is not None:
                    return
            if not msg or isinstance(msg, bytes):
                continue
            try:
                m = json.loads(msg)
            except ValueError:
                continue
            kind, data = m.get("type"), m.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue
            if kind == "progress" and on_progress is not None:
                on_progress(str(data.get("node")), int(data.get("value", 0)), int(data.get("max", 0)))
            elif kind == "executing" and data.get("node") is None:
                return
            elif kind in ("execution_success", "execution_error", "execution_interrupted"):
                return


# ----------------------------------------------------------------------------------------------
# the batch


@dataclass
class Job:
    """One input of the batch and what happened to it (a summary row)."""

    input: str
    kind: str
    status: str = "pending"
    server: Optional[str] = None
    prompt_id: Optional[str] = None
    attempts: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    error: Optional[str] = None
    seconds: float = 0.0


def build_prompt(workflow: Mapping[str, Any], job: Job, client: ComfyClient, *, input_node: Optional[str] = None,
                 overrides: Sequence[tuple[str, str, Any]] = (), upload_videos: bool = False,
                 upload_subfolder: str = "vtoonify_batch") -> dict:
    """The workflow with this input wired in (uploaded when needed) and outputs named after it."""
    prompt = copy.deepcopy(dict(workflow))
    apply_overrides(prompt, overrides)
    node = find_input_node(prompt, job.kind, input_node)
    inputs = prompt[node].setdefault("inputs", {})
    src = Path(job.input)
    if job.kind == "image":
        inputs["image"] = client.upload(src, upload_subfolder)
    elif upload_videos:
        inputs[VIDEO_INPUT] = client.upload(src, upload_subfolder)
    else:
        inputs[VIDEO_INPUT] = str(src.resolve())
    name_outputs(prompt, src.stem)
    return prompt


def _download(client: ComfyClient, entry: dict, job: Job, out_dir: Path, index: int) -> list[str]:
    dest = out_dir / f"{index:04d}_{Path(job.input).stem}"
    saved = []
    for rec in output_files(entry):
        if rec["type"] == "temp":
            continue  # previews of PreviewImage nodes
        dest.mkdir(parents=True, exist_ok=True)
        saved.append(str(client.download(rec, dest / Path(rec["filename"]).name)))
    return saved


def run_batch(workflow: Mapping[str, Any], inputs: Sequence[PathLike], servers: Sequence[str], out_dir: PathLike, *,
              retries: int = 2, per_server: int = 1, timeout: float = 3600.0, input_node: Optional[str] = None,
              overrides: Sequence[tuple[str, str, Any]] = (), upload_videos: bool = False,
              use_websocket: bool = True, on_event: Optional[Callable[[str, Job, dict], None]] = None) -> dict:
    """Queue one prompt per input over ``servers``, collect the outputs, retry failures; returns the summary.

    Each server gets ``per_server`` worker threads; each thread takes the next input, runs it to
    the end on its server and takes another, so work spreads by speed. A failed attempt goes back
    to the shared list (any server may pick it up) until ``retries`` retries are used; a server
    that cannot be reached is dropped after 3 failures in a row. ``summary.json`` is written to
    ``out_dir``. ``on_event(kind, job, data)`` reports ``queued``, ``progress``, ``done``, ``retry``
    and ``failed``.

    Raises:
        QueueError: no inputs or servers, a missing input file, or a workflow without a node for
            an input's kind.
    """
    if not inputs:
        raise QueueError("no inputs given")
    if not servers:
        raise QueueError("no --server given")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for p in inputs:
        path = Path(p)
        if not path.is_file():
            raise QueueError(f"input not found: {path}")
        job = Job(str(path), "image" if is_image(path) else "video")
        find_input_node(workflow, job.kind, input_node)  # fail early, before anything is queued
        jobs.append(job)
    work: "stdlib_queue.Queue[int]" = stdlib_queue.Queue()
    for i in range(len(jobs)):
        work.put(i)
    lock = threading.Lock()
    remaining = {"n": len(jobs), "alive": len(servers) * max(1, int(per_server))}
    all_done = threading.Event()
    emit = on_event or (lambda kind, job, data: None)
    t_start = time.time()

    def finish(i: int) -> None:
        with lock:
            remaining["n"] -= 1
            if remaining["n"] == 0:
                all_done.set()

    def worker(url: str) -> None:
        client = ComfyClient(url, use_websocket=use_websocket)
        client.connect()
        unreachable = 0
        try:
            while not all_done.is_set():
                try:
                    i = work.get(timeout=0.2)
                except stdlib_queue.Empty:
                    continue
                job = jobs[i]
                t0 = time.monotonic()
                attempt = {"server": url, "prompt_id": None, "error": None}
                try:
                    prompt = build_prompt(workflow, job, client, input_node=input_node, overrides=overrides,
                                          upload_videos=upload_videos)
                    pid = client.queue_prompt(prompt)
                    attempt["prompt_id"] = pid
                    emit("queued", job, {"server": url, "prompt_id": pid})

                    def progress(node: str, value: int, maximum: int, _job=job, _pid=pid) -> None:
                        emit("progress", _job, {"server": url, "prompt_id": _pid, "node": node, "value": value,
                                                "max": maximum})

                    entry = client.wait(pid, timeout, progress)
                    if (entry.get("status") or {}).get("status_str") != "success":
                        raise PromptError(error_text(entry), traceback=error_traceback(entry))
                    files = _download(client, entry, job, out, i)
                    unreachable = 0
                except Exception as exc:  # noqa: BLE001 - any failure of an attempt is recorded and retried
                    attempt["error"] = str(exc)
                    if getattr(exc, "traceback", None):
                        attempt["traceback"] = exc.traceback
                    attempt["seconds"] = round(time.monotonic() - t0, 3)
                    job.attempts.append(attempt)
                    if "unreachable" in str(exc):
                        unreachable += 1
                    retriable = getattr(exc, "retriable", True)
                    if retriable and len(job.attempts) <= retries:
                        emit("retry", job, attempt)
                        work.put(i)
                    else:
                        job.status, job.error = "failed", str(exc)
                        job.server, job.prompt_id = url, attempt["prompt_id"]
                        job.seconds = round(sum(a.get("seconds", 0.0) for a in job.attempts), 3)
                        emit("failed", job, attempt)
                        finish(i)
                    if unreachable >= 3:
                        logger.warning("VToonify queue: %s unreachable 3 times in a row; dropping it", url)
                        return
                    continue
                attempt["seconds"] = round(time.monotonic() - t0, 3)
                job.attempts.append(attempt)
                job.status, job.server, job.prompt_id, job.outputs = "ok", url, attempt["prompt_id"], files
                job.seconds = round(sum(a.get("seconds", 0.0) for a in job.attempts), 3)
                emit("done", job, attempt)
                finish(i)
        finally:
            client.close()
            with lock:
                remaining["alive"] -= 1
                if remaining["alive"] == 0:
                    all_done.set()

    threads = [threading.Thread(target=worker, args=(url,), name=f"comfy-queue-{n}", daemon=True)
               for n, url in enumerate(u for u in servers for _ in range(max(1, int(per_server))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for job in jobs:
        if job.status == "pending":
            job.status, job.error = "failed", "no server left to run it"
    summary = {
        "workflow_nodes": sorted({n.get("class_type") for n in workflow.values()}),
        "servers": list(servers),
        "started": t_start,
        "seconds": round(time.time() - t_start, 3),
        "ok": sum(j.status == "ok" for j in jobs),
        "failed": sum(j.status != "ok" for j in jobs),
        "jobs": [asdict(j) for j in jobs],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


# ----------------------------------------------------------------------------------------------
# command line


def _printer(quiet: bool) -> Callable[[str, Job, dict], None]:
    last: dict = {}

    def on_event(kind: str, job: Job, data: dict) -> None:
        name = Path(job.input).name
        if kind == "progress":
            if quiet:
                return
            key = (job.input, data.get("node"))
            if data["max"] and (data["value"] == data["max"] or time.monotonic() - last.get(key, 0) > 2.0):
                last[key] = time.monotonic()
                print(f"  {name}: node {data['node']} {data['value']}/{data['max']}", file=sys.stderr)
        elif kind == "queued" and not quiet:
            print(f"queued {name} on {data['server']} ({data['prompt_id']})", file=sys.stderr)
        elif kind == "done":
            print(f"done   {name}: {len(job.outputs)} file(s) in {job.seconds:.1f} s")
        elif kind == "retry":
            print(f"retry  {name}: {data['error']}", file=sys.stderr)
        elif kind == "failed":
            print(f"FAILED {name}: {job.error}", file=sys.stderr)

    return on_event


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m vtoonify_core.batch", description=USAGE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workflow", help="API-format workflow JSON (e.g. workflows/api/stylize_image.json)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, one prompt each")
    p.add_argument("--server", action="append", dest="servers", metavar="URL",
                   help=f"ComfyUI server (repeat for several; default {DEFAULT_SERVER})")
    p.add_argument("--out", required=True, help="folder for the downloaded outputs and summary.json")
    p.add_argument("--retries", type=int, default=2, help="retries of a failed prompt")
    p.add_argument("--per-server", type=int, default=1, help="prompts in flight per server")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds one prompt may take")
    p.add_argument("--input-node", help="id of the node that takes the input (default: found by type)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="NODE.INPUT=VALUE",
                   help="override a node input (JSON value or string), e.g. --set 4.style_degree=0.8")
    p.add_argument("--upload-videos", action="store_true",
                   help="upload videos to the server's input folder instead of passing their path")
    p.add_argument("--no-websocket", action="store_true", help="poll /history instead of following /ws")
    p.add_argument("-q", "--quiet", action="store_true", help="only print results")
    args = p.parse_args(argv)
    try:
        workflow = load_workflow(args.workflow)
        overrides = [parse_override(o) for o in args.overrides]
        apply_overrides(copy.deepcopy(workflow), overrides)  # unknown nodes fail before anything runs
        summary = run_batch(workflow, args.inputs, args.servers or [DEFAULT_SERVER], args.out, retries=args.retries,
                            per_server=args.per_server, timeout=args.timeout, input_node=args.input_node,
                            overrides=overrides, upload_videos=args.upload_videos,
                            use_websocket=not args.no_websocket, on_event=_printer(args.quiet))
    except QueueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"{summary['ok']} done, {summary['failed']} failed; summary in {Path(args.out) / 'summary.json'}")
    return 0 if summary["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
