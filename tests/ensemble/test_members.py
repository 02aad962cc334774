"""Ensemble members: each reads one contiguous block of the fused embeddings, and the
probabilities selection and stacking learn from are out-of-fold, never in-sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification

from headstart.backbones import resolve_backbone
from headstart.backbones.spec import fuse
from headstart.config import load_config
from headstart.data import Manifest, Sample, Task
from headstart.ensemble import Member, layout, probe_member
from headstart.errors import ConfigError


def _member(name: str) -> Member:
    ref = fuse([resolve_backbone(n) for n in name.split("+")])
    return Member(name, ref, {}, None)


def test_layout_gives_each_member_its_columns() -> None:
    members = [_member("mobilenet_v2"), _member("efficientnet_lite0+mobilenet_v2")]
    ref, slices = layout(members)
    assert ref.name == "efficientnet_lite0+mobilenet_v2"
    assert slices == [(1280, 2560), (0, 2560)]


def test_fusions_that_split_each_other_are_refused() -> None:
    members = [
        _member("mobilenet_v2+efficientnet_lite0"),
        _member("efficientnet_lite0+mobilenet_v2"),
    ]
    with pytest.raises(ConfigError, match="order"):
        layout(members)


def _manifest(y: np.ndarray) -> Manifest:
    task = Task("label", ("a", "b"), False)
    samples = [
        Sample(Path(f"/x/{i}.jpg"), {"label": ("ab"[int(v)],)}, "train", f"{i:064x}")
        for i, v in enumerate(y)
    ]
    return Manifest(Path("/x"), samples, (task,))


def test_member_probabilities_are_out_of_fold() -> None:
    X, y = make_classification(120, 20, n_informative=3, flip_y=0.3, random_state=0)
    manifest = _manifest(y)
    rows = list(range(len(y)))
    ref = resolve_backbone("mobilenet_v2")
    member = probe_member(
        "1nn", ref, X, manifest, rows, load_config(), None, kind="knn", params={"n_neighbors": 1}
    )
    assert member.oof is not None
    oof = member.oof["label"]
    truth = np.array(["ab".index(s.labels["label"][0]) for s in manifest.samples])
    in_sample = member.heads["label"].predict_proba(X).argmax(axis=1)
    # a 1-NN head memorises: perfect on its own rows, honest (noisy labels) out of fold
    assert (in_sample == truth).mean() == 1.0
    assert (oof.argmax(axis=1) == truth).mean() < 0.9
