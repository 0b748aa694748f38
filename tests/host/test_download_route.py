"""Malformed bodies on ``POST /vtoonify/download`` through a real ComfyUI 0.30 server (issue 15, item 5).

Every body that is not a JSON object with a string ``name`` gets a 4xx with a JSON ``{"error": ...}``
(400, 413 above ``routes.MAX_BODY_BYTES``), never a 500: a 100000-level nested array used to end in a
RecursionError inside the handler. The server answers normally afterwards and nothing is written
under ``models/``.
"""
from __future__ import annotations

import http.client
import json
import time

import pytest
from test_web import snapshot

pytestmark = pytest.mark.slow

ROUTE = "/vtoonify/download"
MAX_BODY_BYTES = 16 * 1024  # nodes/routes.py MAX_BODY_BYTES

#: (label, body bytes, expected status, a piece of the error message)
MALFORMED = [
    ("nested array, 100000 levels", b"[" * 100_000 + b"]" * 100_000, 413, "larger than"),
    ("nested array under the size cap", b"[" * 8000 + b"]" * 8000, 400, "nested too deeply"),
    ("nested objects under the size cap", b'{"name": ' * 1500 + b"1" + b"}" * 1500, 400, "nested too deeply"),
    ("nested inside name", b'{"name": ' + b"[" * 8000 + b"]" * 8000 + b"}", 400, "nested too deeply"),
    ("not JSON", b"{not json", 400, "not valid JSON"),
    ("empty body", b"", 400, "not valid JSON"),
    ("plain text", b"encoder.pt", 400, "not valid JSON"),
    ("trailing garbage", b'{"name": "encoder.pt"} x', 400, "not valid JSON"),
    ("JSON array", b'["encoder.pt"]', 400, "JSON array, not an object"),
    ("JSON string", b'"encoder.pt"', 400, "JSON string, not an object"),
    ("JSON number", b"42", 400, "JSON number, not an object"),
    ("JSON null", b"null", 400, "JSON null, not an object"),
    ("missing name", b'{"file": "encoder.pt"}', 400, 'no "name"'),
    ("empty object", b"{}", 400, 'no "name"'),
    ("name null", b'{"name": null}', 400, '"name" is a JSON null'),
    ("name number", b'{"name": 42}', 400, '"name" is a JSON number'),
    ("name boolean", b'{"name": true}', 400, '"name" is a JSON boolean'),
    ("name array", b'{"name": ["encoder.pt"]}', 400, '"name" is a JSON array'),
    ("name object", b'{"name": {"name": "encoder.pt"}}', 400, '"name" is a JSON object'),
    ("huge body", json.dumps({"name": "x" * (1 << 20)}).encode(), 413, "larger than"),
    ("invalid UTF-8", b'{"name": "encoder.pt\xff"}', 400, "not UTF-8"),
    ("UTF-16", '{"name": "encoder.pt"}'.encode("utf-16"), 400, "not UTF-8"),
    ("lone surrogate escape", b'{"name": "\\ud800"}', 400, "not an official VToonify file name"),
    ("name not allowed", b'{"name": "../encoder.pt"}', 400, "not an official VToonify file name"),
]


def post_raw(server, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    status, answer = server.request("POST", ROUTE, body, {"Content-Type": content_type}, timeout=60)
    try:
        payload = json.loads(answer)
    except ValueError:
        raise AssertionError(f"not a JSON answer ({status}): {answer[:300]!r}") from None
    return status, payload


def post_chunked(server, chunks: list[bytes]) -> tuple[int, dict]:
    """POST with ``Transfer-Encoding: chunked`` (no Content-Length)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", ROUTE, body=iter(chunks), headers={"Content-Type": "application/json"},
                     encode_chunked=True)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def server_answers(server) -> None:
    assert server.get_json("/system_stats")["system"]["comfyui_version"] == "0.30.0"
    assert len(server.get_json("/vtoonify/models")["files"]) == 32


def test_every_malformed_body_is_a_4xx_with_a_message(comfy_server):
    root = comfy_server.base / "models"
    before = snapshot(root)
    log_before = len(comfy_server.log_text())
    seen = []
    for label, body, expected, message in MALFORMED:
        status, payload = post_raw(comfy_server, body)
        seen.append((label, status))
        assert status == expected, (label, status, payload)
        assert isinstance(payload.get("error"), str) and message in payload["error"], (label, payload)
        if expected == 400 and message != "not an official VToonify file name":
            assert '{"name": "<official file name>"}' in payload["error"], payload  # says what to send
    assert all(400 <= s < 500 for _, s in seen), seen
    # the same without a Content-Length: the size cap holds for a chunked body too
    status, payload = post_chunked(comfy_server, [b'{"name": "'] + [b"x" * 4096] * 64 + [b'"}'])
    assert status == 413 and "larger than" in payload["error"], payload
    status, payload = post_chunked(comfy_server, [b"[" * 4000, b"[" * 4000, b"]" * 8000])
    assert status == 400 and "nested too deeply" in payload["error"], payload
    # at the cap exactly: read and judged (an allow-list refusal, not 413)
    padded = b'{"name": "../x.pt"' + b" " * (MAX_BODY_BYTES - len(b'{"name": "../x.pt"') - 1) + b"}"
    assert len(padded) == MAX_BODY_BYTES
    assert post_raw(comfy_server, padded)[0] == 400
    assert post_raw(comfy_server, padded + b" ")[0] == 413
    # another content type: 415, with the same hint
    status, payload = post_raw(comfy_server, b"name=encoder.pt", "application/x-www-form-urlencoded")
    assert status == 415 and "application/json" in payload["error"], payload
    # the server is fine afterwards: it answers, and a well-formed request is judged as before
    server_answers(comfy_server)
    status, payload = post_raw(comfy_server, json.dumps({"name": "vtoonify_t_pixar/vtoonify.pt"}).encode())
    assert status == 409 and "Google Drive only" in payload["error"], payload
    time.sleep(0.5)
    assert snapshot(root) == before
    log = comfy_server.log_text()[log_before:]
    assert "RecursionError" not in log and "Error handling request" not in log, log[-3000:]


def test_wrong_methods_and_unknown_paths_get_json_that_says_what_to_send(comfy_server):
    """Under /vtoonify/ every request gets a JSON answer: the wrong method a 405 naming the right one,
    an unknown path a 404 listing the routes (before: 404 with an empty body, or aiohttp's plain text)."""
    cases = [("GET", "/vtoonify/download", 405, "use POST with a JSON body"),
             ("POST", "/vtoonify/models", 405, "use GET"),
             ("POST", "/vtoonify/styles", 405, "use GET"),
             ("GET", "/vtoonify/nothing", 404, "use one of GET /vtoonify/models"),
             ("DELETE", "/vtoonify/models/x", 404, "not a route of this pack")]
    for method, path, status, expect in cases:
        got, body = comfy_server.request(method, path, b"" if method != "GET" else None,
                                         {"Content-Type": "application/json"}, timeout=30)
        answer = json.loads(body)
        assert got == status, (method, path, got, answer)
        assert expect in answer.get("error", ""), (method, path, answer)
    # the real routes still answer
    assert isinstance(comfy_server.get_json("/vtoonify/models"), dict)
