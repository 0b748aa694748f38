// VToonify web UI: model-file status and downloads on "Load VToonify Model", a searchable
// exemplar-style picker on "Extract Style Code"; VToonify nodes grow for their panels and previews
// only into free canvas, never over other nodes. Touches VToonify* nodes only; every hook chains
// the callback that was there before. Server side: nodes/routes.py (routes under /vtoonify/).
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const LOAD_NODE = "VToonifyLoadModel";
const EXTRACT_NODE = "VToonifyExtractStyle";
const DOWNLOAD_EVENT = "vtoonify.download";

/** Call `callback` after whatever `object[property]` did before (if anything). */
function chainCallback(object, property, callback) {
  const original = object[property];
  object[property] = function (...args) {
    const result = original?.apply(this, args);
    callback.apply(this, args);
    return result;
  };
}

function findWidget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") e.style.cssText = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

const PANEL_STYLE =
  "font: 11px/1.4 sans-serif; color: var(--input-text, #ddd); background: var(--comfy-input-bg, #222);" +
  "border-radius: 6px; padding: 4px 6px; overflow: auto; box-sizing: border-box;";
const LINK_STYLE = "color: var(--p-primary-color, #8ab4f8); text-decoration: underline; cursor: pointer;";
const PATH_STYLE =
  "font: 10px monospace; padding: 0 3px; border-radius: 3px; background: rgba(255,255,255,.08); user-select: all;";
const BUTTON_STYLE =
  "font: 11px sans-serif; margin: 1px 4px 1px 0; padding: 1px 6px; cursor: pointer; border-radius: 4px;" +
  "border: 1px solid var(--border-color, #555); background: var(--comfy-menu-bg, #333); color: inherit;";

const MAX_PANEL_HEIGHT = 260;
/** Canvas pixels a VToonify node keeps free between itself and a node it grows towards. */
const NODE_GAP = 6;

/** The canvas rectangle `[x0, y0, x1, y1]` a node covers, its title bar included. */
function nodeRect(node) {
  const title = LiteGraph.NODE_TITLE_HEIGHT ?? 30;
  const collapsed = !!node.flags?.collapsed;
  const width = collapsed ? (node._collapsed_width ?? node.size[0]) : node.size[0];
  const height = collapsed ? 0 : node.size[1];
  return [node.pos[0], node.pos[1] - title, node.pos[0] + width, node.pos[1] + height];
}

/** The canvas rectangle `[x0, y0, x1, y1]` of a group (title bar included). */
function groupRect(group) {
  const [x, y] = group.pos ?? group._bounding ?? [0, 0];
  const [w, h] = group.size ?? (group._bounding ? [group._bounding[2], group._bounding[3]] : [0, 0]);
  return [x, y, x + w, y + h];
}

/** `[width, height]` for `node`, less whatever growth would cover another node or group of its
 * graph or leave the group it is in: a VToonify node grows only into free canvas, never over a
 * neighbour (and never below its size). What it already overlaps (placed so by the user) does not
 * hold it back. */
function fitSize(node, [width, height]) {
  const graph = node.graph;
  const [x0, y0, x1, y1] = nodeRect(node);
  const inside = (r) => r[0] <= x0 && r[1] <= y0 && r[2] >= x1 && r[3] >= y1;
  const apart = (r) => r[0] >= x1 || r[2] <= x0 || r[1] >= y1 || r[3] <= y0;
  const nodes = [...(graph?._nodes ?? graph?.nodes ?? [])].filter((n) => n !== node).map(nodeRect);
  const groups = [...(graph?._groups ?? graph?.groups ?? [])].map(groupRect);
  const obstacles = [...nodes, ...groups].filter(apart);
  let maxW = Math.max(node.size[0], width);
  let maxH = Math.max(node.size[1], height);
  for (const g of groups.filter(inside)) { // stay inside the groups the node is in
    maxW = Math.min(maxW, g[2] - NODE_GAP - node.pos[0]);
    maxH = Math.min(maxH, g[3] - NODE_GAP - node.pos[1]);
  }
  for (const r of obstacles) { // to the right, beside the node's current rows
    if (r[0] >= x1 && r[1] < y1 && r[3] > y0) maxW = Math.min(maxW, r[0] - NODE_GAP - node.pos[0]);
  }
  const w = Math.max(node.size[0], maxW);
  for (const r of obstacles) { // below, across the node's (new) width
    if (r[1] >= y1 && r[0] < node.pos[0] + w && r[2] > x0) maxH = Math.min(maxH, r[1] - NODE_GAP - node.pos[1]);
  }
  return [w, Math.max(node.size[1], maxH)];
}

