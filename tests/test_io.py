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

from tests.media import REPO, copy_through, make_clip, packets, pattern, sliding_noise_clip, video_times
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
                                 ({"lossless": True, "codec": "libsvtav1"}, "libsvtav1 cannot encode losslessly")]:
                with pytest.raises(UsageError, match=message):
                    encoder_settings(reader.info, bad)


def test_x264_output_does_not_depend_on_what_memory_held(tmp_path):
    # glibc fills each fresh allocation with MALLOC_PERTURB_'s byte. x264's AVX-512 code reads
    # such memory: the same frames give three different streams for three bytes, and decoded
    # pixels up to 25 levels apart, which is why vsdeblur keeps x264 below AVX-512 (writer.py)
    clip = sliding_noise_clip(tmp_path / "a.mp4", 10, seed=1)
    # in a process of its own, so that MALLOC_PERTURB_ applies
    script = "import sys; from pathlib import Path; from tests.media import copy_through; copy_through(*map(Path, sys.argv[1:]))"
    decoded = []
    for byte in (0, 1, 85):
        target = tmp_path / f"out{byte}.mkv"
        env = dict(os.environ, MALLOC_PERTURB_=str(byte), PYTHONPATH=str(REPO))
        subprocess.run([sys.executable, "-c", script, str(clip), str(target)], env=env, check=True, timeout=120)
        with av.open(str(target)) as c:
            decoded.append([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert len(decoded[0]) == 10
    for other in decoded[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(decoded[0], other, strict=True))


def frames_of(path: Path) -> list[np.ndarray]:
    with Reader(path) as reader:
        return [f.rgb for f in reader.frames()]


def write_raw(path: Path, codec: str, pix_fmt: str, planes: list[np.ndarray], field_order: int = 0, colour: dict | None = None) -> Path:
    """A clip whose frames are `planes` (numpy arrays in `pix_fmt`), with a field order and
    colour tags on the stream."""
    frames = [av.VideoFrame.from_ndarray(plane, format=pix_fmt) for plane in planes]
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=25)
        video.width, video.height, video.pix_fmt = frames[0].width, frames[0].height, pix_fmt
        video.codec_context.field_order = field_order
        for key, value in (colour or {}).items():
            setattr(video.codec_context, key, value)
        for i, frame in enumerate(frames):
            for key, value in (colour or {}).items():
                setattr(frame, key, value)
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


@pytest.mark.parametrize(("source_fmt", "container", "codec", "written"), [
    ("bgr0", "mkv", "libx265", "gbrp"),  # FFV1 RGB
    ("gbrp16le", "mkv", "ffv1", "gbrp16le"),  # 16-bit RGB: no x26x holds 16 bits
    ("rgb24", "mov", "libx265", "gbrp"),  # PNG
    ("gray", "mkv", "libx265", "gray"),
    ("gray16le", "mkv", "ffv1", "gray16le"),
])
def test_lossless_rgb_and_grey_sources_stay_rgb_and_grey_at_their_depth(tmp_path, source_fmt, container, codec, written):
    """A lossless RGB or grey master is written in its own colour model and depth, exactly; the
    default encoder is the first of x264, x265 (then FFV1) that holds the format."""
    source_codec = "png" if container == "mov" else "ffv1"
    clip = make_clip(tmp_path / f"in.{container}", frames=3, codec=source_codec, pix_fmt=source_fmt, audio=False)
    writer = copy_through(clip, tmp_path / "out.mkv")
    assert (writer.encoder["codec"], writer.encoder["pix_fmt"], writer.left_out) == (codec, written, [])
    with Reader(tmp_path / "out.mkv") as reader:
        assert (reader.info.pix_fmt, reader.info.lossless) == (written, True)
    assert all(np.array_equal(a, b) for a, b in zip(frames_of(clip), frames_of(tmp_path / "out.mkv"), strict=True))


def test_each_encoder_gets_the_closest_format_it_has_and_says_what_it_lacks(tmp_path):
    rgb16 = make_clip(tmp_path / "rgb16.mkv", frames=1, codec="ffv1", pix_fmt="gbrp16le", audio=False)
    rgb8 = make_clip(tmp_path / "rgb8.mkv", frames=1, codec="ffv1", pix_fmt="bgr0", audio=False)
    yuv444 = make_clip(tmp_path / "444.mkv", frames=1, codec="ffv1", pix_fmt="yuv444p10le", audio=False)
    with Reader(rgb16) as a, Reader(rgb8) as b, Reader(yuv444) as c:
        deep, rgb, full = a.info, b.info, c.info

    def chosen(info, **settings) -> tuple:
        enc = encoder_settings(info, settings, "matroska")
        return enc["codec"], enc["pix_fmt"], enc["left_out"]

    assert chosen(rgb, codec="libx264", lossless=False) == ("libx264", "yuv444p", [])  # 4:4:4, not 4:2:0
    assert chosen(rgb, codec="ffv1") == ("ffv1", "bgr0", [])
    assert chosen(rgb, lossless=False) == ("libx264", "yuv444p", [])
    codec, pix_fmt, notes = chosen(deep, codec="libx265")  # x265 goes to 12 bits
    assert (codec, pix_fmt) == ("libx265", "gbrp12le")
    assert notes == ["4 of the source's 16 bits per sample (gbrp16le written as gbrp12le: libx265 takes no more; ffv1 keeps them)"]
    codec, pix_fmt, notes = chosen(deep, crf=18)  # lossy: the usual x265, at its deepest
    assert (codec, pix_fmt, len(notes)) == ("libx265", "gbrp12le", 1)
    codec, pix_fmt, notes = chosen(full, codec="libsvtav1")
    assert (codec, pix_fmt) == ("libsvtav1", "yuv420p10le") and "chroma resolution" in notes[0]
    codec, pix_fmt, notes = chosen(rgb, codec="libx264")  # lossless by default, but x264 has no RGB
    assert pix_fmt == "yuv444p" and notes and "exact RGB values" in notes[0]
    assert chosen(rgb, codec="libx264", pix_fmt="yuv420p") == ("libx264", "yuv420p", [])  # asked for: no note
    mjpeg = make_clip(tmp_path / "mjpeg.mkv", frames=1, codec="mjpeg", pix_fmt="yuvj420p", audio=False)
    with Reader(mjpeg) as reader:  # full-range 4:2:0 is 4:2:0 (with a range tag), not RGB-like 4:4:4
        assert chosen(reader.info) == ("libx264", "yuv420p", [])


def test_grey_is_converted_by_its_range(tmp_path):
    """Limited-range grey black (16) and white (235) reach the model as 0 and 255, as the same
    picture in YUV does; swscale took grey as full range, so a grey source written as YUV came
    out lighter."""
    levels = np.tile(np.linspace(16, 235, 64).round().astype(np.uint8), (48, 1))
    limited = {"color_range": 1}
    grey = write_raw(tmp_path / "grey.mkv", "ffv1", "gray", [levels] * 2, colour=limited)
    yuv = write_raw(tmp_path / "yuv.mkv", "ffv1", "yuv444p", [np.stack([levels, np.full_like(levels, 128), np.full_like(levels, 128)])] * 2,
                    colour=limited)
    grey_rgb, yuv_rgb = frames_of(grey)[0], frames_of(yuv)[0]
    assert grey_rgb[0, 0].tolist() == [0, 0, 0] and grey_rgb[0, -1].tolist() == [255, 255, 255]
    assert np.abs(grey_rgb.astype(int) - yuv_rgb).max() <= 1
    copy_through(grey, tmp_path / "as-yuv.mkv", codec="libx264")  # x264 writes grey as 4:2:0
    assert np.abs(frames_of(tmp_path / "as-yuv.mkv")[0].astype(int) - grey_rgb).max() <= 1


def test_alpha_and_interlacing_are_noted(tmp_path):
    """The model sees colour only and whole frames: a ProRes 4444 alpha channel and the fields
    of an interlaced source do not survive, and the output says so."""
    alpha = make_clip(tmp_path / "4444.mov", frames=2, codec="prores_ks", pix_fmt="yuva444p10le", audio=False)
    writer = copy_through(alpha, tmp_path / "alpha.mkv")  # FFmpeg decodes ProRes 4444 at 12 bits
    assert writer.encoder["pix_fmt"] == "yuv444p12le"  # no plane of opaque alpha
    assert writer.left_out == ["the alpha channel of the yuva444p12le source (the model restores colour only; the output is opaque)"]
    fields = write_raw(tmp_path / "tb.mkv", "ffv1", "yuv420p", [np.zeros((48 * 3 // 2, 64), np.uint8)] * 2, field_order=4)
    with Reader(fields) as reader:
        assert reader.info.field_order == "tb"
    writer = copy_through(fields, tmp_path / "progressive.mkv")
    assert len(writer.left_out) == 1 and writer.left_out[0].startswith("the interlacing of the source, field order tb: ")
    plain = make_clip(tmp_path / "plain.mkv", frames=2, audio=False)
    assert copy_through(plain, tmp_path / "plain-out.mkv").left_out == []


def test_containers_get_an_encoder_they_hold_or_one_line(tmp_path):
    clip = make_clip(tmp_path / "in.mkv", frames=2, audio=False)
    writer = copy_through(clip, tmp_path / "out.webm")  # x264 cannot go into WebM: VP9 can
    assert writer.encoder["codec"] == "libvpx-vp9" and len(video_times(tmp_path / "out.webm")) == 2
    for name, settings, message in [
        ("out.gif", {}, "gif takes no pixel format for 64x48 yuv420p video with 8 bits per sample or more"),
        ("out.png", {}, r"image2 writes a file of its own for every image .*out\.png"),
        ("x.webm", {"codec": "libx264"}, "webm cannot hold h264 video \\(libx264\\); give --codec libvpx-vp9 or libsvtav1"),
    ]:
        with pytest.raises(UsageError, match=message) as error:
            copy_through(clip, tmp_path / name, **settings)
        assert "\n" not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "out.webm"]


def test_names_with_colons_are_files(tmp_path, monkeypatch):
    """FFmpeg reads 'ab:' in 'ab:cd.mkv' as a protocol; here a name is a file unless it is '-'
    or a URL (scheme://) that is not a local file."""
    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / "plain.mkv", frames=2, audio=False).rename("ab:cd.mkv")
    with Reader("ab:cd.mkv") as reader:
        assert len(list(reader.frames(1))) == 1  # a range opens the file a second time
    for name in ["12:30 clip.mkv", "2024-01-01T12:00:00.mkv"]:
        copy_through(Path("ab:cd.mkv"), Path(name))
        assert video_times(tmp_path / name) == video_times(tmp_path / "ab:cd.mkv")
    with Reader(f"file://{tmp_path}/ab:cd.mkv") as reader:  # a URL
        assert reader.info.width == 64
    with Reader("ab:cd.mkv") as reader, pytest.raises(UsageError, match="cannot write to a URL"):
        Writer("rtmp://example.invalid/live", reader.info)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["12:30 clip.mkv", "2024-01-01T12:00:00.mkv", "ab:cd.mkv"]


def test_encoder_settings_are_checked_against_each_encoder(tmp_path):
    clip = make_clip(tmp_path / "in.mkv", frames=2, audio=False)
    with Reader(clip) as reader:
        info = reader.info
    for settings, message in [
        ({"codec": "libx265", "crf": 60}, "libx265: --crf 60 is out of range; it takes 0 to 51"),
        ({"crf": 52}, "libx264: --crf 52 is out of range; it takes 0 to 51"),  # x264 would clip it to 51 unsaid
        ({"encoder_preset": "fastest"}, "libx264: --encoder-preset fastest must be one of ultrafast, .*, placebo"),
        ({"codec": "libsvtav1", "encoder_preset": "fast"}, "libsvtav1: --encoder-preset fast must be a number from -2 to 13"),
        ({"codec": "libvpx-vp9", "encoder_options": "cpu-used=9"}, "cpu-used=9 in --encoder-options is out of range; it takes -8 to 8"),
        ({"codec": "libvpx-vp9", "encoder_options": "deadline=slow"}, "deadline=slow in --encoder-options must be one of best, good, realtime"),
        ({"codec": "ffv1", "crf": 10}, r"ffv1 has no option 'crf' \(--crf 10\)"),
    ]:
        with pytest.raises(UsageError, match=message):
            encoder_settings(info, settings)
    assert encoder_settings(info, {"codec": "libvpx-vp9", "crf": 63, "encoder_options": "b=0 deadline=good"})["options"]["crf"] == "63"


def test_an_encoder_that_refuses_its_settings_gives_one_line(tmp_path, capfd):
    clip = make_clip(tmp_path / "in.mkv", frames=2, audio=False)
    with pytest.raises(UsageError, match=r"libx264 refused 64x48 yuv420p with options '.*tune=bogus.*': x264 \[error\]: invalid tune 'bogus'"):
        copy_through(clip, tmp_path / "out.mkv", encoder_options="tune=bogus")
    assert capfd.readouterr().err == ""  # x264's own line is in the message, not on stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]


def test_vp9_writes_losslessly(tmp_path):
    """VP9 has lossless=1: what it writes decodes to exactly what FFV1 keeps of the same frames."""
    master = make_clip(tmp_path / "master.mkv", frames=3, codec="ffv1", pix_fmt="yuv420p", audio=False)
    writer = copy_through(master, tmp_path / "vp9.webm", codec="libvpx-vp9")  # lossless source: lossless by default
    assert writer.encoder["options"]["lossless"] == "1"
    copy_through(master, tmp_path / "ffv1.mkv", codec="ffv1")
    exact = frames_of(tmp_path / "ffv1.mkv")
    assert all(np.array_equal(a, b) for a, b in zip(exact, frames_of(tmp_path / "vp9.webm"), strict=True))
    copy_through(master, tmp_path / "vp9-crf.webm", codec="libvpx-vp9", crf=40)
    assert not all(np.array_equal(a, b) for a, b in zip(exact, frames_of(tmp_path / "vp9-crf.webm")))


def test_lossless_hevc_is_recognised(tmp_path):
    """x265's lossless=1 sets transquant_bypass_enabled_flag in the picture parameter set, so an
    x265 master is read as lossless in turn (in Matroska and MP4, and as a raw Annex B stream)."""
    for name in ["lossless.mkv", "lossless.mp4", "lossless.hevc"]:
        clip = make_clip(tmp_path / name, frames=4, codec="libx265", audio=False, options={"x265-params": "lossless=1:log-level=error"})
        with Reader(clip) as reader:
            assert reader.info.lossless, name
    lossy = make_clip(tmp_path / "lossy.mkv", frames=4, codec="libx265", audio=False, options={"x265-params": "log-level=error"})
    with Reader(lossy) as reader:
        assert not reader.info.lossless


def test_y4m_keeps_depth_and_gets_yuv_for_rgb(tmp_path):
    """Y4M holds YUV and grey only, at up to 16 bits (the deeper formats are FFmpeg's extension)."""
    for source_fmt, colour_space in [("yuv420p10le", b"C420p10"), ("bgr0", b"C444"), ("gray16le", b"Cmono16")]:
        clip = make_clip(tmp_path / f"{source_fmt}.mkv", frames=2, codec="ffv1", pix_fmt=source_fmt, audio=False)
        out = tmp_path / f"{source_fmt}.y4m"
        writer = copy_through(clip, out)
        header = out.read_bytes().split(b"\n")[0].split()
        assert writer.encoder["codec"] == "rawvideo" and colour_space in header, header
        assert len(video_times(out)) == 2
