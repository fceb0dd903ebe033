"""`vsdeblur benchmark`: a deterministic set of camera-blurred clips from held-out photos, restored
through vsdeblur-stream and scored against the blurred input and the best unsharp mask."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.media import write_png
from vsdeblur.evaluate import decoded
from vsdeblur.measure import quality
from vsdeblur.train.data import dead_leaves
from vsdeblur.metrics import clip_vmaf, psnr


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    folder = tmp_path_factory.mktemp("material")
    for i in range(2):
        image = dead_leaves(np.random.default_rng(i), 200, shapes=400)
        write_png(folder / f"photo{i}.png", (image * 255 + 0.5).astype(np.uint8))
    return folder


def test_the_set_is_deterministic_lossless_and_blurred_by_strength(material, tmp_path):
    setups = [quality.Setup(material, tmp_path / name, clips=2, frames=3, size=(64, 48)) for name in "ab"]
    photos = quality.photos_of(material, 2)
    for setup in setups:
        quality.build_set(setup, photos, log=lambda line: None)
    blurred_psnr = {}
    for condition in quality.CONDITIONS:
        for photo in photos:
            name = f"{condition.name}/{photo.stem}"
            a = list(decoded(tmp_path / "a" / "set" / f"{name}.blurred.mkv"))
            b = list(decoded(tmp_path / "b" / "set" / f"{name}.blurred.mkv"))
            sharp = list(decoded(tmp_path / "a" / "set" / f"{name}.sharp.mkv"))
            assert len(a) == len(sharp) == 3 and a[0].shape == (48, 64, 3)
            assert all(np.array_equal(x, y) for x, y in zip(a, b))  # the same set every time
            blurred_psnr.setdefault(condition.name, []).append(quality.clip_psnr(a, sharp))
    assert blurred_psnr["none"] == [float("inf")] * 2  # unblurred clips are their own reference
    mean = {k: np.mean(v) for k, v in blurred_psnr.items()}
    assert mean["mild"] > mean["medium"] > mean["strong"]


def test_a_set_is_kept_and_made_anew_when_its_description_changes(material, tmp_path):
    photos = quality.photos_of(material, 1)
    setup = quality.Setup(material, tmp_path, clips=1, frames=2, size=(64, 48))
    filmed = []
    quality.build_set(setup, photos, log=filmed.append)
    quality.build_set(setup, photos, log=filmed.append)
    assert len(filmed) == 1
    quality.build_set(quality.Setup(material, tmp_path, clips=1, frames=3, size=(64, 48)), photos, log=filmed.append)
    assert len(filmed) == 2 and len(list(decoded(tmp_path / "set" / "mild" / f"{photos[0].stem}.sharp.mkv"))) == 3


def test_the_best_unsharp_mask_never_loses_to_the_input_and_helps_blur():
    # gratings softened by a Gaussian: what an unsharp mask undoes best
    y, x = np.mgrid[0:64, 0:64]
    sharp = [(np.stack([0.5 + 0.3 * np.sin(x / p + c) * np.cos(y / (p + 1))] * 3, axis=-1) * 255 + 0.5).astype(np.uint8)
             for p, c in ((1.3, 0.0), (1.7, 1.0))]
    taps = np.exp(-np.arange(-3, 4) ** 2 / 2.0)
    soft = np.outer(taps, taps).astype(np.float32) / np.outer(taps, taps).sum()
    from vsdeblur.blur.synth import convolve

    blurred = [(convolve(s.astype(np.float32) / 255, soft, linear=False) * 255 + 0.5).astype(np.uint8) for s in sharp]
    scores = quality.unsharp_scores(blurred, sharp)
    as_is = np.mean([psnr(b, s) for b, s in zip(blurred, sharp)])
    assert all(scores[(sigma, 0.0)] == pytest.approx(as_is) for sigma in quality.UNSHARP_SIGMAS)
    assert max(scores.values()) > as_is + 2


def test_scores_by_psnr_and_vmaf_of_each_variant_and_baseline(material, tmp_path):
    # two stand-in restorers on a real set: one gives the sharp clip back, one the blurred input
    setup = quality.Setup(material, tmp_path, clips=1, frames=3, size=(64, 48))
    photos = quality.photos_of(material, 1)
    quality.build_set(setup, photos, log=lambda line: None)
    for condition in quality.CONDITIONS:
        for variant, kind in (("perfect", "sharp"), ("as-is", "blurred")):
            (tmp_path / variant / condition.name).mkdir(parents=True)
            shutil.copy(tmp_path / "set" / condition.name / f"{photos[0].stem}.{kind}.mkv", tmp_path / variant / condition.name / f"{photos[0].stem}.mkv")
    rows = {r.condition: r for r in quality.score(setup, photos, ["perfect", "as-is"])}

    sharp, blurred = quality.clip_pair(setup, quality.CONDITIONS[0], photos[0])
    assert rows["mild"].vmaf["blurred"] == rows["mild"].vmaf["as-is"] == pytest.approx(clip_vmaf(blurred, sharp))
    assert rows["mild"].vmaf["perfect"] > 97 and rows["strong"].vmaf["blurred"] < rows["mild"].vmaf["blurred"] < 90
    strong_sharp, strong_blurred = quality.clip_pair(setup, quality.CONDITIONS[2], photos[0])
    assert rows["strong"].vmaf["unsharp"] == pytest.approx(quality.unsharp_vmaf(strong_blurred, strong_sharp, rows["strong"].unsharp_setting))
    assert quality.unsharp_vmaf(blurred, sharp, (1.0, 0.0)) == pytest.approx(clip_vmaf(blurred, sharp))  # amount 0 is the input
    assert rows["none"].vmaf["blurred"] is None and rows["none"].vmaf["unsharp"] is None and rows["none"].vmaf["perfect"] > 97

    text = quality.table(list(rows.values()), ["perfect", "as-is"])
    psnr_table, vmaf_table = text.split("\n\n")
    assert vmaf_table.splitlines()[-1].startswith("VMAF (vmaf_v0.6.1")
    mild = next(line for line in vmaf_table.splitlines() if line.startswith("mild"))
    assert mild.split()[1] == f"{rows['mild'].vmaf['blurred']:.2f}" and f"{rows['mild'].vmaf['perfect']:6.2f} (+" in mild
    assert [line.split()[0] for line in psnr_table.splitlines()[1:7]] == ["mild", "medium", "strong", "shake", "none", "coherent"]


@pytest.mark.slow
def test_the_command_prints_one_table_of_every_condition(material, tmp_path, tiny_weights):
    json_path = tmp_path / "scores.json"
    done = subprocess.run([sys.executable, "-m", "vsdeblur", "benchmark", "--material", str(material), "--weights", str(tiny_weights),
                           "-o", str(tmp_path / "out"), "--clips", "1", "--frames", "3", "--size", "64x48", "--json", str(json_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:7]] == ["mild", "medium", "strong", "shake", "none", "coherent"]
    report = json.loads(json_path.read_text())
    rows = {r["condition"]: r for r in report["rows"]}
    variants = {"stage 1", "both stages", "prior (estimated motion)", "prior (true path)"}
    assert set(rows["mild"]["restored"]) == variants
    assert set(rows["mild"]["vmaf"]) == {"blurred", "unsharp", *variants}
    assert all(isinstance(v, float) for v in rows["mild"]["vmaf"].values()) and "VMAF (vmaf_v0.6.1" in done.stdout
    assert rows["strong"]["unsharp"] >= rows["strong"]["blurred"]
    assert (tmp_path / "out" / "both-stages" / "strong" / "photo0.mkv").is_file()
    assert (tmp_path / "out" / "prior-true-path" / "strong" / "photo0.mkv").is_file()
    assert [row["condition"] for row in report["motion"]] == ["mild", "medium", "strong"]
    motion_table = done.stdout.split("\n\n")[2].splitlines()
    assert motion_table[0].startswith("motion") and [line.split()[0] for line in motion_table[1:4]] == ["mild", "medium", "strong"]


def test_missing_material_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "vsdeblur", "benchmark", "--material", str(tmp_path / "nothing"), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"vsdeblur benchmark: error: benchmark material not found: {tmp_path / 'nothing'} (run `make train-data`, or give --material DIR)"]
    assert not (tmp_path / "out").exists()
