#!/usr/bin/env python3
"""The bad-input campaign: every case of ``scripts/bad_input_cases.py`` sent to a real ComfyUI server.

    python scripts/bad_inputs.py                      # start a ComfyUI 0.30 host (CPU), run all cases,
                                                      # write docs/bad_inputs.md, docs/bad_inputs.json, README count
    python scripts/bad_inputs.py --only models,routes # some categories (or case ids); writes nothing
    python scripts/bad_inputs.py --url http://127.0.0.1:8188 --base BASE   # a server already running on BASE

Each case is an API-format prompt posted to ``POST /prompt`` (small graphs of the pack's nodes with
ComfyUI core nodes, and ``tests/host/bad_input_nodes`` for tensors no core node makes) or a request
to one of the pack's ``/vtoonify/`` routes. The result is what the user sees: the validation error
of ``/prompt`` (its ``node_errors``), the execution error in ``/history``, or the route's answer; and
a verdict by rules (:func:`judge`), never by exact wording, so that the campaign can be re-run after
the messages change:

* ``clear``: an error that names the input or file and says what to do, without raw Python or
  allocator text ("Traceback", "NoneType", "KeyError", "can't allocate", ...);
* ``unclear``: an error, but not a clear one (the reason is recorded);
* ``ok``: it ran: the input was accepted;
* ``crash``: HTTP 5xx, or the server stopped answering;
* ``hang``: no result within the case's timeout (the prompt is then interrupted).

The stand-in model files (``vtoonify_core.testing.standin``, official layout) go to
``<base>/models/vtoonify/bad_inputs/``, the images and videos to ``<base>/input/bad_inputs/``:
nothing the other host tests use is touched.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
sys.path[:0] = [p for p in (str(ROOT), str(SCRIPTS)) if p not in sys.path]

import bad_input_cases as cases_mod  # noqa: E402

HELPER_NODES = ROOT / "tests" / "host" / "bad_input_nodes"
HELPER_LINK_NAME = "vtoonify_bad_input_nodes"
DOCS_MD = ROOT / "docs" / "bad_inputs.md"
DOCS_JSON = ROOT / "docs" / "bad_inputs.json"
README = ROOT / "README.md"
README_MARKERS = ("<!-- bad-inputs:begin -->", "<!-- bad-inputs:end -->")
COMMAND = "python scripts/bad_inputs.py"
VERDICTS = ("clear", "unclear", "ok", "crash", "hang")
DEFAULT_TIMEOUT = 180.0
SHORT = 200

# ---------------------------------------------------------------------------------------------- verdict rules

#: raw Python, PyTorch, pickle or allocator text: a message with any of these is not clear
RAW_TEXT = [re.compile(p) for p in (
    r"Traceback", r"NoneType", r"KeyError", r"can't allocate", r"CUDA out of memory", r"DefaultCPUAllocator",
    r"object has no attribute", r"not subscriptable", r"object is not (callable|iterable)",
    r"unexpected keyword argument", r"positional argument", r"invalid literal for", r"could not convert",
    r"list index out of range", r"index -?\d+ is out of bounds", r"out of range for", r"size mismatch",
    r"[Ss]izes of tensors must match", r"must match the size of tensor", r"while checking arguments",
    r"cannot convert float", r"shape '\[", r"is invalid for input of size", r"Given groups=", r"expected scalar type",
    r"Input type \(", r"mat\d? and mat\d? shapes", r"\bUnpickl", r"_pickle\b", r"PytorchStreamReader",
    r"\x1b\[|\\x1b", r"central directory", r"Weights only load failed", r"\bWeightsUnpickler\b", r"Errno", r"\bself\.",
    r"\btensor\(", r"torch\.\w+Tensor", r"<class '", r"<built-in", r" at 0x[0-9a-f]+",
    r"\b(AttributeError|TypeError|IndexError|AssertionError|ZeroDivisionError|NameError|UnboundLocalError|"
    r"RecursionError|NotImplementedError|StopIteration|OverflowError|RuntimeError|UnicodeDecodeError)\b",
)]
#: exception types that are never a message for a user, whatever their text
RAW_EXCEPTIONS = {"KeyError", "AttributeError", "TypeError", "IndexError", "AssertionError", "ZeroDivisionError",
                  "NameError", "UnboundLocalError", "RecursionError", "NotImplementedError", "StopIteration",
                  "UnpicklingError", "EOFError", "OverflowError", "UnicodeDecodeError"}
#: an instruction: one of these verbs where a sentence or clause starts ("...: use 0..7", "Use a frame
#: where...", "... or turn color_transfer on")
INSTRUCTION = re.compile(
    r"(?:^|[:;,.!?(\n]\s*|\b(?:or|and|then|please|instead)\s+)"
    r"(use|connect|put|give|choose|pick|set|download|upload|lower|reduce|raise|increase|fix|drop|remove|replace|"
    r"try|turn|select|convert|check|install|save|send|add|write|extract|mix|make|enter|keep|delete|run|pass|"
    r"provide|specify|change|adjust|crop|scale|load|edit|move|rename|free|split|resize|downscale|shorten|stylize|parse|"
    r"wait|queue|open|"
    r"re-?(?:export|download|encode|queue|run|start))\b", re.I)
#: what is allowed, expected or missing ("must be between", "one of", ComfyUI's "bigger than max of",
#: "not in list", "input_type(...)", "is missing", "is not connected")
ALLOWED = re.compile(
    r"\b(must|should|needs?|expected|at least|at most|between|allowed|supported|one of|bigger than max|"
    r"smaller than min|not in list|input_type|is missing|(is|are) not connected)\b", re.I)
#: a file or path in a message
FILE_RE = re.compile(r"[\w.-]+\.(pt|pth|npy|safetensors|ckpt|bin|mp4|m4v|mov|mkv|webm|avi|gif|png|jpe?g|webp|"
                     r"txt|log)\b|(^|[\s'\"(])/\w", re.I)
MIN_WORDS = 4


def raw_reason(text: str) -> Optional[str]:
    """The first piece of raw Python/allocator text in ``text`` (None when there is none)."""
    for pattern in RAW_TEXT:
        m = pattern.search(text)
        if m:
            return f"raw text {m.group(0)!r}"
    return None


def names_something(text: str, names) -> bool:
    """Whether ``text`` names one of the input ``names`` (as a word) or a file."""
    for name in names:
        if name and re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text):
            return True
    return bool(FILE_RE.search(text))


def says_what_to_do(text: str, labels=()) -> bool:
    """Whether ``text`` gives an instruction or says what is allowed, once the ``labels`` (node display
    names such as "Load VToonify Model", whose words are no advice) are taken out."""
    for label in sorted(labels, key=len, reverse=True):
        if label:
            text = text.replace(label, " ")
    return bool(INSTRUCTION.search(text) or ALLOWED.search(text))


def judge(outcome: str, text: str, names, exception_type: str = "", labels=()) -> tuple[str, str]:
    """``(verdict, reason)`` from the outcome of a case (``ok``, ``error``, ``crash``, ``hang``),
    what the user sees (``text``), the input names of the request, the exception type and the
    ``labels`` that are not advice (node display names)."""
    if outcome in ("ok", "crash", "hang"):
        return outcome, ""
    text = text or ""
    short_type = exception_type.rsplit(".", 1)[-1]
    if short_type in RAW_EXCEPTIONS:
        return "unclear", f"raw exception type {short_type}"
    reason = raw_reason(text)
    if reason:
        return "unclear", reason
    if len(text.split()) < MIN_WORDS:
        return "unclear", "too short to say what is wrong"
    if not names_something(text, names):
        return "unclear", "names no input or file"
    if not says_what_to_do(text, labels):
        return "unclear", "does not say what to do"
    return "clear", ""


# ---------------------------------------------------------------------------------------------- HTTP


class ServerGone(Exception):
    """The server does not answer (connection refused or reset)."""


class Client:
    """The few HTTP calls of the campaign (standard library only)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.client_id = uuid.uuid4().hex

    def request(self, method: str, path: str, data: Optional[bytes] = None, headers: Optional[dict] = None,
                timeout: float = 60.0) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            raise ServerGone(f"{method} {path}: {exc}") from None

    def get_json(self, path: str, timeout: float = 60.0):
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise ServerGone(f"GET {path}: HTTP {status}")
        return json.loads(body)

    def alive(self) -> bool:
        try:
            self.get_json("/system_stats", timeout=10)
            return True
        except (ServerGone, ValueError):
            return False

    def post_prompt(self, prompt) -> tuple[int, object]:
        body = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        status, answer = self.request("POST", "/prompt", body, {"Content-Type": "application/json"})
        try:
            return status, json.loads(answer)
        except ValueError:
            return status, answer.decode("utf-8", "replace")

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            q = self.get_json("/queue")
            if not q.get("queue_running") and not q.get("queue_pending"):
                return True
            time.sleep(0.2)
        return False

    def cancel(self, prompt_id: str) -> None:
        """Drop ``prompt_id`` from the queue and interrupt it if it runs."""
        body = json.dumps({"delete": [prompt_id]}).encode()
        self.request("POST", "/queue", body, {"Content-Type": "application/json"})
        self.request("POST", "/interrupt", json.dumps({"prompt_id": prompt_id}).encode(),
                     {"Content-Type": "application/json"})


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Result:
    """One case's outcome, as recorded in docs/bad_inputs.json."""

    id: str
    category: str
    description: str
    expect: str
    verdict: str
    seen: str
    http_status: Optional[int]
    source: str = ""          # validation, execution, route, none
    node_type: str = ""
    exception_type: str = ""
    reason: str = ""
    seconds: float = 0.0


