"""The templates of ``workflows/`` against the pack (issue 20, item 4), without a server: every node
the pack registers appears in at least one template (whatever nodes are added later), each template
explains itself in a note, loads only checkpoints the in-app download fetches, and reads only example
inputs the pack ships (so it runs on a fresh install once the models are there); the API copies in
``workflows/api/`` hold the same nodes. Running them is tests/host/test_workflows.py's part."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
EXAMPLES = ROOT / "example_inputs"
NOTE_TYPES = {"MarkdownNote", "Note"}
#: LiteGraph's muted (NEVER) and bypassed node modes: such nodes are left out of the API format
MUTED_MODES = {2, 4}
#: input widgets that name an example file, by node type
FILE_WIDGETS = {"LoadImage": 0, "LoadVideo": 0, "VToonifyStylizeVideoFile": 0}


def templates() -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(WORKFLOWS.glob("*.json"))}


def test_every_registered_node_has_a_template(fake_comfy_empty):
    used = {n["type"] for wf in templates().values() for n in wf["nodes"]}
    missing = sorted(set(fake_comfy_empty.pack.NODE_CLASS_MAPPINGS) - used)
    assert missing == [], f"nodes without a template in workflows/: {missing}"


@pytest.mark.parametrize("title", sorted(templates()))
def test_template_explains_itself_and_runs_on_a_fresh_install(title):
    from vtoonify_core import official

    wf = templates()[title]
    notes = [n for n in wf["nodes"] if n["type"] in NOTE_TYPES]
    assert notes and all(len(n["widgets_values"][0]) > 200 for n in notes), f"{title}: no note explaining it"
    text = " ".join(n["widgets_values"][0] for n in notes)
    assert "vtoonify_t_cartoon/vtoonify.pt" in text and "Google Drive" in text  # the Drive-only files, named
    assert (WORKFLOWS / f"{title}.jpg").is_file(), f"{title}: no thumbnail"
    for node in wf["nodes"]:
        if node["type"] == "VToonifyLoadModel":
            checkpoint = node["widgets_values"][0]
            assert checkpoint in official.DOWNLOADABLE, f"{title}: {checkpoint} is not on Hugging Face"
        if node["type"] in FILE_WIDGETS:
            name = node["widgets_values"][FILE_WIDGETS[node["type"]]]
            if isinstance(name, dict):  # LoadVideo and others save their widgets by name
                name = name.get("file") or name.get("image")
            assert (EXAMPLES / name).is_file(), f"{title}: {node['type']} reads {name!r}, not a shipped example"


def test_api_copies_hold_the_same_nodes():
    """Each UI template has an API twin with its nodes (the notes and muted nodes aside); the host tests
    check that the frontend converts one into the other exactly."""
    twins = {}
    for path in sorted((WORKFLOWS / "api").glob("*.json")):
        api = json.loads(path.read_text())
        twins[path.stem] = sorted((int(k), v["class_type"]) for k, v in api.items())
    for title, wf in templates().items():
        nodes = sorted((n["id"], n["type"]) for n in wf["nodes"]
                       if n["type"] not in NOTE_TYPES and n.get("mode", 0) not in MUTED_MODES)
        assert nodes in twins.values(), f"{title}: no API copy in workflows/api/ with the same nodes"


def test_no_other_folder_takes_the_templates_route():
    """ComfyUI 0.30 serves the first of a pack's ``example_workflows``, ``example``, ``examples``,
    ``workflow`` and ``workflows`` folders at ``/api/workflow_templates/<pack>/``: another of them
    would answer 404 for the templates' files and thumbnails (so the example inputs live elsewhere)."""
    taken = [name for name in ("example_workflows", "example", "examples", "workflow") if (ROOT / name).exists()]
    assert taken == [] and (ROOT / "example_inputs").is_dir()
