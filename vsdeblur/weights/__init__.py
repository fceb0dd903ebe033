"""Weights files: safetensors tensors plus a JSON header (preset, stages, training recipe).

Loading reads only tensors and JSON: nothing in a weights file is ever executed. Every tensor
is checked against the network that the header's preset describes before it is used.

A file can parse and still hold the wrong numbers: a flipped byte in its data section, or a
training run that diverged to NaN. Either would give black frames and no error, so the header
carries a SHA-256 of the tensors (written by `save_weights`, compared on load; files from
before it existed have none and skip that comparison), and every tensor must be finite both
when it is written and when it is read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from vsdeblur.errors import WeightsError
from vsdeblur.models import Preset, build_model

FORMAT = "vsdeblur-weights"
FORMAT_VERSION = "1"
DEFAULT_WEIGHTS_NAME = "default.safetensors"
CHECKSUM_KEY = "tensors_sha256"


@dataclass
class Weights:
    """A parsed weights file: what it was trained as, and its tensors per stage."""

    path: Path
    preset: Preset
    stages: tuple[int, ...]
    recipe: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
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
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write `models` ({stage: module}) atomically: a temporary file renamed into place.

    `dtype` is the storage type only: loading widens every tensor to float32 again. Tensors
    that are not finite (a diverged run, or float32 values beyond float16's range) are refused
    before anything is written."""
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


def read_weights(path: str | os.PathLike) -> Weights:
    """Parse and validate a weights file; raise WeightsError with one clear line otherwise."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.safetensors"))
        hint = f" (it holds {', '.join(found[:3])}{', ...' if len(found) > 3 else ''})" if found else ""
        raise WeightsError(f"{path} is a folder, not a weights file; pass a .safetensors file{hint}")
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise WeightsError(f"{path} is a safetensors file but not vsdeblur weights (no vsdeblur header)")
            if meta.get("format_version") != FORMAT_VERSION:
                raise WeightsError(
                    f"{path} has weights format version {meta.get('format_version')!r}; "
                    f"this vsdeblur reads version {FORMAT_VERSION}"
                )
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as exc:
        raise WeightsError(f"{path} is not a readable weights file (truncated or corrupt: {exc})") from None
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    try:
        preset = Preset.from_dict(json.loads(meta["preset"]))
        stages = tuple(int(s) for s in meta["stages"].split(","))
        recipe = json.loads(meta.get("recipe", "{}"))
        info = json.loads(meta.get("info", "{}"))
    except (KeyError, ValueError) as exc:
        raise WeightsError(f"{path} has a damaged vsdeblur header ({exc})") from None
    if not stages or not set(stages) <= {1, 2}:
        raise WeightsError(f"{path} has a damaged vsdeblur header (stages {meta['stages']!r}, expected 1, 2 or 1,2)")
    if CHECKSUM_KEY in meta and meta[CHECKSUM_KEY] != tensor_digest(tensors):
        raise WeightsError(
            f"{path} is damaged: its tensor data does not match the checksum in its header "
            "(changed after it was written); use an intact copy"
        )
    problem = nonfinite(tensors)
    if problem:
        raise WeightsError(f"{path} cannot be used: {problem}")
    weights = Weights(path, preset, stages, recipe, info, tensors)
    for stage in stages:  # the header's preset is believed only where the tensors bear it out
        weights.check_fit(stage)
    return weights


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: independent of
    how safetensors lays the data out, so that it can be computed before the file exists."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def nonfinite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """A description of the first tensor holding NaN or infinite values, or None."""
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
    if path is None:
        path = default_weights_path()
        if path is None:
            expected = resources.files(__package__).joinpath(DEFAULT_WEIGHTS_NAME)
            raise WeightsError(
                f"no trained default weights are shipped in this build of vsdeblur ({expected} is missing); "
                "pass a weights file (--weights PATH) or train one with `vsdeblur train`"
            )
    return read_weights(path)
