"""The page at ``/``: drop or choose an image (a text model: type a text and press Classify,
see :mod:`headstart.serve.page_text`), see every task's answer with bars, and the Grad-CAM
overlay (a text model: each word's attribution).  A plain classifier shows its top class and
the top-k; a model of several tasks shows one block per task; a multi-label task shows its
chosen labels with their scores, or "(none)".  An upload the model's OOD scorer flags gets a
warning above the answers: it looks unlike the training images, so the answer is a guess among
classes it may not belong to.

One self-contained document (inline CSS and JS, system fonts, no CDN), so it works offline and
under a strict Content-Security-Policy.  It talks to ``/v1/model``, ``/v1/predict`` and
``/v1/explain``; when the server wants a token, the page asks for it and keeps it in
``sessionStorage`` (never in the URL).
"""

from __future__ import annotations

import html
import json

from headstart.serve.page_text import TEXT_SCRIPT, TEXT_STYLE, text_body

__all__ = ["CSP", "render_page"]

#: The page is one inline document: nothing may load from anywhere but this server.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)

_STYLE = """
*{box-sizing:border-box}
[hidden]{display:none!important}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2330;
 background:#f4f6f9}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:18px;font-weight:600}
header p{margin:2px 0 0;color:#aab3c5;font-size:13px}
main{max-width:1040px;margin:0 auto;padding:20px;display:grid;gap:18px;
 grid-template-columns:repeat(auto-fit,minmax(300px,1fr))}
section{background:#fff;border-radius:10px;padding:16px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:14px;text-transform:uppercase;letter-spacing:.05em;color:#5b6478;margin:0 0 10px}
#drop{display:block;border:2px dashed #9aa5bb;border-radius:10px;padding:22px;text-align:center;
 cursor:pointer;color:#5b6478}
#drop.over{border-color:#2f6fec;background:#eef3fe}
#drop input{display:block;margin:10px auto 0}
img.shot{display:block;max-width:100%;max-height:340px;margin:12px auto 0;border-radius:6px}
.task+.task{margin-top:18px;padding-top:12px;border-top:1px solid #e7ebf2}
.task h3{margin:0;font-size:13px;font-weight:600;color:#5b6478}
.task h3 small{font-weight:400;margin-left:6px}
.top{font-size:24px;font-weight:650;margin:4px 0 12px;min-height:1.2em}
.top small{font-size:15px;color:#5b6478;font-weight:400;margin-left:6px}
.top .chip{margin-right:14px;white-space:nowrap}
.top .chip.long{white-space:normal;overflow-wrap:anywhere}
.top.none{color:#8a93a6;font-weight:400}
.several .top{font-size:20px}
.row{display:grid;grid-template-columns:minmax(70px,30%) 1fr 58px;gap:8px;align-items:center;
 margin:6px 0}
.row .label{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bar{background:#e7ebf2;border-radius:4px;height:14px;overflow:hidden}
.bar div{background:#2f6fec;height:100%}
.row.chosen .bar div{background:#13915f}
.p{text-align:right;font-variant-numeric:tabular-nums}
#status{min-height:1.3em;color:#5b6478;font-size:13px}
.warning{background:#fff4d6;border:1px solid #e8b730;color:#6b4e00;border-radius:8px;
 padding:10px 12px;margin-bottom:12px;font-size:14px}
.warning strong{display:block;font-size:15px;margin-bottom:2px}
.ood-score{color:#8a93a6;font-size:12px;margin-top:10px}
#status.error{color:#b3261e}
#auth{display:none;gap:8px;align-items:center;margin-bottom:10px}
#auth input{flex:1;padding:6px 8px;border:1px solid #9aa5bb;border-radius:6px}
button{padding:6px 12px;border:0;border-radius:6px;background:#2f6fec;color:#fff;cursor:pointer}
#explain-pick{display:block;color:#5b6478;font-size:13px;margin-bottom:6px}
#caption{color:#5b6478;font-size:13px;text-align:center;margin-top:6px}
"""

_BODY = """
<header><h1 id="title"></h1><p id="subtitle">loading model…</p></header>
<main>
<section>
 <h2>Image</h2>
 <div id="auth"><input id="token" type="password" placeholder="access token"
  autocomplete="off"><button id="save-token" type="button">Use token</button></div>
 <label id="drop">Drop an image here, or choose one
  <input id="file" type="file" accept="image/*"></label>
 <img id="preview" class="shot" alt="" hidden>
 <p id="status"></p>
</section>
<section>
 <h2>Prediction</h2>
 <div id="answers"></div>
</section>
<section id="explain-box">
 <h2>Where the model looked (Grad-CAM)</h2>
 <label id="explain-pick" hidden>Task <select id="explain-task"></select></label>
 <img id="overlay" class="shot" alt="Grad-CAM overlay" hidden>
 <div id="caption"></div>
</section>
</main>
"""

