"""The example workflows (``workflows/``) end to end on a real ComfyUI 0.30: HTTP API and the real frontend.

Stand-in checkpoints are put into the server's ``models/vtoonify`` under the official names (VToonify-D
cartoon and arcane with 317 and 100 exemplar styles, as the release has; the two with other weights), a
tiny random Real-ESRGAN-compact model into ``models/upscale_models`` under the name the upscaler
workflow uses. The example inputs the workflows load are the pack's own (``example_inputs/``:
``skimage.data.astronaut()`` at 256x256, an 8-frame MP4 of it with a sound track, and a recoloured
mirror image as the style reference), copied into the server's input folder by the pack when it
loaded. So every workflow runs exactly as shipped: nothing is substituted.

* ``/object_info`` lists the pack's nodes with their inputs and outputs;
* every API workflow runs through ``/prompt``; its outputs are fetched through ``/history`` and ``/view``
  and checked (sizes: 4x the official face crop, or what the post-processing makes of it; contents;
  the videos' frame count, frame rate, sound track and duration, read with PyAV);
  the VToonify nodes that ran sent progress over ``/ws``;
* invalid prompts get ComfyUI's validation error (HTTP 400 with ``node_errors``) and the server goes on;
* the merge workflow's merges give model A at ratio 0 and model B at 1, pixel for pixel, and are not run
  again while their inputs stay the same; a merge saved by Save VToonify Model is listed by Load
  VToonify Model at once and loads back giving the same picture;
* every UI workflow loads in headless Chromium with no missing node type and no unexpected console
  error, ``app.graphToPrompt()`` gives exactly its API twin, the Run button's prompt succeeds, and
  after the run no node is drawn over another; a screenshot of each graph after its run goes to
  ``tests/host/artifacts/workflow_<name>.png``.

The shipped files are generated from ``workflow_specs.py`` by the real frontend:
``VTOONIFY_WRITE_WORKFLOWS=1 pytest tests/host/test_workflows.py -k regenerate`` builds each graph in
the browser and writes ``workflows/<name>.json`` (UI), ``workflows/api/<name>.json`` (API) and the
thumbnail ``workflows/<name>.jpg``.
"""
from __future__ import annotations

