"""Weights files: safetensors tensors plus a JSON header (preset, stages, training recipe).

Loading reads only tensors and JSON: nothing in a weights file is ever executed. Every tensor
is checked against the network that the header's preset describes before it is used.

A file can parse and still hold the wrong numbers: a flipped byte in its data section, or a
training run that diverged to NaN. Either would give black frames and no error, so the header
carries a SHA-256 of the tensors (written by `save_weights`, compared on load; files from
before it existed have none and skip that comparison), and every tensor must be finite both
when it is written and when it is read.

`read_header` reads and checks everything but the tensors' values without torch (batch
planning needs the preset and stages only); torch loads with `read_weights` and `save_weights`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from vsdeblur.errors import WeightsError
from vsdeblur.models import Preset

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT = "vsdeblur-weights"
FORMAT_VERSION = "1"
DEFAULT_WEIGHTS_NAME = "default.safetensors"
CHECKSUM_KEY = "tensors_sha256"
# safetensors' codes for the dtypes save_weights stores, and torch's names for them, which the
# checksum hashes (so that read_header can check it from the file's bytes, without torch)
_TORCH_DTYPES = {"F64": "torch.float64", "F32": "torch.float32", "F16": "torch.float16", "BF16": "torch.bfloat16"}


@dataclass
class WeightsHeader:
    """What a weights file says it holds: what it was trained as, and for which stages."""

    path: Path
    preset: Preset
    stages: tuple[int, ...]
    recipe: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass
class Weights(WeightsHeader):
    """A parsed weights file: its header, and its tensors per stage."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def build(self, stage: int) -> nn.Module:
        """The network of `stage` with these weights loaded, every shape checked."""
        if stage not in self.stages:
            if stage == 1:
                raise WeightsError(
                    f"{self.path.name} holds stage 2 only, without the stage 1 whose output it refines; "
                    "use a file that holds both stages"
                )
            raise WeightsError(
                f"{self.path.name} holds stage {' and '.join(map(str, self.stages))} only; "
                f"stage {stage} needs a file trained for it (or use --stage {max(self.stages)})"
            )
        self.check_fit(stage)
        from vsdeblur.models import build_model

        model = build_model(self.preset, stage)
        model.load_state_dict({k: v.float() for k, v in self.stage_tensors(stage).items()})
        return model.eval()

    def stage_tensors(self, stage: int) -> dict[str, torch.Tensor]:
        prefix = f"stage{stage}."
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def check_fit(self, stage: int) -> None:
        """Refuse tensors that are not exactly those of the preset's network of `stage`. The
        network is only described (on the meta device: shapes, no memory), so a header that
        claims a huge network over small tensors costs nothing before it is refused."""
        import torch

        from vsdeblur.models import build_model

        with torch.device("meta"):
            expected = build_model(self.preset, stage).state_dict()
        state = self.stage_tensors(stage)
        problems = [
            f"{k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
            for k, v in expected.items()
            if k in state and state[k].shape != v.shape
        ]
        problems += [f"missing {k}" for k in expected if k not in state]
        problems += [f"unexpected {k}" for k in state if k not in expected]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise WeightsError(
                f"{self.path.name} does not fit preset {self.preset.name!r} stage {stage}: "
                + "; ".join(problems[:3])
                + more
            )


