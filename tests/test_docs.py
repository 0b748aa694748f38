"""The documentation against the code (issue 15, item 9), so that it cannot drift again:

* ``docs/nodes.md`` describes every node the pack registers: a section ``## <display name> (`<ID>`)``
  naming each of its inputs and outputs, a row of the overview table, and the right count;
* the precision ``auto`` it describes is the one the code picks (bf16 on CPUs with AMX-BF16);
* the README and docs name the frontend's real labels (the *Run* button, *Templates → Extensions*,
  *File → Export (API)*) and list every example workflow under its template title.
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NODES_MD = ROOT / "docs" / "nodes.md"
README = ROOT / "README.md"
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
                "ten": 10, "eleven": 11, "twelve": 12}


@pytest.fixture(scope="module")
def pack(fake_comfy_empty):
    return fake_comfy_empty.pack


def sections(text: str) -> dict[str, str]:
    """``## `` heading -> the text up to the next ``## `` heading."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def node_io(cls) -> tuple[list[str], list[str]]:
    spec = cls.INPUT_TYPES()
    inputs = [*spec.get("required", {}), *spec.get("optional", {})]
    outputs = list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES)
    return inputs, outputs


def test_nodes_md_describes_every_registered_node(pack):
    text = NODES_MD.read_text()
    found = sections(text)
    names = pack.NODE_DISPLAY_NAME_MAPPINGS
    assert set(names) == set(pack.NODE_CLASS_MAPPINGS) and len(names) >= 11
    missing = [f"{names[i]} ({i})" for i in names if f"{names[i]} (`{i}`)" not in found]
    assert not missing, f"docs/nodes.md has no section for: {missing}"
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        body = found[f"{names[node_id]} (`{node_id}`)"]
        inputs, outputs = node_io(cls)
        undocumented = [n for n in inputs + outputs if f"`{n}`" not in body]
        assert not undocumented, f"docs/nodes.md, {names[node_id]}: inputs/outputs not described: {undocumented}"
        # a row of the overview table, linking to the section
        assert re.search(rf"^\| \[{re.escape(names[node_id])}\]\(#[a-z0-9-]+\) \| `{node_id}` \|", text, re.M), node_id
    documented = [h for h in found if re.fullmatch(r".+ \(`VToonify\w+`\)", h)]
    assert len(documented) == len(names), f"sections for nodes that are not registered: {documented}"
    count = re.match(r"(\w+) nodes, all in the \*\*VToonify\*\* category", text.split("\n\n", 1)[1])
    assert count, "docs/nodes.md does not start by saying how many nodes there are"
    stated = int(count.group(1)) if count.group(1).isdigit() else NUMBER_WORDS.get(count.group(1).lower())
    assert stated == len(names), f"docs/nodes.md says {count.group(1)} nodes, the pack registers {len(names)}"


def test_nodes_md_anchors_exist():
    text = NODES_MD.read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in sections(text)}
    for target in re.findall(r"\]\(#([a-z0-9-]+)\)", text):
        assert target in anchors, f"docs/nodes.md links to #{target}, which is no heading"


def test_precision_auto_is_described_as_the_code_picks_it(pack, monkeypatch):
    import torch

    from vtoonify_core.runtime import device as pipeline

    row = next(line for line in NODES_MD.read_text().splitlines() if line.startswith("| `precision` |"))
    auto = row.split("|")[3]
    # what the code does on a CPU, with and without AMX-BF16
    monkeypatch.setattr(pipeline, "cpu_has_fast_bf16", lambda: True)
    assert pipeline.resolve_dtype("auto", "cpu") is torch.bfloat16
    monkeypatch.setattr(pipeline, "cpu_has_fast_bf16", lambda: False)
    assert pipeline.resolve_dtype("auto", "cpu") is torch.float32
    assert "AMX-BF16" in auto and re.search(r"AMX-BF16[^;]*\) bf16", auto), auto
    assert "fp32 elsewhere" in auto and "fp16" in auto and "bf16" in auto, auto
    # ... and on CUDA: bf16 where supported, else fp16 (the core), as the row says for outside ComfyUI
    for supported, dtype in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert pipeline.resolve_dtype("auto", "cuda") is dtype
    assert "bf16 where the GPU supports it, else fp16" in auto, auto


def test_readme_and_docs_use_the_frontends_labels():
    readme = README.read_text()
    spec = importlib.util.spec_from_file_location("_comfy_host_for_docs", ROOT / "scripts" / "comfy_host.py")
    host = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = host
    try:
        spec.loader.exec_module(host)
    finally:
        sys.modules.pop(spec.name, None)
    # the banner's way to the templates and the README's are the same (left sidebar Templates > Extensions > pack)
    steps = host.TEMPLATES_PATH.removeprefix("left sidebar ").split(" > ")
    assert steps == ["Templates", "Extensions", host.PACK_DIR_NAME]
    first = readme.split("**VToonify** (Yang", 1)[0]
    assert re.search(r"left sidebar under \*" + r" →\s+".join(map(re.escape, steps)) + r"\*", first), first
    assert "**Run**" in first
    for doc in (README, *sorted((ROOT / "docs").glob("*.md"))):
        text = doc.read_text()
        for stale in ("Workflow → Browse Templates", "Workflow > Browse Templates", "Workflow > Export",
                      "Queue Prompt", "press Queue", "**Queue**", "*Queue*"):
            assert stale not in text, f"{doc.name} says {stale!r}: the frontend of ComfyUI 0.30 has no such label"
    assert "*File → Export (API)*" in (ROOT / "docs" / "batch.md").read_text()


def test_readme_lists_every_example_workflow_by_title():
    sys.path.insert(0, str(ROOT / "tests" / "host"))
    try:
        import workflow_specs
    finally:
        sys.path.remove(str(ROOT / "tests" / "host"))
    readme = README.read_text()
    for name, title in workflow_specs.TITLES.items():
        assert (ROOT / "workflows" / f"{title}.json").is_file() and (ROOT / "workflows" / "api" / f"{name}.json").is_file()
        assert re.search(rf"^\|[^|\n]*\b{re.escape(title)}\b[^|\n]*\|[^|\n]*`api/{name}`", readme, re.M), \
            f"README's workflow table has no row for {title!r} (api/{name})"