_SCRIPT = """
const CFG = JSON.parse(document.getElementById('config').textContent);
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem('headstart-token') || '';
let MODEL = null;  // what /v1/model says: the tasks, their classes and thresholds
let current = null;  // the file on show, explained again when another task is picked
$('title').textContent = CFG.title;
if (!CFG.explain) $('explain-box').hidden = true;
if (CFG.auth) { $('auth').style.display = 'flex'; $('token').value = token; }

function status(text, isError) {
  $('status').textContent = text; $('status').className = isError ? 'error' : '';
}
async function api(path, body) {
  const headers = token ? {'Authorization': 'Bearer ' + token} : {};
  // a string body is JSON (a text model's requests); a FormData one sets its own type
  if (typeof body === 'string') headers['Content-Type'] = 'application/json';
  const res = await fetch(path, {method: body ? 'POST' : 'GET', headers, body});
  const type = res.headers.get('content-type') || '';
  const data = type.includes('json') ? await res.json() : {error: res.statusText};
  if (res.status === 401) { $('auth').style.display = 'flex'; $('token').focus(); }
  if (!res.ok) throw new Error(data.error || ('HTTP ' + res.status));
  return data;
}
function pct(p) { return (100 * p).toFixed(1) + '%'; }
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
// one multi-class task: the page of a plain classifier (no task headings)
function plain() { return MODEL.tasks.length === 1 && !MODEL.tasks[0].multi_label; }
function bars(top, chosen) {
  const box = el('div', 'bars');
  // most probable first; the chosen ones (green) are those at or above their threshold
  const rows = [...top].sort((a, b) => b.probability - a.probability);
  for (const t of rows) {
    const row = el('div', chosen.includes(t.label) ? 'row chosen' : 'row');
    row.dataset.label = t.label;
    const bar = el('div', 'bar'); const fill = el('div'); fill.style.width = pct(t.probability);
    bar.appendChild(fill);
    const name = el('span', 'label', t.label); name.title = t.label;  // the whole of a cut name
    row.append(name, bar, el('span', 'p', pct(t.probability)));
    box.appendChild(row);
  }
  return box;
}
function headline(task, answer) {
  const top = el('div', 'top');
  const score = Object.fromEntries(answer.top.map((t) => [t.label, t.probability]));
  if (!answer.labels.length) { top.classList.add('none'); top.textContent = '(none)'; }
  for (const label of answer.labels) {
    const chip = el('span', label.length > 24 ? 'chip long' : 'chip', label);
    if (label in score) chip.appendChild(el('small', '', pct(score[label])));
    top.appendChild(chip);
  }
  return top;
}
function oodWarning(r) {
  // the model's OOD scorer flagged the image: above its threshold (null: no scorer)
  const w = el('div', 'warning'); w.id = 'ood-warning'; w.setAttribute('role', 'alert');
  w.appendChild(el('strong', '', 'This @NOUN@ looks unlike the training @NOUN@s'));
  const cut = MODEL && MODEL.ood ? ' > threshold ' + MODEL.ood.threshold.toFixed(3) : '';
  w.appendChild(document.createTextNode(
    'The answer below is a guess among classes it may not belong to (OOD score ' +
    r.ood_score.toFixed(3) + cut + ').'));
  return w;
}
function showAnswers(tasks, r) {
  const box = $('answers'); box.textContent = '';
  box.className = plain() ? '' : 'several';
  if (r && r.ood) box.appendChild(oodWarning(r));
  for (const task of MODEL.tasks) {
    const answer = tasks[task.name];
    if (!answer) continue;
    const block = el('div', 'task'); block.dataset.task = task.name;
    if (!plain()) {
      const h = el('h3', '', task.name);
      const kind = el('small', '', task.multi_label ? 'multi-label' : 'multi-class');
      if (task.multi_label) kind.title = 'a label is chosen (green) at or above its own threshold';
      h.appendChild(kind);
      block.appendChild(h);
    }
    block.append(headline(task, answer), bars(answer.top, answer.labels));
    box.appendChild(block);
  }
  if (r && r.ood_score !== null && r.ood_score !== undefined && !r.ood) {
    box.appendChild(el('div', 'ood-score', 'OOD score ' + r.ood_score.toFixed(3) +
      ': like the training @NOUN@s'));
  }
}
function figure(metrics, task) {
  const test = metrics && metrics.test;
  if (!test) return '';
  const m = test.tasks ? test.tasks[task.name] : test;  // older bundles: one task, no 'tasks'
  if (m && m.accuracy) return 'test accuracy ' + pct(m.accuracy.value);
  if (m && m.mean_ap) return 'test mAP ' + pct(m.mean_ap.value);
  return '';
}
async function loadModel() {
  try {
    const m = await api('/v1/model');
    MODEL = m;
    let text;
    if (plain()) {
      const fig = figure(m.metrics, m.tasks[0]);
      // a long list (e.g. 77 intents) is cut: the header stays one or two lines
      const many = m.classes.length > 12;
      const names = m.classes.slice(0, 12).join(', ') +
        (many ? ', … (' + (m.classes.length - 12) + ' more)' : '');
      text = m.classes.length + ' classes: ' + names + (fig ? ' · ' + fig : '');
    } else {
      text = m.tasks.map((t) => {
        const fig = figure(m.metrics, t);
        const kind = t.multi_label ? ' labels, multi-label' : ' classes';
        return t.name + ' (' + t.classes.length + kind + (fig ? ', ' + fig : '') + ')';
      }).join(' · ');
    }
    $('subtitle').textContent = text;
    const pick = $('explain-task'); pick.textContent = '';
    for (const t of m.tasks) pick.appendChild(new Option(t.name, t.name));
    $('explain-pick').hidden = m.tasks.length < 2;
  } catch (e) { $('subtitle').textContent = e.message; }
}
$('save-token').addEventListener('click', () => {
  token = $('token').value.trim(); sessionStorage.setItem('headstart-token', token);
  status(''); loadModel();
});
loadModel();
"""

