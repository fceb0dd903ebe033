"""The two kinds of work a batch job is made of, run by any executor (a local worker process,
a Ray task, `vsdeblur run-chunk`): restore one chunk, and join a file's chunks.

Both take the manifest's location and an id, so a worker needs nothing but a shared file
system. Errors about the input (corrupt, unreadable) are recorded in the manifest and do
not escape: one bad file fails alone. A full disk is not the input's fault: the task stops
with DiskFull, which stops the job (every other task would fail the same way).
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from vsdeblur.batch.chunkfile import read_chunk, read_pts, write_chunk
from vsdeblur.batch.manifest import ChunkRow, Manifest, joined_file, output_stamp
from vsdeblur.config import EngineSettings
from vsdeblur.errors import UsageError
from vsdeblur.io import Frame, Reader, Writer
from vsdeblur.io.paths import special_kind
from vsdeblur.threads import background

if TYPE_CHECKING:
    from vsdeblur.engine import Deblurrer


class DiskFull(Exception):
    """The disk the job writes to is full: stop the job; a rerun resumes it."""


def disk_full(exc: BaseException | None) -> bool:
    """Whether an error (or one it was raised from, or while handling) is a full disk or quota."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def refuse_special(output: Path) -> None:
    """A job moves finished files into place: a directory, named pipe, device or socket at an
    output's name is refused, never replaced, even with --overwrite (a symlink is a name)."""
    kind = special_kind(output, follow=False)
    if kind is not None:
        raise UsageError(f"output is {kind}: {output}; vsdeblur batch writes regular files and replaces nothing else, "
                         "even with --overwrite (vsdeblur-stream writes into a named pipe or a device)")


def refuse_existing(output: Path, owned_stamp: str | None, overwrite: bool) -> None:
    """The rule every vsdeblur writer follows: an existing file is replaced only when asked to
    (--overwrite), or when it is the file this job wrote there itself (its stamp in the manifest)."""
    refuse_special(output)
    stamp = output_stamp(output)
    if stamp is not None and not overwrite and stamp != owned_stamp:
        raise UsageError(f"output exists: {output} (pass --overwrite to replace it)")


# One engine per worker process and setting: loading weights once serves every chunk.
_ENGINES: dict[str, Deblurrer] = {}


def engine_for(settings: dict[str, Any]) -> Deblurrer:
    from vsdeblur.engine import Deblurrer  # torch loads with the first chunk, not with the planning

    key = json.dumps(settings, sort_keys=True)
    if key not in _ENGINES:
        _ENGINES.clear()
        _ENGINES[key] = Deblurrer(EngineSettings.of(settings))
    return _ENGINES[key]


def process_chunk(root: Path, chunk_id: int) -> None:
    """Restore a chunk (unless done already), then join its file if it was the last one."""
    manifest = Manifest.open_existing(root)
    try:
        chunk = manifest.claim_chunk(chunk_id)
        if chunk is not None:
            started = time.perf_counter()
            try:
                frames = _restore(manifest, chunk)
            except (UsageError, av.FFmpegError, OSError) as exc:
                if disk_full(exc):
                    raise
                manifest.fail_chunk(chunk.id, str(exc))
                return
            manifest.finish_chunk(chunk.id, frames, time.perf_counter() - started)
        file_id = manifest.chunk(chunk_id).file_id
        if manifest.claim_join(file_id):
            _join(manifest, file_id)
    finally:
        manifest.close()


def process_join(root: Path, file_id: int) -> None:
    """Join a file whose chunks were all done when the job (re)started."""
    manifest = Manifest.open_existing(root)
    try:
        if manifest.claim_join(file_id):
            _join(manifest, file_id)
    finally:
        manifest.close()


