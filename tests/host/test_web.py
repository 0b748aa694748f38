"""The web UI (issue 7): ``/vtoonify/`` routes and ``web/js/vtoonify.js``.

* In-process, with the fake ComfyUI of ``tests/comfy_stub.py``: the handler functions of
  ``nodes/routes.py`` (allow-list, path tricks, a download with ``huggingface_hub`` replaced by a
  fake, style names) - the real server process cannot be given a fake ``huggingface_hub``.
* Real ComfyUI 0.30 server: the same refusals over HTTP (nothing written under ``models/``), the
  status listing.
* Real frontend in Chromium: the extension loads without console errors, the status panel of
  Load VToonify Model, and the style picker of Extract Style Code listing the names of a test
  checkpoint's ``exstyle_code.npy`` (screenshot ``tests/host/artifacts/style_picker.png``); a
  missing file that is on Google Drive only has a link to its Drive folder and the path to save it
  to instead of a download button (screenshots ``tests/host/artifacts/status_drive_only*.png``).
"""
from __future__ import annotations

import io
import json
import os
import sys
import time
import types
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TEST_FOLDER = "vtoonify_d_webtest"  # not an official name: other host tests place those
TEST_CHECKPOINT = f"{TEST_FOLDER}/vtoonify_s_d.pt"
TEST_STYLES = ["webtest_alpha.png", "webtest_beta.png", "webtest_gamma.png", "webtest_delta.jpg"]

#: names the download route must refuse (other files, traversal, absolute, encoded, backslashes)
BAD_NAMES = [
    "../encoder.pt", "../../etc/passwd", "vtoonify_d_cartoon/../../x.pt", "/etc/passwd", "/encoder.pt",
    "%2e%2e%2fencoder.pt", "%2e%2e/%2e%2e/etc/passwd", "..%2f..%2fencoder.pt", "vtoonify_d_cartoon%2fvtoonify_s_d.pt",
    "vtoonify_d_cartoon\\vtoonify_s_d.pt", "..\\..\\encoder.pt", "C:\\Windows\\x.pt", "encoder.pt/", "./encoder.pt",
    "vtoonify_d_cartoon/./vtoonify_s_d.pt", "vtoonify_d_cartoon//vtoonify_s_d.pt", " encoder.pt", "encoder.pt\x00.txt",
    "ENCODER.PT", "vtoonify_d_cartoon/vtoonify.pt", "vtoonify_d_cartoon/generator.pt", "stylegan2-ffhq-config-f.pt",
    "vtoonify_d_nosuchstyle/vtoonify_s_d.pt", "", None, 42, ["encoder.pt"], {"name": "encoder.pt"},
]

#: the official files on Google Drive only, with their Drive folder (README of williamyang1991/VToonify,
#: "Pre-trained Models"): the download route refuses them, the panel links to the folder instead
DRIVE_ONLY = {
    "vtoonify_d_caricature/vtoonify_s_d.pt": "https://drive.google.com/drive/folders/12TzTQqwBedsYX3kE_420mdTbWl9lwv4Y",
    "vtoonify_d_cartoon/vtoonify_s_d_c.pt": "https://drive.google.com/drive/folders/1DuZfXt6b_xhTAQSN0D8m7N1np0Web0Ky",
    "vtoonify_d_illustration/vtoonify_s_d.pt":
        "https://drive.google.com/drive/folders/1LQGNMDEHM70nOhm3-xY228YpJNlPnf_s",
    "vtoonify_t_arcane/vtoonify.pt": "https://drive.google.com/drive/folders/1OXU95BOCCT0f6pGbwQ4yQ1EHb2LPd2yb",
    "vtoonify_t_caricature/vtoonify.pt": "https://drive.google.com/drive/folders/1ReRxttV-macgV3epC61qg4TQ3FGAhGqG",
    "vtoonify_t_cartoon/vtoonify.pt": "https://drive.google.com/drive/folders/1FFtTVgiDKZ_InnwUJLDuA1wfghZp41nX",
    "vtoonify_t_comic/vtoonify.pt": "https://drive.google.com/drive/folders/1KvawsOXzKgwDM3Z27sagO_KGE_Kc5GZS",
    "vtoonify_t_pixar/vtoonify.pt": "https://drive.google.com/drive/folders/19N4ddcTXhXbTEayTbrFc533EktbhOXMz",
}
#: files no other host test places in the shared server's models/vtoonify (so missing in the browser test)
DRIVE_ONLY_MISSING = "vtoonify_t_pixar/vtoonify.pt"
DRIVE_ONLY_MISSING_2 = "vtoonify_d_caricature/vtoonify_s_d.pt"
HUB_MISSING = "vtoonify_d_pixar/vtoonify_s052_d0.5.pt"


