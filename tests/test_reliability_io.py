"""Outputs that are not plain files, and what the output keeps of unusual sources (issue 31):
special files at OUTPUT are written into or refused, never replaced; a symlink at OUTPUT, even
a dangling one, is an existing output; MP4 into a pipe is fragmented; a sparse clip's audio stays
next to its video; VP9 alpha in WebM gets its note; MP4 chapter tracks are chapters, not streams
to refuse. Tiny clips; an identity engine where the model does not matter, the tiny model where
the command line is the point. CPU only."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from tests.media import REPO, copy_through, disorder, make_clip, packets, spread_clip, video_times
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


def frame_count(data: bytes, path: Path) -> int:
    path.write_bytes(data)
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def reader_of(fifo: Path, into: Path) -> subprocess.Popen:
    """A process that reads the named pipe to its end into a file, as a player would."""
    return subprocess.Popen(["cat", str(fifo)], stdout=into.open("wb"))


def finished(reader: subprocess.Popen) -> None:
    try:
        assert reader.wait(timeout=30) == 0
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()


def mknod_or_skip(path: Path, mode: int, major: int, minor: int) -> Path:
    try:
        os.mknod(path, mode | 0o666, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("creating device nodes needs root (CAP_MKNOD)")
    return path


# ---- 1: special files at OUTPUT -------------------------------------------------------------


@pytest.mark.parametrize("name", ["pipe.mkv", "pipe.mp4"])
def test_a_named_pipe_is_written_into_not_replaced(tmp_path, name):
    clip = make_clip(tmp_path / "in.mkv", frames=5)
    fifo = tmp_path / name
    os.mkfifo(fifo)
    got = tmp_path / "got" / name
    got.parent.mkdir()
    reader = reader_of(fifo, got)
    try:
        result = run_stream(clip, fifo, overwrite=True)  # --overwrite does not mean "replace a pipe"
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the named pipe was replaced by a file"
    finally:
        if not stat.S_ISFIFO(os.lstat(fifo).st_mode):
            reader.kill()  # its pipe is gone: it would wait for ever
    finished(reader)
    assert video_times(got) == video_times(clip)  # every frame, at its time
    assert packets(got, "audio") == packets(clip, "audio")
    if name.endswith(".mp4"):  # a pipe cannot seek back: fragmented, and the output says so
        assert any("fragmented MP4" in line for line in result.left_out), result.left_out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["got", "in.mkv", name]  # no temporary file beside it


def test_a_character_device_is_written_into_not_replaced(tmp_path):
    clip = make_clip(tmp_path / "in.mkv", frames=3)
    null = mknod_or_skip(tmp_path / "n", stat.S_IFCHR, 1, 3)  # /dev/null's numbers, as in the issue
    run_stream(clip, null, settings={"encoder_preset": "ultrafast", "format": "matroska"}, overwrite=True)
    assert stat.S_ISCHR(os.lstat(null).st_mode), "the device node was replaced by a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "n"]


def test_a_link_to_dev_null_is_written_into_without_overwrite(tmp_path):
    clip = make_clip(tmp_path / "in.mkv", frames=3)
    (tmp_path / "null.mp4").symlink_to("/dev/null")
    run_stream(clip, tmp_path / "null.mp4")  # nothing is replaced, so nothing to ask --overwrite for
    assert os.readlink(tmp_path / "null.mp4") == "/dev/null"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv", "null.mp4"]


def test_a_socket_a_block_device_or_a_directory_is_refused_in_one_line(tmp_path, tiny_weights, monkeypatch):
    clip = make_clip(tmp_path / "in.mkv", frames=2)
    monkeypatch.chdir(tmp_path)  # a short relative name: socket paths are limited to about 100 bytes
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("sock.mkv")
        line = one_error(tiny_weights, clip, tmp_path / "sock.mkv", "--overwrite")
        assert "is a socket" in line, line
        assert stat.S_ISSOCK(os.lstat(tmp_path / "sock.mkv").st_mode)
    (tmp_path / "dir.mkv").mkdir()
    assert "output is a directory" in one_error(tiny_weights, clip, tmp_path / "dir.mkv", "--overwrite")
    assert (tmp_path / "dir.mkv").is_dir()
    disk = mknod_or_skip(tmp_path / "disk.mkv", stat.S_IFBLK, 7, 250)  # a loop device's numbers; never opened
    assert "is a block device" in one_error(tiny_weights, clip, disk, "--overwrite")
    assert stat.S_ISBLK(os.lstat(disk).st_mode)


def test_batch_never_replaces_a_special_file_or_a_directory(tmp_path, batch_settings):
    (tmp_path / "in").mkdir()
    clip = make_clip(tmp_path / "in" / "c.mkv", frames=2)
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "c.mkv")
    with pytest.raises(UsageError, match=r"output is a named pipe: .*c\.mkv; vsdeblur batch writes regular files"):
        run_batch([str(clip)], out, batch_settings(), overwrite=True)
    assert stat.S_ISFIFO(os.lstat(out / "c.mkv").st_mode)
    (out / "c.mkv").unlink()
    (out / "c.mkv").mkdir()
    with pytest.raises(UsageError, match="output is a directory"):
        run_batch([str(clip)], out, batch_settings(), overwrite=True)
    assert (out / "c.mkv").is_dir()


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


def test_batch_takes_a_dangling_symlink_for_an_existing_output(tmp_path, batch_settings):
    (tmp_path / "in").mkdir()
    clip = make_clip(tmp_path / "in" / "c.mkv", frames=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "c.mkv").symlink_to(tmp_path / "gone")
    with pytest.raises(UsageError, match="output exists"):
        run_batch([str(clip)], out, batch_settings())
    assert (out / "c.mkv").is_symlink()
    assert run_batch([str(clip)], out, batch_settings(), overwrite=True).ok
    assert not (out / "c.mkv").is_symlink() and len(video_times(out / "c.mkv")) == 2


# ---- 4: VP9 alpha in WebM ---------------------------------------------------------------------


def vp9_alpha_clip(path: Path) -> Path:
    """VP9 with an alpha channel in WebM, as libvpx-vp9 writes yuva420p: the alpha travels beside
    the picture (Matroska BlockAdditions) and the track says ALPHA_MODE=1. FFmpeg's own vp9
    decoder, the one PyAV uses, ignores it and decodes yuv420p."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libvpx-vp9", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuva420p"
        for i in range(3):
            rgba = np.zeros((48, 64, 4), np.uint8)
            rgba[..., 0], rgba[..., 3] = 200, 60 * i
            frame = av.VideoFrame.from_ndarray(rgba, format="rgba").reformat(format="yuva420p")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def test_vp9_alpha_in_webm_is_noted_and_its_tag_dropped(tmp_path):
    clip = vp9_alpha_clip(tmp_path / "alpha.webm")
    with av.open(str(clip)) as c:
        assert c.streams.video[0].metadata.get("alpha_mode") == "1"  # what the source says
    for name in ("out.webm", "out.mkv"):
        writer = copy_through(clip, tmp_path / name)
        assert writer.left_out == ["the alpha channel of the vp9 source (stored beside its yuv420p picture, which FFmpeg's "
                                   "vp9 decoder does not read; the model restores colour only; the output is opaque)"]
        with av.open(str(tmp_path / name)) as c:
            assert "alpha_mode" not in {k.lower() for k in c.streams.video[0].metadata}, c.streams.video[0].metadata
        assert len(video_times(tmp_path / name)) == 3


