"""Batch jobs do no damage: existing outputs stay unless --overwrite, a job never reads its own
outputs or working files as inputs, a damaged manifest or a full disk is one line, the name
template evaluates nothing but its fields, a local Ray cluster listens on loopback only and an
unreachable one fails fast, other streams are interleaved with the video, and progress has no
control characters in logs. Tiny clips, tiny weights, CPU."""

from __future__ import annotations

import io
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import av
import numpy as np
import pytest

from tests.media import REPO, assert_same_video, batch_cli, disorder, pattern, single_pass, sliding_noise_clip, spread_clip
from vsdeblur.batch import run_batch
from vsdeblur.batch.plan import Source, discover, output_path
from vsdeblur.errors import UsageError


def cli_args(tiny_weights: Path, *args: str) -> list[str]:
    return [*args, "--weights", str(tiny_weights), "--device", "cpu", "--workers", "1", "--lossless"]


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("vsdeblur batch: error: "), err
    return lines[0]


# ---- existing outputs -----------------------------------------------------------------------


def test_an_output_the_job_did_not_write_is_kept_without_overwrite(tmp_path, tiny_weights, batch_settings):
    (tmp_path / "in").mkdir()
    clip = sliding_noise_clip(tmp_path / "in" / "b.mp4", 4, seed=1)
    theirs = tmp_path / "exo" / "b.mkv"
    theirs.parent.mkdir()
    theirs.write_bytes(b"someone else's file")
    job = batch_cli(*cli_args(tiny_weights, str(clip), "-o", str(tmp_path / "exo")))
    out, err = job.communicate(timeout=300)
    assert job.returncode == 2, err
    assert "output exists" in one_error_line(err) and "--overwrite" in err
    assert theirs.read_bytes() == b"someone else's file"
    assert not (tmp_path / "exo" / ".vsdeblur").exists()  # refused before the job started

    # --overwrite replaces it; afterwards the file is the job's own and a rerun that must redo
    # the join (other encoder settings) replaces it without being asked
    report = run_batch([str(clip)], tmp_path / "exo", batch_settings(), overwrite=True)
    assert report.ok, report.table()
    assert_same_video(theirs, single_pass(clip, tmp_path / "ref.mkv", batch_settings()))
    report = run_batch([str(clip)], tmp_path / "exo", batch_settings(codec="ffv1"))
    assert report.ok, report.table()
    with av.open(str(theirs)) as c:
        assert c.streams.video[0].codec_context.name == "ffv1"
    # and so does a fresh start of the same job
    assert run_batch([str(clip)], tmp_path / "exo", batch_settings(), resume=False).ok

    # a file put in place of the job's own output is someone else's again
    theirs.unlink()
    theirs.write_bytes(b"replaced by hand")
    with pytest.raises(UsageError, match="output exists"):
        run_batch([str(clip)], tmp_path / "exo", batch_settings(codec="libx264"))
    assert theirs.read_bytes() == b"replaced by hand"


def test_an_output_that_appears_during_the_job_is_not_replaced(tmp_path, tiny_weights, batch_settings):
    # the join checks again: `vsdeblur run-chunk` joins without the planning run's check
    clip = sliding_noise_clip(tmp_path / "c.mp4", 4, seed=4)
    job = batch_cli(*cli_args(tiny_weights, str(clip), "-o", str(tmp_path / "out"), "--plan-only"))
    assert job.wait(timeout=120) == 0, job.stderr.read()
    (tmp_path / "out" / "c.mkv").write_bytes(b"arrived meanwhile")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "vsdeblur.cli", "run-chunk", "--manifest", str(tmp_path / "out"), "--index", "0"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "c.mp4: failed" in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "out" / "c.mkv").read_bytes() == b"arrived meanwhile"
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".c.")]  # no staged join left


# ---- inputs ----------------------------------------------------------------------------------


def test_a_job_never_reads_its_own_outputs_or_working_files(tmp_path, batch_settings):
    nest = tmp_path / "nest"
    nest.mkdir()
    sliding_noise_clip(nest / "a.mp4", 4, seed=2)
    for _ in range(2):
        report = run_batch([str(nest)], nest / "out", batch_settings())
        assert report.ok, report.table()
        assert [Path(f.source).name for f in report.files] == ["a.mp4"]
    assert not (nest / "out" / "out").exists()
    assert sorted(p.name for p in (nest / "out").iterdir()) == [".vsdeblur", "a.mkv"]
    # a glob over the same tree finds the source only
    report = run_batch([str(nest / "**" / "*.m*")], nest / "out", batch_settings())
    assert [Path(f.source).name for f in report.files] == ["a.mp4"]


