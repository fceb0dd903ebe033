"""vsdeblur-stream end to end with the tiny untrained model: timestamps, streams, colour,
bit depth, pipes, config files, errors and clean-up after SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

import vsdeblur.weights
from tests.media import REPO, make_clip, packets, video_times
from vsdeblur.engine import Deblurrer
from vsdeblur.io import Reader
from vsdeblur.io.colour import HdrMetadata
from vsdeblur.stream import Progress, main, stream

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def engine(tiny_weights) -> Deblurrer:
    return Deblurrer(weights=tiny_weights, device="cpu", tile=0, scene_threshold=0)


def colour_tags(path: Path) -> tuple:
    with Reader(path) as reader:
        return reader.info.colour, reader.info.rotation, reader.info.pix_fmt


def test_stream_keeps_times_streams_and_colour(engine, tmp_path):
    times = [0, 40, 90, 100, 180, 260]  # variable frame rate
    clip = make_clip(tmp_path / "in.mkv", frames=len(times), times_ms=times, subtitles=True, attachment=True,
                     colour={"colorspace": 1, "color_range": 1, "color_primaries": 1, "color_trc": 1}, rotation=-90)
    out = tmp_path / "out.mkv"
    result = stream(clip, out, {"encoder_preset": "ultrafast"}, engine=engine, progress=False)
    assert result.frames == len(times)
    assert video_times(out) == video_times(clip)
    assert packets(out, "audio") == packets(clip, "audio")
    assert packets(out, "subtitle") == packets(clip, "subtitle")
    assert colour_tags(out) == colour_tags(clip)
    with av.open(str(out)) as c:
        assert len(c.streams.attachments) == 1
    with Reader(clip) as a, Reader(out) as b:
        restored = [f.rgb for f in b.frames()]
        assert len(restored) == len(times)
        assert sum(not np.array_equal(f.rgb, r) for f, r in zip(a.frames(), restored)) > 0  # the model ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "in.srt", "out.mkv"]


def test_two_frame_hevc_outputs_always_mux(engine, tmp_path):
    # libx265 left the DTS of packets that only come out at the final flush uninitialised in
    # about one run in seven; twenty runs catch that almost surely
    clip = make_clip(tmp_path / "in.mkv", width=160, height=96, frames=2, codec="ffv1", pix_fmt="yuv420p10le", audio=False)
    for run in range(20):
        stream(clip, tmp_path / f"out{run}.mkv", {"encoder_preset": "ultrafast"}, engine=engine, progress=False)
        assert video_times(tmp_path / f"out{run}.mkv") == video_times(clip)


HDR10 = {"colorspace": 9, "color_range": 1, "color_primaries": 9, "color_trc": 16}  # BT.2020, PQ
MASTERING = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"  # a P3-D65 1000-nit display


def hdr_metadata(path: Path) -> HdrMetadata | None:
    with Reader(path) as reader:
        return reader.info.hdr


def test_hdr10_metadata_survives_x265_x264_and_svt_av1(engine, tmp_path):
    clip = make_clip(tmp_path / "in.mkv", width=64, height=64, frames=4, codec="libx265", pix_fmt="yuv420p10le", audio=False,
                     colour=HDR10, options={"x265-params": f"log-level=error:master-display={MASTERING}:max-cll=1000,400"})
    source = hdr_metadata(clip)
    assert source is not None and source.max_cll == 1000 and source.luminance == (Fraction(1, 200), 1000)
    result = stream(clip, tmp_path / "x265.mkv", {"encoder_preset": "ultrafast"}, engine=engine, progress=False)  # the default for 10 bits
    assert hdr_metadata(tmp_path / "x265.mkv") == source and colour_tags(tmp_path / "x265.mkv") == colour_tags(clip)
    assert result.left_out == []
    stream(clip, tmp_path / "x264.mkv", {"codec": "libx264", "encoder_preset": "ultrafast"}, engine=engine, progress=False)
    assert hdr_metadata(tmp_path / "x264.mkv") == source
    stream(clip, tmp_path / "av1.mkv", {"codec": "libsvtav1", "encoder_preset": "12"}, engine=engine, progress=False)
    av1 = hdr_metadata(tmp_path / "av1.mkv")  # AV1 stores the values in binary fixed point
    assert (av1.max_cll, av1.max_fall) == (1000, 400)
    assert np.allclose([float(v) for xy in (*av1.primaries, av1.white_point) for v in xy],
                       [float(v) for xy in (*source.primaries, source.white_point) for v in xy], atol=1e-4)
    # options that give their own mastering display win; the light levels still come along
    own = "x265-params=master-display=G(8500,39850)B(6550,2300)R(35400,14600)WP(15635,16450)L(40000000,50)"
    stream(clip, tmp_path / "own.mkv", {"encoder_preset": "ultrafast", "encoder_options": own}, engine=engine, progress=False)
    given = hdr_metadata(tmp_path / "own.mkv")
    assert given.luminance == (Fraction(1, 200), 4000) and given.max_cll == 1000
    # FFV1 has nowhere to put it: the output says so instead of losing it silently
    result = stream(clip, tmp_path / "ffv1.mkv", {"codec": "ffv1"}, engine=engine, progress=False)
    assert hdr_metadata(tmp_path / "ffv1.mkv") is None and colour_tags(tmp_path / "ffv1.mkv") == colour_tags(clip)
    assert result.left_out == ["the HDR10 mastering display and light levels (ffv1 cannot store them; libx265, libx264, libsvtav1 can)"]
    sdr = make_clip(tmp_path / "sdr.mkv", width=64, height=64, frames=4, audio=False)
    assert hdr_metadata(sdr) is None
    stream(sdr, tmp_path / "sdr-out.mkv", {"codec": "libx265", "encoder_preset": "ultrafast"}, engine=engine, progress=False)
    assert hdr_metadata(tmp_path / "sdr-out.mkv") is None
    result = stream(sdr, tmp_path / "sdr-ffv1.mkv", {"codec": "ffv1"}, engine=engine, progress=False)
    assert result.left_out == []  # nothing to leave out


def test_ten_bit_hevc_in_ten_bit_out(engine, tmp_path):
    clip = make_clip(tmp_path / "in.mkv", width=160, height=96, frames=3, codec="libx265", pix_fmt="yuv420p10le", audio=False)
    out = tmp_path / "out.mkv"
    stream(clip, out, {"encoder_preset": "ultrafast"}, engine=engine, progress=False)
    with Reader(out) as reader:
        assert (reader.info.pix_fmt, reader.info.bit_depth, reader.info.codec) == ("yuv420p10le", 10, "hevc")
    assert video_times(out) == video_times(clip)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p10le"])
def test_odd_size(engine, tmp_path, pix_fmt):
    clip = make_clip(tmp_path / "in.mkv", width=333, height=187, frames=2, codec="ffv1", pix_fmt=pix_fmt, audio=False)
    out = tmp_path / "out.mkv"
    stream(clip, out, {"encoder_preset": "ultrafast"}, engine=engine, progress=False)
    with Reader(clip) as a, Reader(out) as b:
        assert (b.info.width, b.info.height, b.info.bit_depth) == (333, 187, a.info.bit_depth)
        assert b.info.pix_fmt == ("yuv444p" if a.info.bit_depth == 8 else "yuv444p10le")  # x26x cannot subsample odd sizes
    assert video_times(out) == video_times(clip)


@pytest.mark.slow
def test_sample_clip_mp4(engine, sample_clip, tmp_path):
    """The bundled 1280x720 H.264 + AAC clip, trimmed to its first frames by remuxing."""
    trimmed = tmp_path / "bbb.mp4"
    with av.open(str(sample_clip)) as src, av.open(str(trimmed), "w") as dst:
        video, audio = src.streams.video[0], src.streams.audio[0]
        copies = {video.index: dst.add_stream_from_template(video), audio.index: dst.add_stream_from_template(audio)}
        kept = 0
        for p in src.demux(video, audio):
            if not p.size or p.pts is None or float(p.pts * p.time_base) >= 0.1:
                continue
            kept += p.stream is video
            p.stream = copies[p.stream.index]
            dst.mux(p)
    assert kept == 3
    out = tmp_path / "bbb.mkv"
    stream(trimmed, out, {"encoder_preset": "ultrafast"}, engine=engine, progress=False)
    assert [round(t, 3) for t in video_times(out)] == [round(t, 3) for t in video_times(trimmed)]
    assert [p for p, _ in packets(out, "audio")] == [p for p, _ in packets(trimmed, "audio")]
    assert colour_tags(out) == colour_tags(trimmed)


def test_y4m_output_is_raw_and_constant_rate(engine, tmp_path):
    clip = make_clip(tmp_path / "in.mkv", frames=3)
    out = tmp_path / "out.y4m"
    result = stream(clip, out, {"drop_incompatible": True}, engine=engine, progress=False)
    assert result.left_out == ["stream #1 (audio, aac) (yuv4mpegpipe cannot store it; --drop-incompatible)"]
    assert out.read_bytes().startswith(b"YUV4MPEG2 W64 H48 F25:1")
    assert video_times(out) == video_times(clip)


def test_cli_config_file_flags_and_errors(tiny_weights, tmp_path):
    clip = make_clip(tmp_path / "in.mkv", frames=2, subtitles=True)
    job = tmp_path / "job.toml"
    job.write_text(f'[engine]\nweights = "{tiny_weights}"\ndevice = "cpu"\ntile = 0\n\n[encode]\ncodec = "libx264"\ncrf = 30\nencoder_preset = "ultrafast"\n')
    runner = CliRunner()
    out = tmp_path / "out.mp4"
    result = runner.invoke(main, [str(clip), str(out), "--config", str(job), "--crf", "20", "--drop-incompatible", "-q"])
    assert result.exit_code == 0, result.output
    assert "left out stream #2 (subtitle" in result.output
    assert video_times(out) == video_times(clip)

    def error(*args: str) -> str:
        r = runner.invoke(main, [str(a) for a in args])
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1, r.output
        return lines[0]

    assert "output exists" in error(clip, out, "--config", job)
    assert "input not found" in error(tmp_path / "nope.mkv", tmp_path / "o.mkv", "--config", job)
    assert "cannot be stored in mp4" in error(clip, tmp_path / "o.mp4", "--config", job)
    assert "unknown video encoder" in error(clip, tmp_path / "o.mkv", "--config", job, "--codec", "h265x")
    assert "unknown pixel format" in error(clip, tmp_path / "o.mkv", "--config", job, "--pix-fmt", "yuv9")
    assert "output directory does not exist" in error(clip, tmp_path / "missing-dir" / "o.mkv", "--config", job)
    assert "cannot tell the container format" in error(clip, tmp_path / "o.xyz", "--config", job)
    assert "unknown container format 'nosuch'" in error(clip, tmp_path / "o.mkv", "--config", job, "--format", "nosuch")
    bad = tmp_path / "bad.toml"
    bad.write_text("[encode]\ncrf = 16\nspeed = 3\n")
    assert "unknown key 'speed'" in error(clip, tmp_path / "o.mkv", "--config", bad)
    bad.write_text("[encode]\ncrf = 'high'\n")
    assert "crf must be an integer" in error(clip, tmp_path / "o.mkv", "--config", bad)
    assert "weights file not found" in error(clip, tmp_path / "o.mkv", "--weights", tmp_path / "none.safetensors")
    with pytest.MonkeyPatch.context() as patch:  # as on an installation without the shipped model
        patch.setattr(vsdeblur.weights, "default_weights_path", lambda: None)
        assert "default.safetensors" in error(clip, tmp_path / "o.mkv")
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == ["bad.toml", "in.mkv", "in.srt", "job.toml", "out.mp4"]


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vsdeblur.stream", *args], env=ENV, capture_output=True, **kwargs)


def test_svt_av1_says_nothing_but_errors(tiny_weights, tmp_path):
    clip = make_clip(tmp_path / "in.mkv", width=64, height=64, frames=3, audio=False)
    env = {k: v for k, v in ENV.items() if k != "SVT_LOG"}
    done = subprocess.run([sys.executable, "-m", "vsdeblur.stream", str(clip), str(tmp_path / "out.mkv"), "--weights", str(tiny_weights),
                           "--device", "cpu", "--codec", "libsvtav1", "-q"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Svt[" not in done.stderr, done.stderr
    assert len(video_times(tmp_path / "out.mkv")) == 3


@pytest.mark.slow
def test_pipes(tiny_weights, tmp_path):
    """`... | vsdeblur-stream - - | ...`: NUT in, Matroska out, nothing but video on stdout."""
    clip = make_clip(tmp_path / "in.nut", frames=4, fmt="nut")
    done = run_cli("-", "-", "--weights", str(tiny_weights), "--device", "cpu", "--encoder-preset", "ultrafast",
                   input=clip.read_bytes(), timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    out = tmp_path / "out.mkv"
    out.write_bytes(done.stdout)
    assert [round(t, 3) for t in video_times(out)] == [round(t, 3) for t in video_times(clip)]
    assert [p for p, _ in packets(out, "audio")] == [p for p, _ in packets(clip, "audio")]


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "status", "word"), [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_killed_midway_leaves_nothing(tiny_weights, tmp_path, signum, status, word):
    clip = make_clip(tmp_path / "in.mkv", width=160, height=96, frames=1000, audio=False)
    out = tmp_path / "out.mkv"
    proc = subprocess.Popen([sys.executable, "-m", "vsdeblur.stream", str(clip), str(out), "--weights", str(tiny_weights),
                             "--device", "cpu", "--encoder-preset", "ultrafast"], env=ENV, stderr=subprocess.PIPE,
                            # a shell that starts the tests in the background ignores SIGINT, and
                            # Python keeps an ignored SIGINT ignored: give the child the default
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.*")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert list(tmp_path.glob(".out.*")), "the run never started writing"
    time.sleep(0.5)  # midway: frames are flowing through all three stages
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err.decode()
    assert word in err.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


class _Log:
    """A stderr stand-in that is not a terminal."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_progress_lines_when_not_a_terminal():
    log = _Log()
    meter = Progress(total=4, duration=None, stream=log, interval=0)
    for i in range(4):
        meter.update(i * 0.04)
    meter.finish()
    lines = log.text.splitlines()
    assert len(lines) == 4 and "\r" not in log.text and "\x1b" not in log.text
    assert lines[-1].startswith("vsdeblur-stream: frame 4/4 (100.0%)") and "fps" in lines[-1] and "ETA 0:00:00" in lines[-1]