def _execution_error(entry: dict) -> tuple[str, str, str]:
    """(message, exception type, node type) of a failed /history entry."""
    for event, data in entry.get("status", {}).get("messages", []):
        if event == "execution_error":
            return (str(data.get("exception_message", "")).strip(), str(data.get("exception_type", "")),
                    str(data.get("node_type", "")))
        if event == "execution_interrupted":
            return "the run was interrupted", "interrupted", str(data.get("node_type", ""))
    return json.dumps(entry.get("status"))[:2000], "", ""


def validation_text(answer, prompt: dict) -> str:
    """What ComfyUI shows for a refused prompt: its error, then each node's errors."""
    if not isinstance(answer, dict):
        return str(answer)
    parts = []
    err = answer.get("error")
    if isinstance(err, dict):
        head = err.get("message", "")
        if err.get("details"):
            head += f": {err['details']}"
        parts.append(head)
    elif err:
        parts.append(str(err))
    for nid, node in (answer.get("node_errors") or {}).items():
        ctype = node.get("class_type") or prompt.get(nid, {}).get("class_type", "?")
        for e in node.get("errors", []):
            text = e.get("message", "")
            if e.get("details"):
                text += f": {e['details']}"
            parts.append(f"{ctype} #{nid}: {text}")
    return " | ".join(dict.fromkeys(p for p in parts if p))


