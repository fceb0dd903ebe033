"""`make train-data`'s table and its checks, offline: nothing here downloads anything."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
import subprocess
from fnmatch import fnmatch
from pathlib import Path

import pytest

from vsdeblur import datasets


def _split(row: datasets.Wanted) -> str:
    return row.target.split("/")[0]


def test_benchmark_shares_nothing_with_what_trains_or_validates():
    bench = [w for w in datasets.TABLE if _split(w) == "benchmark"]
    rest = [w for w in datasets.TABLE if _split(w) != "benchmark"]
    assert {w.sha256 for w in bench}.isdisjoint(w.sha256 for w in rest)
    assert {(w.source, w.member) for w in bench}.isdisjoint((w.source, w.member) for w in rest)
    assert {Path(w.target).name for w in bench}.isdisjoint(Path(w.target).name for w in rest)
    photos = [w for w in bench if w.target.startswith("benchmark/photos/")]
    new_photos = [w for w in datasets.DEBIAN if w.target.split("/")[1] == "photos"]
    assert len(photos) >= 12 and 0.2 <= len(photos) / len(new_photos) <= 0.35
    assert any(w.target.startswith("benchmark/videos/") for w in bench)


def test_the_shipped_models_folders_keep_their_files():
    # recipes read train/images, train/videos and val/ whole: new material must not change them
    for row in datasets.DEBIAN:
        assert _split(row) in ("train", "benchmark", "licences") and not row.target.startswith(("train/images/",
                                                                                                  "train/videos/"))
    assert sum(_split(w) == "train" for w in datasets.PYPI) == 38 and sum(_split(w) == "val" for w in datasets.PYPI) == 3


def test_every_row_is_unique_checked_and_licensed():
    targets = [w.target for w in datasets.TABLE]
    assert len(set(targets)) == len(targets)
    members = [w.member for w in datasets.TABLE]
    assert len(set(members)) == len(members)  # install() finds a row by its member alone
    assert all(re.fullmatch("[0-9a-f]{64}", w.sha256) and w.licence for w in datasets.TABLE)
    packages = {w.source for w in datasets.DEBIAN}
    assert {f"licences/{p.removeprefix(datasets.DEB)}.copyright" for p in packages} <= set(targets)


def test_no_rejected_file_is_fetched():
    for package, pattern, reason in datasets.REJECTED:
        fetched = [w.member for w in datasets.DEBIAN if w.source == datasets.DEB + package and fnmatch(w.member, pattern)]
        assert reason and not fetched, (pattern, fetched)


@pytest.fixture
def deb(tmp_path) -> Path:
    """A real Debian package holding one picture, built by dpkg-deb."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not found")
    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text("Package: vsdeblur-test\nVersion: 1\nArchitecture: all\n"
                                             "Maintainer: nobody <nobody@example.org>\nDescription: test\n")
    (tree / "usr/share/pics").mkdir(parents=True)
    (tree / "usr/share/pics/a.jpg").write_bytes(b"picture " * 1000)
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(tree), str(tmp_path / "t.deb")], check=True,
                   capture_output=True)
    return tmp_path / "t.deb"


ROW = datasets.Wanted("train/photos/a.jpg", datasets.DEB + "vsdeblur-test", "usr/share/pics/a.jpg",
                hashlib.sha256(b"picture " * 1000).hexdigest(), "CC0-1.0")


def test_a_file_with_another_sha256_gives_one_phrase_and_no_file(deb, tmp_path):
    root = tmp_path / "data"
    wrong = dataclasses.replace(ROW, sha256="0" * 64)
    problems = datasets.install(root, [wrong], datasets.deb_members(deb, {wrong.member}))
    assert list(problems) == [wrong.member]
    assert "vsdeblur-test: usr/share/pics/a.jpg has changed" in problems[wrong.member]
    assert "\n" not in problems[wrong.member]
    assert not [p for p in root.rglob("*") if p.is_file()]  # nothing written, no temporary file left


def test_a_matching_file_is_written_once_and_then_kept(deb, tmp_path):
    root = tmp_path / "data"
    assert datasets.install(root, [ROW], datasets.deb_members(deb, {ROW.member})) == {}
    assert (root / ROW.target).read_bytes() == b"picture " * 1000
    assert [p.name for p in root.rglob("*") if p.is_file()] == ["a.jpg"]
    assert datasets.missing(root, [ROW]) == []
    # a rerun fetches nothing (the row's source does not exist, so any download would fail)
    assert datasets.gather(root, [ROW]) == []
    (root / ROW.target).write_bytes(b"damaged")
    assert datasets.missing(root, [ROW]) == [ROW]


def test_a_package_that_cannot_be_fetched_is_one_line_and_writes_nothing(tmp_path):
    # no network: apt-get resolves the name from its local lists (or is absent) and fails at once
    root = tmp_path / "data"
    row = dataclasses.replace(ROW, source=datasets.DEB + "vsdeblur-no-such-package")
    with pytest.raises(SystemExit) as failure:
        datasets.gather(root, [row])
    message = str(failure.value.code)
    assert message.startswith("datasets: 1 of 1 files not fetched: ") and "vsdeblur-no-such-package" in message
    assert "\n" not in message
    assert not root.exists() or not [p for p in root.rglob("*") if p.is_file()]


def test_a_broken_package_is_one_phrase(tmp_path):
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"not a package")
    with pytest.raises(datasets.FetchError, match="cannot read bad.deb"):
        list(datasets.deb_members(bad, {"x"}))


def test_a_file_the_table_moved_is_removed_from_its_old_place(tmp_path):
    # a photo moved from the benchmark to training must not stay in the benchmark too
    root = tmp_path / "data"
    other = datasets.Wanted("benchmark/photos/b.jpg", ROW.source, "usr/share/pics/b.jpg", hashlib.sha256(b"b").hexdigest(),
                      "CC0-1.0")
    for row, contents in ((ROW, b"picture " * 1000), (other, b"b")):
        (root / row.target).parent.mkdir(parents=True, exist_ok=True)
        (root / row.target).write_bytes(contents)
    (root / "benchmark/photos/a.jpg").write_bytes(b"picture " * 1000)  # where an older table put ROW
    (root / "benchmark/photos/mine.jpg").write_bytes(b"mine")
    assert datasets.gather(root, [ROW, other]) == []
    assert sorted(p.name for p in (root / "benchmark/photos").iterdir()) == ["b.jpg", "mine.jpg"]
    assert (root / ROW.target).is_file()
