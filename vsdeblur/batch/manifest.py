"""The job's manifest: one SQLite database in the output root that every worker (a local
process, a Ray task, a `vsdeblur run-chunk` started by Kubernetes or Slurm) reads and updates.

It is the single source of truth for what is left to do. WAL mode lets readers and one
writer work at once; every state change is one short transaction, so a worker killed at any
moment leaves either the old or the new state. A chunk is done only when its file exists:
the file is renamed into place before the database says "done", and a chunk whose file
exists but whose row does not say so yet (killed between the two) is adopted, not redone.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsdeblur.errors import UsageError

STATE_DIR = ".vsdeblur"  # below the output root: manifest, chunk files, report
MANIFEST = "manifest.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    output TEXT NOT NULL,
    chunk_hash TEXT NOT NULL,   -- source fingerprint + engine settings + chunking
    output_hash TEXT NOT NULL,  -- chunk_hash + encoder settings: what the final file depends on
    state TEXT NOT NULL,        -- pending | joining | done | failed
    frames INTEGER,
    seconds REAL,               -- worker time: chunks plus the join
    error TEXT,
    left_out TEXT,              -- what the output does not keep, one line each (Writer.left_out)
    output_stamp TEXT           -- output_stamp() of the output this job wrote: it may replace that file
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    start INTEGER NOT NULL,
    stop INTEGER,               -- NULL: to the end of the source
    context INTEGER NOT NULL,
    hash TEXT NOT NULL,         -- names the chunk file; changes with anything the frames depend on
    state TEXT NOT NULL,        -- pending | running | done | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    frames INTEGER,
    seconds REAL,
    error TEXT,
    UNIQUE (file_id, idx)
);
"""


# in FileRow's order, whatever order an older manifest's columns were added in
FILE_COLUMNS = "id, source, output, chunk_hash, output_hash, state, frames, seconds, error, left_out, output_stamp"


@contextmanager
def damage_reported(path: Path) -> Iterator[None]:
    """A damaged manifest (truncated, overwritten, not SQLite) becomes one line with the way out."""
    try:
        yield
    except sqlite3.OperationalError:  # locked, unreadable, disk full: not damage
        raise
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"the batch manifest {path} is damaged ({exc}); run the same command with --no-resume "
                         "to start the job over (with --overwrite to replace the outputs it wrote)") from None


@dataclass(frozen=True)
class ChunkRow:
    id: int
    file_id: int
    idx: int
    start: int
    stop: int | None
    context: int
    hash: str
    state: str
    attempts: int


@dataclass(frozen=True)
class FileRow:
    id: int
    source: Path
    output: Path
    chunk_hash: str
    output_hash: str
    state: str
    frames: int | None
    seconds: float | None
    error: str | None
    left_out: str | None
    output_stamp: str | None


def output_stamp(path: Path) -> str | None:
    """Identifies one file (inode, size, modification time; a rename keeps all three), so that
    the job knows an output it wrote from a file someone else put there. None: nothing there. A
    symlink is stamped itself, whatever it points at (a dangling one is an existing output too)."""
    try:
        stat = os.lstat(path)
    except FileNotFoundError:
        return None
    return f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"


# the Writer's temporary name for a target (vsdeblur.io.writer): .STEM.XXXXXXXX.partSUFFIX
WRITER_TEMP = re.compile(r"\.(.+)\.[0-9a-f]{8}\.part(\.[^.]*)?$")


def joined_file(output: Path) -> Path:
    """Where a join writes before the output is moved into place: hidden, beside the output (the
    same file system, so the move is atomic), with its extension (FFmpeg picks the container by it)."""
    return output.with_name(f".{output.stem}.vsdeblur-join{output.suffix}")