class Campaign:
    """Runs cases against one server; ``restart`` (optional) brings a dead server back."""

    def __init__(self, client: Client, ctx: "cases_mod.Context", object_info: dict,
                 restart: Optional[Callable[[], Client]] = None, log: Callable[[str], None] = print,
                 default_timeout: float = DEFAULT_TIMEOUT):
        self.client = client
        self.ctx = ctx
        self.info = object_info
        self.restart = restart
        self.log = log
        self.default_timeout = default_timeout

    def input_names(self, prompt: dict) -> set[str]:
        names = set()
        for node in prompt.values() if isinstance(prompt, dict) else []:
            if not isinstance(node, dict):
                continue
            names.update(node.get("inputs", {}) if isinstance(node.get("inputs"), dict) else ())
            spec = self.info.get(node.get("class_type"), {}).get("input", {})
            for section in ("required", "optional"):
                names.update(spec.get(section, {}))
        return names

    def labels(self, prompt: dict) -> set[str]:
        """Display names of the prompt's node classes (and ComfyUI's validation heading)."""
        out = {"Prompt outputs failed validation"}
        for node in prompt.values() if isinstance(prompt, dict) else []:
            if isinstance(node, dict):
                info = self.info.get(node.get("class_type"), {})
                out.update(x for x in (info.get("display_name"), info.get("name")) if x)
        return out

    def run(self, cases) -> list[Result]:
        results = []
        for case in cases:
            result = self.run_case(case)
            self.log(f"{result.verdict:8s} {result.seconds:6.1f}s {case.id}: {shorten(result.seen, 150)}")
            results.append(result)
        return results

    def run_case(self, case) -> Result:
        start = time.monotonic()
        timeout = case.timeout or self.default_timeout
        try:
            request = case.build(self.ctx)
            if request.kind == "route":
                outcome, text, status, extra = self._route(request, timeout)
                names, labels = set(request.names), set()
            else:
                outcome, text, status, extra = self._prompt(request.prompt, timeout)
                names = self.input_names(request.prompt) | set(request.names)
                labels = self.labels(request.prompt)
        except ServerGone as exc:
            outcome, text, status, extra = "crash", f"the server stopped answering ({exc})", None, {}
            names, labels = set(), set()
        if outcome == "crash" and not self.client.alive() and self.restart is not None:
            self.log(f"{case.id}: the server died; restarting it")
            self.client = self.restart()
        verdict, reason = judge(outcome, text, names, extra.get("exception_type", ""), labels)
        return Result(case.id, case.category, case.description, case.expect, verdict, self.ctx.clean(text), status,
                      extra.get("source", "none"), extra.get("node_type", ""),
                      extra.get("exception_type", "").rsplit("/", 1)[-1], reason, round(time.monotonic() - start, 2))

    def _route(self, request, timeout: float):
        status, body = self.client.request(request.method, request.path, request.body, request.headers,
                                           timeout=timeout)
        try:
            payload = json.loads(body)
            text = payload.get("error", "") if isinstance(payload, dict) else ""
        except ValueError:
            text = body.decode("utf-8", "replace")[:2000]
        if status >= 500:
            return "crash", text or f"HTTP {status}", status, {"source": "route"}
        if status < 400:
            return "ok", text or f"HTTP {status}", status, {"source": "route"}
        return "error", text or f"HTTP {status} (no message)", status, {"source": "route"}

    def _prompt(self, prompt: dict, timeout: float):
        status, answer = self.client.post_prompt(prompt)
        if status >= 500:
            return "crash", str(answer)[:2000], status, {"source": "validation"}
        if status != 200 or not isinstance(answer, dict) or "prompt_id" not in answer:
            return "error", validation_text(answer, prompt), status, {"source": "validation"}
        prompt_id = answer["prompt_id"]
        deadline = time.monotonic() + timeout
        path = "/history/" + urllib.parse.quote(prompt_id)
        while True:
            entry = self.client.get_json(path).get(prompt_id)
            if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                break
            if time.monotonic() > deadline:
                self.client.cancel(prompt_id)
                stopped = self.client.wait_idle(120)
                return "hang", (f"no result within {timeout:.0f} s (interrupted"
                                f"{'' if stopped else '; still running 120 s later'})"), status, {"source": "none"}
            time.sleep(0.1)
        if entry["status"]["status_str"] == "success":
            return "ok", "(ran)", status, {"source": "none"}
        message, etype, ntype = _execution_error(entry)
        return "error", message, status, {"source": "execution", "exception_type": etype, "node_type": ntype}


