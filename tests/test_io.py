"""vsdeblur.io on real files made with PyAV: timestamps, colour, bit depth, stream copies,
temporary files and error messages. No model involved: frames go through unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import REPO
from media import copy_through, make_clip, packets, pattern, sliding_noise_clip, video_times
from vsdeblur.errors import UsageError
from vsdeblur.io import Reader, Writer, encoder_settings

BT709 = {"colorspace": 1, "color_range": 1, "color_primaries": 1, "color_trc": 1}


def tags(path: Path) -> tuple:
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        return frame.colorspace, frame.color_range, frame.color_primaries, frame.color_trc, frame.rotation, frame.format.name


def test_reader_info_frames_and_range(tmp_path):
    clip = make_clip(tmp_path / "a.mkv", frames=7, colour=BT709)
    with Reader(clip) as reader:
        info = reader.info
        assert (info.width, info.height, info.bit_depth, info.rgb_format) == (64, 48, 8, "rgb24")
        assert info.colour.matrix == 1 and info.colour.range == 1
        frames = list(reader.frames())
    assert [f.index for f in frames] == list(range(7))
    assert [f.time(info.time_base) for f in frames] == video_times(clip)
    assert frames[0].rgb.shape == (48, 64, 3) and frames[0].rgb.dtype == np.uint8
    # decoding is close to what was encoded (x264 is lossy, ultrafast)
    assert np.abs(frames[3].rgb.astype(int) - pattern(64, 48, 3)).mean() < 8
    with Reader(clip) as reader:
        chunk = list(reader.frames(2, 5))
    assert [f.index for f in chunk] == [2, 3, 4]
    assert [f.pts for f in chunk] == [f.pts for f in frames[2:5]]
    assert np.array_equal(chunk[0].rgb, frames[2].rgb)


def test_vfr_audio_subtitles_attachment_colour_rotation_survive(tmp_path):
    times = [0, 40, 100, 110, 200, 330, 345]
    clip = make_clip(tmp_path / "vfr.mkv", frames=len(times), times_ms=times, subtitles=True, attachment=True, colour=BT709, rotation=90)
    out = tmp_path / "out.mkv"
    copy_through(clip, out)
    assert video_times(out) == video_times(clip) == [t / 1000 for t in times]
    assert packets(out, "audio") == packets(clip, "audio") and packets(clip, "audio")
    assert packets(out, "subtitle") == packets(clip, "subtitle") and packets(clip, "subtitle")
    assert tags(out) == tags(clip) == (1, 1, 1, 1, 90, "yuv420p")
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        assert [dict(s.metadata) for s in a.streams.attachments] == [dict(s.metadata) for s in b.streams.attachments]
        assert b.streams.subtitles[0].metadata["language"] == "eng"
        assert abs(b.duration - a.duration) < 0.01 * av.time_base


def test_ten_bit_hevc_stays_ten_bit(tmp_path):
    clip = make_clip(tmp_path / "hevc10.mkv", codec="libx265", pix_fmt="yuv420p10le", frames=3, audio=False,
                     colour={"colorspace": 9, "color_range": 1, "color_primaries": 9, "color_trc": 16})
    with Reader(clip) as reader:
        assert reader.info.bit_depth == 10 and reader.info.rgb_format == "rgb48le"
        first = next(reader.frames())
        assert first.rgb.dtype == np.uint16
        # a 10-bit gradient uses far more than 256 levels
        assert len(np.unique(first.rgb[..., 0])) > 256 or first.rgb.max() > 255 * 256
    out = tmp_path / "out.mkv"
    writer = copy_through(clip, out)
    assert writer.encoder["codec"] == "libx265" and writer.encoder["pix_fmt"] == "yuv420p10le"
    assert tags(out) == tags(clip) == (9, 1, 9, 16, 0, "yuv420p10le")
    assert video_times(out) == video_times(clip)


def test_odd_size_round_trip(tmp_path):
    clip = make_clip(tmp_path / "odd.mkv", width=333, height=187, frames=2, codec="ffv1", pix_fmt="yuv444p", audio=False)
    out = tmp_path / "out.mkv"
    copy_through(clip, out, codec="ffv1")
    with Reader(clip) as a, Reader(out) as b:
        assert (b.info.width, b.info.height) == (333, 187)
        for x, y in zip(a.frames(), b.frames()):
            # lossless codec, 4:4:4 both ways: only the RGB<->YUV rounding remains
            assert np.abs(x.rgb.astype(int) - y.rgb.astype(int)).max() <= 2


def test_untagged_source_stays_untagged(sample_clip, tmp_path):
    out = tmp_path / "bbb.mkv"
    with Reader(sample_clip) as reader, Writer(out, reader.info, {"encoder_preset": "ultrafast"}) as writer:
        assert reader.info.colour.matrix == 2  # the sample clip carries no colour tags
        for frame in reader.frames(0, 2):
            writer.write(frame.rgb, frame.pts)
    assert tags(out)[:4] == tags(sample_clip)[:4]


def test_mp4_refuses_srt_or_drops_it(tmp_path):
    clip = make_clip(tmp_path / "subs.mkv", frames=2, subtitles=True)
    with pytest.raises(UsageError, match=r"stream #2 \(subtitle, .*\).*mp4.*--drop-incompatible"):
        copy_through(clip, tmp_path / "out.mp4")
    assert list(tmp_path.glob(".*part*")) == []
    writer = copy_through(clip, tmp_path / "out.mp4", drop_incompatible=True)
    assert len(writer.left_out) == 1 and "subtitle" in writer.left_out[0] and "mp4 cannot store it" in writer.left_out[0]
    assert packets(tmp_path / "out.mp4", "audio") == packets(clip, "audio")
    assert video_times(tmp_path / "out.mp4") == video_times(clip)


def test_temporary_file_and_overwrite(tmp_path):
    clip = make_clip(tmp_path / "a.mkv", frames=2, audio=False)
    out = tmp_path / "out.mkv"
    with Reader(clip) as reader:
        writer = Writer(out, reader.info)
        temp = writer.temp
        assert temp.parent == tmp_path and temp.exists() and not out.exists()
        writer.write(next(reader.frames()).rgb, 0)
        writer.abort()
    assert not temp.exists() and not out.exists()
    copy_through(clip, out)
    with Reader(clip) as reader, pytest.raises(UsageError, match="output exists.*--overwrite"):
        Writer(out, reader.info)
    with Reader(clip) as reader:
        Writer(out, reader.info, overwrite=True).abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mkv", "out.mkv"]


def test_errors_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="input not found"):
        Reader(tmp_path / "missing.mkv")
    (tmp_path / "noise.mkv").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(UsageError, match="not a video"):
        Reader(tmp_path / "noise.mkv")
    audio_only = tmp_path / "audio.mka"
    make_clip(tmp_path / "a.mkv", frames=2)
    with av.open(str(tmp_path / "a.mkv")) as src, av.open(str(audio_only), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.audio[0])
        for p in src.demux(src.streams.audio[0]):
            if p.size:
                p.stream = stream
                dst.mux(p)
    with pytest.raises(UsageError, match="no video stream"):
        Reader(audio_only)
    clip = make_clip(tmp_path / "b.mkv", frames=2, audio=False)
    with Reader(clip) as reader:
        info = reader.info
        with pytest.raises(UsageError, match="unwritable|cannot write|does not exist"):
            Writer(tmp_path / "no" / "dir" / "out.mkv", info)
        for bad, message in [({"codec": "nonsense"}, "unknown video encoder"), ({"pix_fmt": "yuv9000p"}, "unknown pixel format"),
                             ({"codec": "libx264", "pix_fmt": "rgb48le"}, "cannot encode rgb48le"),
                             ({"codec": "ffv1", "crf": 10}, "has no option 'crf'"),
                             ({"encoder_options": "tune"}, "key=value")]:
            with pytest.raises(UsageError, match=message):
                encoder_settings(info, bad)


def test_truncated_stream_names_the_frame(tmp_path):
    clip = make_clip(tmp_path / "long.mkv", width=160, height=96, frames=30, audio=False)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    with Reader(cut) as reader, pytest.raises(UsageError, match=r"truncated: it stops after frame \d+ at [\d.]+ s, but the file declares 1.200 s"):
        for _ in reader.frames():
            pass
    mp4 = make_clip(tmp_path / "long.mp4", width=160, height=96, frames=30, audio=False)
    (tmp_path / "cut.mp4").write_bytes(mp4.read_bytes()[:-3000])
    with pytest.raises(UsageError, match="truncated or corrupt"):
        Reader(tmp_path / "cut.mp4")


def test_frame_ranges_seek_exactly(tmp_path):
    """Chunks of a clip with B-frames and short GOPs equal the same frames of a full decode."""
    clip = tmp_path / "gop.mkv"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"g": "6", "bf": "2", "preset": "ultrafast", "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(40):
            frame = av.VideoFrame.from_ndarray(pattern(64, 48, i), format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with Reader(clip) as reader:
        full = list(reader.frames())
        assert reader.timestamps() == [f.pts for f in full]
    for start, stop in [(0, 3), (7, 8), (13, 25), (35, None), (39, 40), (45, 50)]:
        with Reader(clip) as reader:
            chunk = list(reader.frames(start, stop))
        expected = full[start:stop]
        assert [f.index for f in chunk] == [f.index for f in expected]
        assert [f.pts for f in chunk] == [f.pts for f in expected]
        assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(chunk, expected))


def test_second_audio_track_chapters_and_metadata(tmp_path):
    clip = make_clip(tmp_path / "a.mkv", frames=4)
    rich = tmp_path / "rich.mkv"
    # the same clip plus a second audio track (a copy of the first), chapters and titles
    with av.open(str(clip)) as src, av.open(str(rich), "w") as dst:
        video, audio = src.streams.video[0], src.streams.audio[0]
        out = [dst.add_stream_from_template(video), dst.add_stream_from_template(audio), dst.add_stream_from_template(audio)]
        out[2].metadata.update({"language": "fra", "title": "commentary"})
        dst.metadata["title"] = "a title"
        dst.set_chapters([{"id": 1, "start": 0, "end": 80, "time_base": Fraction(1, 1000), "metadata": {"title": "One"}},
                          {"id": 2, "start": 80, "end": 160, "time_base": Fraction(1, 1000), "metadata": {"title": "Two"}}])
        for p in src.demux(video, audio):
            if p.size:
                targets = [out[0]] if p.stream is video else out[1:]
                for target in targets:
                    copy = av.Packet(bytes(p))
                    copy.pts, copy.dts, copy.duration, copy.time_base = p.pts, p.dts, p.duration, p.time_base
                    copy.is_keyframe = p.is_keyframe
                    copy.stream = target
                    dst.mux(copy)
    target = tmp_path / "out.mkv"
    copy_through(rich, target)
    with av.open(str(rich)) as a, av.open(str(target)) as b:
        assert len(b.streams.audio) == 2
        assert b.streams.audio[1].metadata["title"] == "commentary" and b.streams.audio[1].language == "fra"
        assert b.metadata["title"] == "a title"
        assert [(c["metadata"]["title"], float(c["start"] * c["time_base"])) for c in b.chapters()] == [("One", 0.0), ("Two", 0.08)]
        assert len(a.chapters()) == 2
    assert packets(target, "audio") == packets(rich, "audio")


def test_a_lossless_source_is_encoded_losslessly_unless_told_otherwise(tmp_path):
    """An FFV1 master stays a master: by default x264 writes it with qp 0, so what comes back is
    what was written up to YUV rounding, where the usual CRF 16 loses far more on noise; and that
    lossless H.264 is recognised as lossless in turn, so a chain of tools keeps it so. A lossy
    source keeps the CRF default, and --crf or the encoder's own option always wins."""
    rng = np.random.default_rng(0)
    master = tmp_path / "master.mkv"
    with av.open(str(master), "w") as out:
        video = out.add_stream("ffv1", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv444p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")
            frame = frame.reformat(format="yuv444p", dst_colorspace=1, dst_color_range=1)
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))

    def rate_options(info, settings: dict) -> dict:
        return {k: v for k, v in encoder_settings(info, settings)["options"].items() if k in ("crf", "qp")}

    def largest_error(a: Path, b: Path) -> int:
        with Reader(a) as first, Reader(b) as second:
            return max(int(np.abs(x.rgb.astype(int) - y.rgb.astype(int)).max()) for x, y in zip(first.frames(), second.frames(), strict=True))

    default = copy_through(master, tmp_path / "default.mp4")
    assert default.encoder["codec"] == "libx264" and default.encoder["options"]["qp"] == "0"
    assert "crf" not in default.encoder["options"]
    again = copy_through(tmp_path / "default.mp4", tmp_path / "again.mkv")
    assert again.encoder["options"]["qp"] == "0"
    lossy = copy_through(master, tmp_path / "crf16.mkv", crf=16)
    assert lossy.encoder["options"]["crf"] == "16" and "qp" not in lossy.encoder["options"]
    assert largest_error(master, tmp_path / "default.mp4") <= 3 < 20 <= largest_error(master, tmp_path / "crf16.mkv")
    assert largest_error(tmp_path / "default.mp4", tmp_path / "again.mkv") <= 3

    with Reader(master) as reader:
        info = reader.info
    x265 = encoder_settings(info, {"codec": "libx265", "encoder_options": "x265-params=aq-mode=3"})["options"]
    assert x265["x265-params"].split(":")[:2] == ["aq-mode=3", "lossless=1"] and "crf" not in x265
    assert "crf" not in encoder_settings(info, {"encoder_options": "qp=4"})["options"]
    assert rate_options(info, {"lossless": False}) == {"crf": "16"}
    assert "qp" not in encoder_settings(info, {"codec": "libvpx-vp9"})["options"]  # auto never insists
    for source in [tmp_path / "crf16.mkv", make_clip(tmp_path / "444.mkv", frames=2, pix_fmt="yuv444p", audio=False)]:
        with Reader(source) as reader:  # x264 at 4:4:4 uses the lossless profile, but not the bypass
            assert not reader.info.lossless
            assert rate_options(reader.info, {}) == {"crf": "16"}
            assert rate_options(reader.info, {"lossless": True}) == {"qp": "0"}
            for bad, message in [({"lossless": True, "crf": 10}, "takes no CRF or qp"),
                                 ({"lossless": True, "codec": "libvpx-vp9"}, "libvpx-vp9 cannot encode losslessly")]:
                with pytest.raises(UsageError, match=message):
                    encoder_settings(reader.info, bad)


def test_x264_output_does_not_depend_on_what_memory_held(tmp_path):
    # glibc fills each fresh allocation with MALLOC_PERTURB_'s byte. x264's AVX-512 code read
    # such memory: the same frames gave three different streams for three bytes, and decoded
    # pixels up to 25 levels apart (vsdeblur now keeps x264 below AVX-512; see writer.py)
    clip = sliding_noise_clip(tmp_path / "a.mp4", 10, seed=1)
    # in a process of its own, so that MALLOC_PERTURB_ applies
    script = "import sys; from pathlib import Path; from media import copy_through; copy_through(*map(Path, sys.argv[1:]))"
    decoded = []
    for byte in (0, 1, 85):
        target = tmp_path / f"out{byte}.mkv"
        env = dict(os.environ, MALLOC_PERTURB_=str(byte), PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
        subprocess.run([sys.executable, "-c", script, str(clip), str(target)], env=env, check=True, timeout=120)
        with av.open(str(target)) as c:
            decoded.append([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert len(decoded[0]) == 10
    for other in decoded[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(decoded[0], other, strict=True))