class Manifest:
    """The manifest of the job whose state lives in `root/.vsdeblur/`."""

    def __init__(self, root: Path, check: bool = False) -> None:
        """check: read every page first (PRAGMA quick_check), so that damage anywhere is found
        before the job starts, not by a worker halfway through."""
        self.root = Path(root).resolve()
        self.dir = self.root / STATE_DIR
        self.chunk_dir = self.dir / "chunks"
        self.chunk_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / MANIFEST
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below)
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        try:
            with damage_reported(self.path):
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA foreign_keys=ON")
                if check:
                    problems = [r[0] for r in self.db.execute("PRAGMA quick_check")]
                    if problems != ["ok"]:
                        raise sqlite3.DatabaseError(problems[0].splitlines()[-1])
                self.db.executescript(SCHEMA)
                columns = {column[1] for column in self.db.execute("PRAGMA table_info(files)")}
                for column in ("left_out", "output_stamp"):  # a job begun by an older vsdeblur
                    if column not in columns:
                        self.db.execute(f"ALTER TABLE files ADD COLUMN {column} TEXT")
        except BaseException:
            self.db.close()
            raise

    @classmethod
    def open_existing(cls, path: Path) -> Manifest:
        """Open a manifest by its file or its output root (for `run-chunk`)."""
        path = Path(path)
        if path.is_dir():
            path = path / STATE_DIR / MANIFEST
        if not path.is_file():
            raise UsageError(f"no batch manifest at {path}; run `vsdeblur batch` first")
        return cls(path.parent.parent)

    def close(self) -> None:
        self.db.close()

    def owned_outputs(self) -> dict[Path, str]:
        """Output path -> output_stamp of the file this job wrote there. A file finished by a
        vsdeblur that did not record stamps counts as written by the job if it is still there."""
        owned = {}
        for record in self.files():
            stamp = record.output_stamp or (output_stamp(record.output) if record.state == "done" else None)
            if stamp is not None:
                owned[record.output] = stamp
        return owned

    def set_output_stamp(self, file_id: int, stamp: str) -> None:
        """Record that the job wrote the file with this stamp (before it is moved into place)."""
        with self.transaction() as db:
            db.execute("UPDATE files SET output_stamp = ? WHERE id = ?", (stamp, file_id))

    def remove_partial_files(self) -> None:
        """Delete what killed workers left half-written: partial chunk files, and joins that
        were not moved into place (with the Writer's temporary files beside them)."""
        for path in self.chunk_dir.glob("*.part"):
            path.unlink(missing_ok=True)
        joins: dict[Path, set[str]] = {}
        for record in self.files():
            joined = joined_file(record.output)
            joined.unlink(missing_ok=True)
            joins.setdefault(joined.parent, set()).add(joined.name)
        for folder, names in joins.items():  # one listing per folder, however many outputs it holds
            if folder.is_dir():
                for path in folder.iterdir():
                    temp = WRITER_TEMP.match(path.name)
                    if temp and f"{temp[1]}{temp[2]}" in names:
                        path.unlink(missing_ok=True)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ---- job settings ---------------------------------------------------------------------

    def set_settings(self, settings: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('settings', ?)", (json.dumps(settings, sort_keys=True),))

    def settings(self) -> dict[str, Any]:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'settings'").fetchone()
        if row is None:
            raise UsageError(f"{self.path} holds no job settings; run `vsdeblur batch` first")
        return json.loads(row[0])

    # ---- files and chunks -----------------------------------------------------------------

    def chunk_file(self, chunk: ChunkRow) -> Path:
        return self.chunk_dir / f"{chunk.hash}.mkv"

    def chunk_pts_file(self, chunk: ChunkRow) -> Path:
        return self.chunk_dir / f"{chunk.hash}.json"

    def files(self) -> list[FileRow]:
        rows = self.db.execute(f"SELECT {FILE_COLUMNS} FROM files ORDER BY id").fetchall()
        return [FileRow(r[0], Path(r[1]), Path(r[2]), *r[3:]) for r in rows]

    def file(self, file_id: int) -> FileRow:
        r = self.db.execute(f"SELECT {FILE_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone()
        return FileRow(r[0], Path(r[1]), Path(r[2]), *r[3:])

    def chunks(self, file_id: int | None = None) -> list[ChunkRow]:
        columns = "id, file_id, idx, start, stop, context, hash, state, attempts"
        if file_id is None:
            rows = self.db.execute(f"SELECT {columns} FROM chunks ORDER BY id").fetchall()
        else:
            rows = self.db.execute(f"SELECT {columns} FROM chunks WHERE file_id = ? ORDER BY idx", (file_id,)).fetchall()
        return [ChunkRow(*r) for r in rows]

    def chunk(self, chunk_id: int) -> ChunkRow:
        columns = "id, file_id, idx, start, stop, context, hash, state, attempts"
        row = self.db.execute(f"SELECT {columns} FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
        if row is None:
            raise UsageError(f"the manifest has no chunk {chunk_id}")
        return ChunkRow(*row)

    def sync_file(self, source: Path, output: Path, chunk_hash: str, output_hash: str) -> tuple[int, bool]:
        """Insert or update a source's row; returns (file id, whether its chunks must be planned).

        Chunks survive when nothing they depend on changed (chunk_hash); the final file is
        redone when anything it depends on changed (output_hash) or it went missing."""
        with self.transaction() as db:
            row = db.execute("SELECT id, chunk_hash, output_hash, state FROM files WHERE source = ?", (str(source),)).fetchone()
            if row is None:
                cur = db.execute(
                    "INSERT INTO files (source, output, chunk_hash, output_hash, state) VALUES (?, ?, ?, ?, 'pending')",
                    (str(source), str(output), chunk_hash, output_hash),
                )
                return cur.lastrowid, True
            file_id, old_chunk_hash, old_output_hash, state = row
            replan = old_chunk_hash != chunk_hash or not db.execute("SELECT 1 FROM chunks WHERE file_id = ?", (file_id,)).fetchone()
            if replan:
                db.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))
            redo = replan or old_output_hash != output_hash or state != "done" or not output.is_file()
            if redo:
                db.execute(
                    "UPDATE files SET output = ?, chunk_hash = ?, output_hash = ?, state = 'pending', error = NULL, left_out = NULL WHERE id = ?",
                    (str(output), chunk_hash, output_hash, file_id),
                )
            return file_id, replan

    def add_chunks(self, file_id: int, chunks: list[tuple[int, int | None, int, str]]) -> None:
        """(start, stop, context, hash) per chunk, in order."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO chunks (file_id, idx, start, stop, context, hash, state) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                [(file_id, i, *c) for i, c in enumerate(chunks)],
            )

    def fail_file(self, file_id: int, error: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE files SET state = 'failed', error = ? WHERE id = ?", (error, file_id))

    def retain(self, file_ids: set[int]) -> None:
        """Forget the files that are no longer part of the job."""
        with self.transaction() as db:
            stale = [r[0] for r in db.execute("SELECT id FROM files") if r[0] not in file_ids]
            db.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in stale])

    def reset_interrupted(self) -> None:
        """Make the work of a killed run schedulable again, adopting chunk files that were
        completed but not yet recorded; failures are retried on a new run."""
        self.remove_partial_files()
        for chunk in self.chunks():
            if chunk.state != "done" and self.chunk_file(chunk).is_file() and self.chunk_pts_file(chunk).is_file():
                info = json.loads(self.chunk_pts_file(chunk).read_text())
                self.finish_chunk(chunk.id, info["frames"], 0.0)  # its time died with the worker
        with self.transaction() as db:
            db.execute("UPDATE chunks SET state = 'pending', error = NULL WHERE state IN ('running', 'failed')")
            db.execute("UPDATE files SET state = 'pending', error = NULL WHERE state IN ('joining', 'failed')")
        for chunk in self.chunks():  # done in the manifest, but the file was deleted
            if chunk.state == "done" and not self.chunk_file(chunk).is_file():
                with self.transaction() as db:
                    db.execute("UPDATE chunks SET state = 'pending' WHERE id = ?", (chunk.id,))

    def claim_chunk(self, chunk_id: int) -> ChunkRow | None:
        """Mark a chunk running; None when it is done already (another worker finished it)."""
        with self.transaction() as db:
            state = db.execute("SELECT state FROM chunks WHERE id = ?", (chunk_id,)).fetchone()
            if state is None:
                raise UsageError(f"the manifest has no chunk {chunk_id}")
            if state[0] == "done":
                return None
            db.execute("UPDATE chunks SET state = 'running', attempts = attempts + 1, error = NULL WHERE id = ?", (chunk_id,))
        return self.chunk(chunk_id)

    def finish_chunk(self, chunk_id: int, frames: int, seconds: float) -> None:
        with self.transaction() as db:
            db.execute("UPDATE chunks SET state = 'done', frames = ?, seconds = ?, error = NULL WHERE id = ?", (frames, seconds, chunk_id))

    def fail_chunk(self, chunk_id: int, error: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE chunks SET state = 'failed', error = ? WHERE id = ?", (error, chunk_id))
            file_id = db.execute("SELECT file_id FROM chunks WHERE id = ?", (chunk_id,)).fetchone()[0]
            db.execute("UPDATE files SET state = 'failed', error = ? WHERE id = ?", (error, file_id))

    def claim_join(self, file_id: int) -> bool:
        """True for exactly one caller once every chunk of the file is done: that caller joins."""
        with self.transaction() as db:
            open_chunks = db.execute("SELECT COUNT(*) FROM chunks WHERE file_id = ? AND state != 'done'", (file_id,)).fetchone()[0]
            if open_chunks:
                return False
            cur = db.execute("UPDATE files SET state = 'joining' WHERE id = ? AND state = 'pending'", (file_id,))
            return cur.rowcount == 1

    def finish_file(self, file_id: int, frames: int, join_seconds: float, left_out: list[str]) -> None:
        with self.transaction() as db:
            chunk_seconds = db.execute("SELECT COALESCE(SUM(seconds), 0) FROM chunks WHERE file_id = ?", (file_id,)).fetchone()[0]
            db.execute(
                "UPDATE files SET state = 'done', frames = ?, seconds = ?, error = NULL, left_out = ? WHERE id = ?",
                (frames, chunk_seconds + join_seconds, "\n".join(left_out) or None, file_id),
            )