/** Image and video previews the frontend adds to a VToonify node (progress previews, output images)
 * take the room the node has: they no longer ask for a minimum height, which made the frontend grow
 * the node over its neighbours; the node grows into free canvas below it for them, if there is any. */
function keepPreviewsInside(node) {
  const add = node.addCustomWidget;
  node.addCustomWidget = function (widget, ...rest) {
    const added = add.call(this, widget, ...rest) ?? widget;
    const name = String(added?.name ?? "");
    if (typeof added?.computeLayoutSize === "function" && /preview/i.test(name) && !name.startsWith("vtoonify")) {
      const layout = added.computeLayoutSize.bind(added);
      const wants = Number(layout(this)?.minHeight) || 0;
      const free = Math.max(0, Number(this.freeWidgetSpace) || 0);
      if (wants > free) this.setSize?.(fitSize(this, [this.size[0], this.size[1] + wants - free]));
      added.computeLayoutSize = (n) => ({ ...layout(n), minHeight: 0 });
    }
    return added;
  };
}

/** A panel (DOM widget) below the node's widgets; not saved in workflows or prompts. The node
 * grows to show it into free canvas (never over another node, never below the size a user gave
 * it); what does not fit scrolls. `panel.vtoonifyFit()` lets the panel grow to its content after a
 * change (up to MAX_PANEL_HEIGHT; an open <details> list counts with its summary line only, the
 * rest scrolls). */
function addPanel(node, name, minHeight, minWidth) {
  const panel = el("div", { class: `vtoonify-panel ${name}`, style: PANEL_STYLE });
  let wanted = minHeight; // what the content asks for
  let granted = minHeight; // what the node has room for
  const widget = node.addDOMWidget(name, "vtoonify-panel", panel, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => granted,
    getMaxHeight: () => Math.max(granted, MAX_PANEL_HEIGHT),
  });
  widget.serialize = false;
  const grow = () => {
    granted = wanted;
    const size = node.computeSize?.() ?? node.size;
    const target = [Math.max(node.size[0], size[0], minWidth), Math.max(node.size[1], size[1])];
    const fitted = fitSize(node, target);
    granted = Math.max(0, wanted - (target[1] - fitted[1])); // the rest scrolls
    node.setSize?.(fitted);
    node.setDirtyCanvas?.(true, true);
  };
  panel.vtoonifyFit = () => requestAnimationFrame(() => {
    // the height of the content itself (not of the box, which may be taller): its lines and padding
    let content = 8;
    for (const child of panel.children) {
      content += child.tagName === "DETAILS" ? (child.querySelector("summary")?.offsetHeight ?? 0) : child.offsetHeight;
    }
    // the frontend gives the element the widget's height less a margin above and below
    const margin = 2 * (Number(widget.margin) || 0);
    const need = Math.min(MAX_PANEL_HEIGHT, Math.max(minHeight, Math.ceil(content) + margin + 1));
    if (need > wanted || granted < wanted) {
      wanted = Math.max(wanted, need);
      grow();
    }
  });
  requestAnimationFrame(grow);
  return panel;
}

async function getJSON(route) {
  const res = await api.fetchApi(route, { cache: "no-store" });
  return { ok: res.ok, status: res.status, data: await res.json().catch(() => ({})) };
}

const posix = (name) => String(name ?? "").replaceAll("\\", "/");

// ------------------------------------------------------------------------------------------------
// downloads (shared by every Load VToonify Model node)

const downloads = {
  states: {},
  listeners: new Set(),
  timer: null,
  update(states) {
    this.states = { ...this.states, ...states };
    for (const fn of this.listeners) fn();
    const busy = Object.values(this.states).some((s) => s.status === "queued" || s.status === "downloading");
    if (busy && !this.timer) this.timer = setInterval(() => this.poll(), 1000);
    if (!busy && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  },
  async poll() {
    try {
      const { ok, data } = await getJSON("/vtoonify/downloads");
      if (ok) this.update(data.downloads ?? {});
    } catch {
      /* the server went away: keep the last state */
    }
  },
  async start(name) {
    const res = await api.fetchApi("/vtoonify/download", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name }),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.error ?? `download refused (${res.status})`);
    this.update({ [name]: data });
    return data;
  },
};