def test_pipeline_stays_bounded(tmp_path, monkeypatch):
    """Decoding runs at most a queue ahead of the model, and the model a queue ahead of the
    encoder, whatever the clip's length."""
    import vsdeblur.io.reader as reader_module
    from vsdeblur.io import Writer
    from vsdeblur.threads import QUEUE_FRAMES

    counts = {"decoded": 0, "written": 0}
    convert, write = reader_module.to_rgb, Writer.write

    def counted_convert(*args):
        counts["decoded"] += 1
        return convert(*args)

    def counted_write(self, *args):
        counts["written"] += 1
        return write(self, *args)

    monkeypatch.setattr(reader_module, "to_rgb", counted_convert)
    monkeypatch.setattr(Writer, "write", counted_write)
    ahead, behind = [], []

    class SlowIdentity:
        def tagged(self, items):
            for i, (tag, frame) in enumerate(items):
                time.sleep(0.005)
                ahead.append(counts["decoded"] - (i + 1))
                behind.append(i - counts["written"])
                yield tag, frame

    clip = make_clip(tmp_path / "in.mkv", frames=150, audio=True)
    result = stream(clip, tmp_path / "out.mkv", {"encoder_preset": "ultrafast"}, engine=SlowIdentity(), progress=False)
    assert result.frames == 150 == counts["written"]
    # one queue, plus the frame in each thread's hands
    assert max(ahead) <= QUEUE_FRAMES + 2
    assert max(behind) <= QUEUE_FRAMES + 2
    assert video_times(tmp_path / "out.mkv") == video_times(clip)


def test_bench_stream_measurement(tmp_path):
    from vsdeblur.cli import main as vsdeblur_main

    report = tmp_path / "bench.json"
    result = CliRunner().invoke(vsdeblur_main, ["bench", "--preset", "tiny", "--size", "64x48", "--frames", "3", "--rounds", "1",
                                                "--device", "cpu", "--stream", "--json", str(report)])
    assert result.exit_code == 0, result.output
    assert "stream fps / engine-only fps" in result.output
    assert 0 < json.loads(report.read_text())["stream_ratio"]
