"""ONNX export: a model's networks as graphs that ONNX Runtime, OpenVINO, TensorRT and vs-mlrt run.

Three graphs, so that stage 2's per-frame work still runs once per frame, as in the engine:

- `stage1`: image -> deblurred image; a stage 1 whose preset says `prior` also takes the
  prior (`prior`: N x 6 x H x W, stage1.PRIOR_CHANNELS), a blind one the image alone;
- `encode`: stage 2's per-frame encoder, image -> feature pyramid (`level0` at full
  resolution ... `level4` at 1/16);
- `aggregate`: stage 2 over a window of 2r+1 frames: the centre's stage-1 image and the
  window's pyramids -> the centre's output. It takes only what the network reads: every
  frame's coarser levels and the centre's full-resolution level.

Height and width are dynamic (multiples of the stage's multiple), the batch too. Images are
NCHW RGB in [-1, 1]; they and the prior stay float32 at every precision; with `fp16` the
networks and their features are float16. `vsdeblur-onnx.json` beside the graphs describes each input and output,
each graph file's SHA-256, and what the export check found: every graph run by ONNX Runtime on
random inputs of two sizes against the PyTorch network it came from.

A folder is believed only as far as it checks out (`verified_manifest`): every graph loaded
must match the checksum its manifest records, and a cached export must also record the
tensors of the weights it is used for, and a stage-1 graph that takes the prior exactly
where those weights' stage 1 reads it. The cache (`cached_export`) exports a folder that does
not again; a folder the user gives is an error.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import json
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vsdeblur import __version__
from vsdeblur.backends.device import torch_dtype
from vsdeblur.errors import UsageError
from vsdeblur.models import Preset, fold_scales
from vsdeblur.models.stage1 import PRIOR_CHANNELS
from vsdeblur.runtimes import EXPORTS, PRECISIONS
from vsdeblur.weights import Weights, tensor_digest

MANIFEST = "vsdeblur-onnx.json"
FORMAT = "vsdeblur-onnx"
FORMAT_VERSION = "1"
# The sides a graph is traced and checked at are at least this (the CLI's smallest frame): at
# 1/16 a stage-2 level is then 2 pixels, what its reflect padding needs.
MIN_SIDE = 32
CHECK_SHAPES = ((1, 32, 48), (2, 64, 32))  # N, H, W: two sizes (each side a multiple of 16), two batches
TOLERANCE = {"fp32": 1e-3, "fp16": 2e-2}  # largest |ONNX Runtime - PyTorch| an export accepts
PRIOR_INPUT = "prior"  # the stage-1 graph's second input, for a stage 1 that reads the prior


class OutputExists(UsageError):
    """The export's output folder exists and holds something."""


class NotWritten(UsageError):
    """The system refused to write the export (a full disk, a read-only folder); nothing of it
    is left behind."""

    def __init__(self, output: Path, exc: OSError) -> None:
        self.output, self.reason = output, exc.strerror or str(exc)
        self.full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        super().__init__(f"cannot write {output}: {self.reason}{'; free some space, or write elsewhere' if self.full else ''}")


@dataclass(frozen=True)
class Port:
    """One input or output of a graph: N x channels x H/2^level x W/2^level."""

    name: str
    channels: int
    level: int = 0
    image: bool = True  # images are float32 at every precision; features are in the network's

    def shape(self) -> list[int | str]:
        scale = "" if self.level == 0 else f"/{2 ** self.level}"
        return ["N", self.channels, f"H{scale}", f"W{scale}"]


@dataclass
class Graph:
    """A network to export, as a module over flat tensors, and its ports."""

    name: str
    stage: int
    module: nn.Module
    inputs: list[Port]
    outputs: list[Port]

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


# Each graph's module takes its inputs as one flat list, as an ONNX graph does, so that one
# form of dynamic_shapes fits them all.


class _Stage1(nn.Module):
    def __init__(self, atrous: nn.Module) -> None:
        super().__init__()
        self.atrous = atrous

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.atrous(*inputs)


