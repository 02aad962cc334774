"""The inline style and script of ``map.html`` (:mod:`headstart.explore.page`): plain CSS and
vanilla JavaScript on a 2-D canvas, no library and no network.  The script's first half (the
map) is :data:`headstart.explore.page_script.MAP_SCRIPT`; this module adds the legend, the
panels and the start-up.

The script reads the page's JSON block (``#hs-data``) and only ever sets ``textContent`` and
attributes from it (never ``innerHTML``), so file names cannot inject markup.  Points are drawn
on one canvas, hover/selection marks on a second one above it (a hover never redraws 10,000
points); hit-testing uses a grid of screen cells.  ``window.__headstartMap`` exposes the points'
screen positions and the selection for the browser tests.
"""

from __future__ import annotations

from headstart.explore.page_script import MAP_SCRIPT

__all__ = ["CSS", "SCRIPT"]

CSS = r"""
:root { --ink: #1d2430; --muted: #5b6574; --line: #dde2ea; --bg: #f4f6f9; --card: #fff;
  --accent: #2f6fde; --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--ink); background: var(--bg); }
header { padding: 14px 20px 0; }
h1 { font-size: 20px; margin: 0 0 2px; }
h2 { font-size: 14px; margin: 0 0 8px; display: flex; gap: 8px; align-items: center; }
h3 { font-size: 13px; margin: 14px 0 8px; display: flex; gap: 8px; align-items: center; }
h2 small { font-weight: 400; color: var(--muted); }
#summary { margin: 0; color: var(--muted); }
#notes { margin: 4px 0 0; padding-left: 18px; color: var(--muted); font-size: 12.5px; }
#notes:empty { display: none; }
main { display: grid; grid-template-columns: minmax(0, 1fr) 320px; gap: 14px; padding: 12px 20px; }
.mapcard, .card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
.mapcard { padding: 10px 12px 12px; min-width: 0; }
.card { padding: 12px; min-width: 0; }
aside { display: flex; flex-direction: column; gap: 14px; min-width: 0; }
.toolbar { display: flex; flex-wrap: wrap; gap: 8px 14px; align-items: center; }
.toolbar label { font-weight: 600; font-size: 13px; }
select, button { font: inherit; font-size: 13px; color: var(--ink); }
select { padding: 3px 6px; border: 1px solid #c3cad5; border-radius: 5px; background: #fff;
  margin-left: 4px; }
button { padding: 4px 10px; border: 1px solid #c3cad5; border-radius: 5px; background: #fff;
  cursor: pointer; }
button:hover:not(:disabled) { border-color: var(--accent); }
button:disabled { opacity: .45; cursor: default; }
.modes { display: inline-flex; }
.modes button { border-radius: 0; }
.modes button:first-child { border-radius: 5px 0 0 5px; }
.modes button:last-child { border-radius: 0 5px 5px 0; margin-left: -1px; }
.modes button.on { background: var(--accent); color: #fff; border-color: var(--accent); }
.help { color: var(--muted); font-size: 12px; }
.note { color: var(--muted); font-size: 12.5px; margin: 6px 0 0; }
.note:empty { display: none; }
.plot { position: relative; height: min(72vh, 760px); min-height: 360px; margin-top: 8px;
  border-radius: 6px; background: #fbfcfd; border: 1px solid #eceff4; overflow: hidden; }
.plot canvas { position: absolute; inset: 0; width: 100%; height: 100%; }
#overlay { cursor: crosshair; touch-action: none; }
.pan #overlay { cursor: grab; }
#tooltip { position: absolute; z-index: 3; pointer-events: none; background: #fff;
  border: 1px solid #c9d0db; border-radius: 8px; box-shadow: 0 4px 18px rgba(20, 30, 50, .18);
  padding: 8px; width: 250px; font-size: 12.5px; }
#tooltip img { display: block; max-width: 96px; max-height: 96px; border-radius: 4px;
  margin-bottom: 6px; }
#tooltip .path { font-family: var(--mono); font-size: 11.5px; word-break: break-all;
  margin-bottom: 4px; font-weight: 600; }
#tooltip table { border-collapse: collapse; }
#tooltip td { padding: 1px 8px 1px 0; vertical-align: top; }
#tooltip td:first-child { color: var(--muted); white-space: nowrap; }
.nothumb { width: 96px; height: 56px; display: flex; align-items: center; justify-content: center;
  background: #eef1f5; color: var(--muted); font-size: 11px; border-radius: 4px;
  margin-bottom: 6px; text-align: center; }
.nothumb.textthumb, figure .nothumb.textthumb, .strip .nothumb.textthumb { height: auto;
  min-height: 56px; padding: 6px; box-sizing: border-box; font-size: 11px; line-height: 1.3;
  text-align: left; align-items: flex-start; overflow: hidden; }
.nothumb.textthumb { width: 180px; }
figure .nothumb.textthumb, .strip .nothumb.textthumb { width: 104px; }
#legend { max-height: 320px; overflow: auto; }
.legend-row { display: flex; align-items: center; gap: 8px; padding: 2px 4px; border-radius: 4px;
  cursor: pointer; font-size: 13px; }
.legend-row:hover { background: #eef3fd; }
.swatch { width: 12px; height: 12px; border-radius: 50%; flex: none; }
.legend-row .name { overflow-wrap: anywhere; }
.count { margin-left: auto; color: var(--muted); font-variant-numeric: tabular-nums; }
.ramp { height: 12px; border-radius: 3px; margin-top: 4px; }
.ramp-ticks { display: flex; justify-content: space-between; color: var(--muted);
  font-size: 12px; margin-bottom: 8px; }
#issues-note { margin: 0 0 8px; }
#sel-count { font-weight: 400; color: var(--muted); }
.buttons { display: flex; gap: 6px; flex-wrap: wrap; }
#sel-list { margin: 8px 0 0; padding-left: 26px; max-height: 280px; overflow: auto;
  font-family: var(--mono); font-size: 11.5px; word-break: break-all; }
#sel-list li { cursor: pointer; }
#sel-list li.more { list-style: none; margin-left: -20px; color: var(--muted); cursor: default; }
.panels { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 14px;
  padding: 0 20px 24px; }
.wide { grid-column: 1 / -1; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 104px; cursor: pointer; }
figure img, figure .nothumb { width: 104px; height: 104px; object-fit: cover; border-radius: 5px;
  display: block; border: 1px solid var(--line); margin: 0; }
figure:hover img { outline: 2px solid var(--accent); }
figcaption { font-size: 11.5px; line-height: 1.3; margin-top: 3px; overflow-wrap: anywhere; }
figcaption .fname, figcaption .given { display: block; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
figcaption .score { color: var(--muted); }
#typical { max-height: 560px; overflow: auto; }
.cluster-row { margin-bottom: 10px; }
.cluster-head { display: flex; align-items: center; gap: 8px; font-size: 13px; margin-bottom: 4px;
  cursor: pointer; }
.cluster-head .mostly { color: var(--muted); }
.strip { display: flex; gap: 6px; overflow-x: auto; padding-bottom: 2px; }
.strip img, .strip .nothumb { width: 72px; height: 72px; object-fit: cover; border-radius: 4px;
  cursor: pointer; border: 1px solid var(--line); flex: none; margin: 0; }
table.metrics { border-collapse: collapse; min-width: 420px; font-size: 13px;
  font-variant-numeric: tabular-nums; }
table.metrics th, table.metrics td { padding: 4px 8px; border-bottom: 1px solid var(--line);
  text-align: right; }
table.metrics th:first-child, table.metrics td:first-child { text-align: left; }
.empty { color: var(--muted); font-size: 13px; margin: 0; }
@media (max-width: 900px) { main { grid-template-columns: 1fr; } }
"""