# ---- 5: sparse clips keep their audio next to their video ------------------------------------


SPARSE = list(range(0, 60000, 5000))  # 0.2 fps for 60 s, with audio throughout


def audio_ahead(path: Path) -> float:
    """The most audio time (seconds) stored before a video packet that it should follow: how far
    the audio written so far reaches past the time by which that packet must be decoded. That
    time is its dts; in Matroska, which stores none, the earliest pts of it and the video packets
    after it (any of those frames needs it decoded first)."""
    with av.open(str(path)) as c:
        stored = [(p.stream.type, p.pts, p.dts, p.time_base) for p in c.demux() if p.size and p.pts is not None]
    video = [(float(pts * tb), dts if dts is None else float(dts * tb)) for kind, pts, dts, tb in stored if kind == "video"]
    needed = [dts for _, dts in video]
    earliest = float("inf")
    for i in reversed(range(len(video))):
        earliest = min(earliest, video[i][0])
        needed[i] = needed[i] if needed[i] is not None else earliest
    audio_reach, worst, next_video = float("-inf"), 0.0, 0
    for kind, pts, _, tb in stored:
        if kind == "audio":
            audio_reach = max(audio_reach, float(pts * tb))
        elif kind == "video":
            worst = max(worst, audio_reach - needed[next_video])
            next_video += 1
    return worst


def test_a_sparse_clips_audio_stays_next_to_its_video(tmp_path):
    # x264's default lookahead holds some 40 frames: 200 s of this clip, all of it
    clip = spread_clip(tmp_path / "sparse.mkv", SPARSE)
    assert disorder(clip) < 0.1 and audio_ahead(clip) < 0.1
    for name in ("out.mkv", "out.mp4"):
        run_stream(clip, tmp_path / name, settings={})  # x264 medium, the default
        assert audio_ahead(tmp_path / name) < 0.1, name
        assert video_times(tmp_path / name) == video_times(clip)
        assert [p for p, _ in packets(tmp_path / name, "audio")] == [p for p, _ in packets(clip, "audio")]