def shorten(text: str, n: int = SHORT) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[:n - 1].rstrip() + "…"


# ---------------------------------------------------------------------------------------------- the server


def load_comfy_host():
    if "comfy_host" in sys.modules:
        return sys.modules["comfy_host"]
    spec = importlib.util.spec_from_file_location("comfy_host", SCRIPTS / "comfy_host.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfy_host"] = module
    spec.loader.exec_module(module)
    return module


def link_helper_nodes(base: Path) -> Path:
    """Link ``tests/host/bad_input_nodes`` into ``base/custom_nodes`` (before the server starts)."""
    nodes = Path(base) / "custom_nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    link = nodes / HELPER_LINK_NAME
    if link.is_symlink() and link.resolve() == HELPER_NODES:
        return link
    if link.is_symlink():
        link.unlink()
    link.symlink_to(HELPER_NODES, target_is_directory=True)
    return link


def start_server(base: Path, gpu: bool = False):
    host_mod = load_comfy_host()
    host = host_mod.setup(quiet=True)
    host_mod.prepare_base(base)
    link_helper_nodes(base)
    return host_mod, host_mod.start_server(host, base, port=None, timeout=180.0, die_with_parent=True,
                                           force_cpu=not gpu)


def comfy_version(client: Client) -> str:
    try:
        return client.get_json("/system_stats")["system"]["comfyui_version"]
    except (ServerGone, KeyError, ValueError):
        return "?"