def save_weights(
    path: str | os.PathLike,
    preset: Preset,
    models: dict[int, nn.Module],
    *,
    recipe: dict | None = None,
    info: dict | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write `models` ({stage: module}) atomically: a temporary file renamed into place.

    `dtype` is the storage type only (float32 unless given): loading widens every tensor to
    float32 again. Tensors that are not finite (a diverged run, or float32 values beyond
    float16's range) are refused before anything is written."""
    import torch
    from safetensors.torch import save_file

    dtype = dtype or torch.float32
    path = Path(path)
    tensors = {
        f"stage{stage}.{name}": tensor.detach().cpu().to(dtype).contiguous()
        for stage, model in sorted(models.items())
        for name, tensor in model.state_dict().items()
    }
    problem = nonfinite(tensors)
    if problem:
        raise WeightsError(f"refusing to write {path}: {problem}")
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "preset": json.dumps(preset.to_dict()),
        "stages": ",".join(str(s) for s in sorted(models)),
        "recipe": json.dumps(recipe or {}),
        "info": json.dumps(info or {}),
        CHECKSUM_KEY: tensor_digest(tensors),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_header(path: str | os.PathLike) -> WeightsHeader:
    """Parse and check a weights file's header, and its tensor data against the header's
    checksum, without torch; raise WeightsError with one clear line otherwise."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.safetensors"))
        hint = f" (it holds {', '.join(found[:3])}{', ...' if len(found) > 3 else ''})" if found else ""
        raise WeightsError(f"{path} is a folder, not a weights file; pass a .safetensors file{hint}")
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    with _opened(path, "numpy") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path} is a safetensors file but not vsdeblur weights (no vsdeblur header)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise WeightsError(
            f"{path} has weights format version {meta.get('format_version')!r}; "
            f"this vsdeblur reads version {FORMAT_VERSION}"
        )
    try:
        preset = Preset.from_dict(json.loads(meta["preset"]))
        stages = tuple(int(s) for s in meta["stages"].split(","))
        recipe = json.loads(meta.get("recipe", "{}"))
        info = json.loads(meta.get("info", "{}"))
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"{path} has a damaged vsdeblur header ({exc})") from None
    if not stages or not set(stages) <= {1, 2}:
        raise WeightsError(f"{path} has a damaged vsdeblur header (stages {meta['stages']!r}, expected 1, 2 or 1,2)")
    if CHECKSUM_KEY in meta and meta[CHECKSUM_KEY] != _stored_digest(path.read_bytes()):
        raise WeightsError(
            f"{path} is damaged: its tensor data does not match the checksum in its header "
            "(changed after it was written); use an intact copy"
        )
    return WeightsHeader(path, preset, stages, recipe, info)


def read_weights(path: str | os.PathLike) -> Weights:
    """Parse and validate a weights file (`read_header`), then load its tensors, every one
    finite; raise WeightsError with one clear line otherwise."""
    header = read_header(path)
    with _opened(header.path, "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    problem = nonfinite(tensors)
    if problem:
        raise WeightsError(f"{header.path} cannot be used: {problem}")
    weights = Weights(header.path, header.preset, header.stages, header.recipe, header.info, tensors)
    for stage in weights.stages:  # the header's preset is believed only where the tensors bear it out
        weights.check_fit(stage)
    return weights


@contextmanager
def _opened(path: Path, framework: str) -> Iterator[Any]:
    """safe_open, its errors as one line each."""
    try:
        with safe_open(str(path), framework=framework) as f:
            yield f
    except SafetensorError as exc:
        raise WeightsError(f"{path} is not a readable weights file (truncated or corrupt: {exc})") from None
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror or exc}") from None


def _stored_digest(raw: bytes) -> str:
    """`tensor_digest` of the tensors in a safetensors file's bytes, computed from the bytes:
    the same names, dtypes, shapes and little-endian data, without torch."""
    size = int.from_bytes(raw[:8], "little")
    layout = json.loads(raw[8 : 8 + size])
    data = memoryview(raw)[8 + size :]
    digest = hashlib.sha256()
    for name in sorted(k for k in layout if k != "__metadata__"):
        begin, end = layout[name]["data_offsets"]
        digest.update(json.dumps([name, _TORCH_DTYPES.get(layout[name]["dtype"], layout[name]["dtype"]), layout[name]["shape"]]).encode())
        digest.update(data[begin:end])
    return digest.hexdigest()


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: independent of
    how safetensors lays the data out, so that it can be computed before the file exists."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def nonfinite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """A description of the first tensor holding NaN or infinite values, or None."""
    import torch

    for name, tensor in tensors.items():
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            return f"tensor {name} holds {bad} NaN or infinite value{'s' if bad > 1 else ''} (of {tensor.numel()})"
    return None


def default_weights_path() -> Path | None:
    """The weights shipped inside the package, or None when this build has none."""
    candidate = Path(str(resources.files(__package__).joinpath(DEFAULT_WEIGHTS_NAME)))
    return candidate if candidate.is_file() else None


def resolve_weights(path: str | os.PathLike | None) -> Weights:
    """`path`, or the shipped default when None; a clear error when neither exists."""
    return read_weights(_given_or_default(path))


def resolve_header(path: str | os.PathLike | None) -> WeightsHeader:
    """`resolve_weights` without the tensors, and without torch."""
    return read_header(_given_or_default(path))


def _given_or_default(path: str | os.PathLike | None) -> str | os.PathLike:
    if path is None:
        path = default_weights_path()
        if path is None:
            expected = resources.files(__package__).joinpath(DEFAULT_WEIGHTS_NAME)
            raise WeightsError(
                f"no trained default weights are shipped in this build of vsdeblur ({expected} is missing); "
                "pass a weights file (--weights PATH) or train one with `vsdeblur train`"
            )
    return path
