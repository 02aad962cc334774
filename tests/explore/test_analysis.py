"""explore on real tiny photos: planted label errors and foreign images are found, clusters
follow the classes, an unlabelled folder works, and exported cluster folders fit."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from headstart.config import FitConfig, load_config
from headstart.errors import ConfigError, DataError
from headstart.explore import Exploration, explore, export_folders, label_issues
from headstart.features import EmbeddingStore

CLASSES = ("hat", "pants", "shoes", "t-shirt")
FOREIGN = ("chelsea", "rocket", "coffee")  # a cat, a rocket, a coffee cup: no clothes
STORE_ANSWERS: list[bool] = []  # what explore's neighbour queries to the store returned


def _config(cache: Path) -> FitConfig:
    return load_config(overrides=[f"extract.cache_dir={cache}"])


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    """The tiny data with three hats moved into shoes/ (wrong labels) and three photos that
    are no clothing put into pants/; returns (root, flipped paths, foreign paths) relative."""
    from PIL import Image
    from skimage import data

    from salt import copy_demo

    root = copy_demo(tmp_path_factory.mktemp("planted") / "clothes", CLASSES)
    flipped = []
    for hat in sorted((root / "train" / "hat").iterdir())[:3]:
        shutil.move(hat, root / "train" / "shoes" / hat.name)
        flipped.append(f"train/shoes/{hat.name}")
    # a resized, re-encoded copy of a t-shirt in another split, and a byte-for-byte copy
    shirt = sorted((root / "train" / "t-shirt").iterdir())[0]
    with Image.open(shirt) as im:
        im.convert("RGB").resize((im.width * 3 // 5, im.height * 3 // 5)).save(
            root / "test" / "t-shirt" / "resized.jpg", quality=80
        )
    shutil.copy(shirt, root / "validation" / "t-shirt" / "copy.jpg")
    foreign = []
    for name in FOREIGN:
        image = Image.fromarray(getattr(data, name)())
        image.thumbnail((256, 256))
        image.save(root / "train" / "pants" / f"{name}.jpg", quality=90)
        foreign.append(f"train/pants/{name}.jpg")
    return root, flipped, foreign


@pytest.fixture(scope="module")
def explored(
    planted: tuple[Path, list[str], list[str]],
    shared_cache: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Exploration, Path]:
    out = tmp_path_factory.mktemp("explored") / "out"
    original = EmbeddingStore.neighbours

    def spy(self, keys, shas, k, **kwargs):  # type: ignore[no-untyped-def]
        found = original(self, keys, shas, k, **kwargs)
        STORE_ANSWERS.append(found is not None)
        return found

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EmbeddingStore, "neighbours", spy)
        return explore(planted[0], out, config=_config(shared_cache), progress=False), out


def test_the_neighbours_are_the_stores_answer(explored) -> None:  # type: ignore[no-untyped-def]
    assert STORE_ANSWERS == [True]


def test_flipped_labels_top_the_label_issues(explored, planted) -> None:  # type: ignore[no-untyped-def]
    exploration, out = explored
    _, flipped, foreign = planted
    rows = _rows(out / "label_issues.csv")
    assert list(rows[0]) == ["path", "given", "suggested", "score", "flagged"]
    assert len(rows) == len(exploration.paths)  # every row judged, most suspicious first
    top = [r["path"] for r in rows[: len(flipped) + 2]]
    assert set(flipped) <= set(top), top
    assert all(r["given"] == "shoes" for r in rows if r["path"] in flipped)
    flagged = {r["path"] for r in rows if r["flagged"] == "1"}
    assert len(flagged & set(flipped)) >= 2
    assert len(flagged) <= len(flipped) + len(foreign) + 3  # few false alarms on clean photos
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_foreign_photos_rank_as_outliers(explored, planted) -> None:  # type: ignore[no-untyped-def]
    exploration, out = explored
    rows = _rows(out / "outliers.csv")
    assert list(rows[0]) == ["path", "score", "isolation_forest", "lof", "knn"]
    top = [r["path"] for r in rows[:8]]
    assert set(planted[2]) <= set(top), top
    assert exploration.outlier_score.min() >= 0.0 and exploration.outlier_score.max() <= 1.0


def test_clusters_follow_the_classes(explored) -> None:  # type: ignore[no-untyped-def]
    exploration, out = explored
    rows = _rows(out / "clusters.csv")
    assert list(rows[0]) == ["path", "kmeans", "hdbscan", "agglomerative"]
    assert len(rows) == len(exploration.paths)
    for method in ("kmeans", "agglomerative"):
        metrics = exploration.cluster_metrics[method]
        assert metrics["nmi"] > 0.5, (method, metrics)
        assert metrics["purity"] > 0.7, (method, metrics)
        assert 2 <= metrics["k"] <= 26
    assert set(exploration.typical["kmeans"]) == set(np.unique(exploration.clusters["kmeans"]))


def test_result_has_what_the_page_needs(explored) -> None:  # type: ignore[no-untyped-def]
    exploration, out = explored
    n = len(exploration.paths)
    assert exploration.features.shape == (n, 1280)
    assert exploration.classes == sorted(CLASSES)
    assert exploration.task == "label"
    assert all(p in exploration.classes for p in exploration.predicted)
    assert all(c is not None and 0.0 < c <= 1.0 for c in exploration.confidence)
    assert exploration.label_issue_score is not None and exploration.label_issue_score.shape == (n,)
    overlap = _rows(out / "class_overlap.csv")
    assert list(overlap[0]) == ["class_a", "class_b", "score", "examples"]
    assert {overlap[0]["class_a"], overlap[0]["class_b"]} == {"hat", "shoes"}  # the flips
    assert (out / "near_duplicates.csv").is_file() and (out / "summary.json").is_file()
    assert (out / "map.html").stat().st_size > 10_000  # the page module's map, with thumbnails


def test_near_duplicates_anywhere(explored) -> None:  # type: ignore[no-untyped-def]
    exploration, out = explored
    rows = _rows(out / "near_duplicates.csv")
    assert list(rows[0]) == [
        "path_a", "path_b", "label_a", "label_b", "cosine", "pixel_correlation", "kind"
    ]  # fmt: skip
    pairs = {(r["kind"], frozenset((r["path_a"], r["path_b"]))) for r in rows}
    names = {Path(r["path_a"]).name for r in rows} | {Path(r["path_b"]).name for r in rows}
    assert {"resized.jpg", "copy.jpg"} <= names
    assert any(kind == "exact" and any("copy.jpg" in p for p in ps) for kind, ps in pairs)
    assert any(kind == "near" and any("resized.jpg" in p for p in ps) for kind, ps in pairs)
    assert len(exploration.near_duplicates) == len(rows)


def test_multi_task_data_uses_its_multi_class_task(  # type: ignore[no-untyped-def]
    composites, shared_cache, tmp_path
) -> None:
    config = load_config(
        overrides=[f"extract.cache_dir={shared_cache}", "data.label_column=[left,items]"]
    )
    exploration = explore(composites, tmp_path / "out", config=config, progress=False, page=False)
    assert exploration.task == "left" and exploration.labelled
    with pytest.raises(DataError, match="multi-label"):
        explore(composites, tmp_path / "o2", config=config, task="items", page=False)


def test_label_issues_on_embedded_train_rows(planted, shared_cache) -> None:  # type: ignore[no-untyped-def]
    from headstart.embedding import embed_data

    embedded = embed_data(planted[0], _config(shared_cache), progress=False)
    train = embedded.rows("train")
    found = label_issues(embedded, rows=train)
    assert set(found.rows.tolist()) == set(train)
    names = [embedded.manifest.relative(s.path) for s in embedded.manifest.samples]
    assert {names[i] for i in found.issue_rows} & set(planted[1])  # flagged: to drop
    suspicious = [names[found.rows[i]] for i in np.argsort(-found.score)[:6]]
    assert set(planted[1]) <= set(suspicious), suspicious
    with pytest.raises(DataError, match="do not match"):
        label_issues(embedded.features, ["hat"] * 3)


def test_unlabelled_folder(tmp_path: Path, shared_cache: Path) -> None:
    from headstart.demo import demo_data_dir

    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    for i, cls in enumerate(("hat", "shoes")):
        for f in sorted((demo_data_dir() / "train" / cls).iterdir())[:12]:
            shutil.copy(f, (folder / "more" if i else folder) / f.name)
    out = tmp_path / "out"
    exploration = explore(folder, out, config=_config(shared_cache), progress=False, page=False)
    assert not exploration.labelled and exploration.label_issue_score is None
    assert exploration.predicted == [None] * 24
    assert any("unlabelled" in note for note in exploration.notes)
    assert exploration.cluster_metrics["kmeans"]["k"] >= 2
    assert "nmi" not in exploration.cluster_metrics["kmeans"]
    typical = exploration.typical["kmeans"]
    assert typical and all(1 <= len(rows) <= 6 for rows in typical.values())
    assert _rows(out / "label_issues.csv") == []
    assert len(_rows(out / "outliers.csv")) == 24
    assert not (out / "map.html").exists()


def test_exported_cluster_folders_fit(explored, tmp_path: Path, shared_cache: Path) -> None:  # type: ignore[no-untyped-def]
    import headstart

    exploration, _ = explored
    dest = export_folders(exploration, tmp_path / "bootstrap")
    folders = sorted(p.name for p in dest.iterdir())
    k = int(exploration.cluster_metrics["kmeans"]["k"])
    assert folders == [f"cluster_{i:02d}" for i in range(k)]
    copied = sorted(dest.rglob("*.jpg"))
    assert len(copied) == len(exploration.paths) and not any(p.is_symlink() for p in copied)
    result = headstart.fit(
        dest, tmp_path / "run", config=_config(shared_cache), progress=False, report=False
    )
    assert len(result.tasks[0].classes) == k
    with pytest.raises(ConfigError, match="not an empty folder"):
        export_folders(exploration, dest)
    linked = export_folders(exploration, tmp_path / "linked", method="hdbscan", mode="symlink")
    links = sorted(linked.rglob("*.jpg"))
    assert links and all(p.is_symlink() and p.resolve().is_file() for p in links)
    noise = int((exploration.clusters["hdbscan"] < 0).sum())
    assert len(links) == len(exploration.paths) - noise  # noise rows belong to no folder
    with pytest.raises(ConfigError, match="unknown cluster method"):
        export_folders(exploration, tmp_path / "other", method="dbscan")