api.addEventListener(DOWNLOAD_EVENT, (event) => {
  const state = event.detail;
  if (state?.name) downloads.update({ [state.name]: state });
});

function formatBytes(n) {
  if (!n) return "0 MB";
  return `${(n / 1048576).toFixed(n < 10485760 ? 1 : 0)} MB`;
}

/** A download error as the panel shows it after "Download failed: ": without a leading "download: "
 * (the input name the server's messages may start with), so that it never reads "Download failed:
 * download: ...". */
function downloadErrorText(error) {
  let text = String(error ?? "").trim();
  while (/^download:\s*/i.test(text)) text = text.replace(/^download:\s*/i, "");
  return text || "unknown error";
}

function downloadLabel(state) {
  if (!state) return "";
  if (state.status === "queued") return "queued";
  if (state.status === "downloading") {
    const pct = state.total ? ` ${Math.floor((100 * state.bytes) / state.total)}%` : "";
    return `downloading${pct} (${formatBytes(state.bytes)}${state.total ? ` of ${formatBytes(state.total)}` : ""})`;
  }
  if (state.status === "done") return "downloaded";
  if (state.status === "present") return "present";
  if (state.status === "error") return `Download failed: ${downloadErrorText(state.error)}`;
  return state.status ?? "";
}

/** Official files the node's current choices need (checkpoint, encoder, parser, exemplar codes). */
function neededFiles(node, official) {
  const names = new Set(official.map((f) => f.name));
  const needed = [];
  const ckpt = posix(findWidget(node, "checkpoint")?.value);
  for (const w of ["checkpoint", "style_encoder", "face_parser"]) {
    const v = posix(findWidget(node, w)?.value);
    if (names.has(v)) needed.push(v);
  }
  const ex = posix(findWidget(node, "exstyle")?.value ?? "auto");
  if (ex === "auto" && ckpt.startsWith("vtoonify_d_")) {
    const beside = `${ckpt.split("/")[0]}/exstyle_code.npy`;
    if (names.has(beside)) needed.push(beside);
  } else if (names.has(ex)) needed.push(ex);
  return needed;
}

function setupLoadNode(node) {
  const panel = addPanel(node, "vtoonify_status", 100, 380);
  let files = [];
  let error = null;
  let listOpen = false;

  const render = () => {
    const scrolled = panel.scrollTop;
    panel.replaceChildren();
    if (error) {
      panel.append(el("div", {}, `model status unavailable: ${error}`));
      return;
    }
    if (!files.length) {
      panel.append(el("div", {}, "checking models/vtoonify…"));
      return;
    }
    const present = files.filter((f) => f.present);
    panel.append(
      el("div", { class: "vtoonify-summary" },
        `models/vtoonify: ${present.length} of ${files.length} official files present`));
    const byName = Object.fromEntries(files.map((f) => [f.name, f]));
    const row = (name, role) => {
      const f = byName[name];
      const state = downloads.states[name];
      const done = f?.present || state?.status === "done";
      const line = el("div", { class: `vtoonify-file ${done ? "present" : "missing"}`, "data-name": name },
        `${done ? "✓" : "✗"} ${name}${role ? ` (${role})` : ""} `);
      if (!done && f?.downloadable === false) {
        // on Google Drive only: the download route refuses it, so no button; where to get it by hand
        line.append(el("div", { class: "vtoonify-drive-only", style: "margin: 0 0 2px 12px; opacity: .9" },
          "Google Drive only: ",
          el("a", {
            class: "vtoonify-drive-link", target: "_blank", rel: "noopener noreferrer",
            href: /^https:\/\//.test(f.drive_url ?? "") ? f.drive_url : "https://drive.google.com/",
            title: f.drive_url, style: LINK_STYLE, onclick: (e) => e.stopPropagation(),
          }, "open its Drive folder"),
          ", save as ",
          el("code", { class: "vtoonify-target-path", style: PATH_STYLE }, f.path ?? `models/vtoonify/${name}`)));
      } else if (!done) {
        const busy = state && (state.status === "queued" || state.status === "downloading");
        if (busy) line.append(el("span", { class: "vtoonify-progress" }, downloadLabel(state)));
        else {
          line.append(el("button", {
            style: BUTTON_STYLE, class: "vtoonify-download", "data-name": name,
            onclick: async (e) => {
              e.stopPropagation();
              try {
                await downloads.start(name);
              } catch (err) {
                downloads.update({ [name]: { name, status: "error", error: err.message } });
              }
              render();
            },
          }, "Download"));
          if (state?.status === "error") {
            line.append(el("span", { class: "vtoonify-download-error" }, downloadLabel(state)));
          }
        }
      }
      return line;
    };
    const needed = neededFiles(node, files);
    if (needed.length) {
      panel.append(el("div", { style: "opacity: .8; margin-top: 2px" }, "this node needs:"));
      for (const n of needed) panel.append(row(n, byName[n]?.role));
    }
    const missing = files.filter((f) => !f.present && !needed.includes(f.name));
    if (missing.length) {
      const details = el("details", {}, el("summary", { style: "cursor: pointer" },
        `other missing official files (${missing.length})`));
      details.open = listOpen; // a re-render (download progress, a new choice) keeps the list as it was
      details.addEventListener("toggle", () => (listOpen = details.open));
      for (const f of missing) details.append(row(f.name, f.role));
      panel.append(details);
    }
    panel.scrollTop = scrolled;
    panel.vtoonifyFit();
  };

  const refresh = async () => {
    try {
      const { ok, data } = await getJSON("/vtoonify/models");
      if (!ok) throw new Error(data.error ?? "server error");
      files = data.files ?? [];
      error = null;
      downloads.update(data.downloads ?? {});
    } catch (err) {
      error = err.message;
    }
    render();
  };

  const finishedSeen = new Set();
  const listener = () => {
    const fresh = Object.values(downloads.states).filter((s) => s.status === "done" && !finishedSeen.has(s.name));
    for (const s of fresh) finishedSeen.add(s.name);
    if (fresh.length) refresh(); // a file arrived: read the folder again
    else render();
  };
  downloads.listeners.add(listener);
  chainCallback(node, "onRemoved", () => downloads.listeners.delete(listener));
  for (const name of ["checkpoint", "style_encoder", "face_parser", "exstyle"]) {
    const w = findWidget(node, name);
    if (w) chainCallback(w, "callback", render);
  }
  node.vtoonifyRefresh = refresh;
  refresh();
}

