"""Build the bundled demo set: a small, downsized, seeded subset of clothing_small (CC0 1.0).

Run once by a developer; the output is committed under src/headstart/demo_data/.
    .venv/bin/python scripts/make_demo_data.py ../shared/data/clothing_small
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

from PIL import Image

PER_SPLIT = {"train": 20, "validation": 6, "test": 6}
SHORT_SIDE = 256


def main(source: Path, dest: Path) -> None:
    rng = random.Random(0)
    if dest.exists():
        shutil.rmtree(dest)
    for split, count in PER_SPLIT.items():
        for class_dir in sorted((source / split).iterdir()):
            files = sorted(class_dir.glob("*.jpg"))
            for path in rng.sample(files, min(count, len(files))):
                with Image.open(path) as source_image:
                    img = source_image.convert("RGB")
                    scale = SHORT_SIDE / min(img.size)
                    if scale < 1:
                        size = (round(img.width * scale), round(img.height * scale))
                        img = img.resize(size, Image.Resampling.LANCZOS)
                    out = dest / split / class_dir.name / path.name
                    out.parent.mkdir(parents=True, exist_ok=True)
                    img.save(out, quality=80, optimize=True)
    shutil.copy(source / "LICENSE", dest / "LICENSE")
    (dest / "SOURCE.md").write_text(
        "# headstart demo data\n\n"
        "A seeded subset of the clothing dataset (small) by Alexey Grigorev, "
        "github.com/alexeygrigorev/clothing-dataset-small, CC0 1.0 (see LICENSE).\n"
        f"Per class: {PER_SPLIT}; downsized to a shorter side of {SHORT_SIDE} px, "
        "JPEG quality 80.\n"
        "Built by scripts/make_demo_data.py.\n"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parents[1] / "src/headstart/demo_data")
