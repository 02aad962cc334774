"""The page at ``/``: drop or choose an image, see the top-k with bars and the Grad-CAM overlay.

One self-contained document (inline CSS and JS, system fonts, no CDN), so it works offline and
under a strict Content-Security-Policy.  It talks to ``/v1/model``, ``/v1/predict`` and
``/v1/explain``; when the server wants a token, the page asks for it and keeps it in
``sessionStorage`` (never in the URL).
"""

from __future__ import annotations

import html
import json

__all__ = ["render_page"]

_STYLE = """
*{box-sizing:border-box}
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
#top{font-size:24px;font-weight:650;margin:4px 0 12px;min-height:1.2em}
#top small{font-size:15px;color:#5b6478;font-weight:400;margin-left:6px}
.row{display:grid;grid-template-columns:minmax(70px,30%) 1fr 58px;gap:8px;align-items:center;
 margin:6px 0}
.row .label{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bar{background:#e7ebf2;border-radius:4px;height:14px;overflow:hidden}
.bar div{background:#2f6fec;height:100%}
.row:first-child .bar div{background:#13915f}
.p{text-align:right;font-variant-numeric:tabular-nums}
#status{min-height:1.3em;color:#5b6478;font-size:13px}
#status.error{color:#b3261e}
#auth{display:none;gap:8px;align-items:center;margin-bottom:10px}
#auth input{flex:1;padding:6px 8px;border:1px solid #9aa5bb;border-radius:6px}
button{padding:6px 12px;border:0;border-radius:6px;background:#2f6fec;color:#fff;cursor:pointer}
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
 <div id="top"></div>
 <div id="bars"></div>
</section>
<section id="explain-box">
 <h2>Where the model looked (Grad-CAM)</h2>
 <img id="overlay" class="shot" alt="Grad-CAM overlay" hidden>
 <div id="caption"></div>
</section>
</main>
"""

_SCRIPT = """
const CFG = JSON.parse(document.getElementById('config').textContent);
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem('headstart-token') || '';
$('title').textContent = CFG.title;
if (!CFG.explain) $('explain-box').hidden = true;
if (CFG.auth) { $('auth').style.display = 'flex'; $('token').value = token; }

function status(text, isError) {
  $('status').textContent = text; $('status').className = isError ? 'error' : '';
}
async function api(path, body) {
  const headers = token ? {'Authorization': 'Bearer ' + token} : {};
  const res = await fetch(path, {method: body ? 'POST' : 'GET', headers, body});
  const type = res.headers.get('content-type') || '';
  const data = type.includes('json') ? await res.json() : {error: res.statusText};
  if (res.status === 401) { $('auth').style.display = 'flex'; $('token').focus(); }
  if (!res.ok) throw new Error(data.error || ('HTTP ' + res.status));
  return data;
}
function pct(p) { return (100 * p).toFixed(1) + '%'; }
function showTop(top) {
  const bars = $('bars'); bars.textContent = '';
  const best = top[0];
  $('top').textContent = best.label;
  const small = document.createElement('small'); small.textContent = pct(best.probability);
  $('top').appendChild(small);
  for (const t of top) {
    const row = document.createElement('div'); row.className = 'row'; row.dataset.label = t.label;
    const name = document.createElement('span'); name.className = 'label';
    name.textContent = t.label;
    const bar = document.createElement('div'); bar.className = 'bar';
    const fill = document.createElement('div'); fill.style.width = pct(t.probability);
    bar.appendChild(fill);
    const p = document.createElement('span'); p.className = 'p'; p.textContent = pct(t.probability);
    row.append(name, bar, p); bars.appendChild(row);
  }
}
async function loadModel() {
  try {
    const m = await api('/v1/model');
    const acc = m.metrics && m.metrics.test && m.metrics.test.accuracy;
    $('subtitle').textContent = m.classes.length + ' classes: ' + m.classes.join(', ') +
      (acc ? ' · test accuracy ' + pct(acc.value) : '');
  } catch (e) { $('subtitle').textContent = e.message; }
}
async function handle(file) {
  if (!file) return;
  $('preview').src = URL.createObjectURL(file); $('preview').hidden = false;
  $('top').textContent = ''; $('bars').textContent = '';
  $('overlay').hidden = true; $('caption').textContent = '';
  status('predicting…');
  try {
    const form = new FormData(); form.append('files', file, file.name);
    const out = await api('/v1/predict?top_k=5', form);
    const r = out.results[0];
    if (r.error) throw new Error(r.error);
    showTop(r.top);
    status('');
  } catch (e) { status(e.message, true); return; }
  if (!CFG.explain) return;
  $('caption').textContent = 'computing Grad-CAM…';
  try {
    const form = new FormData(); form.append('file', file, file.name);
    const ex = await api('/v1/explain?format=json', form);
    $('overlay').src = 'data:image/png;base64,' + ex.overlay_png_base64;
    $('overlay').hidden = false;
    $('caption').textContent = 'heat map for ' + ex.label + ' (' + pct(ex.probability) + ')';
  } catch (e) { $('caption').textContent = 'no overlay: ' + e.message; }
}
$('file').addEventListener('change', (e) => handle(e.target.files[0]));
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault(); drop.classList.remove('over'); handle(e.dataTransfer.files[0]);
});
$('save-token').addEventListener('click', () => {
  token = $('token').value.trim(); sessionStorage.setItem('headstart-token', token);
  status(''); loadModel();
});
loadModel();
"""


def render_page(*, title: str, auth: bool, explain: bool) -> str:
    """The page's HTML; ``auth`` shows the token field, ``explain`` the overlay panel."""
    config = json.dumps({"title": title, "auth": auth, "explain": explain})
    # "</" inside the JSON must not end the <script> element early
    config = config.replace("</", "<\\/")
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>{_BODY}"
        f"<script id='config' type='application/json'>{config}</script>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )
