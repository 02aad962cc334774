"""The first half of ``map.html``'s script: the canvas map (colours, drawing, hover, zoom, pan,
selection); :data:`headstart.explore.page_assets.SCRIPT` ends it with the legend and the panels
(both halves share one function scope)."""

from __future__ import annotations

__all__ = ["MAP_SCRIPT"]

MAP_SCRIPT = r"""
(() => {
"use strict";
const D = JSON.parse(document.getElementById("hs-data").textContent);
const N = D.n;
const $ = (id) => document.getElementById(id);
const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"];
const TAB20 = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728",
  "#ff9896", "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f",
  "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5"];
const GREY = "#c2c7cf";
const RAMP = [[206, 214, 226], [253, 174, 97], [215, 25, 28], [103, 0, 13]];  // low -> high
const LEVELS = 64;
const CELL = 24;
const LIST_MAX = 200;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const kid of kids) if (kid != null) e.append(kid);
  return e;
}
const fmt = (v, d = 3) => v == null ? "n/a" : Number.isInteger(v) ? String(v) : v.toFixed(d);
const baseName = (p) => p.slice(p.lastIndexOf("/") + 1);
const plural = (n, one, many) => `${n.toLocaleString()} ${n === 1 ? one : many || one + "s"}`;
const NOUN = D.texts ? "text" : "image";  // what one point is

function rampColour(t) {
  const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x)), f = x - i;
  const c = RAMP[i].map((v, k) => Math.round(v + f * (RAMP[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
const RAMP_COLOURS = Array.from({length: LEVELS}, (_, i) => rampColour(i / (LEVELS - 1)));
function palette(n) {
  if (n <= 10) return TAB10.slice(0, n);
  if (n <= 20) return TAB20.slice(0, n);
  return Array.from({length: n}, (_, i) => `hsl(${(i * 137.508) % 360},62%,${i % 2 ? 40 : 58}%)`);
}
// One fixed shuffle: categories are drawn interleaved, so no class hides another by coming last.
const SHUFFLED = (() => {
  const order = Array.from({length: N}, (_, i) => i);
  let s = 12345;
  for (let i = N - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2147483648;
    const j = s % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
})();

// -- what the points are coloured by ---------------------------------------------------------
const COLOURINGS = [];
if (D.labels.some((v) => v != null)) COLOURINGS.push({id: "label", name: "given label"});
if (D.predicted.some((v) => v != null)) COLOURINGS.push({id: "predicted", name: "predicted label"});
for (const m of Object.keys(D.clusters)) {
  COLOURINGS.push({id: "cluster:" + m, name: `cluster (${m})`});
}
COLOURINGS.push({id: "outlier", name: "outlier score"});
if (D.issue) COLOURINGS.push({id: "issue", name: "label-issue score"});

function scoreSpec(id) {
  const v = id === "outlier" ? D.outlier : D.issue;
  const order = Array.from({length: N}, (_, i) => i);
  order.sort((a, b) => (v[a] ?? -1) - (v[b] ?? -1));  // the highest scores drawn on top
  const colour = v.map((x) => x == null ? GREY : RAMP_COLOURS[Math.round(x * (LEVELS - 1))]);
  const missing = v.filter((x) => x == null).length;
  return {kind: "score", id, colour, order, values: v, missing};
}

function categorySpec(id) {
  let names, keys;
  if (id === "label" || id === "predicted") {
    const src = id === "label" ? D.labels : D.predicted;
    names = D.classes.slice();
    const index = new Map(names.map((c, i) => [c, i]));
    for (const v of src) {
      if (v != null && !index.has(v)) { index.set(v, names.length); names.push(v); }
    }
    keys = src.map((v) => v == null ? -1 : index.get(v));
  } else {
    const ids = D.clusters[id.slice(8)];
    const found = [...new Set(ids)].filter((c) => c >= 0).sort((a, b) => a - b);
    const index = new Map(found.map((c, i) => [c, i]));
    names = found.map((c) => "cluster " + c);
    keys = ids.map((c) => c < 0 ? -1 : index.get(c));
  }
  const colours = palette(names.length);
  const groups = names.map((name, k) => ({name, colour: colours[k], rows: []}));
  const none = {name: id.startsWith("cluster") ? "noise" : "none", colour: GREY, rows: []};
  keys.forEach((k, i) => (k < 0 ? none : groups[k]).rows.push(i));
  if (none.rows.length) groups.push(none);
  const colour = keys.map((k) => k < 0 ? GREY : colours[k]);
  return {kind: "category", id, colour, order: SHUFFLED, groups};
}
const specOf = (id) => id === "outlier" || id === "issue" ? scoreSpec(id) : categorySpec(id);

// -- state and geometry ----------------------------------------------------------------------
const plot = $("plot"), cPoints = $("points"), cOver = $("overlay"), tip = $("tooltip");
const pctx = cPoints.getContext("2d"), octx = cOver.getContext("2d");
const pos = new Float32Array(2 * N);
const available = D.methods.filter((m) => m.available);
const S = {
  method: available.length ? available[0].id : null, spec: null, k: 1, tx: 0, ty: 0,
  selected: new Set(), hover: -1, focus: -1, mode: "select", drag: null,
  W: 0, H: 0, dpr: 1, grid: new Map(),
};
const BASE_RADIUS = N > 5000 ? 2.2 : N > 1500 ? 3 : N > 400 ? 4 : 5;
const radius = () => BASE_RADIUS * Math.min(2.5, Math.sqrt(S.k));

function resize() {
  const r = plot.getBoundingClientRect();
  S.W = r.width; S.H = r.height; S.dpr = window.devicePixelRatio || 1;
  for (const c of [cPoints, cOver]) {
    c.width = Math.round(S.W * S.dpr); c.height = Math.round(S.H * S.dpr);
  }
  layout();
}

function layout() {
  const m = S.method ? D.maps[S.method] : [];
  const pad = 20, s = Math.max(10, Math.min(S.W, S.H) - 2 * pad);
  const x0 = (S.W - s) / 2, y0 = (S.H - s) / 2;
  S.grid = new Map();
  for (let i = 0; i < N && m.length; i++) {
    const x = (x0 + m[2 * i] * s) * S.k + S.tx, y = (y0 + (1 - m[2 * i + 1]) * s) * S.k + S.ty;
    pos[2 * i] = x; pos[2 * i + 1] = y;
    if (x < 0 || y < 0 || x > S.W || y > S.H) continue;
    const key = Math.floor(x / CELL) * 65536 + Math.floor(y / CELL);
    const cell = S.grid.get(key);
    if (cell) cell.push(i); else S.grid.set(key, [i]);
  }
  drawPoints(); drawOverlay();
}

function nearest(x, y, reach) {
  let best = -1, bestD = reach * reach;
  const cx = Math.floor(x / CELL), cy = Math.floor(y / CELL);
  for (let dx = -1; dx <= 1; dx++) for (let dy = -1; dy <= 1; dy++) {
    for (const i of S.grid.get((cx + dx) * 65536 + cy + dy) || []) {
      const d = (pos[2 * i] - x) ** 2 + (pos[2 * i + 1] - y) ** 2;
      if (d <= bestD) { bestD = d; best = i; }
    }
  }
  return best;
}

function drawPoints() {
  const ctx = pctx, r = radius(), spec = S.spec;
  ctx.setTransform(S.dpr, 0, 0, S.dpr, 0, 0);
  ctx.clearRect(0, 0, S.W, S.H);
  if (!spec || !S.method) return;
  ctx.globalAlpha = N > 3000 ? 0.78 : 0.9;
  ctx.strokeStyle = "rgba(255,255,255,0.85)"; ctx.lineWidth = 0.8;
  const outline = N <= 3000;
  let current = null;
  const flush = () => { if (current !== null) { ctx.fill(); if (outline) ctx.stroke(); } };
  for (const i of spec.order) {
    const x = pos[2 * i], y = pos[2 * i + 1];
    if (x < -r || y < -r || x > S.W + r || y > S.H + r) continue;
    const c = spec.colour[i];
    if (c !== current) { flush(); ctx.fillStyle = c; current = c; ctx.beginPath(); }
    ctx.moveTo(x + r, y); ctx.arc(x, y, r, 0, 2 * Math.PI);
  }
  flush();
  ctx.globalAlpha = 1;
}

function ring(ctx, i, r, colour, width) {
  ctx.beginPath(); ctx.arc(pos[2 * i], pos[2 * i + 1], r, 0, 2 * Math.PI);
  ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.stroke();
}

function drawOverlay() {
  const ctx = octx, r = radius();
  ctx.setTransform(S.dpr, 0, 0, S.dpr, 0, 0);
  ctx.clearRect(0, 0, S.W, S.H);
  if (S.selected.size) {
    ctx.beginPath();
    for (const i of S.selected) {
      ctx.moveTo(pos[2 * i] + r + 1.5, pos[2 * i + 1]);
      ctx.arc(pos[2 * i], pos[2 * i + 1], r + 1.5, 0, 2 * Math.PI);
    }
    ctx.strokeStyle = "#111"; ctx.lineWidth = 1.5; ctx.stroke();
  }
  if (S.focus >= 0) {
    ring(ctx, S.focus, r + 6, "#fff", 5); ring(ctx, S.focus, r + 6, "#2f6fde", 2.5);
  }
  if (S.hover >= 0) { ring(ctx, S.hover, r + 3, "#fff", 4); ring(ctx, S.hover, r + 3, "#111", 2); }
  const d = S.drag;
  if (d && d.box) {
    const x = Math.min(d.x0, d.x), y = Math.min(d.y0, d.y);
    ctx.fillStyle = "rgba(47,111,222,0.08)";
    ctx.fillRect(x, y, Math.abs(d.x - d.x0), Math.abs(d.y - d.y0));
    ctx.setLineDash([5, 4]); ctx.strokeStyle = "#2f6fde"; ctx.lineWidth = 1.2;
    ctx.strokeRect(x, y, Math.abs(d.x - d.x0), Math.abs(d.y - d.y0)); ctx.setLineDash([]);
  }
}

// -- tooltip ---------------------------------------------------------------------------------
function thumb(i, cls) {
  if (D.texts) return el("div", {class: "nothumb textthumb", text: D.texts[i], title: D.paths[i]});
  const uri = D.thumbs[i];
  return uri ? el("img", {src: uri, alt: baseName(D.paths[i]), title: D.paths[i], class: cls || ""})
    : el("div", {class: "nothumb", text: "no thumbnail", title: D.paths[i]});
}
function describe(i) {
  const rows = [];
  if (D.labels[i] != null) rows.push(["label", D.labels[i]]);
  if (D.predicted[i] != null) {
    const c = D.confidence[i];
    rows.push(["predicted", D.predicted[i] + (c == null ? "" : ` (${Math.round(c * 100)}%)`)]);
  }
  const clusters = Object.entries(D.clusters)
    .map(([m, ids]) => `${m} ${ids[i] < 0 ? "noise" : ids[i]}`);
  if (clusters.length) rows.push(["cluster", clusters.join(" · ")]);
  rows.push(["outlier", fmt(D.outlier[i], 2)]);
  if (D.issue) rows.push(["label issue", fmt(D.issue[i], 2)]);
  return rows;
}
function showTip(i) {
  const table = el("table", null, ...describe(i).map(([k, v]) =>
    el("tr", null, el("td", {text: k}), el("td", {text: v}))));
  tip.replaceChildren(thumb(i), el("div", {class: "path", text: D.paths[i]}), table);
  tip.hidden = false;
  const x = pos[2 * i], y = pos[2 * i + 1], w = tip.offsetWidth, h = tip.offsetHeight;
  tip.style.left = (x + 16 + w > S.W ? Math.max(0, x - 16 - w) : x + 16) + "px";
  tip.style.top = (y + 16 + h > S.H ? Math.max(0, y - 16 - h) : y + 16) + "px";
}
function hideTip() { tip.hidden = true; }

// -- pointer: hover, click, box select, pan, zoom --------------------------------------------
function local(e) {
  const r = cOver.getBoundingClientRect();
  return {x: e.clientX - r.left, y: e.clientY - r.top};
}
cOver.addEventListener("pointerdown", (e) => {
  if (e.button !== 0 && e.button !== 1) return;
  cOver.setPointerCapture(e.pointerId);
  const p = local(e);
  S.drag = {x0: p.x, y0: p.y, x: p.x, y: p.y, tx: S.tx, ty: S.ty, moved: false, box: false,
    pan: S.mode === "pan" || e.button === 1, shift: e.shiftKey};
  if (S.drag.pan) e.preventDefault();
});
cOver.addEventListener("pointermove", (e) => {
  const p = local(e), d = S.drag;
  if (d) {
    d.x = p.x; d.y = p.y;
    if (Math.hypot(p.x - d.x0, p.y - d.y0) > 4) d.moved = true;
    if (!d.moved) return;
    hideTip(); S.hover = -1;
    if (d.pan) { S.tx = d.tx + p.x - d.x0; S.ty = d.ty + p.y - d.y0; layout(); }
    else { d.box = true; drawOverlay(); }
    return;
  }
  const i = nearest(p.x, p.y, radius() + 5);
  if (i !== S.hover) { S.hover = i; if (i >= 0) showTip(i); else hideTip(); drawOverlay(); }
});
cOver.addEventListener("pointerup", (e) => {
  const d = S.drag;
  S.drag = null;
  if (!d) return;
  if (d.box) {
    const x1 = Math.min(d.x0, d.x), x2 = Math.max(d.x0, d.x);
    const y1 = Math.min(d.y0, d.y), y2 = Math.max(d.y0, d.y);
    const inside = [];
    for (let i = 0; i < N; i++) {
      const x = pos[2 * i], y = pos[2 * i + 1];
      if (x >= x1 && x <= x2 && y >= y1 && y <= y2) inside.push(i);
    }
    select(inside, d.shift);
  } else if (!d.moved) {
    const p = local(e), i = nearest(p.x, p.y, radius() + 5);
    if (i < 0) { if (!d.shift) select([], false); }
    else if (d.shift) {
      if (S.selected.has(i)) S.selected.delete(i); else S.selected.add(i);
      renderSelection();
    }
    else select([i], false);
  }
  drawOverlay();
});
cOver.addEventListener("pointerleave", () => {
  if (!S.drag) { S.hover = -1; hideTip(); drawOverlay(); }
});
cOver.addEventListener("wheel", (e) => {
  e.preventDefault();
  const p = local(e), k = Math.min(80, Math.max(0.5, S.k * Math.exp(-e.deltaY * 0.0015)));
  S.tx = p.x - (p.x - S.tx) * k / S.k; S.ty = p.y - (p.y - S.ty) * k / S.k; S.k = k;
  hideTip(); S.hover = -1; layout();
}, {passive: false});
function resetView() { S.k = 1; S.tx = 0; S.ty = 0; layout(); }
$("reset").addEventListener("click", resetView);
cOver.addEventListener("dblclick", resetView);
function setMode(mode) {
  S.mode = mode; plot.classList.toggle("pan", mode === "pan");
  $("mode-select").classList.toggle("on", mode === "select");
  $("mode-pan").classList.toggle("on", mode === "pan");
}
$("mode-select").addEventListener("click", () => setMode("select"));
$("mode-pan").addEventListener("click", () => setMode("pan"));
document.addEventListener("keydown", (e) => { if (e.key === "Escape") select([], false); });

// -- selection -------------------------------------------------------------------------------
function select(rows, add) {
  if (!add) S.selected = new Set();
  for (const i of rows) S.selected.add(i);
  renderSelection();
}
const selectedRows = () => [...S.selected].sort((a, b) => a - b);
const selectedText = () => selectedRows().map((i) => D.paths[i]).join("\n") + "\n";
function renderSelection() {
  const rows = selectedRows();
  $("sel-count").textContent = plural(rows.length, NOUN);
  for (const id of ["copy", "download", "clear"]) $(id).disabled = rows.length === 0;
  $("copy-status").textContent = "";
  const items = rows.slice(0, LIST_MAX).map((i) =>
    el("li", {text: D.paths[i], title: "show on the map", onclick: () => focusOn(i)}));
  if (rows.length > LIST_MAX) {
    items.push(el("li", {class: "more",
      text: `… and ${(rows.length - LIST_MAX).toLocaleString()} more (copy or download has all)`}));
  }
  $("sel-list").replaceChildren(...items);
  drawOverlay();
}
$("clear").addEventListener("click", () => select([], false));
$("copy").addEventListener("click", async () => {
  const text = selectedText(), n = S.selected.size;
  let ok = false;
  try { await navigator.clipboard.writeText(text); ok = true; } catch (_) {
    const area = el("textarea"); area.value = text; document.body.append(area); area.select();
    try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
    area.remove();
  }
  $("copy-status").textContent = ok ? `copied ${plural(n, "path")}`
    : "copying failed: use Download";
});
$("download").addEventListener("click", () => {
  const url = URL.createObjectURL(new Blob([selectedText()], {type: "text/plain"}));
  const a = el("a", {href: url, download: "paths.txt"});
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
});
function focusOn(i) {
  const x = pos[2 * i], y = pos[2 * i + 1];
  if (x < 0 || y < 0 || x > S.W || y > S.H) resetView();
  S.focus = i; drawOverlay(); showTip(i);
  plot.scrollIntoView({block: "nearest"});
}
"""
