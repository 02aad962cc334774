"""The HTML report: written by every fit, self-contained (no network), every section present with
the run's real numbers, robust to moved images, and it renders in a real browser."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import headstart
from browser import CHROMIUM, CHROMIUM_ARGS
from headstart.cli.main import main
from headstart.errors import ConfigError, DataError, PathNotFoundError
from headstart.report import build_report
from headstart.report.maps import pca_2d
from headstart.result import FitResult
from headstart.stats import expected_calibration_error
from salt import copy_demo

SECTIONS = ("data", "curves", "metrics", "errors", "map", "card")
CLASSES = ("longsleeve", "shirt", "t-shirt")  # look alike: the gallery has errors to show


class _Page(HTMLParser):
    """Collects what the checks need: image sources, links, section ids and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.refs: list[str] = []
        self.sections: list[str] = []
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag == "section":
            self.sections.append(a.get("id") or "")
        if tag == "script":
            self.scripts += 1
        self.refs += [v for k, v in a.items() if k in ("href", "src") and v]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _split_proba(run_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    with (run_dir / "predictions.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    classes = [k[2:] for k in rows[0] if k.startswith("p:")]
    proba = np.array([[float(r[f"p:{c}"]) for c in classes] for r in rows])
    return proba, np.array([classes.index(r["label"]) for r in rows])


def _parse(path: Path) -> _Page:
    parser = _Page()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three look-alike demo classes fitted once; the fit writes the report itself."""
    data = tmp_path_factory.mktemp("data") / "clothes"
    copy_demo(data, CLASSES)
    mp = pytest.MonkeyPatch()
    mp.setenv("HEADSTART_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        out = tmp_path_factory.mktemp("runs") / "clothes"
        result = headstart.fit(data, out, progress=False)
        assert result.report == out / "report.html"
        yield out
    finally:
        mp.undo()


def test_fit_writes_a_self_contained_report(run_dir: Path) -> None:
    page = _parse(run_dir / "report.html")
    assert page.images, "no image in the report"
    assert all(src.startswith("data:image/") for src in page.images), page.images[:3]
    assert not [r for r in page.refs if r.startswith(("http:", "https:", "//"))]
    assert page.scripts == 0
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert page.sections == list(SECTIONS)
    size = (run_dir / "report.html").stat().st_size
    assert size < 1_500_000, f"report is {size} bytes"


def test_report_shows_the_runs_numbers(run_dir: Path) -> None:
    text = " ".join(_parse(run_dir / "report.html").text)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split, record in metrics.items():
        m = record["tasks"]["label"]
        acc = m["accuracy"]
        assert f"{100 * acc['value']:.1f}%" in text, split
        assert f"[{100 * acc['low']:.1f}%, {100 * acc['high']:.1f}%]" in text, split
        assert f"n={m['n']}" in text
    info = json.loads((run_dir / "model" / "model.json").read_text())
    assert info["backbone"]["weights_sha256"] in text
    proba, truth = _split_proba(run_dir, "test")
    assert f"test {expected_calibration_error(proba, truth):.3f}" in text  # the ECE caption
    assert "linear probe on frozen features: no training curves" in text.lower()
    assert "Answers which of 3 classes an image belongs to (longsleeve, shirt, t-shirt)" in text
    assert "per class" in text  # images-per-class wording in the intended use


def test_gallery_shows_the_most_confident_errors_with_gradcam(run_dir: Path) -> None:
    with (run_dir / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    wrong = sorted(
        (r for r in rows if r["label"] != r["predicted"]), key=lambda r: -float(r["confidence"])
    )
    assert wrong, "the look-alike classes should give at least one error"
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    errors = html.split('id="errors"')[1].split("</section>")[0]
    assert wrong[0]["path"] in errors
    shown = min(6, len(wrong))
    assert errors.count('alt="Grad-CAM overlay"') == shown
    assert errors.count('alt="image"') == shown


def _svg(html: str, label: str) -> str:
    start = html.index(f'aria-label="{label}"')
    return html[start : html.index("</svg>", start)]


def test_charts_are_inline_svg_showing_every_count(run_dir: Path) -> None:
    """Charts are inline SVG (no plotting library, no image to decode): the confusion matrix
    writes every non-zero count of metrics.json, the class balance has a bar per class."""
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "xmlns" not in html  # inline SVG needs no namespace URL
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split, record in metrics.items():
        chart = _svg(html, f"{split} confusion matrix")
        shown = sorted(int(t) for t in re.findall(r"<text [^>]*>(\d+)</text>", chart))
        counts = sorted(n for row in record["tasks"]["label"]["confusion"] for n in row if n)
        assert shown == counts, (split, shown, counts)
    balance = _svg(html, "class balance: images per class and split")
    for cls in CLASSES:
        assert f"<title>{cls} · train: " in balance
    proba, truth = _split_proba(run_dir, "test")
    ece = expected_calibration_error(proba, truth)
    assert f"test: ECE {ece:.3f} (n={len(truth)})" in _svg(html, "reliability diagram")


def test_a_cached_report_loads_no_model(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fit's report cached its overlays and map points: rebuilding needs no model (no
    scikit-learn, no torch) and shows the same overlays and map."""
    import headstart.model

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(headstart.model, "load", refuse)
    out = build_report(run_dir, output=tmp_path / "again.html")
    html = out.read_text(encoding="utf-8")
    first = (run_dir / "report.html").read_text(encoding="utf-8")
    for section in ("errors", "map"):
        again = html.split(f'id="{section}"')[1].split("</section>")[0]
        assert again == first.split(f'id="{section}"')[1].split("</section>")[0], section
    assert html.count('alt="Grad-CAM overlay"') == first.count('alt="Grad-CAM overlay"') > 0


def test_headstart_report_on_a_cached_run_imports_no_model_library(
    run_dir: Path, tmp_path: Path
) -> None:
    """What ``headstart report RUN`` costs a user once the fit cached its overlays: no
    scikit-learn, torch or onnxruntime in the process (each costs seconds to import)."""
    out = tmp_path / "fresh.html"
    script = (
        "import sys\n"
        "from headstart.cli.main import main\n"
        f"assert main(['report', {str(run_dir)!r}, '-o', {str(out)!r}]) == 0\n"
        "heavy = ('sklearn', 'scipy', 'torch', 'onnxruntime', 'matplotlib', 'lightning')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
    assert out.exists()


def test_a_damaged_map_cache_is_computed_again(run_dir: Path, tmp_path: Path) -> None:
    from headstart.cache import CacheRoot

    maps = sorted(CacheRoot.of(None).overlays.glob("map-*.npz"))
    assert maps, "the fit's report should have cached its map points"
    for path in maps:
        path.write_bytes(path.read_bytes()[:40])
    html = build_report(run_dir, output=tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<svg" in html.split('id="map"')[1].split("</section>")[0]
    assert all(len(p.read_bytes()) > 40 for p in maps)  # rewritten whole


def test_pca_2d_matches_the_exact_principal_axes() -> None:
    rng = np.random.default_rng(1)
    scales = np.concatenate([[5.0, 3.0], np.linspace(1.5, 0.1, 38)])
    x = rng.normal(size=(300, 40)) * scales + rng.normal(size=40)
    x = x @ np.linalg.qr(rng.normal(size=(40, 40)))[0]
    centred = x - x.mean(axis=0)
    exact = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    points = pca_2d(x)
    for k in range(2):
        assert abs(np.corrcoef(points[:, k], exact[:, k])[0, 1]) > 0.99999
    assert np.array_equal(points, pca_2d(x))  # seeded: the same picture every time


def test_report_survives_moved_images_and_draws_training_curves(
    run_dir: Path, tmp_path: Path
) -> None:
    """Images gone: the gallery says so and the map still comes from the embedding cache.
    A training log (fine-tuned run) becomes a curves figure."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    record = json.loads((copy / "run.json").read_text())
    record["data"] = str(tmp_path / "moved-away")
    (copy / "run.json").write_text(json.dumps(record))
    (copy / "logs").mkdir()
    (copy / "logs" / "metrics.csv").write_text(
        "epoch,step,train_loss,val_loss,val_acc\n0,10,1.2,,\n0,10,,1.0,0.6\n"
        "1,20,0.8,,\n1,20,,0.7,0.75\n2,30,0.5,0.6,0.8\n"
    )
    out = build_report(copy, output=tmp_path / "r.html", explain_errors=3)
    assert out == tmp_path / "r.html"
    page = _parse(out)
    html = out.read_text(encoding="utf-8")
    errors = html.split('id="errors"')[1].split("</section>")[0]
    assert errors.count("no longer on disk") == 3
    curves = html.split('id="curves"')[1].split("</section>")[0]
    assert "<svg" in curves and "3 epochs" in curves and "val_acc" in curves
    emb = html.split('id="map"')[1].split("</section>")[0]
    assert "<svg" in emb, emb[:300]
    assert "fine-tuned" in " ".join(page.text)


def test_bad_input_is_a_one_line_error(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(PathNotFoundError, match="nowhere"):
        build_report(tmp_path / "nowhere")
    with pytest.raises(DataError, match="not a headstart run folder"):
        build_report(tmp_path)
    with pytest.raises(ConfigError, match="umap"):
        build_report(run_dir, embedding_map="umap")
    with pytest.raises(ConfigError, match="-1"):
        build_report(run_dir, explain_errors=-1)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a headstart run folder" in err, err


def test_cli_writes_the_report_where_asked(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out" / "my.html"
    assert main(["report", str(run_dir), "-o", str(target), "--errors", "0"]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert _parse(target).sections == list(SECTIONS)
    assert not list(target.parent.glob(".*.tmp")), "temporary file left behind"


def test_report_renders_in_headless_chromium(run_dir: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package 'chromium')")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto((run_dir / "report.html").resolve().as_uri())
            page.wait_for_load_state("load")
            widths = page.evaluate("Array.from(document.images, i => i.naturalWidth)")
            charts = page.evaluate(
                "Array.from(document.querySelectorAll('svg.chart'), "
                "s => s.getBoundingClientRect().width)"
            )
            titles = page.evaluate("Array.from(document.querySelectorAll('h2'), h => h.innerText)")
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    Path("/tmp/report.png").write_bytes(shot)
    assert widths and all(w > 0 for w in widths), widths
    assert len(charts) >= 5 and all(w > 100 for w in charts), charts  # balance, 2 cm, rel, map
    assert len(titles) == len(SECTIONS)
    pixels = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float64)
    assert pixels.shape[0] > 2000, "full page should be long"
    assert pixels.std() > 20, "screenshot looks blank"


def test_a_two_task_report_covers_every_task(two_task_run: FitResult) -> None:
    assert two_task_run.report is not None
    page = _parse(two_task_run.report)
    assert page.sections == list(SECTIONS)
    text = " ".join(page.text)
    html = two_task_run.report.read_text(encoding="utf-8")
    for split in ("cv", "test"):
        left = two_task_run.metrics[split]["left"]
        items = two_task_run.metrics[split]["items"]
        assert f"{split} left accuracy" in text and f"{split} items mAP" in text
        assert f"{100 * left.accuracy.value:.1f}%" in text  # type: ignore[union-attr]
        assert f"{100 * items.mean_ap.value:.1f}%" in text  # type: ignore[union-attr]
    assert "left: which of 4 classes" in text and "items: which of 4 labels" in text
    errors = html.split('id="errors"')[1].split("</section>")[0]
    assert "left (multi-class)" in errors and "items (multi-label)" in errors
    assert errors.count('alt="Grad-CAM overlay"') >= 1
    assert "threshold" in html.split('id="metrics"')[1].split("</section>")[0]