def check_hosting(files: list[dict]) -> None:
    """Every file of a /vtoonify/models listing says where it is: Hugging Face (downloadable) or Google
    Drive only, with its Drive folder and the path under models/vtoonify to save it to."""
    assert len(files) == 32
    for f in files:
        name = f["name"]
        assert f["path"] == f"models/vtoonify/{name}", f
        assert f["drive_url"].startswith("https://drive.google.com/drive/folders/"), f
        if name in DRIVE_ONLY:
            assert f["downloadable"] is False and f["host"] == "google drive" and f["drive_url"] == DRIVE_ONLY[name], f
        else:
            assert f["downloadable"] is True and f["host"] == "huggingface", f
    by_name = {f["name"]: f for f in files}
    assert set(DRIVE_ONLY) <= set(by_name)
    # a Hugging Face file of a style folder: that style's Drive folder too (the release has it there as well)
    assert by_name["vtoonify_d_arcane/vtoonify_s_d.pt"]["drive_url"] == \
        "https://drive.google.com/drive/folders/1MpEqS26Q1ngTPeex_4MN9qOJxfXKH-k-"
    assert by_name["vtoonify_d_cartoon/exstyle_code.npy"]["drive_url"] == DRIVE_ONLY["vtoonify_d_cartoon/vtoonify_s_d_c.pt"]


def check_drive_only_refusal(status: int, body: dict, name: str) -> None:
    assert status == 409, (name, status, body)
    assert "Google Drive only" in body["error"] and DRIVE_ONLY[name] in body["error"], body
    assert f"models/vtoonify/{name}" in body["error"], body
    assert body["drive_url"] == DRIVE_ONLY[name] and body["path"] == f"models/vtoonify/{name}"


def write_exstyles(path: Path, names: list[str]) -> Path:
    """An ``exstyle_code.npy`` in the official format (a pickled dict name -> (1, 18, 512) float32)."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, {n: rng.standard_normal((1, 18, 512)).astype(np.float32) for n in names}, allow_pickle=True)
    return path


def snapshot(root: Path) -> dict:
    """Every entry under ``root`` (not following links) with its size and modification time."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, p.is_symlink())
    return out


# ---------------------------------------------------------------------------------------------- in-process


@pytest.fixture(scope="module")
def routes_env(fake_comfy_empty):
    """The pack's routes module under the fake ComfyUI (tests/conftest.py) with an empty models/vtoonify:
    (routes module, that folder)."""
    routes = fake_comfy_empty.module("nodes.routes")
    assert routes.REGISTERED is False  # no server here: the handlers are plain functions
    return routes, fake_comfy_empty.models


class FakeHub(types.ModuleType):
    """Stands for huggingface_hub: ``hf_hub_download`` writes the file (in three pieces) where the
    real one would (``local_dir/filename``) and records the call."""

    def __init__(self, fail: bool = False):
        super().__init__("huggingface_hub")
        self.calls: list[dict] = []
        self.fail = fail

    def hf_hub_download(self, repo_id, filename, local_dir=None, **kwargs):
        self.calls.append({"repo_id": repo_id, "filename": filename, "local_dir": local_dir, **kwargs})
        if self.fail:
            raise OSError("network unreachable (fake)")
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            for _ in range(3):
                f.write(b"x" * 1000)
                f.flush()
                time.sleep(0.6)
        return str(target)

    def hf_hub_url(self, repo_id, filename):
        return f"https://huggingface.co/{repo_id}/resolve/main/{filename}"

    def get_hf_file_metadata(self, url):
        return types.SimpleNamespace(size=3000)


def test_allow_list_is_the_official_files(routes_env):
    routes, _ = routes_env
    names = routes.allowed_names()
    expected = {"encoder.pt", "faceparsing.pth"}
    expected |= {f"vtoonify_t_{s}/vtoonify.pt" for s in ("cartoon", "caricature", "arcane", "comic", "pixar")}
    for s in ("cartoon", "caricature", "arcane", "comic", "pixar", "illustration"):
        expected |= {f"vtoonify_d_{s}/vtoonify_s_d.pt", f"vtoonify_d_{s}/exstyle_code.npy"}
    # the other VToonify-D variants of the release (fixed style / fixed degree / colour transfer)
    expected |= {"vtoonify_d_arcane/vtoonify_s000_d0.5.pt", "vtoonify_d_arcane/vtoonify_s077_d0.5.pt",
                 "vtoonify_d_caricature/vtoonify_s039_d0.5.pt", "vtoonify_d_caricature/vtoonify_s068_d0.5.pt",
                 "vtoonify_d_cartoon/vtoonify_s_d_c.pt", "vtoonify_d_cartoon/vtoonify_s026_d0.5.pt",
                 "vtoonify_d_cartoon/vtoonify_s299_d0.5.pt", "vtoonify_d_pixar/vtoonify_s052_d0.5.pt"}
    expected |= {f"vtoonify_d_illustration/vtoonify_s{i}_d_c.pt" for i in ("004", "009", "043", "054", "086")}
    assert set(names) == expected and len(names) == len(expected) == 32


