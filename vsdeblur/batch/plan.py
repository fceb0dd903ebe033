"""What a batch job does: which sources, where each output goes, and how each source is cut
into chunks. Nothing here decodes a frame: chunk planning reads packets only.
"""

from __future__ import annotations

import glob
import hashlib
import os
import string
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import av

from vsdeblur.errors import UsageError

# Extensions picked up when a folder is given; a file named explicitly is taken whatever its name.
VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mkv .mov .avi .webm .mts .m2ts .ts .mpg .mpeg .wmv .flv .nut .y4m .3gp .ogv".split()
)
GLOB_CHARS = frozenset("*?[")
NAME_FIELDS = ("dir", "stem", "name", "ext")  # what a name template may use, nothing else


@dataclass(frozen=True)
class Source:
    path: Path  # absolute
    relative: PurePosixPath  # below the input root it was found in: mirrored under the output root


@dataclass(frozen=True)
class Chunk:
    start: int  # first frame it owns
    stop: int | None  # one past its last owned frame; None: to the end of the source
    context: int  # frames decoded (and dropped) on each side so the temporal window is complete


def discover(inputs: list[str], output_root: Path | None = None, outputs: Collection[Path] = ()) -> list[Source]:
    """Files, folders (searched recursively for video files) and globs, in a stable order.

    Each source's relative path is taken from the root it was named under (the folder, or a
    glob's fixed leading folders), so the output tree mirrors the input tree. A folder or glob
    never yields the job's own files: hidden ones (the state folder, temporary and partial
    files), anything below `output_root` when the search starts outside it, and `outputs`
    (absolute paths the job wrote); a file named explicitly is taken as given."""
    found: dict[Path, Source] = {}
    skip = {Path(p).resolve() for p in outputs}
    out = None if output_root is None else Path(output_root).resolve()
    for item in inputs:
        if GLOB_CHARS & set(item):
            root = _glob_root(item)
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True))
            if not matches:
                raise UsageError(f"no file matches {item!r}")
            pairs = [(p, p.resolve().relative_to(root.resolve())) for p in matches if p.is_file()]
        elif Path(item).is_dir():
            root = Path(item)
            pairs = [
                (p, p.relative_to(root))
                for p in sorted(root.rglob("*"))
                if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
            ]
        elif Path(item).exists():
            found.setdefault(Path(item).resolve(), Source(Path(item).resolve(), PurePosixPath(Path(item).name)))
            continue
        else:
            raise UsageError(f"input not found: {item}")
        inside_output = out is not None and root.resolve().is_relative_to(out)
        for path, relative in pairs:
            path = path.resolve()
            if any(part.startswith(".") for part in relative.parts) or path in skip:
                continue
            if out is not None and not inside_output and path.is_relative_to(out):
                continue
            found.setdefault(path, Source(path, PurePosixPath(relative.as_posix())))
    if not found:
        raise UsageError(f"no video files found in {', '.join(inputs)}")
    return sorted(found.values(), key=lambda s: (str(s.relative), str(s.path)))