_IMAGE_SCRIPT = """
async function explain(file) {
  if (!CFG.explain || !file) return;
  $('caption').textContent = 'computing Grad-CAM…';
  try {
    const form = new FormData(); form.append('file', file, file.name);
    const task = $('explain-task').value;
    const query = task ? '&task=' + encodeURIComponent(task) : '';
    const ex = await api('/v1/explain?format=json' + query, form);
    if (file !== current) return;  // another image was chosen meanwhile
    $('overlay').src = 'data:image/png;base64,' + ex.overlay_png_base64;
    $('overlay').hidden = false;
    const where = MODEL && MODEL.tasks.length > 1 ? ' · task ' + ex.task : '';
    $('caption').textContent = 'heat map for ' + ex.label + ' (' + pct(ex.probability) + ')' +
      where;
  } catch (e) { $('caption').textContent = 'no overlay: ' + e.message; }
}
async function handle(file) {
  if (!file) return;
  current = file;
  $('preview').src = URL.createObjectURL(file); $('preview').hidden = false;
  $('answers').textContent = '';
  $('overlay').hidden = true; $('caption').textContent = '';
  status('predicting…');
  try {
    if (!MODEL) await loadModel();
    if (!MODEL) throw new Error('the model information is not available');
    const form = new FormData(); form.append('files', file, file.name);
    const out = await api('/v1/predict?top_k=5', form);
    const r = out.results[0];
    if (r.error) throw new Error(r.error);
    showAnswers(r.tasks, r);
    status('');
  } catch (e) { status(e.message, true); return; }
  await explain(file);
}
$('file').addEventListener('change', (e) => handle(e.target.files[0]));
$('explain-task').addEventListener('change', () => {
  $('overlay').hidden = true; explain(current);
});
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault(); drop.classList.remove('over'); handle(e.dataTransfer.files[0]);
});
"""


def render_page(
    *, title: str, auth: bool, explain: bool, modality: str = "image", max_text_chars: int = 0
) -> str:
    """The page's HTML; ``auth`` shows the token field, ``explain`` the overlay panel (a text
    model's: the word attributions).  A text model (``modality="text"``) gets a text box
    instead of the image drop (``max_text_chars``: its length limit)."""
    text = modality == "text"
    noun = "text" if text else "image"
    config = json.dumps({"title": title, "auth": auth, "explain": explain, "max": max_text_chars})
    # the page says "image" or "text" in its messages
    script = (_SCRIPT + (TEXT_SCRIPT if text else _IMAGE_SCRIPT)).replace("@NOUN@", noun)
    # "</" inside the JSON must not end the <script> element early
    config = config.replace("</", "<\\/")
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}{TEXT_STYLE if text else ''}"
        f"</style></head><body>{text_body(max_text_chars) if text else _BODY}"
        f"<script id='config' type='application/json'>{config}</script>"
        f"<script>{script}</script></body></html>\n"
    )