def test_handlers_refuse_names_outside_the_allow_list(routes_env, monkeypatch):
    routes, folder = routes_env
    hub = FakeHub()
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    before = snapshot(folder.parent)
    states = routes.DOWNLOADS.states()
    for name in BAD_NAMES:
        status, body = routes.request_download(name)
        assert status == 400, (name, status, body)
        assert "not an official VToonify file name" in body["error"]
    time.sleep(0.2)
    assert hub.calls == [] and snapshot(folder.parent) == before and routes.DOWNLOADS.states() == states
    for name in ("../x.pt", "/etc/passwd", "%2e%2e%2fx.pt", "a\\b.pt", None):
        assert routes.style_names(name)[0] == 400
        assert routes.style_names("vtoonify_d_cartoon/vtoonify_s_d.pt", name)[0] == 400


def test_download_with_a_fake_hub(routes_env, monkeypatch):
    routes, folder = routes_env
    hub = FakeHub()
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    seen = []
    monkeypatch.setattr(routes, "_notify", lambda state: seen.append(dict(state)))
    name = "vtoonify_d_arcane/exstyle_code.npy"
    status, state = routes.request_download(name)
    assert status == 200 and state["status"] in ("queued", "downloading") and state["name"] == name
    assert routes.request_download(name)[1]["status"] in ("queued", "downloading")  # not queued twice
    routes.DOWNLOADS.wait(30)
    final = routes.DOWNLOADS.states()[name]
    assert final["status"] == "done" and final["bytes"] == final["total"] == 3000 and final["error"] is None
    assert hub.calls == [{"repo_id": "PKUWilliamYang/VToonify", "filename": f"models/{name}",
                          "local_dir": hub.calls[0]["local_dir"]}]
    assert Path(hub.calls[0]["local_dir"]).parent == folder  # a scratch folder inside models/vtoonify
    assert (folder / name).read_bytes() == b"x" * 3000
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # scratch removed
    statuses = [s["status"] for s in seen]
    assert statuses[0] == "downloading" and statuses[-1] == "done"
    assert any(s["status"] == "downloading" and 0 < s["bytes"] < 3000 for s in seen), seen  # progress
    assert routes.request_download(name) == (200, {"name": name, "status": "present"})
    files = {f["name"]: f for f in routes.model_status()[1]["files"]}
    assert files[name]["present"] and not files["encoder.pt"]["present"]
    assert files[name]["role"] == "exemplar style codes of vtoonify_d_arcane"
    # a failing download is reported and leaves nothing behind
    monkeypatch.setitem(sys.modules, "huggingface_hub", FakeHub(fail=True))
    routes.request_download("faceparsing.pth")
    routes.DOWNLOADS.wait(30)
    failed = routes.DOWNLOADS.states()["faceparsing.pth"]
    assert failed["status"] == "error" and failed["error"].startswith("could not download models/faceparsing.pth")
    assert not (folder / "faceparsing.pth").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_status_says_where_each_file_is_and_drive_only_is_refused(routes_env, monkeypatch):
    routes, folder = routes_env
    files = routes.model_status()[1]["files"]
    check_hosting(files)
    assert {f["name"] for f in files if f["downloadable"]} == set(routes.official.DOWNLOADABLE)
    for name, url in routes.official.DRIVE_FOLDERS.items():  # the module's table is the README's
        assert all(u == url for n, u in DRIVE_ONLY.items() if n.startswith(name + "/"))
    hub = FakeHub()
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    before, states = snapshot(folder.parent), routes.DOWNLOADS.states()
    for name in DRIVE_ONLY:
        check_drive_only_refusal(*routes.request_download(name), name)
    time.sleep(0.2)
    assert hub.calls == [] and snapshot(folder.parent) == before and routes.DOWNLOADS.states() == states