_PANELS_SCRIPT = r"""
// -- legend, notes, panels -------------------------------------------------------------------
function renderLegend() {
  const spec = S.spec, box = $("legend");
  $("legend-title").textContent = COLOURINGS.find((c) => c.id === spec.id).name;
  if (spec.kind === "score") {
    const top = [...spec.order].reverse().filter((i) => spec.values[i] != null).slice(0, 50);
    const stops = RAMP_COLOURS.filter((_, i) => i % 8 === 0 || i === LEVELS - 1).join(",");
    box.replaceChildren(
      el("div", {class: "ramp", style: `background: linear-gradient(to right, ${stops})`}),
      el("div", {class: "ramp-ticks"}, el("span", {text: "0 usual"}), el("span", {text: "0.5"}),
        el("span", {text: spec.id === "issue" ? "1 suspicious" : "1 unusual"})),
      spec.missing ? el("div", {class: "legend-row"},
        el("span", {class: "swatch", style: `background:${GREY}`}), el("span", {text: "no score"}),
        el("span", {class: "count", text: spec.missing.toLocaleString()})) : "",
      el("button", {type: "button", text: `Select the top ${top.length}`,
        onclick: (e) => select(top, e.shiftKey)}));
    return;
  }
  box.replaceChildren(...spec.groups.map((g) => el("div", {class: "legend-row",
    title: `click to select these ${NOUN}s (shift adds)`,
    onclick: (e) => select(g.rows, e.shiftKey)},
  el("span", {class: "swatch", style: `background:${g.colour}`}),
  el("span", {class: "name", text: g.name}),
  el("span", {class: "count", text: g.rows.length.toLocaleString()}))));
}

function renderNotes() {
  const method = D.methods.find((m) => m.id === S.method);
  const missing = D.methods.filter((m) => !m.available).map((m) => m.note);
  const notes = [method ? method.note : "", ...missing].filter(Boolean);
  $("method-note").textContent = notes.join(" · ");
}

function gallery(box, rows, caption) {
  if (!rows.length) {
    box.replaceChildren(el("p", {class: "empty", text: "nothing to show"}));
    return;
  }
  box.replaceChildren(...rows.map((i) => el("figure",
    {title: D.paths[i], onclick: () => focusOn(i)},
    thumb(i), el("figcaption", null, ...caption(i)))));
}

function renderTypical() {
  const m = $("typical-method").value, per = D.typical[m] || {}, ids = D.clusters[m] || [];
  const spec = categorySpec("cluster:" + m), colours = new Map();
  for (const g of spec.groups) if (g.rows.length) colours.set(ids[g.rows[0]], g.colour);
  const members = new Map();
  ids.forEach((c, i) => { if (members.has(c)) members.get(c).push(i); else members.set(c, [i]); });
  const shown = Object.keys(per).map(Number).filter((c) => c >= 0).sort((a, b) => a - b);
  const rows = shown.map((c) => {
    const rowsOf = members.get(c) || [], counts = new Map();
    for (const i of rowsOf) {
      const label = D.labels[i];
      if (label != null) counts.set(label, (counts.get(label) || 0) + 1);
    }
    const best = [...counts].sort((a, b) => b[1] - a[1])[0];
    const mostly = best ? `mostly ${best[0]} (${Math.round(100 * best[1] / rowsOf.length)}%)` : "";
    const strip = per[c].map((i) => {
      const t = thumb(i);
      t.addEventListener("click", () => focusOn(i));
      return t;
    });
    return el("div", {class: "cluster-row"},
      el("div", {class: "cluster-head", title: "click to select this cluster (shift adds)",
        onclick: (e) => select(rowsOf, e.shiftKey)},
      el("span", {class: "swatch", style: `background:${colours.get(c) || GREY}`}),
      el("strong", {text: `cluster ${c}`}), el("span", {text: plural(rowsOf.length, NOUN)}),
      el("span", {class: "mostly", text: mostly})),
      el("div", {class: "strip"}, ...strip));
  });
  const empty = el("p", {class: "empty", text: "no clusters"});
  $("typical").replaceChildren(...(rows.length ? rows : [empty]));
}

function renderMetrics() {
  const methods = Object.keys(D.metrics);
  if (!methods.length) { $("metrics-card").hidden = true; return; }
  const preferred = ["k", "noise", "silhouette", "purity", "ari", "nmi"];
  const keys = [...new Set(methods.flatMap((m) => Object.keys(D.metrics[m])))];
  keys.sort((a, b) => (preferred.indexOf(a) + 1 || 99) - (preferred.indexOf(b) + 1 || 99));
  const names = {k: "clusters", ari: "ARI", nmi: "NMI"};
  $("metrics").replaceChildren(el("table", {class: "metrics"},
    el("thead", null, el("tr", null, el("th", {text: "method"}),
      ...keys.map((k) => el("th", {text: names[k] || k})))),
    el("tbody", null, ...methods.map((m) => el("tr", null, el("td", {text: m}),
      ...keys.map((k) => el("td", {text: fmt(D.metrics[m][k])})))))));
}

function setColour(id) {
  S.spec = specOf(id); $("colour").value = id;
  if (id.startsWith("cluster:")) { $("typical-method").value = id.slice(8); renderTypical(); }
  renderLegend(); drawPoints();
}
function setMethod(id) {
  S.method = id; $("projection").value = id; S.focus = -1; hideTip(); renderNotes(); resetView();
}

// -- start -----------------------------------------------------------------------------------
const summary = [plural(N, NOUN)];
if (D.classes.length) summary.push(plural(D.classes.length, "class", "classes"));
if (D.task) summary.push(`task ${D.task}`);
if (D.root) summary.push(D.root);
$("summary").textContent = summary.join(" · ");
$("notes").replaceChildren(...D.notes.map((n) => el("li", {text: n})));
$("projection").replaceChildren(...D.methods.map((m) => el("option", m.available
  ? {value: m.id, text: m.name}
  : {value: m.id, text: m.name + " (unavailable)", disabled: "", title: m.note})));
$("colour").replaceChildren(...COLOURINGS.map((c) => el("option", {value: c.id, text: c.name})));
$("projection").addEventListener("change", (e) => setMethod(e.target.value));
$("colour").addEventListener("change", (e) => setColour(e.target.value));
const clusterMethods = Object.keys(D.clusters);
$("typical-method").replaceChildren(
  ...clusterMethods.map((m) => el("option", {value: m, text: m})));
$("typical-method").addEventListener("change", renderTypical);
if (!clusterMethods.length) $("typical-card").hidden = true; else renderTypical();
renderMetrics();
gallery($("outliers"), D.galleries.outliers, (i) => [
  el("span", {class: "fname", text: baseName(D.paths[i])}),
  el("span", {class: "score", text: `outlier ${fmt(D.outlier[i], 2)}`})]);
$("issues-note").textContent = D.issues_note;
if (!D.issue) $("issues-card").hidden = true;
else gallery($("issues"), D.galleries.issues, (i) => [
  el("span", {class: "given", text: `${D.labels[i]} → ${D.predicted[i]}`}),
  el("span", {class: "score", text: `score ${fmt(D.issue[i], 2)}`}),
  el("span", {class: "fname", text: baseName(D.paths[i])})]);
if ($("metrics-card").hidden && $("typical-card").hidden) $("clusters-card").hidden = true;
S.spec = specOf(COLOURINGS[0].id);
$("colour").value = COLOURINGS[0].id;
if (S.method) $("projection").value = S.method;
renderLegend(); renderNotes(); renderSelection();
new ResizeObserver(resize).observe(plot);
resize();

// For the browser tests: where each drawn point is on the screen, and what is selected.
window.__headstartMap = {
  points: () => {
    const r = cOver.getBoundingClientRect(), out = [];
    for (let i = 0; i < N; i++) {
      const x = pos[2 * i], y = pos[2 * i + 1];
      if (x >= 0 && y >= 0 && x <= S.W && y <= S.H) out.push({i, x: r.left + x, y: r.top + y});
    }
    return out;
  },
  selected: selectedRows,
  method: () => S.method,
  colourBy: () => S.spec.id,
  setMethod, setColour,
};
})();
"""

SCRIPT = MAP_SCRIPT + _PANELS_SCRIPT
"""The whole script: the map (:mod:`headstart.explore.page_script`), then the legend, notes and
panels, and the start-up."""