// ------------------------------------------------------------------------------------------------
// style picker

const styleNamesCache = new Map();

/** The Load VToonify Model node feeding `node` (through its vtoonify_model input), or null. */
function upstreamLoadNode(node) {
  const slot = node.findInputSlot?.("vtoonify_model") ?? -1;
  let current = slot >= 0 ? node.getInputNode?.(slot) : null;
  for (let hops = 0; current && hops < 8; hops++) {
    if (current.type === LOAD_NODE || current.comfyClass === LOAD_NODE) return current;
    current = current.inputs?.length ? current.getInputNode?.(0) : null; // through reroutes
  }
  return null;
}

async function styleNames(loadNode) {
  const checkpoint = findWidget(loadNode, "checkpoint")?.value;
  const exstyle = findWidget(loadNode, "exstyle")?.value ?? "auto";
  if (!checkpoint) return { names: [], note: "choose a checkpoint in Load VToonify Model" };
  const key = `${checkpoint}\n${exstyle}`;
  if (!styleNamesCache.has(key)) {
    const query = new URLSearchParams({ checkpoint, exstyle });
    const { ok, data } = await getJSON(`/vtoonify/styles?${query}`);
    if (!ok) return { names: [], note: data.error ?? "cannot read the style names" };
    if (!data.available) return { names: [], note: data.note ?? "no exemplar styles" };
    styleNamesCache.set(key, data);
  }
  return styleNamesCache.get(key);
}

function closePicker() {
  document.querySelector(".vtoonify-style-picker")?.remove();
}