def test_style_names_handler(routes_env):
    routes, folder = routes_env
    write_exstyles(folder / TEST_FOLDER / "exstyle_code.npy", TEST_STYLES)
    (folder / TEST_CHECKPOINT).write_bytes(b"not read by the route")
    (folder / "vtoonify_t_test").mkdir()
    (folder / "vtoonify_t_test" / "vtoonify.pt").write_bytes(b"-")
    status, body = routes.style_names(TEST_CHECKPOINT)
    assert status == 200 and body["names"] == TEST_STYLES and body["available"]
    assert body["exstyle"] == f"{TEST_FOLDER}/exstyle_code.npy"
    status, body = routes.style_names(TEST_CHECKPOINT, f"{TEST_FOLDER}/exstyle_code.npy")
    assert status == 200 and body["names"] == TEST_STYLES
    assert routes.style_names(TEST_CHECKPOINT, "none")[1]["names"] == []
    status, body = routes.style_names("vtoonify_t_test/vtoonify.pt")
    assert status == 200 and body["names"] == [] and not body["available"]
    status, body = routes.style_names("vtoonify_d_pixar/vtoonify_s_d.pt")  # official, not downloaded
    assert status == 200 and not body["available"] and "download it first" in body["note"]
    assert routes.style_names(f"{TEST_FOLDER}/../{TEST_CHECKPOINT}")[0] == 400
    assert routes.style_names(str(folder / TEST_CHECKPOINT))[0] == 400  # absolute path
    (folder / TEST_FOLDER / "exstyle_code.npy").write_bytes(b"\x93NUMPY broken")
    assert routes.style_names(TEST_CHECKPOINT)[0] == 422


# ---------------------------------------------------------------------------------------------- real server


@pytest.fixture(scope="module")
def web_server(comfy_server, tmp_path_factory, vtoonify_d_path):
    """The real server with a test checkpoint folder (stand-in weights, 4 named exemplar styles)."""
    source = tmp_path_factory.mktemp("web_models_src")
    folder = source / TEST_FOLDER
    folder.mkdir()
    os.symlink(vtoonify_d_path, folder / "vtoonify_s_d.pt")
    write_exstyles(folder / "exstyle_code.npy", TEST_STYLES)
    comfy_server.add_models(source)
    return comfy_server


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def post(server, path: str, payload, content_type: str = "application/json"):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, body = server.request("POST", path, data, {"Content-Type": content_type})
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def test_server_refuses_bad_names_and_writes_nothing(web_server):
    root = web_server.base / "models"
    before = snapshot(root)
    for name in BAD_NAMES:
        for prefix in ("", "/api"):
            status, body = post(web_server, prefix + "/vtoonify/download", {"name": name})
            assert status == 400, (name, status, body)
    # the name never comes from the URL, and a non-JSON body is refused
    for path in ("/vtoonify/download?name=%2e%2e%2fencoder.pt", "/vtoonify/download?name=encoder.pt"):
        assert post(web_server, path, {})[0] == 400
    assert post(web_server, "/vtoonify/download", b"name=encoder.pt", "application/x-www-form-urlencoded")[0] == 415
    assert post(web_server, "/vtoonify/download", b"{not json")[0] == 400
    for path in ("/vtoonify/download/..%2F..%2Fencoder.pt", "/vtoonify/download/%2e%2e%2fencoder.pt",
                 "/vtoonify/..%2Fdownload"):
        assert 400 <= post(web_server, path, {"name": "encoder.pt"})[0] < 500, path
    assert web_server.request("GET", "/vtoonify/download")[0] in (404, 405)  # POST only
    # official, but on Google Drive only: refused with the Drive folder, nothing started
    for name in DRIVE_ONLY:
        if not (root / "vtoonify" / name).exists():
            check_drive_only_refusal(*post(web_server, "/vtoonify/download", {"name": name}), name)
    for query in ("checkpoint=..%2F..%2Fetc%2Fpasswd", "checkpoint=%2Fetc%2Fpasswd",
                  "checkpoint=" + urllib.parse.quote(f"{TEST_FOLDER}\\vtoonify_s_d.pt"),
                  f"checkpoint={TEST_CHECKPOINT}&exstyle=..%2F..%2Fx.npy", "checkpoint="):
        assert web_server.request("GET", "/vtoonify/styles?" + query)[0] == 400, query
    time.sleep(1.0)  # a download thread, had one started, would have created its scratch folder by now
    assert snapshot(root) == before
    downloads = web_server.get_json("/vtoonify/downloads")["downloads"]
    assert not set(downloads) & ({n for n in BAD_NAMES if isinstance(n, str)} | set(DRIVE_ONLY))


def test_server_status_listing_and_styles(web_server):
    info = web_server.get_json("/vtoonify/models")
    root = web_server.base / "models" / "vtoonify"
    names = [f["name"] for f in info["files"]]
    assert len(names) == 32 and "encoder.pt" in names and "vtoonify_d_cartoon/exstyle_code.npy" in names
    for f in info["files"]:
        assert f["present"] == (root / f["name"]).is_file(), f
        assert f["role"]
    assert info["folder"] == "models/vtoonify" and info["required"] == ["encoder.pt", "faceparsing.pth"]
    check_hosting(info["files"])
    assert web_server.get_json("/api/vtoonify/models")["files"] == info["files"]
    styles = web_server.get_json("/vtoonify/styles?" + urllib.parse.urlencode({"checkpoint": TEST_CHECKPOINT}))
    assert styles["names"] == TEST_STYLES and styles["available"] is True