# ---------------------------------------------------------------------------------------------- report


def totals(results: list[Result]) -> dict[str, int]:
    out = {v: 0 for v in VERDICTS}
    for r in results:
        out[r.verdict] += 1
    return out


def _cell(text: str) -> str:
    """``text`` for a Markdown table cell, shown as it is (no emphasis, no HTML, one line)."""
    text = " ".join(text.split())
    for ch in "\\`*_|":
        text = text.replace(ch, "\\" + ch)
    return text.replace("<", "&lt;")


def summary_line(results: list[Result]) -> str:
    t = totals(results)
    return (f"{len(results)} bad inputs tried, {t['clear']} give a clear error, {t['unclear']} an unclear one, "
            f"{t['ok']} are accepted, {t['crash']} crash, {t['hang']} hang")


def write_markdown(results: list[Result], meta: dict, path: Path) -> None:
    t = totals(results)
    lines = [
        "# Bad inputs: what the user sees",
        "",
        f"Every case below was sent to a real ComfyUI {meta['comfyui_version']} server ({meta['device']}) through "
        f"its HTTP API on {meta['date']}: an API-format prompt to `POST /prompt`, or a request to one of the "
        "pack's `/vtoonify/` routes. Regenerate this page, `docs/bad_inputs.json` and the count in the README with",
        "",
        "```bash",
        COMMAND,
        "```",
        "",
        "(it sets up the same cached host as `scripts/comfy_host.py`, uses stand-in model files in the official "
        "layout and takes a few minutes on a CPU). The cases are in `scripts/bad_input_cases.py`; "
        "`tests/host/test_bad_inputs.py` runs a subset of them in the test suite.",
        "",
        f"**{summary_line(results)}.**",
        "",
        "Verdicts, by rules rather than exact wording (`judge` in `scripts/bad_inputs.py`):",
        "",
        "* **clear**: an error that names the input or file and says what to do, with no raw Python or "
        "allocator text (Traceback, NoneType, KeyError, can't allocate, object has no attribute, ...);",
        "* **unclear**: an error, but not a clear one (the JSON copy records which rule failed);",
        "* **ok**: it ran: the input was accepted (for some cases that is the right answer, see *expected*);",
        "* **crash**: HTTP 5xx or the server stopped answering; **hang**: no result within the case's timeout.",
        "",
        "What the user sees is the validation error of `/prompt` (its `node_errors`; source *validation*: "
        "ComfyUI's own check of the prompt against the nodes' declared inputs), the error the failed node "
        "raised (source *execution*: the pack's message) or the route's answer (source *route*); shortened to "
        "about 200 characters, with absolute server paths replaced by `<...>`. *expected* says what a good "
        "answer is: an error, a run (ok), or either.",
        "",
        "| id | category | what was sent | expected | what the user sees | source | HTTP | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(f"| `{r.id}` | {r.category} | {_cell(r.description)} | {r.expect} | "
                     f"{_cell(shorten(r.seen))} | {r.source} | "
                     f"{r.http_status if r.http_status is not None else '-'} | **{r.verdict}** |")
    lines += ["", "## Totals", "", "| verdict | cases |", "| --- | --- |"]
    lines += [f"| {v} | {t[v]} |" for v in VERDICTS]
    lines += [f"| **all** | **{len(results)}** |", ""]
    by_cat: dict[str, dict[str, int]] = {}
    for r in results:
        by_cat.setdefault(r.category, {v: 0 for v in VERDICTS})[r.verdict] += 1
    lines += ["Per category:", "", "| category | " + " | ".join(VERDICTS) + " |",
              "| --- |" + " --- |" * len(VERDICTS)]
    lines += [f"| {c} | " + " | ".join(str(n[v]) for v in VERDICTS) + " |" for c, n in by_cat.items()]
    lines += ["", "## Not clear yet", ""]
    bad = [r for r in results if r.verdict in ("unclear", "crash", "hang")]
    silent = [r for r in results if r.verdict == "ok" and r.expect == "error"]
    if not bad and not silent:
        lines.append("Every error is clear and every input that should be refused is.")
    for r in bad:
        lines.append(f"* `{r.id}` ({r.verdict}, {r.source}): {r.reason or 'see the table'}.")
    for r in silent:
        lines.append(f"* `{r.id}` (ok, but an error was expected): the input was accepted.")
    lines.append("")
    path.write_text("\n".join(lines))