def test_discovery_skips_hidden_files_and_the_output_root(tmp_path):
    root = tmp_path / "in"
    for name in ("a.mp4", ".hidden.mp4", ".state/chunk.mkv", "out/made.mkv", "sub/.b.x.part.mkv", "sub/b.mkv"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    found = discover([str(root)], root / "out")
    assert [str(s.relative) for s in found] == ["a.mp4", "sub/b.mkv"]
    # a search that starts inside the output root still skips the outputs the job wrote
    (root / "out" / "c.mp4").write_bytes(b"x")
    found = discover([str(root / "out")], root, outputs=[root / "out" / "made.mkv"])
    assert [str(s.relative) for s in found] == ["c.mp4"]


@pytest.mark.parametrize("template", ["{stem.__class__}", "{stem.__class__.__mro__}", "{name[0]}", "{stem!r}",
                                      "{stem:>40}", "{dir:{stem}}", "{0}", "{}", "{stem"])
def test_the_name_template_takes_its_fields_only(tmp_path, template):
    source = Source(tmp_path / "x.mp4", PurePosixPath("sub/x.mp4"))
    with pytest.raises(UsageError, match="bad name template") as caught:
        output_path(tmp_path / "out", source, template)
    assert "\n" not in str(caught.value) and "{dir}, {stem}, {name}, {ext}" in str(caught.value)


def test_a_bad_name_template_is_one_line_before_any_work(tmp_path, tiny_weights):
    clip = sliding_noise_clip(tmp_path / "c.mp4", 4)
    job = batch_cli(*cli_args(tiny_weights, str(clip), "-o", str(tmp_path / "out"), "--name-template", "{stem.__class__}"))
    out, err = job.communicate(timeout=120)
    assert job.returncode == 2
    assert "{stem.__class__} is not one of its fields" in one_error_line(err)
    assert not (tmp_path / "out").exists()


# ---- a damaged manifest, a full disk ---------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_damaged_manifest_is_one_line_with_the_way_out(tmp_path, tiny_weights, damage):
    clip = sliding_noise_clip(tmp_path / "c.mp4", 6, seed=5)
    args = cli_args(tiny_weights, str(clip), "-o", str(tmp_path / "out"))
    first = batch_cli(*args)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    db = tmp_path / "out" / ".vsdeblur" / "manifest.sqlite"
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:4096] + os.urandom(len(data) - 4096))
    for leftover in db.parent.glob("manifest.sqlite-*"):
        leftover.unlink()
    job = batch_cli(*args)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 2, err
    line = one_error_line(err)
    assert "manifest" in line and "damaged" in line and "--no-resume" in line
    # what the line says works: a fresh start; the output it wrote is not known to be its own any more
    job = batch_cli(*args, "--no-resume", "--overwrite")
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err