# ---------------------------------------------------------------------------------------------- real frontend


def test_extension_status_panel_and_style_picker(web_server, browser_page):
    page = browser_page.page
    loaded = page.evaluate("() => performance.getEntriesByType('resource').map(e => e.name)"
                           ".filter(n => n.endsWith('/js/vtoonify.js'))")
    assert len(loaded) == 1, "web/js/vtoonify.js was not loaded by the frontend"
    extensions = page.evaluate("() => (app.extensions || []).map(e => e.name).filter(n => n.startsWith('VToonify'))")
    assert extensions == ["VToonify.UI"], browser_page.console_errors
    made = page.evaluate("""async (ckpt) => {
        const load = LiteGraph.createNode('VToonifyLoadModel');
        load.pos = [120, 80];
        app.graph.add(load);
        load.widgets.find(w => w.name === 'checkpoint').value = ckpt;
        const extract = LiteGraph.createNode('VToonifyExtractStyle');
        extract.pos = [560, 80];
        app.graph.add(extract);
        load.connect(0, extract, 0);
        app.canvas.ds.offset = [0, 0];
        app.canvas.ds.scale = 1;
        app.graph.setDirtyCanvas(true, true);
        return {load: load.id, extract: extract.id,
                widgets: extract.widgets.map(w => w.name), options: load.widgets.find(w => w.name === 'checkpoint').options.values};
    }""", TEST_CHECKPOINT)
    assert TEST_CHECKPOINT in made["options"]
    assert "vtoonify_style_picker" in made["widgets"]
    # status panel of Load VToonify Model
    page.wait_for_function("() => document.querySelector('.vtoonify_status .vtoonify-summary')", timeout=20000)
    summary = page.locator(".vtoonify_status .vtoonify-summary").inner_text()
    info = web_server.get_json("/vtoonify/models")
    present = sum(f["present"] for f in info["files"])
    assert summary == f"models/vtoonify: {present} of 32 official files present"
    encoder_row = page.locator('.vtoonify_status .vtoonify-file[data-name="encoder.pt"]').first
    expected = "present" if (web_server.base / "models" / "vtoonify" / "encoder.pt").is_file() else "missing"
    assert expected in encoder_row.get_attribute("class")
    if expected == "missing":
        assert encoder_row.locator("button.vtoonify-download").count() == 1
    # the picker: the names of the test checkpoint's exstyle_code.npy
    page.locator("button.vtoonify-pick-style").first.click()
    page.wait_for_selector(".vtoonify-style-picker .vtoonify-style-item", timeout=20000)
    items = page.locator(".vtoonify-style-picker .vtoonify-style-item").all_inner_texts()
    assert items == [f"{i}: {n}" for i, n in enumerate(TEST_STYLES)]
    page.locator(".vtoonify-style-search").fill("gam")
    assert page.locator(".vtoonify-style-picker .vtoonify-style-item").all_inner_texts() == ["2: webtest_gamma.png"]
    page.locator(".vtoonify-style-search").fill("")
    browser_page.screenshot("style_picker")  # the full list, open over the graph
    page.locator(".vtoonify-style-picker .vtoonify-style-item", has_text="webtest_delta").click()
    assert page.locator(".vtoonify-style-picker").count() == 0
    style_id = page.evaluate("(id) => app.graph.getNodeById(id).widgets.find(w => w.name === 'style_id').value",
                             made["extract"])
    assert style_id == 3
    page.wait_for_function("() => document.querySelector('.vtoonify-style-name')?.textContent"
                           " === 'style 3: webtest_delta.jpg'", timeout=10000)
    # the panels are neither saved in the workflow nor sent with the prompt
    prompt = browser_page.graph_to_prompt()
    api = prompt["output"]
    assert set(api[str(made["extract"])]["inputs"]) == {"vtoonify_model", "style_id", "color_transfer"}  # no image
    assert "vtoonify_status" not in api[str(made["load"])]["inputs"]
    nodes = {str(n["id"]): n for n in prompt["workflow"]["nodes"]}
    assert len(nodes[str(made["load"])]["widgets_values"]) == 7
    assert nodes[str(made["extract"])]["widgets_values"] == [3, False]
    assert browser_page.unexpected_console_errors() == [], "\n".join(browser_page.console_errors)
    assert browser_page.external_requests == []


