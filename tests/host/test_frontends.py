"""The pack in two frontends (issue 20, items 5-7): 1.47.12, which ComfyUI 0.30 pins, and the newest one tested,
``comfy_host.NEW_FRONTEND`` (1.58.1), unpacked from its PyPI wheel by ``scripts/comfy_host.py setup`` and
served by a second real server through ComfyUI's ``--front-end-root``. In each, in headless Chromium:

* the web extension loads (``web/js/vtoonify.js``, extension ``VToonify.UI``) and every template of
  ``workflows/`` loads as the template browser loads it (``/api/workflow_templates/<pack>/<name>.json``),
  every node type known, with no console error;
* the help page of a node (``web/docs/``, generated from docs/nodes.md) shows in the selection toolbox's
  *Node Info* (both frontends' default) and in the node library's *Learn more* (the "?" of a node, in the
  library's classic design: the new design, the default of both, has no "?" per node). The locale page
  ``<NodeClass>/en.md`` answers first, so no 404 is logged (screenshots ``help_*.png``).

The second server also reads an ``extra_model_paths.yaml`` with a ``vtoonify:`` folder: the loader lists
the files of that folder and of ``models/vtoonify``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT, load_comfy_host, open_comfy_page

pytestmark = pytest.mark.slow

PINNED = "1.47.12"
HELP_NODE = "VToonifyStyleMix"
HELP_TITLE = "Style Mix"
#: what the help page says that the node's own description does not (the frontend falls back to that)
HELP_TEXT = "two codes made with the same model"
EXTRA_FILE = "vtoonify_d_extra/vtoonify_s_d.pt"
BASE_FILE = "vtoonify_d_base_only/vtoonify_s_d.pt"


@pytest.fixture(scope="module")
def new_frontend_server(comfy_server_factory, tmp_path_factory):
    """A second real server serving the newer frontend, with an extra_model_paths.yaml that defines a
    ``vtoonify`` folder (holding EXTRA_FILE); BASE_FILE is put in its own models/vtoonify."""
    host_module = load_comfy_host()
    root = host_module.ensure_frontend(host_module.setup(quiet=True), quiet=True)
    shared = tmp_path_factory.mktemp("shared_models")
    (shared / "vt" / Path(EXTRA_FILE).parent).mkdir(parents=True)
    (shared / "vt" / EXTRA_FILE).write_bytes(b"not read")
    config = shared / "extra_model_paths.yaml"
    config.write_text(f"shared:\n    base_path: {shared}\n    vtoonify: vt/\n")
    server = comfy_server_factory("frontend_new", extra=["--front-end-root", str(root),
                                                         "--extra-model-paths-config", str(config)])
    (server.base / "models" / "vtoonify" / Path(BASE_FILE).parent).mkdir(parents=True)
    (server.base / "models" / "vtoonify" / BASE_FILE).write_bytes(b"not read")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["pinned", "new"])
def frontend(request, comfy_server):
    """(server, expected frontend version) for the pinned and the newer frontend."""
    if request.param == "pinned":
        return comfy_server, PINNED
    return request.getfixturevalue("new_frontend_server"), load_comfy_host().NEW_FRONTEND[0]


def missing_input_errors(page, errors: list[str]) -> list[str]:
    """Errors of Load Image previews of template inputs that this server's input/ does not have (the
    examples are copied there when the pack ships them; a bare test server may lack them)."""
    missing = []
    for e in errors:
        m = re.search(r"/api/view\?[^ ]*filename=([^&\s)]+)", e)
        if m and "type=input" in e and not (page.server.base / "input" / m.group(1)).exists():
            missing.append(e)
    return missing


def open_help_from_toolbox(page) -> str:
    """Select a fresh HELP_NODE on the canvas and press the selection toolbox's Node Info; the help text."""
    page.evaluate("""(type) => {
        app.graph.clear();
        const node = LiteGraph.createNode(type);
        node.pos = [300, 200];
        app.graph.add(node);
        app.canvas.ds.offset = [0, 0];
        app.canvas.ds.scale = 1;
        app.canvas.selectNode(node);
        app.graph.setDirtyCanvas(true, true);
    }""", HELP_NODE)
    page.page.locator("[data-testid=info-button]").first.click(timeout=20000)
    return wait_help(page)


