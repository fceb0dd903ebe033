"""One schema for every option: defaults, types, bounds and help text live here and nowhere
else. The same Option serves a CLI flag (click), a key in a TOML job file (tomllib) and a
VapourSynth argument. Precedence: defaults < TOML file < command-line flags.

This module imports only the standard library and click, so that tools which only need the
schema (the build of the VapourSynth shim, --help) stay fast.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from vsdeblur.errors import UsageError


@dataclass(frozen=True)
class Option:
    name: str  # snake_case: the TOML key and Python keyword; the flag is --kebab-case
    type: type  # int, float, str, bool or Path
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False  # None is a valid value (meaning "automatic")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, value: Any, where: str) -> Any:
        """Check and convert one value; `where` names its origin in the error message."""
        if value is None and (self.nullable or self.default is None):
            return None
        expected = {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}[self.type]
        if self.type is bool:
            if not isinstance(value, bool):
                raise UsageError(f"{where}: {self.name} must be {expected}, not {value!r}")
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{where}: {self.name} must be {expected}, not {value!r}")
            value = float(value)
        elif self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"{where}: {self.name} must be {expected}, not {value!r}")
        elif not isinstance(value, (str, Path)):
            raise UsageError(f"{where}: {self.name} must be {expected}, not {value!r}")
        else:
            value = self.type(value)
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"{where}: {self.name} must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise UsageError(f"{where}: {self.name} must be at least {self.minimum}; got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise UsageError(f"{where}: {self.name} must be at most {self.maximum}; got {value!r}")
        return value


@dataclass(frozen=True)
class Group:
    """Options that belong together; a TOML file may hold them at top level or in [name]."""

    name: str
    options: tuple[Option, ...]

    def __getitem__(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}


def load_toml(path: str | Path, groups: Iterable[Group]) -> dict[str, Any]:
    """Read a TOML file and check every key against the groups; unknown keys are errors."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    return check_keys(data, list(groups), str(path), base=path.parent)


def check_keys(data: Mapping[str, Any], groups: list[Group], where: str, base: Path | None = None) -> dict[str, Any]:
    """Flatten [group] tables and parse every value; unknown keys and tables are errors. A
    relative path is taken from `base` (a job file's folder), so that a job means the same
    files from whichever folder it is run."""
    by_name = {o.name: o for g in groups for o in g.options}
    tables = {g.name: g for g in groups}
    values: dict[str, Any] = {}

    def take(key: str, value: Any, group: Group | None) -> None:
        option = by_name.get(key)
        if option is None or (group is not None and option not in group.options):
            scope = f"[{group.name}]" if group else "the top level"
            known = ", ".join(o.name for o in (group.options if group else by_name.values()))
            raise UsageError(f"{where}: unknown key {key!r} in {scope}; known keys: {known}")
        if key in values:
            raise UsageError(f"{where}: {key!r} is given twice")
        values[key] = option.parse(value, where)
        if base is not None and isinstance(values[key], Path):
            values[key] = base / values[key].expanduser()  # an absolute path stays as it is

    for key, value in data.items():
        if isinstance(value, dict) and key in tables:
            for sub_key, sub_value in value.items():
                take(sub_key, sub_value, tables[key])
        else:
            take(key, value, None)
    return values