class _Encode(nn.Module):
    def __init__(self, mlfa: nn.Module) -> None:
        super().__init__()
        self.mlfa = mlfa

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.mlfa.encode(*inputs))


class _Aggregate(nn.Module):
    """MLFA.aggregate over the centre image and the features it reads, in `aggregate_inputs` order."""

    def __init__(self, mlfa: nn.Module) -> None:
        super().__init__()
        self.mlfa = mlfa
        self.frames, self.levels = mlfa.frames, len(mlfa.cfg.encoder_widths)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        centre, features = inputs[0], inputs[1:]
        middle = self.frames // 2
        window = [
            [features[0] if i == middle else None, *features[1 + i * self.levels : 1 + (i + 1) * self.levels]]
            for i in range(self.frames)
        ]
        return self.mlfa.aggregate(window, centre)


def stage1_inputs(preset: Preset) -> list[Port]:
    """The image, then the prior where the preset's stage 1 reads it. The prior stays float32
    as the image does (the network casts it where it joins the image); a blind stage 1's graph
    takes the image alone, as before the prior existed."""
    prior = [Port(PRIOR_INPUT, len(PRIOR_CHANNELS))] if preset.stage1.prior else []
    return [Port("input", 3), *prior]


def pyramid_ports(preset: Preset, prefix: str = "level") -> list[Port]:
    widths = (preset.stage2.head_width, *preset.stage2.encoder_widths)
    return [Port(f"{prefix}{level}", width, level, image=False) for level, width in enumerate(widths)]