def wait_help(page) -> str:
    page.page.wait_for_function("(text) => [...document.querySelectorAll('.node-help-content')]"
                                ".some((e) => e.innerText.includes(text))", arg=HELP_TEXT, timeout=20000)
    return page.page.locator(".node-help-content", has_text=HELP_TEXT).first.inner_text()


def set_setting(server, name: str, value) -> None:
    server.post_json(f"/api/settings/{name}", value)


def test_extension_templates_and_help_page(frontend, chromium_browser, request):
    server, version = frontend
    templates = server.get_json("/api/workflow_templates")[server.pack_link.name]
    assert sorted(templates) == sorted(p.stem for p in (REPO_ROOT / "workflows").glob("*.json"))
    help_urls: list[tuple[str, int]] = []
    name = f"help_{version.replace('.', '_')}"
    with open_comfy_page(chromium_browser, server, request.node.name) as page:
        page.page.on("response", lambda r: help_urls.append((r.url.split(server.url, 1)[-1], r.status))
                     if "/docs/" in r.url else None)
        assert page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__") == version
        loaded = page.evaluate("() => performance.getEntriesByType('resource').map((e) => e.name)"
                               ".filter((n) => n.endsWith('/js/vtoonify.js')).length")
        assert loaded == 1, "web/js/vtoonify.js was not loaded"
        assert page.evaluate("() => app.extensions.map((e) => e.name).filter((n) => n.startsWith('VToonify'))") \
            == ["VToonify.UI"]
        # every template, fetched and loaded as the template browser does
        for title in templates:
            unknown = page.evaluate("""async ([pack, title]) => {
                const res = await fetch(`/api/workflow_templates/${pack}/${encodeURIComponent(title)}.json`);
                const wf = await res.json();
                await app.loadGraphData(wf, true, true, title);
                return wf.nodes.map((n) => n.type).filter((t) => !LiteGraph.registered_node_types[t]);
            }""", [server.pack_link.name, title])
            assert unknown == [], f"{title}: node types unknown to frontend {version}: {unknown}"
            page.close_dialogs()
        # the help page, from the selection toolbox (the default UI of both frontends)
        text = open_help_from_toolbox(page)
        assert text.startswith(HELP_TITLE) and "Outputs:" in text and "docs/nodes.md" in text, text[:500]
        page.screenshot(f"{name}_toolbox")
    docs = f"/extensions/{server.pack_link.name}/docs"
    assert (f"{docs}/{HELP_NODE}/en.md", 200) in help_urls, help_urls
    assert not [u for u in help_urls if u[1] != 200], help_urls
    errors = [e for e in page.unexpected_console_errors() if e not in missing_input_errors(page, page.console_errors)]
    assert errors == [], f"frontend {version}:\n" + "\n".join(page.console_errors)
    assert page.external_requests == []


def test_node_library_help_page(frontend, chromium_browser, request):
    """The node library's "?" (Learn more) of a node opens its help page; the library's classic design
    shows it (the new design, default in 1.47 and 1.58, shows a preview on hover and no "?")."""
    server, version = frontend
    set_setting(server, "Comfy.NodeLibrary.NewDesign", False)
    try:
        with open_comfy_page(chromium_browser, server, request.node.name) as page:
            page.page.get_by_role("button", name=re.compile(r"^Node Library")).first.click()
            page.page.locator("input[placeholder*=earch]").first.fill(HELP_TITLE)
            leaf = page.page.locator(".p-tree-node-label, [role=treeitem]", has_text=HELP_TITLE).last
            leaf.hover(timeout=20000)
            page.page.get_by_role("button", name="Learn more").first.click(timeout=10000)
            text = wait_help(page)
            assert HELP_TITLE in text and "blend" in text
            page.screenshot(f"help_{version.replace('.', '_')}_node_library")
            assert page.unexpected_console_errors() == [], "\n".join(page.console_errors)
    finally:
        set_setting(server, "Comfy.NodeLibrary.NewDesign", True)


def test_extra_model_paths_keep_models_vtoonify(new_frontend_server):
    server = new_frontend_server
    assert server.pack_import()[0] == "ok", server.pack_import()
    choices = server.object_info("VToonifyLoadModel")["VToonifyLoadModel"]["input"]["required"]["checkpoint"][0]
    assert EXTRA_FILE in choices, "the extra_model_paths.yaml folder is not listed"
    assert BASE_FILE in choices, "models/vtoonify is not registered when extra_model_paths.yaml defines vtoonify"
    log = server.log_text()
    assert "Adding extra search path vtoonify" in log, json.dumps(log[-2000:])
