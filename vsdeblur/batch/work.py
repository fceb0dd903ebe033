"""The two kinds of work a batch job is made of, run by any executor (a local worker process,
a Ray task, `vsdeblur run-chunk`): restore one chunk, and join a file's chunks.

Both take the manifest's location and an id, so a worker needs nothing but a shared file
system. Errors about the input (corrupt, unreadable) are recorded in the manifest and do
not escape: one bad file fails alone.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import av
import numpy as np

from vsdeblur.batch.chunkfile import read_chunk, read_pts, write_chunk
from vsdeblur.batch.manifest import ChunkRow, Manifest
from vsdeblur.engine import Deblurrer
from vsdeblur.errors import UsageError
from vsdeblur.io import Frame, Reader, Writer
from vsdeblur.stream import background

# One engine per worker process and setting: loading weights once serves every chunk.
_ENGINES: dict[str, Deblurrer] = {}


def engine_for(settings: dict[str, Any]) -> Deblurrer:
    key = json.dumps(settings, sort_keys=True)
    if key not in _ENGINES:
        _ENGINES.clear()
        _ENGINES[key] = Deblurrer(**settings)
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
    pending: deque[Frame] = deque()  # inputs whose outputs have not come out yet (1:1, in order)

    def inputs(decoded: Iterator[Frame]) -> Iterator[np.ndarray]:
        for frame in decoded:
            pending.append(frame)
            yield frame.rgb

    def owned(decoded: Iterator[Frame]) -> Iterator[tuple[np.ndarray, int]]:
        for restored in engine.frames(inputs(decoded)):
            frame = pending.popleft()
            if frame.index >= chunk.start and (chunk.stop is None or frame.index < chunk.stop):
                yield restored, frame.pts

    # decode, engine and the FFV1 encode each in a thread of their own, as vsdeblur-stream runs
    with Reader(source) as reader, background(reader.frames(first, stop), "vsdeblur-decode") as decoded, \
            background(owned(decoded), "vsdeblur-engine") as restored:
        return write_chunk(manifest.chunk_file(chunk), manifest.chunk_pts_file(chunk), restored)


def _join(manifest: Manifest, file_id: int) -> None:
    """Encode the file's restored frames once, with the source's pts, copying its other streams."""
    started = time.perf_counter()
    record = manifest.file(file_id)
    chunks = manifest.chunks(file_id)
    settings = manifest.settings()
    try:
        record.output.parent.mkdir(parents=True, exist_ok=True)
        pts = list(chain.from_iterable(read_pts(manifest.chunk_pts_file(c)) for c in chunks))
        with Reader(record.source) as reader:
            dtype = np.uint8 if reader.info.rgb_format == "rgb24" else np.uint16
            frames = chain.from_iterable(read_chunk(manifest.chunk_file(c), dtype) for c in chunks)
            # the chunk files decode in a thread of their own while the frames are encoded
            with background(frames, "vsdeblur-decode") as decoded, \
                    Writer(record.output, reader.info, settings["encode"], source=reader, overwrite=True) as writer:
                restored = zip(decoded, pts, strict=True)
                # every frame first, then the other streams' packets (the video is decoded but
                # not converted: range [0, 0)). With the writer before stream commit 1ddb37d,
                # a packet copied before the first video packet mislabelled the video time
                # base; FFmpeg's interleaver (max_interleave_delta) bounds what it buffers.
                for rgb, frame_pts in restored:
                    writer.write(rgb, frame_pts)
                for packet in reader.items(0, 0):
                    writer.copy(packet)
    except (UsageError, av.FFmpegError, OSError, ValueError) as exc:
        manifest.fail_file(file_id, str(exc))
        return
    manifest.finish_file(file_id, len(pts), time.perf_counter() - started, writer.left_out)


def run_task(root: str, kind: str, ident: int) -> None:
    """The entry point every executor calls: kind is "chunk" (ident: chunk id) or "join" (file id)."""
    if kind == "chunk":
        process_chunk(Path(root), ident)
    else:
        process_join(Path(root), ident)
