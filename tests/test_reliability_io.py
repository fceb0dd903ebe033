"""Outputs that are not plain files, and what the output keeps of unusual sources (issue 31): a
symlink at OUTPUT, even a dangling one, is an existing output. Tiny clips; an identity engine
where the model does not matter, the tiny model where the command line is the point. CPU only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.media import make_clip, video_times
from tests.test_batch import settings  # noqa: F401 (a fixture)
from vsdeblur.batch import run_batch
from vsdeblur.errors import UsageError
from vsdeblur.stream import main, stream


class Identity:
    """An engine that hands every frame back as it came, in order, holding none."""

    def tagged(self, items):
        yield from items


def run_stream(clip: Path, output: Path | str, **kwargs):
    settings = kwargs.pop("settings", {"encoder_preset": "ultrafast"})
    return stream(clip, output, settings, engine=Identity(), progress=False, **kwargs)


def one_error(tiny_weights: Path, *args: str) -> str:
    """vsdeblur-stream's refusal: exit status 2 and exactly one line."""
    result = CliRunner().invoke(main, [*map(str, args), "--weights", str(tiny_weights), "--device", "cpu"],
                                prog_name="vsdeblur-stream")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("vsdeblur-stream: error: "), lines
    return lines[0]


# ---- 2: a dangling symlink at OUTPUT --------------------------------------------------------


def test_a_dangling_symlink_is_an_existing_output(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "in.mkv", frames=2)
    link = tmp_path / "x.mkv"
    link.symlink_to(tmp_path / "gone")
    assert "output exists" in one_error(tiny_weights, clip, link)
    assert link.is_symlink() and os.readlink(link) == str(tmp_path / "gone")
    run_stream(clip, link, overwrite=True)  # replaces the link itself; its target stays absent
    assert not link.is_symlink() and video_times(link) == video_times(clip)
    assert not (tmp_path / "gone").exists()


def test_batch_takes_a_dangling_symlink_for_an_existing_output(tmp_path, settings):
    (tmp_path / "in").mkdir()
    clip = make_clip(tmp_path / "in" / "c.mkv", frames=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "c.mkv").symlink_to(tmp_path / "gone")
    with pytest.raises(UsageError, match="output exists"):
        run_batch([str(clip)], out, settings())
    assert (out / "c.mkv").is_symlink()
    assert run_batch([str(clip)], out, settings(), overwrite=True).ok
    assert not (out / "c.mkv").is_symlink() and len(video_times(out / "c.mkv")) == 2
