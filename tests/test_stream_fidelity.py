"""vsdeblur-stream as a demanding user meets it: what the output keeps or notes (alpha,
interlacing, RGB, bit depth), containers that need another encoder, names with colons, job
files run from another folder, and settings refused in one line before the model loads."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from tests.media import make_clip, video_times
from vsdeblur.io import Reader
from vsdeblur.stream import main

FAST = ["--device", "cpu", "--tile", "0", "--encoder-preset", "ultrafast"]


@pytest.fixture()
def run(tiny_weights, tmp_path, monkeypatch):
    """vsdeblur-stream in tmp_path with the tiny model: returns (exit code, output lines)."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, weights: bool = True) -> tuple[int, list[str]]:
        given = [*args, *(["--weights", str(tiny_weights)] if weights else [])]
        result = CliRunner().invoke(main, given, prog_name="vsdeblur-stream")
        return result.exit_code, result.output.strip().splitlines()

    return invoke


def one_error(run, *args: str, **kwargs) -> str:
    code, lines = run(*args, **kwargs)
    assert code == 2 and len(lines) == 1, lines
    return lines[0]


def interlaced_clip(path: Path) -> Path:
    """FFV1 whose stream says top field first, bottom field shown first ("tb")."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("ffv1", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.codec_context.field_order = 4
        video.time_base = video.codec_context.time_base = Fraction(1, 25)
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.full((72, 64), 60 + 40 * i, np.uint8), format="yuv420p")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def test_alpha_and_interlacing_are_noted(run, tmp_path):
    make_clip(tmp_path / "4444.mov", frames=2, codec="prores_ks", pix_fmt="yuva444p10le", audio=False)
    code, lines = run("4444.mov", "a.mkv", *FAST)
    assert code == 0 and "vsdeblur-stream: note: left out the alpha channel of the yuva444p12le source" in lines[0], lines
    interlaced_clip(tmp_path / "tb.mkv")
    code, lines = run("tb.mkv", "b.mkv", *FAST)
    assert code == 0 and lines[0].startswith("vsdeblur-stream: note: left out the interlacing of the source, field order tb"), lines
    with Reader(tmp_path / "b.mkv") as reader:
        assert reader.info.field_order is None  # written as progressive, as the note says


def test_rgb_master_stays_rgb(run, tmp_path):
    make_clip(tmp_path / "rgb.mkv", frames=2, codec="ffv1", pix_fmt="gbrp16le", audio=False)
    code, lines = run("rgb.mkv", "out.mkv", "--device", "cpu", "--tile", "0")  # FFV1 has no presets
    assert code == 0 and not any("note" in line for line in lines), lines
    with Reader(tmp_path / "out.mkv") as reader:
        assert (reader.info.codec, reader.info.pix_fmt, reader.info.lossless) == ("ffv1", "gbrp16le", True)


def test_webm_gets_vp9_and_other_containers_one_line(run, tmp_path):
    make_clip(tmp_path / "in.mp4", frames=2)
    assert "stream #1 (audio, aac) of in.mp4 cannot be stored in webm" in one_error(run, "in.mp4", "o.webm", "--device", "cpu")
    code, lines = run("in.mp4", "o.webm", "--drop-incompatible", "--device", "cpu", "--tile", "0")
    assert code == 0, lines
    with Reader(tmp_path / "o.webm") as reader:
        assert reader.info.codec == "vp9"
    assert len(video_times(tmp_path / "o.webm")) == 2
    assert "gif takes no pixel format" in one_error(run, "in.mp4", "o.gif", *FAST, "--drop-incompatible")
    assert "image2 writes a file of its own" in one_error(run, "in.mp4", "o.png", *FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "o.webm"]


def test_names_with_colons(run, tmp_path):
    make_clip(tmp_path / "plain.mkv", frames=2, audio=False).rename(tmp_path / "ab:cd.mkv")
    for output in ["12:30 clip.mkv", "2024-01-01T12:00:00.mkv"]:
        code, lines = run("ab:cd.mkv", output, *FAST)
        assert code == 0, lines
        assert video_times(tmp_path / output) == video_times(tmp_path / "ab:cd.mkv")


def test_settings_are_refused_in_one_line_before_the_model_loads(run, tmp_path, capfd):
    make_clip(tmp_path / "in.mkv", frames=2, audio=False)
    # a weights file that does not exist: the encode settings fail first, before the model loads
    missing = ["--weights", "missing.safetensors"]
    assert one_error(run, "in.mkv", "o.mkv", "--codec", "libx265", "--crf", "60", *missing, weights=False) == \
        "vsdeblur-stream: error: libx265: --crf 60 is out of range; it takes 0 to 51"
    assert "libx264: --crf 63 is out of range; it takes 0 to 51" in one_error(run, "in.mkv", "o.mkv", "--crf", "63", *missing, weights=False)
    assert "--encoder-preset quick must be one of ultrafast" in one_error(run, "in.mkv", "o.mkv", "--codec", "libx265", "--encoder-preset", "quick")
    assert "x265 [error]" in one_error(run, "in.mkv", "o.mkv", "--codec", "libx265", "--encoder-options", "x265-params=ref=99")
    assert "avcodec_open2" not in capfd.readouterr().err
    line = one_error(run, "in.mkv", "o.mkv", "--device", "cpu", "--tile", "1")
    assert "tile size 1 must be at least twice the overlap of" in line and "--overlap" in line
    code, lines = run("in.mkv", "o.mkv", "--codec", "libvpx-vp9", "--lossless", "--device", "cpu", "--tile", "0")
    assert code == 0, lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "o.mkv"]


def test_weights_in_a_job_file_are_found_beside_it(run, tiny_weights, tmp_path):
    (tmp_path / "job").mkdir()
    shutil.copy(tiny_weights, tmp_path / "job" / "model.safetensors")
    (tmp_path / "job" / "job.toml").write_text('[engine]\nweights = "model.safetensors"\ndevice = "cpu"\ntile = 0\n')
    make_clip(tmp_path / "in.mkv", frames=2, audio=False)
    code, lines = run("in.mkv", "o.mkv", "--config", "job/job.toml", "--encoder-preset", "ultrafast", weights=False)
    assert code == 0, lines