def test_a_sparse_clips_join_keeps_its_audio_next_to_its_video(tmp_path, batch_settings):
    clip = spread_clip(tmp_path / "sparse.mkv", SPARSE)
    report = run_batch([str(clip)], tmp_path / "out", batch_settings(stage=1, codec="libx264", lossless=False, chunk_frames=4))
    assert report.ok, report.table()
    assert audio_ahead(tmp_path / "out" / "sparse.mkv") < 0.1


# ---- 8: MP4 to standard output ------------------------------------------------------------------


def test_mp4_to_standard_output_is_fragmented_and_decodes_whole(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "in.mkv", frames=6)
    done = subprocess.run([sys.executable, "-m", "vsdeblur.stream", str(clip), "-", "--format", "mp4", "--weights", str(tiny_weights),
                           "--device", "cpu", "--encoder-preset", "ultrafast", "-q"],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=300)
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert err.count("\n") == 1 and "fragmented MP4" in err and "frag_keyframe+empty_moov" in err, err
    out = tmp_path / "piped.mp4"
    assert frame_count(done.stdout, out) == 6
    assert video_times(out) == video_times(clip)
    assert [p for p, _ in packets(out, "audio")] == [p for p, _ in packets(clip, "audio")]


# ---- 10: MP4 chapters -------------------------------------------------------------------------------


def remuxed_mp4(source: Path, target: Path, chapters: bool = True, data_track: bool = False) -> Path:
    """`source` remuxed to MP4 with two chapters, which FFmpeg stores as a QuickTime text track
    (read back as a data stream that the demuxer discards), or with a data track (bin_data, as
    GoPro telemetry) that Matroska cannot hold."""
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        copies = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        if chapters:
            dst.set_chapters([{"id": 1, "start": 0, "end": 120, "time_base": Fraction(1, 1000), "metadata": {"title": "one"}},
                              {"id": 2, "start": 120, "end": 240, "time_base": Fraction(1, 1000), "metadata": {"title": "two"}}])
        data = dst.add_data_stream("bin_data") if data_track else None
        for packet in src.demux():
            if packet.size:
                packet.stream = copies[packet.stream.index]
                dst.mux(packet)
        if data is not None:
            packet = av.Packet(b"telemetry")
            packet.stream, packet.pts, packet.dts, packet.time_base = data, 0, 0, Fraction(1, 1000)
            dst.mux(packet)
    return target


def chapter_titles(path: Path) -> list[tuple[str, float]]:
    with av.open(str(path)) as c:
        return [(ch["metadata"]["title"], round(float(ch["start"] * ch["time_base"]), 3)) for ch in c.chapters()]


def test_mp4_chapters_are_kept_without_a_word_about_a_stream(tmp_path):
    clip = remuxed_mp4(make_clip(tmp_path / "in.mkv", frames=6), tmp_path / "chapters.mp4")
    assert chapter_titles(clip) == [("one", 0.0), ("two", 0.12)]
    for name, drop in (("out.mkv", False), ("out.mp4", False), ("dropped.mkv", True)):
        writer = copy_through(clip, tmp_path / name, drop_incompatible=drop)
        assert writer.left_out == [], writer.left_out
        assert chapter_titles(tmp_path / name) == [("one", 0.0), ("two", 0.12)]
        assert packets(tmp_path / name, "audio") == packets(clip, "audio")
        with av.open(str(tmp_path / name)) as c:
            assert {s.type for s in c.streams} <= {"video", "audio", "data"}
            assert [s.type for s in c.streams if s.type != "data"] == ["video", "audio"]


def test_a_stream_matroska_cannot_hold_is_not_told_to_write_mkv(tmp_path):
    clip = remuxed_mp4(make_clip(tmp_path / "in.mkv", frames=3), tmp_path / "data.mp4", chapters=False, data_track=True)
    with pytest.raises(UsageError) as refused:
        copy_through(clip, tmp_path / "out.mkv")
    message = str(refused.value)
    assert "stream #2 (data, bin_data)" in message and "cannot be stored in matroska" in message, message
    assert "write MKV" not in message and "--drop-incompatible" in message, message
    writer = copy_through(clip, tmp_path / "out.mkv", drop_incompatible=True)
    assert writer.left_out == ["stream #2 (data, bin_data) (matroska cannot store it; --drop-incompatible)"]
    # where MKV would hold what the output cannot, the line still says so
    with pytest.raises(UsageError, match=r"subtitle.*cannot be stored in mp4; write MKV, or pass --drop-incompatible"):
        copy_through(make_clip(tmp_path / "subs.mkv", frames=2, subtitles=True), tmp_path / "out.mp4")