def write_json(results: list[Result], meta: dict, path: Path) -> None:
    doc = {"meta": meta, "totals": totals(results), "cases": [asdict(r) for r in results]}
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def update_readme(results: list[Result], path: Path = README) -> bool:
    """Replace the count between the README's bad-input markers; False when the markers are missing."""
    text = path.read_text()
    begin, end = README_MARKERS
    if begin not in text or end not in text:
        return False
    t = totals(results)
    body = (f"{begin}{len(results)} bad inputs tried: {t['clear']} give a clear error, {t['unclear']} an unclear "
            f"one, {t['ok']} are accepted, {t['crash']} crash, {t['hang']} hang{end}")
    new = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: body, text, flags=re.S)
    path.write_text(new)
    return True


# ---------------------------------------------------------------------------------------------- main


def select(cases, only: Optional[str]):
    if not only:
        return list(cases)
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    picked = [c for c in cases if c.id in wanted or c.category in wanted]
    unknown = wanted - {c.id for c in picked} - {c.category for c in picked}
    if unknown:
        raise SystemExit(f"--only: no case or category {', '.join(sorted(unknown))}")
    return picked


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (with --base); default: start one")
    parser.add_argument("--base", type=Path, help="the running server's base folder")
    parser.add_argument("--only", help="comma-separated case ids or categories (then nothing is written)")
    parser.add_argument("--standin", type=Path, help="folder of stand-in model files to reuse (built when missing)")
    parser.add_argument("--gpu", action="store_true", help="let the started server use a GPU (default: --cpu)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per case (default %(default)s)")
    parser.add_argument("--no-write", action="store_true", help="print the results only")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--json", type=Path, help="also write the results (JSON) here, e.g. with --only")
    args = parser.parse_args(argv)
    all_cases = cases_mod.CASES
    if args.list:
        for c in all_cases:
            print(f"{c.id:40s} {c.category:14s} {c.description}")
        return 0
    chosen = select(all_cases, args.only)
    write = not args.no_write and not args.only
    scratch = Path(tempfile.mkdtemp(prefix="vtoonify-bad-inputs-"))
    server = host_mod = None
    try:
        if args.url:
            if args.base is None:
                parser.error("--url needs --base (the server's base folder, for the model files and inputs)")
            base = args.base.resolve()
            client = Client(args.url)
        else:
            base = scratch / "base"
            host_mod, server = start_server(base, args.gpu)
            client = Client(server.url)
            print(f"ComfyUI at {server.url}, base {base}", file=sys.stderr)
        standin_dir = (args.standin or scratch / "standin").resolve()
        ctx = cases_mod.prepare(base, standin_dir, scratch / "outside", roots=[ROOT, scratch])
        info = client.get_json("/object_info")

        def restart() -> Client:
            nonlocal server
            if server is None:
                raise ServerGone("the server died and was not started by this script")
            server.stop()
            _, server = start_server(base, args.gpu)
            return Client(server.url)

        campaign = Campaign(client, ctx, info, restart=restart if server else None,
                            log=lambda s: print(s, file=sys.stderr, flush=True), default_timeout=args.timeout)
        results = campaign.run(chosen)
        meta = {"date": datetime.date.today().isoformat(), "comfyui_version": comfy_version(campaign.client),
                "device": "CPU" if not args.gpu else "GPU if the host's torch sees one", "command": COMMAND,
                "cases": len(results)}
        print(summary_line(results))
        if args.json:
            write_json(results, meta, args.json)
        if write:
            write_markdown(results, meta, DOCS_MD)
            write_json(results, meta, DOCS_JSON)
            if not update_readme(results):
                print(f"README.md has no {README_MARKERS[0]} marker: count not updated", file=sys.stderr)
            print(f"wrote {DOCS_MD.relative_to(ROOT)} and {DOCS_JSON.relative_to(ROOT)}")
        return 0 if totals(results)["crash"] == totals(results)["hang"] == 0 else 1
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