def aggregate_inputs(preset: Preset) -> list[Port]:
    """The centre image, the centre frame's full-resolution features, then frame by frame
    its levels 1 ... 4: what MLFA.aggregate reads of a window's pyramids."""
    frames = 2 * preset.stage2.radius + 1
    per_frame = [pyramid_ports(preset, f"frame{i}_level") for i in range(frames)]
    return [Port("centre", 3), per_frame[frames // 2][0], *(port for ports in per_frame for port in ports[1:])]


def graphs(weights: Weights, precision: str) -> list[Graph]:
    """The graphs of every stage that `weights` holds, from the folded networks in eval mode."""
    dtype = torch_dtype(precision)

    def network(stage: int) -> nn.Module:
        return fold_scales(weights.build(stage)).requires_grad_(False).to(dtype)

    found = []
    if 1 in weights.stages:
        found.append(Graph("stage1", 1, _Stage1(network(1)), stage1_inputs(weights.preset), [Port("output", 3)]))
    if 2 in weights.stages:
        mlfa = network(2)
        found.append(Graph("encode", 2, _Encode(mlfa), [Port("input", 3)], pyramid_ports(weights.preset)))
        found.append(Graph("aggregate", 2, _Aggregate(mlfa), aggregate_inputs(weights.preset), [Port("output", 3)]))
    for graph in found:
        graph.module.eval()
    return found


def example_inputs(graph: Graph, shape: tuple[int, int, int], dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    """Random inputs for `graph` at batch N and size H x W: images uniform in [-1, 1], features
    normal. Each its own tensor: the exporter takes inputs that are one object as one input."""
    n, h, w = shape
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for port in graph.inputs:
        size = (n, port.channels, h >> port.level, w >> port.level)
        if port.image:
            tensors.append(torch.rand(size, generator=generator) * 2 - 1)
        else:
            tensors.append(torch.randn(size, generator=generator).to(dtype))
    return tensors


def dynamic_shapes(graph: Graph, multiple: int) -> tuple[tuple[dict, ...]]:
    """Batch, height and width free; every port's sides derived from one height and one width
    in units of `multiple`, so the exporter knows each level is the finer one halved."""
    batch = torch.export.Dim("batch")
    least = max(1, -(-MIN_SIDE // multiple))
    height, width = torch.export.Dim("height", min=least), torch.export.Dim("width", min=least)

    def side(dim: torch.export.Dim, level: int) -> object:
        factor = multiple >> level
        return dim * factor if factor > 1 else dim

    return (tuple({0: batch, 2: side(height, p.level), 3: side(width, p.level)} for p in graph.inputs),)


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs that torchvision's operators are not registered and warns about every
    derived axis name; neither concerns these networks."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"# The axis name")
            yield
    finally:
        logger.setLevel(level)


def export_graph(graph: Graph, path: Path, multiple: int, dtype: torch.dtype) -> None:
    """Write one graph. torch.onnx's torch.export-based exporter (dynamo=True, which needs
    onnxscript): it is torch's default since 2.9, while the TorchScript exporter warns that it
    is deprecated and is to be removed; torch.export also states the dynamic sides as multiples
    of the stage's multiple instead of tracing one size."""
    # a batch of 2: torch.export takes a side of 1 for a constant
    example = tuple(example_inputs(graph, (2, 2 * MIN_SIDE, 3 * MIN_SIDE), dtype, seed=0))
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            graph.module,
            example,
            dynamo=True,
            verbose=False,
            input_names=[p.name for p in graph.inputs],
            output_names=[p.name for p in graph.outputs],
            dynamic_shapes=dynamic_shapes(graph, multiple),
        )
    # one self-contained file a graph (no external data), as vs-mlrt and trtexec take it
    program.save(str(path), external_data=False)


def check_graph(graph: Graph, path: Path, dtype: torch.dtype) -> float:
    """The largest |ONNX Runtime - PyTorch| over every output, on random inputs of CHECK_SHAPES."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for seed, shape in enumerate(CHECK_SHAPES, start=1):
        inputs = example_inputs(graph, shape, dtype, seed)
        with torch.no_grad():
            expected = graph.module(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(None, {p.name: t.numpy() for p, t in zip(graph.inputs, inputs)})
        for want, have in zip(expected, got):
            worst = max(worst, float(np.abs(have.astype(np.float32) - want.float().numpy()).max()))
    return worst


def _port_json(port: Port, precision: str) -> dict:
    return {"name": port.name, "shape": port.shape(), "dtype": "float32" if port.image else PRECISIONS[precision].dtype}


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def manifest(weights: Weights, precision: str, exported: list[Graph], diffs: dict[str, float], digests: dict[str, str]) -> dict:
    """The description written beside the graphs; `digests`: each graph file's SHA-256."""
    import onnxruntime

    preset = weights.preset
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vsdeblur": __version__,
        "torch": torch.__version__,
        "weights": weights.path.name,
        "weights_tensors_sha256": tensor_digest(weights.tensors),  # as in the weights file's header
        "preset": preset.to_dict(),
        "stages": list(weights.stages),
        "radius": preset.stage2.radius if 2 in weights.stages else None,
        "multiples": {str(stage): preset.multiple(stage) for stage in weights.stages},
        "precision": precision,
        "value_range": [-1.0, 1.0],
        "layout": "NCHW",
        "channels": "RGB",
        "graphs": {
            g.name: {
                "file": g.file,
                "sha256": digests[g.name],
                "stage": g.stage,
                "multiple": preset.multiple(g.stage),
                "inputs": [_port_json(p, precision) for p in g.inputs],
                "outputs": [_port_json(p, precision) for p in g.outputs],
            }
            for g in exported
        },
        "check": {
            "runtime": f"onnxruntime {onnxruntime.__version__} (CPU)",
            "shapes": [list(s) for s in CHECK_SHAPES],
            "max_abs_diff": diffs,
            "tolerance": TOLERANCE[precision],
        },
    }


def require_exporter() -> None:
    """One line naming the extra when the exporter's packages are missing."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise UsageError(f"exporting to ONNX needs the {module} package: pip install 'vsdeblur[onnx]'") from None


def export_onnx(weights: Weights, output: str | os.PathLike, precision: str = "fp32",
                log: Callable[[str], None] | None = None) -> dict:
    """Export every stage of `weights` into the new folder `output`, check each graph against
    PyTorch, and return the manifest. Written into a folder beside `output` and renamed into
    place: `output` appears complete or not at all."""
    if precision not in EXPORTS:
        raise UsageError(f"precision must be one of {', '.join(EXPORTS)}, not {precision!r}")
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise OutputExists(f"{output} exists and is not an empty folder; choose a new one")
    require_exporter()
    dtype = torch_dtype(precision)
    partial = output.with_name(f".{output.name}.{os.getpid()}.part")
    created = [folder for folder in (output.parent, *output.parent.parents) if not folder.exists()]  # deepest first
    done = False
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        exported, diffs, digests = graphs(weights, precision), {}, {}
        for graph in exported:
            path = partial / graph.file
            export_graph(graph, path, weights.preset.multiple(graph.stage), dtype)
            digests[graph.name] = file_digest(path)
            diffs[graph.name] = check_graph(graph, path, dtype)
            if diffs[graph.name] > TOLERANCE[precision]:
                raise RuntimeError(f"the exported {graph.name} graph differs from PyTorch by up to {diffs[graph.name]:.3g}")
            if log is not None:
                log(f"{graph.name}: {output / graph.file} (ONNX Runtime within {diffs[graph.name]:.2g} of PyTorch)")
        description = manifest(weights, precision, exported, diffs, digests)
        (partial / MANIFEST).write_text(json.dumps(description, indent=2) + "\n")
        try:
            os.replace(partial, output)  # onto a missing or empty folder only
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise OutputExists(f"{output} was filled by someone else during the export") from None
            raise
        done = True
    except OSError as exc:  # a full disk, a read-only folder, ...: in one line
        raise NotWritten(output, exc) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        for folder in created if not done else ():  # the folders made for an export that failed
            try:
                folder.rmdir()
            except OSError:
                break
    return description


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of an exported folder; one line when it is not one."""
    path = Path(directory) / MANIFEST
    try:
        description = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{directory} holds no {MANIFEST}: not a folder written by `vsdeblur export`") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT or description.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"{path} is not a {FORMAT} version {FORMAT_VERSION} description; export the model again")
    return description


def export_problem(folder: Path, description: dict, stage: int | None = None) -> str | None:
    """What makes the graphs of an exported folder up to `stage` (None: all) unfit to load, in
    words, or None: a graph file that is missing, or not the bytes whose SHA-256 the manifest
    records. Hashes each of those files: once per runner that loads them."""
    graphs = description.get("graphs")
    if not isinstance(graphs, dict) or not all(isinstance(spec, dict) for spec in graphs.values()) or not graphs:
        return f"{MANIFEST} lists no graphs"
    for name, spec in graphs.items():
        if stage is not None and isinstance(spec.get("stage"), int) and spec["stage"] > stage:
            continue
        file = spec.get("file")
        if not isinstance(file, str) or file in ("", ".", "..") or Path(file).name != file:
            return f"{MANIFEST} gives {file!r} as the {name} graph's file, which is no file of the folder"
        recorded = spec.get("sha256")
        if not isinstance(recorded, str):
            return f"{MANIFEST} records no checksum of {file} (written by an older vsdeblur)"
        try:
            found = file_digest(folder / file)
        except FileNotFoundError:
            return f"{file} is missing"
        except OSError as exc:
            return f"{file} cannot be read ({exc.strerror or exc})"
        if found != recorded:
            return f"{file} does not match its checksum in {MANIFEST} (damaged, or replaced by another model's)"
    return None


def verified_manifest(directory: str | os.PathLike, stage: int | None = None) -> dict:
    """The manifest of an exported folder that the user gave, once its graphs up to `stage`
    check out; one line when they do not (a folder of the user's is never exported again)."""
    description = read_manifest(directory)
    problem = export_problem(Path(directory), description, stage)
    if problem is not None:
        raise UsageError(f"{directory}: {problem}; export the model again (vsdeblur export)")
    return description


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vsdeblur" / "onnx"


def writable_folder(folder: Path, what: str) -> None:
    """Create `folder` (a cache) if need be, or say in one line why it cannot be."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {what} {folder}: {exc.strerror}; point XDG_CACHE_HOME at a writable folder") from None


def stage1_problem(description: dict, preset: Preset) -> str | None:
    """Why the stage-1 graph of an export does not take the inputs that `preset`'s stage 1
    reads (a blind graph for a stage 1 that reads the prior, or the reverse), or None. Whatever
    the tensors, a graph that takes other inputs cannot run the stage 1 of these weights."""
    spec = description["graphs"].get("stage1")
    if spec is None:  # an export of stage 2 alone
        return None
    found = [port.get("name") for port in spec.get("inputs") or [] if isinstance(port, dict)]
    expected = [port.name for port in stage1_inputs(preset)]
    if found != expected:
        return f"its stage-1 graph takes {', '.join(map(str, found)) or 'nothing'}, not {', '.join(expected)}"
    return None


def _cache_problem(folder: Path, digest: str, preset: Preset, precision: str, stage: int | None) -> str | None:
    """Why a cache folder is not the export of the weights whose tensors have SHA-256 `digest`
    and whose preset is `preset`, in `precision`, or None when it is (and its graphs up to
    `stage` are intact)."""
    try:
        description = read_manifest(folder)
    except UsageError:
        return f"its {MANIFEST} cannot be read"
    if description.get("weights_tensors_sha256") != digest:
        return "it holds the graphs of other weights"
    if description.get("precision") != precision:
        return f"it holds {description.get('precision')} graphs, not {precision}"
    return export_problem(folder, description, stage) or stage1_problem(description, preset)


def _set_aside(folder: Path) -> None:
    """Take a damaged cache folder out of the way: renamed aside in one step, then removed."""
    stale = folder.with_name(f".{folder.name}.{os.getpid()}.stale")
    shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(folder, stale)
    except FileNotFoundError:  # another process took it away first
        return
    except OSError as exc:
        raise UsageError(f"cannot replace the damaged ONNX export {folder}: {exc.strerror or exc}; remove it, "
                         "or point XDG_CACHE_HOME at a writable folder") from None
    if stale.is_dir() and not stale.is_symlink():
        shutil.rmtree(stale, ignore_errors=True)
    else:
        stale.unlink(missing_ok=True)


def cached_export(weights: Weights, precision: str = "fp32", root: str | os.PathLike | None = None,
                  stage: int | None = None) -> Path:
    """The exported folder of `weights` in the cache (`root`, or ~/.cache/vsdeblur/onnx), exported
    there on first use. Keyed by the weights' tensors, so a retrained file never meets the graphs
    of the old one (nor a stage 1 that reads the prior a blind one's: its head has more input
    channels), and checked on every use: a folder whose manifest records other tensors or
    another precision, whose graphs up to `stage` (None: all) do not match their checksums, or
    whose stage-1 graph takes other inputs than the weights' stage 1 reads, is exported again,
    with one note on stderr. Several processes exporting at once leave one complete folder."""
    root = Path(root) if root is not None else cache_root()
    digest = tensor_digest(weights.tensors)
    folder = root / f"v{FORMAT_VERSION}-{digest[:16]}-{precision}"
    if not os.path.lexists(folder):
        problem = None
    elif (problem := _cache_problem(folder, digest, weights.preset, precision, stage)) is None:
        return folder
    writable_folder(root, "the ONNX cache")
    # stderr, never stdout (vspipe writes video there): a first run waits some 20 s here
    if problem is None:
        print(f"vsdeblur: exporting {weights.path.name} to ONNX ({precision}) into {folder}, once", file=sys.stderr, flush=True)
    else:
        print(f"vsdeblur: the cached ONNX export {folder}: {problem}; exporting {weights.path.name} ({precision}) again",
              file=sys.stderr, flush=True)
        _set_aside(folder)
    try:
        export_onnx(weights, folder, precision)
    except NotWritten as exc:
        elsewhere = "free some space, or point XDG_CACHE_HOME at another disk" if exc.full else "point XDG_CACHE_HOME at a writable folder"
        raise UsageError(f"cannot write the ONNX cache {folder}: {exc.reason}; {elsewhere}") from None
    except OutputExists:  # another process exported it meanwhile
        if (problem := _cache_problem(folder, digest, weights.preset, precision, stage)) is not None:
            raise UsageError(f"the cached ONNX export {folder}: {problem} (written by another process meanwhile); remove it "
                             "and run again") from None
    return folder
