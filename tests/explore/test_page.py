"""``map.html``: one offline file that escapes every file name, and in headless Chromium draws
every point, shows a thumbnail on hover, switches projection and colouring and selects with a
drag (real demo photos; synthetic features with a clear cluster per class)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from browser import CHROMIUM, CHROMIUM_ARGS
from headstart.demo import demo_data_dir
from headstart.explore import projection
from headstart.explore.analysis import Exploration, analyse
from headstart.explore.page import GALLERY_SIZE, write_map
from headstart.explore.page_assets import SCRIPT

SCREENSHOT_FOR_REVIEW = Path("/tmp/explore-map.png")
CLASSES = ("hat", "pants", "shoes", "t-shirt")
NASTY = 'a"b</script>c&<img src=x>.jpg'  # a folder 'a"b<' holding 'script>c&<img src=x>.jpg'


def _exploration(root: Path, per_class: int = 20, dims: int = 64) -> Exploration:
    """Real demo photos under ``root`` (one renamed to a hostile path) with features clustered
    by class and a few mislabelled rows."""
    paths: list[Path] = []
    labels: list[str | None] = []
    for cls in CLASSES:
        for photo in sorted((demo_data_dir() / "train" / cls).glob("*.jpg"))[:per_class]:
            dest = root / cls / photo.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, dest)
            paths.append(dest)
            labels.append(cls)
    nasty = root / NASTY
    nasty.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(paths[0], nasty)
    paths[0] = nasty
    rng = np.random.default_rng(0)
    codes = np.array([CLASSES.index(str(c)) for c in labels])
    centres = rng.standard_normal((len(CLASSES), dims)) * 1.2
    features = (centres[codes] + rng.standard_normal((len(paths), dims))).astype(np.float32)
    n = len(paths)
    predicted: list[str | None] = list(labels)
    flipped = [1, per_class + 1, 2 * per_class + 1]
    for i in flipped:
        predicted[i] = CLASSES[(codes[i] + 1) % len(CLASSES)]
    issue = rng.uniform(0, 0.3, n)
    issue[flipped] = [0.95, 0.9, 0.85]
    issue[7] = np.nan  # a row that was not judged
    hdbscan = codes.copy()
    hdbscan[rng.choice(n, 6, replace=False)] = -1
    outlier = rng.uniform(0, 1, n)
    return Exploration(
        paths=paths,
        labels=labels,
        predicted=predicted,
        confidence=[float(c) for c in rng.uniform(0.4, 1.0, n)],
        clusters={"kmeans": codes.copy(), "hdbscan": hdbscan},
        cluster_metrics={
            "kmeans": {"k": 4, "silhouette": 0.41, "purity": 1.0, "ari": 1.0, "nmi": 1.0},
            "hdbscan": {"k": 4, "noise": 0.075, "purity": 0.93, "ari": 0.88, "nmi": 0.9},
        },
        typical={
            m: {c: [int(i) for i in np.flatnonzero(codes == c)[:6]] for c in range(len(CLASSES))}
            for m in ("kmeans", "hdbscan")
        },
        outlier_score=outlier,
        label_issue_score=issue,
        features=features,
        classes=list(CLASSES),
        label_issues=flipped,
        root=root,
        task="label",
    )


def _payload(page: str) -> dict[str, Any]:
    block = re.search(r'<script type="application/json" id="hs-data">(.*?)</script>', page, re.S)
    assert block is not None
    data: dict[str, Any] = json.loads(block.group(1))
    return data


@pytest.fixture()
def no_umap(monkeypatch: pytest.MonkeyPatch) -> None:
    """UMAP reported missing, whether or not umap-learn is installed here."""
    monkeypatch.setattr(projection, "umap_unavailable", lambda: "UMAP unavailable: test says so")


def test_the_page_is_one_offline_file_and_escapes_every_path(tmp_path: Path, no_umap: None) -> None:
    ex = _exploration(tmp_path / "data", per_class=6)
    out = write_map(tmp_path / "out" / "map.html", ex, methods=("pca", "umap"))
    page = out.read_text(encoding="utf-8")
    assert page.count("</script>") == 2  # the JSON block's and the script's: no path closes one
    assert "<img src=x>" not in page and 'a"b' not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched
    assert "@import" not in page and '<link rel="stylesheet"' not in page
    data = _payload(page)
    assert data["paths"] == [ex.relative(i) for i in range(len(ex.paths))]
    assert data["paths"][0] == NASTY
    assert all(t is None or t.startswith("data:image/jpeg;base64,") for t in data["thumbs"])
    assert sum(t is not None for t in data["thumbs"]) == len(ex.paths)
    assert data["issue"][7] is None  # NaN is no JSON: a row without a score says so
    assert [(m["id"], m["available"]) for m in data["methods"]] == [("pca", True), ("umap", False)]
    assert data["methods"][1]["note"] == "UMAP unavailable: test says so"
    assert list(data["maps"]) == ["pca"] and len(data["maps"]["pca"]) == 2 * len(ex.paths)
    assert min(data["maps"]["pca"]) >= 0 and max(data["maps"]["pca"]) <= 1
    assert not list(out.parent.glob(".*.tmp"))  # written atomically


def test_without_thumbnails_the_page_is_small_and_an_unreadable_image_is_no_error(
    tmp_path: Path,
) -> None:
    ex = _exploration(tmp_path / "data", per_class=6)
    ex.paths[3].write_bytes(b"not a jpeg")
    with_thumbs = write_map(tmp_path / "a.html", ex, methods=("pca",))
    data = _payload(with_thumbs.read_text(encoding="utf-8"))
    assert data["thumbs"][3] is None and data["thumbs"][2] is not None
    assert any("could not be read" in note for note in data["notes"])
    bare = write_map(tmp_path / "b.html", ex, thumbnails=False, methods=("pca",))
    assert "data:image/jpeg" not in bare.read_text(encoding="utf-8")
    thumbs = sum(t is not None for t in data["thumbs"])
    assert with_thumbs.stat().st_size - bare.stat().st_size > 1000 * thumbs  # >= 1 KB each


def test_the_script_parses(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node to check the script's syntax (the browser test runs it)")
    script = tmp_path / "map.js"
    script.write_text(SCRIPT, encoding="utf-8")
    done = subprocess.run([node, "--check", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_real_analysis_makes_a_page(tmp_path: Path) -> None:
    ex = _exploration(tmp_path / "data", per_class=8)
    found = analyse(ex.features, ex.paths, ex.labels, root=ex.root, task="label")
    data = _payload(write_map(tmp_path / "map.html", found, methods=("pca",)).read_text("utf-8"))
    assert len(data["paths"]) == len(ex.paths) and data["paths"][0] == NASTY
    assert set(data["clusters"]) == set(found.clusters) and data["typical"]
    assert data["issue"] is not None and len(data["galleries"]["outliers"]) == GALLERY_SIZE
    assert data["galleries"]["issues"]  # flagged rows, or else the highest scores (with a note)
    assert bool(data["issues_note"]) == (not found.label_issues)


def test_the_map_in_a_browser_hovers_switches_and_selects(tmp_path: Path, no_umap: None) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    ex = _exploration(tmp_path / "data")
    n = len(ex.paths)
    out = write_map(tmp_path / "map.html", ex, methods=("pca", "tsne", "umap"))
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            requests: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(out.as_uri())
            page.wait_for_function("window.__headstartMap && window.__headstartMap.points().length")
            points = page.evaluate("window.__headstartMap.points()")
            assert len(points) == n  # every image is drawn
            assert page.evaluate("window.__headstartMap.method()") == "pca"
            assert page.locator("#projection option[value=umap]").is_disabled()
            assert "test says so" in page.locator("#method-note").inner_text()

            # hover: the point farthest from the others, so no neighbour answers instead
            xy = np.array([[p["x"], p["y"]] for p in points])
            gaps = np.sort(np.linalg.norm(xy[:, None] - xy[None], axis=2), axis=1)[:, 1]
            lonely = points[int(np.argmax(gaps))]
            page.mouse.move(lonely["x"], lonely["y"])
            tooltip = page.locator("#tooltip")
            tooltip.wait_for(state="visible")
            assert tooltip.locator("img").count() == 1
            assert tooltip.locator("img").evaluate("i => i.complete && i.naturalWidth > 0")
            assert ex.paths[lonely["i"]].name in tooltip.inner_text()

            # switch projection and colouring
            page.select_option("#projection", "tsne")
            assert page.evaluate("window.__headstartMap.method()") == "tsne"
            moved = page.evaluate("window.__headstartMap.points()")
            assert [p["i"] for p in moved] == list(range(n)) and moved != points
            page.select_option("#colour", "cluster:hdbscan")
            assert page.evaluate("window.__headstartMap.colourBy()") == "cluster:hdbscan"
            legend = page.locator("#legend .legend-row")
            assert legend.count() == 5 and "noise" in legend.nth(4).inner_text()
            page.select_option("#colour", "issue")
            legend_text = page.locator("#legend").inner_text()
            assert "suspicious" in legend_text and "no score" in legend_text  # row 7: NaN
            assert "null" not in legend_text
            page.select_option("#colour", "label")

            # a box drag around the left half of the points selects exactly those
            xs = sorted(p["x"] for p in moved)
            x_mid = (xs[n // 2 - 1] + xs[n // 2]) / 2
            top = min(p["y"] for p in moved) - 5
            bottom = max(p["y"] for p in moved) + 5
            left = xs[0] - 5
            page.mouse.move(left, top)
            page.mouse.down()
            page.mouse.move((left + x_mid) / 2, (top + bottom) / 2, steps=4)
            page.mouse.move(x_mid, bottom, steps=4)
            page.mouse.up()
            expected = sorted(p["i"] for p in moved if p["x"] <= x_mid)
            assert page.evaluate("window.__headstartMap.selected()") == expected
            assert page.locator("#sel-count").inner_text() == f"{len(expected)} images"
            assert page.locator("#sel-list li").count() == len(expected)
            page.click("#copy")
            page.wait_for_function("document.getElementById('copy-status').textContent")
            assert page.locator("#copy-status").inner_text() == f"copied {len(expected)} paths"
            # shift-click on a selected point takes it out again
            xy = np.array([[p["x"], p["y"]] for p in moved])
            gaps = np.sort(np.linalg.norm(xy[:, None] - xy[None], axis=2), axis=1)[:, 1]
            chosen = moved[max(expected, key=lambda i: gaps[i])]  # moved[i] is point i
            page.keyboard.down("Shift")
            page.mouse.click(chosen["x"], chosen["y"])
            page.keyboard.up("Shift")
            expected.remove(chosen["i"])
            assert page.evaluate("window.__headstartMap.selected()") == expected
            with page.expect_download() as download:
                page.click("#download")
            saved = Path(download.value.path()).read_text(encoding="utf-8").split("\n")
            assert saved[:-1] == [ex.relative(i) for i in expected]

            # the panels: typical strips, metrics, galleries with given -> suggested
            assert page.locator("#typical .cluster-row").count() == 4
            assert "ARI" in page.locator("#metrics").inner_text()
            assert page.locator("#outliers figure").count() == min(n, GALLERY_SIZE)
            issues = page.locator("#issues figure")
            assert issues.count() == 3 and "hat → pants" in issues.first.inner_text()
            shown = moved[len(moved) // 3]
            page.mouse.move(shown["x"], shown["y"])  # the tooltip in the picture
            tooltip.wait_for(state="visible")
            page.screenshot(path=str(SCREENSHOT_FOR_REVIEW), full_page=True)
            assert not errors
            assert all(u.startswith(("file:", "data:", "blob:")) for u in requests)
        finally:
            browser.close()