def _restore(manifest: Manifest, chunk: ChunkRow) -> int:
    """Decode the chunk with its context frames, run the engine, keep the owned frames."""
    source = manifest.file(chunk.file_id).source
    engine = engine_for(manifest.settings()["engine"])
    first = max(0, chunk.start - chunk.context)
    stop = None if chunk.stop is None else chunk.stop + chunk.context

    def owned(decoded: Iterator[Frame]) -> Iterator[tuple[np.ndarray, int]]:
        for frame, restored in engine.tagged((frame, frame.rgb) for frame in decoded):
            if frame.index >= chunk.start and (chunk.stop is None or frame.index < chunk.stop):
                yield restored, frame.pts

    # decode, engine and the FFV1 encode each in a thread of their own, as vsdeblur-stream runs
    with Reader(source) as reader, background(reader.frames(first, stop), "vsdeblur-decode") as decoded, \
            background(owned(decoded), "vsdeblur-engine") as restored:
        return write_chunk(manifest.chunk_file(chunk), manifest.chunk_pts_file(chunk), restored)


def _join(manifest: Manifest, file_id: int) -> None:
    """Encode the file's restored frames once, with the source's pts, copying its other streams.

    The encode goes to a hidden file beside the output; its stamp is recorded before it is
    moved onto the output, so that a job killed in between still knows the output as its own."""
    started = time.perf_counter()
    record = manifest.file(file_id)
    chunks = manifest.chunks(file_id)
    settings = manifest.settings()
    overwrite = settings.get("overwrite", False)
    joined = joined_file(record.output)
    try:
        refuse_existing(record.output, record.output_stamp, overwrite)
        record.output.parent.mkdir(parents=True, exist_ok=True)
        pts = list(chain.from_iterable(read_pts(manifest.chunk_pts_file(c)) for c in chunks))
        with Reader(record.source) as reader:
            dtype = np.uint8 if reader.info.rgb_format == "rgb24" else np.uint16
            frames = chain.from_iterable(read_chunk(manifest.chunk_file(c), dtype) for c in chunks)
            # the chunk files decode in a thread of their own while the frames are encoded;
            # `joined` is this job's own file (left by a killed join): replacing it is safe
            with background(frames, "vsdeblur-decode") as decoded, \
                    Writer(joined, reader.info, settings["encode"], source=reader, overwrite=True) as writer:
                _interleave(writer, zip(decoded, pts, strict=True), reader)
        refuse_existing(record.output, record.output_stamp, overwrite)  # it may have appeared meanwhile
        manifest.set_output_stamp(file_id, output_stamp(joined))
        os.replace(joined, record.output)
    except (UsageError, av.FFmpegError, OSError, ValueError) as exc:
        joined.unlink(missing_ok=True)
        if disk_full(exc):
            raise
        manifest.fail_file(file_id, str(exc))
        return
    manifest.finish_file(file_id, len(pts), time.perf_counter() - started, writer.left_out)


def _interleave(writer: Writer, restored: Iterator[tuple[np.ndarray, int]], reader: Reader) -> None:
    """Mux the restored frames and the source's other packets in time order (a packet after the
    frames shown before its dts), as vsdeblur-stream passes them on; the muxer then interleaves
    them exactly. Copied after the last frame instead, a long file's audio would sit at its end.
    The source's video is decoded but not converted (range [0, 0)): only its packets are used."""
    video_tb = reader.info.time_base
    ahead = next(restored, None)
    for packet in reader.items(0, 0):
        when = packet.dts if packet.dts is not None else packet.pts
        if when is not None:
            limit = when * packet.time_base
            while ahead is not None and ahead[1] * video_tb <= limit:
                writer.write(*ahead)
                ahead = next(restored, None)
        writer.copy(packet)
    while ahead is not None:
        writer.write(*ahead)
        ahead = next(restored, None)


def run_task(root: str, kind: str, ident: int) -> None:
    """The entry point every executor calls: kind is "chunk" (ident: chunk id) or "join" (file id)."""
    try:
        if kind == "chunk":
            process_chunk(Path(root), ident)
        else:
            process_join(Path(root), ident)
    except Exception as exc:
        if disk_full(exc):
            raise DiskFull(f"no space left on device for the job in {root} ({exc}); free some space and run "
                           "the same command again: the finished chunks are kept") from None
        raise
