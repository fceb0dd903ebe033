"""Fault injection: a batch job killed with SIGKILL again and again (while it plans, while a
chunk is half-written, between chunks, at a random moment, while a file is joined, right after
an output is moved into place), and once stopped by SIGTERM, and resumed each time, ends with
outputs equal to an uninterrupted run's and with no partial file anywhere."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from tests.media import assert_same_video, batch_cli, sliding_noise_clip

POLL = 0.002  # seconds between looks at the job: a join of these clips takes a few hundred ms


def done_chunks(out: Path) -> int:
    try:
        with sqlite3.connect(out / ".vsdeblur" / "manifest.sqlite", timeout=0.05) as db:
            return db.execute("SELECT COUNT(*) FROM chunks WHERE state = 'done'").fetchone()[0]
    except sqlite3.Error:  # not created yet, or locked by the job this moment
        return 0


def partial_files(out: Path) -> list[Path]:
    """What a killed job may leave: partial chunk files, the Writer's temporary files, staged joins."""
    return [p for p in out.rglob("*") if ".part" in p.name or "vsdeblur-join" in p.name]


def joining(out: Path) -> bool:
    """A hidden file beside the outputs: a join being written (the Writer's temporary file)."""
    return any(p.is_file() for p in out.glob(".*"))


def test_sigkill_at_many_points_then_resume_gives_the_uninterrupted_outputs(tmp_path, tiny_weights):
    clips = tmp_path / "in"
    clips.mkdir()
    for i in range(2):
        sliding_noise_clip(clips / f"c{i}.mp4", 32, seed=10 + i)
    flags = ["--weights", str(tiny_weights), "--device", "cpu", "--workers", "1", "--chunk-frames", "8", "--lossless"]
    reference = batch_cli(str(clips), "-o", str(tmp_path / "ref"), *flags)
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err

    out = tmp_path / "out"
    seed = random.randrange(1 << 30)
    moment = random.Random(seed).uniform(1.0, 6.0)  # seconds after the start: Python and torch load, then the job
    first_outputs: list[bool] = []
    def half_written(pid: int) -> bool:
        """A chunk file being written by this run (one worker: the job's own process); one
        left by an earlier run does not count."""
        return any(out.glob(f".vsdeblur/chunks/*.{pid}.part"))

    kill, term = signal.SIGKILL, signal.SIGTERM
    points: list[tuple[str, signal.Signals, Callable[[], bool]]] = [
        ("planning", kill, lambda: (out / ".vsdeblur" / "manifest.sqlite").exists()),
        ("a chunk half-written", kill, lambda: half_written(job.pid)),
        ("two more chunks done", kill, lambda: done_chunks(out) >= before + 2),
        ("a chunk half-written", term, lambda: half_written(job.pid)),
        ("the first join", kill, lambda: joining(out)),
        ("the first output in place", kill, lambda: first_outputs.append((out / "c0.mkv").exists()) or first_outputs[-1]),
        ("the second join", kill, lambda: joining(out)),
        # last: a late moment can let the job finish, and then no later point could be reached
        ("a random moment", kill, lambda: time.monotonic() >= started + moment),
    ]
    killed = []
    for name, how, reached in points:
        before = done_chunks(out)
        job = batch_cli(str(clips), "-o", str(out), *flags)
        started = time.monotonic()
        while job.poll() is None and not reached():
            time.sleep(POLL)
        if job.poll() is None:
            job.send_signal(how)
            killed.append((name, how.name))
        _, err = job.communicate()
        if how == term and killed[-1] == (name, how.name):
            assert job.returncode == 143 and err.strip().endswith("terminated"), err
            assert partial_files(out) == [], "SIGTERM: the run's own clean-up leaves no partial file"
    # every point but the random one is a state the job passes through, so each was reached
    names = {name for name, how in killed if how == "SIGKILL"}
    assert len(names) >= 5 and {"the first join", "the second join", "a chunk half-written"} <= names, (killed, seed)

    final = batch_cli(str(clips), "-o", str(out), *flags)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    for i in range(2):
        assert_same_video(out / f"c{i}.mkv", tmp_path / "ref" / f"c{i}.mkv")
    assert partial_files(out) == [], (partial_files(out), killed, seed)
    assert sorted(p.name for p in out.iterdir()) == [".vsdeblur", "c0.mkv", "c1.mkv"]
    assert os.listdir(out / ".vsdeblur" / "chunks")  # the chunks are kept for later resumes
