"""What the real frontend of ComfyUI 0.30 (1.47) shows of this pack, in headless Chromium (issue 15,
items 8 and 9):

* the example workflows in the template browser, reached as the README says (left sidebar
  *Templates*, group *Extensions*, the pack's folder name), each card with its title in full (the
  frontend titles a custom-node template by its file name only; screenshot ``templates.png``);
* a failed download on *Load VToonify Model* reads "Download failed: <reason>", never
  "Download failed: download: ..." (screenshot ``download_failed.png``);
* *Pick style…* on *Extract Style Code* and the note beside it stay whole when the checkpoint's
  files are missing (screenshot ``pick_style_missing_files.png``).
"""
from __future__ import annotations

import time

import pytest
from test_workflows import THUMB_WIDTH
from workflow_specs import EXAMPLE_CLIP, TITLES

pytestmark = pytest.mark.slow

#: official files no host test places in the shared server's models/vtoonify
HUB_FILE_TO_FAIL = "vtoonify_d_arcane/vtoonify_s077_d0.5.pt"  # on Hugging Face: the button tries (offline: fails)
MISSING_D_CHECKPOINT = "vtoonify_d_comic/vtoonify_s_d.pt"


def add_node(page, node_type: str, pos, widgets: dict | None = None) -> int:
    return page.evaluate("""([type, pos, widgets]) => {
        const node = LiteGraph.createNode(type);
        node.pos = pos;
        app.graph.add(node);
        for (const [name, value] of Object.entries(widgets)) {
            const w = node.widgets.find((w) => w.name === name);
            w.value = value;
            w.callback?.(value);
        }
        app.canvas.ds.offset = [0, 0];
        app.canvas.ds.scale = 1;
        app.graph.setDirtyCanvas(true, true);
        return node.id;
    }""", [node_type, list(pos), widgets or {}])


def test_templates_are_titled_under_extensions(comfy_server, browser_page):
    page = browser_page.page
    pack = comfy_server.pack_link.name
    page.get_by_role("button", name="Templates", exact=True).click()  # the left sidebar's button
    dialog = page.locator("[role=dialog]")
    dialog.wait_for(state="visible", timeout=20000)
    group = dialog.get_by_text("Extensions", exact=True)
    group.first.wait_for(state="visible", timeout=20000)  # the groups fill in after the dialog opens
    assert group.count() == 1, "no Extensions group in the template browser"
    entry = dialog.get_by_text(pack, exact=True)
    entry.click()
    cards = dialog.locator("[data-testid^=template-workflow-]")
    cards.first.wait_for(state="visible", timeout=20000)
    thumbnails = {}  # the frontend shows a card's thumbnail only while the card is in view
    for i in range(cards.count()):
        card = cards.nth(i)
        card.scroll_into_view_if_needed()
        testid = card.get_attribute("data-testid")
        page.wait_for_function("(id) => [...document.querySelectorAll(`[data-testid='${id}'] img`)]"
                               ".some((i) => i.complete && i.naturalWidth > 0)", arg=testid, timeout=20000)
        thumbnails[testid.replace("template-workflow-", "")] = card.evaluate(
            "(c) => [...c.querySelectorAll('img')].map((i) => i.naturalWidth)")
    shown = page.evaluate("""() => [...document.querySelectorAll('[role=dialog] [data-testid^=template-workflow-]')].map((card) => {
        const name = card.dataset.testid.replace('template-workflow-', '');
        const title = [...card.querySelectorAll('[title]')].find((e) => e.textContent.trim() === e.getAttribute('title'));
        return {name, title: title?.textContent.trim() ?? null,
                truncated: title ? title.scrollWidth > title.clientWidth + 1 : null,
                thumbnails: [...card.querySelectorAll('img')].map((i) => i.naturalWidth)};
    })""")
    browser_page.screenshot("templates")
    assert sorted(c["name"] for c in shown) == sorted(TITLES.values()), shown
    for card in shown:
        assert card["title"] == card["name"], card  # the title, not a file stem like vtoonify_video_frames
        assert not card["truncated"], f"the card title {card['title']!r} is cut off"
        # its own thumbnail (800 px wide, workflows/<title>.jpg), not the frontend's default picture
        assert thumbnails[card["name"]] == [THUMB_WIDTH], (card, thumbnails)
    # a card opens its workflow, named by its title
    dialog.locator(f"[data-testid='template-workflow-{TITLES['vtoonify_video_frames']}']").click()
    page.wait_for_function("() => app.graph._nodes.some((n) => n.type === 'VToonifyStylizeFrames')", timeout=20000)
    tab = page.locator(".workflow-label", has_text=TITLES["vtoonify_video_frames"])
    assert tab.count() >= 1 and tab.first.inner_text().strip() == TITLES["vtoonify_video_frames"]
    # the workflow's Load Video shows its example clip, which the pack copied into input/ when it loaded
    page.wait_for_function("(name) => app.graph._nodes.some((n) => n.type === 'LoadVideo' && "
                           "n.widgets[0].value === name)", arg=EXAMPLE_CLIP, timeout=20000)
    assert browser_page.unexpected_console_errors() == [], "\n".join(browser_page.console_errors)
    assert browser_page.external_requests == []


def test_failed_download_reads_download_failed_once(comfy_server, browser_page):
    page = browser_page.page
    assert not (comfy_server.base / "models" / "vtoonify" / HUB_FILE_TO_FAIL).exists()
    add_node(page, "VToonifyLoadModel", (120, 80), {"checkpoint": HUB_FILE_TO_FAIL})
    row = page.locator(f'.vtoonify_status .vtoonify-file[data-name="{HUB_FILE_TO_FAIL}"]').first
    row.wait_for(state="visible", timeout=20000)
    row.locator("button.vtoonify-download").click()
    # the server has no network (HF_HUB_OFFLINE=1 in the host): the download fails, with its reason
    error = row.locator(".vtoonify-download-error")
    error.wait_for(state="visible", timeout=60000)
    text = error.inner_text().strip()
    assert text.startswith(f"Download failed: could not download models/{HUB_FILE_TO_FAIL} from "), text
    assert "download:" not in text.lower().replace("download failed:", "", 1), text
    state = comfy_server.get_json("/vtoonify/downloads")["downloads"][HUB_FILE_TO_FAIL]
    assert state["status"] == "error" and state["error"].startswith("could not download"), state
    assert row.locator("button.vtoonify-download").count() == 1  # it can be tried again
    browser_page.screenshot("download_failed")
    # a message that does carry the input-name prefix (an older server) is shown without it too
    page.evaluate("""(name) => app.api.dispatchCustomEvent('vtoonify.download',
        {name, status: 'error', bytes: 0, total: null, error: 'download: could not download it (test)'})""",
                  HUB_FILE_TO_FAIL)
    page.wait_for_function("(name) => document.querySelector(`.vtoonify_status .vtoonify-file[data-name='${name}']"
                           " .vtoonify-download-error`)?.textContent.includes('(test)')", arg=HUB_FILE_TO_FAIL,
                           timeout=10000)
    assert error.inner_text().strip() == "Download failed: could not download it (test)"
    assert browser_page.unexpected_console_errors() == [], "\n".join(browser_page.console_errors)


def test_pick_style_stays_whole_when_files_are_missing(comfy_server, browser_page):
    page = browser_page.page
    assert not (comfy_server.base / "models" / "vtoonify" / MISSING_D_CHECKPOINT).exists()
    load = add_node(page, "VToonifyLoadModel", (120, 80), {"checkpoint": MISSING_D_CHECKPOINT})
    extract = add_node(page, "VToonifyExtractStyle", (620, 80))
    page.evaluate("([a, b]) => app.graph.getNodeById(a).connect(0, app.graph.getNodeById(b), 0)", [load, extract])
    label = page.locator(".vtoonify-style-name").first
    page.wait_for_function("() => document.querySelector('.vtoonify-style-name')?.textContent.includes('download it first')",
                           timeout=20000)
    assert label.inner_text().startswith(f"style 26 ({MISSING_D_CHECKPOINT} is not in models/vtoonify yet")
    deadline = time.monotonic() + 10
    while True:  # the node grows to its panel's content (a frame or two after the text changes)
        geometry = page.evaluate("""() => {
            const button = document.querySelector('.vtoonify-pick-style');
            const label = document.querySelector('.vtoonify-style-name');
            const panel = button.closest('.vtoonify-panel');
            const r = (e) => { const b = e.getBoundingClientRect(); return {l: b.left, t: b.top, r: b.right, b: b.bottom, h: b.height}; };
            return {button: r(button), label: r(label), panel: r(panel), text: button.textContent,
                    clipped: button.scrollWidth > button.clientWidth || button.scrollHeight > button.clientHeight,
                    hidden: panel.scrollHeight > panel.clientHeight + 1,
                    lineHeight: parseFloat(getComputedStyle(button).lineHeight) || 16};
        }""")
        if not geometry["hidden"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    browser_page.screenshot("pick_style_missing_files")
    button, panel, text = geometry["button"], geometry["panel"], geometry["label"]
    assert geometry["text"] == "Pick style…"
    assert not geometry["clipped"], geometry  # the button's own label is whole
    assert button["h"] < 2 * geometry["lineHeight"] + 8, geometry  # on one line
    assert not geometry["hidden"], f"the panel hides part of its content: {geometry}"
    for box in (button, text):
        assert panel["l"] - 1 <= box["l"] and box["r"] <= panel["r"] + 1, geometry
        assert panel["t"] - 1 <= box["t"] and box["b"] <= panel["b"] + 1, geometry
    assert browser_page.unexpected_console_errors() == [], "\n".join(browser_page.console_errors)