def test_status_panel_links_drive_only_files(web_server, browser_page):
    """A missing Drive-only file: a link to its Drive folder (new tab, noopener) and the path to save it
    to, no download button; a missing Hugging Face file keeps its button."""
    page = browser_page.page
    root = web_server.base / "models" / "vtoonify"
    for name in (DRIVE_ONLY_MISSING, DRIVE_ONLY_MISSING_2, HUB_MISSING):
        assert not (root / name).exists(), f"{name} should be missing for this test"
    page.evaluate("""(ckpt) => {
        const load = LiteGraph.createNode('VToonifyLoadModel');
        load.pos = [120, 80];
        app.graph.add(load);
        const w = load.widgets.find(w => w.name === 'checkpoint');
        w.value = ckpt;
        w.callback?.(ckpt);
        app.canvas.ds.offset = [0, 0];
        app.canvas.ds.scale = 1;
        app.graph.setDirtyCanvas(true, true);
    }""", DRIVE_ONLY_MISSING)
    row = page.locator(f'.vtoonify_status .vtoonify-file[data-name="{DRIVE_ONLY_MISSING}"]')
    row.wait_for(state="visible", timeout=20000)
    assert row.count() == 1 and "missing" in row.get_attribute("class")
    assert row.locator("button").count() == 0
    link = row.locator("a.vtoonify-drive-link")
    assert link.count() == 1 and link.is_visible()
    assert link.get_attribute("href") == DRIVE_ONLY[DRIVE_ONLY_MISSING]
    assert link.get_attribute("target") == "_blank"
    assert "noopener" in link.get_attribute("rel").split()
    assert row.locator(".vtoonify-target-path").inner_text() == f"models/vtoonify/{DRIVE_ONLY_MISSING}"
    assert "Google Drive only" in row.inner_text()
    # the node grows to show the whole panel (the list of other files closed): nothing scrolled away
    page.wait_for_function("() => { const p = document.querySelector('.vtoonify_status');"
                           " return p && p.scrollHeight <= p.clientHeight + 1; }", timeout=10000)
    node_height = "() => app.graph._nodes.find(n => n.type === 'VToonifyLoadModel').size[1]"
    height = page.evaluate(node_height)
    for _ in range(2):  # re-rendering the same content does not grow the node any further
        page.evaluate("() => app.graph._nodes.find(n => n.type === 'VToonifyLoadModel').vtoonifyRefresh()")
        page.wait_for_timeout(300)
    assert page.evaluate(node_height) == height
    browser_page.screenshot("status_drive_only")
    # the other missing files: Drive-only ones linked, Hugging Face ones with their button
    page.locator(".vtoonify_status details > summary").click()
    page.evaluate("() => app.graph._nodes.find(n => n.type === 'VToonifyLoadModel').vtoonifyRefresh()")
    page.wait_for_timeout(500)
    assert page.locator(".vtoonify_status details").get_attribute("open") is not None  # stays open on re-render
    other = page.locator(f'.vtoonify_status details .vtoonify-file[data-name="{DRIVE_ONLY_MISSING_2}"]')
    assert other.locator("button").count() == 0
    assert other.locator("a.vtoonify-drive-link").get_attribute("href") == DRIVE_ONLY[DRIVE_ONLY_MISSING_2]
    hub_row = page.locator(f'.vtoonify_status details .vtoonify-file[data-name="{HUB_MISSING}"]')
    assert hub_row.locator("button.vtoonify-download").count() == 1
    assert hub_row.locator("a").count() == 0 and "Google Drive" not in hub_row.inner_text()
    # every missing row: a button exactly when the file is on Hugging Face
    rows = page.evaluate("""() => [...document.querySelectorAll('.vtoonify_status .vtoonify-file.missing')].map(r => ({
        name: r.dataset.name, buttons: r.querySelectorAll('button.vtoonify-download').length,
        href: r.querySelector('a.vtoonify-drive-link')?.getAttribute('href') ?? null}))""")
    assert len(rows) >= 25
    for r in rows:
        if r["name"] in DRIVE_ONLY:
            assert r == {"name": r["name"], "buttons": 0, "href": DRIVE_ONLY[r["name"]]}, r
        else:
            assert r["buttons"] == 1 and r["href"] is None, r
    other.scroll_into_view_if_needed()
    browser_page.screenshot("status_drive_only_list")
    # the link is clickable over the canvas and opens a new tab (this test refuses requests off this machine)
    with page.context.expect_page(timeout=10000) as tab:
        link.click()
    tab.value.close()
    deadline = time.monotonic() + 10
    while DRIVE_ONLY[DRIVE_ONLY_MISSING] not in browser_page.external_requests and time.monotonic() < deadline:
        time.sleep(0.1)
    assert browser_page.external_requests == [DRIVE_ONLY[DRIVE_ONLY_MISSING]]
    assert page.url.startswith(web_server.url)  # the UI stays where it was
    assert browser_page.unexpected_console_errors() == [], "\n".join(browser_page.console_errors)