def resolve(groups: Iterable[Group], config: str | Path | None, flags: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, overridden by the TOML file, overridden by the flags that were given (not None)."""
    groups = list(groups)
    values = {k: v for g in groups for k, v in g.defaults().items()}
    if config is not None:
        values.update(load_toml(config, groups))
    by_name = {o.name: o for g in groups for o in g.options}
    values.update({k: by_name[k].parse(v, "command line") for k, v in flags.items() if v is not None and k in by_name})
    return values


def click_options(*groups: Group) -> Callable:
    """Decorate a click command with one flag per option. Flags default to None so that
    `resolve` can tell a flag that was given from one that was not."""

    def decorate(command: Callable) -> Callable:
        for group in reversed(groups):
            for option in reversed(group.options):
                shown = "auto" if option.default is None else option.default
                help_text = f"{option.help} [default: {shown}]"
                if option.type is bool:
                    name = option.name.replace("_", "-")
                    decl = click.option(f"--{name}/--no-{name}", option.name, default=None, help=help_text)
                else:
                    kind = click.Choice([str(c) for c in option.choices]) if option.choices and option.type is str else option.type
                    kind = click.Path(path_type=Path) if option.type is Path else kind
                    decl = click.option(option.flag, option.name, type=kind, default=None, help=help_text)
                command = decl(command)
        return command

    return decorate


ENGINE = Group(
    "engine",
    (
        Option("weights", Path, None, "weights file (.safetensors); default: the model shipped with vsdeblur"),
        Option("preset", str, None, "model preset the weights must match; default: read from the weights file"),
        Option("stage", int, None, "1: per-frame deblurring; 2: refined from neighbouring frames; default: the highest the weights hold", choices=(1, 2)),
        Option("radius", int, None, "temporal radius of stage 2 (window of 2r+1 frames); fixed by the weights, default: theirs", minimum=1, maximum=8),
        Option("device", str, "auto", "auto, cpu, cuda or cuda:N"),
        Option("precision", str, "auto", "compute precision (auto: fp16 on CUDA; bf16 on CPUs with AMX-BF16 or AVX512-BF16, else fp32)", choices=("auto", "fp32", "fp16", "bf16")),
        Option("tile", int, None, "tile side in pixels (0: never tile); default: chosen from free memory", minimum=0),
        Option("overlap", int, None, "tile overlap in pixels; default: the preset's", minimum=0),
        Option("ensemble", bool, False, "average the 8 flips and rotations of each frame (8x slower)"),
        Option("scene_threshold", float, 0.25, "scene-cut threshold: mean luma change (0..1) that starts a new scene; 0 disables", minimum=0.0, maximum=1.0),
        Option("compile", bool, False, "torch.compile the networks (CUDA; pays off on long clips)"),
    ),
)


def engine_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    """Deblurrer keyword arguments from resolved option values."""
    return {o.name: values[o.name] for o in ENGINE.options}


ENCODE = Group(
    "encode",
    (
        Option("codec", str, None, "video encoder (libx264, libx265, ffv1, libsvtav1, ...); default: libx264 for 8-bit sources, libx265 for deeper ones"),
        Option("crf", int, None, "constant rate factor (lower is better); default: 16 for libx264, 18 for libx265, the encoder's own otherwise", minimum=0, maximum=63),
        Option("lossless", bool, None, "encode losslessly (x264 qp=0, x265 lossless=1; FFV1 always is); default: when the source is lossless (FFV1, PNG, lossless H.264, ...) and no CRF is given"),
        Option("pix_fmt", str, None, "output pixel format, e.g. yuv420p10le; default: the source's, if the encoder takes it"),
        Option("encoder_preset", str, None, "encoder speed preset (x264/x265: ultrafast ... placebo); default: the encoder's"),
        Option("encoder_options", str, None, "more encoder options, space-separated key=value pairs, e.g. 'tune=film x265-params=aq-mode=3'"),
        Option("format", str, None, "container format (matroska, mp4, mov, nut, ...); default: from OUTPUT's extension, matroska for '-'"),
        Option("drop_incompatible", bool, False, "leave out the streams the output container cannot hold instead of failing"),
    ),
)


BATCH = Group(
    "batch",
    (
        Option("executor", str, "local", "local: worker processes on this machine; ray: one Ray task per chunk", choices=("local", "ray")),
        Option("ray_address", str, None, "Ray cluster to join (ray://host:10001 or auto); default: start a local one"),
        Option("chunk_frames", int, 300, "frames per chunk (boundaries move to a nearby keyframe when one is close)", minimum=1),
        Option("workers", int, None, "parallel chunk workers; default: one per GPU, else one per 4 CPU cores", minimum=1),
        Option(
            "name_template",
            str,
            "{dir}/{stem}.mkv",
            "output path below the output root; fields {dir} (input's folder relative to its root), {stem}, {name}, {ext}",
        ),
    ),
)


# Options that only the VapourSynth filter has (core.deblur.Atrous / vsdeblur.atrous).
VAPOURSYNTH = Group(
    "vapoursynth",
    (
        Option("num_streams", int, 1, "frames in flight at once (CUDA: one stream each); more overlaps copies with compute", minimum=1, maximum=16),
        Option("scene_props", bool, True, "honour the _SceneChangePrev/_SceneChangeNext frame props: no window crosses a cut"),
        # the _Matrix values core.resize converts with; 10 and 12-14 also need _Transfer/_Primaries props
        Option("matrix", int, None, "YUV input: matrix coefficients (VapourSynth _Matrix value) when the clip has no _Matrix prop", choices=(1, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14)),
        Option("color_range", str, None, "integer YUV/GRAY input: full or limited, when the clip has no _Range (_ColorRange) prop", choices=("full", "limited")),
    ),
)

# Python type -> VapourSynth argument type; Path travels as a string (data).
_VS_TYPES = {int: "int", float: "float", str: "data", bool: "int", Path: "data"}


def vapoursynth_args(*groups: Group) -> str:
    """The argument string of core.deblur.Atrous: the clip, then every option, all optional
    (an omitted argument takes the schema default on the Python side). The C shim is built
    with this string, so the plugin's signature cannot drift from the schema."""
    return "clip:vnode;" + "".join(f"{o.name}:{_VS_TYPES[o.type]}:opt;" for g in groups for o in g.options)
