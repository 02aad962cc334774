"""Write the committed bundle-format fixture tests/fixtures/bundle_v1 (run once per format version).

The fixture holds a logistic head on three demo classes and no backbone weights (the registry's
mobilenet_v2 weights are used, checked by sha256), plus the probabilities it gave for two photos
when written; tests/test_bundle.py checks that every later release loads it and agrees.
    .venv/bin/python scripts/make_bundle_fixture.py
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import headstart
from headstart.backbones import resolve_backbone
from headstart.bundle import write_bundle
from headstart.demo import demo_data_dir

CLASSES = ("hat", "pants", "shoes")
PHOTOS = ("test/hat", "test/shoes")


def main() -> None:
    dest = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "bundle_v1"
    demo = demo_data_dir()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "d"
        for cls in CLASSES:
            (data / cls).mkdir(parents=True)
            for photo in sorted((demo / "train" / cls).glob("*.jpg")):
                os.symlink(photo, data / cls / photo.name)
        result = headstart.fit(data, Path(tmp) / "run", progress=False)
        write_bundle(
            dest,
            head=result.head,
            backbone=resolve_backbone("mobilenet_v2"),
            classes=list(result.manifest.classes),
            extra={"note": "format fixture: do not regenerate unless the format version changes"},
        )
    model = headstart.load(dest)
    photos = [sorted((demo / p).glob("*.jpg"))[0] for p in PHOTOS]
    proba, _ = model.predict_proba(photos)
    expected = {
        "photos": [p.relative_to(demo).as_posix() for p in photos],
        "probabilities": proba.round(6).tolist(),
    }
    (dest.parent / "bundle_v1_expected.json").write_text(json.dumps(expected, indent=2) + "\n")


if __name__ == "__main__":
    main()
