"""The page of a text model: a text box and a Classify button (Ctrl+Enter too), every task's
answer as for images (:mod:`headstart.serve.page`, whose script this one extends), and the
words of the text coloured by how much the answer rests on each (``/v1/explain``, occlusion:
green for the explained class, red against it; the score on hover)."""

from __future__ import annotations

import html

__all__ = ["TEXT_SCRIPT", "TEXT_STYLE", "text_body"]

TEXT_STYLE = """
#text{display:block;width:100%;min-height:140px;resize:vertical;padding:10px;
 font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;border:1px solid #9aa5bb;
 border-radius:8px}
#text:focus{outline:2px solid #2f6fec;border-color:#2f6fec}
.actions{display:flex;gap:10px;align-items:center;margin-top:10px}
.actions small{color:#8a93a6}
#count{margin-left:auto;color:#8a93a6;font-size:12px}
.words{font-size:17px;line-height:2;margin:0 0 8px;white-space:pre-wrap;overflow-wrap:anywhere}
.words .w{border-radius:4px;padding:2px 1px}
.key{color:#5b6478;font-size:12px;margin-bottom:8px}
.key span{padding:1px 6px;border-radius:4px;margin-right:6px}
"""


def text_body(max_chars: int) -> str:
    """The page's sections for a text model (``max_chars``: the server's length limit)."""
    limit = f" maxlength='{int(max_chars)}'" if max_chars > 0 else ""
    return f"""
<header><h1 id="title"></h1><p id="subtitle">loading model…</p></header>
<main>
<section>
 <h2>Text</h2>
 <div id="auth"><input id="token" type="password" placeholder="access token"
  autocomplete="off"><button id="save-token" type="button">Use token</button></div>
 <textarea id="text" aria-label="text to classify" placeholder="Type or paste a text to classify"
  {limit}></textarea>
 <div class="actions"><button id="classify" type="button">Classify</button>
  <small>or Ctrl+Enter</small><span id="count"></span></div>
 <p id="status"></p>
</section>
<section>
 <h2>Prediction</h2>
 <div id="answers"></div>
</section>
<section id="explain-box">
 <h2>{html.escape("Which words mattered")}</h2>
 <label id="explain-pick" hidden>Task <select id="explain-task"></select></label>
 <div class="key"><span style="background:rgba(19,145,95,.55)">for the class</span><span
  style="background:rgba(209,52,52,.55)">against it</span>removing the word moves its
  probability</div>
 <p id="words" class="words"></p>
 <div id="caption"></div>
</section>
</main>
"""


TEXT_SCRIPT = """
let currentText = null;  // the text on show, explained again when another task is picked
function showWords(ex) {
  const box = $('words'); box.textContent = '';
  // offsets count characters (code points), as Python does; JS strings count UTF-16 units
  const chars = Array.from(ex.text);
  const part = (a, b) => chars.slice(a, b).join('');
  const scores = ex.words.map((w) => w.score).filter((s) => s !== null);
  // colours are relative to the largest: a confident model's drops may all be tiny
  const scale = Math.max(0, ...scores.map(Math.abs)) || 1;
  let at = 0;
  for (const w of ex.words) {
    box.appendChild(document.createTextNode(part(at, w.start)));
    const span = el('span', 'w', part(w.start, w.end));
    if (w.score !== null) {
      const a = (Math.min(1, Math.abs(w.score) / scale) * 0.75).toFixed(3);
      span.style.background = (w.score > 0 ? 'rgba(19,145,95,' : 'rgba(209,52,52,') + a + ')';
      span.title = (w.score > 0 ? '+' : '') + w.score.toPrecision(3);
    }
    span.dataset.score = w.score === null ? '' : String(w.score);
    box.appendChild(span);
    at = w.end;
  }
  box.appendChild(document.createTextNode(part(at, chars.length)));
}
async function explainText(text) {
  if (!CFG.explain || !text) return;
  $('caption').textContent = 'scoring each word…';
  try {
    const body = {text};
    const task = $('explain-task').value;
    if (task) body.task = task;
    const ex = await api('/v1/explain', JSON.stringify(body));
    if (text !== currentText) return;  // another text was classified meanwhile
    showWords(ex);
    const where = MODEL && MODEL.tasks.length > 1 ? ' · task ' + ex.task : '';
    $('caption').textContent = 'words for ' + ex.target + ' (' + pct(ex.probability) + ')' +
      where;
  } catch (e) { $('caption').textContent = 'no word attributions: ' + e.message; }
}
async function classify() {
  const text = $('text').value.trim();
  if (!text) { status('type a text first', true); return; }
  currentText = text;
  $('answers').textContent = ''; $('words').textContent = ''; $('caption').textContent = '';
  status('predicting…');
  try {
    if (!MODEL) await loadModel();
    if (!MODEL) throw new Error('the model information is not available');
    const out = await api('/v1/predict?top_k=5', JSON.stringify({texts: [text]}));
    const r = out.results[0];
    if (r.error) throw new Error(r.error);
    showAnswers(r.tasks, r);
    status('');
  } catch (e) { status(e.message, true); return; }
  await explainText(text);
}
function count() {
  const n = Array.from($('text').value).length;
  $('count').textContent = CFG.max ? n + ' / ' + CFG.max : '';
}
$('classify').addEventListener('click', classify);
$('text').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); classify(); }
});
$('text').addEventListener('input', count);
$('explain-task').addEventListener('change', () => {
  $('words').textContent = ''; explainText(currentText);
});
count();
"""