import copy
import io
import json
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from workflow_specs import (
    CLIP_FOLDER,
    D_ARCANE,
    D_CARTOON,
    ENCODER,
    EXAMPLE_CLIP,
    EXAMPLE_IMAGE,
    EXAMPLE_INPUTS,
    KEYFRAMES,
    MERGE_PANELS,
    MUTED,
    MERGE_SPACING,
    PARSER,
    REFERENCE_IMAGE,
    STUDENT_FILE,
    STUDENT_FRAMES,
    STUDENT_PREFIX,
    T_CARTOON,
    TEXT_EDITS,
    TEXT_KEYFRAMES,
    TITLES,
    UPSCALER,
    WORKFLOWS,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = REPO / "workflows"
EXAMPLES_DIR = REPO / "example_inputs"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
API_DIR = WORKFLOW_DIR / "api"
NAMES = list(WORKFLOWS)
WRITE_ENV = "VTOONIFY_WRITE_WORKFLOWS"
SIZE = 256              # example portrait side
CLIP_FRAMES, CLIP_RATE, CLIP_SECONDS = 8, 8, 1.0  # the shipped example clip (scripts/make_examples.py)
N_STYLES = 317          # exemplar styles of the official vtoonify_d_cartoon
N_STYLES_ARCANE = 100   # and of vtoonify_d_arcane
THUMB_WIDTH, THUMB_QUALITY, THUMB_MAX_BYTES = 800, 72, 100_000
VTOONIFY_NODES = {
    "VToonifyLoadModel": (["checkpoint", "style_encoder", "face_parser", "exstyle", "device", "precision",
                           "download_missing"], [], ["VTOONIFY_MODEL", "FACE_PARSER"]),
    "VToonifyExtractStyle": (["vtoonify_model", "image", "style_id", "color_transfer"], ["faces"],
                             ["VTOONIFY_STYLE", "IMAGE", "STRING"]),
    "VToonifyFaceParse": (["face_parser", "images", "mask_skin", "mask_brows", "mask_eyes", "mask_eyeglasses",
                           "mask_ears", "mask_earrings", "mask_nose", "mask_mouth", "mask_lips", "mask_neck",
                           "mask_necklace", "mask_cloth", "mask_hair", "mask_hat", "mask_background"], [],
                          ["FACE_PARSING", "MASK", "IMAGE"]),
    "VToonifySmoothParsing": (["face_parsing", "images", "k", "sigma_t", "sigma_s"], ["flow"], ["FACE_PARSING"]),
    "VToonifyStylizeFrames": (["vtoonify_model", "images", "style", "style_degree", "crop_mode", "batch_size"],
                              ["face_parsing", "face_padding", "faces"],
                              ["IMAGE", "MASK", "INT", "INT", "INT", "INT", "VTOONIFY_FACES"]),
    "VToonifyDetectFaces": (["images", "detector", "face", "index", "stylize", "crop", "smoothing", "face_padding",
                             "upsample"], [], ["VTOONIFY_FACES", "IMAGE", "INT"]),
    "VToonifyPasteBack": (["images", "stylized", "faces", "feather", "color_match"], ["mask"], ["IMAGE", "MASK"]),
    "VToonifySpeedSettings": (["vtoonify_model", "bake_style", "channels_last", "fold_upsampling", "compile"],
                              ["reuse_cpu_memory"],
                              ["VTOONIFY_MODEL"]),
    "VToonifyMergeModels": (["model_a", "model_b", "ratio", "exstyles"],
                            ["encoder", "modres", "fusion", "decoder_64", "decoder_128", "decoder_256", "decoder_512",
                             "decoder_1024", "mapping", "style_transforms"], ["VTOONIFY_MODEL"]),
    "VToonifySaveModel": (["vtoonify_model", "filename_prefix", "overwrite"], [], ["STRING"]),
    "VToonifyStylizeVideo": (["vtoonify_model", "video", "style_degree", "batch_size", "crop_mode"],
                             ["style", "style_id", "color_transfer", "face_padding", "chunk_size", "crf",
                              "preview_frames", "faces"], ["VIDEO", "IMAGE"]),
    "VToonifyTrainStudent": (["vtoonify_model", "style", "style_degree", "steps", "refiner", "frames_per_step",
                              "crop_size", "seed", "filename_prefix"], ["images", "video", "video_start", "video_frames"],
                             ["VTOONIFY_STUDENT", "STRING"]),
    "VToonifyStylizeVideoStudent": (["vtoonify_student", "video", "frames_per_chunk", "refine"],
                                    ["crf", "preview_frames"], ["VIDEO", "IMAGE"]),
}
OUTPUT_NODES = {"VToonifySaveModel", "VToonifyStylizeVideo", "VToonifyTrainStudent", "VToonifyStylizeVideoStudent"}
PROGRESS_NODES = {"VToonifyFaceParse", "VToonifySmoothParsing", "VToonifyStylizeFrames", "VToonifyEditStyleByText",
                  "VToonifyTrainStudent", "VToonifyStylizeVideoStudent"}
#: inputs changed, by node type, when a workflow is run here (API and UI alike, so the UI run reuses the API
#: run's results): the text edits take 2 Adam steps through a 32 px synthesis instead of the shipped 50 at 256,
#: with no L2 pull (in 2 steps of the random CLIP it outweighs the CLIP gain, and the start code would be kept)
RUN_SETTINGS = {"vtoonify_text_styles": {"VToonifyEditStyleByText": {"steps": 2, "resolution": "32",
                                                                     "l2_weight": 0.0}}}

# Builds a spec (workflow_specs.py) with the frontend's own LiteGraph classes and returns what the
# frontend saves (graphToPrompt: {workflow, output}) as JSON text, so undefined fields are dropped
# exactly as in a file the user exports.
BUILD_JS = r"""
async (spec) => {
  const TITLE = LiteGraph.NODE_TITLE_HEIGHT, GAP = 24, GROUP_HEAD = 44, GROUP_GAP = 40, COL_GAP = 70, PAD = 12;
  const graph = window.app.graph;
  graph.clear();
  const made = {};
  for (const [key, def] of Object.entries(spec.nodes)) {
    const node = LiteGraph.createNode(def.type);
    if (!node) throw new Error(`${key}: node type ${def.type} is not registered`);
    if (def.title) node.title = def.title;
    graph.add(node);
    if (def.text !== undefined) node.widgets[0].value = def.text;
    for (const [name, value] of Object.entries(def.widgets || {})) {
      const widget = (node.widgets || []).find((w) => w.name === name);
      if (!widget) throw new Error(`${key} (${def.type}): no widget ${name}`);
      widget.value = value;
    }
    if (def.color) node.color = def.color;
    if (def.mode !== undefined) node.mode = def.mode;
    made[key] = node;
  }
  for (const [a, out, b, inp] of spec.links) {
    const src = made[a], dst = made[b];
    const o = src.findOutputSlot(out), i = dst.findInputSlot(inp);
    if (o < 0 || i < 0) throw new Error(`no slot for link ${a}.${out} -> ${b}.${inp}`);
    if (!src.connect(o, dst, i)) throw new Error(`link ${a}.${out} -> ${b}.${inp} refused`);
  }
  let x = 0;
  for (const column of spec.columns) {
    let y = 0, width = 0;
    for (const block of column) {
      const nodes = block.nodes.map((k) => made[k]);
      if (block.group) y += GROUP_HEAD;
      for (const key of block.nodes) {
        const node = made[key], def = spec.nodes[key];
        const size = node.computeSize();
        node.size = [Math.max(size[0], def.width || 0), Math.max(size[1], def.height || 0)];
        node.pos = [x, y + TITLE];
        y += TITLE + node.size[1] + GAP;
        width = Math.max(width, node.size[0]);
      }
      if (block.group) {
        const group = new LiteGraph.LGraphGroup(block.group);
        if (block.color) group.color = block.color;
        graph.add(group);
        const x0 = Math.min(...nodes.map((n) => n.pos[0])), y0 = Math.min(...nodes.map((n) => n.pos[1] - TITLE));
        const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0]));
        const y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
        group.pos = [x0 - PAD, y0 - PAD - group.titleHeight];
        group.size = [x1 - x0 + 2 * PAD, y1 - y0 + 2 * PAD + group.titleHeight];
        y += GROUP_GAP;
      }
    }
    x += width + COL_GAP;
  }
  graph.setDirtyCanvas(true, true);
  const p = await window.app.graphToPrompt();
  return {workflow: JSON.stringify(p.workflow), output: JSON.stringify(p.output)};
}
"""

FIT_JS = r"""
async () => {
  const canvas = window.app.canvas;
  await window.app.extensionManager.command.execute('Comfy.Canvas.FitView');
  canvas.min_font_size_for_lod = 1;  // draw titles and widgets even when zoomed out
  canvas.show_info = false;
  canvas.setDirty(true, true);
}
"""

# The graph's bounding box on the page (CSS px), for cropping thumbnails.
BOX_JS = r"""
() => {
  const canvas = window.app.canvas, graph = window.app.graph, rects = [], T = LiteGraph.NODE_TITLE_HEIGHT;
  for (const n of graph.nodes) rects.push([n.pos[0], n.pos[1] - T, n.size[0], n.size[1] + T]);
  for (const g of graph.groups) rects.push([g.pos[0], g.pos[1], g.size[0], g.size[1]]);
  const x0 = Math.min(...rects.map((r) => r[0])), y0 = Math.min(...rects.map((r) => r[1]));
  const x1 = Math.max(...rects.map((r) => r[0] + r[2])), y1 = Math.max(...rects.map((r) => r[1] + r[3]));
  const box = canvas.canvas.getBoundingClientRect();
  const [a, b] = canvas.ds.convertOffsetToCanvas([x0, y0]), [c, d] = canvas.ds.convertOffsetToCanvas([x1, y1]);
  const k = box.width / canvas.canvas.width;  // canvas px -> CSS px
  return {x: box.left + a * k, y: box.top + b * k, width: (c - a) * k, height: (d - b) * k};
}
"""

# Everything drawn over the canvas (tabs, side bar, run button, minimap) is hidden for thumbnails.
HIDE_OVERLAYS_CSS = "#graph-canvas-container > div.pointer-events-none { visibility: hidden !important; }"

# Every node's canvas rectangle (title bar included) and how far its widgets reach.
LAYOUT_JS = r"""
() => {
  const T = LiteGraph.NODE_TITLE_HEIGHT;
  return window.app.graph.nodes.map((n) => ({
    id: n.id, type: n.type, title: n.title, collapsed: !!n.flags?.collapsed,
    rect: [n.pos[0], n.pos[1] - T, n.pos[0] + n.size[0], n.pos[1] + (n.flags?.collapsed ? 0 : n.size[1])],
    height: n.size[1], previews: (n.imgs || []).length,
    widgets_end: Math.max(0, ...(n.widgets || []).filter((w) => !w.hidden && w.computedHeight != null)
                                 .map((w) => (w.y || 0) + w.computedHeight)),
  }));
}
"""

# Whether the frontend has put the images or videos these nodes (ids) output on them (as images,
# or as a video/image preview widget).
SHOWN_JS = r"""
(ids) => ids.every((id) => {
  const n = window.app.graph.getNodeById(Number(id));
  if (!n) return true;
  return (n.imgs || []).length > 0 || (n.widgets || []).some((w) => /preview|video/i.test(w.name || ''));
})
"""


def overlapping(nodes: list[dict]) -> list[tuple[str, str]]:
    """Pairs of node titles whose rectangles (title bars included) overlap."""
    out = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a["rect"], b["rect"]
            if min(ax1, bx1) > max(ax0, bx0) and min(ay1, by1) > max(ay0, by0):
                out.append((a["title"], b["title"]))
    return out


# ---------------------------------------------------------------------------------------------- helpers


def shipped(name: str) -> np.ndarray:
    """A shipped example picture (``example_inputs/<name>``) as uint8 RGB."""
    with Image.open(EXAMPLES_DIR / name) as im:
        return np.asarray(im.convert("RGB"))


def portrait(size: int = SIZE) -> np.ndarray:
    """``skimage.data.astronaut()`` resized to ``size`` x ``size`` (uint8 RGB); at 256 the shipped example."""
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.LANCZOS))


def clip_frames() -> list[np.ndarray]:
    """The frames of the example clip (8 frames of a slow pan over the portrait)."""
    from vtoonify_core.video import iter_frames

    return [f for _, f in iter_frames(EXAMPLES_DIR / EXAMPLE_CLIP)]


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def video_facts(data: bytes) -> dict:
    """Frame count (decoded), frame rate, size, audio streams and duration (container and video
    stream) of an encoded video, read with PyAV."""
    import av

    with av.open(io.BytesIO(data)) as c:
        vs = c.streams.video[0]
        frames = sum(1 for _ in c.decode(vs))
        return {"frames": frames, "rate": vs.average_rate, "size": (vs.codec_context.height, vs.codec_context.width),
                "audio": [(a.codec_context.name, a.codec_context.sample_rate) for a in c.streams.audio],
                "duration": float(c.duration) / av.time_base if c.duration else None,
                "video_duration": float(vs.duration * vs.time_base) if vs.duration else None}


def assert_clip_kept(facts: dict, size: tuple[int, int] | None = None) -> None:
    """Every frame, the frame rate, the sound track and the duration of the example clip."""
    assert facts["frames"] == CLIP_FRAMES, facts
    assert facts["rate"] == CLIP_RATE, facts
    assert len(facts["audio"]) == 1 and facts["audio"][0][0] == "aac", facts
    assert facts["video_duration"] == pytest.approx(CLIP_SECONDS, abs=1e-3), facts
    assert facts["duration"] == pytest.approx(CLIP_SECONDS, abs=0.1), facts  # the AAC track's padding
    if size is not None:
        assert facts["size"] == size, facts


def compact_upscaler(scale: int = 2, nf: int = 8, n_conv: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A Real-ESRGAN compact (SRVGGNetCompact) state dict with random weights, as spandrel detects it:
    ``body.{2k}`` convs, ``body.{2k+1}`` PReLUs, the last conv giving ``3 * scale**2`` channels."""
    g = torch.Generator().manual_seed(seed)
    sd, i, cin = {}, 0, 3
    for _ in range(n_conv + 1):
        sd[f"body.{i}.weight"] = torch.randn(nf, cin, 3, 3, generator=g) * 0.05
        sd[f"body.{i}.bias"] = torch.zeros(nf)
        sd[f"body.{i + 1}.weight"] = torch.full((nf,), 0.25)
        i, cin = i + 2, nf
    sd[f"body.{i}.weight"] = torch.randn(3 * scale * scale, nf, 3, 3, generator=g) * 0.01
    sd[f"body.{i}.bias"] = torch.zeros(3 * scale * scale)
    return sd


def place(root: Path, rel: str, source: Path | None = None) -> Path:
    """Make ``root/rel`` a link to ``source`` (or free it for writing), its folders real directories
    (a linked folder, e.g. from ``add_models``, is replaced by a folder of links to its files, so
    nothing is ever written through a link into a fixture's files)."""
    dest = root / rel
    parent = dest.parent
    if parent.is_symlink():
        target = parent.resolve()
        parent.unlink()
        parent.mkdir()
        for entry in target.iterdir():
            (parent / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    if source is not None:
        dest.symlink_to(source)
    return dest


def ui_file(name: str, ext: str) -> Path:
    """``workflows/<title>.<ext>``: the UI workflow (``json``) or its thumbnail (``jpg``)."""
    return WORKFLOW_DIR / f"{TITLES[name]}.{ext}"


def load_ui(name: str) -> dict:
    return json.loads(ui_file(name, "json").read_text())


def load_api(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text())


def run_settings(name: str, api: dict) -> dict:
    """A copy of an API workflow with :data:`RUN_SETTINGS` applied (each changed input checked to exist)."""
    api = copy.deepcopy(api)
    for class_type, values in RUN_SETTINGS.get(name, {}).items():
        targets = nodes_of(api, class_type)
        assert targets, f"{name}: no {class_type} to set {values} on"
        for node in targets.values():
            assert set(values) <= set(node["inputs"]), (class_type, values)
            node["inputs"].update(values)
    return api


# Sets widget values on every node of a type in the loaded graph (RUN_SETTINGS in the UI).
SET_WIDGETS_JS = r"""
([type, values]) => {
  for (const node of window.app.graph.nodes.filter((n) => n.type === type))
    for (const [name, value] of Object.entries(values)) node.widgets.find((w) => w.name === name).value = value;
}
"""


def nodes_of(api: dict, class_type: str) -> dict[str, dict]:
    return {nid: node for nid, node in api.items() if node["class_type"] == class_type}


def node_by_title(api: dict, title: str) -> str:
    (nid,) = [nid for nid, node in api.items() if node.get("_meta", {}).get("title") == title]
    return nid


def fetch_images(server, entry: dict, node_id: str) -> list[np.ndarray]:
    """The images a node saved or previewed, decoded (first frame of animated files)."""
    out = []
    for rec in server.output_images(entry, node_id):
        data = server.view(rec["filename"], rec["subfolder"], rec["type"])
        out.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return out


def assert_picture(img: np.ndarray, shape: tuple[int, int]) -> None:
    """An RGB picture of ``shape`` (h, w) with real content (not one flat colour, not all black/white)."""
    assert img.shape == (*shape, 3), (img.shape, shape)
    assert img.dtype == np.uint8
    assert 2.0 < float(img.mean()) < 253.0 and float(img.std()) > 2.0, (img.mean(), img.std())


def merge_panels(image: np.ndarray, size: tuple[int, int]) -> list[np.ndarray]:
    """The panels of the merge workflow's side-by-side image (each ``size``, spaced by MERGE_SPACING)."""
    h, w = size
    n = len(MERGE_PANELS)
    assert image.shape[:2] == (h, n * w + (n - 1) * MERGE_SPACING), (image.shape, size)
    return [image[:, i * (w + MERGE_SPACING):i * (w + MERGE_SPACING) + w] for i in range(n)]


def face_output_size(frames: list[np.ndarray]) -> tuple[int, int]:
    """(h, w) of Stylize Frames' output in face mode: 4x the official crop of these frames."""
    from vtoonify_core.pipeline.clip import plan_clip

    t = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0
    plan = plan_clip(t, "face", input_range=(0.0, 1.0))
    return plan.output_size


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def workflow_env(comfy_server, vtoonify_t_path, vtoonify_d_path, psp_path, bisenet_path, tmp_path_factory):
    """The server with the official model names in place and the example images uploaded; returns the
    expected output sizes."""
    from vtoonify_core.testing import standin

    root = comfy_server.base / "models" / "vtoonify"
    # the second VToonify-D style of the merge workflow: other stand-in weights (seed 1)
    arcane = standin.write_official_checkpoint("vtoonify_d", tmp_path_factory.mktemp("arcane") / "vtoonify_s_d.pt",
                                               base_seed=1)
    for rel, src in ((T_CARTOON, vtoonify_t_path), (D_CARTOON, vtoonify_d_path), (D_ARCANE, arcane),
                     (ENCODER, psp_path), (PARSER, bisenet_path)):
        place(root, rel, src)
    standin.write_official_exstyles(place(root, str(Path(D_CARTOON).parent / "exstyle_code.npy")), n=N_STYLES)
    standin.write_official_exstyles(place(root, str(Path(D_ARCANE).parent / "exstyle_code.npy")), n=N_STYLES_ARCANE,
                                    base_seed=1)
    upscalers = comfy_server.base / "models" / "upscale_models"
    upscalers.mkdir(parents=True, exist_ok=True)
    torch.save(compact_upscaler(scale=2), upscalers / UPSCALER)
    # a tiny random CLIP (both towers, transformers format) under the name the text template uses
    clip = comfy_server.base / "models" / "clip" / CLIP_FOLDER
    if not (clip / "config.json").is_file():
        from vtoonify_core.testing.tinyclip import write_tiny_clip

        write_tiny_clip(clip)

    # the pack copied its example inputs into the input folder when it loaded
    for name in EXAMPLE_INPUTS:
        copied = comfy_server.base / "input" / name
        assert copied.is_file() and copied.read_bytes() == (EXAMPLES_DIR / name).read_bytes(), name
    image, frames, reference = shipped(EXAMPLE_IMAGE), clip_frames(), shipped(REFERENCE_IMAGE)
    assert np.array_equal(image, portrait())  # the public-domain portrait, as scripts/make_examples.py made it
    return {"image": image, "frames": frames, "reference": reference,
            "portrait_out": face_output_size([image]), "clip_out": face_output_size(frames)}


# ---------------------------------------------------------------------------------------------- generation


@pytest.mark.skipif(os.environ.get(WRITE_ENV) != "1", reason=f"{WRITE_ENV}=1 regenerates workflows/")
def test_regenerate_workflows(workflow_env, browser_page):
    """Build every spec in the real frontend and write the UI JSON, the API JSON and the thumbnail."""
    API_DIR.mkdir(parents=True, exist_ok=True)
    for name, spec in WORKFLOWS.items():
        built = browser_page.evaluate(BUILD_JS, spec)
        workflow = json.loads(built["workflow"])
        workflow["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-vtoonify/workflows/{name}"))
        ui_file(name, "json").write_text(json.dumps(workflow, indent=2, ensure_ascii=False) + "\n")
        # the API twin of the saved workflow as loaded, as Export (API) gives it: a loaded Load Video
        # has its player widget, which the frontend sends ("video-preview": "") and the server ignores
        browser_page.load_graph(load_ui(name))
        output = browser_page.graph_to_prompt()["output"]
        (API_DIR / f"{name}.json").write_text(json.dumps(output, indent=2, ensure_ascii=False) + "\n")
    for name in WORKFLOWS:
        write_thumbnail(browser_page, name)
    assert browser_page.unexpected_console_errors() == [], "\n".join(browser_page.console_errors)


def show_graph(page, name: str) -> dict:
    """Load a UI workflow and fit it into the view, with the images of its Load Image nodes shown;
    return the graph's bounding box on the page."""
    page.load_graph(load_ui(name))
    page.evaluate(FIT_JS)
    page.page.wait_for_timeout(800)  # the fit is animated
    return page.evaluate(BOX_JS)


def write_thumbnail(page, name: str) -> Path:
    page.page.set_viewport_size({"width": 1600, "height": 1000})
    box = show_graph(page, name)
    margin = 16
    clip = {"x": max(0.0, box["x"] - margin), "y": max(0.0, box["y"] - margin),
            "width": box["width"] + 2 * margin, "height": box["height"] + 2 * margin}
    style = page.page.add_style_tag(content=HIDE_OVERLAYS_CSS)
    try:
        shot = page.page.screenshot(type="png", clip=clip)
    finally:
        style.evaluate("(el) => el.remove()")
    img = Image.open(io.BytesIO(shot)).convert("RGB")
    img = img.resize((THUMB_WIDTH, round(img.height * THUMB_WIDTH / img.width)), Image.LANCZOS)
    path = ui_file(name, "jpg")
    img.save(path, "JPEG", quality=THUMB_QUALITY, optimize=True, progressive=True)
    return path


# ---------------------------------------------------------------------------------------------- files and /object_info


def test_workflow_files_are_complete():
    ui_names = sorted(p.stem for p in WORKFLOW_DIR.glob("*.json"))
    assert ui_names == sorted(TITLES[n] for n in NAMES)  # every UI file is a titled workflow, and the reverse
    assert sorted(NAMES) == sorted(TITLES) and len(set(TITLES.values())) == len(TITLES)
    for title in TITLES.values():  # file names that every system (and a URL) takes
        assert title == title.strip() and not title.endswith(".") and not set(title) & set('\\/:*?"<>|%#+&'), title
    for name in NAMES:
        ui, api = load_ui(name), load_api(name)
        assert ui.get("version") == 0.4 and ui["nodes"] and ui["links"] and ui["groups"], name
        types = {n["type"] for n in ui["nodes"]}
        assert "MarkdownNote" in types, f"{name}: no note"
        # the API twin has every node of the UI workflow but the notes and the muted nodes
        assert sorted(map(int, api)) == sorted(n["id"] for n in ui["nodes"]
                                               if n["type"] != "MarkdownNote" and n.get("mode", 0) != MUTED)
        loaders = nodes_of(api, "VToonifyLoadModel")
        assert loaders, name
        for node in loaders.values():
            assert node["inputs"]["checkpoint"] in (D_CARTOON, D_ARCANE)  # on Hugging Face: the in-app download
            assert (node["inputs"]["style_encoder"], node["inputs"]["face_parser"]) == (ENCODER, PARSER)
            assert node["inputs"]["exstyle"] == "auto" and node["inputs"]["download_missing"] is False
        thumb = ui_file(name, "jpg")
        assert thumb.is_file(), f"{thumb} missing"
        assert thumb.stat().st_size < THUMB_MAX_BYTES, f"{thumb}: {thumb.stat().st_size} bytes"
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and im.width == THUMB_WIDTH


def test_object_info_lists_the_nodes(comfy_server):
    info = comfy_server.object_info()
    for name, (required, optional, outputs) in VTOONIFY_NODES.items():
        assert name in info, f"{name} missing from /object_info"
        node = info[name]
        assert node["category"] == "VToonify"
        assert list(node["input"]["required"]) == required, name
        assert list(node["input"].get("optional", {})) == optional, name
        assert node["output"] == outputs, name
        assert node["output_node"] is (name in OUTPUT_NODES), name
    checkpoints = info["VToonifyLoadModel"]["input"]["required"]["checkpoint"][0]
    assert T_CARTOON in checkpoints and D_CARTOON in checkpoints
    # every core node the workflows use is there
    used = {n["class_type"] for name in NAMES for n in load_api(name).values()}
    assert used - set(info) == set()


# ---------------------------------------------------------------------------------------------- API runs


def save_output_artifact(name: str, server, entry: dict, api: dict) -> None:
    """The first saved image of a run, small, as ``tests/host/artifacts/workflow_<name>_output.jpg``."""
    for nid in nodes_of(api, "SaveImage"):
        images = fetch_images(server, entry, nid)
        if images:
            img = Image.fromarray(images[0])
            img.thumbnail((512, 512))
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            img.save(ARTIFACTS / f"workflow_{name}_output.jpg", quality=85)
            return


def check_outputs(name: str, server, entry: dict, api: dict, env: dict) -> None:
    """Per-workflow checks of what the run saved and previewed."""
    h, w = env["portrait_out"]
    saves = nodes_of(api, "SaveImage")
    if name == "vtoonify_video_frames":
        (saved,) = server.output_images(entry, node_by_title(api, "Save Video (mp4 with sound)"))
        assert saved["filename"].endswith(".mp4") and saved["type"] == "output", saved
        assert_clip_kept(video_facts(server.view(saved["filename"], saved["subfolder"])), env["clip_out"])
        (aligned,) = fetch_images(server, entry, node_by_title(api, "Aligned face"))
        assert aligned.shape == (256, 256, 3)
    elif name == "vtoonify_video_stream":
        (saved,) = server.output_images(entry, node_by_title(api, "Save Video (mp4 with sound)"))
        assert_clip_kept(video_facts(server.view(saved["filename"], saved["subfolder"])), env["clip_out"])
        (stylize,) = nodes_of(api, "VToonifyStylizeVideo")
        (shown,) = server.output_images(entry, stylize)  # the node's own preview: its MP4 in the temp folder
        assert shown["type"] == "temp" and shown["subfolder"] == "vtoonify" and shown["filename"].endswith(".mp4")
        assert_clip_kept(video_facts(server.view(shown["filename"], shown["subfolder"], "temp")), env["clip_out"])
        previews = fetch_images(server, entry, node_by_title(api, "Stylized frames (first to last)"))
        assert len(previews) == 4 and all(p.shape[:2] == env["clip_out"] for p in previews)
    elif name == "vtoonify_student":
        check_student_outputs(server, entry, api)
    elif name == "vtoonify_style_keyframes":
        (path_node,) = [nid for nid in nodes_of(api, "PreviewAny") if api[nid]["_meta"]["title"] == "Written video"]
        (written,) = entry["outputs"][path_node]["text"]
        assert written.endswith("vtoonify/vtoonify_example_clip_keyframes.mp4"), written
        assert_clip_kept(video_facts(Path(written).read_bytes()), env["clip_out"])
        info = " ".join(entry["outputs"][node_by_title(api, "schedule_info")]["text"])
        assert "style keyframes (3;" in info and KEYFRAMES.count(":") == 3, info
        for line in ("frame 0: ", "style degree 0.3", "frame 4: ", "frame 7: ", "style degree 0.8"):
            assert line in info, info
        previews = fetch_images(server, entry, node_by_title(api, "Stylized frames (first to last)"))
        assert len(previews) == 4
        # the style changes over the clip: the first and last frames differ far more than the pan explains
        assert np.abs(previews[0].astype(float) - previews[-1].astype(float)).mean() > 2.0
    elif name == "vtoonify_text_styles":
        (saved,) = server.output_images(entry, node_by_title(api, "Save Video (mp4 with sound)"))
        assert_clip_kept(video_facts(server.view(saved["filename"], saved["subfolder"])), env["clip_out"])
        assert sorted(n["inputs"]["text"] for n in nodes_of(api, "VToonifyEditStyleByText").values()) == \
            sorted(TEXT_EDITS)
        (keyframes,) = nodes_of(api, "VToonifyStyleKeyframes").values()
        assert keyframes["inputs"]["keyframes"] == TEXT_KEYFRAMES
        info = " ".join(entry["outputs"][node_by_title(api, "schedule_info")]["text"])
        assert "style keyframes (3;" in info and all(f"frame {f}: " in info for f in (0, 3, 4)), info
        afters = []
        for title in ("A: before, after", "B: before, after"):
            before, after = fetch_images(server, entry, node_by_title(api, title))
            assert before.shape == after.shape == (32, 32, 3)  # RUN_SETTINGS' resolution
            assert np.abs(before.astype(float) - after.astype(float)).max() > 0, f"{title}: the text changed nothing"
            afters.append(after)
        assert np.abs(afters[0].astype(float) - afters[1].astype(float)).max() > 0, "the two sentences gave one code"
        # every frame (preview_frames 8): style A on frames 0-3, B on 4-7. The step from frame 3 to 4 (A to B)
        # is far larger than the steps within a half (the same style; only the slow pan moves)
        previews = fetch_images(server, entry, node_by_title(api, "Stylized frames (first to last)"))
        frames = [f.astype(float) for f in previews]
        assert len(frames) == CLIP_FRAMES and all(f.shape[:2] == env["clip_out"] for f in frames)
        steps = [float(np.abs(frames[i + 1] - frames[i]).mean()) for i in range(CLIP_FRAMES - 1)]
        within = steps[:3] + steps[4:]
        assert steps[3] > 2 * max(within), steps
    elif name == "vtoonify_d_exemplar":
        (plain,) = fetch_images(server, entry, node_by_title(api, "Save (face colours)"))
        (color,) = fetch_images(server, entry, node_by_title(api, "Save (exemplar colours)"))
        assert_picture(plain, (h, w))
        assert_picture(color, (h, w))
        assert np.abs(plain.astype(float) - color.astype(float)).mean() > 0.5, "colour transfer changed nothing"
        texts = {nid: entry["outputs"][nid]["text"] for nid in nodes_of(api, "PreviewAny")}
        assert len(texts) == 2
        for text in texts.values():
            assert "exemplar style 26" in " ".join(text), texts
        assert any("exemplar colours" in " ".join(t) for t in texts.values()), texts
    elif name in ("vtoonify_upscale", "vtoonify_upscale_cheap"):
        (before,) = fetch_images(server, entry, node_by_title(api, "Stylized (before upscaling)"))
        (after,) = fetch_images(server, entry, next(iter(saves)))
        assert_picture(before, (h, w))
        assert_picture(after, (2 * h, 2 * w))
        # an upscaled copy of the stylized image, not something else
        small = np.asarray(Image.fromarray(after).resize((w, h), Image.BOX)).astype(float)
        assert np.abs(small - before.astype(float)).mean() < 8.0
    elif name == "vtoonify_composite":  # Detect Faces -> Stylize Frames -> Paste Back through the Face Parse mask
        (out,) = fetch_images(server, entry, next(iter(saves)))
        assert_picture(out, (2 * SIZE, 2 * SIZE))
        (stylized,) = fetch_images(server, entry, node_by_title(api, "Stylized"))
        assert stylized.shape[0] % 32 == 0 and stylized.shape[1] % 32 == 0
        (found,) = fetch_images(server, entry, node_by_title(api, "Faces found"))
        assert found.shape == (2 * SIZE, 2 * SIZE, 3)
        # the blend weight, frame-sized: the soft class probabilities of the stand-in parser inside the face
        # crop, nothing at the frame's edges
        (mask,) = fetch_images(server, entry, node_by_title(api, "Composite mask"))
        m = mask[..., 0].astype(float)
        assert m.shape == (2 * SIZE, 2 * SIZE)
        edges = max(m[-1].max(), m[:, 0].max(), m[:, -1].max())
        assert m.max() > 8 and edges <= m.max() / 12 + 1, "the composite mask is empty or not feathered"
        # where the weight is 0 the frame is the enlarged original; inside, the stylized face shows
        up = np.asarray(Image.fromarray(env["image"]).resize((2 * SIZE, 2 * SIZE), Image.LANCZOS)).astype(float)
        diff = np.abs(out.astype(float) - up).mean(axis=2)
        assert diff[m == 0].mean() < 2.0 and diff[-SIZE // 2:].mean() < 2.0, "the paste changed the frame elsewhere"
        assert diff[m > m.max() / 2].mean() > 3, "nothing was pasted"
        assert (diff > 3).mean() < 0.5
    elif name == "vtoonify_hair_skin":
        (out,) = fetch_images(server, entry, next(iter(saves)))
        assert_picture(out, (2 * SIZE, 2 * SIZE))
        (stylized,) = fetch_images(server, entry, node_by_title(api, "Stylized"))
        assert stylized.shape[0] % 32 == 0 and stylized.shape[1] % 32 == 0
        # the mask: the soft class probabilities of the stand-in parser (small where few classes are
        # ticked), feathered to 0 at the box edges
        (mask,) = fetch_images(server, entry, node_by_title(api, "Composite mask"))
        m = mask[..., 0].astype(float)
        edges = max(m[0].max(), m[-1].max(), m[:, 0].max(), m[:, -1].max())
        assert m.max() > 8 and edges <= m.max() / 12 + 1, "the composite mask is empty or not feathered"
        # outside the face box the frame is the enlarged original; inside, the stylized face shows
        up = np.asarray(Image.fromarray(env["image"]).resize((2 * SIZE, 2 * SIZE), Image.LANCZOS)).astype(float)
        diff = np.abs(out.astype(float) - up).mean(axis=2)
        assert diff[-SIZE // 2:].mean() < 2.0, "the composite changed the frame far from the face"
        assert diff.max() > 3, "nothing was pasted"
        assert (diff > 3).mean() < 0.5
    elif name == "vtoonify_reference_style":
        (out,) = fetch_images(server, entry, next(iter(saves)))
        assert_picture(out, (h, w))
        (aligned,) = fetch_images(server, entry, node_by_title(api, "Aligned reference face"))
        assert aligned.shape == (256, 256, 3)
    elif name == "vtoonify_merge_styles":
        (out,) = fetch_images(server, entry, next(iter(saves)))
        panels = merge_panels(out, (h, w))
        for p in panels:
            assert_picture(p, (h, w))
        assert (out[:, w:w + MERGE_SPACING] == 255).all(), "no white spacing between the panels"
        # four different pictures: A, the average, A's shapes with B's textures, B
        for i in range(len(panels)):
            for j in range(i):
                assert np.abs(panels[i].astype(float) - panels[j].astype(float)).mean() > 0.5, (i, j)
        (text,) = entry["outputs"][next(iter(nodes_of(api, "VToonifySaveModel")))]["text"]
        assert "vtoonify_merged/shapes_a_textures_b.safetensors" in text, text
    else:  # pragma: no cover - a new workflow needs its checks
        raise AssertionError(f"no output checks for {name}")


@pytest.mark.parametrize("name", NAMES, scope="module")  # each API run, then its UI twin
def test_api_workflow_runs(name, workflow_env, comfy_server):
    api = quick_settings(name, run_settings(name, load_api(name)))
    prompt_id = comfy_server.post_prompt(copy.deepcopy(api))
    entry = comfy_server.wait(prompt_id, timeout=300)
    save_output_artifact(name, comfy_server, entry, api)
    check_outputs(name, comfy_server, entry, api, workflow_env)
    # progress on /ws from every VToonify node that ran (others were cached from earlier workflows)
    ran = {m["data"]["node"] for m in comfy_server.messages(prompt_id, "executing") if m["data"]["node"]}
    progressed = {m["data"]["node"] for m in comfy_server.messages(prompt_id, "progress")}
    for nid in ran:
        if api[nid]["class_type"] in PROGRESS_NODES:
            assert nid in progressed, f"{api[nid]['class_type']} ({nid}) ran without progress messages"
    if name == "vtoonify_video_frames":  # the first workflow runs all of them
        kinds = {api[nid]["class_type"] for nid in progressed}
        present = {n["class_type"] for n in api.values() if isinstance(n, dict) and "class_type" in n}
        assert PROGRESS_NODES & present <= kinds, kinds
        steps = [m["data"] for m in comfy_server.messages(prompt_id, "progress")
                 if api[m["data"]["node"]]["class_type"] == "VToonifyStylizeFrames"]
        assert steps[-1]["value"] == steps[-1]["max"] == CLIP_FRAMES, steps


def test_invalid_prompts_are_rejected(workflow_env, comfy_server):
    """ComfyUI's validation answers 400 with ``node_errors`` when no output can run; an invalid branch
    next to valid outputs is reported in ``node_errors`` while the valid outputs run. The server goes on."""
    api = load_api("vtoonify_reference_style")
    (loader,) = nodes_of(api, "VToonifyLoadModel")
    (stylize,) = nodes_of(api, "VToonifyStylizeFrames")
    (save,) = nodes_of(api, "SaveImage")
    preview = node_by_title(api, "Aligned reference face")
    image = node_by_title(api, "Load portrait (to stylize)")

    def rejected(prompt: dict, node_id: str, error_type: str, input_name: str) -> None:
        with pytest.raises(AssertionError) as info:  # conftest.PromptRejected
            comfy_server.post_prompt(prompt)
        exc = info.value
        assert getattr(exc, "status", None) == 400, exc
        assert exc.body["error"]["type"] == "prompt_outputs_failed_validation", exc.body
        errors = exc.body["node_errors"][node_id]["errors"]
        assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [(error_type, input_name)], errors

    missing = copy.deepcopy(api)
    del missing[loader]["inputs"]["checkpoint"]
    rejected(missing, loader, "required_input_missing", "checkpoint")
    unknown = copy.deepcopy(api)
    unknown[loader]["inputs"]["checkpoint"] = "vtoonify_t_cartoon/no_such_checkpoint.pt"
    # the loader's VALIDATE_INPUTS makes the list check of its file inputs (ComfyUI leaves it to it), and ComfyUI
    # reports its refusal once for every input it takes
    with pytest.raises(AssertionError) as info:  # conftest.PromptRejected
        comfy_server.post_prompt(unknown)
    errors = info.value.body["node_errors"][loader]["errors"]
    assert {e["type"] for e in errors} == {"custom_validation_failed"} and len(errors) == 5, errors
    assert "Value not in list: checkpoint: 'vtoonify_t_cartoon/no_such_checkpoint.pt'" in errors[0]["details"], errors
    wrong_type = copy.deepcopy(api)
    wrong_type[stylize]["inputs"]["style"] = [image, 0]  # an IMAGE into a VTOONIFY_STYLE input
    only_save = {k: v for k, v in wrong_type.items() if k != preview}
    rejected(only_save, stylize, "return_type_mismatch", "style")

    # with the aligned-face preview still valid, the prompt is queued for that output only
    status, body = comfy_server.request("POST", "/prompt", json.dumps(
        {"prompt": wrong_type, "client_id": comfy_server.client_id}).encode(), {"Content-Type": "application/json"})
    answer = json.loads(body)
    assert status == 200 and answer["node_errors"][stylize]["errors"][0]["type"] == "return_type_mismatch"
    entry = comfy_server.wait(answer["prompt_id"], timeout=300)
    assert comfy_server.output_images(entry, preview) and not comfy_server.output_images(entry, save)

    # the server goes on working
    assert comfy_server.get_json("/system_stats")["system"]["comfyui_version"]
    entry = comfy_server.run_prompt(copy.deepcopy(api), timeout=300)
    assert comfy_server.output_images(entry, save)


# ---------------------------------------------------------------------------------------------- the frontend


@pytest.mark.parametrize("name", NAMES, scope="module")  # each API run, then its UI twin
def test_ui_workflow_loads_converts_and_runs(name, workflow_env, browser_page, comfy_server):
    ui, api = load_ui(name), load_api(name)
    registered = set(browser_page.registered_node_types())
    assert {n["type"] for n in ui["nodes"]} - registered == set(), "node types missing in the frontend"
    show_graph(browser_page, name)
    assert browser_page.page.locator("[role=dialog]").count() == 0, "loading the workflow opened a dialog"
    assert browser_page.evaluate("() => window.app.graph.nodes.length") == len(ui["nodes"])
    assert browser_page.graph_to_prompt()["output"] == api
    for class_type, values in RUN_SETTINGS.get(name, {}).items():
        browser_page.evaluate(SET_WIDGETS_JS, [class_type, values])
    assert browser_page.graph_to_prompt()["output"] == run_settings(name, api)
    quicken_graph(browser_page, name)
    entry = comfy_server.wait(browser_page.queue_prompt(), timeout=300)
    for nid in [*nodes_of(api, "SaveImage"), *nodes_of(api, "SaveVideo")]:
        assert comfy_server.output_images(entry, nid), f"{api[nid]['class_type']} {nid} saved nothing"
    # every result is drawn on its node (images, videos, texts), and no node is drawn over another
    shown = sorted(nid for nid, out in entry["outputs"].items() if out.get("images"))
    browser_page.page.wait_for_function(SHOWN_JS, arg=shown, timeout=30000)
    browser_page.page.wait_for_timeout(1000)  # drawn: the frontend lays the widgets out as it draws
    browser_page.screenshot(f"workflow_{name}")
    layout = browser_page.evaluate(LAYOUT_JS)
    assert overlapping(layout) == [], overlapping(layout)
    assert browser_page.unexpected_console_errors() == [], "\n".join(browser_page.console_errors)


def test_speed_settings_node_runs_in_the_real_host(workflow_env, comfy_server):
    """Load -> VToonify Speed Settings (plain path, folded up-sampling) -> Stylize Frames: same picture."""
    api = load_api("stylize_image")
    loader = next(iter(nodes_of(api, "VToonifyLoadModel")))
    stylize = next(iter(nodes_of(api, "VToonifyStylizeFrames")))
    save = next(iter(nodes_of(api, "SaveImage")))
    api["1"]["inputs"]["image"] = EXAMPLE_IMAGE
    api[stylize]["inputs"]["crop_mode"] = "whole frame (pad to 8)"
    api[loader]["inputs"]["precision"] = "fp32"
    reference = fetch_images(comfy_server, comfy_server.run_prompt(copy.deepcopy(api), timeout=300), save)[0]
    api["90"] = {"class_type": "VToonifySpeedSettings",
                 "inputs": {"vtoonify_model": [loader, 0], "bake_style": False, "channels_last": False,
                            "fold_upsampling": "on", "compile": "off"}}
    api[stylize]["inputs"]["vtoonify_model"] = ["90", 0]
    entry = comfy_server.run_prompt(copy.deepcopy(api), timeout=300)
    ran = {m["data"]["node"] for m in comfy_server.messages(entry["prompt"][1], "executing") if m["data"]["node"]}
    assert "90" in ran
    image = fetch_images(comfy_server, entry, save)[0]
    assert image.shape == reference.shape == (4 * SIZE, 4 * SIZE, 3)
    assert np.abs(image.astype(int) - reference.astype(int)).max() <= 1


def test_dropdown_values_are_checked_by_comfyui(workflow_env, comfy_server):
    """The nodes do not check their dropdowns again: ComfyUI refuses a value outside the list when the prompt
    is queued (HTTP 400, value_not_in_list naming the input), before any node runs."""
    api = load_api("stylize_image")
    loader = next(iter(nodes_of(api, "VToonifyLoadModel")))
    stylize = next(iter(nodes_of(api, "VToonifyStylizeFrames")))
    api["1"]["inputs"]["image"] = EXAMPLE_IMAGE
    api["90"] = {"class_type": "VToonifySpeedSettings",
                 "inputs": {"vtoonify_model": [loader, 0], "bake_style": True, "channels_last": True,
                            "fold_upsampling": "auto", "compile": "off"}}
    api[stylize]["inputs"]["vtoonify_model"] = ["90", 0]
    cases = [("90", "compile", "fastest"), ("90", "fold_upsampling", "always"), (stylize, "crop_mode", "face")]
    for node_id, name, value in cases:
        bad = copy.deepcopy(api)
        bad[node_id]["inputs"][name] = value
        with pytest.raises(AssertionError) as info:  # conftest.PromptRejected
            comfy_server.post_prompt(bad)
        assert getattr(info.value, "status", None) == 400, info.value
        errors = info.value.body["node_errors"][node_id]["errors"]
        assert [(e["type"], e["extra_info"]["input_name"], e["extra_info"]["received_value"]) for e in errors] == \
            [("value_not_in_list", name, value)], errors


def test_merge_ends_are_the_loaded_models_and_merges_are_cached(workflow_env, comfy_server):
    """The merge workflow on the real host with its 0.5 merge set to ratio 0 shows model A's picture in that
    panel, and set to ratio 1 with model B's exemplar codes model B's picture, pixel for pixel. Queued again
    with only the saved file's name changed, the merges are not run again: ComfyUI keeps the merged models."""
    api = load_api("vtoonify_merge_styles")
    merges = set(nodes_of(api, "VToonifyMergeModels"))
    half = node_by_title(api, "Merge: ratio 0.5")
    save = next(iter(nodes_of(api, "SaveImage")))
    size = workflow_env["portrait_out"]
    for ratio, exstyles, same, other in ((0.0, "a", 0, 3), (1.0, "b", 3, 0)):
        api[half]["inputs"].update(ratio=ratio, exstyles=exstyles)
        entry = comfy_server.run_prompt(copy.deepcopy(api), timeout=600)
        panels = merge_panels(fetch_images(comfy_server, entry, save)[0], size)
        assert np.array_equal(panels[1], panels[same]), f"ratio {ratio} is not model {'AB'[same // 3]}"
        assert not np.array_equal(panels[1], panels[other])
    api[save]["inputs"]["filename_prefix"] = "vtoonify/merge_styles_again"
    prompt_id = comfy_server.post_prompt(copy.deepcopy(api))
    entry = comfy_server.wait(prompt_id, timeout=600)
    ran = {m["data"]["node"] for m in comfy_server.messages(prompt_id, "executing") if m["data"]["node"]}
    (cached,) = comfy_server.messages(prompt_id, "execution_cached")
    assert merges <= set(cached["data"]["nodes"]) and not merges & ran and save in ran
    assert comfy_server.output_images(entry, save)


def test_saved_merge_is_listed_and_loads_back_equal(workflow_env, comfy_server):
    """Save VToonify Model on the real host: the merged model is written to models/vtoonify, Load VToonify
    Model lists it at once (although ComfyUI cached the folder's file list before) and loads it back: the
    same picture as the merged model gives."""
    api = load_api("vtoonify_merge_styles")
    half = node_by_title(api, "Merge: ratio 0.5")
    stylize_half = node_by_title(api, "Stylize Frames (0.5: the average)")
    image = node_by_title(api, "Load portrait")
    loader = node_by_title(api, "Load VToonify Model (A: cartoon)")
    name = "vtoonify_merged_host/vtoonify_s_d.safetensors"
    listed = comfy_server.object_info("VToonifyLoadModel")["VToonifyLoadModel"]["input"]["required"]["checkpoint"][0]
    assert name not in listed  # the file list is cached now
    api["90"] = {"class_type": "VToonifySaveModel",
                 "inputs": {"vtoonify_model": [half, 0], "filename_prefix": name[:-len(".safetensors")],
                            "overwrite": False}}
    api["91"] = {"class_type": "SaveImage", "inputs": {"images": [stylize_half, 0], "filename_prefix": "merged"}}
    entry = comfy_server.run_prompt(copy.deepcopy(api), timeout=600)
    assert entry["outputs"]["90"]["text"][0].startswith(f"Saved {name} with its exemplar style codes")
    folder = comfy_server.base / "models" / "vtoonify" / "vtoonify_merged_host"
    assert sorted(p.name for p in folder.iterdir()) == ["exstyle_code.safetensors", "vtoonify_s_d.safetensors"]
    listed = comfy_server.object_info("VToonifyLoadModel")["VToonifyLoadModel"]["input"]["required"]["checkpoint"][0]
    assert name in listed

    api["92"] = {"class_type": "VToonifyLoadModel", "inputs": {**api[loader]["inputs"], "checkpoint": name}}
    api["93"] = {"class_type": "VToonifyExtractStyle",
                 "inputs": {"vtoonify_model": ["92", 0], "image": [image, 0], "style_id": 26, "color_transfer": False}}
    api["94"] = {"class_type": "VToonifyStylizeFrames",
                 "inputs": {**api[stylize_half]["inputs"], "vtoonify_model": ["92", 0], "style": ["93", 0]}}
    api["95"] = {"class_type": "SaveImage", "inputs": {"images": ["94", 0], "filename_prefix": "merged_loaded"}}
    entry = comfy_server.run_prompt(copy.deepcopy(api), timeout=600)
    (merged,) = fetch_images(comfy_server, entry, "91")
    (loaded,) = fetch_images(comfy_server, entry, "95")
    assert_picture(loaded, workflow_env["portrait_out"])
    assert np.array_equal(loaded, merged)
    # queued again, the save node finds its file unchanged and leaves it alone
    stamp = (folder / "vtoonify_s_d.safetensors").stat().st_mtime_ns
    api["90"]["inputs"]["overwrite"] = True
    entry = comfy_server.run_prompt(copy.deepcopy(api), timeout=600)
    assert "already saved (same weights)" in entry["outputs"]["90"]["text"][0]
    assert (folder / "vtoonify_s_d.safetensors").stat().st_mtime_ns == stamp


def test_stylize_video_from_frames_in_memory_cancelled_and_resumed(workflow_env, comfy_server):
    """Stylize Video on a VIDEO held in memory (Load Video -> Get Video Components -> Create Video with
    the clip's fps and audio): cancelled after its first chunk, it leaves that chunk in the output
    folder; queued again it continues from there, and the video Save Video writes has every frame, the
    frame rate, the sound and the duration of the clip."""
    api = load_api("vtoonify_video_stream")
    (load,) = nodes_of(api, "LoadVideo")
    (stylize,) = nodes_of(api, "VToonifyStylizeVideo")
    (save,) = nodes_of(api, "SaveVideo")
    api["90"] = {"class_type": "GetVideoComponents", "inputs": {"video": [load, 0]}}
    api["91"] = {"class_type": "CreateVideo", "inputs": {"images": ["90", 0], "audio": ["90", 1], "fps": ["90", 2],
                                                         "bit_depth": 8}}
    api[stylize]["inputs"].update(video=["91", 0], chunk_size=2)
    api[save]["inputs"]["filename_prefix"] = "vtoonify/video_in_memory"

    def stylize_progress(prompt_id: str) -> list[int]:
        return [m["data"]["value"] for m in comfy_server.messages(prompt_id, "progress")
                if m["data"]["node"] == stylize]

    first = comfy_server.post_prompt(copy.deepcopy(api))
    deadline = time.monotonic() + 300
    while not any(v >= 2 for v in stylize_progress(first)):  # the first chunk (2 frames) is stylized
        assert time.monotonic() < deadline, "Stylize Video made no progress"
        time.sleep(0.05)
    comfy_server.post_json("/interrupt", {})
    entry = comfy_server.wait(first, timeout=300, check=False)
    assert entry["status"]["status_str"] == "error", "the run was not cancelled"
    folder = comfy_server.base / "output" / "vtoonify"
    manifests = [json.loads((p / "manifest.json").read_text())
                 for p in folder.glob(".*.vtoonify") if (p / "manifest.json").is_file()]
    # the source: the clip written losslessly from Create Video's frames and audio into the temp folder
    (manifest,) = [m for m in manifests if Path(m["source"]).name.startswith("frames_")]
    assert manifest["chunks"][0]["done"] and not all(c["done"] for c in manifest["chunks"])

    second = comfy_server.post_prompt(copy.deepcopy(api))
    entry = comfy_server.wait(second, timeout=300)
    values = stylize_progress(second)
    assert values[0] >= 2 and values[-1] == CLIP_FRAMES, values  # continued after the finished chunk
    (saved,) = comfy_server.output_images(entry, save)
    assert_clip_kept(video_facts(comfy_server.view(saved["filename"], saved["subfolder"])), workflow_env["clip_out"])


# ---------------------------------------------------------------------------------------------- the student template

#: the frames of the example clip the student template learns from in these tests (video_frames, from frame 0)
QUICK_FRAMES = 4
#: widgets set to tiny values before a template runs in these tests (template -> node title -> widget -> value):
#: the student template trains for 1000 steps on up to 300 frames as shipped, here for a few steps on the first
#: QUICK_FRAMES frames of the clip (about 20 s on 2 CPU cores)
QUICK: dict[str, dict[str, dict]] = {
    "vtoonify_student": {"Train VToonify Student": {"steps": 12, "frames_per_step": 2, "crop_size": 32,
                                                    "video_frames": QUICK_FRAMES}},
}

QUICK_JS = r"""
(quick) => {
  for (const [title, values] of Object.entries(quick)) {
    const nodes = window.app.graph.nodes.filter((n) => n.title === title);
    if (nodes.length !== 1) throw new Error(`${nodes.length} nodes titled ${title}`);
    for (const [name, value] of Object.entries(values)) {
      const widget = (nodes[0].widgets || []).find((w) => w.name === name);
      if (!widget) throw new Error(`${title}: no widget ${name}`);
      widget.value = value;
    }
  }
}
"""


def quick_settings(name: str, api: dict) -> dict:
    """``api`` with the tiny settings of :data:`QUICK` for this template."""
    for title, values in QUICK.get(name, {}).items():
        api[node_by_title(api, title)]["inputs"].update(values)
    return api


def quicken_graph(page, name: str) -> None:
    """The same tiny settings on the graph loaded in the frontend (before its Run)."""
    if name in QUICK:
        page.evaluate(QUICK_JS, QUICK[name])


def student_written(entry: dict, api: dict) -> str:
    """The file Train VToonify Student wrote (as Load VToonify Student lists it), from the text it shows;
    the text also says it learnt from the first QUICK_FRAMES frames of the VIDEO."""
    (train,) = nodes_of(api, "VToonifyTrainStudent")
    (text,) = entry["outputs"][train]["text"]
    assert text.startswith(f"Saved {STUDENT_PREFIX}_") and " (12 steps, loss " in text, text
    assert text.endswith(f"; learnt from frames 0-{QUICK_FRAMES - 1} of the video)."), text
    return text.split()[1]


def check_student_outputs(server, entry: dict, api: dict) -> None:
    """The student template: trained on the first frames of the VIDEO (Load Video into Train's video
    input), it stylized every frame of the clip, streamed (4x the whole frame), into a video with the
    clip's frame count, frame rate, sound and duration; and the still portrait (Stylize Frames (Student))."""
    (saved,) = server.output_images(entry, node_by_title(api, "Save Video (mp4 with sound)"))
    assert saved["filename"].endswith(".mp4") and saved["type"] == "output", saved
    assert_clip_kept(video_facts(server.view(saved["filename"], saved["subfolder"])), (4 * SIZE, 4 * SIZE))
    (stylize,) = nodes_of(api, "VToonifyStylizeVideoStudent")
    (shown,) = server.output_images(entry, stylize)  # the node's own preview: its MP4 in the temp folder
    assert shown["type"] == "temp" and shown["subfolder"] == "vtoonify" and shown["filename"].endswith(".mp4")
    assert_clip_kept(video_facts(server.view(shown["filename"], shown["subfolder"], "temp")), (4 * SIZE, 4 * SIZE))
    (load,) = nodes_of(api, "LoadVideo")
    (train,) = nodes_of(api, "VToonifyTrainStudent")
    inputs = api[train]["inputs"]
    assert inputs["video"] == [load, 0] and "images" not in inputs and api[stylize]["inputs"]["video"] == [load, 0]
    assert inputs["video_start"] == 0 and inputs["video_frames"] == QUICK_FRAMES < CLIP_FRAMES  # part of the clip
    name = student_written(entry, api)
    assert (server.base / "models" / "vtoonify_students" / name).is_file(), name
    (still,) = fetch_images(server, entry, node_by_title(api, "The portrait, by the student"))
    assert_picture(still, (4 * SIZE, 4 * SIZE))
    # the muted Load VToonify Student names the first file Train writes with the template's prefix
    ui = load_ui("vtoonify_student")
    (loader,) = [n for n in ui["nodes"] if n["type"] == "VToonifyLoadStudent"]
    assert loader["mode"] == MUTED and loader["widgets_values"][0] == STUDENT_FILE
    (shipped,) = [n for n in ui["nodes"] if n["type"] == "VToonifyTrainStudent"]
    assert shipped["widgets_values"][-2:] == [0, STUDENT_FRAMES]  # video_start, video_frames as shipped


def test_saved_student_loads_back_in_the_real_host(workflow_env, comfy_server):
    """The student template's saved student, loaded by Load VToonify Student (listed at once) and run by
    Stylize Frames (Student) on the clip's frames, gives the frames the trained one gave, pixel for pixel;
    ComfyUI keeps the trained student (Train is not run again while its inputs stay the same)."""
    api = quick_settings("vtoonify_student", load_api("vtoonify_student"))
    (stylize,) = nodes_of(api, "VToonifyStylizeFramesStudent")
    (load,) = nodes_of(api, "LoadVideo")
    (train,) = nodes_of(api, "VToonifyTrainStudent")
    api["88"] = {"class_type": "GetVideoComponents", "inputs": {"video": [load, 0]}}
    api["89"] = {"class_type": "VToonifyStylizeFramesStudent",
                 "inputs": {**api[stylize]["inputs"], "vtoonify_student": [train, 0], "images": ["88", 0]}}
    api["90"] = {"class_type": "SaveImage", "inputs": {"images": ["89", 0], "filename_prefix": "student_trained"}}
    entry = comfy_server.run_prompt(copy.deepcopy(api), timeout=300)
    name = student_written(entry, api)
    trained = fetch_images(comfy_server, entry, "90")
    assert len(trained) == CLIP_FRAMES and trained[0].shape == (4 * SIZE, 4 * SIZE, 3)
    listed = comfy_server.object_info("VToonifyLoadStudent")["VToonifyLoadStudent"]["input"]["required"]
    assert name in listed["student_name"][0], listed

    api["91"] = {"class_type": "VToonifyLoadStudent",
                 "inputs": {"student_name": name, "device": "auto", "precision": "fp32"}}
    api["92"] = {"class_type": "VToonifyStylizeFramesStudent",
                 "inputs": {**api["89"]["inputs"], "vtoonify_student": ["91", 0]}}
    api["93"] = {"class_type": "SaveImage", "inputs": {"images": ["92", 0], "filename_prefix": "student_loaded"}}
    prompt_id = comfy_server.post_prompt(copy.deepcopy(api))
    entry = comfy_server.wait(prompt_id, timeout=300)
    ran = {m["data"]["node"] for m in comfy_server.messages(prompt_id, "executing") if m["data"]["node"]}
    assert train not in ran and {"91", "92", "93"} <= ran, ran
    loaded = fetch_images(comfy_server, entry, "93")
    assert len(loaded) == CLIP_FRAMES
    for a, b in zip(trained, loaded):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert np.abs(trained[0].astype(float) - trained[-1].astype(float)).mean() > 0.5  # frames of a moving clip