def _glob_root(pattern: str) -> Path:
    """The leading folders of a glob before its first wildcard."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def output_path(root: Path, source: Source, template: str) -> Path:
    """The output file of `source` under `root`; a template that would leave the root (an
    absolute path, `..`) is an error, never a write elsewhere."""
    check_template(template)
    rel = source.relative
    name = template.format(dir=str(rel.parent), stem=rel.stem, name=rel.name, ext=rel.suffix.lstrip("."))
    candidate = PurePosixPath(name.replace("\\", "/"))
    if candidate.is_absolute() or ".." in candidate.parts or not candidate.name or candidate.name in (".", ".."):
        raise UsageError(f"name template {template!r} gives {name!r} for {rel}, which is outside the output root")
    root = root.resolve()
    # the folder resolved, the name kept: a symlink at the output's name is an existing output
    # (replaced only with --overwrite), not a way to write somewhere else
    path = (root / candidate).parent.resolve() / candidate.name
    if not path.is_relative_to(root) or path == root:
        link = _link_out_of(root, candidate)
        if link is not None:  # the template gave a name inside the root; a link there leads out
            raise UsageError(f"{link} is a symbolic link to {link.resolve()}, outside the output root {root}; "
                             "outputs are written inside it only: remove the link or choose another output root")
        raise UsageError(f"name template {template!r} gives {name!r} for {rel}, which is outside the output root")
    return path


def _link_out_of(root: Path, relative: PurePosixPath) -> Path | None:
    """The first symbolic link on the way from `root` to `relative` that leads out of `root`."""
    here = root
    for part in relative.parts:
        here = here / part
        if here.is_symlink() and not here.resolve().is_relative_to(root):
            return here
    return None


def output_paths(root: Path, sources: list[Source], template: str, fmt: str | None) -> dict[Path, Path]:
    """Each source's output file (source path -> output path), every one of them checked before
    any work: inside the root, and in a container FFmpeg can write (from the name the template
    gives, unless `fmt` names one), instead of a join that fails after its chunks ran."""
    from vsdeblur.io.writer import UnknownFormat, output_format

    targets = {}
    for source in sources:
        target = targets[source.path] = output_path(root, source, template)
        try:
            output_format(target, fmt)
        except UnknownFormat:
            if fmt is not None:
                raise
            raise UsageError(f"name template {template!r} gives {target.name!r} for {source.relative}: FFmpeg cannot tell a "
                             "container format from that name; end the template with an extension (e.g. {stem}.mkv) "
                             "or pass --format") from None
    return targets


def check_template(template: str) -> None:
    """A name template is text with the fields {dir}, {stem}, {name} and {ext}, plain: no
    attribute or index access, conversion or format spec, which would let it evaluate more than
    the documented names."""
    fields = ", ".join(f"{{{f}}}" for f in NAME_FIELDS)
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise UsageError(f"bad name template {template!r}: {exc}; fields are {fields}") from None
    for _, field, spec, conversion in parts:  # Formatter.parse: (literal, field, format spec, conversion)
        if field is None:
            continue
        if field not in NAME_FIELDS or conversion or spec:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            plain = " (plain: no conversion or format spec)" if field in NAME_FIELDS else ""
            raise UsageError(f"bad name template {template!r}: {shown} is not one of its fields {fields}{plain}")


def fingerprint(path: Path) -> str:
    """Size, mtime and a hash of the first and last MiB: cheap, and changes when the file does."""
    stat = path.stat()
    digest = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
        if stat.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            digest.update(f.read())
    return digest.hexdigest()[:32]


def packet_index(path: Path) -> tuple[int, list[int]]:
    """(frame count, indices of keyframes in presentation order) from one demux pass.

    Raises UsageError with FFmpeg's reason for a file that cannot be opened or demuxed."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UsageError(f"{path.name} has no video stream")
            stream = container.streams.video[0]
            packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size and p.pts is not None]
    except av.FFmpegError as exc:
        raise UsageError(f"{path.name} cannot be read: {exc}") from None
    if not packets:
        raise UsageError(f"{path.name} has no video frames")
    packets.sort()
    return len(packets), [i for i, (_, key) in enumerate(packets) if key]


def plan_chunks(frames: int, keyframes: list[int], chunk_frames: int, context: int) -> list[Chunk]:
    """Cut [0, frames) into chunks of about `chunk_frames`.

    A boundary moves to a keyframe within a quarter chunk of its target: encoders put
    keyframes at scene changes, so such cuts usually fall between scenes, and a chunk that
    starts on a keyframe decodes without a backward seek. Every chunk still decodes
    `context` frames on each side, because a keyframe is not always a scene change and the
    output must not depend on where the cuts are. The last chunk runs to the end of the
    source (the packet count is an estimate of the decoded frame count), and a tail shorter
    than half a chunk joins its predecessor."""
    keys = sorted(set(keyframes))
    starts = [0]
    slack = chunk_frames // 4
    while frames - starts[-1] >= chunk_frames + (chunk_frames + 1) // 2:
        target = starts[-1] + chunk_frames
        near = [k for k in keys if abs(k - target) <= slack and k > starts[-1]]
        starts.append(min(near, key=lambda k: (abs(k - target), k)) if near else target)
    stops: list[int | None] = [*starts[1:], None]
    return [Chunk(a, b, context) for a, b in zip(starts, stops)]
