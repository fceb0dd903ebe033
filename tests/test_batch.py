"""Batch pipelines: planning, chunked output equal to a single pass, resume after SIGKILL,
failure isolation, the run-chunk command and the Ray executor. Tiny clips, tiny weights, CPU."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import av
import pytest

from tests.media import REPO, assert_same_video, batch_cli, contents, single_pass, sliding_noise_clip
from vsdeblur.batch import resolved_settings, run_batch
from vsdeblur.batch.manifest import Manifest
from vsdeblur.batch.plan import Source, discover, output_path, plan_chunks
from vsdeblur.errors import UsageError
from vsdeblur.weights import read_weights


def x264_settings(path: Path) -> str:
    """The settings x264 wrote into the stream (its SEI of options in the first packet)."""
    with av.open(str(path)) as c:
        first = bytes(next(p for p in c.demux(video=0) if p.size))
    found = re.search(rb"options: ([^\x00]+)", first)
    assert found, f"no x264 settings in {path}"
    return found.group(1).decode()


# ---- planning ---------------------------------------------------------------------------


def test_discover_mirrors_folders_and_globs(tmp_path):
    (tmp_path / "in" / "a" / "b").mkdir(parents=True)
    for name in ("a/one.mp4", "a/b/two.mkv", "a/notes.txt", "top.mov"):
        (tmp_path / "in" / name).write_bytes(b"x")
    found = discover([str(tmp_path / "in" / "a")])
    assert [str(s.relative) for s in found] == ["b/two.mkv", "one.mp4"]
    found = discover([str(tmp_path / "in" / "**" / "*.mov"), str(tmp_path / "in" / "a" / "one.mp4")])
    assert sorted(str(s.relative) for s in found) == ["one.mp4", "top.mov"]
    with pytest.raises(UsageError, match="not found"):
        discover([str(tmp_path / "missing.mp4")])


def test_output_names_never_leave_the_root(tmp_path):
    source = Source(tmp_path / "x.mp4", PurePosixPath("sub/x.mp4"))
    assert output_path(tmp_path / "out", source, "{dir}/{stem}.mkv") == (tmp_path / "out" / "sub" / "x.mkv").resolve()
    for template in ("/etc/{stem}.mkv", "../{stem}.mkv", "{dir}/../../{name}", "{nope}"):
        with pytest.raises(UsageError):
            output_path(tmp_path / "out", source, template)


def test_chunks_cover_the_clip_and_prefer_keyframes():
    chunks = plan_chunks(100, [0, 22, 41, 77], chunk_frames=20, context=2)
    assert [c.start for c in chunks] == [0, 22, 41, 61, 77]
    assert chunks[-1].stop is None and all(c.context == 2 for c in chunks)
    assert [(c.start, c.stop) for c in plan_chunks(29, [0], 20, 1)] == [(0, None)]


# ---- end to end -------------------------------------------------------------------------


def test_chunked_output_equals_single_pass_and_rerun_does_nothing(tmp_path, batch_settings):
    clips = tmp_path / "in"
    (clips / "sub").mkdir(parents=True)
    sliding_noise_clip(clips / "a.mp4", 10, seed=1)
    sliding_noise_clip(clips / "sub" / "b.mp4", 7, seed=2)
    values = batch_settings()
    report = run_batch([str(clips)], tmp_path / "out", values)
    assert report.ok, report.table()
    assert report.chunks_run == 5  # 10 frames: 0, 3, 6-10 (a short tail joins); 7 frames: 0, 3-7
    for rel in ("a", "sub/b"):
        expected = single_pass(clips / f"{rel}.mp4", tmp_path / f"{rel.replace('/', '_')}.ref.mkv", values)
        assert_same_video(tmp_path / "out" / f"{rel}.mkv", expected)
    again = run_batch([str(clips)], tmp_path / "out", values)
    assert again.ok and again.chunks_run == 0
    # the encoder settings change the join only; the engine settings change the chunks
    lossy = batch_settings(lossless=False, crf=30)
    assert run_batch([str(clips)], tmp_path / "out", lossy).chunks_run == 0
    expected = single_pass(clips / "a.mp4", tmp_path / "a.crf30.mkv", lossy)
    assert x264_settings(tmp_path / "out" / "a.mkv") == x264_settings(expected)
    assert "crf=30.0" in x264_settings(expected) and contents(tmp_path / "out" / "a.mkv")[1:] == contents(expected)[1:]
    assert run_batch([str(clips)], tmp_path / "out", batch_settings(lossless=False, crf=30, scene_threshold=0.0)).chunks_run == 5


def test_chunks_of_a_wider_stage2_carry_its_window(tmp_path, tiny_weights):
    # a stage 2 over 5 frames needs two frames of context on each side of a chunk, not one
    import torch

    from vsdeblur.models import build_model
    from vsdeblur.weights import read_weights, save_weights

    loaded = read_weights(tiny_weights)
    torch.manual_seed(1)
    wide = save_weights(tmp_path / "r2.safetensors", loaded.preset.with_radius(2),
                        {1: loaded.build(1), 2: build_model(loaded.preset.with_radius(2), 2)})
    clip = sliding_noise_clip(tmp_path / "a.mp4", 10, seed=3)
    values = resolved_settings(None, {"weights": wide, "device": "cpu", "workers": 1, "chunk_frames": 3, "scene_threshold": 0.0,
                                    "lossless": True})
    report = run_batch([str(clip)], tmp_path / "out", values)
    assert report.ok and report.chunks_run == 3, report.table()
    assert_same_video(tmp_path / "out" / "a.mkv", single_pass(clip, tmp_path / "ref.mkv", values))


def test_a_radius_the_weights_were_not_trained_for_stops_the_plan(tmp_path, tiny_weights):
    clip = sliding_noise_clip(tmp_path / "a.mp4", 4, seed=3)
    trained = read_weights(tiny_weights).preset.stage2.radius
    values = resolved_settings(None, {"weights": tiny_weights, "device": "cpu", "radius": trained + 1})
    with pytest.raises(UsageError, match=f"trained with radius {trained}; radius {trained + 1} needs weights trained for it"):
        run_batch([str(clip)], tmp_path / "out", values)
    assert not (tmp_path / "out").exists()
    values = resolved_settings(None, {"weights": tiny_weights, "device": "cpu", "radius": trained + 1, "stage": 1})
    assert run_batch([str(clip)], tmp_path / "out", values).ok  # stage 1 reads no neighbours


def test_sigkill_then_resume_redoes_no_finished_chunk(tmp_path, tiny_weights, batch_settings):
    # 24 chunks: enough left after the second finishes that the kill lands mid-job even when
    # chunks take a few milliseconds (on an idle machine up to 6 finish between two polls)
    clip = sliding_noise_clip(tmp_path / "long.mp4", 96, seed=3)
    args = [str(clip), "--output", str(tmp_path / "out"), "--weights", str(tiny_weights), "--device", "cpu",
            "--workers", "1", "--chunk-frames", "4", "--lossless"]
    db = tmp_path / "out" / ".vsdeblur" / "manifest.sqlite"
    job = batch_cli(*args)
    deadline = time.monotonic() + 120
    done_before: set[int] = set()
    while time.monotonic() < deadline and len(done_before) < 2:
        time.sleep(0.05)
        if db.exists():
            try:
                with sqlite3.connect(db) as c:
                    done_before = {r[0] for r in c.execute("SELECT id FROM chunks WHERE state = 'done'")}
            except sqlite3.OperationalError:
                pass
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert done_before, "no chunk finished before the kill"
    with sqlite3.connect(db) as c:
        total = c.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    assert len(done_before) < total, "the job finished before it could be killed"
    rerun = batch_cli(*args)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    with sqlite3.connect(db) as c:
        attempts = dict(c.execute("SELECT id, attempts FROM chunks"))
    assert all(attempts[i] == 1 for i in done_before)
    assert_same_video(tmp_path / "out" / "long.mkv", single_pass(clip, tmp_path / "ref.mkv", batch_settings()))


def test_a_corrupt_file_fails_alone_with_its_reason(tmp_path, tiny_weights):
    clips = tmp_path / "in"
    clips.mkdir()
    sliding_noise_clip(clips / "good.mp4", 5)
    (clips / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(2000))
    truncated = sliding_noise_clip(tmp_path / "full.mp4", 8).read_bytes()
    (clips / "cut.mkv").write_bytes(truncated[: len(truncated) // 2])
    job = batch_cli(str(clips), "--output", str(tmp_path / "out"), "--weights", str(tiny_weights), "--device", "cpu",
                    "--workers", "1")
    out, err = job.communicate(timeout=300)
    assert job.returncode == 1, err
    report = json.loads((tmp_path / "out" / ".vsdeblur" / "report.json").read_text())
    states = {Path(f["source"]).name: f for f in report["files"]}
    assert states["good.mp4"]["state"] == "done" and (tmp_path / "out" / "good.mkv").is_file()
    assert states["bad.mp4"]["state"] == "failed" and "bad.mp4" in states["bad.mp4"]["error"]
    assert states["cut.mkv"]["state"] == "failed" and states["cut.mkv"]["error"]
    assert report["totals"]["failed"] == 2
    assert "FAILED" in out and "good.mp4" in out


def test_a_dropped_stream_is_reported_per_file(tmp_path, tiny_weights):
    clip = sliding_noise_clip(tmp_path / "c.mp4", 4)
    args = [str(clip), "--output", str(tmp_path / "out"), "--weights", str(tiny_weights), "--device", "cpu",
            "--workers", "1", "--name-template", "{stem}.y4m"]
    refused = batch_cli(*args)
    refused.communicate(timeout=120)
    assert refused.returncode == 1  # without --drop-incompatible y4m cannot take the audio: the file fails
    job = batch_cli(*args, "--drop-incompatible")
    out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    note = "stream #1 (audio, aac) (yuv4mpegpipe cannot store it; --drop-incompatible)"
    assert f"vsdeblur batch: note: {clip}: left out {note}" in err
    report = json.loads((tmp_path / "out" / ".vsdeblur" / "report.json").read_text())
    assert report["files"][0]["left_out"] == [note]


def test_a_manifest_from_before_left_out_still_resumes(tmp_path):
    state = tmp_path / ".vsdeblur"
    state.mkdir()
    with sqlite3.connect(state / "manifest.sqlite") as db:  # the files table as it was before left_out
        db.execute("CREATE TABLE files (id INTEGER PRIMARY KEY, source TEXT NOT NULL UNIQUE, output TEXT NOT NULL, "
                   "chunk_hash TEXT NOT NULL, output_hash TEXT NOT NULL, state TEXT NOT NULL, frames INTEGER, "
                   "seconds REAL, error TEXT)")
        db.execute("INSERT INTO files VALUES (1, 'a.mp4', 'a.mkv', 'h', 'o', 'done', 5, 1.0, NULL)")
    manifest = Manifest(tmp_path)
    try:
        assert manifest.file(1).state == "done" and manifest.file(1).left_out is None
    finally:
        manifest.close()


def test_run_chunk_drives_a_planned_job(tmp_path, tiny_weights, batch_settings):
    clip = sliding_noise_clip(tmp_path / "c.mp4", 8, seed=4)
    job = batch_cli(str(clip), "--output", str(tmp_path / "out"), "--weights", str(tiny_weights), "--device", "cpu",
                    "--chunk-frames", "4", "--lossless", "--plan-only")
    assert job.wait(timeout=120) == 0, job.stderr.read()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "vsdeblur.cli", "run-chunk", "--manifest", str(tmp_path / "out")]
    count = subprocess.run([*cmd, "--count"], env=env, capture_output=True, text=True, check=True)
    assert count.stdout.strip() == "2"
    for index in (1, 0):  # any order: the last one to finish joins
        subprocess.run([*cmd, "--index", str(index)], env=env, capture_output=True, text=True, check=True)
    assert_same_video(tmp_path / "out" / "c.mkv", single_pass(clip, tmp_path / "ref.mkv", batch_settings()))


def test_ray_executor_on_a_local_cluster(tmp_path, batch_settings):
    pytest.importorskip("ray")
    clip = sliding_noise_clip(tmp_path / "r.mp4", 8, seed=5)
    values = batch_settings(executor="ray", workers=2)
    report = run_batch([str(clip)], tmp_path / "out", values)
    assert report.ok, report.table()
    assert report.chunks_run == 3  # 0-3, 3-6, 6-8
    assert_same_video(tmp_path / "out" / "r.mkv", single_pass(clip, tmp_path / "ref.mkv", batch_settings()))


@pytest.mark.parametrize("name", ["archive-ffv1", "preview"])
def test_shipped_pipelines_load_and_run(tmp_path, tiny_weights, name):
    clip = sliding_noise_clip(tmp_path / "p.mp4", 6, seed=6)
    values = resolved_settings(REPO / "pipelines" / f"{name}.toml", {"weights": tiny_weights, "device": "cpu", "workers": 1})
    report = run_batch([str(clip)], tmp_path / "out", values)
    assert report.ok, report.table()
    assert Path(report.files[0].output).is_file()