# ---------------------------------------------------------------------------------------------- a prompt


def style_control_prompt(server, psp_path, bisenet_path) -> dict:
    """Extract Style Code + Exemplar Style From Image -> Style Mix -> Style Keyframes -> Stylize Frames ->
    PreviewImage (node ids: 3 Extract, 4 Exemplar, 5 Mix, 6 Keyframes, 9 Stylize, 10 Preview), on a 256 px
    portrait uploaded to the server and a three-frame 32 px clip of it."""
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    root = server.base / "models" / "vtoonify"
    for name, src in (("encoder.pt", psp_path), ("faceparsing.pth", bisenet_path)):
        if not (root / name).exists():
            os.symlink(src, root / name)
    portrait = np.asarray(Image.fromarray(skdata.astronaut()).resize((256, 256), Image.BILINEAR))
    uploaded = server.upload_image(png_bytes(portrait), "vtoonify_web_portrait.png")
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": uploaded["name"]}},
        "2": {"class_type": "VToonifyLoadModel", "inputs": {
            "checkpoint": TEST_CHECKPOINT, "style_encoder": "encoder.pt", "face_parser": "faceparsing.pth",
            "exstyle": "auto", "device": "cpu", "precision": "fp32", "download_missing": False}},
        "3": {"class_type": "VToonifyExtractStyle", "inputs": {
            "vtoonify_model": ["2", 0], "image": ["1", 0], "style_id": 2, "color_transfer": True}},
        "4": {"class_type": "VToonifyExemplarStyle", "inputs": {
            "vtoonify_model": ["2", 0], "reference": ["1", 0], "color_transfer": True, "refine_steps": 0,
            "learning_rate": 0.05, "refine_resolution": "32", "loss": "l2"}},
        "5": {"class_type": "VToonifyStyleMix", "inputs": {
            "style_a": ["3", 0], "style_b": ["4", 0], "blend": 0.5, "layers": "colour (7-17)", "first_layer": 0,
            "last_layer": 17}},
        "6": {"class_type": "VToonifyStyleKeyframes", "inputs": {
            "style_a": ["3", 0], "style_b": ["5", 0], "keyframes": "0:A@0.2, 2:B@0.8"}},
        "7": {"class_type": "ImageScale", "inputs": {
            "image": ["1", 0], "upscale_method": "area", "width": 32, "height": 32, "crop": "disabled"}},
        "8": {"class_type": "RepeatImageBatch", "inputs": {"image": ["7", 0], "amount": 3}},
        "9": {"class_type": "VToonifyStylizeFrames", "inputs": {
            "vtoonify_model": ["2", 0], "images": ["8", 0], "style": ["6", 0], "style_degree": 0.5,
            "crop_mode": "whole frame (pad to 8)", "batch_size": 2}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["9", 0]}},
    }


def test_style_control_prompt_runs_with_previews(web_server, psp_path, bisenet_path):
    """Extract Style Code + Exemplar Style From Image -> Style Mix -> Style Keyframes -> Stylize Frames in the
    real server (Style Keyframes' VTOONIFY_KEYFRAMES into Stylize Frames' style); Extract, Exemplar and
    Stylize show a preview on their node (binary preview messages) when the prompt asks for previews."""
    from PIL import Image

    prompt = style_control_prompt(web_server, psp_path, bisenet_path)
    web_server.ws.clear()
    # previews are sent when the prompt asks for them (the server's default preview method is none)
    entry = web_server.wait(web_server.post_prompt(prompt, {"preview_method": "auto"}), timeout=300)
    images = web_server.output_images(entry, "10")
    assert len(images) == 3
    for image in images:
        data = web_server.view(image["filename"], image["subfolder"], image["type"])
        assert Image.open(io.BytesIO(data)).size == (128, 128)
    # binary previews, each attributed to the node executing when it arrived
    current, previews = None, []
    for msg in web_server.messages():
        if msg["type"] == "executing":
            current = msg["data"].get("node")
        elif msg["type"] == "binary":
            previews.append(current)
    assert {"3", "4", "9"} <= set(previews), previews