function openPicker(node, names, anchor) {
  closePicker();
  const idWidget = findWidget(node, "style_id");
  const current = Number(idWidget?.value ?? 0);
  const search = el("input", {
    type: "search", placeholder: `search ${names.length} styles…`, class: "vtoonify-style-search",
    style: "width: 100%; box-sizing: border-box; margin-bottom: 4px; padding: 3px;",
  });
  const list = el("div", { class: "vtoonify-style-list", style: "max-height: 300px; overflow: auto;" });
  const box = el("div", {
    class: "vtoonify-style-picker",
    style: PANEL_STYLE + "position: fixed; z-index: 10000; width: 280px; padding: 6px;" +
      "box-shadow: 0 4px 16px rgba(0,0,0,.5); border: 1px solid var(--border-color, #555);",
  }, search, list);
  const choose = (id) => {
    if (idWidget) {
      idWidget.value = id;
      idWidget.callback?.(id);
    }
    node.setDirtyCanvas?.(true, true);
    closePicker();
  };
  const render = () => {
    const q = search.value.trim().toLowerCase();
    list.replaceChildren();
    names.forEach((name, id) => {
      if (q && !name.toLowerCase().includes(q) && String(id) !== q) return;
      list.append(el("div", {
        class: "vtoonify-style-item", "data-id": String(id),
        style: `cursor: pointer; padding: 1px 4px; border-radius: 3px;${id === current ? " background: rgba(128,128,255,.35);" : ""}`,
        onclick: () => choose(id),
      }, `${id}: ${name}`));
    });
    if (!list.childElementCount) list.append(el("div", { style: "opacity: .7" }, "no style matches"));
  };
  search.addEventListener("input", render);
  box.addEventListener("keydown", (e) => {
    if (e.key === "Escape") closePicker();
    e.stopPropagation();
  });
  render();
  const r = anchor.getBoundingClientRect();
  box.style.left = `${Math.max(4, Math.min(r.left, window.innerWidth - 290))}px`;
  box.style.top = `${Math.max(4, Math.min(r.bottom + 4, window.innerHeight - 360))}px`;
  document.body.append(box);
  setTimeout(() => {
    const outside = (e) => {
      if (!box.contains(e.target)) {
        closePicker();
        document.removeEventListener("pointerdown", outside, true);
      }
    };
    document.addEventListener("pointerdown", outside, true);
  }, 0);
  search.focus();
}

function setupExtractNode(node) {
  const panel = addPanel(node, "vtoonify_style_picker", 30, 300);
  // one row: the button keeps its whole label (never shrinks or wraps), the text beside it wraps and
  // the panel grows to show all of it (a long note, e.g. "... not in models/vtoonify yet", included)
  const label = el("span", { class: "vtoonify-style-name", style: "flex: 1 1 auto; min-width: 0; overflow-wrap: anywhere;" }, "");
  const button = el("button", {
    style: BUTTON_STYLE + "flex: none; white-space: nowrap;", class: "vtoonify-pick-style",
  }, "Pick style…");
  panel.append(el("div", { class: "vtoonify-style-row", style: "display: flex; align-items: baseline; gap: 2px;" },
    button, label));
  const show = (text) => {
    label.textContent = text;
    label.title = text; // the whole text, also where the node has no room to show all of it
    panel.vtoonifyFit();
  };

  const update = async () => {
    const idWidget = findWidget(node, "style_id");
    const id = Number(idWidget?.value ?? 0);
    const loadNode = upstreamLoadNode(node);
    if (!loadNode) {
      show(`style ${id}`);
      return;
    }
    try {
      const { names, note } = await styleNames(loadNode);
      show(names.length
        ? (id < names.length ? `style ${id}: ${names[id]}` : `style ${id}: out of range (0-${names.length - 1})`)
        : `style ${id}${note ? ` (${note})` : ""}`);
    } catch (err) {
      show(`style ${id}`);
    }
  };

  button.addEventListener("click", async (e) => {
    e.stopPropagation();
    const loadNode = upstreamLoadNode(node);
    if (!loadNode) {
      show("connect Load VToonify Model to vtoonify_model first");
      return;
    }
    try {
      const { names, note } = await styleNames(loadNode);
      if (!names.length) show(note ?? "no exemplar styles in this checkpoint");
      else openPicker(node, names, button);
    } catch (err) {
      show(`cannot list the styles: ${err.message}`);
    }
  });
  const idWidget = findWidget(node, "style_id");
  if (idWidget) chainCallback(idWidget, "callback", update);
  chainCallback(node, "onConnectionsChange", () => setTimeout(update, 0));
  chainCallback(node, "onConfigure", () => setTimeout(update, 0));
  node.vtoonifyUpdateStyle = update;
  setTimeout(update, 0);
}

// ------------------------------------------------------------------------------------------------

app.registerExtension({
  name: "VToonify.UI",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (String(nodeData?.name ?? "").startsWith("VToonify")) {
      chainCallback(nodeType.prototype, "onNodeCreated", function () {
        keepPreviewsInside(this);
      });
    }
    if (nodeData?.name === LOAD_NODE) {
      chainCallback(nodeType.prototype, "onNodeCreated", function () {
        setupLoadNode(this);
      });
    } else if (nodeData?.name === EXTRACT_NODE) {
      chainCallback(nodeType.prototype, "onNodeCreated", function () {
        setupExtractNode(this);
      });
    }
  },
});
