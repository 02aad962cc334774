"""Write a bundle-format fixture for the format today's writer writes: ``bundle_v<N>`` and
``bundle_v<N>_expected.json`` (N = ``headstart.bundle.FORMAT_VERSION``) under tests/fixtures.

A fixture holds a logistic head on three demo classes (one task, "label") and no backbone weights
(the registry's mobilenet_v2 weights are used, checked by sha256), plus the probabilities it gave
for two photos when written; tests/test_bundle.py checks that every later release loads it and
agrees.

Committed fixtures are frozen: each is a bundle exactly as the release of its format wrote it, so
this script never overwrites one and refuses when the fixture for the current format exists.  In
particular tests/fixtures/bundle_v1 (format 1, ``classes`` at the top of model.json) was written
by an earlier version of this script and cannot be regenerated: today's writer writes format N
only.  Run this once per new format version (``--dest`` writes elsewhere, e.g. to try it out).

    .venv/bin/python scripts/make_bundle_fixture.py [--dest FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import headstart
from headstart.backbones import resolve_backbone
from headstart.bundle import FORMAT_VERSION, write_bundle
from headstart.demo import demo_data_dir

CLASSES = ("hat", "pants", "shoes")
PHOTOS = ("test/hat", "test/shoes")
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dest", type=Path, default=FIXTURES, help="folder to write into")
    args = parser.parse_args()
    dest = args.dest / f"bundle_v{FORMAT_VERSION}"
    expected_json = args.dest / f"bundle_v{FORMAT_VERSION}_expected.json"
    for path in (dest, expected_json):
        if path.exists():
            raise SystemExit(
                f"{path} exists: committed bundle fixtures are frozen and never regenerated "
                f"(today's writer writes format {FORMAT_VERSION} only)"
            )
    demo = demo_data_dir()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "d"
        for cls in CLASSES:
            (data / cls).mkdir(parents=True)
            for photo in sorted((demo / "train" / cls).glob("*.jpg")):
                os.symlink(photo, data / cls / photo.name)
        result = headstart.fit(data, Path(tmp) / "run", progress=False, report=False)
        write_bundle(
            dest,
            tasks=list(result.tasks),
            heads=result.heads,
            backbone=resolve_backbone("mobilenet_v2"),
            extra={"note": "format fixture: frozen, never regenerated"},
        )
    model = headstart.load(dest)
    photos = [sorted((demo / p).glob("*.jpg"))[0] for p in PHOTOS]
    proba, _ = model.predict_proba(photos)  # the one task's probabilities
    expected = {
        "photos": [p.relative_to(demo).as_posix() for p in photos],
        "probabilities": proba.round(6).tolist(),
    }
    expected_json.write_text(json.dumps(expected, indent=2) + "\n")
    print(f"wrote {dest} (format {FORMAT_VERSION}) and {expected_json}")


if __name__ == "__main__":
    main()