def test_run_chunk_on_a_damaged_manifest_is_one_line(tmp_path):
    (tmp_path / ".vsdeblur").mkdir()
    (tmp_path / ".vsdeblur" / "manifest.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(200))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "vsdeblur.cli", "run-chunk", "--manifest", str(tmp_path), "--count"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "damaged" in done.stderr, done.stderr


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-r", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /tmp"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs unshare -rm to mount a small tmpfs (a full disk)")
def test_a_full_disk_stops_the_job_with_one_line_a_report_and_no_partial_files(tmp_path, tiny_weights):
    # a private 400 KiB tmpfs holds the manifest but not the chunks of a 256x192 noise clip
    # (FFV1 RGB, about 150 KB a frame); the job runs in the mount namespace that holds it
    clip = sliding_noise_clip(tmp_path / "c.mp4", 12, seed=6, width=256, height=192)
    out = tmp_path / "full"
    out.mkdir()
    inside = (
        "import json, subprocess, sys, pathlib\n"
        f"job = subprocess.run([sys.executable, '-m', 'vsdeblur.cli', 'batch', {str(clip)!r}, '-o', {str(out)!r}, "
        f"'--weights', {str(tiny_weights)!r}, '--device', 'cpu', '--workers', '1', '--chunk-frames', '4', '--lossless'], "
        "capture_output=True, text=True)\n"
        f"root = pathlib.Path({str(out)!r})\n"
        "report = root / '.vsdeblur' / 'report.json'\n"
        "print(json.dumps({'rc': job.returncode, 'out': job.stdout, 'err': job.stderr,\n"
        "    'partial': [str(p) for p in root.rglob('*') if '.part' in p.name or 'vsdeblur-join' in p.name],\n"
        "    'report': json.loads(report.read_text()) if report.is_file() else None}))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(["unshare", "-r", "-m", "sh", "-c", f'mount -t tmpfs -o size=400k tmpfs "$0" && exec "$1" -c "$2"',
                           str(out), sys.executable, inside], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["rc"] == 1, result
    line = one_error_line(result["err"])
    assert "no space left on device" in line and "run the same command again" in line
    assert "FAILED" in result["out"]  # the report table
    assert result["partial"] == []
    assert result["report"] is not None and result["report"]["stopped"] and not result["report"]["ok"]


# ---- Ray --------------------------------------------------------------------------------------


def listening_sockets(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every listening TCP socket these processes hold, from /proc."""
    listening = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A":  # LISTEN
                listening[fields[9]] = _address(fields[1])
    found = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # the process ended meanwhile
            continue
        found += [(pid, listening[link[8:-1]]) for link in links if link.startswith("socket:[") and link[8:-1] in listening]
    return found


def _address(hex_address: str) -> str:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # /proc prints the address as 32-bit words in host byte order
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)) if sys.byteorder == "little" else raw
    ip = ipaddress.ip_address(raw)
    ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 is 127.0.0.1 reached over IPv6
    return f"{ip}:{int(port, 16)}"


def descendants() -> set[int]:
    """This process and every process below it."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = {os.getpid()}
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return found
        found |= more


def assert_loopback_only(sockets: list[tuple[int, str]]) -> None:
    assert sockets, "no listening socket found: the check would pass vacuously"
    exposed = [(pid, address) for pid, address in sockets if not ipaddress.ip_address(address.rsplit(":", 1)[0]).is_loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux's /proc")
def test_a_local_ray_cluster_listens_on_loopback_only(tmp_path, batch_settings):
    pytest.importorskip("ray")
    clip = sliding_noise_clip(tmp_path / "r.mp4", 6, seed=5)
    seen: list[tuple[int, str]] = []
    # the sockets are read while the job runs: after each task, the cluster is up
    report = run_batch([str(clip)], tmp_path / "out", batch_settings(executor="ray", workers=1),
                       progress=lambda done, total: seen.extend(listening_sockets(descendants())))
    assert report.ok, report.table()
    assert_loopback_only(seen)
    assert len({pid for pid, _ in seen}) >= 4  # the driver, GCS, raylet, agents, a worker

    from vsdeblur.measure.speed import local_ray

    with local_ray(cpus=1):
        assert_loopback_only(listening_sockets(descendants()))


def test_an_unreachable_ray_cluster_fails_fast_with_one_line(tmp_path, tiny_weights):
    pytest.importorskip("ray")
    clip = sliding_noise_clip(tmp_path / "c.mp4", 4)
    started = time.monotonic()
    job = batch_cli(*cli_args(tiny_weights, str(clip), "-o", str(tmp_path / "out"), "--executor", "ray",
                              "--ray-address", "127.0.0.1:1"))
    try:
        out, err = job.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        job.kill()  # with the Ray cluster it was still trying to reach
        job.communicate()
        raise
    assert job.returncode == 2, err
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in one_error_line(err)
    assert time.monotonic() - started < 60


# ---- the join, progress --------------------------------------------------------------------------


def test_the_join_interleaves_other_streams_with_the_video_as_stream_does(tmp_path, batch_settings):
    # 24 s with 6 video frames, beyond what FFmpeg's interleaver buffers (10 s): audio copied
    # after the last frame would be stored after it. FFV1 holds no frames back.
    clip = spread_clip(tmp_path / "vfr.mkv", [0, 40, 80, 12000, 12040, 24000])
    values = batch_settings(stage=1, codec="ffv1")
    assert disorder(clip) < 0.1
    report = run_batch([str(clip)], tmp_path / "out", values)
    assert report.ok, report.table()
    # as stored in the source, and as vsdeblur-stream stores them (its Writer holds the audio
    # until the video of its time is out, whatever the engine and encoder hold back)
    assert disorder(tmp_path / "out" / "vfr.mkv") < 0.1
    assert disorder(tmp_path / "out" / "vfr.mkv") <= disorder(single_pass(clip, tmp_path / "ref.mkv", values))


def test_progress_in_a_log_has_no_carriage_returns(tmp_path, tiny_weights):
    from vsdeblur.batch import progress_printer

    log = io.StringIO()
    show = progress_printer(log, interval=0.0)
    for done in range(1, 4):
        show(done, 3)
    assert log.getvalue() == "vsdeblur batch: 1/3 tasks\nvsdeblur batch: 2/3 tasks\nvsdeblur batch: 3/3 tasks\n"
    clip = sliding_noise_clip(tmp_path / "c.mp4", 4)
    job = batch_cli(*cli_args(tiny_weights, str(clip), "-o", str(tmp_path / "out")))
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err
    assert "\r" not in err and "vsdeblur batch: 1/1 tasks" in err