def test_keyframes_are_refused_where_a_single_style_is_needed(web_server, psp_path, bisenet_path):
    """ComfyUI's own validation refuses Style Keyframes' output in the single-code inputs when the prompt is
    queued (HTTP 400, return_type_mismatch naming the input): Style Mix; Stylize Video File takes them."""
    prompt = style_control_prompt(web_server, psp_path, bisenet_path)

    def refused(prompt: dict, node_id: str, input_name: str) -> None:
        with pytest.raises(AssertionError) as info:  # conftest.PromptRejected
            web_server.post_prompt(prompt)
        assert getattr(info.value, "status", None) == 400, info.value
        errors = info.value.body["node_errors"][node_id]["errors"]
        assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == \
            [("return_type_mismatch", input_name)], errors
        assert "VTOONIFY_KEYFRAMES" in errors[0]["details"], errors

    into_mix = json.loads(json.dumps(prompt))
    into_mix["5"]["inputs"]["style_a"] = ["6", 0]
    into_mix["6"]["inputs"]["style_b"] = ["4", 0]  # no cycle: Keyframes from Extract and Exemplar
    into_mix["9"]["inputs"]["style"] = ["5", 0]
    refused(into_mix, "5", "style_a")
    into_video = {k: v for k, v in prompt.items() if k not in ("9", "10")}
    into_video["11"] = {"class_type": "VToonifyStylizeVideoFile", "inputs": {
        "vtoonify_model": ["2", 0], "video_path": prompt["1"]["inputs"]["image"],  # a file of input/
        "output_name": "vtoonify/keyframes.mp4",
        "style_degree": 0.5, "batch_size": 2, "crop_mode": "whole frame (pad to 8)", "style": ["6", 0]}}
    # the video node takes keyframes (they follow the video's frame numbers): no type refusal for its style
    try:  # queued (a still image as the video then fails at run time, which is not what this checks)
        web_server.run_prompt(into_video, timeout=120, check=False)
    except AssertionError as info:  # a refusal when queued would land here
        raise AssertionError(f"Style Keyframes into Stylize Video File was refused: {info}") from None


# Saves the graph as the frontend does, rewritten as a workflow saved before Style Keyframes had its own
# type: its output slot, Stylize Frames' style input and the link between them typed VTOONIFY_STYLE.
SAVE_AS_OLD_JS = r"""
(ids) => {
  const wf = window.app.graph.serialize();
  for (const node of wf.nodes) {
    if (node.id === ids.keyframes) node.outputs[0].type = 'VTOONIFY_STYLE';
    if (node.id === ids.stylize) node.inputs.find((i) => i.name === 'style').type = 'VTOONIFY_STYLE';
  }
  const link = wf.links.find((l) => l[1] === ids.keyframes && l[3] === ids.stylize);
  link[5] = 'VTOONIFY_STYLE';
  return wf;
}
"""

# The types the loaded graph holds (Style Keyframes' output, its link to Stylize Frames), then what the graph
# lets the user connect: that output into Stylize Frames' style, and into Style Mix's style_a.
CONNECT_JS = r"""
(ids) => {
  const graph = window.app.graph;
  const kf = graph.getNodeById(ids.keyframes), mix = graph.getNodeById(ids.mix), st = graph.getNodeById(ids.stylize);
  const link = graph.serialize().links.find((l) => l[1] === ids.keyframes && l[3] === ids.stylize);
  return {
    output_type: kf.outputs[0].type, link_type: link[5],
    into_stylize: !!kf.connect(0, st, st.findInputSlot('style')),
    into_mix: !!kf.connect(0, mix, mix.findInputSlot('style_a')),
  };
}
"""


def test_saved_workflow_with_the_old_keyframes_link_loads_and_runs(web_server, browser_page, psp_path, bisenet_path):
    """A UI workflow saved when Style Keyframes' output was typed VTOONIFY_STYLE still loads in the real
    frontend, converts to the same prompt and runs. The frontend takes the output slot's type from the node
    definition on load, so it then wires the keyframes into Stylize Frames but not into Style Mix."""
    prompt = style_control_prompt(web_server, psp_path, bisenet_path)
    ids = {"keyframes": 6, "stylize": 9, "mix": 5}
    browser_page.evaluate("async (api) => { await window.app.loadApiJson(api, 'keyframes.json'); }", prompt)
    old = browser_page.evaluate(SAVE_AS_OLD_JS, ids)
    browser_page.load_graph(old)
    assert browser_page.page.locator("[role=dialog]").count() == 0, "loading the workflow opened a dialog"
    converted = browser_page.graph_to_prompt()["output"]
    assert converted["9"]["inputs"]["style"] == ["6", 0]
    assert {k: v["class_type"] for k, v in converted.items()} == {k: v["class_type"] for k, v in prompt.items()}
    entry = web_server.wait(browser_page.queue_prompt(), timeout=300)
    assert len(web_server.output_images(entry, "10")) == 3
    wiring = browser_page.evaluate(CONNECT_JS, ids)
    # the saved link keeps its type (it only colours the wire; /prompt checks the node's output type)
    assert wiring == {"output_type": "VTOONIFY_KEYFRAMES", "link_type": "VTOONIFY_STYLE", "into_stylize": True,
                      "into_mix": False}, wiring
    assert browser_page.unexpected_console_errors() == [], "\n".join(browser_page.console_errors)
